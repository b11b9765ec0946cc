"""Coregister Stack: many rasters onto one reference grid, optionally registered first, merged or stacked.

The output grid is the reference's CRS, transform, width and height. Each input's correction (when
``register`` is on) and the change of grid are applied in one resampling step. Work goes block by
block over the output grid: peak memory is bounded by the block size and the number of inputs that
overlap a block, never by the mosaic's size.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.drivers import raster_driver_extensions
from rasterio.windows import Window

from . import options
from .affines import compose
from .errors import CoregError, InputError
from .geometry import as_affine, shift_at
from .merge import DEFAULT_MERGE_METHOD, MergeCallable, check_merge_method
from .progress import CancelCallback, Progress, ProgressCallback
from .raster_source import Grid, RasterSource
from .registration import register
from .stack_blocks import BlockResult, GridSpec, InputSpec, block_task, close_thread_sources
from .tasks import run_in_order
from .warp import footprint_in_source
from .writer import OutputSpec, blocks, resolve_driver, writing

log = logging.getLogger("coreg")

MODES: tuple[str, ...] = ("merge", "stack")
#: Stack resampling default: the classic recipe's, cheap and without overshoot.
DEFAULT_STACK_RESAMPLING = "bilinear"
#: Output blocks of the stack are STACK_BLOCK x STACK_BLOCK pixels.
STACK_BLOCK = 512
#: Threads computing blocks when no executor is given (one per core, at most 4).
WORKERS = min(4, os.cpu_count() or 1)
#: Blocks computed ahead of the writer at most: bounds memory whatever the executor.
MAX_BLOCKS_IN_FLIGHT = 8


@dataclass
class StackInput:
    """One input of the stack and what happened to it."""

    path: str
    source: RasterSource
    transform: Affine
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    registration: dict[str, Any] | None = None
    valid_pixels: int = 0
    output: str | None = None


@dataclass
class StackResult:
    """What :func:`coregister_stack` did."""

    summary: dict[str, Any]
    inputs: list[StackInput] = field(default_factory=list)


def _footprint(item: StackInput, grid: Grid) -> tuple[int, int, int, int] | None:
    source_grid = Grid(item.source.grid.crs, item.transform, item.source.grid.width, item.source.grid.height)
    c0, r0, c1, r1 = footprint_in_source(grid, grid.transform, source_grid)
    c0, r0 = max(0, math.floor(c0) - 1), max(0, math.floor(r0) - 1)
    c1, r1 = min(grid.width, math.ceil(c1) + 1), min(grid.height, math.ceil(r1) + 1)
    return (c0, r0, c1, r1) if c1 > c0 and r1 > r0 else None


def _output_dtype(mode: str, method: str | MergeCallable, items: Sequence[StackInput]) -> str:
    common = np.result_type(*[np.dtype(i.source.dtype) for i in items])
    if mode == "merge" and method == "count":
        return "uint16"
    if mode == "merge" and method in ("sum", "mean"):
        return "float64" if common.itemsize >= 8 or method == "sum" else "float32"
    return common.name


def _nodata_for(dtype: str, requested: float | None, items: Sequence[StackInput]) -> float:
    if requested is not None:
        return options.check_nodata_for_dtype(requested, dtype, "nodata")
    declared = items[0].source.nodata
    if declared is not None and np.dtype(items[0].source.dtype) == np.dtype(dtype):
        return declared
    return math.nan if np.dtype(dtype).kind == "f" else 0.0


def _extension(driver: str) -> str:
    for ext, name in raster_driver_extensions().items():
        if name == driver:
            return "." + ext
    return ".tif"


def _folder_paths(items: Sequence[StackInput], folder: str, driver: str) -> list[str]:
    ext = ".tif" if driver in ("GTiff", "COG") else _extension(driver)
    names: dict[str, int] = {}
    paths = []
    for item in items:
        stem = os.path.splitext(os.path.basename(item.path))[0]
        names[stem] = names.get(stem, 0) + 1
        suffix = f"_{names[stem]}" if names[stem] > 1 else ""
        paths.append(os.path.join(folder, f"{stem}{suffix}{ext}"))
    return paths


def _stack_descriptions(items: Sequence[StackInput]) -> list[str]:
    descriptions = []
    for item in items:
        name = os.path.basename(item.path)
        for b, own in enumerate(item.source.dataset.descriptions, start=1):
            descriptions.append(f"{name} band {b}" + (f": {own}" if own else ""))
    return descriptions


def register_task(path: str, reference: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Register the input at ``path`` against ``reference`` (picklable, for any executor).

    Returns the correction ``h`` (3x3 as lists, input pixels) and the registration's summary figures.
    """
    with RasterSource(path, "input") as source, RasterSource(reference, "reference") as ref:
        band = source.band(settings["band_index"])
        ref_band = ref.band(settings["reference_band_index"], "reference band index")
        reg = register(source, ref, band, ref_band, model=settings["model"],
                       use_edge_proxy=settings["use_edge_proxies"], window_size=settings["window_size"],
                       min_quality=settings["min_quality"], force=False, progress=Progress(), consider_local=False)
    dx, dy = shift_at(reg.h, reg.overlap_centre)
    return {"h": reg.h.tolist(),
            "registration": {"model": reg.model, "shift_px": {"x": round(float(dx), 4), "y": round(float(dy), 4)},
                             "rmse_px": round(reg.rmse_px, 4), "tie_points_used": reg.used,
                             "quality": round(reg.quality.score, 3)}}


