"""How certain a fitted correction is: the 95 % bound of the correction at chosen points.

The tie points' disagreement with the fitted model has two parts: measurement noise, independent
from window to window, and *scene change* (parallax, vegetation, land use, a local field), which
neighbouring windows share. What the registration estimates is the global model that best explains
the content over the whole overlap; its error at a point is therefore the difference between the
model fitted to the tie points and the same model fitted to the scene change over the overlap.

:func:`correction_bound` models the residuals' spatial covariance: an empirical semivariogram of
the fit's residuals (pairs binned by distance, x and y pooled) is fitted with a nugget (the
independent part) plus an exponential or a Gaussian covariance (the shared part, whichever fits
better; its sill and range in px). The variance of the model's error at a point then follows from
that covariance among the tie points and between them and a lattice over the overlap (the
difference of two least-squares fits, as in block kriging). Neighbouring windows that see the same
scene change count for less than independent ones where the overlap is sparsely covered, and for
little extra error where the windows cover it densely (the shared part then averages to the
overlap's own). With too few tie points to fit a variogram (fewer than ``MIN_POINTS_CORRELATED``),
or no overlap given, tie points are taken as independent (least-squares covariance scaled by the
residuals' scatter). Measured on 1024 px pairs of real texture with a smooth random scene-change
field (0.2-0.6 px RMS per window, correlation length 150-400 px; tests/core/test_uncertainty.py).

The 95 % radius of the 2-D correction at a point uses Hotelling's form, ``sqrt(2 F(0.95; 2, dof)
var)``, so few tie points give a wide bound. All values are in moving-image pixels.

The scatter is measured by the residuals, so a bound needs at least one residual degree of freedom
per component: one tie point more than the model has parameters per component (``MIN_POINTS``: 2
for a translation, 4 for an affine and for a local model's global affine part). With fewer, the fit
passes exactly through its tie points whatever the true correction, and the uncertainty is unknown
(NaN), never zero nor infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear
from scipy.spatial.distance import cdist
from scipy.special import fdtri

#: Confidence of the reported bound.
CONFIDENCE = 0.95
#: Parameters per component of each model ("identity" has none).
PARAMETERS = {"identity": 0, "translation": 1, "affine": 3}
#: Fewest tie points (inliers) that bound each model's correction: parameters per component + 1.
MIN_POINTS = {name: k + 1 if k else 0 for name, k in PARAMETERS.items()}
#: Fewest tie points whose residuals' spatial covariance is fitted; fewer are taken as independent.
MIN_POINTS_CORRELATED = 12
#: Distance classes of the empirical semivariogram (equal pair counts), up to half the largest distance.
VARIOGRAM_BINS = 10
#: Lattice over the overlap (per side) standing for the scene change there.
DOMAIN_SAMPLES = 20
#: Candidate ranges of the shared covariance, as shares of the largest tie-point distance.
RANGE_SHARES = np.geomspace(0.02, 2.0, 40)


def bound_model(model: str) -> str:
    """The model whose parameters the bound of ``model`` counts: a local model's global affine part."""
    return "affine" if model == "local" else model


def min_points(model: str) -> int:
    """Fewest tie points that give ``model`` (``identity``, ``translation``, ``affine`` or
    ``local``) a finite, meaningful bound: one residual degree of freedom per component."""
    return MIN_POINTS[bound_model(model)]


def design(points: np.ndarray, model: str) -> np.ndarray:
    """The least-squares design matrix of ``model`` (one component) at (n, 2) points."""
    if model == "translation":
        return np.ones((len(points), 1))
    return np.column_stack([points, np.ones(len(points))])


