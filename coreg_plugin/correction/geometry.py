"""Conversions between correction models, geotransforms and the overlap of two rasters.

A correction ``h`` (3x3) maps a moving-image pixel position (x = column, y = row, pixel corners at
integers) to the pixel position, on the moving grid, where its content truly lies. The corrected
geotransform of the moving image is ``T_m * h``: it places every pixel where it belongs.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as transform_coords

from ..common.affines import compose
from ..io.raster_source import Grid
from ..io.warp import footprint_in_source


def translation(dx: float, dy: float) -> np.ndarray:
    """The 3x3 correction that moves content by (dx, dy) moving pixels."""
    h = np.eye(3)
    h[:2, 2] = dx, dy
    return h


def as_affine(h: np.ndarray) -> Affine:
    """The ``Affine`` of a 3x3 matrix."""
    return Affine(*h[:2].ravel())


def corrected_transform(moving: Grid, h: np.ndarray) -> Affine:
    """The moving image's geotransform with correction ``h`` applied."""
    return compose(moving.transform, as_affine(h))


def overlap_box(moving: Grid, fixed: Grid, h: np.ndarray) -> tuple[float, float, float, float] | None:
    """Box (col0, row0, col1, row1), in moving pixels, where the corrected moving image meets the fixed.

    ``None`` when they do not overlap.
    """
    c0, r0, c1, r1 = footprint_in_source(moving, corrected_transform(moving, h), fixed)
    c0, r0 = max(c0, 0.0), max(r0, 0.0)
    c1, r1 = min(c1, float(moving.width)), min(r1, float(moving.height))
    if c1 - c0 < 1 or r1 - r0 < 1:
        return None
    return c0, r0, c1, r1


def inner_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The whole-pixel box inside a continuous box."""
    c0, r0, c1, r1 = box
    return math.ceil(c0), math.ceil(r0), math.floor(c1), math.floor(r1)


def shift_at(h: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The correction (dx, dy) in pixels that ``h`` applies at ``point`` (x, y)."""
    return h[:2, :2] @ point + h[:2, 2] - point


#: Pixel positions per side of the lattice (corners included) whose exact coordinates an affine
#: equivalent of a grid in another CRS is fitted to.
AFFINE_SAMPLES = 5


def in_crs(grid: Grid, crs: CRS) -> tuple[Grid, float]:
    """``grid`` expressed in ``crs`` by an affine geotransform (same size), and the largest distance
    (px of ``grid``) between the places that geotransform gives and the exact ones.

    The geotransform is the least-squares affine map from ``grid``'s pixel positions to their exact
    coordinates in ``crs`` (PROJ, through :func:`rasterio.warp.transform`) on an ``AFFINE_SAMPLES``
    lattice from corner to corner: its errors are the map's curvature over the grid, without
    mean, without a shift of the grid's content. GDAL's warper, by contrast, interpolates the
    coordinate transformation between exactly computed points, which displaces a reprojected image
    by up to 0.07 px (a 1000 px Sentinel-2 crop in UTM 33N onto EPSG:3857, bilinear, median 0.05 px
    along the rows whatever rasterio's ``tolerance``): a grid given in the source's own CRS is warped
    with affine maps only."""
    if grid.crs == crs:
        return grid, 0.0
    steps = np.linspace(0.0, 1.0, AFFINE_SAMPLES)
    cols, rows = np.meshgrid(steps * grid.width, steps * grid.height)
    cols, rows = cols.ravel(), rows.ravel()
    xs, ys = grid.transform * (cols, rows)
    xs, ys = (np.asarray(v) for v in transform_coords(grid.crs, crs, xs, ys))
    design = np.column_stack([cols, rows, np.ones(len(cols))])
    (a, b, c), *_ = np.linalg.lstsq(design, xs, rcond=None)
    (d, e, f), *_ = np.linalg.lstsq(design, ys, rcond=None)
    transform = Affine(a, b, c, d, e, f)
    pixel = math.sqrt(abs(transform.determinant))
    deviation = float(np.max(np.hypot(design @ [a, b, c] - xs, design @ [d, e, f] - ys))) / pixel
    return Grid(crs, transform, grid.width, grid.height), deviation