def _prepare_inputs(
    paths: Sequence[str | os.PathLike], reference: RasterSource, register_inputs: bool,
    settings: Mapping[str, Any], executor: Executor | None, progress: Progress, skipped: list[dict[str, str]],
) -> list[StackInput]:
    """Open every input (unreadable: error), drop those that miss the reference, register the rest."""
    grid = reference.grid
    items = []
    for path in paths:
        source = RasterSource(path, "input")
        items.append(StackInput(os.fspath(path), source, source.grid.transform))
    kept = []
    for item in items:
        item.box = _footprint(item, grid)
        if item.box is None:
            _skip(item, f"input '{item.path}' does not overlap the reference '{reference.path}'", skipped)
        else:
            kept.append(item)
    if register_inputs:
        for item in kept:  # a band out of range is the caller's mistake, not a reason to skip
            item.source.band(settings["band_index"])
        outcomes: list[dict[str, Any] | str] = []

        def collect(result: dict[str, Any] | str) -> None:
            outcomes.append(result)
            progress.update(len(outcomes) / len(kept))

        run_in_order(executor, registration_outcome, [(item.path, reference.path, settings) for item in kept],
                     collect, max_in_flight=max(len(kept), 1))
        registered = []
        for item, result in zip(kept, outcomes, strict=True):
            if isinstance(result, str):
                _skip(item, result, skipped)
                continue
            item.transform = compose(item.source.grid.transform, as_affine(np.array(result["h"])))
            item.registration = result["registration"]
            item.box = _footprint(item, grid) or item.box
            registered.append(item)
        kept = registered
    progress.update(1.0)
    return kept


def registration_outcome(path: str, reference: str, settings: Mapping[str, Any]) -> dict[str, Any] | str:
    """:func:`register_task`'s result, or the reason it failed (picklable either way)."""
    try:
        return register_task(path, reference, settings)
    except CoregError as exc:
        return str(exc)


def _skip(item: StackInput, reason: str, skipped: list[dict[str, str]]) -> None:
    skipped.append({"path": item.path, "reason": reason})
    log.warning("skipped: %s", reason)
    item.source.close()


