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
from functools import partial
from importlib import import_module
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from rasterio.drivers import raster_driver_extensions

from ..apply.blocks import GridSpec, InputSpec, close_thread_sources, handles_per_thread, write_blocks
from ..apply.merge import DEFAULT_MERGE_METHOD, MergeCallable, check_merge_method
from ..common import held_logs, machine, options
from ..common.affines import compose
from ..common.errors import CancelledError, CoregError, InputError, OutputError
from ..common.names import DEFAULT_STACK_RESAMPLING, MODES
from ..common.progress import CancelCallback, Progress, ProgressCallback
from ..common.tasks import run_in_order
from ..common.timings import STACK_STAGES, StageTimes
from ..correction.geometry import as_affine, shift_at
from ..io import shared_reads
from ..io.formats import EXTENSIONS, check_format, recordable_nodata
from ..io.gdal_names import dataset_stem
from ..io.outputs import Staging, check_outputs
from ..io.raster_source import Grid, RasterSource, SourceInfo
from ..io.warp import footprint_in_source
from ..io.writer import BlockWriter, OutputSpec, blocks, check_space, resolve_driver, writers_at_once, writing

if TYPE_CHECKING:  # an unregistered stack never loads the estimation's modules (scipy, scikit-image)
    from ..correction.local_field import LocalField

log = logging.getLogger("coreg")

#: Output blocks of the stack are STACK_BLOCK x STACK_BLOCK pixels.
STACK_BLOCK = 512
#: Threads computing blocks when no executor is given (one per core, at most 4).
WORKERS = machine.threads(4)
#: Blocks computed ahead of the writer at most: bounds memory whatever the executor.
MAX_BLOCKS_IN_FLIGHT = 8
#: Memory one registration of a stack takes at its peak, about (a 10980 px tile's: 350 MB).
REGISTRATION_BYTES = 400 << 20
#: Registrations run side by side when no executor is given, each measuring its tie points on one
#: thread: one per core (at most :data:`WORKERS`) as far as the available memory holds them. Two
#: registrations keep two cores busier than one registration's two threads (on 2 cores, 6 inputs of
#: the benchmark's stack: 26 s against 35 s, for about 100 MB more).
REGISTRATIONS_AT_ONCE = machine.side_by_side(REGISTRATION_BYTES, WORKERS)


@dataclass
class StackInput:
    """One input of the stack and what happened to it."""

    path: str
    source: SourceInfo
    transform: Affine
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    registration: dict[str, Any] | None = None
    #: The local model (input pixel frame) when the registration chose it; ``transform`` is then
    #: the input's geotransform corrected by its global part only, for footprints.
    local: LocalField | None = None
    valid_pixels: int = 0
    output: str | None = None


@dataclass
class StackResult:
    """What :func:`coregister_stack` did."""

    summary: dict[str, Any]
    inputs: list[StackInput] = field(default_factory=list)


def _footprint(item: StackInput, grid: Grid, margin: int = 1) -> tuple[int, int, int, int] | None:
    """The input's box on ``grid`` (col0, row0, col1, row1), widened by ``margin`` output pixels."""
    source_grid = Grid(item.source.grid.crs, item.transform, item.source.grid.width, item.source.grid.height)
    c0, r0, c1, r1 = footprint_in_source(grid, grid.transform, source_grid)
    c0, r0 = max(0, math.floor(c0) - margin), max(0, math.floor(r0) - margin)
    c1, r1 = min(grid.width, math.ceil(c1) + margin), min(grid.height, math.ceil(r1) + margin)
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
    for ext, name in [*EXTENSIONS.items(), *raster_driver_extensions().items()]:
        if name == driver:
            return "." + ext
    return ".tif"


def _folder_paths(paths_in: Sequence[str], folder: str, driver: str) -> list[str]:
    """One output path per input in ``folder``: the input's name (numbered when names repeat)."""
    ext = ".tif" if driver in ("GTiff", "COG") else _extension(driver)
    names: dict[str, int] = {}
    paths = []
    for path in paths_in:
        stem = dataset_stem(path)
        names[stem] = names.get(stem, 0) + 1
        suffix = f"_{names[stem]}" if names[stem] > 1 else ""
        paths.append(os.path.join(folder, f"{stem}{suffix}{ext}"))
    return paths


