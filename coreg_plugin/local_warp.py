"""Writing a raster corrected by a local model (:mod:`.local_model`), block by block.

For every output block, the moving pixel position each output pixel's content comes from is
computed on a lattice every ``LATTICE_PX`` output pixels (output grid -> map -> moving pixels where
the content truly lies -> inverse of the local model) and interpolated linearly in between (exact
for the affine and CRS parts at this scale, the local part is smooth over hundreds of pixels); the
moving raster's window under the block (plus a kernel margin) is then resampled there with
``scipy.ndimage.map_coordinates``: cubic B-spline (order 3) for every method but ``nearest``
(order 0) and ``bilinear`` (order 1). Memory is a few blocks, whatever the raster's size.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window
from scipy import ndimage

from .affines import apply
from .local_model import LocalField
from .outputs import Staging
from .progress import Progress
from .raster_source import Grid, RasterSource
from .tasks import run_in_order
from .writer import WRITE_WORKERS, OutputSpec, blocks, writing

#: Output pixels between the lattice nodes where source positions are computed exactly.
LATTICE_PX = 16
#: Extra source pixels read around a block's footprint for the interpolation kernel.
MARGIN = 4
#: A resampled pixel is valid when at least this share of its kernel's weight is on valid pixels.
MIN_VALID_WEIGHT = 0.999


def spline_order(resampling: Resampling) -> int:
    """The ``map_coordinates`` order used for a resampling method."""
    return {Resampling.nearest: 0, Resampling.bilinear: 1}.get(resampling, 3)


def _to_crs(src_crs: CRS, dst_crs: CRS, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if src_crs == dst_crs:
        return xs, ys
    xs, ys = transform_coords(src_crs, dst_crs, xs, ys)
    return np.asarray(xs), np.asarray(ys)


def source_positions(
    field: LocalField, frame: Affine, frame_crs: CRS, source: Grid, grid: Grid, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel positions (columns, rows; pixel corners at integers) whose content belongs at
    each pixel centre of ``window`` of the output ``grid``.

    ``frame`` maps the field's frame to map coordinates of ``frame_crs`` (the moving grid's
    geotransform for a registration's field, the identity for a correction file's).
    """
    width, height = int(window.width), int(window.height)
    lattice_x = np.unique(np.append(np.arange(0, width, LATTICE_PX), width - 1)).astype(float)
    lattice_y = np.unique(np.append(np.arange(0, height, LATTICE_PX), height - 1)).astype(float)
    gx, gy = np.meshgrid(lattice_x + window.col_off + 0.5, lattice_y + window.row_off + 0.5)
    xs, ys = _to_crs(grid.crs, frame_crs, *apply(grid.transform, gx.ravel(), gy.ravel()))
    apparent = field.inverse(np.column_stack(apply(~frame, xs, ys)))
    xs, ys = _to_crs(frame_crs, source.crs, *apply(frame, apparent[:, 0], apparent[:, 1]))
    positions = np.column_stack(apply(~source.transform, xs, ys))
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    ri = np.interp(rows[:, 0], lattice_y, np.arange(len(lattice_y)))[:, None] * np.ones((1, width))
    ci = np.interp(cols[0], lattice_x, np.arange(len(lattice_x)))[None, :] * np.ones((height, 1))
    px = ndimage.map_coordinates(positions[:, 0].reshape(gx.shape), [ri, ci], order=1, mode="nearest")
    py = ndimage.map_coordinates(positions[:, 1].reshape(gx.shape), [ri, ci], order=1, mode="nearest")
    return px, py


def resample_block(
    source: RasterSource, field: LocalField, frame: tuple[Affine, CRS], grid: Grid, window: Window, order: int
) -> np.ndarray:
    """Every band of ``source`` resampled onto ``window`` of ``grid`` through ``field`` (in ``frame``,
    see :func:`source_positions`); NaN = no data."""
    px, py = source_positions(field, *frame, source.grid, grid, window)
    out = np.full((source.count, int(window.height), int(window.width)), np.nan, dtype=source.float_dtype)
    ok = np.isfinite(px) & np.isfinite(py)
    if not ok.any():
        return out
    c0 = max(0, math.floor(np.min(px[ok])) - MARGIN)
    r0 = max(0, math.floor(np.min(py[ok])) - MARGIN)
    c1 = min(source.grid.width, math.ceil(np.max(px[ok])) + MARGIN)
    r1 = min(source.grid.height, math.ceil(np.max(py[ok])) + MARGIN)
    if c1 <= c0 or r1 <= r0:
        return out
    data = source.read_valid(list(range(1, source.count + 1)), Window(c0, r0, c1 - c0, r1 - r0))
    coords = [py - 0.5 - r0, px - 0.5 - c0]
    for band, values in enumerate(data):
        valid = np.isfinite(values)
        weight = ndimage.map_coordinates(valid.astype(np.float32), coords, order=min(order, 1), mode="constant", cval=0)
        filled = np.where(valid, values, np.nanmean(values) if valid.any() else 0).astype(np.float64)
        resampled = ndimage.map_coordinates(filled, coords, order=order, mode="nearest")
        resampled[(weight < MIN_VALID_WEIGHT) | ~ok] = np.nan
        out[band] = resampled
    return out


def write_local(
    source: RasterSource, field: LocalField, grid: Grid, path: str, *,
    resampling: Resampling, nodata: float, progress: Progress, frame: tuple[Affine, CRS] | None = None,
    driver: str | None = "GTiff", creation_options: dict[str, str] | None = None,
    staging: Staging | None = None, allow_large_output: bool = False,
) -> None:
    """Write every band of ``source`` corrected by ``field`` onto ``grid`` at ``path``, blocks
    resampled on worker threads (each with its own dataset handle) and written in order.

    ``frame`` (transform to map coordinates, CRS) of the field: by default ``source``'s pixel frame.
    With a ``staging`` the caller publishes (see :func:`.writer.writing`).
    """
    frame = (source.grid.transform, source.grid.crs) if frame is None else frame
    spec = OutputSpec(path, grid, source.dtype, source.count, nodata, driver=driver,
                      creation_options=creation_options, band_metadata_from=source)
    windows = blocks(grid)
    order = spline_order(resampling)
    handles: dict[int, RasterSource] = {}

    def task(window: Window) -> tuple[Window, np.ndarray]:
        key = threading.get_ident()
        if key not in handles:
            handles[key] = source.reopen()
        return window, resample_block(handles[key], field, frame, grid, window, order)

    try:
        with writing([spec], staging, allow_large_output=allow_large_output) as (writer,), \
                ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="coreg-local") as pool:
            done = 0

            def write(result: tuple[Window, np.ndarray]) -> None:
                nonlocal done
                writer.write(*result)
                done += 1
                progress.update(done / len(windows))

            run_in_order(pool, task, [(w,) for w in windows], write, max_in_flight=2 * WRITE_WORKERS)
    finally:
        for handle in handles.values():
            handle.close()