def coregister_stack(
    inputs: Sequence[str | os.PathLike],
    reference: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    mode: str = "merge",
    merge_method: str | MergeCallable = DEFAULT_MERGE_METHOD,
    resampling: str = DEFAULT_STACK_RESAMPLING,
    register: bool = False,
    output_folder: str | os.PathLike | None = None,
    driver: str | None = None,
    creation_options: Mapping[str, str] | None = None,
    nodata: float | None = None,
    band_index: int = 0,
    reference_band_index: int = 0,
    model: str = "auto",
    use_edge_proxies: bool = True,
    window_size: int = options.DEFAULT_WINDOW_SIZE,
    min_quality: float = options.DEFAULT_MIN_QUALITY,
    block_size: int = STACK_BLOCK,
    executor: Executor | None = None,
    progress: ProgressCallback | None = None,
    is_cancelled: CancelCallback | None = None,
) -> StackResult:
    """Bring ``inputs`` onto the grid of ``reference`` and merge them (``mode="merge"``) or keep
    them as separate bands (``mode="stack"``) in ``output``, and/or write one file per input into
    ``output_folder``.

    ``merge_method``: first, last, min, max, sum, count, mean, or a rasterio-style callable.
    ``register``: estimate each input's misregistration against the reference with the Align
    engine (matching band ``band_index`` of each input against ``reference_band_index``, 0-based)
    and apply it in the same resampling step as the grid change. Inputs that do not overlap the
    reference, or (with ``register``) cannot be registered, are skipped with the reason; an
    unreadable input is an error. ``driver`` defaults to the output's extension (GeoTIFF when
    unknown); ``creation_options`` are passed to it. Nothing is left at the output paths on failure
    or cancellation.

    ``executor``: any ``concurrent.futures.Executor`` (a process pool, or a Dask client's
    ``client.get_executor()`` for a cluster) runs the registrations and the output blocks; the
    default is a thread pool on this machine's cores. Merge callables must then be picklable.
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    merge_method = check_merge_method(merge_method)
    options.resampling_method(resampling)
    options.check_model(model)
    if model == "local":
        raise InputError("Coregister Stack applies translation or affine corrections only: for the local model, "
                         "align each input with Align Image Pair (--model local, or with a correction file "
                         "and Apply Correction)")
    if output is None and output_folder is None:
        raise InputError("give an output raster, an output folder, or both")
    if mode == "merge" and output is None:
        raise InputError("merge mode needs an output raster")
    if not inputs:
        raise InputError("no input rasters given")
    if output_folder is not None:
        os.makedirs(output_folder, exist_ok=True)
    report = Progress(progress, is_cancelled)
    settings = {"band_index": band_index, "reference_band_index": reference_band_index, "model": model,
                "use_edge_proxies": use_edge_proxies, "window_size": options.check_window_size(window_size),
                "min_quality": min_quality}
    skipped: list[dict[str, str]] = []
    with rasterio.Env(GDAL_CACHEMAX=options.GDAL_CACHE_MB), RasterSource(reference, "reference") as ref:
        items = _prepare_inputs(inputs, ref, register, settings, executor,
                                report.span(0, 0.4 if register else 0.05), skipped)
        try:
            if not items:
                reasons = "; ".join(s["reason"] for s in skipped)
                raise InputError(f"none of the {len(inputs)} inputs can be used on the reference '{ref.path}': {reasons}")
            specs = _output_specs(items, ref.grid, output, output_folder, mode, merge_method, driver,
                                  creation_options, nodata)
            covered = _write_blocks(items, ref.grid, specs, mode, merge_method, resampling, block_size, executor,
                                    report.span(0.4 if register else 0.05, 1.0))
        finally:
            for item in items:
                item.source.close()
    summary = _summary(items, skipped, ref.path, ref.grid, output, output_folder, mode, merge_method,
                       resampling, register, covered, time.perf_counter() - started)
    return StackResult(summary, items)


def _output_specs(
    items: Sequence[StackInput], grid: Grid, output: str | os.PathLike | None, folder: str | os.PathLike | None,
    mode: str, merge_method: str | MergeCallable, driver: str | None, creation_options: Mapping[str, str] | None,
    nodata: float | None,
) -> list[OutputSpec]:
    """The main output (merged or stacked) first, then one per input in ``folder``."""
    specs = []
    if output is not None:
        dtype = _output_dtype(mode, merge_method, items)
        counts = {i.source.count for i in items}
        if mode == "merge" and len(counts) > 1:
            detail = ", ".join(f"'{i.path}' has {i.source.count}" for i in items)
            raise InputError(f"merge needs the same number of bands in every input: {detail}")
        count = items[0].source.count if mode == "merge" else sum(i.source.count for i in items)
        descriptions = _stack_descriptions(items) if mode == "stack" else None
        specs.append(OutputSpec(output, grid, dtype, count, _nodata_for(dtype, nodata, items), driver,
                                creation_options, descriptions,
                                items[0].source if mode == "merge" else None))
    if folder is not None:
        folder_driver = resolve_driver(os.fspath(output or "x.tif"), driver)
        for item, path in zip(items, _folder_paths(items, os.fspath(folder), folder_driver)):
            item.output = path
            specs.append(OutputSpec(path, grid, item.source.dtype, item.source.count,
                                    _nodata_for(item.source.dtype, nodata, [item]), folder_driver,
                                    creation_options, None, item.source))
    return specs


def _write_blocks(
    items: Sequence[StackInput], grid: Grid, specs: Sequence[OutputSpec], mode: str,
    merge_method: str | MergeCallable, resampling: str, block_size: int, executor: Executor | None,
    progress: Progress,
) -> int:
    """Warp the inputs block by block into every output; return the number of covered output pixels.

    Blocks are computed by ``executor`` (an internal thread pool when None) and written here, in
    order, with at most ``MAX_BLOCKS_IN_FLIGHT`` blocks held at once.
    """
    windows = blocks(grid, block_size)
    has_main = bool(specs) and specs[0].path != items[0].output
    inputs = [InputSpec(i.path, i.source.nodata_override, tuple(i.transform.to_gdal()), i.source.count, i.box)
              for i in items]
    calls = [(inputs, GridSpec.of(grid), (int(w.col_off), int(w.row_off), int(w.width), int(w.height)), mode,
              merge_method, resampling, has_main, len(specs) > int(has_main)) for w in windows]
    covered = 0
    with writing(specs) as writers, ExitStack() as pools:
        main, per_input = (writers[0], writers[1:]) if has_main else (None, writers)
        if executor is None and WORKERS > 1:
            executor = pools.enter_context(ThreadPoolExecutor(WORKERS, thread_name_prefix="coreg-stack"))
        done = 0

        def write(result: BlockResult) -> None:
            nonlocal covered, done
            col, row, width, height = result.window
            window = Window(col, row, width, height)
            if main is not None:
                main.write(window, result.main)
            for writer, layer in zip(per_input, result.layers or [], strict=False):
                writer.write(window, layer)
            for item, count in zip(items, result.valid_pixels, strict=True):
                item.valid_pixels += count
            covered += result.covered
            done += 1
            progress.update(done / len(windows))

        try:
            run_in_order(executor, block_task, calls, write, MAX_BLOCKS_IN_FLIGHT)
        finally:
            close_thread_sources()
    return covered


def _summary(
    items: Sequence[StackInput], skipped: list[dict[str, str]], reference: str, grid: Grid,
    output: str | os.PathLike | None, folder: str | os.PathLike | None, mode: str,
    merge_method: str | Callable, resampling: str, registered: bool, covered: int, elapsed: float,
) -> dict[str, Any]:
    total = grid.width * grid.height
    return {
        "reference": reference,
        "output": None if output is None else os.fspath(output),
        "output_folder": None if folder is None else os.fspath(folder),
        "mode": mode,
        "merge_method": merge_method if isinstance(merge_method, str) else getattr(merge_method, "__name__", "callable"),
        "resampling": resampling,
        "register": registered,
        "grid": {"crs": grid.crs.to_string(), "transform": list(grid.transform.to_gdal()),
                 "width": grid.width, "height": grid.height},
        "inputs": [{"path": i.path, "coverage": round(i.valid_pixels / total, 4), "registration": i.registration,
                    "output": i.output} for i in items],
        "skipped": skipped,
        "totals": {"inputs": len(items) + len(skipped), "used": len(items), "skipped": len(skipped),
                   "coverage": round(covered / total, 4)},
        "elapsed_s": round(elapsed, 2),
    }
