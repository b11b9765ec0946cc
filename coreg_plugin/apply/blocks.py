"""The block task every output is written through, and how it is run.

A task warps every input that meets one block of the output grid and merges or stacks the layers:
Coregister Stack's inputs onto its grid, or the one raster Align Image Pair and Apply Correction
correct (:func:`write_warped`), through a corrected geotransform or a local field alike.
A ``first`` or ``last`` merge warps an input only where it could still change a pixel: the inputs
are taken in order (``last``: in reverse), the block's filled pixels are kept, and an input that can
reach only filled pixels is not warped, its valid pixels counted without a warp where geometry and
its mask decide them (:func:`block_task`); other merges warp each input only in the blocks its
footprint meets. Pixels and counts are those of warping every input and merging.
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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from ..common import machine
from ..common.affines import compose
from ..common.errors import CoregError
from ..common.progress import Progress
from ..common.tasks import run_in_order
from ..io.outputs import Staging
from ..io.raster_source import Grid, RasterSource, float_dtype_for
from ..io.warp import (
    MAX_SOURCE_PIXELS,
    extent_scale,
    footprint_in_source,
    kernel_margin,
    read_warped,
    source_window,
)
from ..io.writer import WRITE_WORKERS, BlockWriter, OutputSpec, blocks, writing
from .local_warp import read_local
from .merge import MergeCallable, merge_blocks

if TYPE_CHECKING:  # a field comes with a registration or a correction file, which load it
    from ..correction.local_field import LocalField


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
    """What a block task returns: the merged block, or the stacked block as its inputs' parts (each
    input's band count and layer, None where it misses the block: the writer fills those bands with
    no data), each input's layer (if asked; None where it misses the block), each input's count of
    valid pixels and the count of pixels where any input has data. Inputs that miss the block take
    no memory, however many there are."""

    window: tuple[int, int, int, int]
    main: np.ndarray | None
    layers: list[np.ndarray | None] | None
    valid_pixels: list[int]
    covered: int
    parts: list[tuple[int, np.ndarray | None]] | None = None


_local = threading.local()


def handles_per_thread() -> int:
    """Input handles a worker thread keeps open: a quarter of the process's open-file limit
    (:func:`coreg_plugin.common.machine.open_files`) shared by the workers, between 2 and 64."""
    return max(2, min(64, machine.open_files() // 4 // max(1, os.cpu_count() or 1)))


def _key(path: str, nodata: float | None) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:  # a GDAL dataset name (/vsizip/..., GPKG:file:table), not a file
        return (path, nodata)
    return (path, nodata, stat.st_size, stat.st_mtime_ns)


#: Handles every thread of this process reads through (see :func:`sharing_source`), by key.
_shared: dict[tuple, RasterSource] = {}


@contextmanager
def sharing_source(source: RasterSource) -> Iterator[None]:
    """Within this, the block tasks of this process read ``source`` through this one handle
    instead of one of their own: its decoded blocks (GDAL's cache is kept per handle) serve every
    thread, so a block the kernel margins of two output blocks reach is decoded once, not once per
    thread (its reads take turns, see :class:`~coreg_plugin.io.raster_source.RasterSource`)."""
    key = _key(source.path, source.nodata_override)
    _shared[key] = source
    try:
        yield
    finally:
        _shared.pop(key, None)


def _source(path: str, nodata: float | None) -> RasterSource:
    """The handle on ``path`` this thread reads: the shared one (:func:`sharing_source`), else its
    own (reopened if the file changed)."""
    key = _key(path, nodata)
    shared = _shared.get(key)
    if shared is not None:
        return shared
    cache: OrderedDict | None = getattr(_local, "sources", None)
    if cache is None:
        cache = _local.sources = OrderedDict()
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
    """Every band of ``source`` on ``block_grid``: through the local field when there is one, else
    through GDAL's warp with the corrected geotransform; onto a grid in another CRS, as affine tiles
    fitted to PROJ's coordinates (:mod:`.local_warp`: GDAL's own reprojection interpolates them and
    moves the content by up to 0.1 px). NaN = no data."""
    bands = list(range(1, spec.count + 1))
    if spec.local is None or spec.frame is None:
        if source.grid.crs == block_grid.crs:
            return read_warped(source, bands, block_grid, resampling, src_transform=Affine.from_gdal(*spec.transform))
        return read_local(source, bands, None, (Affine.from_gdal(*spec.transform), source.grid.crs), block_grid,
                          resampling)
    frame_crs = source.grid.crs if spec.frame_crs is None else CRS.from_wkt(spec.frame_crs)
    return read_local(source, bands, spec.local, (Affine.from_gdal(*spec.frame), frame_crs), block_grid, resampling)


#: Whether a ``first`` or ``last`` merge leaves out the inputs that could change no pixel of a
#: block (see :func:`block_task`); off, every input meeting a block is warped and merged (the
#: reference the tests compare with: the pixels and the counts are the same).
SKIP_DECIDED = True
#: Methods whose warp gives a pixel wherever its centre falls inside the source raster, when the
#: source pixels its kernel reaches are valid (GDAL's warper counts a pixel whose centre lies outside
#: as no data, and weights the valid pixels of a kernel cut at the edge).
CENTRE_RULE_METHODS = frozenset({"nearest", "bilinear", "cubic", "cubic_spline", "lanczos"})
#: A pixel centre this close (source pixels) to the raster's edge may fall on either side of it in
#: GDAL's transformer: the valid pixels of such a block are counted by warping.
EDGE_TOLERANCE_PX = 1e-6


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
    """Warp the inputs onto block ``window`` (col, row, width, height) of ``grid`` and combine them.

    Merging ``first`` or ``last`` without per-input layers, the inputs are warped in order
    (``last``: in reverse) and an input that can reach (:func:`_reach`) only pixels an earlier one
    has filled (in every band) is not warped: its count of valid pixels is found from the geometry
    and its mask under the block (:func:`_valid_count`), or by warping it when they do not decide
    it. The other named merge methods merge only the inputs whose footprint box meets the block (an
    input that does not has no pixel there), as stacking and per-input layers take every input.
    Pixels and counts are those of warping every input (``SKIP_DECIDED = False``)."""
    col, row, width, height = window
    block_grid = grid.grid().subgrid(col, row, width, height)
    method = Resampling[resampling]
    if (SKIP_DECIDED and mode == "merge" and want_main and not want_layers
            and isinstance(merge_method, str) and inputs):
        if merge_method in ("first", "last"):
            main, counts, covered = _merge_in_order(inputs, block_grid, window, merge_method == "last", method)
            return BlockResult(window, main, None, counts, covered)
        return _merge_meeting(inputs, block_grid, window, merge_method, method)
    layers, counts, covered = _warped_meeting(inputs, block_grid, window, method)
    main, parts = None, None
    if want_main and mode == "merge":
        main = merge_blocks(layers, merge_method, row, col, shape=(inputs[0].count, height, width),
                            dtypes=[float_dtype_for(spec.dtype) for spec in inputs])
    elif want_main:
        parts = [(spec.count, layer) for spec, layer in zip(inputs, layers)]
    return BlockResult(window, main, layers if want_layers else None, counts, covered, parts)


def _warped_meeting(
    inputs: list[InputSpec], block_grid: Grid, window: tuple[int, int, int, int], resampling: Resampling,
) -> tuple[list[np.ndarray | None], list[int], int]:
    """Every input warped onto the block ``window`` where its footprint box meets it, else None (no
    data, no memory); with each input's count of valid pixels and the count of pixels any input covers."""
    col, row, width, height = window
    layers: list[np.ndarray | None] = []
    counts = [0] * len(inputs)
    covered = np.zeros((height, width), bool)
    for index, spec in enumerate(inputs):
        layer = None
        if spec.overlaps(col, row, width, height):
            layer = _warped_layer(_source(spec.path, spec.nodata), spec, block_grid, resampling)
            has_data = np.isfinite(layer).any(axis=0)
            counts[index] = int(has_data.sum())
            covered |= has_data
        layers.append(layer)
    return layers, counts, int(covered.sum())


