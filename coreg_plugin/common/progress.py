"""Progress reporting and cancellation, independent of who listens (CLI, QGIS feedback, nobody),
and the command line's progress bar on a terminal (:func:`terminal_bar`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from .errors import CancelledError

ProgressCallback = Callable[[float], None]
CancelCallback = Callable[[], bool]

#: A run's bar shows only once the run has taken this long (seconds): a short run shows none.
BAR_DELAY_S = 0.5
#: The bar is redrawn (at most every 0.1 s) after at least this much progress (percent).
MIN_STEP_PERCENT = 0.01
#: The bar: stage, percentage, bar, time elapsed and time left (tqdm's estimate from the rate so far).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left"


class Progress:
    """Maps the work of one step onto a slice [start, end] of the caller's 0-100 % bar."""

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        is_cancelled: CancelCallback | None = None,
        start: float = 0.0,
        end: float = 100.0,
    ) -> None:
        self._callback = callback
        self._is_cancelled = is_cancelled
        self.start = start
        self.end = end

    def span(self, start_fraction: float, end_fraction: float) -> Progress:
        """A sub-progress covering ``start_fraction``..``end_fraction`` (0-1) of this one."""
        width = self.end - self.start
        return Progress(
            self._callback, self._is_cancelled,
            self.start + width * start_fraction, self.start + width * end_fraction,
        )

    def relay(self, callback: ProgressCallback) -> Progress:
        """A progress with this one's cancellation that hands its own fraction done (0-1) to
        ``callback``, for work on another thread whose progress this thread reports."""
        return Progress(lambda percent: callback(percent / 100.0), self._is_cancelled)

    def update(self, fraction: float) -> None:
        """Report that ``fraction`` (0-1) of this step is done, then check for cancellation."""
        if self._callback is not None:
            self._callback(self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0))
        self.check()

    def check(self) -> None:
        """Raise ``CancelledError`` if the caller asked to stop."""
        if self._is_cancelled is not None and self._is_cancelled():
            raise CancelledError("cancelled by the user; nothing was written")


class TerminalBar:
    """A run's 0-100 % drawn as a tqdm progress bar: the stage (``stages``: (from this percentage
    on, this label), in any order), the percentage, the time elapsed and the time left. Call it
    with percentages, as :class:`Progress` calls its callback."""

    def __init__(self, stages: Sequence[tuple[float, str]], stream: TextIO, tqdm_class: Any) -> None:
        self._stages = sorted(stages) or [(0.0, "")]
        self._stage = self._stages[0][1]
        # miniters: redraw after any progress (tqdm's own adjustment would wait, after one long step,
        # for as much progress again: a stage of short steps that follows could never be drawn)
        self._bar = tqdm_class(total=100, file=stream, desc=self._stage, bar_format=BAR_FORMAT, leave=False,
                               dynamic_ncols=True, delay=BAR_DELAY_S, smoothing=0.1, miniters=MIN_STEP_PERCENT)

    def stage_at(self, percent: float) -> str:
        """The label of the stage ``percent`` lies in."""
        label = self._stages[0][1]
        for start, name in self._stages:
            if percent >= start:
                label = name
        return label

    def __call__(self, percent: float) -> None:
        stage = self.stage_at(percent)
        if stage != self._stage:
            self._stage = stage
            # a new stage is drawn at once, once the bar is on the terminal (after its delay)
            shown = self._bar._time() >= self._bar.start_t + BAR_DELAY_S
            self._bar.set_description_str(stage, refresh=shown)
        if percent > self._bar.n:  # tqdm redraws at most every 0.1 s
            self._bar.update(min(percent, 100.0) - self._bar.n)

    def close(self) -> None:
        """Take the bar off the terminal."""
        self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@contextmanager
def terminal_bar(
    stages: Sequence[tuple[float, str]], stream: TextIO | None = None, enabled: bool = True
) -> Iterator[ProgressCallback | None]:
    """A :class:`TerminalBar` on ``stream`` (standard error by default) for the ``with`` block, with
    log records written above it (through the bar, so neither breaks the other), or None (no bar)
    when not ``enabled``, when ``stream`` is not a terminal, or when tqdm is not installed (it is
    optional: the core runs without it)."""
    stream = sys.stderr if stream is None else stream
    if not enabled or not _is_terminal(stream):
        yield None
        return
    try:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:
        yield None
        return
    bar = TerminalBar(stages, stream, tqdm)
    try:
        with logging_redirect_tqdm(tqdm_class=tqdm):
            yield bar
    finally:
        bar.close()
