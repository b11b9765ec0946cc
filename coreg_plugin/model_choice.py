"""Choosing the correction model by the evidence: held-out tie points and the correction's uncertainty.

Candidates, simplest first, each with ``fit`` (tie points -> 3x3 correction) and ``predict``:
``identity`` (no correction), ``translation``, ``affine`` and ``local`` (the affine plus a smooth
residual field, :mod:`.local_model`). Two questions are asked of the inlier tie points:

1. **Which fitted model?** Each candidate is fitted K times, leaving one fold of tie points out
   each time, and its residuals on the left-out points are kept (its *held-out* residuals). A more
   complex candidate replaces a simpler one only when it is clearly better: its squared held-out
   residuals are smaller on average by more than ``Z_CLEARLY_BETTER`` standard errors of the
   paired difference.
2. **Correct at all?** ``identity`` wins ("already aligned") when the fitted model's correction,
   at the overlap centre and at each of its corners, is smaller than its own 95 % uncertainty there,
   that uncertainty being known (finite: see :mod:`.uncertainty` for the fewest tie points).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import local_model, model_fit

#: Folds of the cross-validation (fewer when there are fewer points).
FOLDS = 10
#: A more complex model must beat a simpler one by this many standard errors of the paired
#: difference of squared held-out residuals (about 97.7 % one-sided).
Z_CLEARLY_BETTER = 2.0


@dataclass(frozen=True)
class Candidate:
    """A correction model: ``fit`` maps (src, dst) points (n, 2) to a 3x3 correction."""

    name: str
    min_points: int
    fit: Callable[[np.ndarray, np.ndarray], Any]
    #: Where a fitted model places (n, 2) moving pixel positions (a 3x3 matrix's by default).
    predict_with: Callable[[Any, np.ndarray], np.ndarray] = model_fit.apply

    def predict(self, model: Any, points: np.ndarray) -> np.ndarray:
        """Where the fitted ``model`` places (n, 2) moving pixel positions."""
        return self.predict_with(model, points)


CANDIDATES = {
    "identity": Candidate("identity", 0, lambda src, dst: np.eye(3)),
    "translation": Candidate("translation", 2, lambda src, dst: model_fit.fit_least_squares(src, dst, "translation")),
    "affine": Candidate("affine", 4, lambda src, dst: model_fit.fit_least_squares(src, dst, "affine")),
    "local": Candidate("local", local_model.MIN_POINTS, local_model.LocalFit(local_model.DEFAULT_TAPER_PX),
                       local_model.predict),
}


def held_out_residuals(candidate: Candidate, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Residual length (px) of every point under ``candidate`` fitted without the point's fold.

    Folds interleave the points in their order (tie points come row by row, so every fold spans
    the overlap). NaN when a fold leaves too few points to fit.
    """
    n = len(src)
    folds = min(FOLDS, n)
    out = np.full(n, np.nan)
    for k in range(folds):
        test = np.arange(n) % folds == k
        if (~test).sum() < max(candidate.min_points, 1):
            continue
        h = candidate.fit(src[~test], dst[~test])
        out[test] = np.hypot(*(candidate.predict(h, src[test]) - dst[test]).T)
    return out


def local_candidate(src: np.ndarray, dst: np.ndarray, taper_px: float = local_model.DEFAULT_TAPER_PX) -> Candidate:
    """The ``local`` candidate with its smoothing chosen once on all of ``src`` -> ``dst`` (px), so
    that cross-validation fits one spline per fold (the choice of one number among a few sees the
    held-out points; every fitted field does not)."""
    smoothing = local_model.candidate_smoothing(src, dst)
    return Candidate("local", local_model.MIN_POINTS, local_model.LocalFit(taper_px, smoothing), local_model.predict)


def clearly_better(complex_: np.ndarray, simple: np.ndarray) -> tuple[bool, float]:
    """Whether held-out residuals ``complex_`` beat ``simple`` clearly; also the z score."""
    ok = np.isfinite(complex_) & np.isfinite(simple)
    if ok.sum() < 3:
        return False, float("nan")
    gain = simple[ok] ** 2 - complex_[ok] ** 2
    error = float(np.std(gain, ddof=1)) / np.sqrt(ok.sum())
    z = float(np.mean(gain)) / error if error > 0 else (np.inf if np.mean(gain) > 0 else 0.0)
    return z > Z_CLEARLY_BETTER, z


def rms(values: np.ndarray) -> float:
    """Root mean square of the finite values (NaN if none)."""
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values ** 2))) if len(values) else float("nan")


def best_fitted(src: np.ndarray, dst: np.ndarray, names: list[str]) -> tuple[str, str]:
    """The simplest of ``names`` (simplest first) that no more complex one beats clearly: (name, reason)."""
    usable = [name for name in names if len(src) >= CANDIDATES[name].min_points] or names[:1]
    chosen = usable[0]
    reason = f"{chosen}: the simplest model considered"
    residuals = {chosen: held_out_residuals(CANDIDATES[chosen], src, dst)}
    for name in usable[1:]:
        residuals[name] = held_out_residuals(CANDIDATES[name], src, dst)
        better, z = clearly_better(residuals[name], residuals[chosen])
        if better:
            reason = (f"{name}: held-out RMSE {rms(residuals[name]):.3f} px against {rms(residuals[chosen]):.3f} px "
                      f"for {chosen}, clearly better (z = {z:.1f} > {Z_CLEARLY_BETTER:g})")
            chosen = name
        else:
            reason = (f"{chosen}: {name} is not clearly better on held-out tie points "
                      f"({rms(residuals[name]):.3f} px against {rms(residuals[chosen]):.3f} px, z = {z:.1f})")
    return chosen, reason


@dataclass
class ModelChoice:
    """The outcome: the chosen model, why, and every candidate's held-out RMSE (px)."""

    chosen: str
    reason: str
    held_out_rmse_px: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "candidates": [{"model": name, "held_out_rmse_px": None if not np.isfinite(v) else round(v, 4)}
                           for name, v in self.held_out_rmse_px.items()],
        }


def held_out_table(src: np.ndarray, dst: np.ndarray, names: list[str]) -> dict[str, float]:
    """Held-out RMSE (px) of every candidate in ``names`` that the points can fit."""
    return {name: rms(held_out_residuals(local_candidate(src, dst) if name == "local" else CANDIDATES[name], src, dst))
            for name in names if len(src) >= CANDIDATES[name].min_points}


def within_uncertainty(corrections: np.ndarray, bounds: np.ndarray) -> bool:
    """Whether every correction length (px) is below its 95 % bound, every bound being known
    (finite): nothing to correct. An unknown bound never says "already aligned"."""
    return bool(np.all(np.isfinite(bounds)) and np.all(corrections < bounds))
