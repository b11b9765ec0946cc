"""The standard accuracy figures of a registration, as the Landsat and Sentinel-2 quality reports,
AROSICS and KARIOS give them.

Every figure judges the model **applied** (``identity`` when the result is already aligned: then the
residuals are those of no correction, the tie points' measured corrections themselves):

- ``rmse_fit_px``: radial RMSE of the applied model's residuals on the tie points it was fitted to
  (the registration's inliers, status ``used``), like Landsat's GEOMETRIC_RMSE_MODEL; with its
  ``x`` (columns) and ``y`` (rows) components, ``rmse_fit_px ** 2 = x ** 2 + y ** 2``. For the local
  model these are its in-sample residuals (the spline through the tie points), which flatter it:
  read ``rmse_verify_px``.
- ``rmse_verify_px``: radial RMSE of the applied model's **held-out** residuals, like Landsat's
  GEOMETRIC_RMSE_VERIFY (check points not used by the fit): the final pass's table of the model choice
  (:class:`.model_choice.HeldOut`, 10-fold cross-validation on that pass's inlier tie points; each
  point's residual under the model fitted without its fold).
- ``ce90_px``: 90th percentile (numpy's linear interpolation) of the same held-out radial residuals:
  the radius that holds 90 % of them (circular error at 90 %).
- the same three in **metres** (``_m``): pixels times the moving pixel's side on the ground at the
  overlap centre (:func:`pixel_size_m`, in any CRS: a Web Mercator pixel's map metres are not ground
  metres); unknown (NaN) without a CRS.
- ``ceos_ard``: whether the result meets the CEOS-ARD geometric threshold of ``CEOS_ARD_RMSE_PX``
  (0.5 px) radial RMSE, judged on the held-out RMSE in pixels of the **coarser** of the two grids
  (``rmse_verify_px / coarse_pixel_factor``): the output is judged against the reference, and a
  5 m image cannot be registered to a 30 m reference better than the 30 m grid allows. Unknown
  (None) when the held-out RMSE is.

Pixels are those of the moving grid unless a name says ``_coarse_px`` (the coarser grid's pixels,
``coarse_pixel_factor`` moving pixels each). A figure that cannot be computed is NaN (None in the
JSON form): no tie point fitted, no held-out residual (too few tie points for the folds to fit the
model) or, for CE90, fewer than ``CE90_MIN_POINTS`` held-out residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as transform_coords

from ..common.affines import apply, apply_matrix
from ..io.raster_source import Grid
from .registration import STATUS_USED, Registration

#: The CEOS-ARD geometric threshold (Analysis Ready Data for Land, "sub-pixel accuracy: 0.5 pixel or
#: less radial root mean square error"), in pixels of the coarser grid.
CEOS_ARD_RMSE_PX = 0.5
#: CE90 needs at least this many held-out residuals (with fewer, the 90th percentile is little more
#: than the largest of them).
CE90_MIN_POINTS = 10
#: Mean Earth radius (m), for the ground size of a pixel.
EARTH_RADIUS_M = 6_371_008.8
#: Where pixel sides are measured on the ground.
GEOGRAPHIC = CRS.from_epsg(4326)


@dataclass(frozen=True)
class AccuracyFigures:
    """The standard accuracy figures of one registration (see the module docstring): moving pixels
    unless named ``_coarse_px``, metres for ``_m``; NaN where not computable."""

    #: The model the figures judge: the one applied (``identity`` when already aligned).
    model: str
    #: Tie points the fit RMSE is computed on (the inliers) and held-out residuals the verify RMSE and
    #: CE90 are computed on.
    points_fit: int
    points_verify: int
    rmse_fit_px: float
    rmse_fit_x_px: float
    rmse_fit_y_px: float
    rmse_verify_px: float
    ce90_px: float
    #: The moving pixel's side in metres (NaN when unknown).
    pixel_size_m: float
    #: The coarser grid's pixel side in moving pixels (>= 1).
    coarse_pixel_factor: float = 1.0

    @property
    def rmse_verify_coarse_px(self) -> float:
        """The held-out RMSE in pixels of the coarser grid: what the CEOS-ARD threshold judges."""
        return self.rmse_verify_px / self.coarse_pixel_factor

    @property
    def ce90_coarse_px(self) -> float:
        """CE90 in pixels of the coarser grid."""
        return self.ce90_px / self.coarse_pixel_factor

    @property
    def ceos_ard(self) -> bool | None:
        """Whether the held-out RMSE is at most ``CEOS_ARD_RMSE_PX`` pixels of the coarser grid (None:
        unknown)."""
        value = self.rmse_verify_coarse_px
        return None if not math.isfinite(value) else bool(value <= CEOS_ARD_RMSE_PX)

    def metres(self, px: float) -> float:
        """``px`` moving pixels in metres (NaN when the pixel size is unknown)."""
        return px * self.pixel_size_m

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON-friendly form, numbers rounded to ``digits`` decimals, NaN as None."""

        def number(value: float) -> float | None:
            return round(float(value), digits) if math.isfinite(value) else None

        px = {"rmse_fit": self.rmse_fit_px, "rmse_fit_x": self.rmse_fit_x_px, "rmse_fit_y": self.rmse_fit_y_px,
              "rmse_verify": self.rmse_verify_px, "ce90": self.ce90_px}
        return {
            "model": self.model,
            **{f"{name}_px": number(value) for name, value in px.items()},
            **{f"{name}_m": number(self.metres(value)) for name, value in px.items()},
            "rmse_verify_coarse_px": number(self.rmse_verify_coarse_px),
            "ce90_coarse_px": number(self.ce90_coarse_px),
            "ceos_ard": self.ceos_ard,
            "ceos_ard_threshold_coarse_px": CEOS_ARD_RMSE_PX,
            "points_fit": self.points_fit,
            "points_verify": self.points_verify,
            "pixel_size_m": number(self.pixel_size_m),
            "coarse_pixel_factor": number(self.coarse_pixel_factor),
        }