def _reach(
    spec: InputSpec, source: RasterSource, block_grid: Grid, window: tuple[int, int, int, int], resampling: Resampling,
) -> tuple[slice, slice]:
    """The rows and columns of the block ``window`` where ``spec``'s warp can have data.

    In the source's CRS without a local field, a pixel has data only where its centre falls inside
    the source raster: with a method of :data:`CENTRE_RULE_METHODS` and a grid not rotated against
    the source's, the rows and columns whose centres do (to within :data:`EDGE_TOLERANCE_PX`), else
    those the footprint box meets. Otherwise the whole block: the box of another CRS is drawn
    through points along the edges, and a local field moves pixels off the global correction's box.
    """
    if spec.local is not None or source.grid.crs != block_grid.crs:
        return slice(None), slice(None)
    centres = _centres_in_source(Affine.from_gdal(*spec.transform), block_grid, resampling)
    if centres is not None:
        xs, ys = centres
        inside_cols = np.flatnonzero((xs > -EDGE_TOLERANCE_PX) & (xs < source.grid.width + EDGE_TOLERANCE_PX))
        inside_rows = np.flatnonzero((ys > -EDGE_TOLERANCE_PX) & (ys < source.grid.height + EDGE_TOLERANCE_PX))
        if not inside_cols.size or not inside_rows.size:
            return slice(0, 0), slice(0, 0)
        return slice(inside_rows[0], inside_rows[-1] + 1), slice(inside_cols[0], inside_cols[-1] + 1)
    col, row, width, height = window
    c0, r0, c1, r1 = spec.box
    return slice(max(r0 - row, 0), min(r1 - row, height)), slice(max(c0 - col, 0), min(c1 - col, width))


