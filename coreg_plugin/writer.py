"""Writing rasters block by block, into temporary files committed only when everything succeeded.

Values arrive as floats with NaN for "no data" and are converted back to the output's data type by
rounding to the nearest integer and clipping to the type's range (never truncating). Where there is
no data, the output holds its nodata value; a valid integer value that happens to equal nodata is
moved one step towards the type's middle (as GDAL's warper does), so it stays valid.

Formats: GeoTIFF (tiled, deflate with predictor, BIGTIFF when needed) is written directly. Any other
GDAL driver that can write (``COG``, ``HFA``, ``netCDF``, ...) receives a complete temporary GeoTIFF
through ``rasterio.shutil.copy``. The driver comes from the option, else from the file extension.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.drivers import driver_from_extension
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .errors import InputError
from .progress import Progress
from .raster_source import Grid, RasterSource

#: Output blocks are BLOCK x BLOCK pixels (a multiple of the GeoTIFF tile size).
BLOCK = 1024
TILE = 256
#: Threads warping output blocks while the calling thread writes.
WRITE_WORKERS = min(4, os.cpu_count() or 1)
#: Drivers written as one file, so the temporary file can simply be renamed.
SINGLE_FILE_DRIVERS = ("GTiff", "COG")


def default_nodata(source: RasterSource) -> float:
    """The output nodata value when none is given: the source's, else NaN for floats, else 0."""
    if source.nodata is not None:
        return source.nodata
    return math.nan if np.dtype(source.dtype).kind == "f" else 0.0


def resolve_driver(path: str, driver: str | None) -> str:
    """The GDAL driver for ``path``: ``driver`` if given, else from the extension, else GTiff."""
    if driver:
        return driver
    try:
        return driver_from_extension(path)
    except ValueError:
        return "GTiff"


def check_driver(path: str, driver: str) -> None:
    """Raise ``InputError`` now, before any work, if ``driver`` cannot write ``path``."""
    if driver in SINGLE_FILE_DRIVERS:
        return
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe" + os.path.splitext(path)[1])
        try:
            with rasterio.open(os.path.join(folder, "probe.tif"), "w", driver="GTiff", width=1, height=1,
                               count=1, dtype="uint8", crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 1)) as dst:
                dst.write(np.zeros((1, 1, 1), "uint8"))
            rasterio.shutil.copy(os.path.join(folder, "probe.tif"), probe, driver=driver)
        except (RasterioIOError, ValueError, rasterio.errors.DriverRegistrationError) as exc:
            raise InputError(f"output '{path}': GDAL driver '{driver}' cannot write rasters here ({exc})") from None


