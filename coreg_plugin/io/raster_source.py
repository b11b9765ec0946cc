"""Opening an input raster once, checking it, and reading its valid pixels.

A pixel is valid when the dataset's own mask says so (declared nodata, internal mask or alpha band),
when it differs from the caller's nodata override, and when it is finite. Invalid pixels come back
as NaN, so every later step (warping, matching) can treat them the same way.
"""

from __future__ import annotations

import errno
import math
import os
import threading
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from ..common.affines import apply, compose
from ..common.errors import InputError
from ..common.options import check_nodata_for_dtype
from . import shared_reads
from .gdal_names import is_plain_path, underlying_file

try:
    import resource
except ImportError:  # Windows
    resource = None


def too_many_open_files() -> str:
    """The message for EMFILE: what it is and how to lift the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE) if resource is not None else (None, None)
    limit = f" (this process may open {soft})" if soft is not None else ""
    return f"too many open files{limit}; raise the limit (ulimit -n) or use fewer inputs at once"


def _out_of_file_handles() -> bool:
    """Whether the process cannot open one more file right now (EMFILE)."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    os.close(fd)
    return False


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, pixel-corner geotransform (may be rotated) and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.height, self.width

    def corners(self) -> np.ndarray:
        """Map coordinates (x, y) of the four outer corners, shape (4, 2)."""
        cols = np.array([0, self.width, self.width, 0], dtype=float)
        rows = np.array([0, 0, self.height, self.height], dtype=float)
        xs, ys = apply(self.transform, cols, rows)
        return np.column_stack([xs, ys])

    def subgrid(self, col_off: float, row_off: float, width: int, height: int) -> Grid:
        """The grid of a window whose top-left corner is at pixel (col_off, row_off) of this grid."""
        return Grid(self.crs, compose(self.transform, Affine.translation(col_off, row_off)), width, height)


def float_dtype_for(dtype: str) -> np.dtype:
    """The float type that holds every value of ``dtype`` exactly enough: float32 up to 16-bit ints."""
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize <= 4:
        return np.dtype("float32")
    if dt.kind in "iub" and dt.itemsize <= 2:
        return np.dtype("float32")
    return np.dtype("float64")


@dataclass(frozen=True)
class BandMetadata:
    """What an output copies from an input's bands: descriptions, units, scales, offsets, colours."""

    descriptions: tuple[str | None, ...]
    units: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    colorinterp: tuple[ColorInterp, ...]
    colormaps: tuple[dict | None, ...] = ()


def check_band(index: int, count: int, role: str, path: str, option: str = "band index") -> int:
    """Check a 0-based band index against ``count`` bands; return rasterio's 1-based band number.

    Raises ``InputError`` naming the file, the option and the valid range when out of range.
    """
    if int(index) != index or not 0 <= index < count:
        raise InputError(
            f"{option} {index} is out of range for {role} '{path}', which has "
            f"{count} band(s): use 0 to {count - 1}"
        )
    return int(index) + 1


@dataclass(frozen=True)
class SourceInfo:
    """What is known about an input once it was opened and checked, without keeping it open."""

    path: str
    role: str
    grid: Grid
    dtype: str
    count: int
    nodata: float | None
    nodata_override: float | None
    band_metadata: BandMetadata

    def band(self, index: int, option: str = "band index") -> int:
        """See :meth:`RasterSource.band`."""
        return check_band(index, self.count, self.role, self.path, option)


def _colormap(dataset: rasterio.io.DatasetReader, band: int) -> dict | None:
    """The colour table of ``band``, or None."""
    try:
        return dataset.colormap(band)
    except ValueError:  # no colour table
        return None