def _stack_descriptions(items: Sequence[StackInput]) -> list[str]:
    descriptions = []
    for item in items:
        name = os.path.basename(item.path)
        for b, own in enumerate(item.source.band_metadata.descriptions, start=1):
            descriptions.append(f"{name} band {b}" + (f": {own}" if own else ""))
    return descriptions


def register_task(
    path: str, reference: str, settings: Mapping[str, Any], progress: Progress | None = None
) -> dict[str, Any]:
    """Register the input at ``path`` against ``reference`` (picklable, for any executor).

    ``progress`` (when run here) reports and polls for cancellation throughout the registration.
    Returns the correction ``h`` (3x3 as lists, input pixels; the global part for a local model),
    ``local``: the :class:`~coreg_plugin.correction.local_field.LocalField` (input pixel frame) when
    the model is local, else None, and the registration's summary figures.
    """
    from ..estimate.registration import register

    # a GDAL environment of this thread's own: without one, rasterio sets one up and tears it down
    # around every open and warp, holding Python's lock (a thread does not inherit its caller's)
    with options.gdal_environment(), RasterSource(path, "input") as source, \
            RasterSource(reference, "reference") as ref:
        band = source.band(settings["band_index"])
        ref_band = ref.band(settings["reference_band_index"], "reference band index")
        reg = register(source, ref, band, ref_band, model=settings["model"],
                       use_edge_proxy=settings["use_edge_proxies"], window_size=settings["window_size"],
                       min_quality=settings["min_quality"], force=False, progress=progress or Progress(),
                       workers=settings.get("tie_point_workers"))
    dx, dy = shift_at(reg.h, reg.overlap_centre)
    figures = {"model": reg.model, "shift_px": {"x": round(float(dx), 4), "y": round(float(dy), 4)},
               "rmse_px": round(reg.rmse_px, 4), "tie_points_used": reg.used, "quality": round(reg.quality.score, 3)}
    if reg.local is not None:
        figures["max_local_px"] = round(reg.local.max_local_px, 4)
    return {"h": reg.h.tolist(), "local": reg.local, "registration": figures}


def _open_inputs(paths: Sequence[str], outputs: Sequence[str]) -> list[StackInput]:
    """Open and check every input once (an unreadable one is an error), keeping only what later
    steps need: no input stays open, whatever their number. ``outputs``: each input's own output
    file, in order (none when empty)."""
    items = []
    for k, path in enumerate(paths):
        with RasterSource(path, "input") as source:
            info = source.info()
        items.append(StackInput(path, info, info.grid.transform, output=outputs[k] if outputs else None))
    return items


def local_margin(item: StackInput, grid: Grid) -> int:
    """Footprint margin (output px of ``grid``) that also covers the largest local part of the
    item's local model (input px), scaled by the output pixels an input pixel spans."""
    if item.local is None:
        return 1
    width, height = item.source.grid.width, item.source.grid.height
    corrected = Grid(item.source.grid.crs, item.transform, width, height)
    c0, r0, c1, r1 = footprint_in_source(grid, grid.transform, corrected)
    output_px_per_input_px = max((c1 - c0) / width, (r1 - r0) / height, 0.0)
    return 1 + math.ceil(item.local.max_local_px * output_px_per_input_px)


def _overlapping(
    items: list[StackInput], reference: SourceInfo, skipped: list[dict[str, str]]
) -> list[StackInput]:
    """The inputs that meet the reference grid (the others are skipped with the reason); an
    ``InputError`` when none does."""
    kept = []
    for item in items:
        item.box = _footprint(item, reference.grid)
        if item.box is None:
            _skip(item, f"input '{item.path}' does not overlap the reference '{reference.path}'", skipped)
        else:
            kept.append(item)
    _require_some(kept, len(items), reference, skipped)
    return kept


def _require_some(kept: Sequence[StackInput], total: int, reference: SourceInfo,
                  skipped: list[dict[str, str]]) -> None:
    if not kept:
        reasons = "; ".join(s["reason"] for s in skipped)
        raise InputError(f"none of the {total} inputs can be used on the reference '{reference.path}': {reasons}")


