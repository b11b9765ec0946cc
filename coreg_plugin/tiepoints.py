"""Tie points: a grid of windows over the overlap, each matched with sub-pixel accuracy.

A window is read from the moving image as it is (no resampling), and the fixed image is resampled
(lanczos: bilinear and cubic shift fine detail by up to 0.04 px at fractional offsets) onto the
grid where the current correction says that window's content belongs. The measured
displacement is therefore a *residual* of the current model, which shrinks to nearly 0 as the model
converges; this removes phase correlation's pull towards whole pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from .correlation import UPSAMPLE, Prepared, match, prepare
from .geometry import corrected_transform
from .raster_source import Grid, RasterSource
from .warp import read_warped

#: Windows where either image has less valid data than this are skipped.
MIN_VALID_FRACTION = 0.6
#: Matches less reliable than this (normalized proxy correlation) are discarded.
MIN_RELIABILITY = 0.15

STATUS_MEASURED = "measured"
STATUS_NODATA = "nodata"
STATUS_NO_TEXTURE = "no texture"
STATUS_UNRELIABLE = "unreliable"


@dataclass
class Measurement:
    """One window's match: residual shift (px, moving grid), reliability and status."""

    dx: float = math.nan
    dy: float = math.nan
    reliability: float = math.nan
    status: str = STATUS_NODATA


def window_origins(box: tuple[int, int, int, int], size: int, max_per_axis: int) -> np.ndarray:
    """Top-left pixels (col, row) of a regular grid of ``size`` windows inside ``box``.

    Windows are at most half a window apart and at most ``max_per_axis`` along each axis.
    """
    c0, r0, c1, r1 = box

    def axis(lo: int, hi: int) -> np.ndarray:
        span = hi - lo - size
        count = min(max_per_axis, span // (size // 2) + 1)
        return np.round(np.linspace(lo, lo + span, count)).astype(int) if count > 1 else np.array([lo + span // 2])

    cols, rows = np.meshgrid(axis(c0, c1), axis(r0, r1))
    return np.column_stack([cols.ravel(), rows.ravel()])


class TiePointMatcher:
    """Measures the windows of one image pair against successive corrections."""

    def __init__(
        self,
        moving: RasterSource,
        fixed: RasterSource,
        moving_band: int,
        fixed_band: int,
        origins: np.ndarray,
        size: int,
        use_edge_proxy: bool,
    ) -> None:
        self.moving, self.fixed = moving, fixed
        self.moving_band, self.fixed_band = moving_band, fixed_band
        self.origins, self.size = origins, size
        self.use_edge_proxy = use_edge_proxy
        self._moving_patches: dict[int, Prepared] = {}

    @property
    def centres(self) -> np.ndarray:
        """Window centres (x, y) in moving pixel coordinates."""
        return self.origins + self.size / 2

    def _moving_patch(self, index: int) -> Prepared:
        if index not in self._moving_patches:
            col, row = self.origins[index]
            data = self.moving.read_valid([self.moving_band], Window(col, row, self.size, self.size))[0]
            self._moving_patches[index] = prepare(data, use_edge_proxy=self.use_edge_proxy)
        return self._moving_patches[index]

    def _fixed_patch(self, index: int, h: np.ndarray) -> Prepared:
        col, row = self.origins[index]
        moving_grid = self.moving.grid
        grid = Grid(moving_grid.crs, corrected_transform(moving_grid, h), moving_grid.width, moving_grid.height)
        window_grid = grid.subgrid(col, row, self.size, self.size)
        data = read_warped(self.fixed, [self.fixed_band], window_grid, Resampling.lanczos)[0]
        return prepare(data, use_edge_proxy=self.use_edge_proxy)

    def measure(self, index: int, h: np.ndarray, upsample: int = UPSAMPLE) -> Measurement:
        """Match window ``index`` with the fixed image placed by correction ``h``, to 1/``upsample`` px."""
        moving = self._moving_patch(index)
        if moving.valid_fraction < MIN_VALID_FRACTION:
            return Measurement(status=STATUS_NODATA)
        fixed = self._fixed_patch(index, h)
        if fixed.valid_fraction < MIN_VALID_FRACTION:
            return Measurement(status=STATUS_NODATA)
        if not (moving.textured and fixed.textured):
            return Measurement(status=STATUS_NO_TEXTURE)
        dx, dy, reliability = match(fixed, moving, upsample=upsample)
        reliable = reliability >= MIN_RELIABILITY and max(abs(dx), abs(dy)) < self.size / 4
        return Measurement(dx, dy, reliability, STATUS_MEASURED if reliable else STATUS_UNRELIABLE)