class RasterSource:
    """One input raster, open for reading, with its role ("moving image", ...) for messages."""

    def __init__(self, path: str | os.PathLike, role: str, nodata: float | None = None) -> None:
        """Open ``path`` read-only and check it is a georeferenced raster.

        ``nodata`` overrides the declared nodata value (pixels equal to it are invalid too).
        Raises ``InputError`` naming the file when it is missing, unreadable or not georeferenced.
        """
        self.path = os.fspath(path)
        self.role = role
        holder = underlying_file(self.path)
        if holder is not None and not os.path.exists(holder):
            raise InputError(f"{role} '{self.path}' does not exist")
        if is_plain_path(self.path) and os.path.isdir(self.path) and not self.path.lower().endswith((".zarr", ".gdb")):
            raise InputError(f"{role} '{self.path}' is a folder, not a raster file")
        try:
            self.dataset = rasterio.open(self.path, "r")
        except (RasterioError, RasterioIOError, CPLE_BaseError) as exc:  # RasterioIOError: 1.3 has no common base
            if _out_of_file_handles():
                raise InputError(f"{role} '{self.path}' cannot be opened: {too_many_open_files()}") from None
            raise InputError(f"{role} '{self.path}' is not a raster GDAL can read ({exc})") from None
        try:
            self._check_georeference()
            self.nodata_override = check_nodata_for_dtype(nodata, self.dtype, f"{role} '{self.path}'")
        except InputError:
            self.dataset.close()
            raise
        self.float_dtype = float_dtype_for(self.dtype)
        self._fully_valid: dict[int, bool] = {}
        self._nodata_masks: dict[int, float | None] = {}
        ds = self.dataset
        self._grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
        # Reads go through GDAL one at a time, so that threads may share this handle (and its
        # decoded blocks): see coreg_plugin.apply.blocks.sharing_source.
        self._lock = threading.Lock()

    def _check_georeference(self) -> None:
        ds = self.dataset
        if ds.count < 1:
            raise InputError(f"{self.role} '{self.path}' has no raster bands")
        if ds.crs is None:
            raise InputError(f"{self.role} '{self.path}' has no coordinate reference system")
        if ds.transform == Affine.identity():
            raise InputError(f"{self.role} '{self.path}' has no geotransform (it is not georeferenced)")

    def reopen(self) -> RasterSource:
        """Another handle on the same file, with the same role and nodata override (for another thread)."""
        return RasterSource(self.path, self.role, self.nodata_override)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the dataset."""
        self.dataset.close()

    @property
    def grid(self) -> Grid:
        """The raster's own grid."""
        return self._grid

    def info(self) -> SourceInfo:
        """A snapshot of what later steps need, valid after :meth:`close`."""
        return SourceInfo(self.path, self.role, self.grid, self.dtype, self.count, self.nodata,
                          self.nodata_override, self.band_metadata)

    @property
    def band_metadata(self) -> BandMetadata:
        """The bands' descriptions, units, scales, offsets and colour interpretation."""
        ds = self.dataset
        return BandMetadata(tuple(ds.descriptions), tuple(ds.units), tuple(ds.scales), tuple(ds.offsets),
                            tuple(ds.colorinterp), tuple(_colormap(ds, band) for band in range(1, ds.count + 1)))

    @property
    def dtype(self) -> str:
        """The data type of the first band (rasterio's name, e.g. ``uint16``)."""
        return self.dataset.dtypes[0]

    @property
    def count(self) -> int:
        """Number of bands."""
        return self.dataset.count

    @property
    def nodata(self) -> float | None:
        """The nodata value in force: the override if given, else the declared one (may be None)."""
        if self.nodata_override is not None:
            return self.nodata_override
        return self.dataset.nodata

    def band(self, index: int, option: str = "band index") -> int:
        """Check a 0-based band index and return rasterio's 1-based band number.

        Raises ``InputError`` naming the file, the option and the valid range when out of range.
        """
        return check_band(index, self.count, self.role, self.path, option)

    def fully_valid(self, band: int) -> bool:
        """Whether every pixel of 1-based ``band`` is valid by the dataset's mask (no nodata, mask or
        alpha) and no nodata override is given (NaN values in float data are not ruled out)."""
        if band not in self._fully_valid:  # asked for every tie-point window: GDAL is asked once
            with self._lock:
                flags = self.dataset.mask_flag_enums[band - 1]
            self._fully_valid[band] = self.nodata_override is None and MaskFlags.all_valid in flags
        return self._fully_valid[band]

    def _integer_nodata(self, band: int) -> float | None:
        """The declared nodata of integer ``band`` (of up to 32 bits, exact in :attr:`float_dtype`)
        when its mask is that value alone (no alpha, no mask band) and the type holds it exactly:
        its mask is then where the pixels differ from it."""
        if band not in self._nodata_masks:
            ds = self.dataset
            with self._lock:
                dtype, value = np.dtype(ds.dtypes[band - 1]), ds.nodatavals[band - 1]
                flags = ds.mask_flag_enums[band - 1]
            exact = None
            if dtype.kind in "iu" and dtype.itemsize <= 4 and value is not None and math.isfinite(value) \
                    and flags == [MaskFlags.nodata]:
                info = np.iinfo(dtype)
                exact = float(value) if value == int(value) and info.min <= value <= info.max else None
            self._nodata_masks[band] = exact
        return self._nodata_masks[band]

    def block_shape(self, band: int) -> tuple[int, int] | None:
        """(rows, cols) of 1-based ``band``'s blocks when the raster is tiled (blocks narrower than
        the raster), else None (strips, or a format without blocks)."""
        rows, cols = self.dataset.block_shapes[band - 1]
        return (rows, cols) if cols < self.dataset.width else None

    def read_valid(self, bands: list[int], window: Window) -> np.ndarray:
        """Read 1-based ``bands`` in ``window`` (inside the raster) as float, NaN where invalid.

        Returns an array of shape (len(bands), window.height, window.width).
        """
        ds = self.dataset
        try:
            with self._lock:
                data = ds.read(bands, window=window)
            data = data.astype(self.float_dtype, copy=False)
            if all(np.dtype(ds.dtypes[band - 1]).kind in "iu" and self.fully_valid(band) for band in bands):
                return data  # valid throughout, and integers are finite: no mask to read or apply
            nodata = [self._integer_nodata(band) for band in bands]
            if all(value is not None for value in nodata):  # GDAL's mask would compare the same values
                valid = data != np.array(nodata, data.dtype)[:, None, None]
            else:
                valid = self.read_masks(bands, window) > 0
        except (RasterioError, RasterioIOError, CPLE_BaseError) as exc:
            raise self._read_error(exc) from None
        override = self.nodata_override
        if override is not None and not math.isnan(override):
            valid &= data != override
        valid &= np.isfinite(data)
        data[~valid] = np.nan
        return data

    def read_band(self, band: int, window: Window) -> np.ndarray:
        """1-based ``band`` in ``window`` (inside the raster) as stored: its own data type, no mask applied."""
        try:
            with self._lock:
                return self.dataset.read(band, window=window)
        except (RasterioError, RasterioIOError, CPLE_BaseError) as exc:
            raise self._read_error(exc) from None

    def read_masks(self, bands: list[int], window: Window) -> np.ndarray:
        """GDAL's masks of 1-based ``bands`` in ``window`` (0 = invalid), read as :meth:`read_valid` reads."""
        with self._lock:
            return self.dataset.read_masks(bands, window=window)

    def read_average(self, band: int, window: Window, out_shape: tuple[int, int], out_dtype: np.dtype) -> np.ndarray:
        """Read 1-based ``band`` in ``window`` decimated to ``out_shape`` (rows, columns) by GDAL's
        averaging; only for fully valid data (no mask is applied). Served from a shared copy while this
        raster is shared (:mod:`.shared_reads`)."""
        copy = shared_reads.copy_for(self.path, band, window, out_shape, (self.dataset.height, self.dataset.width),
                                     np.dtype(out_dtype))
        if copy is not None:
            return copy.read(window, out_shape, lambda whole, shape: self._decimated(band, whole, shape, out_dtype))
        return self._decimated(band, window, out_shape, out_dtype)

    def _decimated(self, band: int, window: Window, out_shape: tuple[int, int], out_dtype: np.dtype) -> np.ndarray:
        try:
            with self._lock:
                return self.dataset.read(band, window=window, out_shape=out_shape, resampling=Resampling.average,
                                         out_dtype=out_dtype)
        except (RasterioError, RasterioIOError, CPLE_BaseError) as exc:
            raise self._read_error(exc) from None

    def _read_error(self, exc: Exception) -> InputError:
        """The error of a failed read, naming the file."""
        return InputError(f"{self.role} '{self.path}' cannot be read: {exc} (the file may be truncated or damaged)")
