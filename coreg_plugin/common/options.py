"""Names and defaults shared by the Python API, the CLI and the QGIS provider.

One place for them, so the three interfaces cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio
from rasterio.enums import Resampling

from .errors import InputError
from .names import DEFAULT_RESAMPLING, MODELS, RESAMPLING_METHODS  # noqa: F401 (re-exported)

#: Side of a tie-point window, in moving-image pixels.
DEFAULT_WINDOW_SIZE = 256
MIN_WINDOW_SIZE = 32

#: GDAL's block cache during a run, in MB. GDAL's default (5 % of RAM) would let decoded tiles
#: fill 1.2 GB on a 24 GB machine; a run needs a few blocks at a time.
GDAL_CACHE_MB = 64
#: The same in bytes, as ``rasterio.Env(GDAL_CACHEMAX=...)`` needs it: rasterio hands an integer to
#: GDALSetCacheMax64, which counts bytes (64 would mean 64 bytes: no cache, every block decoded again).
GDAL_CACHE_BYTES = GDAL_CACHE_MB << 20


def gdal_environment(cache_bytes: int = GDAL_CACHE_BYTES) -> rasterio.Env:
    """GDAL's environment for a run, or for a thread of one (rasterio's are per thread): a block
    cache of ``cache_bytes`` (bytes; GDAL has one cache per process), :data:`GDAL_CACHE_BYTES` by
    default. Every workflow, and every stage that changes the cache, enters this one (Apply
    Correction once gave the megabytes as bytes: a cache of 64 bytes)."""
    return rasterio.Env(GDAL_CACHEMAX=cache_bytes)


#: Quality below which a registration is refused unless forced (see :mod:`coreg_plugin.quality`).
DEFAULT_MIN_QUALITY = 0.3


def resampling_method(name: str) -> Resampling:
    """Return rasterio's ``Resampling`` member for ``name``; raise ``InputError`` listing the valid names."""
    if name not in RESAMPLING_METHODS:
        raise InputError(f"unknown resampling '{name}': choose one of {', '.join(RESAMPLING_METHODS)}")
    return Resampling[name]


def check_model(name: str) -> str:
    """Return ``name`` if it is a known model; raise ``InputError`` otherwise."""
    if name not in MODELS:
        raise InputError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return name


def check_window_size(size: int) -> int:
    """Return the tie-point window size (pixels) if it is usable; raise ``InputError`` otherwise."""
    if int(size) != size or size < MIN_WINDOW_SIZE:
        raise InputError(f"window size must be a whole number of pixels >= {MIN_WINDOW_SIZE}, got {size}")
    return int(size)


def check_nodata_for_dtype(value: float | None, dtype: str, what: str) -> float | None:
    """Check that a nodata value can be stored in ``dtype``; raise ``InputError`` naming ``what`` if not."""
    if value is None:
        return None
    value = float(value)
    kind = np.dtype(dtype).kind
    if math.isnan(value):
        if kind != "f":
            raise InputError(f"{what}: NaN cannot be a nodata value for {dtype} data")
        return value
    if kind in "iu":
        info = np.iinfo(dtype)
        if not value.is_integer() or not info.min <= value <= info.max:
            raise InputError(
                f"{what}: nodata {value:g} is outside what {dtype} can hold ({info.min} to {info.max})"
            )
    elif kind == "f" and math.isfinite(value) and abs(value) > np.finfo(dtype).max:
        raise InputError(f"{what}: nodata {value:g} is outside what {dtype} can hold")
    return value
