"""Writing a warped raster block by block, into a temporary file renamed only when complete.

Values are converted back to the source's data type by rounding to the nearest integer and clipping
to the type's range (never truncating). Where no valid source pixel lands, the output holds the
nodata value; a valid integer value that happens to equal nodata is moved one step towards the
type's middle (as GDAL's warper does), so it stays valid.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from .progress import Progress
from .raster_source import Grid, RasterSource
from .warp import read_warped

#: Output blocks are BLOCK x BLOCK pixels (a multiple of the GeoTIFF tile size).
BLOCK = 1024
TILE = 256


def default_nodata(source: RasterSource) -> float:
    """The output nodata value when none is given: the source's, else NaN for floats, else 0."""
    if source.nodata is not None:
        return source.nodata
    return math.nan if np.dtype(source.dtype).kind == "f" else 0.0


def geotiff_profile(grid: Grid, dtype: str, count: int, nodata: float) -> dict:
    """Creation options: tiled, deflate-compressed (with predictor), BIGTIFF when needed."""
    kind = np.dtype(dtype).kind
    return {
        "driver": "GTiff", "dtype": dtype, "count": count, "nodata": nodata,
        "crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height,
        "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate",
        "predictor": 3 if kind == "f" else 2, "bigtiff": "IF_SAFER", "num_threads": "ALL_CPUS",
    }


def to_dtype(values: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """Convert float values (NaN = no data) to ``dtype``: round, clip, fill nodata."""
    dt = np.dtype(dtype)
    invalid = ~np.isfinite(values)
    if dt.kind == "f":
        out = values.astype(dt)
        out[invalid] = nodata
        return out
    info = np.iinfo(dt)
    out = np.clip(np.rint(np.where(invalid, 0, values)), info.min, info.max)
    if not math.isnan(nodata):
        clash = ~invalid & (out == nodata)
        out[clash] = nodata + 1 if nodata < info.max else nodata - 1
    out[invalid] = nodata
    return out.astype(dt)


def blocks(grid: Grid, size: int = BLOCK) -> list[Window]:
    """Row-major windows of at most ``size`` x ``size`` pixels covering ``grid``."""
    return [
        Window(col, row, min(size, grid.width - col), min(size, grid.height - row))
        for row in range(0, grid.height, size)
        for col in range(0, grid.width, size)
    ]


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception (or cancellation) the temporary file is removed and ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".aux.xml"):
            if os.path.exists(leftover):
                os.remove(leftover)


def copy_band_metadata(source: RasterSource, dst: rasterio.io.DatasetWriter) -> None:
    """Carry band descriptions, colour interpretation, scale/offset and units over to ``dst``."""
    src = source.dataset
    for i in range(src.count):
        if src.descriptions[i]:
            dst.set_band_description(i + 1, src.descriptions[i])
        if src.units[i]:
            dst.set_band_unit(i + 1, src.units[i])
    dst.scales = src.scales
    dst.offsets = src.offsets
    dst.colorinterp = src.colorinterp


def write_warped(
    source: RasterSource,
    src_transform: Affine,
    grid: Grid,
    path: str,
    *,
    resampling: Resampling,
    nodata: float,
    progress: Progress,
) -> None:
    """Warp every band of ``source`` (with geotransform ``src_transform``) onto ``grid`` into ``path``.

    Works one block at a time; peak memory is about one block of all bands, whatever the raster size.
    """
    bands = list(range(1, source.count + 1))
    profile = geotiff_profile(grid, source.dtype, source.count, nodata)
    windows = blocks(grid)
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            copy_band_metadata(source, dst)
            for done, win in enumerate(windows):
                block_grid = grid.subgrid(win.col_off, win.row_off, win.width, win.height)
                values = read_warped(source, bands, block_grid, resampling,
                                     src_transform=src_transform, num_threads=2)
                dst.write(to_dtype(values, source.dtype, nodata), window=win)
                progress.update((done + 1) / len(windows))
