"""Align Image Pair: estimate a moving raster's misregistration against a fixed one, write it corrected.

Conventions used in the summary:

- ``shift_px`` is the correction applied to the moving image at the centre of the overlap, in
  moving-image pixels: ``x`` along columns (right positive), ``y`` along rows (down positive).
  This is how AROSICS reports its shifts.
- ``shift_m`` is the same correction in the moving CRS's units (metres for projected CRSs):
  ``x`` east positive, ``y`` north positive.
- ``correction.matrix_px`` (2 x 3, row-major) maps a moving pixel position (column, row; pixel
  corners at integers) to the position, on the same grid, where its content truly lies.
  ``correction.geotransform`` is the moving image's corrected geotransform, in GDAL order.
- ``uncertainty_px``: the 95 % bound (moving px) of the fitted correction at the overlap centre and
  corners; ``known`` is false (and the bounds null) when too few tie points fit the model to bound
  it (:mod:`coreg_plugin.uncertainty`): such a result is only written when forced, untrusted.
- ``model_choice``: the chosen model, why, and the final pass's table of held-out residuals it was
  chosen on (``candidates``), with the parsimony rule's uses on it (``comparisons``: z scores).
- ``accuracy``: the standard accuracy figures of the model applied (:mod:`coreg_plugin.estimate.figures`):
  the radial RMSE of its fit (``rmse_fit_px``, with ``_x_px``/``_y_px``, like Landsat's
  GEOMETRIC_RMSE_MODEL) and on held-out tie points (``rmse_verify_px``, like GEOMETRIC_RMSE_VERIFY),
  CE90 of the held-out residuals (``ce90_px``), the same in metres (``_m``), the held-out figures in
  pixels of the coarser grid (``_coarse_px``) and whether they meet the CEOS-ARD threshold of 0.5 px
  radial RMSE there (``ceos_ard``; null when unknown). Moving px unless named ``_coarse_px``.
- ``timings_s``: wall seconds of each stage (coarse, tie_points, model_fit, output; see
  :mod:`coreg_plugin.timings`); they add up to about ``elapsed_s``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..apply.correct import apply_to_source
from ..apply.output_grid import output_grid
from ..common import options
from ..common.affines import apply
from ..common.errors import InputError
from ..common.progress import CancelCallback, Progress, ProgressCallback
from ..common.timings import StageTimes
from ..correction.file import Correction, from_registration, write_correction
from ..correction.geometry import corrected_transform, shift_at
from ..estimate.figures import pixel_size_m, registration_figures
from ..estimate.model_fit import describe
from ..estimate.registration import STATUS_USED, Registration, register
from ..estimate.verdict import ALREADY_ALIGNED
from ..io.formats import check_format, resolve_driver, same_nodata
from ..io.outputs import Staging, check_outputs
from ..io.raster_source import Grid, RasterSource
from ..io.unchanged import copy_unchanged
from ..io.writer import choose_nodata
from .diagnostics import TemporaryFolder, write_diagnostics

log = logging.getLogger("coreg")


@dataclass
class AlignResult:
    """What :func:`align_image_pair` did: the summary and the full registration."""

    summary: dict[str, Any]
    registration: Registration

    @property
    def output_image(self) -> str:
        """Path of the written raster."""
        return self.summary["output_image"]

    @property
    def shift_px(self) -> tuple[float, float]:
        """Correction (x, y) at the overlap centre, moving pixels, right and down positive."""
        return self.summary["shift_px"]["x"], self.summary["shift_px"]["y"]


def align_image_pair(
    moving_image: str | os.PathLike,
    fixed_image: str | os.PathLike,
    output_image: str | os.PathLike,
    *,
    band_index: int = 0,
    moving_band_index: int | None = None,
    fixed_band_index: int | None = None,
    moving_nodata: float | None = None,
    fixed_nodata: float | None = None,
    output_nodata: float | None = None,
    use_edge_proxies: bool = True,
    output_on_moving_grid: bool = True,
    clip_fixed_to_moving: bool = True,
    model: str = "auto",
    resampling: str = options.DEFAULT_RESAMPLING,
    window_size: int = options.DEFAULT_WINDOW_SIZE,
    min_quality: float = options.DEFAULT_MIN_QUALITY,
    force: bool = False,
    split_factor: int = 0,
    temp_dir: str | os.PathLike | None = None,
    keep_temp_dir: bool = False,
    report: str | os.PathLike | None = None,
    driver: str | None = None,
    creation_options: Mapping[str, str] | None = None,
    allow_large_output: bool = False,
    correction_file: str | os.PathLike | None = None,
    gcp_file: str | os.PathLike | None = None,
    no_resample: bool = False,
    progress: ProgressCallback | None = None,
    is_cancelled: CancelCallback | None = None,
) -> AlignResult:
    """Register ``moving_image`` to ``fixed_image`` and write the corrected moving image.

    Band indexes are 0-based; ``band_index`` applies to both images unless the per-image index is
    given. Nodata overrides add to each file's own mask. The output keeps the moving image's data
    type and bands, on the moving grid by default or on the fixed grid (``output_on_moving_grid=False``,
    clipped to the moving image's footprint unless ``clip_fixed_to_moving=False``).
    ``split_factor`` is accepted for coregix compatibility and has no effect: the tie-point grid
    always solves many windows and fits one model. ``report`` also writes an HTML report (figures,
    tie-point maps, before/after checkerboard; needs matplotlib). ``driver`` (default: from the
    output's extension, GeoTIFF without one; ``COG`` works) and ``creation_options`` choose the
    output format; formats that cannot hold the data are refused before any work. Outputs larger
    (uncompressed) than the free disk space are refused unless ``allow_large_output``.
    ``correction_file`` saves the correction (JSON, :mod:`coreg_plugin.correction`) to apply to
    other rasters of the scene; ``gcp_file`` saves the tie points used as a QGIS Georeferencer
    ``.points`` file. ``no_resample`` corrects by the georeference only (pixels copied bit for bit,
    the geotransform moved): it needs a translation, so ``auto`` then estimates a translation and
    ``affine`` is refused. Estimate -> correction -> apply: the output is written by
    :func:`coreg_plugin.apply.correct.apply_to_source`, as Apply Correction writes. ``progress``
    receives percentages (0-100); ``is_cancelled`` is polled and a true answer stops the run with
    ``CancelledError``.

    Raises ``InputError`` for unusable inputs or parameters, ``RegistrationError`` when no
    trustworthy registration is found (unless ``force``), ``CancelledError`` when cancelled.
    Nothing is written at ``output_image`` or ``report`` unless the whole run succeeds; both are
    published together.
    """
    started = time.perf_counter()
    timings = StageTimes()
    model = _checked_model(model, resampling, window_size, no_resample, output_on_moving_grid, split_factor)
    tracker = Progress(progress, is_cancelled)
    paths = _Paths.of(output_image, report, correction_file, gcp_file)
    moving_image, fixed_image = os.fspath(moving_image), os.fspath(fixed_image)
    check_outputs(paths.roles(), [("moving image", moving_image), ("fixed image", fixed_image)])
    output_driver = resolve_driver(paths.output, driver)
    if paths.report is not None:
        from ..report.html import require_matplotlib

        require_matplotlib()
    with options.gdal_environment(), \
            RasterSource(moving_image, "moving image", moving_nodata) as moving, \
            RasterSource(fixed_image, "fixed image", fixed_nodata) as fixed:
        mband, fband = _bands(moving, fixed, band_index, moving_band_index, fixed_band_index)
        nodata = _output_nodata(output_nodata, moving, paths.output, output_driver, no_resample, creation_options)
        tracker.check()
        with Staging(paths.roles()) as staging:
            timings.add("coarse", time.perf_counter() - started)  # opening and checking the inputs
            reg = register(moving, fixed, mband, fband, model=model, use_edge_proxy=use_edge_proxies,
                           window_size=window_size, min_quality=min_quality, force=force,
                           progress=tracker.span(0.0, 0.5), timings=timings)
            output_started = time.perf_counter()
            with TemporaryFolder(temp_dir, keep_temp_dir) as scratch:
                write_diagnostics(scratch, reg, moving)
                correction = correction_of(reg, moving, fixed)
                grid = output_grid(moving.grid, fixed.grid, reg.h, output_on_moving_grid, clip_fixed_to_moving)
                unchanged = _unchanged_copy(reg, moving, nodata, output_on_moving_grid, output_nodata is None)
                reg.notes.extend(_write_output(
                    correction, moving, grid, paths.output, staging, unchanged=unchanged,
                    same_pixels=reg.verdict == ALREADY_ALIGNED and output_on_moving_grid,
                    resampling=resampling, nodata=nodata, no_resample=no_resample, driver=output_driver,
                    creation_options=creation_options, allow_large_output=allow_large_output,
                    progress=tracker.span(0.5, 1.0)))
                timings.add("output", time.perf_counter() - output_started)
                summary = build_summary(reg, moving, fixed, paths.output, nodata, resampling,
                                        output_on_moving_grid, time.perf_counter() - started,
                                        scratch.path if keep_temp_dir else None)
                summary["no_resample"] = no_resample
                summary.update(_write_correction_files(correction, moving, paths, staging))
            result = AlignResult(summary, reg)
            if paths.report is not None:
                _write_report(result, paths, staging)
            tracker.check()
            staging.publish()
    log.info("wrote %s: %s", paths.output, summary["message"])
    return result


@dataclass(frozen=True)
class _Paths:
    """Where a run of Align Image Pair writes: the corrected raster and the optional side files."""

    output: str
    report: str | None
    correction_file: str | None
    gcp_file: str | None

    @classmethod
    def of(cls, output: str | os.PathLike, report: str | os.PathLike | None,
           correction_file: str | os.PathLike | None, gcp_file: str | os.PathLike | None) -> _Paths:
        """The paths as strings (None where a side file is not asked for)."""
        return cls(os.fspath(output), *(None if p is None else os.fspath(p) for p in (report, correction_file,
                                                                                      gcp_file)))

    def roles(self) -> list[tuple[str, str]]:
        """(role, path) of every output, for the checks and the staging."""
        named = (("output image", self.output), ("report", self.report), ("correction file", self.correction_file),
                 ("GCP file", self.gcp_file))
        return [(role, path) for role, path in named if path is not None]


def _checked_model(model: str, resampling: str, window_size: int, no_resample: bool, on_moving_grid: bool,
                   split_factor: int) -> str:
    """The model to estimate, once the options are checked (``InputError`` for a bad one)."""
    options.resampling_method(resampling)
    options.check_model(model)
    options.check_window_size(window_size)
    if split_factor:
        log.info("split_factor=%s has no effect: tie points always cover the whole overlap", split_factor)
    return _georeference_only_model(model, on_moving_grid) if no_resample else model


def _bands(moving: RasterSource, fixed: RasterSource, band_index: int, moving_band_index: int | None,
           fixed_band_index: int | None) -> tuple[int, int]:
    """The 1-based bands matched in each raster (``InputError`` for one out of range)."""
    mband = moving.band(band_index if moving_band_index is None else moving_band_index,
                        "moving band index" if moving_band_index is not None else "band index")
    fband = fixed.band(band_index if fixed_band_index is None else fixed_band_index,
                       "fixed band index" if fixed_band_index is not None else "band index")
    return mband, fband


def _output_nodata(output_nodata: float | None, moving: RasterSource, output: str, driver: str, no_resample: bool,
                   creation_options: Mapping[str, str] | None) -> float:
    """The output's nodata (:func:`coreg_plugin.io.writer.choose_nodata`), the format checked for it
    before any work (``OutputError``)."""
    nodata = choose_nodata(output_nodata, moving, output, driver)
    declared = moving.dataset.nodata  # what a georeference-only copy writes
    check_format(output, driver, moving.dtype, moving.count, declared if no_resample else nodata, creation_options)
    return nodata


def _unchanged_copy(reg: Registration, moving: RasterSource, nodata: float, on_moving_grid: bool,
                    default_nodata_kept: bool) -> bool:
    """Whether the output is the moving file copied as it is: already aligned, on its own grid, with
    the nodata its file declares."""
    declared = moving.dataset.nodata
    return (reg.verdict == ALREADY_ALIGNED and on_moving_grid and default_nodata_kept
            and (declared is None or same_nodata(declared, nodata)))


def _write_output(
    correction: Correction, moving: RasterSource, grid: Grid, output: str, staging: Staging, *, unchanged: bool,
    same_pixels: bool, resampling: str, nodata: float, no_resample: bool, driver: str,
    creation_options: Mapping[str, str] | None, allow_large_output: bool, progress: Progress,
) -> list[str]:
    """Write the corrected raster into ``staging``: copied as it is (``unchanged``), resampled with
    ``nearest`` when every pixel stays where it is (``same_pixels``: already aligned on its own grid),
    else through the correction like Apply Correction; return the notes of the writing."""
    if unchanged:
        copy_unchanged(moving.path, moving.dtype, output, staging=staging, driver=driver,
                       creation_options=creation_options)
        return []
    done = apply_to_source(correction, moving, grid, output, resampling="nearest" if same_pixels else resampling,
                           nodata=nodata, no_resample=no_resample, driver=driver, creation_options=creation_options,
                           progress=progress, staging=staging, allow_large_output=allow_large_output)
    return done["notes"]


def _write_correction_files(correction: Correction, moving: RasterSource, paths: _Paths,
                            staging: Staging) -> dict[str, str]:
    """Write the correction file and the GCP file that were asked for; return their summary entries."""
    written = {}
    if paths.correction_file is not None:
        write_correction(correction, staging.path(paths.correction_file))
        written["correction_file"] = paths.correction_file
    if paths.gcp_file is not None:
        from ..correction.gcp import write_points

        write_points(staging.path(paths.gcp_file), correction, moving.grid)
        written["gcp_file"] = paths.gcp_file
    return written


def _write_report(result: AlignResult, paths: _Paths, staging: Staging) -> None:
    """Write the HTML report (its path recorded in the summary first, so the report shows it)."""
    from ..report.html import write_report

    result.summary["report"] = paths.report
    write_report(staging.path(paths.report), result, output_image_file=staging.path(paths.output))


def _georeference_only_model(model: str, on_moving_grid: bool) -> str:
    """The model to estimate for a georeference-only correction; ``InputError`` when none works."""
    if not on_moving_grid:
        raise InputError("a georeference-only correction (--no-resample) keeps the moving image's grid: "
                         "it cannot write onto the fixed grid (leave out --no-output-on-moving-grid, or resample)")
    if model in ("affine", "local"):
        raise InputError(f"model '{model}' cannot be applied as a georeference-only correction (--no-resample, "
                         "GEOREFERENCE_ONLY), which can only move a raster: use --model translation (or auto, "
                         "which then estimates a translation), or resample (leave out --no-resample)")
    return "translation"


def correction_of(reg: Registration, moving: RasterSource, fixed: RasterSource) -> Correction:
    """The registration as a correction in map coordinates of the moving image's CRS."""
    used = [(p.x, p.y, p.dx, p.dy, p.reliability, p.residual_px) for p in reg.tie_points if p.status == STATUS_USED]
    quality = {**reg.quality.as_dict(), "rmse_px": _rounded(reg.rmse_px), "trusted": reg.trusted,
               "tie_points_used": reg.used, "tie_points_found": reg.found, "windows": len(reg.tie_points)}
    estimated_from = {"moving_image": moving.path, "fixed_image": fixed.path,
                      "moving_geotransform": list(moving.grid.transform.to_gdal()),
                      "moving_size": [moving.grid.width, moving.grid.height],
                      "shift_px_at_overlap_centre": [float(v) for v in shift_at(reg.h, reg.overlap_centre)],
                      "overlap_centre_px": [float(v) for v in reg.overlap_centre]}
    return from_registration(reg.h, reg.model, moving.grid.transform, moving.grid.crs, reg.overlap,
                             quality=quality, tie_points_px=used, estimated_from=estimated_from, local=reg.local)


def _rounded(value: float, digits: int = 4) -> float | None:
    return None if not math.isfinite(value) else round(float(value), digits)


def build_summary(
    reg: Registration,
    moving: RasterSource,
    fixed: RasterSource,
    output_image: str,
    nodata: float,
    resampling: str,
    on_moving_grid: bool,
    elapsed_s: float,
    temp_dir: str | None,
) -> dict[str, Any]:
    """The JSON-friendly summary of a run (see the module docstring for the conventions)."""
    centre = reg.overlap_centre
    dx, dy = shift_at(reg.h, centre)
    x0, y0 = apply(moving.grid.transform, *centre)
    x1, y1 = apply(corrected_transform(moving.grid, reg.h), *centre)
    ground_m = pixel_size_m(moving.grid, centre)
    return {
        "moving_image": moving.path,
        "fixed_image": fixed.path,
        "output_image": output_image,
        "verdict": reg.verdict,
        "message": reg.decision.message if reg.decision else "",
        "model": reg.model,
        "shift_px": {"x": _rounded(dx), "y": _rounded(dy)},
        "shift_m": {"x": _rounded(x1 - x0), "y": _rounded(y1 - y0)},
        "overlap_centre_px": {"x": _rounded(centre[0], 2), "y": _rounded(centre[1], 2)},
        "correction": {
            "matrix_px": [[_rounded(v, 8) for v in row] for row in reg.h[:2]],
            "geotransform": [_rounded(v, 8) for v in corrected_transform(moving.grid, reg.h).to_gdal()],
            **{k: _rounded(v, 6) for k, v in describe(reg.h).items()},
        },
        "tie_points": {"windows": len(reg.tie_points), "found": reg.found, "used": reg.used,
                       "window_size_px": reg.window_size},
        "rmse_px": _rounded(reg.rmse_px),
        "rmse_coarse_px": _rounded(reg.rmse_coarse_px),
        "rmse_m": _rounded(reg.rmse_px * ground_m),
        "accuracy": registration_figures(reg, ground_m).as_dict(),
        **_evidence(reg),
        "quality": {**reg.quality.as_dict(), "trusted": reg.trusted, "converged": reg.converged},
        "iterations": reg.iterations,
        "converged": reg.converged,
        "notes": reg.notes,
        "output_grid": "moving" if on_moving_grid else "fixed",
        "resampling": resampling,
        "output_nodata": None if math.isnan(nodata) else nodata,
        "temp_dir": temp_dir,
        "elapsed_s": round(elapsed_s, 2),
        "timings_s": reg.timings.rounded(),
    }


def _evidence(reg: Registration) -> dict[str, Any]:
    """The model choice, the uncertainty of the fitted correction (95 %, moving px) and, when
    nothing was corrected, the correction that was estimated but not applied."""
    decision = reg.decision
    if decision is None:
        return {}
    bounds = [decision.bound_centre, *decision.bound_corners]
    dx, dy = shift_at(decision.estimated_h, reg.overlap_centre)
    return {
        "uncertainty_px": {"centre": _rounded(decision.bound_centre),
                           "corners": [_rounded(b) for b in decision.bound_corners],
                           "max": _rounded(max(bounds)), "known": decision.uncertainty_known},
        "estimated_shift_px": {"x": _rounded(dx), "y": _rounded(dy)},
        "model_choice": decision.choice.as_dict(),
        **_local_summary(reg),
    }


def _local_summary(reg: Registration) -> dict[str, Any]:
    """The local model's figures: the largest local part (px) over the raster and its node spacing."""
    if reg.local is None:
        return {}
    return {"local": {"max_local_px": _rounded(reg.local.max_local_px), "node_step_px": reg.local.step}}
