"""Progress reporting and cancellation, independent of who listens (CLI, QGIS feedback, nobody)."""

from __future__ import annotations

from collections.abc import Callable

from .errors import CancelledError

ProgressCallback = Callable[[float], None]
CancelCallback = Callable[[], bool]


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
