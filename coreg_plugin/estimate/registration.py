"""Estimating the correction of a moving raster against a fixed one.

Coarse match of the whole overlap, then a grid of tie-point windows measured against the current
model, a robust fit, and again, until the model moves by less than ``CONVERGED_PX`` anywhere in
the overlap. The result carries every tie point with its status, for tables and diagnostics.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..common.affines import apply_matrix
from ..common.errors import InputError, RegistrationError
from ..common.options import MIN_WINDOW_SIZE, gdal_environment
from ..common.progress import Progress
from ..common.timings import StageTimes
from ..correction.geometry import inner_box, overlap_box, translation
from ..correction.local_field import LocalField
from ..io.kept_windows import KeptWindows
from ..io.raster_source import RasterSource
from . import lattice, local_fit, model_choice, model_fit, uncertainty
from .coarse import MIN_RELIABILITY as COARSE_MIN_RELIABILITY
from .coarse import CoarseMatch, coarse_match, match_placed_by
from .correlation import UPSAMPLE, UPSAMPLE_ROUGH
from .quality import Quality, assess, coarse_pixel_factor
from .rotation_scale import estimate_rotation_scale, rotation_scale_about
from .tiepoints import (
    KEPT_RUN_CACHE_BYTES,
    STATUS_MEASURED,
    Measurement,
    TiePointMatcher,
    window_origins,
    windows_to_keep,
)
from .verdict import CORRECTED, Decision, decide

log = logging.getLogger("coreg")

#: Iterations of measure-and-fit at most.
MAX_ITERATIONS = 6
#: The model has converged when a pass moves it by less than this (px) at every overlap corner.
#: The small-residual step over-estimates by about 10 %, so the error left after such a pass is
#: about a tenth of this.
CONVERGED_PX = 0.02
#: A pass that moves the model by less than this share of the model's own 95 % uncertainty has
#: converged too: further passes cannot tell a better model from noise.
CONVERGED_SHARE_OF_UNCERTAINTY = 0.25
#: When a pass moves the model at least as much as the one before (oscillation), only this share
#: of its step is taken.
DAMPING = 0.5
#: Windows are not made smaller than this (px) to fit a 3 x 3 grid into a narrow overlap.
MIN_MATCH_WINDOW = 128
#: Rotation (degrees) and scale change below which the Fourier-Mellin estimate is noise.
MIN_ROTATION_DEG = 0.2
MIN_SCALE_CHANGE = 0.003
#: Supported range of the correction; beyond it the run stops with a clear error.
MAX_ROTATION_DEG = 10.5
MIN_SCALE, MAX_SCALE = 0.89, 1.11
#: Tie-point windows along each axis: at least this many where they fit (half a window apart) ...
MIN_WINDOWS_PER_AXIS = 15
#: ... and more on large overlaps, one per this many pixels (10980 px: 22 x 22 = 484 windows).
PIXELS_PER_WINDOW = 512
#: The first, positioning pass measures this many columns and rows of windows, spread over the grid
#: from edge to edge (5 x 5 = 25 windows), when the grid has at least ``ROUGH_SUBSET_MIN_PER_AXIS``
#: a side: the model fitted to them only places the precise passes' windows, to a few hundredths of
#: a pixel (measured on the bench's stack: still two passes, corrections as close to the truth).
ROUGH_SUBSET_PER_AXIS = 5
ROUGH_SUBSET_MIN_PER_AXIS = 8
#: Measure-and-fit passes of the local model at most (after the global model has converged).
LOCAL_PASSES = 4
#: The local model is measured with windows this much smaller than the global model's (not below
#: ``MIN_MATCH_WINDOW``), twice as dense: a 256 px window averages a field over too wide an area.
LOCAL_WINDOW_DIVISOR = 2
#: Local tie-point windows along each axis at most (the spline's cost grows with the cube of their count).
LOCAL_MAX_WINDOWS_PER_AXIS = 32
#: Tie points are matched on the coarser grid (the moving image area-averaged onto it) when the fixed
#: grid's pixels are at least this many moving pixels a side; below it the two are alike.
MATCH_ON_COARSER_MIN = 1.05

STATUS_USED = "used"
STATUS_OUTLIER = "outlier"


@dataclass
class TiePoint:
    """One window: centre (px), total correction there (px), reliability, status and fit residual."""

    x: float
    y: float
    dx: float
    dy: float
    reliability: float
    status: str
    residual_px: float = float("nan")


@dataclass
class Registration:
    """The estimated correction and how it was reached."""

    h: np.ndarray
    model: str
    tie_points: list[TiePoint]
    rmse_px: float
    quality: Quality
    iterations: int
    converged: bool
    window_size: int
    overlap: tuple[float, float, float, float]
    coarse: CoarseMatch
    notes: list[str] = field(default_factory=list)
    trusted: bool = True
    timings: StageTimes = field(default_factory=StageTimes)
    decision: Decision | None = None
    #: The coarser grid's pixel side in moving pixels (>= 1): scatter is judged in those pixels.
    coarse_pixel_factor: float = 1.0
    #: The local model (global affine ``h`` plus a smooth field) when ``model`` is ``local``.
    local: LocalField | None = None

    @property
    def verdict(self) -> str:
        """``corrected``, ``already_aligned`` or ``not_converged`` (see :mod:`.verdict`)."""
        return self.decision.verdict if self.decision else CORRECTED

    @property
    def rmse_coarse_px(self) -> float:
        """The inliers' RMSE in pixels of the coarser of the two grids."""
        return self.rmse_px / self.coarse_pixel_factor

    @property
    def used(self) -> int:
        """Number of tie points the model was fitted to."""
        return sum(p.status == STATUS_USED for p in self.tie_points)

    @property
    def overlap_centre(self) -> np.ndarray:
        """Centre (x, y) of the overlap, in moving pixels: where the summary's shift applies."""
        c0, r0, c1, r1 = self.overlap
        return np.array([(c0 + c1) / 2, (r0 + r1) / 2])

    @property
    def found(self) -> int:
        """Number of windows that gave a reliable measurement."""
        return sum(p.status in (STATUS_USED, STATUS_OUTLIER) for p in self.tie_points)


