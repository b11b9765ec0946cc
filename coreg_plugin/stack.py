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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.drivers import raster_driver_extensions

from . import options
from .affines import compose
from .errors import CoregError, InputError
from .geometry import as_affine
from .merge import DEFAULT_MERGE_METHOD, MergeCallable, check_merge_method, merge_blocks
from .progress import CancelCallback, Progress, ProgressCallback
from .raster_source import Grid, RasterSource
from .registration import register
from .warp import footprint_in_source, read_warped
from .writer import OutputSpec, blocks, resolve_driver, writing

log = logging.getLogger("coreg")

MODES: tuple[str, ...] = ("merge", "stack")
#: Stack resampling default: the classic recipe's, cheap and without overshoot.
DEFAULT_STACK_RESAMPLING = "bilinear"
#: Output blocks of the stack are STACK_BLOCK x STACK_BLOCK pixels.
STACK_BLOCK = 512


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

    def overlaps(self, col: int, row: int, width: int, height: int) -> bool:
        """Whether this input's footprint (output pixels) meets the block."""
        c0, r0, c1, r1 = self.box
        return c0 < col + width and col < c1 and r0 < row + height and row < r1


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


def _register_input(item: StackInput, reference: RasterSource, settings: Mapping[str, Any], step: Progress) -> None:
    band = item.source.band(settings["band_index"])
    ref_band = reference.band(settings["reference_band_index"], "reference band index")
    reg = register(item.source, reference, band, ref_band, model=settings["model"],
                   use_edge_proxy=settings["use_edge_proxies"], window_size=settings["window_size"],
                   min_quality=settings["min_quality"], force=False, progress=step)
    item.transform = compose(item.source.grid.transform, as_affine(reg.h))
    c0, r0, c1, r1 = reg.overlap
    centre = np.array([(c0 + c1) / 2, (r0 + r1) / 2])
    dx, dy = reg.h[:2, :2] @ centre + reg.h[:2, 2] - centre
    item.registration = {"model": reg.model, "shift_px": {"x": round(float(dx), 4), "y": round(float(dy), 4)},
                         "rmse_px": round(reg.rmse_px, 4), "tie_points_used": reg.used,
                         "quality": round(reg.quality.score, 3)}


def _prepare_inputs(
    paths: Sequence[str], reference: RasterSource, register_inputs: bool, settings: Mapping[str, Any],
    progress: Progress, skipped: list[dict[str, str]],
) -> list[StackInput]:
    """Open every input (unreadable: error), drop those that miss the reference, register the rest."""
    grid = reference.grid
    items = []
    for path in paths:
        source = RasterSource(path, "input")
        items.append(StackInput(os.fspath(path), source, source.grid.transform))
    kept = []
    for n, item in enumerate(items):
        step = progress.span(n / len(items), (n + 1) / len(items))
        try:
            box = _footprint(item, grid)
            if box is None:
                raise InputError(f"input '{item.path}' does not overlap the reference '{reference.path}'")
            if register_inputs:
                _register_input(item, reference, settings, step)
                box = _footprint(item, grid) or box
        except CoregError as exc:
            if isinstance(exc, InputError) and "out of range" in str(exc):
                raise
            skipped.append({"path": item.path, "reason": str(exc)})
            log.warning("skipped: %s", exc)
            item.source.close()
            continue
        item.box = box
        kept.append(item)
        step.update(1.0)
    return kept


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
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    merge_method = check_merge_method(merge_method)
    method = options.resampling_method(resampling)
    options.check_model(model)
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
    with RasterSource(reference, "reference") as ref:
        items = _prepare_inputs(inputs, ref, register, settings, report.span(0, 0.4 if register else 0.05), skipped)
        try:
            if not items:
                reasons = "; ".join(s["reason"] for s in skipped)
                raise InputError(f"none of the {len(inputs)} inputs can be used on the reference '{ref.path}': {reasons}")
            specs = _output_specs(items, ref.grid, output, output_folder, mode, merge_method, driver,
                                  creation_options, nodata)
            covered = _write_blocks(items, ref.grid, specs, mode, merge_method, method, block_size,
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
    merge_method: str | MergeCallable, resampling: Any, block_size: int, progress: Progress,
) -> int:
    """Warp the inputs block by block into every output; return the number of covered output pixels."""
    windows = blocks(grid, block_size)
    has_main = specs and specs[0].path != items[0].output
    covered = 0
    with writing(specs) as writers:
        main, per_input = (writers[0], writers[1:]) if has_main else (None, writers)
        for done, win in enumerate(windows):
            block_grid = grid.subgrid(win.col_off, win.row_off, win.width, win.height)
            layers = []
            for item in items:
                if item.overlaps(win.col_off, win.row_off, win.width, win.height):
                    layer = read_warped(item.source, list(range(1, item.source.count + 1)), block_grid,
                                        resampling, src_transform=item.transform)
                else:
                    layer = np.full((item.source.count, win.height, win.width), np.nan, item.source.float_dtype)
                item.valid_pixels += int(np.any(np.isfinite(layer), axis=0).sum())
                layers.append(layer)
            covered += int(np.any([np.any(np.isfinite(x), axis=0) for x in layers], axis=0).sum())
            if main is not None:
                block = merge_blocks(layers, merge_method, int(win.row_off), int(win.col_off)) \
                    if mode == "merge" else np.concatenate(layers, axis=0)
                main.write(win, block)
            for writer, layer in zip(per_input, layers):
                writer.write(win, layer)
            progress.update((done + 1) / len(windows))
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
