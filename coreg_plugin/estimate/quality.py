"""The quality figure of a registration, and the gate that refuses untrustworthy ones.

The figure is a product of four terms, each between 0 and 1, so any one weakness pulls it down:

- count:  inliers / 8, capped at 1 (eight agreeing tie points are plenty for one model);
- spread: sqrt(area of the inliers' convex hull / area of all window centres' hull) / 0.5, capped
  at 1: inliers bunched in one corner cannot pin down a model over the whole overlap;
- rmse:   exp(-(rmse / 3 px)^2), the RMSE in pixels of the coarser of the two grids (a 5 m image
  against a 30 m reference is judged in 30 m pixels): 0.89 at 1 px, 0.64 at 2 px, 0.37 at 3 px.
  It tells matches from chance: windows of unrelated content "match" anywhere within a quarter of
  the window (RMSE of tens of pixels), while images of distant dates scatter by 0.3 to 2 px from
  scene change (parallax, vegetation, land use) and still match clearly; how certain their mean
  correction is, is the business of the correction's uncertainty (:mod:`.uncertainty`, which models
  scatter shared by neighbouring windows), and a wide one gives "already aligned within +-X" or
  "corrected +-X", not a refusal;
- correlation: median tie-point reliability / 0.4, capped at 1 (reliability is the normalized
  correlation of the edge proxies after alignment: about 0.9 for the same scene, 0.3 to 0.7 across
  dates or bands, near 0 for unrelated content).

Below ``min_quality`` (default 0.3) the run fails with the weakest term named, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.warp import transform as transform_coords
from scipy.spatial import ConvexHull, QhullError

from ..common.affines import apply
from ..io.raster_source import Grid

#: Scale (px of the coarser grid) of the RMSE term.
RMSE_SCALE_PX = 3.0


@dataclass(frozen=True)
class Quality:
    """The quality figure and its terms."""

    score: float
    count: float
    spread: float
    rmse: float
    correlation: float

    def weakest(self) -> str:
        """A sentence naming the weakest term."""
        terms = {
            "too few reliable tie points": self.count,
            "tie points bunched in a small part of the overlap": self.spread,
            "tie points disagree with each other (large residuals)": self.rmse,
            "weak correlation between the images": self.correlation,
        }
        return min(terms, key=terms.get)

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly form, rounded."""
        return {k: round(v, 3) for k, v in self.__dict__.items()}


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (n, 2) points; 0 when they are fewer than 3 or collinear."""
    if len(points) < 3:
        return 0.0
    try:
        return float(ConvexHull(points).volume)
    except QhullError:
        return 0.0


def assess(
    inlier_points: np.ndarray, all_points: np.ndarray, rmse_px: float, reliabilities: np.ndarray
) -> Quality:
    """Compute the quality figure from the inliers' positions (px), their RMSE (px of the coarser grid)
    and reliabilities."""
    n = len(inlier_points)
    count = min(1.0, n / 8)
    total = hull_area(all_points)
    spread = 1.0 if total == 0 else min(1.0, np.sqrt(hull_area(inlier_points) / total) / 0.5)
    rmse = float(np.exp(-((rmse_px / RMSE_SCALE_PX) ** 2)))
    correlation = min(1.0, max(0.0, float(np.median(reliabilities)) / 0.4)) if n else 0.0
    return Quality(count * spread * rmse * correlation, count, spread, rmse, correlation)


def coarse_pixel_factor(moving: Grid, fixed: Grid) -> float:
    """The coarser grid's pixel side in moving pixels: 1 when the moving grid is the coarser (or as
    fine), else the fixed pixel side measured on the moving grid (6 for 5 m moving, 30 m fixed)."""
    xs, ys = fixed.corners().T
    if fixed.crs != moving.crs:
        xs, ys = (np.asarray(v) for v in transform_coords(fixed.crs, moving.crs, xs, ys))
    cols, rows = apply(~moving.transform, xs, ys)
    area = 0.5 * abs(np.dot(cols, np.roll(rows, 1)) - np.dot(rows, np.roll(cols, 1)))
    side = np.sqrt(area / (fixed.width * fixed.height))
    return max(1.0, float(side)) if np.isfinite(side) else 1.0