def _register_inputs(
    kept: list[StackInput], reference: SourceInfo, settings: Mapping[str, Any], executor: Executor | None,
    progress: Progress, skipped: list[dict[str, str]],
) -> list[StackInput]:
    """Register every input against the reference; those that cannot be registered are skipped."""
    for item in kept:  # a band out of range is the caller's mistake, not a reason to skip
        item.source.band(settings["band_index"])
    outcomes = _registrations(kept, reference.path, settings, executor, progress)
    registered = []
    for item, result in zip(kept, outcomes):
        if isinstance(result, str):
            _skip(item, result, skipped)
            continue
        item.transform = compose(item.source.grid.transform, as_affine(np.array(result["h"])))
        item.registration = result["registration"]
        item.local = result.get("local")
        item.box = _footprint(item, reference.grid, local_margin(item, reference.grid)) or item.box
        registered.append(item)
    progress.update(1.0)
    return registered


def _registrations(
    items: Sequence[StackInput], reference: str, settings: Mapping[str, Any], executor: Executor | None,
    progress: Progress,
) -> list[dict[str, Any] | str]:
    """Each input's registration outcome, in order. Without an executor: here, one after the other,
    or :func:`_registrations_side_by_side`; each polls for cancellation as it goes. On an executor:
    no more tasks in flight than it has workers, and cancellation polled while waiting (a running
    task finishes on its own, unawaited)."""
    if executor is None and min(REGISTRATIONS_AT_ONCE, len(items)) > 1:
        return _registrations_side_by_side(items, reference, settings, progress)
    outcomes: list[dict[str, Any] | str] = []
    if executor is None:
        for i, item in enumerate(items):
            step = progress.span(i / len(items), (i + 1) / len(items))
            outcomes.append(registration_outcome(item.path, reference, settings, step))
        return outcomes

    def collect(result: dict[str, Any] | str) -> None:
        outcomes.append(result)
        progress.update(len(outcomes) / len(items))

    run_in_order(executor, registration_outcome, [(item.path, reference, settings) for item in items],
                 collect, max_in_flight=executor_workers(executor), poll=progress.check)
    return outcomes


def _registrations_side_by_side(
    items: Sequence[StackInput], reference: str, settings: Mapping[str, Any], progress: Progress,
) -> list[dict[str, Any] | str]:
    """Each input's registration outcome, in order, :data:`REGISTRATIONS_AT_ONCE` at a time on threads
    of a pool here, each measuring its tie points on one thread. Their progress (the sum of each
    one's share done) is reported and their log records emitted here, each registration's together,
    in input order."""
    outcomes: list[dict[str, Any] | str] = []
    done = [0.0] * len(items)

    def collect(result: tuple[dict[str, Any] | str, list[logging.LogRecord]]) -> None:
        held_logs.emit(result[1])
        done[len(outcomes)] = 1.0
        outcomes.append(result[0])
        progress.update(sum(done) / len(items))

    one_thread_each = {**settings, "tie_point_workers": 1}
    calls = [(item.path, reference, one_thread_each, progress.relay(partial(done.__setitem__, i)))
             for i, item in enumerate(items)]
    with ThreadPoolExecutor(REGISTRATIONS_AT_ONCE, thread_name_prefix="coreg-register") as pool:
        run_in_order(pool, _held_registration_outcome, calls, collect, max_in_flight=REGISTRATIONS_AT_ONCE,
                     poll=lambda: progress.update(sum(done) / len(items)))
    return outcomes


def _held_registration_outcome(
    path: str, reference: str, settings: Mapping[str, Any], progress: Progress
) -> tuple[dict[str, Any] | str, list[logging.LogRecord]]:
    """:func:`registration_outcome` on a helper thread, with its log records held back for the
    thread in charge to emit (:mod:`coreg_plugin.common.held_logs`)."""
    with held_logs.holding() as records:
        outcome = registration_outcome(path, reference, settings, progress)
    return outcome, records