def initial_model(coarse: CoarseMatch, origin: tuple[int, int], notes: list[str]) -> tuple[np.ndarray, bool]:
    """The starting correction: the best of the coarse translation and the Fourier-Mellin rotation
    and scale (both 180-degree readings), judged by the coarse match's reliability.

    Returns the correction (moving px) and whether it involves rotation or scale.
    """
    candidates = []
    if coarse.reliability >= COARSE_MIN_RELIABILITY:
        candidates.append((coarse.reliability, translation(coarse.dx, coarse.dy), False))
    rotation, scale = estimate_rotation_scale(coarse.fixed_proxy.proxy, coarse.moving_proxy.proxy)
    if abs(rotation) > MIN_ROTATION_DEG or abs(scale - 1) > MIN_SCALE_CHANGE:
        centre = np.array([coarse.grid.width / 2, coarse.grid.height / 2])
        for angle in (rotation, rotation + 180.0):
            h_coarse = rotation_scale_about(angle, scale, centre)
            dx, dy, reliability = match_placed_by(coarse, h_coarse)
            if reliability >= COARSE_MIN_RELIABILITY:
                h_coarse = h_coarse @ translation(dx, dy)
                scaling = np.diag([coarse.factor, coarse.factor, 1.0])
                scaling[:2, 2] = origin
                candidates.append((reliability, scaling @ h_coarse @ np.linalg.inv(scaling), True))
    if not candidates:
        notes.append(f"coarse match unreliable ({coarse.reliability:.2f}): tie points start from no offset")
        log.info(notes[-1])
        return np.eye(3), False
    reliability, h, rotated = max(candidates, key=lambda c: c[0])
    parts = model_fit.describe(h)
    log.info("coarse model: shift x %+.2f px, y %+.2f px, rotation %.2f deg, scale %.4f (reliability %.2f)",
             h[0, 2], h[1, 2], parts["rotation_deg"], parts["scale_x"], reliability)
    return h, rotated


def _check_supported(h: np.ndarray, moving: RasterSource, fixed: RasterSource) -> None:
    """Refuse corrections beyond the supported rotation and scale, rather than return a wrong one."""
    parts = model_fit.describe(h)
    rotation = (parts["rotation_deg"] + 180) % 360 - 180
    scale = (parts["scale_x"] * parts["scale_y"]) ** 0.5
    if abs(rotation) > MAX_ROTATION_DEG or not MIN_SCALE <= scale <= MAX_SCALE:
        raise RegistrationError(
            f"{moving.role} '{moving.path}' seems rotated by about {rotation:.1f} degrees and scaled by "
            f"{scale:.3f} against {fixed.role} '{fixed.path}': beyond the supported +-{MAX_ROTATION_DEG:g} "
            f"degrees and {MIN_SCALE:g} to {MAX_SCALE:g}; resample it closer to the fixed image first"
        )


