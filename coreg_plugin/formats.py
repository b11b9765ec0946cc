"""Output formats: which GDAL driver writes an output, and whether it can hold the data.

The driver comes from the caller (``driver``), else from the extension through :data:`EXTENSIONS`,
an explicit table, so that the format never depends on the GDAL version (GDAL 3.13 answers
``MiraMonRaster`` for ``.img``, older ones ``HFA``); other extensions are looked up in GDAL's own
table, and a file without extension is a GeoTIFF. Before any work :func:`check_format` refuses a
driver that cannot create rasters, a VRT (it would only point at files that do not outlive the
run), lossy formats for data wider than 8 bits, and any format that does not give back the data
type and band count written into it (probed on a 1-pixel file).
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.drivers import driver_from_extension
from rasterio.errors import DriverRegistrationError, RasterioError, RasterioIOError

from .errors import OutputError

#: Extensions GDAL drivers share (or that moved between drivers), mapped explicitly.
EXTENSIONS: dict[str, str] = {
    "tif": "GTiff", "tiff": "GTiff", "img": "HFA", "gif": "GIF", "nc": "netCDF", "vrt": "VRT",
    "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gpkg": "GPKG", "asc": "AAIGrid", "bil": "EHdr",
    "xml": "PDS4", "jp2": "JP2OpenJPEG", "webp": "WEBP", "kea": "KEA", "ers": "ERS", "rst": "RST",
}
#: The extensions offered for outputs (QGIS's file dialogs), GeoTIFF first.
WRITABLE_EXTENSIONS: tuple[str, ...] = ("tif", "tiff", "img", "nc", "gpkg", "png", "jpg", "kea", "ers", "rst", "asc")
#: Extensions several writable drivers claim: the caller must choose.
AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "grd": ("GSBG", "GSAG", "GS7BG", "RRASTER", "NWT_GRD"),
    "ter": ("Leveller", "Terragen"),
    "hdr": ("ENVI", "EHdr", "MFF"),
}
#: Drivers that throw information away whatever the options.
LOSSY = ("JPEG", "WEBP")
#: Drivers written as one file, so the block-written GeoTIFF needs no conversion (GTiff) or a
#: single ``CreateCopy`` (COG).
SINGLE_FILE_DRIVERS = ("GTiff", "COG")


def resolve_driver(path: str, driver: str | None) -> str:
    """The GDAL driver for ``path``: ``driver`` if given, else from the extension, else GTiff.

    Raises ``OutputError`` for an extension several drivers write (``.grd``, ``.hdr``, ``.ter``).
    """
    if driver:
        return driver
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if not extension:
        return "GTiff"
    if extension in AMBIGUOUS:
        raise OutputError(f"output '{path}': several formats use '.{extension}' "
                          f"({', '.join(AMBIGUOUS[extension])}): choose one with the driver option")
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    try:
        return driver_from_extension(path)
    except ValueError:
        return "GTiff"


def check_format(path: str, driver: str, dtype: str, count: int) -> None:
    """Raise ``OutputError`` now, before any work, if ``driver`` cannot write ``count`` bands of
    ``dtype`` at ``path`` exactly."""
    if driver == "VRT":
        raise OutputError(f"output '{path}': a VRT only points at other files; write a GeoTIFF (.tif) "
                          "and build a VRT over it with gdalbuildvrt if needed")
    if driver in LOSSY and np.dtype(dtype).itemsize > 1:
        raise OutputError(f"output '{path}': {driver} is lossy and would cut {dtype} data down "
                          f"(to 8 or 12 bits); use a lossless format such as GeoTIFF (.tif)")
    problem = _probe(driver, os.path.splitext(path)[1], dtype, count)
    if problem:
        raise OutputError(f"output '{path}': GDAL driver '{driver}' {problem}")


@functools.lru_cache(maxsize=64)
def _probe(driver: str, extension: str, dtype: str, count: int) -> str:
    """Write a 1-pixel raster with ``driver`` and read it back: "" when it round-trips, else why not."""
    if driver == "GTiff":
        return ""
    with tempfile.TemporaryDirectory(prefix="coreg-probe-") as folder:
        source = os.path.join(folder, "source.tif")
        target = os.path.join(folder, "probe" + (extension or ".out"))
        try:
            with rasterio.open(source, "w", driver="GTiff", width=2, height=2, count=count, dtype=dtype,
                               crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 2)) as dst:
                dst.write(np.ones((count, 2, 2), dtype))
            rasterio.shutil.copy(source, target, driver=driver)
            with rasterio.open(target) as back:
                if back.count != count or back.dtypes[0] != np.dtype(dtype).name:
                    return (f"cannot hold {count} band(s) of {dtype} (it gives back {back.count} band(s) "
                            f"of {back.dtypes[0]})")
        except (RasterioError, RasterioIOError, DriverRegistrationError, CPLE_BaseError, ValueError) as exc:
            return f"cannot write {count} band(s) of {dtype} ({exc})"
    return ""
