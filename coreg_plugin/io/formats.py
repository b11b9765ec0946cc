"""Output formats: which GDAL driver writes an output, and whether it can hold the data.

The driver comes from the caller (``driver``), else from the extension through :data:`EXTENSIONS`,
an explicit table, so that the format never depends on the GDAL version (GDAL 3.13 answers
``MiraMonRaster`` for ``.img``, older ones ``HFA``); other extensions are looked up in GDAL's own
table, and a file without extension is a GeoTIFF.

Before any work (before the registration) :func:`check_format` refuses, with one line naming the
output:

- a driver that cannot create rasters, and a VRT (it would only point at files that do not outlive
  the run);
- a lossy format (:data:`LOSSY`: JPEG, WEBP) for data wider than 8 bits, and for 8-bit data unless
  the ``QUALITY`` creation option is given: a uint8 JPEG moves values by up to tens of DN, so it
  is written only on that explicit request (``--co QUALITY=90`` on the command line);
- a format that does not give back the data type and band count written into it, or the output's
  nodata value (GPKG cannot record NaN, and records int16 nodata only as -32768; PNG and JPEG
  record it in a ``.aux.xml`` sidecar, published with the file). Both are probed on a 2 x 2 pixel
  file holding that nodata value, once per driver, type, band count and value.

Nodata the user chose that the format cannot record is refused, naming the option to change.
Nodata the user did not choose (the input's, else NaN for floats and 0 for integers: see
:func:`.writer.default_nodata`) is replaced, with a warning, by the data type's lowest
value when the format can record that instead (:func:`recordable_nodata`): NaN becomes
-3.4028235e+38 in a float32 GeoPackage, 0 becomes -32768 in an int16 one.

GDAL sometimes fails a call having only logged why (rasterio then raises ``SystemError: Unknown
GDAL Error``): :func:`gdal_reasons` turns that into a ``RasterioError`` carrying what GDAL logged.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.drivers import driver_from_extension
from rasterio.errors import DriverRegistrationError, RasterioError, RasterioIOError

from ..common.errors import OutputError

log = logging.getLogger("coreg")

#: Extensions GDAL drivers share (or that moved between drivers), mapped explicitly.
EXTENSIONS: dict[str, str] = {
    "tif": "GTiff", "tiff": "GTiff", "img": "HFA", "gif": "GIF", "nc": "netCDF", "vrt": "VRT",
    "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gpkg": "GPKG", "asc": "AAIGrid", "bil": "EHdr",
    "xml": "PDS4", "jp2": "JP2OpenJPEG", "webp": "WEBP", "kea": "KEA", "ers": "ERS", "rst": "RST",
}
#: The extensions offered for outputs (QGIS's file dialogs), GeoTIFF first; no lossy format (QGIS
#: passes no creation options, so it could not ask for one).
WRITABLE_EXTENSIONS: tuple[str, ...] = ("tif", "tiff", "img", "nc", "gpkg", "png", "kea", "ers", "rst", "asc")
#: Extensions several writable drivers claim: the caller must choose.
AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "grd": ("GSBG", "GSAG", "GS7BG", "RRASTER", "NWT_GRD"),
    "ter": ("Leveller", "Terragen"),
    "hdr": ("ENVI", "EHdr", "MFF"),
}
#: Drivers that throw information away whatever the options.
LOSSY = ("JPEG", "WEBP")
#: The creation option whose presence asks for a lossy format's loss.
LOSSY_REQUEST = "QUALITY"
#: Drivers written as one file, so the block-written GeoTIFF needs no conversion (GTiff) or a
#: single ``CreateCopy`` (COG).
SINGLE_FILE_DRIVERS = ("GTiff", "COG")
#: What to do about a nodata value the format cannot record (options of Align and Apply; Stack's).
NODATA_ADVICE = ("choose another output nodata value (--output-nodata, OUTPUT_NODATA; --nodata, NODATA for "
                 "a stack) or another format such as GeoTIFF (.tif)")
#: The logger through which rasterio passes on GDAL's messages.
GDAL_LOGGER = "rasterio._env"


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


def same_nodata(a: float | None, b: float | None) -> bool:
    """Whether two nodata values are the same (NaN equals NaN; None only equals None)."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def check_format(
    path: str, driver: str, dtype: str, count: int, nodata: float | None = None,
    creation_options: Mapping[str, str] | None = None,
) -> None:
    """Raise ``OutputError`` now, before any work, if ``driver`` cannot write ``count`` bands of
    ``dtype`` with nodata ``nodata`` (None: no nodata) at ``path`` exactly, or is lossy and
    ``creation_options`` do not ask for it (see the module docstring)."""
    if driver == "VRT":
        raise OutputError(f"output '{path}': a VRT only points at other files; write a GeoTIFF (.tif) "
                          "and build a VRT over it with gdalbuildvrt if needed")
    if driver in LOSSY:
        _check_lossy(path, driver, dtype, creation_options)
    extension = os.path.splitext(path)[1]
    problem = _probe(driver, extension, dtype, count, None)
    if problem:
        raise OutputError(f"output '{path}': GDAL driver '{driver}' {problem}")
    if nodata is not None:
        problem = _probe(driver, extension, dtype, count, _key(nodata))
        if problem:
            raise OutputError(f"output '{path}': GDAL driver '{driver}' {problem}; {NODATA_ADVICE}")


