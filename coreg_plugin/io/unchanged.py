"""Writing the moving raster unchanged, for a pair that is already aligned.

GDAL copies the bands as they are (values, georeference, nodata, masks, band descriptions and
colour interpretation) into the output's format (a tiled, deflate-compressed GeoTIFF by default):
the output's pixels are bit-identical to the input's. The copy is staged, verified and published
like every other output (see :mod:`coreg_plugin.outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import rasterio
import rasterio.shutil

from .formats import resolve_driver
from .outputs import Staging
from .raster_source import Grid
from .writer import WRITE_ERRORS, OutputSpec, geotiff_options, verify_written, write_failure


def copy_unchanged(
    source_path: str,
    dtype: str,
    output: str,
    *,
    staging: Staging | None = None,
    driver: str | None = None,
    creation_options: Mapping[str, str] | None = None,
) -> None:
    """Copy the raster at ``source_path`` (of data type ``dtype``) to ``output`` in the format
    ``driver`` (default: from the extension). With a ``staging`` of the caller, the caller
    publishes; without one, the copy is published here."""
    driver = resolve_driver(output, driver)
    own = Staging([("output", output)]) if staging is None else None
    stage = staging or own
    staged = stage.path(output)
    if driver == "GTiff":
        options = geotiff_options(dtype, creation_options)
    else:
        options = {"COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER"} if driver == "COG" else {}
        options.update({k.upper(): str(v) for k, v in (creation_options or {}).items()})
    try:
        with rasterio.open(source_path) as src:
            grid = Grid(src.crs, src.transform, src.width, src.height)
            count = src.count
        rasterio.shutil.copy(source_path, staged, driver=driver, **options)
        verify_written(staged, OutputSpec(output, grid, dtype, count, math.nan, driver))
        if own is not None:
            own.publish()
    except WRITE_ERRORS as exc:
        raise write_failure(output, staged, exc) from None
    finally:
        if own is not None:
            own.discard()
