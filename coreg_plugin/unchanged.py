"""Writing the moving raster unchanged, for a pair that is already aligned.

GDAL copies the bands as they are (values, georeference, nodata, masks, band descriptions and
colour interpretation) into a tiled, deflate-compressed GeoTIFF: the output's pixels are
bit-identical to the input's. The copy goes to a temporary file renamed when complete.
"""

from __future__ import annotations

import os
import tempfile

import rasterio.shutil

from .writer import geotiff_options


def copy_unchanged(source_path: str, dtype: str, output: str) -> None:
    """Copy the raster at ``source_path`` (of data type ``dtype``) to the GeoTIFF ``output``."""
    folder = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(output)}.", suffix=".partial.tif", dir=folder)
    os.close(fd)
    try:
        rasterio.shutil.copy(source_path, tmp, driver="GTiff", **geotiff_options(dtype))
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, tmp + ".aux.xml"):
            if os.path.exists(leftover):
                os.remove(leftover)