def correction_bound(
    src: np.ndarray, dst: np.ndarray, h: np.ndarray, model: str, at: np.ndarray,
    overlap: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """95 % radius (px) of the correction of ``h`` (fitted as ``model`` to ``src`` -> ``dst``) at
    the (m, 2) points ``at``. NaN (unknown) when the fit has no degrees of freedom left (fewer than
    ``min_points(model)`` tie points).

    ``overlap`` (col0, row0, col1, row1; px): where the correction is meant to hold; with it and at
    least ``MIN_POINTS_CORRELATED`` tie points, the residuals' spatial covariance is modelled (see the
    module), else tie points are taken as independent."""
    k = PARAMETERS[model]
    if k == 0:
        return np.zeros(len(at))
    n = len(src)
    dof = n - k
    if dof <= 0:
        return np.full(len(at), np.nan)
    residuals = src @ h[:2, :2].T + h[:2, 2] - dst
    factor = 2 * fdtri(2, dof, CONFIDENCE)
    covariance = None
    if overlap is not None and n >= MIN_POINTS_CORRELATED:
        covariance = fit_covariance(src, residuals)
    if covariance is None:
        return np.sqrt(factor * _independent_variance(src, residuals, model, at))
    return np.sqrt(factor * _correlated_variance(src, model, at, overlap, covariance))


def expected_squared_error(bounds: np.ndarray, model: str, n: int) -> np.ndarray:
    """Expected squared length (px²) of the 2-D error of a correction whose 95 % radius is ``bounds``
    (``model`` fitted to ``n`` tie points): twice the per-component variance, ``bound² / F(0.95; 2, dof)``."""
    dof = max(n - PARAMETERS[bound_model(model)], 1)
    return np.asarray(bounds) ** 2 / fdtri(2, dof, CONFIDENCE)


def _independent_variance(src: np.ndarray, residuals: np.ndarray, model: str, at: np.ndarray) -> np.ndarray:
    """Variance (px², per component) of the model's prediction at ``at`` for independent tie points:
    the least-squares covariance scaled by the residuals' pooled scatter."""
    k = PARAMETERS[model]
    sigma2 = float(np.sum(residuals ** 2)) / (2 * (len(src) - k))
    x = design(src, model)
    covariance = sigma2 * np.linalg.pinv(x.T @ x)
    xa = design(at, model)
    return np.einsum("ij,jk,ik->i", xa, covariance, xa)


@dataclass(frozen=True)
class Covariance:
    """The residuals' covariance model (per component, px²): an independent ``nugget`` plus a shared
    part of variance ``sill`` falling off over ``range_px`` as ``shape`` (``exponential``:
    exp(-d / range), ``gaussian``: exp(-(d / range)^2))."""

    nugget: float
    sill: float
    range_px: float
    shape: str

    def shared(self, distances: np.ndarray) -> np.ndarray:
        """The shared part's covariance (px²) at ``distances`` (px)."""
        scaled = distances / self.range_px
        return self.sill * (np.exp(-scaled) if self.shape == "exponential" else np.exp(-scaled ** 2))


def fit_covariance(points: np.ndarray, residuals: np.ndarray) -> Covariance | None:
    """The covariance model of ``residuals`` (n, 2; px) at ``points`` (n, 2; px), fitted to their
    empirical semivariogram (x and y pooled; ``VARIOGRAM_BINS`` classes of equal pair counts up to
    half the largest distance) by least squares weighted by pair counts, nugget and sill not
    negative; the range from ``RANGE_SHARES`` of the largest distance and the shape from
    exponential and Gaussian, whichever fits best. None when there are too few distinct distances
    or the residuals do not differ at all."""
    i, j = np.triu_indices(len(points), 1)
    distance = np.hypot(*(points[i] - points[j]).T)
    half = 0.25 * np.sum((residuals[i] - residuals[j]) ** 2, axis=1)  # semivariance per component
    near = distance <= distance.max() / 2
    distance, half = distance[near], half[near]
    edges = np.unique(np.quantile(distance, np.linspace(0, 1, VARIOGRAM_BINS + 1)))
    if len(edges) < 4:
        return None
    classes = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(classes, minlength=len(edges) - 1).astype(float)
    keep = counts > 0
    lag = (np.bincount(classes, distance, len(edges) - 1)[keep] / counts[keep])
    gamma = (np.bincount(classes, half, len(edges) - 1)[keep] / counts[keep])
    weight = np.sqrt(counts[keep])
    if not np.any(gamma > 0):
        return None
    best: tuple[float, Covariance] | None = None
    for shape in ("exponential", "gaussian"):
        for range_px in RANGE_SHARES * distance.max() * 2:
            falloff = 1 - (np.exp(-lag / range_px) if shape == "exponential" else np.exp(-(lag / range_px) ** 2))
            basis = np.column_stack([np.ones_like(lag), falloff]) * weight[:, None]
            fit = lsq_linear(basis, gamma * weight, bounds=(0.0, np.inf), method="bvls")
            nugget, sill = fit.x
            error = float(np.sum((basis @ fit.x - gamma * weight) ** 2))
            if best is None or error < best[0]:
                best = (error, Covariance(float(nugget), float(sill), float(range_px), shape))
    return best[1] if best else None


def _correlated_variance(
    src: np.ndarray, model: str, at: np.ndarray, overlap: tuple[float, float, float, float], covariance: Covariance
) -> np.ndarray:
    """Variance (px², per component) at ``at`` of the model fitted to the tie points ``src`` minus the
    model fitted to the scene change over the ``overlap`` (a ``DOMAIN_SAMPLES`` lattice), both by
    least squares, under ``covariance``."""
    c0, r0, c1, r1 = overlap
    cols, rows = np.meshgrid(np.linspace(c0, c1, DOMAIN_SAMPLES), np.linspace(r0, r1, DOMAIN_SAMPLES))
    domain = np.column_stack([cols.ravel(), rows.ravel()])
    x, d, xa = design(src, model), design(domain, model), design(at, model)
    a = xa @ np.linalg.pinv(x)  # weights of the tie points in the fitted model at each point
    b = xa @ np.linalg.pinv(d)  # weights of the overlap's lattice in the overlap's own model
    k_tt = covariance.shared(cdist(src, src)) + covariance.nugget * np.eye(len(src))
    k_td = covariance.shared(cdist(src, domain))
    k_dd = covariance.shared(cdist(domain, domain))
    variance = (np.einsum("ij,jk,ik->i", a, k_tt, a) - 2 * np.einsum("ij,jk,ik->i", a, k_td, b)
                + np.einsum("ij,jk,ik->i", b, k_dd, b))
    return np.maximum(variance, 0.0)