def _centres_in_source(
    src_transform: Affine, block_grid: Grid, resampling: Resampling
) -> tuple[np.ndarray, np.ndarray] | None:
    """The source pixel coordinates (x of each column, y of each row) of ``block_grid``'s pixel
    centres, when whether a pixel has data depends on its centre alone (a method of
    :data:`CENTRE_RULE_METHODS` and a grid not rotated against the source's); None otherwise."""
    to_source = compose(~src_transform, block_grid.transform)
    if resampling.name not in CENTRE_RULE_METHODS or to_source.b != 0 or to_source.d != 0:
        return None
    return (to_source.a * (np.arange(block_grid.width) + 0.5) + to_source.c,
            to_source.e * (np.arange(block_grid.height) + 0.5) + to_source.f)


def _merge_in_order(
    inputs: list[InputSpec], block_grid: Grid, window: tuple[int, int, int, int], reverse: bool,
    resampling: Resampling,
) -> tuple[np.ndarray, list[int], int]:
    """A ``first`` merge of the inputs (``reverse``: ``last``, the first of the reversed order) on
    one block: the merged block (NaN = no data; the values :func:`merge_blocks` gives, in the
    layers' float type rather than float64: the writer rounds them alike), each
    input's valid pixels and the covered pixels; an input is warped only when it can reach a pixel
    not yet filled in some band, else counted (:func:`_valid_count`)."""
    col, row, width, height = window
    # the layers' values, unchanged: float32 for the inputs of up to 16 bits, whose layers are float32
    dtype = np.result_type(*[float_dtype_for(spec.dtype) for spec in inputs])
    merged: np.ndarray | None = None  # the first layer warped, NaN where it has no data, then filled in
    filled = np.zeros((inputs[0].count, height, width), bool)
    counts = [0] * len(inputs)
    for index in (reversed(range(len(inputs))) if reverse else range(len(inputs))):
        spec = inputs[index]
        if not spec.overlaps(col, row, width, height):
            continue
        source = _source(spec.path, spec.nodata)
        rows, cols = _reach(spec, source, block_grid, window, resampling)
        if filled[:, rows, cols].all():  # nothing left that this input could change
            count = _valid_count(source, spec, block_grid, resampling)
            if count is not None:
                counts[index] = count
                continue
            counts[index] = int(np.isfinite(_warped_layer(source, spec, block_grid, resampling)).any(axis=0).sum())
            continue
        layer = _warped_layer(source, spec, block_grid, resampling)
        valid = np.isfinite(layer)
        counts[index] = int(valid.any(axis=0).sum())
        if merged is None:
            merged, filled = layer.astype(dtype, copy=False), valid
            continue
        if layer.dtype != merged.dtype:  # never narrowed
            merged = merged.astype(np.result_type(merged, layer))
        np.copyto(merged, layer, where=valid & ~filled)
        filled |= valid
    if merged is None:
        merged = np.full(filled.shape, np.nan, dtype)
    return merged, counts, int(filled.any(axis=0).sum())


