"""Running many independent calls on an executor, in bounded memory, with results in call order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, wait
from typing import Any


def run_in_order(
    executor: Executor | None,
    function: Callable[..., Any],
    calls: Iterable[tuple[Any, ...]],
    on_result: Callable[[Any], None],
    max_in_flight: int,
    poll: Callable[[], None] | None = None,
    poll_interval_s: float = 0.2,
) -> None:
    """Run ``function(*args)`` for each of ``calls``, at most ``max_in_flight`` at once, handing the
    results to ``on_result`` in call order (on this thread). Without an executor, run them here.

    ``poll`` is called every ``poll_interval_s`` seconds while waiting for a result; if it or
    ``on_result`` raises (for instance on cancellation), pending calls are cancelled.
    """

    def result_of(future: Future) -> Any:
        while poll is not None and not wait([future], timeout=poll_interval_s).done:
            poll()
        return future.result()

    if executor is None:
        for args in calls:
            on_result(function(*args))
        return
    pending: deque[Future] = deque()
    try:
        for args in calls:
            pending.append(executor.submit(function, *args))
            if len(pending) >= max_in_flight:
                on_result(result_of(pending.popleft()))
        while pending:
            on_result(result_of(pending.popleft()))
    finally:
        for future in pending:
            future.cancel()
