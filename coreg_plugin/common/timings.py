"""Wall time spent in each stage of a run, reported as the summary's ``timings_s``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The stages of Align Image Pair, in order: the coarse match of the whole overlap (with opening
#: and checking the inputs), measuring tie points, fitting the model (with choosing it and judging
#: its quality), and warping and writing the output (with diagnostics).
STAGES: tuple[str, ...] = ("coarse", "tie_points", "model_fit", "output")
#: The stages of Coregister Stack: registering the inputs (when asked to), and warping, merging and
#: writing the outputs block by block (with publishing them).
STACK_STAGES: tuple[str, ...] = ("registration", "output")


class StageTimes:
    """Seconds of wall time per stage, summed over every time a stage is entered."""

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to stage ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` of wall time to stage ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """The seconds per stage, rounded, for a JSON summary."""
        return {name: round(value, digits) for name, value in self.seconds.items()}
