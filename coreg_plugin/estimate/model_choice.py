"""Choosing the correction model by the evidence: held-out tie points and the correction's uncertainty.

Candidates, simplest first, each with ``fit`` (tie points -> 3x3 correction) and ``predict``:
``identity`` (no correction), ``translation``, ``affine`` and ``local`` (the affine plus a smooth
residual field, :mod:`.local_fit`). Every rule that picks a model lives here, and every rule reads
one table of held-out residuals (:class:`HeldOut`): each candidate is fitted K times, leaving one
fold of tie points out each time, and its residuals on the left-out points are kept (its *held-out*
residuals, px). A registration computes one such table per measure-and-fit pass, on that pass's
tie points, and the model it reports is the one its **final** pass's table supports; the summary
lists that same table, and the reason quotes its figures.

1. **Which global model?** (``auto``) Affine is considered only with at least
   ``AFFINE_MIN_EVIDENCE`` reliable tie points spread over ``AFFINE_MIN_SPREAD`` of the window grid;
   then the table is made on the tie points an affine fit keeps (its inliers). A more complex
   candidate replaces a simpler one only when it is clearly better (the parsimony rule): its squared
   held-out residuals are smaller on average by more than ``Z_CLEARLY_BETTER`` standard errors of the
   paired difference.
2. **A local model?** (``auto``, at least ``LOCAL_MIN_EVIDENCE`` tie points) Only when, besides
   clearly better than the global model, its held-out RMSE is at most ``LOCAL_MAX_HELD_OUT_SHARE`` of
   the global model's and at least ``LOCAL_MIN_GAIN_PX`` smaller; asked again of the local model's own
   final pass.
3. **Correct at all?** ``identity`` wins ("already aligned") when applying the fitted model's
   correction is not expected to improve the image (:func:`improves`): over the overlap centre and
   its corners, the misregistration it would remove is not larger than the error it would leave,
   its own uncertainty; that uncertainty being known (finite: see :mod:`.uncertainty` for the fewest
   tie points). A correction is applied when it improves the image with 95 % confidence
   (:func:`improves`): from about 1.34 times its 95 % bound; one barely larger than its bound may
   as well leave the image worse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri

from ..common.affines import apply_matrix
from . import local_fit, model_fit
from .quality import hull_area

#: Folds of the cross-validation (fewer when there are fewer points).
FOLDS = 10
#: A more complex model must beat a simpler one by this many standard errors of the paired
#: difference of squared held-out residuals (about 97.7 % one-sided).
Z_CLEARLY_BETTER = 2.0
#: Auto model: affine is considered with at least this many reliable tie points ...
AFFINE_MIN_EVIDENCE = 6
#: ... spread over at least this share (sqrt of hull area ratio) of the window grid.
AFFINE_MIN_SPREAD = 0.5
#: Auto model: the local model is considered with at least this many inlier tie points.
LOCAL_MIN_EVIDENCE = 16
#: ... and chosen only when, besides clearly better (z > 2), its held-out RMSE is at most this share of
#: the global model's: on smooth zero-mean jitter of 0.5 px per 256 px window (no misregistration to
#: speak of) it came out 0.87 of the translation's with z = 2.0; on a 0.85 px smooth field, 0.41.
LOCAL_MAX_HELD_OUT_SHARE = 0.75
#: ... and at least this much smaller (px): a gain below the accuracy Coreg aims at is no reason for a
#: flexible model (on UTM 32N against 33N with GDAL 3.6's cubic tie-point warps, a translation pair,
#: the local model came out 0.013 px against 0.018 px with z = 2.2).
LOCAL_MIN_GAIN_PX = 0.05


@dataclass(frozen=True)
class Candidate:
    """A correction model: ``fit`` maps (src, dst) points (n, 2) to a 3x3 correction."""

    name: str
    min_points: int
    fit: Callable[[np.ndarray, np.ndarray], Any]
    #: Where a fitted model places (n, 2) moving pixel positions (a 3x3 matrix's by default).
    predict_with: Callable[[Any, np.ndarray], np.ndarray] = apply_matrix

    def predict(self, model: Any, points: np.ndarray) -> np.ndarray:
        """Where the fitted ``model`` places (n, 2) moving pixel positions."""
        return self.predict_with(model, points)


CANDIDATES = {
    "identity": Candidate("identity", 0, lambda src, dst: np.eye(3)),
    "translation": Candidate("translation", 2, lambda src, dst: model_fit.fit_least_squares(src, dst, "translation")),
    "affine": Candidate("affine", 4, lambda src, dst: model_fit.fit_least_squares(src, dst, "affine")),
    "local": Candidate("local", local_fit.MIN_POINTS, local_fit.LocalFit(local_fit.DEFAULT_TAPER_PX),
                       local_fit.predict),
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


def local_candidate(src: np.ndarray, dst: np.ndarray, taper_px: float = local_fit.DEFAULT_TAPER_PX) -> Candidate:
    """The ``local`` candidate with its smoothing chosen once on all of ``src`` -> ``dst`` (px), so
    that cross-validation fits one spline per fold (the choice of one number among a few sees the
    held-out points; every fitted field does not)."""
    smoothing = local_fit.candidate_smoothing(src, dst)
    return Candidate("local", local_fit.MIN_POINTS, local_fit.LocalFit(taper_px, smoothing), local_fit.predict)


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


@dataclass
class HeldOut:
    """The table of held-out residuals of one pass: every candidate's residual (px) at each tie point
    ``src`` -> ``dst`` (moving px), computed once, when a rule or the summary first asks for it.

    ``local_taper_px``: the taper of the ``local`` candidate. ``residuals`` may be given for
    candidates already cross-validated on these points (the local model's own passes).
    """

    src: np.ndarray
    dst: np.ndarray
    local_taper_px: float = local_fit.DEFAULT_TAPER_PX
    residuals: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)

    def fits(self, name: str) -> bool:
        """Whether there are enough tie points to cross-validate candidate ``name``."""
        return len(self.src) >= CANDIDATES[name].min_points

    def of(self, name: str) -> np.ndarray:
        """Held-out residual (px) of every tie point under candidate ``name``."""
        if name not in self.residuals:
            candidate = (local_candidate(self.src, self.dst, self.local_taper_px) if name == "local"
                         else CANDIDATES[name])
            self.residuals[name] = held_out_residuals(candidate, self.src, self.dst)
        return self.residuals[name]

    def rmse(self, name: str) -> float:
        """Held-out RMSE (px) of candidate ``name``."""
        return rms(self.of(name))

    def table(self, names: list[str]) -> dict[str, float]:
        """Held-out RMSE (px) of every candidate in ``names`` that the tie points can fit."""
        return {name: self.rmse(name) for name in names if self.fits(name)}


@dataclass(frozen=True)
class Comparison:
    """One use of a parsimony rule on one table: ``model`` against the simpler ``against``, the z
    score of the paired difference of their squared held-out residuals (positive: ``model`` better)
    and whether the rule let ``model`` replace ``against`` (``wins``: z above ``Z_CLEARLY_BETTER``,
    and for the local model the share and gain of question 2 too)."""

    model: str
    against: str
    z: float
    wins: bool

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return {"model": self.model, "against": self.against,
                "z": round(float(self.z), 2) if np.isfinite(self.z) else None, "wins": bool(self.wins)}


def best_fitted(evidence: HeldOut, names: list[str]) -> tuple[str, str, list[Comparison]]:
    """The simplest of ``names`` (simplest first) that no more complex one beats clearly on the table
    ``evidence``: (name, reason, the comparisons made)."""
    usable = [name for name in names if evidence.fits(name)] or names[:1]
    chosen = usable[0]
    reason = f"{chosen}: the simplest model considered"
    comparisons = []
    for name in usable[1:]:
        better, z = clearly_better(evidence.of(name), evidence.of(chosen))
        comparisons.append(Comparison(name, chosen, z, better))
        figures = (f"{evidence.rmse(name):.4f} px against {evidence.rmse(chosen):.4f} px for {chosen} on the "
                   f"final pass's {len(evidence)} tie points, z = {z:.1f}")
        if better:
            reason = f"{name}: held-out RMSE {figures} > {Z_CLEARLY_BETTER:g}, clearly better"
            chosen = name
        else:
            reason = (f"{chosen}: {name} is not clearly better on held-out tie points ({figures}; it must beat "
                      f"z = {Z_CLEARLY_BETTER:g})")
    return chosen, reason, comparisons


@dataclass
class GlobalChoice:
    """The global model one pass chose, why, and the table it was chosen on (None when the model was
    not chosen by held-out evidence: requested, forced, or affine not considered)."""

    name: str
    reason: str
    evidence: HeldOut | None = None
    comparisons: list[Comparison] = field(default_factory=list)


def choose_global(
    model: str, requested: str, reliable: np.ndarray, targets: np.ndarray, all_centres: np.ndarray
) -> GlobalChoice:
    """The global model of one pass, from its reliable tie points (window centres ``reliable`` and
    where their content lies, ``targets``, px) and every window's centre (``all_centres``).

    ``model`` is the model to fit (``auto`` unless ``requested`` or forced to ``affine`` by the
    coarse stage's rotation or scale). With ``auto``, affine is considered with at least
    ``AFFINE_MIN_EVIDENCE`` points spread over ``AFFINE_MIN_SPREAD`` of the window grid and chosen
    when clearly better than a translation on the held-out residuals of the affine fit's inliers.
    """
    if model != "auto":
        why = "requested" if requested != "auto" else "the coarse stage found rotation or scale"
        return GlobalChoice(model, f"{model}: {why}")
    total = hull_area(all_centres)
    spread = float(np.sqrt(hull_area(reliable) / total)) if total > 0 else 0.0
    if spread < AFFINE_MIN_SPREAD or len(reliable) < AFFINE_MIN_EVIDENCE:
        return GlobalChoice("translation", (
            f"translation: affine not considered ({len(reliable)} reliable tie points spread over "
            f"{spread:.2f} of the window grid; it needs {AFFINE_MIN_EVIDENCE} over {AFFINE_MIN_SPREAD:g})"))
    try:
        _, inliers = model_fit.robust_fit(reliable, targets, "affine")
    except ValueError:
        return GlobalChoice("translation", "translation: affine not considered (no consistent affine fit)")
    evidence = HeldOut(reliable[inliers], targets[inliers])
    name, reason, comparisons = best_fitted(evidence, ["translation", "affine"])
    return GlobalChoice(name, reason, evidence, comparisons)


def local_wins(evidence: HeldOut, chosen: str) -> tuple[bool, str, Comparison | None]:
    """Whether the local model explains the held-out tie points of ``evidence`` clearly better than
    the ``chosen`` global model: by ``Z_CLEARLY_BETTER`` standard errors, to at most
    ``LOCAL_MAX_HELD_OUT_SHARE`` of its RMSE and by ``LOCAL_MIN_GAIN_PX``; why; and the comparison
    (no reason and None with fewer than ``LOCAL_MIN_EVIDENCE`` tie points: not considered)."""
    if len(evidence) < LOCAL_MIN_EVIDENCE:
        return False, "", None
    local, simple = evidence.rmse("local"), evidence.rmse(chosen)
    better, z = clearly_better(evidence.of("local"), evidence.of(chosen))
    share = local / simple if simple > 0 else 1.0
    figures = (f"{local:.4f} px against {simple:.4f} px for {chosen} on the final pass's {len(evidence)} tie points, "
               f"z = {z:.1f}")
    wins = better and share <= LOCAL_MAX_HELD_OUT_SHARE and simple - local >= LOCAL_MIN_GAIN_PX
    if wins:
        reason = (f"local: held-out RMSE {figures} > {Z_CLEARLY_BETTER:g}, clearly better "
                  f"(at most {LOCAL_MAX_HELD_OUT_SHARE:g} of it and {LOCAL_MIN_GAIN_PX:g} px smaller)")
    else:
        reason = (f"local is not clearly better on held-out tie points ({figures}; it must beat z = "
                  f"{Z_CLEARLY_BETTER:g}, be at most {LOCAL_MAX_HELD_OUT_SHARE:g} of it and "
                  f"{LOCAL_MIN_GAIN_PX:g} px smaller)")
    return wins, reason, Comparison("local", chosen, z, wins)


def beats_identity(evidence: HeldOut, name: str) -> bool:
    """Whether candidate ``name`` explains the held-out tie points of ``evidence`` clearly better than
    no correction (a local model whose global part alone may be within its uncertainty)."""
    return clearly_better(evidence.of(name), evidence.of("identity"))[0]


@dataclass
class ModelChoice:
    """The outcome: the chosen model, why, every candidate's held-out RMSE (px) on the final pass's
    tie points, and the parsimony comparisons made on them."""

    chosen: str
    reason: str
    held_out_rmse_px: dict[str, float] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "candidates": [{"model": name, "held_out_rmse_px": None if not np.isfinite(v) else round(v, 4)}
                           for name, v in self.held_out_rmse_px.items()],
            "comparisons": [c.as_dict() for c in self.comparisons],
        }


#: A correction is applied when it improves the image with at least this one-sided confidence.
IMPROVEMENT_CONFIDENCE = 0.95


def improves(corrections: np.ndarray, expected_squared_errors: np.ndarray) -> bool:
    """Whether applying a correction improves the image with ``IMPROVEMENT_CONFIDENCE``, weighed over
    its points (the overlap's centre and corners).

    At a point, applying the estimated correction c (length ``corrections``, px) to an image whose
    true correction is t changes its squared misregistration by I = |t|² - |t - c|². With the
    estimate's error normal, of expected square e (``expected_squared_errors``, px², see
    :func:`.uncertainty.expected_squared_error`; per component e / 2), I has mean |c|² and standard
    deviation 2 |c| sqrt(e / 2): it is positive with the probability Phi(|c| / sqrt(2 e)). The
    correction is applied when the mean of |c| / sqrt(2 e) over the points reaches that probability's
    quantile (1.645): for a 95 % radius B over many tie points, |c| >= 1.34 B. So a correction barely
    larger than its own bound, which may as well leave the image worse, is not applied. An unknown
    (non-finite) error never says "already aligned": the correction is applied."""
    if not np.all(np.isfinite(expected_squared_errors)):
        return True
    ratio = corrections / np.sqrt(2 * np.maximum(expected_squared_errors, 1e-30))
    return bool(np.mean(ratio) >= ndtri(IMPROVEMENT_CONFIDENCE))