def executor_workers(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once (its ``max_workers``; :data:`WORKERS` if unknown)."""
    return max(1, int(getattr(executor, "_max_workers", None) or WORKERS))


def registration_outcome(
    path: str, reference: str, settings: Mapping[str, Any], progress: Progress | None = None
) -> dict[str, Any] | str:
    """:func:`register_task`'s result, or the reason it failed (picklable either way)."""
    try:
        return register_task(path, reference, settings, progress)
    except CancelledError:
        raise
    except CoregError as exc:
        return str(exc)


def _skip(item: StackInput, reason: str, skipped: list[dict[str, str]]) -> None:
    skipped.append({"path": item.path, "reason": reason})
    log.warning("skipped: %s", reason)


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
    allow_large_output: bool = False,
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
    without extension, see :mod:`coreg_plugin.formats`); ``creation_options`` are passed to it.
    Before any work, every output is checked against every input and the other outputs (by real
    path) and its format against the data; outputs larger (uncompressed) than the free disk space
    are refused unless ``allow_large_output``. All outputs are published together at the end;
    nothing is left at the output paths on failure or cancellation. Inputs are opened when needed,
    never all at once.

    ``executor``: any ``concurrent.futures.Executor`` runs the registrations and the output blocks
    (the default is a thread pool on this machine's cores): a process pool, or a Dask cluster's
    ``client.get_executor()``, for example:

        from distributed import Client
        with Client("tcp://scheduler:8786") as client:
            coregister_stack(paths, reference, "mosaic.tif", register=True, executor=client.get_executor())

    Its tasks take and return plain picklable values (paths, transforms, arrays); merge callables
    must then be picklable too. The workers open the inputs and the reference by their paths, so
    they must see the same files at the same paths (absolute ones, unless every worker runs in this
    folder) and import the same ``coreg_plugin``; the outputs are written and published here, by
    the caller, never by a worker. At most as many registrations are in flight as the executor
    has workers (its ``_max_workers`` when it has one, else :data:`WORKERS`) and at most
    :data:`MAX_BLOCKS_IN_FLIGHT` blocks, so memory here stays bounded whatever the cluster's size.
    A task that raises stops the run with that error and nothing is published; a task whose
    worker died is Dask's to rerun elsewhere (it does, up to its ``allowed-failures``, then
    raises ``KilledWorker``). A cluster left with no worker makes Dask wait for one: the command
    line's ``--dask-scheduler`` gives up after ``--dask-timeout`` seconds.
    """
    started = time.perf_counter()
    merge_method = _checked_options(inputs, output, output_folder, mode, merge_method, resampling, model)
    input_paths, reference = [os.fspath(p) for p in inputs], os.fspath(reference)
    main_driver = resolve_driver(os.fspath(output), driver) if output is not None else None
    folder_driver = main_driver or resolve_driver("x.tif", driver)
    folder_paths = (_folder_paths(input_paths, os.fspath(output_folder), folder_driver)
                    if output_folder is not None else [])
    outputs = ([("output", os.fspath(output))] if output is not None else []) + \
        [(f"output for '{p}'", path) for p, path in zip(input_paths, folder_paths)]
    created = _make_folder(os.fspath(output_folder)) if output_folder is not None else []
    try:
        check_outputs(outputs, [("input", p) for p in input_paths] + [("reference", reference)])
        report = Progress(progress, is_cancelled)
        timings = StageTimes(STACK_STAGES)
        settings = {"band_index": band_index, "reference_band_index": reference_band_index, "model": model,
                    "use_edge_proxies": use_edge_proxies, "window_size": options.check_window_size(window_size),
                    "min_quality": min_quality}
        skipped: list[dict[str, str]] = []
        with options.gdal_environment():
            with RasterSource(reference, "reference") as ref_source:
                ref = ref_source.info()
            opened = _open_inputs(input_paths, folder_paths)
            items = _overlapping(opened, ref, skipped)
            specs = partial(_output_specs, grid=ref.grid, output=output, mode=mode, merge_method=merge_method,
                            driver=driver, folder_driver=folder_driver, creation_options=creation_options,
                            nodata=nodata)
            _check_formats(specs(items))
            with Staging(outputs) as staging:
                if register:
                    import_module("..estimate.registration", __package__)  # here, before the workers need it
                    # the reference's averaged images: decoded once, not per input
                    with timings.stage("registration"), shared_reads.sharing(reference):
                        items = _register_inputs(items, ref, settings, executor, report.span(0, 0.4), skipped)
                    _require_some(items, len(inputs), ref, skipped)
                report.check()
                _drop_unused_outputs(opened, items, staging)
                with timings.stage("output"):
                    covered = _write_blocks(items, ref.grid, specs(items), mode, merge_method, resampling,
                                            block_size, executor, report.span(0.4 if register else 0.05, 1.0),
                                            staging, allow_large_output)
                    report.check()
                    staging.publish()
    except BaseException:
        _remove_empty(created)  # a folder made for this run is not left behind empty
        raise
    summary = _summary(items, skipped, ref.path, ref.grid, output, output_folder, mode, merge_method,
                       resampling, register, covered, time.perf_counter() - started, timings)
    return StackResult(summary, items)


def _checked_options(
    inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None, output_folder: str | os.PathLike | None,
    mode: str, merge_method: str | MergeCallable, resampling: str, model: str,
) -> str | MergeCallable:
    """The merge method, once every option is checked (``InputError`` for a bad one or a bad mix)."""
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    merge_method = check_merge_method(merge_method)
    options.resampling_method(resampling)
    options.check_model(model)
    if output is None and output_folder is None:
        raise InputError("give an output raster, an output folder, or both")
    if mode == "merge" and output is None:
        raise InputError("merge mode needs an output raster")
    if not inputs:
        raise InputError("no input rasters given")
    return merge_method


def _check_formats(specs: Sequence[OutputSpec]) -> None:
    """``OutputError`` now, before any work, for an output its format cannot hold."""
    for spec in specs:
        check_format(spec.path, spec.resolved_driver, spec.dtype, spec.count, spec.nodata, spec.creation_options)


def _drop_unused_outputs(opened: Sequence[StackInput], used: Sequence[StackInput], staging: Staging) -> None:
    """No per-input file for the inputs that were skipped (their registration failed)."""
    kept = {id(item) for item in used}
    for item in opened:
        if id(item) not in kept and item.output is not None:
            staging.drop(item.output)
            item.output = None


def _make_folder(folder: str) -> list[str]:
    """Create the output folder (and its parents); ``OutputError`` naming it when that fails.
    Returns the folders it created, outermost first."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"output folder '{folder}' is a file, not a folder")
    missing = []
    parent = os.path.abspath(folder)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder '{folder}' cannot be created ({exc.strerror or exc})") from None
    return missing


