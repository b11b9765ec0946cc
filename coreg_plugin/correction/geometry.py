"""Conversions between correction models, geotransforms and the overlap of two rasters.

A correction ``h`` (3x3) maps a moving-image pixel position (x = column, y = row, pixel corners at
integers) to the pixel position, on the moving grid, where its content truly lies. The corrected
geotransform of the moving image is ``T_m * h``: it places every pixel where it belongs.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine

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