def _window_size(box: tuple[int, int, int, int], requested: int, moving: RasterSource) -> int:
    """The requested window side, reduced to half the overlap's smaller side (so a grid of at
    least 3 x 3 windows fits), but not below ``MIN_MATCH_WINDOW`` where the overlap allows it
    (smaller windows match too noisily across bands and dates) nor below ``MIN_WINDOW_SIZE``."""
    c0, r0, c1, r1 = box
    side = min(c1 - c0, r1 - r0)
    if side < MIN_WINDOW_SIZE:
        raise InputError(
            f"the overlap of {moving.role} '{moving.path}' with the fixed image is only "
            f"{c1 - c0} x {r1 - r0} px: too small for a {MIN_WINDOW_SIZE} px tie-point window"
        )
    size = min(requested, max(MIN_WINDOW_SIZE, side // 2, min(side, MIN_MATCH_WINDOW)))
    return size - size % 2


def match_scale(factor: float, box: tuple[int, int, int, int]) -> float:
    """The match grid's pixel side in moving pixels (see :func:`.tiepoints.match_grid`): the coarser
    grid's (``factor``, moving px, from :func:`.quality.coarse_pixel_factor`) when that is at least
    ``MATCH_ON_COARSER_MIN``, but not so coarse that the overlap ``box`` (moving px) holds fewer than
    two ``MIN_MATCH_WINDOW`` windows a side on it; else 1 (the moving grid)."""
    if factor < MATCH_ON_COARSER_MIN:
        return 1.0
    side = min(box[2] - box[0], box[3] - box[1])
    scale = min(factor, side / (2 * MIN_MATCH_WINDOW))
    return scale if scale >= MATCH_ON_COARSER_MIN else 1.0


def scaled_box(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    """``box`` (col0, row0, col1, row1; moving px) in whole pixels of a grid ``scale`` moving pixels a
    side, rounded inwards."""
    if scale == 1:
        return box
    c0, r0, c1, r1 = box
    return (math.ceil(c0 / scale), math.ceil(r0 / scale), math.floor(c1 / scale), math.floor(r1 / scale))


def _windows_per_axis(box: tuple[int, int, int, int]) -> int:
    """How many tie-point windows along each axis at most, growing with the overlap's size."""
    side = max(box[2] - box[0], box[3] - box[1])
    return max(MIN_WINDOWS_PER_AXIS, side // PIXELS_PER_WINDOW + 1)


def _status_counts(items: list[Measurement] | list[TiePoint]) -> str:
    """How many windows (measurements or tie points) have each status, e.g. "3 used, 39 nodata"."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def register(
    moving: RasterSource,
    fixed: RasterSource,
    moving_band: int,
    fixed_band: int,
    *,
    model: str,
    use_edge_proxy: bool,
    window_size: int,
    min_quality: float,
    force: bool,
    progress: Progress,
    consider_local: bool = True,
    timings: StageTimes | None = None,
    workers: int | None = None,
) -> Registration:
    """Estimate the correction of ``moving`` against ``fixed`` (1-based bands).

    ``consider_local``: whether ``auto`` may choose the local model (callers that can apply only a
    3x3 correction say no).

    Raises ``RegistrationError`` when the quality figure is below ``min_quality``, unless ``force``,
    in which case the result is marked untrusted. ``timings`` receives the wall time of the coarse,
    tie-point and model-fit stages. ``workers``: threads measuring tie points (see
    :class:`.tiepoints.TiePointMatcher`).
    """
    timings = StageTimes() if timings is None else timings
    started = time.perf_counter()
    notes: list[str] = []
    requested = model
    coarse, h, box, model, kept = _coarse_stage(moving, fixed, moving_band, fixed_band, model, use_edge_proxy,
                                                window_size, notes, progress.span(0.0, 0.1))
    try:
        layout = _layout(moving, fixed, moving_band, box, window_size)
        if layout.scale > 1:
            notes.append(f"tie points matched on a grid of {layout.scale:.3g} moving pixels (the fixed image's "
                         "pixel size), the moving image area-averaged onto it")
            log.info(notes[-1])
        matcher = TiePointMatcher(moving, fixed, moving_band, fixed_band, layout.origins, layout.size, use_edge_proxy,
                                  workers, layout.scale, kept)
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
        timings.add("coarse", time.perf_counter() - started)
        try:
            with _block_cache(kept):
                fit = _fit_global(matcher, h, model, requested, corners, progress, moving, fixed, timings)
                if consider_local or model == "local":
                    fit = _fit_local(fit, matcher, layout.on_grid, moving, timings,
                                     auto=consider_local and model == "auto", requested_local=model == "local")
        finally:
            matcher.close()
    finally:
        _release(kept)
    progress.update(1.0)
    started = time.perf_counter()
    reg = _decided(fit, box, corners, round(layout.size * layout.scale), coarse, notes, layout.factor, timings,
                   layout.scale)
    _require_a_bound(reg, moving, fixed, force)
    _apply_quality_gate(reg, moving, fixed, min_quality, force)
    if not reg.converged:
        reg.trusted = False
        reg.notes.append(f"NOT CONVERGED after {reg.iterations} passes (damped): the correction is not trusted")
        log.warning(reg.notes[-1])
    log.info(reg.decision.message)
    timings.add("model_fit", time.perf_counter() - started)
    return reg


def _coarse_stage(
    moving: RasterSource, fixed: RasterSource, moving_band: int, fixed_band: int, model: str, use_edge_proxy: bool,
    window_size: int, notes: list[str], progress: Progress,
) -> tuple[CoarseMatch, np.ndarray, tuple[float, float, float, float], str, tuple[KeptWindows | None, ...]]:
    """Stage 1: the coarse match of the whole overlap. Returns it, the first model ``h`` (3x3, moving
    px), the overlap box (moving px) under ``h``, the model to fit (``affine`` instead of ``auto``
    when the coarse stage found a rotation or scale), and the (moving, fixed) tie-point windows its
    reads kept (:func:`.tiepoints.windows_to_keep`, planned on the georeference; the caller
    releases them)."""
    box = overlap_box(moving.grid, fixed.grid, np.eye(3))
    if box is None:
        raise InputError(f"{moving.role} '{moving.path}' and {fixed.role} '{fixed.path}' do not overlap")
    lattice.expect_copy(fixed, fixed_band, moving.grid)
    kept = _planned_keep(moving, fixed, moving_band, fixed_band, box, window_size)
    try:
        coarse = coarse_match(moving, fixed, moving_band, fixed_band, inner_box(box), use_edge_proxy, progress, kept)
        h, rotated = initial_model(coarse, inner_box(box)[:2], notes)
        _check_supported(h, moving, fixed)
    except BaseException:
        _release(kept)
        raise
    if rotated and model == "auto":
        model = "affine"
    return coarse, h, overlap_box(moving.grid, fixed.grid, h) or box, model, kept


def _block_cache(kept: tuple[KeptWindows | None, ...]) -> AbstractContextManager:
    """GDAL's environment for the tie points: a block cache of :data:`.tiepoints.KEPT_RUN_CACHE_BYTES`
    where the coarse stage kept windows (Align), which gives the coarse stage's decoded blocks back;
    as it is otherwise (a stack keeps nothing, and its registrations side by side share the cache)."""
    if all(windows is None for windows in kept):
        return nullcontext()
    return gdal_environment(KEPT_RUN_CACHE_BYTES)


def _release(kept: tuple[KeptWindows | None, ...]) -> None:
    """Free the windows the coarse stage kept."""
    for windows in kept:
        if windows is not None:
            windows.release()


@dataclass(frozen=True)
class _Layout:
    """The tie-point windows of an overlap: the coarser pixel's side (``factor``, moving px: see
    :func:`.quality.coarse_pixel_factor`), the match grid's pixel side (``scale``, moving px), the
    overlap on it (whole pixels), the windows' side and their top-left pixels (match-grid px)."""

    factor: float
    scale: float
    on_grid: tuple[int, int, int, int]
    size: int
    origins: np.ndarray


def _layout(
    moving: RasterSource, fixed: RasterSource, moving_band: int, box: tuple[float, float, float, float],
    window_size: int,
) -> _Layout:
    """The tie-point windows over the overlap ``box`` (moving px) for the requested ``window_size``."""
    whole = inner_box(box)
    factor = coarse_pixel_factor(moving.grid, fixed.grid)
    scale = match_scale(factor, whole)
    on_grid = scaled_box(whole, scale)
    size = _window_size(on_grid, window_size, moving)
    block = moving.block_shape(moving_band) if scale == 1 else None
    return _Layout(factor, scale, on_grid, size, window_origins(on_grid, size, _windows_per_axis(on_grid), block))


def _planned_keep(
    moving: RasterSource, fixed: RasterSource, moving_band: int, fixed_band: int,
    box: tuple[float, float, float, float], window_size: int,
) -> tuple[KeptWindows | None, KeptWindows | None]:
    """The windows the coarse stage's reads keep for the tie points, planned on the overlap ``box``
    of the georeference (none when that overlap is too small for windows: the stages that follow
    say so)."""
    try:
        planned = _layout(moving, fixed, moving_band, box, window_size)
    except InputError:
        return None, None
    return windows_to_keep(moving, fixed, moving_band, fixed_band, planned.origins, planned.size, planned.scale)


@dataclass
class _Fit:
    """Where the tie-point passes left the estimate: the model ``h`` and its name, why it was
    chosen on which evidence, the last pass, and the local field when the local model won."""

    h: np.ndarray
    chosen: str
    reason: str
    comparisons: list[dict[str, Any]]
    evidence: model_choice.HeldOut
    pass_: _Pass
    iterations: int
    converged: bool
    held_out: np.ndarray | None = None
    local_field: LocalField | None = None


def _fit_global(
    matcher: TiePointMatcher, h: np.ndarray, model: str, requested: str, corners: np.ndarray, progress: Progress,
    moving: RasterSource, fixed: RasterSource, timings: StageTimes,
) -> _Fit:
    """Stages 2 to 4 for the global models: tie points measured and the model fitted, pass after
    pass, then chosen on the final pass's held-out table."""
    global_model = "affine" if model == "local" else model
    h, choice, pass_, iterations, converged = _iterate(matcher, h, global_model, requested, corners, progress,
                                                       moving, fixed, timings)
    # the final pass's table: the one the global model was chosen on, else made on its inliers now
    evidence = choice.evidence or model_choice.HeldOut(*pass_.inlier_points())
    return _Fit(h, choice.name, choice.reason, list(choice.comparisons), evidence, pass_, iterations, converged)


def _fit_local(
    fit: _Fit, matcher: TiePointMatcher, whole: tuple[int, int, int, int], moving: RasterSource,
    timings: StageTimes, *, auto: bool, requested_local: bool,
) -> _Fit:
    """The local model on top of the global fit, when it is asked for or (``auto``) the global
    passes' table shows it clearly better; kept only if its own final pass's table says so too."""
    wins, local_reason, _ = model_choice.local_wins(fit.evidence, fit.chosen) if auto else (requested_local, "", None)
    if wins:
        started = time.perf_counter()
        field, local_pass, local_evidence, local_converged = _refine_local(
            _local_matcher(matcher, whole), fit.h, fit.pass_, moving, round(matcher.size * matcher.scale))
        timings.add("local", time.perf_counter() - started)
        # asked again of the local model's own final pass: the model reported is the one its table supports
        wins, local_reason, comparison = (model_choice.local_wins(local_evidence, fit.chosen) if auto
                                          else (True, "local: requested", None))
        if wins:
            return _Fit(field.h, "local", local_reason, [] if comparison is None else [comparison], local_evidence,
                        local_pass, fit.iterations, fit.converged and local_converged,
                        _per_window(local_pass, local_evidence.of("local")), field)
        local_reason = ("local was clearly better on the global passes' tie points, not on its own final "
                        f"pass's: {local_reason or f'{len(local_evidence)} tie points, too few to tell'}")
    if local_reason:
        fit.reason = f"{fit.reason}; {local_reason}"
    return fit


def _decided(
    fit: _Fit, box: tuple[float, float, float, float], corners: np.ndarray, size: int, coarse: CoarseMatch,
    notes: list[str], factor: float, timings: StageTimes, scale: float = 1.0,
) -> Registration:
    """Stage 5: the verdict on the fit (corrected, already aligned or not converged) with its
    uncertainty, as a :class:`Registration`."""
    points, rmse, quality = _summarize(fit.h, fit.pass_, factor, fit.held_out)
    src, dst = fit.pass_.inlier_points()
    c0, r0, c1, r1 = box
    beats_identity = fit.held_out is not None and model_choice.beats_identity(fit.evidence, "local")
    decision = decide(src, dst, fit.h, fit.chosen, fit.reason, np.array([(c0 + c1) / 2, (r0 + r1) / 2]), corners,
                      fit.converged, fit.evidence, fit.comparisons, beats_identity=beats_identity,
                      match_pixel_px=scale)
    return Registration(decision.h, decision.model, points, rmse, quality, fit.iterations, fit.converged, size, box,
                        coarse, notes, decision=decision, coarse_pixel_factor=factor, timings=timings,
                        local=fit.local_field if decision.model == "local" else None)


def _per_window(pass_: _Pass, values: np.ndarray) -> np.ndarray:
    """``values`` of the pass's inliers spread over all its windows (NaN elsewhere)."""
    out = np.full(len(pass_.centres), np.nan)
    out[np.flatnonzero(pass_.ok)[pass_.inliers]] = values
    return out


def _local_matcher(matcher: TiePointMatcher, whole: tuple[int, int, int, int]) -> TiePointMatcher:
    """A matcher of the same pair with smaller windows, twice as dense, for the local model (``whole``:
    the overlap in match-grid pixels)."""
    size = max(MIN_MATCH_WINDOW, matcher.size // LOCAL_WINDOW_DIVISOR)
    size = min(size, matcher.size) - min(size, matcher.size) % 2
    per_axis = min(LOCAL_MAX_WINDOWS_PER_AXIS, 2 * _windows_per_axis(whole))
    return TiePointMatcher(matcher.moving, matcher.fixed, matcher.moving_band, matcher.fixed_band,
                           window_origins(whole, size, per_axis), size, matcher.use_edge_proxy, matcher.workers,
                           matcher.scale, matcher.kept)


def _refine_local(
    matcher: TiePointMatcher, h: np.ndarray, pass_: _Pass, moving: RasterSource, size: int
) -> tuple[LocalField, _Pass, model_choice.HeldOut, bool]:
    """Fit the local model on top of the converged affine ``h`` and the global pass ``pass_``, then
    measure every window of ``matcher`` (closed here) against it (the fixed window placed by the
    affine plus the local part at the window centre) and fit again, until the model moves (RMS over
    the tie points) by less than ``CONVERGED_PX`` or a quarter of the tie points' scatter about it
    (smaller moves are noise).

    Returns (field, last pass with its inliers, that pass's table of held-out residuals (the local
    model's cross-validated with a taper of ``size`` px), converged).
    """
    width, height = moving.grid.width, moving.grid.height
    src, dst = pass_.inlier_points()
    field = local_fit.fit_local(src, dst, h, width, height, taper_px=size)[0]
    try:
        field, pass_, converged = _local_passes(matcher, field, pass_, width, height, size)
    finally:
        matcher.close()
    evidence = model_choice.HeldOut(*pass_.inlier_points(), local_taper_px=size)
    log.info("local model: largest local part %.2f px, held-out RMSE %.3f px",
             field.max_local_px, evidence.rmse("local"))
    return field, pass_, evidence, converged


def _local_passes(
    matcher: TiePointMatcher, field: LocalField, pass_: _Pass, width: int, height: int, size: int
) -> tuple[LocalField, _Pass, bool]:
    """The measure-and-fit passes of :func:`_refine_local`: (field, last pass, converged)."""
    centres = matcher.centres
    for iteration in range(1, LOCAL_PASSES + 1):
        offsets = field.local_at(centres)
        per_window = [translation(*offset) @ field.h for offset in offsets]
        measurements = matcher.measure_all(per_window, UPSAMPLE, lambda done: None)
        ok = np.array([m.status == STATUS_MEASURED for m in measurements])
        shifts = np.nan_to_num(np.array([[m.dx, m.dy] for m in measurements]))
        targets = apply_matrix(field.h, centres + shifts) + offsets
        try:
            h_new, inliers = model_fit.robust_fit(centres[ok], targets[ok], "affine", gross_px=2.0)
        except ValueError:
            break
        new, keep, _ = local_fit.fit_local(centres[ok][inliers], targets[ok][inliers], h_new, width, height,
                                           taper_px=size)
        change = float(np.sqrt(np.mean(np.sum((new.correct(centres) - field.correct(centres)) ** 2, axis=1))))
        log.info("local pass %d: %d tie points (%d rejected locally), moved %.3f px",
                 iteration, int(keep.sum()), int((~keep).sum()), change)
        field = new
        pass_ = _Pass(centres, measurements, ok, targets, targets)
        pass_.inliers = inliers.copy()
        pass_.inliers[np.flatnonzero(inliers)[~keep]] = False
        src, dst = pass_.inlier_points()
        scatter = float(np.sqrt(np.mean(np.sum((field.correct(src) - dst) ** 2, axis=1))))
        if change < max(CONVERGED_PX, CONVERGED_SHARE_OF_UNCERTAINTY * scatter):
            return field, pass_, True
    return field, pass_, False


def _iterate(
    matcher: TiePointMatcher, h: np.ndarray, model: str, requested: str, corners: np.ndarray, progress: Progress,
    moving: RasterSource, fixed: RasterSource, timings: StageTimes,
) -> tuple[np.ndarray, model_choice.GlobalChoice, _Pass, int, bool]:
    """Measure and fit until the model has converged; a pass that moves it at least as much as the
    one before is damped. Every pass chooses a model (``model``: ``auto``, or the ``requested`` or
    forced one) on its own table of held-out residuals (:func:`.model_choice.choose_global`); the
    model returned is the **last** pass's choice. The passes themselves place their windows with
    affine once a pass chose it (see :func:`_fit_pass`); when the last pass's table does not support
    it, its tie points are fitted again with the model it does support.

    The first pass positions (roughly: ``UPSAMPLE_ROUGH``, see :func:`.correlation.match`; on a
    subset of the windows of a large grid); each later pass measures every window twice (see
    :class:`.tiepoints.Measurement`) and has converged when the second measurement moves the
    fitted model by less than ``CONVERGED_PX`` (or a share of the model's own uncertainty) at the
    ``corners``, and the change of the model's rotation and scale moves a window's corners
    (relative to its centre) by less than that too.

    Returns (h, the last pass's model choice, last pass, passes made, converged); ``timings``
    receives the time spent measuring (``tie_points``) and fitting (``model_fit``).
    """
    previous = np.inf
    rough = _rough_subset(matcher.origins)
    placing = None
    converged = False
    for iteration in range(1, MAX_ITERATIONS + 1):
        step = progress.span(0.1 + 0.9 * (iteration - 1) / MAX_ITERATIONS, 0.1 + 0.9 * iteration / MAX_ITERATIONS)
        upsample = UPSAMPLE_ROUGH if iteration == 1 else UPSAMPLE
        with timings.stage("tie_points"):
            pass_ = _measure_all(matcher, h, upsample, step, rough if iteration == 1 else None)
        fit_started = time.perf_counter()
        try:
            choice, placing, h_new = _fit_pass(pass_, model, requested, placing, iteration)
        except ValueError as exc:
            if iteration != 1 or rough is None:
                raise _unregistered(moving, fixed, exc, pass_) from None
            rough = None  # too few tie points on the subset: position with every window
            with timings.stage("tie_points"):
                pass_ = _measure_all(matcher, h, upsample, step)
            try:
                choice, placing, h_new = _fit_pass(pass_, model, requested, placing, iteration)
            except ValueError as exc_all:
                raise _unregistered(moving, fixed, exc_all, pass_) from None
        change = float(np.max(np.hypot(*(apply_matrix(h_new, corners) - apply_matrix(h, corners)).T)))
        damped = upsample == UPSAMPLE and change >= previous
        if damped:
            h_new = _damped(h, h_new)
        previous = change
        again = _move_of_second_measurement(pass_, placing, h_new, corners)
        bent = _window_distortion(h, h_new, matcher.size * matcher.scale)
        h = h_new
        log.info("iteration %d: %s model from %d of %d tie points, moved %.3f px (%.3f px by measuring again)",
                 iteration, placing, int(pass_.inliers.sum()), int(pass_.ok.sum()), change, again)
        # converged when measuring every window again (where its content was found) no longer moves
        # the model, and the windows' shape (rotation, scale) did not change either
        tolerance = _tolerance(pass_, h, placing, corners)
        converged = upsample == UPSAMPLE and not damped and again < tolerance and bent < tolerance
        timings.add("model_fit", time.perf_counter() - fit_started)
        if converged:
            break
    if choice.name != placing:
        log.info("final pass: %s model, as its held-out tie points say (%s), not the %s that placed its windows",
                 choice.name, choice.reason, placing)
        h, pass_.inliers = model_fit.robust_fit(pass_.centres[pass_.ok], pass_.targets[pass_.ok], choice.name,
                                                gross_px=2.0 if iteration == 1 else 1.0)
    return h, choice, pass_, iteration, converged


def _unregistered(moving: RasterSource, fixed: RasterSource, exc: Exception, pass_: _Pass) -> RegistrationError:
    """The error for a pass whose tie points allow no fit."""
    return RegistrationError(
        f"no trustworthy registration of {moving.role} '{moving.path}' against {fixed.role} "
        f"'{fixed.path}': {exc} ({len(pass_.centres)} windows: {_status_counts(pass_.measurements)})"
    )


def _fit_pass(
    pass_: _Pass, model: str, requested: str, placing: str | None, iteration: int
) -> tuple[model_choice.GlobalChoice, str, np.ndarray]:
    """Choose the model on this pass's own table of held-out residuals, and fit robustly to its tie
    points the model that places the next pass's windows: the choice, except that ``auto`` keeps
    affine once a pass chose it (``placing``: the model of the pass before), so that a choice on the
    edge of the parsimony rule cannot keep the passes from converging (the model reported is the
    last pass's choice all the same, :func:`_iterate`). Sets ``pass_.inliers``; returns (choice,
    model fitted, its correction). Raises ``ValueError`` when no fit is possible."""
    reliable, targets = pass_.centres[pass_.ok], pass_.targets[pass_.ok]
    choice = model_choice.choose_global(model, requested, reliable, targets, pass_.centres)
    fitted = "affine" if placing == "affine" else choice.name
    h_new, pass_.inliers = model_fit.robust_fit(reliable, targets, fitted, gross_px=2.0 if iteration == 1 else 1.0)
    return choice, fitted, h_new


def _rough_subset(origins: np.ndarray) -> np.ndarray | None:
    """The windows of the first, positioning pass: ``ROUGH_SUBSET_PER_AXIS`` columns and rows spread
    evenly over a grid of at least ``ROUGH_SUBSET_MIN_PER_AXIS`` windows a side, the outermost
    included (5 x 5 of a 10980 px tile's 22 x 22), else None (all)."""
    cols, col_index = np.unique(origins[:, 0], return_inverse=True)
    rows, row_index = np.unique(origins[:, 1], return_inverse=True)
    if min(len(cols), len(rows)) < ROUGH_SUBSET_MIN_PER_AXIS:
        return None

    def spread(count: int) -> np.ndarray:
        return np.round(np.linspace(0, count - 1, ROUGH_SUBSET_PER_AXIS)).astype(int)

    return np.flatnonzero(np.isin(col_index, spread(len(cols))) & np.isin(row_index, spread(len(rows))))


def _move_of_second_measurement(pass_: _Pass, model: str, h: np.ndarray, corners: np.ndarray) -> float:
    """How far (px, largest at the ``corners``) the second measurement of every window moved the
    model ``h`` fitted to it: ``h`` against the same model fitted (same inliers) to the first
    measurements alone (infinite when a first measurement is missing)."""
    if not np.isfinite(pass_.first_targets[pass_.ok]).all():
        return math.inf
    src = pass_.centres[pass_.ok][pass_.inliers]
    try:
        h_first = model_fit.fit_least_squares(src, pass_.first_targets[pass_.ok][pass_.inliers], model)
    except ValueError:
        return math.inf
    return float(np.max(np.hypot(*(apply_matrix(h, corners) - apply_matrix(h_first, corners)).T)))


def _window_distortion(h_placed: np.ndarray, h: np.ndarray, size: float) -> float:
    """How far (px) the windows' corners would move relative to their centres had they been placed
    by ``h`` rather than ``h_placed``: the part of the model a window's own translation cannot
    absorb (rotation, scale and shear within the window)."""
    half = size / 2
    offsets = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return float(np.max(np.hypot(*((h[:2, :2] - h_placed[:2, :2]) @ offsets.T))))


def _damped(h: np.ndarray, h_new: np.ndarray) -> np.ndarray:
    """A step of ``DAMPING`` from ``h`` towards ``h_new``: the passes oscillate, so go half way."""
    log.info("passes oscillate: taking %.0f %% of the step", 100 * DAMPING)
    return h + DAMPING * (h_new - h)


def _tolerance(pass_: _Pass, h: np.ndarray, model: str, corners: np.ndarray) -> float:
    """Largest move (px) of a converged pass: ``CONVERGED_PX``, or a share of the model's own
    95 % uncertainty at the ``corners`` when that is larger (moves below it are noise)."""
    src, dst = pass_.inlier_points()
    bound = float(np.max(uncertainty.correction_bound(src, dst, h, model, corners)))
    return max(CONVERGED_PX, CONVERGED_SHARE_OF_UNCERTAINTY * bound) if np.isfinite(bound) else CONVERGED_PX


@dataclass
class _Pass:
    """One measure-and-fit pass: window centres, measurements, targets (px) and the fit's inliers."""

    centres: np.ndarray
    measurements: list[Measurement]
    ok: np.ndarray
    targets: np.ndarray
    first_targets: np.ndarray
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def inlier_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(window centres, targets) of the fit's inliers, px."""
        return self.centres[self.ok][self.inliers], self.targets[self.ok][self.inliers]


def _measure_all(
    matcher: TiePointMatcher, h: np.ndarray, upsample: int, step: Progress, indices: np.ndarray | None = None
) -> _Pass:
    """Measure every window (or those at ``indices``) against ``h``; targets are where each window
    centre's content lies (``first_targets``: by the first measurement of each window)."""
    centres = matcher.centres if indices is None else matcher.centres[indices]
    measurements = matcher.measure_all(h, upsample, lambda done: step.update(done / len(centres)), indices=indices)
    ok = np.array([m.status == STATUS_MEASURED for m in measurements])
    shifts = np.nan_to_num(np.array([[m.dx, m.dy] for m in measurements]))
    first = np.array([[m.first_dx, m.first_dy] for m in measurements])
    return _Pass(centres, measurements, ok, apply_matrix(h, centres + shifts), apply_matrix(h, centres + first))


def _summarize(
    h: np.ndarray, last: _Pass, coarse_factor: float, held_out: np.ndarray | None = None
) -> tuple[list[TiePoint], float, Quality]:
    """Tie points with their final status and residual, the inliers' RMSE (moving px) and the quality
    (which judges the RMSE in the coarser grid's pixels, ``coarse_factor`` moving pixels each).

    ``held_out`` (px per tie point) replaces the residuals against ``h``: a local model fits its own
    tie points, so it is judged by its residuals on tie points it was fitted without.
    """
    used = np.zeros(len(last.centres), bool)
    used[np.flatnonzero(last.ok)[last.inliers]] = True
    residuals = np.hypot(*(apply_matrix(h, last.centres) - last.targets).T) if held_out is None else held_out
    points = []
    for i, m in enumerate(last.measurements):
        status = STATUS_USED if used[i] else (STATUS_OUTLIER if last.ok[i] else m.status)
        dx, dy = (last.targets[i] - last.centres[i]) if last.ok[i] else (np.nan, np.nan)
        points.append(TiePoint(float(last.centres[i, 0]), float(last.centres[i, 1]), float(dx), float(dy),
                               float(m.reliability), status, float(residuals[i]) if last.ok[i] else np.nan))
    rmse = float(np.sqrt(np.mean(residuals[used] ** 2)))
    reliabilities = np.array([last.measurements[i].reliability for i in np.flatnonzero(used)])
    return points, rmse, assess(last.centres[used], last.centres, rmse / coarse_factor, reliabilities)


def _require_a_bound(reg: Registration, moving: RasterSource, fixed: RasterSource, force: bool) -> None:
    """Raise ``RegistrationError`` when too few tie points fit the model to bound its correction
    (fewer than :func:`.uncertainty.min_points`: 2 for a translation, 4 for an affine or a local
    model): the fit then matches any correction exactly. If forced, mark ``reg`` untrusted instead
    (the correction is applied, its uncertainty unknown)."""
    decision = reg.decision
    if decision is None or decision.uncertainty_known:
        return
    need = uncertainty.min_points(reg.model)
    problem = (f"{reg.used} tie point(s) fit the {reg.model} model, which needs at least {need} to bound its "
               f"uncertainty ({len(reg.tie_points)} windows: {_status_counts(reg.tie_points)})")
    _refuse_unless_forced(reg, moving, fixed, force, problem,
                          advice="Force it to write the correction anyway, untrusted.",
                          note=f"TOO FEW TIE POINTS, forced: {problem}; the correction is applied, "
                               "its uncertainty unknown")


def _apply_quality_gate(
    reg: Registration, moving: RasterSource, fixed: RasterSource, min_quality: float, force: bool
) -> None:
    """Raise ``RegistrationError`` below ``min_quality``; if forced, mark ``reg`` untrusted instead."""
    if reg.quality.score >= min_quality:
        return
    problem = (f"quality {reg.quality.score:.2f} is below {min_quality:g}: {reg.quality.weakest()} "
               f"({reg.used} of {len(reg.tie_points)} tie points used, RMSE {reg.rmse_px:.2f} px, "
               f"{reg.rmse_coarse_px:.2f} px of the coarser grid)")
    _refuse_unless_forced(reg, moving, fixed, force, problem, advice="Force it to write the result anyway.",
                          note=f"LOW QUALITY, forced: {problem}")


def _refuse_unless_forced(
    reg: Registration, moving: RasterSource, fixed: RasterSource, force: bool, problem: str, *, advice: str,
    note: str,
) -> None:
    """A gate's outcome: ``RegistrationError`` naming both rasters, ``problem`` and ``advice``; if
    forced, ``reg`` marked untrusted with ``note`` instead."""
    if not force:
        raise RegistrationError(
            f"no trustworthy registration of {moving.role} '{moving.path}' against {fixed.role} "
            f"'{fixed.path}': {problem}. {advice}"
        )
    reg.trusted = False
    reg.notes.append(note)
    log.warning(note)