def geotiff_options(dtype: str, user: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tiled, deflate-compressed GeoTIFF options (predictor by type, BIGTIFF when needed); ``user``
    options override them (keys are case-insensitive)."""
    kind = np.dtype(dtype).kind
    options = {"TILED": "YES", "BLOCKXSIZE": str(TILE), "BLOCKYSIZE": str(TILE), "COMPRESS": "DEFLATE",
               "PREDICTOR": "3" if kind == "f" else "2", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}
    options.update({k.upper(): str(v) for k, v in (user or {}).items()})
    return options


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


@dataclass
class OutputSpec:
    """One raster to write: where, on which grid, with which type, bands and format."""

    path: str
    grid: Grid
    dtype: str
    count: int
    nodata: float
    driver: str | None = None
    creation_options: Mapping[str, str] | None = None
    descriptions: Sequence[str | None] | None = None
    band_metadata_from: RasterSource | None = None
    resolved_driver: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        self.resolved_driver = resolve_driver(self.path, self.driver)


class BlockWriter:
    """Writes one :class:`OutputSpec` into a temporary GeoTIFF; :meth:`commit` publishes it."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        folder = os.path.dirname(os.path.abspath(spec.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(spec.path)}.", suffix=".partial.tif", dir=folder)
        os.close(fd)
        gtiff = spec.resolved_driver == "GTiff"
        options = geotiff_options(spec.dtype, spec.creation_options if gtiff else None)
        self.dataset = rasterio.open(
            self.tmp, "w", driver="GTiff", dtype=spec.dtype, count=spec.count, nodata=spec.nodata,
            crs=spec.grid.crs, transform=spec.grid.transform, width=spec.grid.width, height=spec.grid.height,
            **options,
        )
        self._describe()

    def _describe(self) -> None:
        spec, dst = self.spec, self.dataset
        if spec.band_metadata_from is not None:
            copy_band_metadata(spec.band_metadata_from, dst)
        else:
            dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (spec.count - 1)
        for i, text in enumerate(spec.descriptions or ()):
            if text:
                dst.set_band_description(i + 1, text)

    def write(self, window: Window, values: np.ndarray) -> None:
        """Write float ``values`` (bands, rows, cols; NaN = no data) into ``window``."""
        self.dataset.write(to_dtype(values, self.spec.dtype, self.spec.nodata), window=window)

    def write_raw(self, window: Window, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Write ``values`` (bands, rows, cols) already in the output's data type, as they are, and
        the dataset mask (rows, cols; 0 = no data) if given."""
        self.dataset.write(values, window=window)
        if mask is not None:
            self.dataset.write_mask(mask, window=window)

    def commit(self) -> None:
        """Close and publish at the target path (renamed, or copied into the target format)."""
        self.dataset.close()
        spec = self.spec
        if spec.resolved_driver == "GTiff":
            os.replace(self.tmp, spec.path)
            return
        options = {"COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER"} if spec.resolved_driver == "COG" else {}
        options.update({k.upper(): str(v) for k, v in (spec.creation_options or {}).items()})
        target = spec.path
        if spec.resolved_driver in SINGLE_FILE_DRIVERS:
            target = self.tmp[: -len(".partial.tif")] + ".copy.partial"
        try:
            rasterio.shutil.copy(self.tmp, target, driver=spec.resolved_driver, **options)
        except Exception:
            if os.path.exists(target):
                rasterio.shutil.delete(target)
            raise
        if target != spec.path:
            os.replace(target, spec.path)
        os.remove(self.tmp)

    def discard(self) -> None:
        """Close and remove the temporary file; the target path is untouched."""
        if not self.dataset.closed:
            self.dataset.close()
        for leftover in (self.tmp, self.tmp + ".aux.xml"):
            if os.path.exists(leftover):
                os.remove(leftover)


@contextmanager
def writing(specs: Sequence[OutputSpec]) -> Iterator[list[BlockWriter]]:
    """Open a writer per spec; commit them all if the block succeeds, else discard them all."""
    for spec in specs:
        check_driver(spec.path, spec.resolved_driver)
    writers: list[BlockWriter] = []
    with ExitStack() as cleanup:
        cleanup.callback(lambda: [w.discard() for w in writers])
        for spec in specs:
            writers.append(BlockWriter(spec))
        yield writers
        for writer in writers:
            writer.commit()


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
    for band in range(1, src.count + 1):
        try:
            colormap = src.colormap(band)
        except ValueError:  # no colour table
            continue
        dst.write_colormap(band, colormap)


def write_warped(
    source: RasterSource,
    src_transform: Affine,
    grid: Grid,
    path: str,
    *,
    resampling: Resampling,
    nodata: float,
    progress: Progress,
    driver: str | None = "GTiff",
    creation_options: Mapping[str, str] | None = None,
) -> None:
    """Warp every band of ``source`` (with geotransform ``src_transform``) onto ``grid`` into ``path``.

    ``driver`` (``None``: from the extension, else GeoTIFF) and ``creation_options`` choose the format.

    Blocks are warped on worker threads (each with its own dataset handle, released when the pool's
    threads end) while this thread writes them, in order; at most a few blocks of all bands are
    held at once, whatever the raster's size.
    """
    from .stack_blocks import GridSpec, InputSpec, block_task
    from .tasks import run_in_order

    spec = OutputSpec(path, grid, source.dtype, source.count, nodata, driver=driver,
                      creation_options=creation_options, band_metadata_from=source)
    windows = blocks(grid)
    item = InputSpec(source.path, source.nodata_override, tuple(src_transform.to_gdal()), source.count,
                     (0, 0, grid.width, grid.height))
    calls = [([item], GridSpec.of(grid), (int(w.col_off), int(w.row_off), int(w.width), int(w.height)), "stack",
              "first", resampling.name, True, False) for w in windows]
    with writing([spec]) as (writer,), ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="coreg-warp") as pool:
        done = 0

        def write(result: Any) -> None:
            nonlocal done
            col, row, width, height = result.window
            writer.write(Window(col, row, width, height), result.main)
            done += 1
            progress.update(done / len(windows))

        run_in_order(pool, block_task, calls, write, max_in_flight=2 * WRITE_WORKERS)
