"""Choosing the grid the corrected raster is written on."""

from __future__ import annotations

import math

import numpy as np

from ..correction.geometry import corrected_transform
from ..io.raster_source import Grid
from ..io.warp import footprint_in_source


def output_grid(moving: Grid, fixed: Grid, h: np.ndarray, on_moving_grid: bool, clip_to_moving: bool) -> Grid:
    """The moving grid, or the fixed grid (clipped to the corrected moving footprint if asked).

    A clipped fixed grid keeps the fixed grid's CRS, pixel size and pixel alignment: it is a
    whole-pixel window of it.
    """
    if on_moving_grid:
        return moving
    if not clip_to_moving:
        return fixed
    corrected = Grid(moving.crs, corrected_transform(moving, h), moving.width, moving.height)
    c0, r0, c1, r1 = footprint_in_source(fixed, fixed.transform, corrected)
    c0, r0 = max(0, math.floor(c0 + 1e-6)), max(0, math.floor(r0 + 1e-6))
    c1, r1 = min(fixed.width, math.ceil(c1 - 1e-6)), min(fixed.height, math.ceil(r1 - 1e-6))
    return fixed.subgrid(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))
