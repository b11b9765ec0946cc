"""Log records of work done on a helper thread, held back and emitted later by the thread in charge.

A registration run on a helper thread (Coregister Stack registers two inputs at once) logs to the
``coreg`` logger like any other; whoever listens may only take the records of the thread that runs
the job (QGIS forwards a run's records by thread). So the helper holds its records back
(:func:`holding`) and the thread in charge emits them (:func:`emit`) as its own, in input order,
each job's lines together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_logger = logging.getLogger("coreg")


class _Holder(logging.Filter):
    """Keeps the records of the threads that hold theirs, and lets every other record through."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, list[logging.LogRecord]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        records = self.held.get(record.thread or 0)
        if records is None:
            return True
        records.append(record)
        return False


_holder = _Holder()
_logger.addFilter(_holder)


@contextmanager
def holding() -> Iterator[list[logging.LogRecord]]:
    """Hold back this thread's ``coreg`` records while the block runs; they are in the list yielded."""
    thread = threading.get_ident()
    records: list[logging.LogRecord] = []
    _holder.held[thread] = records
    try:
        yield records
    finally:
        del _holder.held[thread]


def emit(records: list[logging.LogRecord]) -> None:
    """Emit held ``records`` as this thread's own."""
    thread, name = threading.get_ident(), threading.current_thread().name
    for record in records:
        record.thread, record.threadName = thread, name
        _logger.handle(record)
