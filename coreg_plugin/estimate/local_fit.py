"""Fitting the local model: a smooth displacement field on top of the global affine correction.

Where relief, lens distortion or different orthorectification bend one image against the other,
the correction of a moving pixel position ``p`` is ``A(p) + r(p)``: the global affine ``A`` (3x3, as
everywhere in Coreg, moving px -> where the content truly lies, same grid) plus a local residual
field ``r`` (px, x right / y down). ``r`` is a regularised thin-plate spline
(``scipy.interpolate.RBFInterpolator``) through the tie points' residuals after the affine:

- tie points that disagree with their neighbours are rejected first (each point's residual against
  a plane through its nearest neighbours' residuals, MAD rule);
- the smoothing is chosen by leave-one-out residuals (exact for a linear smoother), so the field
  does not chase measurement noise;
- outside the tie points' convex hull the local part tapers to zero over ``taper_px`` with a cosine,
  so far from the evidence the correction is the global affine.

The field is evaluated once on a coarse grid of nodes (``step`` px apart, covering the whole moving
raster) and kept as a :class:`~coreg_plugin.correction.local_field.LocalField`, which everything
else (tie-point prediction, the inverse map used to resample an output block) interpolates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy.interpolate import RBFInterpolator
from scipy.spatial import ConvexHull, QhullError, cKDTree

from ..common.affines import apply_matrix
from ..correction.local_field import LocalField
from . import model_fit

#: Fewest tie points for a local model.
MIN_POINTS = 12
#: Neighbours each tie point is compared with for the local outlier rule.
NEIGHBOURS = 8
#: A tie point is a local outlier beyond this many robust standard deviations of the disagreements ...
REJECT_SIGMAS = 3.5
#: ... and never below this disagreement (px).
MIN_REJECT_PX = 0.2
#: Smoothing values tried (thin-plate spline, coordinates in units of the tie-point spacing).
SMOOTHING = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)
#: Nodes of the evaluation grid along the raster's longer side at most (at least every 8 px).
MAX_NODES_PER_AXIS = 256
MIN_STEP_PX = 8
#: Taper length (px) outside the tie points' hull when none is given (a default window side).
DEFAULT_TAPER_PX = 256.0


def local_outliers(src: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """True where a tie point's residual (n, 2) disagrees with its neighbours': with the plane fitted
    to its :data:`NEIGHBOURS` nearest neighbours' residuals, evaluated at the point (a plane follows
    the field's gradient, also at the hull's edge and corners)."""
    k = min(NEIGHBOURS, len(src) - 1)
    if k < 3:
        return np.zeros(len(src), bool)
    predicted = neighbour_planes(src, residuals, k)
    disagreement = np.hypot(*(residuals - predicted).T)
    sigma = 1.4826 * np.median(disagreement)
    return disagreement > max(REJECT_SIGMAS * sigma, MIN_REJECT_PX)


def neighbour_planes(src: np.ndarray, residuals: np.ndarray, k: int) -> np.ndarray:
    """At every point of ``src`` (n, 2, px), the plane fitted by least squares to the ``residuals``
    (n, 2) of its ``k`` nearest neighbours, evaluated there: all points at once, as the intercept row
    of the designs' pseudo-inverses (numpy's ``lstsq`` minimum-norm solution, also where the
    neighbours are collinear)."""
    near = cKDTree(src).query(src, k + 1)[1][:, 1:]
    design = np.concatenate([src[near] - src[:, None, :], np.ones((len(src), k, 1))], axis=2)
    intercept = np.linalg.pinv(design, np.finfo(float).eps * max(k, 3))[:, 2, :]
    return np.einsum("nk,nkc->nc", intercept, residuals[near])


def spacing(src: np.ndarray) -> float:
    """Median distance (px) of a tie point to its nearest neighbour."""
    if len(src) < 2:
        return 1.0
    distance = cKDTree(src).query(src, 2)[0][:, 1]
    return float(max(np.median(distance), 1.0))


def _loo_rms(x: np.ndarray, residuals: np.ndarray, smoothing: float) -> float:
    """Leave-one-out RMS (px) of a thin-plate spline with ``smoothing`` (exact for this linear smoother)."""
    n = len(x)
    hat = RBFInterpolator(x, np.eye(n), kernel="thin_plate_spline", smoothing=smoothing)(x)
    fitted = hat @ residuals
    leverage = np.clip(1 - np.diag(hat), 1e-6, None)
    loo = (residuals - fitted) / leverage[:, None]
    return float(np.sqrt(np.mean(np.sum(loo ** 2, axis=1))))


@dataclass
class ResidualSpline:
    """The thin-plate spline through the residuals, in coordinates scaled by the tie-point spacing."""

    interpolator: RBFInterpolator
    scale: float
    smoothing: float
    hull: np.ndarray
    taper_px: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Local part (n, 2) at (n, 2) moving pixel positions, tapered outside the hull."""
        values = self.interpolator(points / self.scale)
        return values * taper(points, self.hull, self.taper_px)[:, None]