def recordable_nodata(path: str, driver: str, dtype: str, count: int, default: float) -> float:
    """The nodata value to write at ``path`` when the user chose none: ``default`` if ``driver``
    records it, else the lowest value of ``dtype`` if it records that (logged as a warning), else
    ``default`` (:func:`check_format` then refuses it)."""
    kind = np.dtype(dtype).kind
    lowest = float(np.finfo(dtype).min if kind == "f" else np.iinfo(dtype).min)
    extension = os.path.splitext(path)[1]
    if same_nodata(default, lowest) or not _probe(driver, extension, dtype, count, _key(default)):
        return default
    if _probe(driver, extension, dtype, count, _key(lowest)):
        return default
    log.warning("output '%s': GDAL driver '%s' cannot record nodata %s for %s data; its nodata is %s",
                path, driver, _text(default), dtype, _text(lowest))
    return lowest


def _check_lossy(path: str, driver: str, dtype: str, creation_options: Mapping[str, str] | None) -> None:
    """Refuse lossy ``driver`` for data wider than 8 bits, and for 8 bits unless asked for."""
    if np.dtype(dtype).itemsize > 1:
        raise OutputError(f"output '{path}': {driver} is lossy and would cut {dtype} data down "
                          f"(to 8 or 12 bits); use a lossless format such as GeoTIFF (.tif)")
    if not any(key.upper() == LOSSY_REQUEST for key in creation_options or {}):
        raise OutputError(f"output '{path}': {driver} is lossy (pixel values change by up to tens of DN); "
                          f"give the creation option {LOSSY_REQUEST} (e.g. --co {LOSSY_REQUEST}=90) to "
                          "accept that, or use a lossless format such as GeoTIFF (.tif) or PNG (.png)")


def _key(nodata: float) -> str:
    """A nodata value as a cache key of :func:`_probe` (NaN is not equal to itself)."""
    return repr(float(nodata))


def _text(nodata: float) -> str:
    return f"{nodata:g}"


@contextmanager
def gdal_reasons() -> Iterator[None]:
    """Re-raise rasterio's ``SystemError`` (a GDAL call failed having only logged why) as a
    ``RasterioError`` whose message is what GDAL logged on this thread meanwhile, on one line."""
    said: list[str] = []
    thread = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread and record.levelno >= logging.WARNING:
                said.append(record.getMessage())

    handler = _Collect()
    logger = logging.getLogger(GDAL_LOGGER)
    logger.addHandler(handler)
    try:
        yield
    except SystemError as exc:
        reason = "; ".join(" ".join(text.split()) for text in said) or str(exc).split(". To debug")[0]
        raise RasterioError(f"GDAL: {reason}") from None
    finally:
        logger.removeHandler(handler)


@functools.lru_cache(maxsize=256)
def _probe(driver: str, extension: str, dtype: str, count: int, nodata: str | None) -> str:
    """Write a 2 x 2 pixel raster with ``driver`` (one pixel holding ``nodata``, a :func:`_key`, if
    given) and read it back: "" when type, bands and nodata round-trip, else why not."""
    if driver == "GTiff":
        return ""
    value = None if nodata is None else float(nodata)
    what = f"{count} band(s) of {dtype}" if value is None else f"nodata {_text(value)} for {dtype} data"
    pixels = np.ones((count, 2, 2), dtype)
    if value is not None:
        pixels[:, 0, 0] = value
    with tempfile.TemporaryDirectory(prefix="coreg-probe-") as folder:
        source = os.path.join(folder, "source.tif")
        target = os.path.join(folder, "probe" + (extension or ".out"))
        try:
            with rasterio.open(source, "w", driver="GTiff", width=2, height=2, count=count, dtype=dtype,
                               nodata=value, crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 2)) as dst:
                dst.write(pixels)
            with gdal_reasons():
                rasterio.shutil.copy(source, target, driver=driver)
            with rasterio.open(target) as back:
                return _given_back(back, None if driver in LOSSY else pixels, count, dtype, value)
        except (RasterioError, RasterioIOError, DriverRegistrationError, CPLE_BaseError, ValueError) as exc:
            return f"cannot write {what} ({' '.join(str(exc).split())})"


def _given_back(back: rasterio.io.DatasetReader, pixels: np.ndarray | None, count: int, dtype: str,
                nodata: float | None) -> str:
    """"" when ``back`` holds ``count`` bands of ``dtype`` (and ``nodata`` recorded as its nodata
    and, unless ``pixels`` is None (a lossy format), in its first pixel as in ``pixels``), else
    what differs."""
    if back.count != count or back.dtypes[0] != np.dtype(dtype).name:
        return (f"cannot hold {count} band(s) of {dtype} (it gives back {back.count} band(s) "
                f"of {back.dtypes[0] if back.count else 'nothing'})")
    if nodata is None:
        return ""
    recorded = back.nodata
    if not same_nodata(recorded, nodata):
        given = "no nodata" if recorded is None else _text(recorded)
        return f"cannot record nodata {_text(nodata)} for {dtype} data (it gives back {given})"
    if pixels is not None and not same_nodata(float(back.read(1)[0, 0]), float(pixels[0, 0, 0])):
        return (f"cannot record nodata {_text(nodata)} for {dtype} data (a nodata pixel comes back "
                f"as {_text(float(back.read(1)[0, 0]))})")
    return ""
