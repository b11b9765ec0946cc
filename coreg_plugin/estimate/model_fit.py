"""Fitting the correction model to tie points, with robust outlier rejection.

Points are in moving-image pixel coordinates (x = column, y = row, pixel corners at integers).
A model is a 3x3 homogeneous matrix ``H`` that maps a moving pixel position to the pixel position,
on the same moving grid, where its content truly lies.
"""

from __future__ import annotations

import inspect

import numpy as np
from skimage.measure import ransac
from skimage.transform import AffineTransform

from ..common.affines import apply_matrix

#: Residuals (px) below this are never rejected as outliers, however tight the others are.
MIN_REJECT_PX = 0.1
#: Outliers are beyond this many robust standard deviations (1.4826 * MAD).
REJECT_SIGMAS = 3.5
#: Fewest points for each model's fit (bounding its correction takes one more: :data:`.uncertainty.MIN_POINTS`).
MIN_POINTS = {"translation": 1, "affine": 3}

_RANSAC_SEED = {"rng": 0} if "rng" in inspect.signature(ransac).parameters else {"random_state": 0}


def fit_least_squares(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """Least-squares ``model`` ("translation" or "affine") mapping ``src`` onto ``dst``, as 3x3."""
    h = np.eye(3)
    if model == "translation":
        h[:2, 2] = np.mean(dst - src, axis=0)
        return h
    design = np.column_stack([src, np.ones(len(src))])
    solution = np.linalg.lstsq(design, dst, rcond=None)[0]
    h[:2, :] = solution.T
    return h


def _initial_inliers(src: np.ndarray, dst: np.ndarray, model: str, gross_px: float) -> np.ndarray:
    if model == "translation":
        offset = np.median(dst - src, axis=0)
        return np.hypot(*(dst - src - offset).T) <= gross_px
    if len(src) <= 3:  # the affine through 3 points is exact: all are inliers (and RANSAC before
        return np.ones(len(src), bool)  # scikit-image 0.20 refuses min_samples == len(src))
    _, inliers = ransac(
        (src, dst), AffineTransform, min_samples=3, residual_threshold=gross_px,
        max_trials=500, **_RANSAC_SEED,
    )
    return np.zeros(len(src), bool) if inliers is None else inliers


def robust_fit(
    src: np.ndarray, dst: np.ndarray, model: str, *, gross_px: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``model`` robustly; return (H, inlier mask).

    A robust start (the median offset, or RANSAC for the affine model, with ``gross_px`` as the
    inlier threshold) drops gross outliers; least squares on the inliers, re-selected by a
    3.5-sigma MAD rule (never below 0.1 px), is repeated until the inlier set is stable.
    Raises ``ValueError`` when fewer points than the model needs survive.
    """
    need = MIN_POINTS[model]
    inliers = _initial_inliers(src, dst, model, gross_px) if len(src) >= need else np.zeros(len(src), bool)
    if inliers.sum() < need:
        raise ValueError(f"{int(inliers.sum())} consistent tie point(s), the {model} model needs {need}")
    for _ in range(20):
        h = fit_least_squares(src[inliers], dst[inliers], model)
        residuals = np.hypot(*(apply_matrix(h, src) - dst).T)
        sigma = 1.4826 * np.median(residuals[inliers])
        keep = residuals <= max(REJECT_SIGMAS * sigma, MIN_REJECT_PX)
        if keep.sum() < need or np.array_equal(keep, inliers):
            break
        inliers = keep
    return fit_least_squares(src[inliers], dst[inliers], model), inliers


def describe(h: np.ndarray) -> dict[str, float]:
    """Rotation, scales and shear of the linear part of ``h``.

    ``rotation_deg`` turns the column axis towards the row axis when positive: clockwise as the
    image is displayed (rows down). ``scale_x``/``scale_y`` are unitless (1 = no scale change).
    """
    a = h[:2, :2]
    sx = float(np.hypot(a[0, 0], a[1, 0]))
    rotation = float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
    shear_term = float((a[0, 0] * a[0, 1] + a[1, 0] * a[1, 1]) / sx)
    sy = float(np.linalg.det(a) / sx)
    return {"rotation_deg": rotation, "scale_x": sx, "scale_y": sy, "shear": shear_term / sy}
