"""How certain a fitted correction is: the 95 % bound of the correction at chosen points.

The bound comes from the least-squares fit's covariance scaled by the tie points' own residual
scatter (pooled over x and y), tie points taken as independent. (On synthetic pairs with 0.5 px of
smooth local jitter per window, the bound was about 1.5 times the error actually left.) The 95 % radius of the
2-D correction at a point uses Hotelling's form, ``sqrt(2 F(0.95; 2, dof) var)``, so few tie points
give a wide bound. All values are in moving-image pixels.

The scatter is measured by the residuals, so a bound needs at least one residual degree of freedom
per component: one tie point more than the model has parameters per component (``MIN_POINTS``: 2
for a translation, 4 for an affine and for a local model's global affine part). With fewer, the fit
passes exactly through its tie points whatever the true correction, and the uncertainty is unknown
(NaN), never zero nor infinite.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import f as f_distribution

#: Confidence of the reported bound.
CONFIDENCE = 0.95
#: Parameters per component of each model ("identity" has none).
PARAMETERS = {"identity": 0, "translation": 1, "affine": 3}
#: Fewest tie points (inliers) that bound each model's correction: parameters per component + 1.
MIN_POINTS = {name: k + 1 if k else 0 for name, k in PARAMETERS.items()}


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
    src: np.ndarray, dst: np.ndarray, h: np.ndarray, model: str, at: np.ndarray
) -> np.ndarray:
    """95 % radius (px) of the correction of ``h`` (fitted as ``model`` to ``src`` -> ``dst``) at
    the (m, 2) points ``at``. NaN (unknown) when the fit has no degrees of freedom left (fewer than
    ``min_points(model)`` tie points)."""
    k = PARAMETERS[model]
    if k == 0:
        return np.zeros(len(at))
    n = len(src)
    dof = n - k
    if dof <= 0:
        return np.full(len(at), np.nan)
    residuals = src @ h[:2, :2].T + h[:2, 2] - dst
    sigma2 = float(np.sum(residuals ** 2)) / (2 * (n - k))
    x = design(src, model)
    covariance = sigma2 * np.linalg.pinv(x.T @ x)
    xa = design(at, model)
    variance = np.einsum("ij,jk,ik->i", xa, covariance, xa)
    return np.sqrt(2 * f_distribution.ppf(CONFIDENCE, 2, dof) * variance)