def standard_figures(
    fitted: np.ndarray, targets: np.ndarray, held_out: np.ndarray, *, model: str, pixel_size_m: float,
    coarse_pixel_factor: float = 1.0,
) -> AccuracyFigures:
    """The figures from their pieces, all in moving pixels.

    ``fitted`` and ``targets`` (n, 2): where the applied model places the tie points it was fitted to,
    and where their content was measured to lie (for ``identity``, ``fitted`` is the tie points'
    own positions). ``held_out`` (m,): the applied model's held-out radial residuals (NaN where a fold
    could not be fitted; such points are not counted). ``pixel_size_m``: the moving pixel's side in
    metres (NaN: unknown); ``coarse_pixel_factor``: the coarser grid's pixel side in moving pixels.
    """
    residuals = np.asarray(fitted, float).reshape(-1, 2) - np.asarray(targets, float).reshape(-1, 2)
    if len(residuals):
        x, y = (float(np.sqrt(np.mean(c ** 2))) for c in residuals.T)
    else:
        x = y = math.nan
    held_out = np.asarray(held_out, float).ravel()
    held_out = held_out[np.isfinite(held_out)]
    verify = float(np.sqrt(np.mean(held_out ** 2))) if len(held_out) else math.nan
    ce90 = float(np.percentile(held_out, 90)) if len(held_out) >= CE90_MIN_POINTS else math.nan
    return AccuracyFigures(model, len(residuals), len(held_out), math.hypot(x, y), x, y, verify, ce90,
                           float(pixel_size_m), max(1.0, float(coarse_pixel_factor)))


def registration_figures(reg: Registration, pixel_size_m: float) -> AccuracyFigures:
    """The figures of a registration's applied model (``reg.decision.model``, ``reg.model`` without
    a decision): fit residuals on its ``used`` tie points (``reg.h``, plus the local field for the
    local model; none for ``identity``), held-out residuals from the decision's final-pass table
    (none without a decision), judged in ``reg.coarse_pixel_factor`` moving pixels per coarse pixel."""
    used = [p for p in reg.tie_points if p.status == STATUS_USED]
    src = np.array([[p.x, p.y] for p in used], float).reshape(-1, 2)
    targets = src + np.array([[p.dx, p.dy] for p in used], float).reshape(-1, 2)
    decision = reg.decision
    model = decision.model if decision is not None else reg.model
    if model == "identity":
        fitted = src
    elif reg.local is not None:
        fitted = reg.local.correct(src)
    else:
        fitted = apply_matrix(reg.h, src)
    evidence = decision.evidence if decision is not None else None
    held_out = evidence.of(model) if evidence is not None and len(evidence) else np.empty(0)
    return standard_figures(fitted, targets, held_out, model=model, pixel_size_m=pixel_size_m,
                            coarse_pixel_factor=reg.coarse_pixel_factor)


def pixel_size_m(grid: Grid, at_px: np.ndarray | tuple[float, float]) -> float:
    """The ground side (m) of a pixel of ``grid`` at pixel position ``at_px`` (column, row): the
    geometric mean of the great-circle lengths (sphere of radius ``EARTH_RADIUS_M``) of its two sides,
    their ends placed by PROJ in geographic coordinates. So in any CRS a pixel is measured on the
    ground, to the sphere's approximation of the ellipsoid (within 0.5 %): a UTM 33N pixel of 10 map
    metres at 52.7 degrees north is 9.98 m, a Web Mercator pixel of 16.5 map metres there also 9.98 m
    (its map metres are 1.65 ground metres). NaN without a CRS."""
    crs = grid.crs
    if crs is None or not crs:
        return math.nan
    col, row = float(at_px[0]), float(at_px[1])
    xs, ys = apply(grid.transform, np.array([col, col + 1, col]), np.array([row, row, row + 1]))
    try:
        lons, lats = transform_coords(crs, GEOGRAPHIC, list(np.atleast_1d(xs)), list(np.atleast_1d(ys)))
    except (CRSError, ValueError):
        return math.nan
    lons, lats = np.radians(lons), np.radians(lats)

    def arc(k: int) -> float:
        half = (np.sin((lats[k] - lats[0]) / 2) ** 2
                + np.cos(lats[0]) * np.cos(lats[k]) * np.sin((lons[k] - lons[0]) / 2) ** 2)
        return float(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(half)))

    return math.sqrt(arc(1) * arc(2))
