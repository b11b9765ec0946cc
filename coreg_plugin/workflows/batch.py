"""Aligning many image pairs, on this machine or on a cluster.

Each pair is one task with plain, picklable arguments, so any ``concurrent.futures.Executor`` runs
them: a process pool, or a Dask client's executor (``client.get_executor()``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from typing import Any, Union

from ..common.errors import CoregError
from ..common.tasks import run_in_order
from .align import align_image_pair

Pair = Sequence[Union[str, os.PathLike]]  # Union: "str | os.PathLike" fails at run time on Python 3.9


def align_task(moving_image: str, fixed_image: str, output_image: str, options: dict[str, Any]) -> dict[str, Any]:
    """Align one pair; return its summary, or ``{"moving_image", "fixed_image", "output_image", "error"}``."""
    try:
        return align_image_pair(moving_image, fixed_image, output_image, **options).summary
    except CoregError as exc:
        return {"moving_image": moving_image, "fixed_image": fixed_image, "output_image": output_image,
                "error": str(exc)}


def align_many(
    pairs: Iterable[Pair], *, executor: Executor | None = None, max_in_flight: int = 64, **options: Any
) -> list[dict[str, Any]]:
    """Align every ``(moving_image, fixed_image, output_image)`` of ``pairs`` with the same ``options``
    (the keyword arguments of :func:`coreg_plugin.align_image_pair`).

    Returns one dict per pair, in order: its summary, or the error that stopped it (one failed pair
    does not stop the others). ``executor`` runs the pairs; without one they run here, one after
    the other (each alignment already uses every core for its tie points).
    """
    calls = [(os.fspath(m), os.fspath(f), os.fspath(o), options) for m, f, o in pairs]
    results: list[dict[str, Any]] = []
    run_in_order(executor, align_task, calls, results.append, max_in_flight)
    return results
