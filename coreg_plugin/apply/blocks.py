"""The block task every output is written through, and how it is run.

A task warps every input that meets one block of the output grid and merges or stacks the layers:
Coregister Stack's inputs onto its grid, or the one raster Align Image Pair and Apply Correction
correct (:func:`write_warped`), through a corrected geotransform or a local field alike.
Its arguments are plain, picklable values, so any ``concurrent.futures.Executor`` can run it: a
thread pool, a process pool, or a Dask client's executor (``client.get_executor()``) spreading the
work over a cluster. Each worker thread keeps the inputs it read last open (at most
:func:`handles_per_thread`, least recently used closed first, so the number of open files stays
bounded whatever the number of inputs), keyed by name, size and modification time, so a file
rewritten between runs is never read through a stale handle.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..common.progress import Progress
from ..common.tasks import run_in_order
from ..correction.local_field import LocalField
from ..io.outputs import Staging
from ..io.raster_source import Grid, RasterSource, float_dtype_for
from ..io.warp import read_warped
from ..io.writer import WRITE_WORKERS, BlockWriter, OutputSpec, blocks, writing
from .local_warp import read_local
from .merge import MergeCallable, merge_blocks


@dataclass(frozen=True)
class InputSpec:
    """One input as a task sees it: path, nodata override, corrected geotransform (GDAL order),
    band count, footprint box on the output grid (col0, row0, col1, row1) and data type; with a
    local model, the field and its frame (the transform from the field's frame to map coordinates,
    GDAL order: the input's own geotransform for a registration's field, the identity for a
    correction file's; in ``frame_crs``, WKT, by default the input's CRS), and the input is
    resampled through the field instead of the corrected geotransform."""

    path: str
    nodata: float | None
    transform: tuple[float, ...]
    count: int
    box: tuple[int, int, int, int]
    dtype: str = "float64"
    local: LocalField | None = None
    frame: tuple[float, ...] | None = None
    frame_crs: str | None = None

    def overlaps(self, col: int, row: int, width: int, height: int) -> bool:
        """Whether the footprint meets the block."""
        c0, r0, c1, r1 = self.box
        return c0 < col + width and col < c1 and r0 < row + height and row < r1


@dataclass(frozen=True)
class GridSpec:
    """The output grid as plain values."""

    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int

    @classmethod
    def of(cls, grid: Grid) -> GridSpec:
        """The spec of ``grid``."""
        return cls(grid.crs.to_wkt(), tuple(grid.transform.to_gdal()), grid.width, grid.height)

    def grid(self) -> Grid:
        """Back to a :class:`Grid`."""
        return Grid(CRS.from_wkt(self.crs_wkt), Affine.from_gdal(*self.transform), self.width, self.height)


@dataclass
class BlockResult:
    """What a block task returns: the merged or stacked block, each input's layer (if asked), each
    input's count of valid pixels and the count of pixels where any input has data."""

    window: tuple[int, int, int, int]
    main: np.ndarray | None
    layers: list[np.ndarray] | None
    valid_pixels: list[int]
    covered: int


_local = threading.local()


def handles_per_thread() -> int:
    """Input handles a worker thread keeps open: a quarter of the process's open-file limit shared
    by the workers, between 2 and 64."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        soft = 512  # Windows' C runtime default
    if soft in (-1, None) or soft > 1 << 20:
        return 64
    return max(2, min(64, soft // 4 // max(1, os.cpu_count() or 1)))


def _key(path: str, nodata: float | None) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:  # a GDAL dataset name (/vsizip/..., GPKG:file:table), not a file
        return (path, nodata)
    return (path, nodata, stat.st_size, stat.st_mtime_ns)


def _source(path: str, nodata: float | None) -> RasterSource:
    """This thread's open handle on ``path`` (reopened if the file changed)."""
    cache: OrderedDict | None = getattr(_local, "sources", None)
    if cache is None:
        cache = _local.sources = OrderedDict()
    key = _key(path, nodata)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    while len(cache) >= handles_per_thread():
        cache.popitem(last=False)[1].close()
    cache[key] = RasterSource(path, "input", nodata)
    return cache[key]


def close_thread_sources() -> None:
    """Close the handles this thread keeps open."""
    for source in getattr(_local, "sources", {}).values():
        source.close()
    _local.sources = OrderedDict()


def _warped_layer(source: RasterSource, spec: InputSpec, block_grid: Grid, resampling: Resampling) -> np.ndarray:
    """Every band of ``source`` on ``block_grid``: through the local field when there is one,
    else through GDAL's warp with the corrected geotransform (NaN = no data)."""
    if spec.local is None or spec.frame is None:
        return read_warped(source, list(range(1, spec.count + 1)), block_grid, resampling,
                           src_transform=Affine.from_gdal(*spec.transform))
    frame_crs = source.grid.crs if spec.frame_crs is None else CRS.from_wkt(spec.frame_crs)
    return read_local(source, list(range(1, spec.count + 1)), spec.local, (Affine.from_gdal(*spec.frame), frame_crs),
                      block_grid, resampling)


