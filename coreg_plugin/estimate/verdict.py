"""The verdict of a registration: ``corrected``, ``already_aligned`` or ``not_converged``.

- ``already_aligned``: the fitted correction would not improve the image with 95 % confidence,
  weighed against its own uncertainty over the overlap centre and corners (:mod:`.model_choice`,
  question 3: below about 1.34 times its 95 % bound), that uncertainty being known: the model applied is
  ``identity`` and the output carries the moving image unchanged. With fewer tie points than the
  model needs for a bound (:func:`.uncertainty.min_points`: 2 for a translation, 4 for an affine)
  the uncertainty is unknown and never "already aligned": the correction is applied and the
  registration refuses it unless forced (then untrusted).
- ``not_converged``: the refinement passes kept moving the model (even damped); the correction is
  applied but marked untrusted.
- ``corrected``: the fitted model is applied.

Refusals (images that cannot be matched) are raised as ``RegistrationError`` before a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..correction.geometry import shift_at
from . import model_choice, uncertainty

CORRECTED = "corrected"
ALREADY_ALIGNED = "already_aligned"
NOT_CONVERGED = "not_converged"

#: The bound is never below the tie points' measurement resolution (1/100 px phase correlation):
#: two copies of one image agree to within it, whatever their residuals say.
RESOLUTION_PX = 0.01
#: Candidates listed with their held-out residuals in every summary, simplest first.
LISTED = ["identity", "translation", "affine"]


@dataclass
class Decision:
    """What to apply and why: the correction ``h`` (identity when already aligned), its model name,
    the verdict, the model choice, and the 95 % bound (px) of the fitted correction at the overlap
    centre and corners (NaN when unknown: too few tie points, see :mod:`.uncertainty`)."""

    h: np.ndarray
    model: str
    verdict: str
    choice: model_choice.ModelChoice
    bound_centre: float
    bound_corners: list[float]
    estimated_h: np.ndarray
    message: str
    #: The final pass's table of held-out residuals (moving px) the model was chosen on: the
    #: standard accuracy figures (fit and check-point RMSE, CE90) read it.
    evidence: model_choice.HeldOut | None = None

    @property
    def uncertainty_known(self) -> bool:
        """Whether the bound of the correction is known (finite) at the centre and every corner."""
        return bool(np.all(np.isfinite([self.bound_centre, *self.bound_corners])))


def decide(
    src: np.ndarray, dst: np.ndarray, h: np.ndarray, model: str, fitted_reason: str,
    centre: np.ndarray, corners: np.ndarray, converged: bool, evidence: model_choice.HeldOut,
    comparisons: list[model_choice.Comparison] | None = None, *, beats_identity: bool = False,
    match_pixel_px: float = 1.0,
) -> Decision:
    """Decide on the fitted ``h`` (``model``, fitted to inliers ``src`` -> ``dst``, px).

    ``evidence``: the final pass's table of held-out residuals that chose ``model`` (listed in the
    summary with ``comparisons``, the parsimony rule's uses on it). ``beats_identity``: the model
    explains held-out tie points clearly better than no correction (a local model whose global part
    alone may be within its uncertainty): it is applied. ``match_pixel_px``: the pixel side (moving px)
    of the grid the tie points were matched on; the bound is never below ``RESOLUTION_PX`` of it.

    "Already aligned" needs a known bound: with fewer tie points than :func:`.uncertainty.min_points`
    the fitted correction is applied, its uncertainty unknown (the caller refuses it unless forced).
    """
    points = np.vstack([centre, corners])
    overlap = (*corners.min(axis=0), *corners.max(axis=0))
    bounds = uncertainty.correction_bound(src, dst, h, uncertainty.bound_model(model), points, overlap)
    known = bool(np.all(np.isfinite(bounds)))
    bounds = np.maximum(bounds, RESOLUTION_PX * match_pixel_px) if known else np.full(len(points), np.nan)
    corrections = np.array([np.hypot(*shift_at(h, p)) for p in points])
    table = evidence.table(LISTED + (["local"] if model == "local" else []))
    comparisons = list(comparisons or [])
    expected = uncertainty.expected_squared_error(bounds, model, len(src))  # NaN when unknown: never identity
    if not beats_identity and not model_choice.improves(corrections, expected):
        within = float(np.max(corrections + bounds))
        reason = (f"identity: the {model} correction ({corrections[0]:.3f} px at the overlap centre, at most "
                  f"{corrections.max():.3f} px) would not improve the image with 95 % confidence against its "
                  f"own uncertainty (95 %: {bounds[0]:.3f} px at the centre, {bounds.max():.3f} px at most)")
        message = f"already aligned within +-{within:.2f} px: nothing corrected"
        choice = model_choice.ModelChoice("identity", reason, table, comparisons)
        return Decision(np.eye(3), "identity", ALREADY_ALIGNED, choice, float(bounds[0]),
                        [float(b) for b in bounds[1:]], h, message, evidence)
    if not known:
        need = uncertainty.min_points(model)
        reason = (f"{fitted_reason}; its uncertainty is unknown: {len(src)} tie point(s), the {model} model "
                  f"needs at least {need} to bound it")
        message = (f"UNTRUSTED: corrected ({model}) from {len(src)} tie point(s), uncertainty unknown "
                   f"(at least {need} are needed to bound it)")
    elif beats_identity:
        reason = f"{fitted_reason}; it explains held-out tie points clearly better than no correction"
    else:
        reason = (f"{fitted_reason}; applying it improves the image with 95 % confidence: its correction "
                  f"({corrections[0]:.3f} px at the overlap centre) against its own uncertainty "
                  f"(95 %: {bounds[0]:.3f} px)")
    choice = model_choice.ModelChoice(model, reason, table, comparisons)
    verdict = CORRECTED if converged else NOT_CONVERGED
    if known:
        message = (f"corrected ({model}), 95 % uncertainty +-{bounds.max():.2f} px" if converged else
                   f"NOT CONVERGED: the {model} correction was applied but the refinement passes kept moving it")
    return Decision(h, model, verdict, choice, float(bounds[0]), [float(b) for b in bounds[1:]], h, message,
                    evidence)