def _merge_meeting(
    inputs: list[InputSpec], block_grid: Grid, window: tuple[int, int, int, int], method: str,
    resampling: Resampling,
) -> BlockResult:
    """A rasterio merge method (or ``mean``) of the inputs whose footprint meets the block: an input
    that does not has no pixel in it and changes none (the named methods ignore ``index``)."""
    col, row, width, height = window
    warped, counts, covered = _warped_meeting(inputs, block_grid, window, resampling)
    layers = [layer for layer in warped if layer is not None]
    if not layers:
        return BlockResult(window, np.full((inputs[0].count, height, width), np.nan), None, counts, 0)
    return BlockResult(window, merge_blocks(layers, method, row, col), None, counts, covered)


def _valid_count(source: RasterSource, spec: InputSpec, block_grid: Grid, resampling: Resampling) -> int | None:
    """The pixels of ``block_grid`` where ``spec``'s warp has data (in some band), when the geometry
    and the source pixels within the kernels' reach decide it without warping; None otherwise.

    With no valid source pixel within reach, none; with every one valid, those whose centre falls
    inside the source raster: every pixel where the block lies inside the raster, else (methods of
    :data:`CENTRE_RULE_METHODS`, a grid not rotated against the source's) the rows times the columns
    whose centres do, unless a centre lies on the raster's edge. Undecided with a local field,
    another CRS or invalid pixels within reach beside valid ones."""
    if spec.local is not None and spec.frame is not None:
        return None
    grid = source.grid
    if block_grid.crs != grid.crs:
        return None
    src_transform = Affine.from_gdal(*spec.transform)
    box = footprint_in_source(grid, src_transform, block_grid)
    window = source_window(grid, box, kernel_margin(extent_scale(box, block_grid)))  # what the warp reads
    if window is None:
        return 0
    if window.width * window.height > MAX_SOURCE_PIXELS:
        return None
    bands = list(range(1, spec.count + 1))
    integers = all(np.dtype(source.dataset.dtypes[band - 1]).kind in "iu" for band in bands)
    if not (integers and all(source.fully_valid(band) for band in bands)):
        try:
            if integers and source.nodata_override is None:  # integers are finite: the mask decides
                valid = source.read_masks(bands, window) > 0
            else:
                valid = ~np.isnan(source.read_valid(bands, window))
        except (CoregError, RasterioError, RasterioIOError, CPLE_BaseError):
            return None  # the warp reads it again and reports the error, naming the input
        if not valid.any():
            return 0
        if not valid.all():
            return None
    pixels = block_grid.width * block_grid.height
    if box[0] >= 0 and box[1] >= 0 and box[2] <= grid.width and box[3] <= grid.height:
        return pixels
    centres = _centres_in_source(src_transform, block_grid, resampling)
    if centres is None:
        return None
    xs, ys = centres
    edges = np.concatenate([xs, xs - grid.width, ys, ys - grid.height])
    if np.abs(edges).min() < EDGE_TOLERANCE_PX:
        return None
    return int(((xs >= 0) & (xs < grid.width)).sum()) * int(((ys >= 0) & (ys < grid.height)).sum())


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

    Blocks are warped on worker threads (reading through ``source``'s handle, in turns, so that each
    of its blocks is decoded once) while this thread writes them, in order; at most a few blocks of
    all bands are held at once, whatever the raster's size.
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
    with writing([spec], staging, allow_large_output=allow_large_output) as (writer,), sharing_source(source), \
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
            if result.parts is not None:
                main.write_parts(window, result.parts)
            else:
                main.write(window, result.main)
        for writer, layer in zip(per_input, result.layers or []):
            if layer is None:
                writer.write_empty(window)
            else:
                writer.write(window, layer)
        counts = np.asarray(result.valid_pixels, dtype=np.int64)
        valid = counts if valid is None else valid + counts
        covered += result.covered
        done += 1
        progress.update(done / len(calls))

    run_in_order(executor, block_task, calls, write, max_in_flight)
    return covered, np.zeros(0, np.int64) if valid is None else valid