def fit_spline(
    src: np.ndarray, residuals: np.ndarray, taper_px: float, smoothing: float | None = None
) -> ResidualSpline:
    """Fit the regularised thin-plate spline to (n, 2) ``residuals`` at ``src`` (px).

    ``smoothing`` None: the value of :data:`SMOOTHING` with the smallest leave-one-out residual.
    """
    scale = spacing(src)
    x = src / scale
    if smoothing is None:
        smoothing = min(SMOOTHING, key=lambda s: _loo_rms(x, residuals, s))
    interpolator = RBFInterpolator(x, residuals, kernel="thin_plate_spline", smoothing=smoothing)
    return ResidualSpline(interpolator, scale, smoothing, hull_polygon(src), taper_px)


def hull_polygon(src: np.ndarray) -> np.ndarray:
    """Vertices (m, 2) of the tie points' convex hull in order (the points themselves if degenerate)."""
    try:
        return src[ConvexHull(src).vertices]
    except (QhullError, ValueError):
        return src


def taper(points: np.ndarray, hull: np.ndarray, length: float) -> np.ndarray:
    """Weight 1 inside the ``hull`` polygon, falling to 0 with a cosine over ``length`` px outside."""
    a = hull
    b = np.roll(hull, -1, axis=0)
    edge = b - a
    inside = np.ones(len(points), bool)
    distance = np.full(len(points), np.inf)
    for start, vector in zip(a, edge):
        rel = points - start
        cross = vector[0] * rel[:, 1] - vector[1] * rel[:, 0]
        inside &= cross >= 0  # counter-clockwise hull (scipy's order in 2-D)
        t = np.clip((rel @ vector) / max(float(vector @ vector), 1e-12), 0, 1)
        distance = np.minimum(distance, np.hypot(*(rel - t[:, None] * vector).T))
    distance[inside] = 0
    return 0.5 * (1 + np.cos(np.pi * np.clip(distance / max(length, 1e-6), 0, 1)))


def node_grid(width: int, height: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Step (px) and node positions (x, y vectors) covering a ``width`` x ``height`` raster."""
    step = float(max(MIN_STEP_PX, math.ceil(max(width, height) / MAX_NODES_PER_AXIS)))
    xs = np.arange(0, width + step, step)
    ys = np.arange(0, height + step, step)
    return step, xs, ys


def fit_local(
    src: np.ndarray, dst: np.ndarray, h: np.ndarray, width: int, height: int, taper_px: float,
    smoothing: float | None = None,
) -> tuple[LocalField, np.ndarray, ResidualSpline]:
    """The local model of tie points ``src`` -> ``dst`` (px) on top of the affine ``h``, sampled on
    nodes covering a ``width`` x ``height`` moving raster.

    Returns (field, mask of the tie points kept after the local outlier rule, spline).
    """
    residuals = dst - apply_matrix(h, src)
    keep = ~local_outliers(src, residuals)
    spline = fit_spline(src[keep], residuals[keep], taper_px, smoothing)
    step, xs, ys = node_grid(width, height)
    gx, gy = np.meshgrid(xs, ys)
    values = spline(np.column_stack([gx.ravel(), gy.ravel()]))
    field = LocalField(h.copy(), Affine.scale(step), values[:, 0].reshape(gx.shape), values[:, 1].reshape(gx.shape))
    return field, keep, spline


class LocalFit:
    """Fit function of the ``local`` model-choice candidate: affine + spline, predicted at points.

    ``smoothing`` fixed (e.g. chosen once on all the tie points, so that cross-validation costs one
    spline per fold), or None to choose it on each fit's own points.
    """

    def __init__(self, taper_px: float, smoothing: float | None = None) -> None:
        self.taper_px = taper_px
        self.smoothing = smoothing

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, ResidualSpline]:
        """(affine, residual spline) fitted to ``src`` -> ``dst`` (px); local outliers left out."""
        h = model_fit.fit_least_squares(src, dst, "affine")
        residuals = dst - apply_matrix(h, src)
        keep = ~local_outliers(src, residuals)
        return h, fit_spline(src[keep], residuals[keep], self.taper_px, self.smoothing)


def candidate_smoothing(src: np.ndarray, dst: np.ndarray) -> float:
    """The smoothing :func:`fit_spline` chooses for all of ``src`` -> ``dst`` (px) after the affine."""
    h = model_fit.fit_least_squares(src, dst, "affine")
    residuals = dst - apply_matrix(h, src)
    keep = ~local_outliers(src, residuals)
    return fit_spline(src[keep], residuals[keep], DEFAULT_TAPER_PX).smoothing


def predict(model: tuple[np.ndarray, ResidualSpline], points: np.ndarray) -> np.ndarray:
    """Where the (affine, spline) ``model`` places (n, 2) moving pixel positions."""
    h, spline = model
    return apply_matrix(h, points) + spline(points)
