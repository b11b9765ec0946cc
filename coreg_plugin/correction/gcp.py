"""The tie points of a correction as ground control points: a QGIS Georeferencer ``.points`` file.

One row per tie point used: ``mapX, mapY`` is the true map position (in the correction's CRS,
named on the ``#CRS:`` line), ``pixelX, pixelY`` the raster position showing it, as the
Georeferencer writes them for an image it places by its pixels (column, and the row negated:
``pixelY = -row``; pixel corners at integers, so the centre of the top-left pixel is (0.5, -0.5)).
``residual`` is the tie point's residual against the fitted model, in pixels. Open the file in
QGIS's Georeferencer to inspect or edit the points, or turn it into GDAL GCPs
(:func:`read_points`) and warp with ``gdalwarp -tps``.
"""

from __future__ import annotations

import csv
import io
import os

from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from ..common.affines import apply
from ..common.errors import InputError
from ..io.raster_source import Grid
from .file import Correction, write_text_file

HEADER = ("mapX", "mapY", "pixelX", "pixelY", "enable", "dX", "dY", "residual")


def write_points(path: str | os.PathLike, correction: Correction, grid: Grid) -> str:
    """Write the tie points of ``correction`` as seen on ``grid`` (the raster it was estimated on,
    in the correction's CRS) into a ``.points`` file at ``path``; return the path."""
    path = os.fspath(path)
    if grid.crs != correction.crs:
        raise InputError(f"GCP file '{path}': the raster's CRS is not the correction's; GCPs need the raster "
                         "the correction was estimated on")
    inverse = ~grid.transform
    out = io.StringIO()
    out.write(f"#CRS: {correction.crs.to_wkt()}\n")
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(HEADER)
    for point in correction.tie_points:
        col, row = apply(inverse, point["x"], point["y"])
        rows.writerow([repr(float(point["true_x"])), repr(float(point["true_y"])), repr(float(col)),
                       repr(float(-row)), 1, 0, 0, repr(float(point["residual_px"]))])
    write_text_file(path, out.getvalue())
    return path


def read_points(path: str | os.PathLike) -> tuple[list[GroundControlPoint], CRS | None]:
    """The enabled points of a ``.points`` file as GDAL GCPs (row, col, x, y) and the file's CRS."""
    path = os.fspath(path)
    crs = None
    gcps = []
    with open(path, encoding="utf-8") as source:
        lines = source.read().splitlines()
    if lines and lines[0].startswith("#CRS:"):
        text = lines.pop(0)[len("#CRS:"):].strip()
        crs = CRS.from_user_input(text) if text else None
    for record in csv.DictReader(lines):
        if int(record.get("enable", 1)):
            gcps.append(GroundControlPoint(row=-float(record["pixelY"]), col=float(record["pixelX"]),
                                           x=float(record["mapX"]), y=float(record["mapY"])))
    return gcps, crs