def block_task(
    inputs: list[InputSpec],
    grid: GridSpec,
    window: tuple[int, int, int, int],
    mode: str,
    merge_method: str | MergeCallable,
    resampling: str,
    want_main: bool,
    want_layers: bool,
) -> BlockResult:
    """Warp the inputs onto block ``window`` (col, row, width, height) of ``grid`` and combine them."""
    col, row, width, height = window
    block_grid = grid.grid().subgrid(col, row, width, height)
    layers = []
    for spec in inputs:
        if spec.overlaps(col, row, width, height):
            source = _source(spec.path, spec.nodata)
            layer = _warped_layer(source, spec, block_grid, Resampling[resampling])
        else:
            layer = np.full((spec.count, height, width), np.nan, float_dtype_for(spec.dtype))
        layers.append(layer)
    has_data = [np.any(np.isfinite(layer), axis=0) for layer in layers]
    main = None
    if want_main:
        main = merge_blocks(layers, merge_method, row, col) if mode == "merge" else np.concatenate(layers, axis=0)
    return BlockResult(window, main, layers if want_layers else None, [int(d.sum()) for d in has_data],
                       int(np.any(has_data, axis=0).sum()))


def write_warped(
    source: RasterSource,
    src_transform: Affine,
    grid: Grid,
    path: str,
    *,
    resampling: Resampling,
    nodata: float,
    progress: Progress,
    driver: str | None = None,
    creation_options: Mapping[str, str] | None = None,
    staging: Staging | None = None,
    allow_large_output: bool = False,
    local: LocalField | None = None,
    frame: tuple[Affine, CRS] | None = None,
) -> None:
    """Warp every band of ``source`` (with geotransform ``src_transform``) onto ``grid`` into ``path``.

    ``driver`` (default: from the extension, see :mod:`coreg_plugin.io.formats`) and
    ``creation_options`` choose the format; with a ``staging`` the caller publishes (see
    :func:`coreg_plugin.io.writer.writing`). With a ``local`` field, ``source`` is corrected by it
    instead of by ``src_transform``: ``frame`` is the field's frame (transform to map coordinates
    and its CRS; by default ``source``'s pixel frame), see :mod:`.local_warp`.

    Blocks are warped on worker threads (each with its own dataset handle, released when the pool's
    threads end) while this thread writes them, in order; at most a few blocks of all bands are
    held at once, whatever the raster's size.
    """
    spec = OutputSpec(path, grid, source.dtype, source.count, nodata, driver, creation_options,
                      band_metadata_from=source)
    windows = blocks(grid)
    frame_transform, frame_crs = (source.grid.transform, source.grid.crs) if frame is None else frame
    item = InputSpec(source.path, source.nodata_override, tuple(src_transform.to_gdal()), source.count,
                     (0, 0, grid.width, grid.height), source.dtype, local,
                     tuple(frame_transform.to_gdal()), frame_crs.to_wkt())
    calls = [([item], GridSpec.of(grid), (int(w.col_off), int(w.row_off), int(w.width), int(w.height)), "stack",
              "first", resampling.name, True, False) for w in windows]
    with writing([spec], staging, allow_large_output=allow_large_output) as (writer,), \
            ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="coreg-warp") as pool:
        write_blocks(pool, calls, writer, [], progress, max_in_flight=2 * WRITE_WORKERS)


def write_blocks(
    executor: Executor | None, calls: Sequence[tuple], main: BlockWriter | None, per_input: Sequence[BlockWriter],
    progress: Progress, max_in_flight: int,
) -> tuple[int, np.ndarray]:
    """Run the block tasks ``calls`` (:func:`block_task`'s arguments) on ``executor`` and write their
    results here, in order, at most ``max_in_flight`` blocks held at once: the merged or stacked
    block into ``main``, the first layers into ``per_input``. The one block-writing loop of the
    package (Align, Apply and Stack). Returns the covered output pixels and each input's valid
    pixels, summed over the blocks."""
    covered, done = 0, 0
    valid: np.ndarray | None = None

    def write(result: BlockResult) -> None:
        nonlocal covered, done, valid
        col, row, width, height = result.window
        window = Window(col, row, width, height)
        if main is not None:
            main.write(window, result.main)
        for writer, layer in zip(per_input, result.layers or []):
            writer.write(window, layer)
        counts = np.asarray(result.valid_pixels, dtype=np.int64)
        valid = counts if valid is None else valid + counts
        covered += result.covered
        done += 1
        progress.update(done / len(calls))

    run_in_order(executor, block_task, calls, write, max_in_flight)
    return covered, np.zeros(0, np.int64) if valid is None else valid