def _remove_empty(folders: Sequence[str]) -> None:
    """Remove ``folders`` (outermost first) that are empty, innermost first; others are kept."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty (or gone): neither it nor its parents are removed


def _output_specs(
    items: Sequence[StackInput], grid: Grid, output: str | os.PathLike | None, mode: str,
    merge_method: str | MergeCallable, driver: str | None, folder_driver: str,
    creation_options: Mapping[str, str] | None, nodata: float | None,
) -> list[OutputSpec]:
    """The main output (merged or stacked) first, then one per input with an ``output`` path."""
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
                                items[0].source.band_metadata if mode == "merge" else None))
    for item in items:
        if item.output is not None:
            specs.append(OutputSpec(item.output, grid, item.source.dtype, item.source.count,
                                    _nodata_for(item.source.dtype, nodata, [item]), folder_driver,
                                    creation_options, None, item.source.band_metadata))
    if nodata is None:  # a default nodata the format cannot record gives way to one it can
        for spec in specs:
            spec.nodata = recordable_nodata(spec.path, spec.resolved_driver, spec.dtype, spec.count, spec.nodata)
    return specs


def _write_blocks(
    items: Sequence[StackInput], grid: Grid, specs: Sequence[OutputSpec], mode: str,
    merge_method: str | MergeCallable, resampling: str, block_size: int, executor: Executor | None,
    progress: Progress, staging: Staging, allow_large_output: bool,
) -> int:
    """Warp the inputs block by block into every output; return the number of covered output pixels.

    Blocks are computed by ``executor`` (an internal thread pool when None) and written here, in
    order, with at most ``MAX_BLOCKS_IN_FLIGHT`` blocks held at once. The per-input files are
    written a group at a time (:func:`_writer_groups`: as many as the open-file limit leaves room
    for): the first pass over the blocks warps every input, writes the main output and the first
    group and counts the pixels; each further pass warps only its group's inputs. An input's layer
    is warped on its own, so its pixels are the same in whichever pass.
    """
    windows = blocks(grid, block_size)
    has_main = bool(specs) and specs[0].path != items[0].output
    inputs = [InputSpec(i.path, i.source.nodata_override, tuple(i.transform.to_gdal()), i.source.count, i.box,
                        i.source.dtype, i.local, tuple(i.source.grid.transform.to_gdal())) for i in items]
    per_input = list(specs[1:] if has_main else specs)
    check_space(specs, allow_large_output)
    covered = 0
    with ExitStack() as pools:
        if executor is None and WORKERS > 1:
            executor = pools.enter_context(ThreadPoolExecutor(WORKERS, thread_name_prefix="coreg-stack"))
        groups = _writer_groups(len(per_input), executor, has_main)
        try:
            for k, group in enumerate(groups):
                first = k == 0
                group_specs = ([specs[0]] if has_main and first else []) + per_input[group.start:group.stop]
                calls = [(inputs if first else inputs[group.start:group.stop], GridSpec.of(grid),
                          (int(w.col_off), int(w.row_off), int(w.width), int(w.height)), mode, merge_method,
                          resampling, has_main and first, len(group) > 0) for w in windows]
                with writing(group_specs, staging, check=False) as writers:
                    main = writers[0] if has_main and first else None
                    covered += _write_pass(executor, calls, main, writers[int(main is not None):],
                                           items if first else None,
                                           progress.span(k / len(groups), (k + 1) / len(groups)))
        finally:
            close_thread_sources()
    return covered


def _writer_groups(count: int, executor: Executor | None, has_main: bool) -> list[range]:
    """The ``count`` per-input files (by index) in groups of as many as may be open for writing at
    once beside the main output and the inputs' handles (up to :func:`coreg_plugin.apply.blocks.handles_per_thread`
    on each of the executor's workers); one group, empty if ``count`` is 0, when they all fit."""
    workers = WORKERS if executor is None else executor_workers(executor)
    size = max(1, writers_at_once(workers * handles_per_thread()) - int(has_main))
    if count > size:
        log.info("writing the %d per-input files %d at a time (the open-file limit allows no more)", count, size)
    return [range(start, min(count, start + size)) for start in range(0, count, size)] or [range(0)]


def _write_pass(
    executor: Executor | None, calls: Sequence[tuple], main: BlockWriter | None, per_input: Sequence[BlockWriter],
    items: Sequence[StackInput] | None, progress: Progress,
) -> int:
    """Write one pass of block tasks (:func:`coreg_plugin.apply.blocks.write_blocks`); with ``items``
    (every input, in the tasks' order), add up their valid pixels and return the covered pixels
    (0 without ``items``)."""
    covered, valid = write_blocks(executor, calls, main, per_input, progress, MAX_BLOCKS_IN_FLIGHT)
    if items is None:
        return 0
    for item, count in zip(items, valid.tolist()):
        item.valid_pixels += count
    return covered


def _summary(
    items: Sequence[StackInput], skipped: list[dict[str, str]], reference: str, grid: Grid,
    output: str | os.PathLike | None, folder: str | os.PathLike | None, mode: str,
    merge_method: str | Callable, resampling: str, registered: bool, covered: int, elapsed: float,
    timings: StageTimes,
) -> dict[str, Any]:
    total = grid.width * grid.height
    return {
        "reference": reference,
        "output": None if output is None else os.fspath(output),
        "output_folder": None if folder is None else os.fspath(folder),
        "mode": mode,
        "merge_method": (
            merge_method if isinstance(merge_method, str) else getattr(merge_method, "__name__", "callable")
        ),
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
        "timings_s": timings.rounded(),
    }
