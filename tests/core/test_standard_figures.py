"""Issue 27: the standard accuracy figures (fit and check-point RMSE, CE90, CEOS-ARD) in the summary.

End to end on a real Sentinel-2 texture displaced by a known shift plus smooth local jitter (scatter
between tie-point windows with no linear trend), the figures are checked against values computed here
from the tie points, from a cross-validation written here, and from the known jitter field; the pure
function is checked on tables with known residuals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, S2_REF, read_window
from coreg_plugin import align_image_pair
from coreg_plugin.common.affines import compose
from coreg_plugin.estimate import model_choice
from coreg_plugin.estimate.figures import (
    CE90_MIN_POINTS,
    CEOS_ARD_RMSE_PX,
    EARTH_RADIUS_M,
    pixel_size_m,
    standard_figures,
)
from coreg_plugin.io.raster_source import Grid
from coreg_plugin.testing import synthetic

PIXEL_M = 10.0  # conftest.ORIGIN
#: The rounding of the summary's figures.
ROUNDING = 1e-4


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """1024 x 1024 px of the real Sentinel-2 reference."""
    return read_window(S2_REF, 900, 600, 1024)


def jittered(write, texture: np.ndarray, rms_px: float, shift: tuple[float, float], seed: int = 3):
    """(moving, fixed, jitter field (dx, dy)): ``texture`` displaced by ``shift`` px plus jitter whose
    average over a 256 px window has an RMS length of ``rms_px``."""
    dx, dy = synthetic.local_jitter_field(texture.shape, rms_px, 256, seed=seed)
    moving = write("moving.tif", synthetic.displace(texture, dx + shift[0], dy + shift[1]))
    return moving, write("fixed.tif", texture), (dx, dy)


def used_points(reg) -> tuple[np.ndarray, np.ndarray]:
    """(window centres, where their content lies) of the tie points the model was fitted to, px."""
    used = [p for p in reg.tie_points if p.status == "used"]
    src = np.array([[p.x, p.y] for p in used])
    return src, src + np.array([[p.dx, p.dy] for p in used])


def jitter_seen(field: tuple[np.ndarray, np.ndarray], centres: np.ndarray, window: int) -> np.ndarray:
    """The jitter (n, 2) the windows centred on ``centres`` see: the field averaged over their central
    half (phase correlation tapers a window's edges)."""
    half = window // 2
    return np.column_stack([
        ndimage.map_coordinates(ndimage.uniform_filter(c, half, mode="nearest"),
                                [centres[:, 1] - 0.5, centres[:, 0] - 0.5], order=1)
        for c in field])


def translation_cv(src: np.ndarray, dst: np.ndarray, folds: int = model_choice.FOLDS) -> np.ndarray:
    """Held-out residual length of every point under a translation fitted without its fold (folds
    interleaved by index, as the registration makes them): written here, independently."""
    offsets = dst - src
    out = np.empty(len(src))
    k = np.arange(len(src)) % min(folds, len(src))
    for fold in np.unique(k):
        out[k == fold] = np.hypot(*(offsets[k != fold].mean(axis=0) - offsets[k == fold]).T)
    return out


def rms(lengths: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(lengths))))


@pytest.mark.parametrize(("rms_px", "shift", "meets"), [(0.25, (1.3, -0.7), True), (0.5, (0.4, 0.0), False)])
def test_corrected_pair_figures_match_tie_points_and_truth(write, tmp_path, texture, rms_px, shift, meets):
    moving, fixed, field = jittered(write, texture, rms_px, shift)
    result = align_image_pair(moving, fixed, tmp_path / "out.tif")
    summary, reg = result.summary, result.registration
    accuracy = summary["accuracy"]
    assert summary["verdict"] == "corrected", summary["message"]
    assert accuracy["model"] == summary["model"] == "translation", summary["model_choice"]

    # the fit: residuals of the applied correction (the summary's matrix) on the used tie points
    src, dst = used_points(reg)
    matrix = np.array(summary["correction"]["matrix_px"])
    residuals = src @ matrix[:, :2].T + matrix[:, 2] - dst
    assert accuracy["points_fit"] == summary["tie_points"]["used"] == len(src)
    assert accuracy["rmse_fit_px"] == pytest.approx(rms(np.hypot(*residuals.T)), abs=2 * ROUNDING)
    assert accuracy["rmse_fit_x_px"] == pytest.approx(rms(residuals[:, 0]), abs=2 * ROUNDING)
    assert accuracy["rmse_fit_y_px"] == pytest.approx(rms(residuals[:, 1]), abs=2 * ROUNDING)
    # ... is the scatter injected, as the windows see it (less its mean, which the translation takes)
    seen = jitter_seen(field, src, summary["tie_points"]["window_size_px"])
    assert accuracy["rmse_fit_px"] == pytest.approx(rms(np.hypot(*(seen - seen.mean(axis=0)).T)), rel=0.2)

    # check points: the final pass's table, cross-validated here
    evidence = reg.decision.evidence
    held_out = translation_cv(evidence.src, evidence.dst)
    assert accuracy["points_verify"] == len(evidence)
    assert accuracy["rmse_verify_px"] == pytest.approx(rms(held_out), abs=2 * ROUNDING)
    assert accuracy["rmse_verify_px"] >= accuracy["rmse_fit_px"]
    assert accuracy["ce90_px"] == pytest.approx(np.percentile(held_out, 90), abs=2 * ROUNDING)
    assert np.median(held_out) < accuracy["ce90_px"] <= held_out.max()
    # radial errors of a circular normal scatter: CE90 = sqrt(2 ln 10) / sqrt(2) = 1.52 radial RMSE
    assert 1.2 < accuracy["ce90_px"] / accuracy["rmse_verify_px"] < 1.9

    for name in ("rmse_fit", "rmse_fit_x", "rmse_fit_y", "rmse_verify", "ce90"):
        assert accuracy[f"{name}_m"] == pytest.approx(accuracy[f"{name}_px"] * accuracy["pixel_size_m"],
                                                      abs=PIXEL_M * ROUNDING)
    assert accuracy["pixel_size_m"] == pytest.approx(PIXEL_M, rel=0.005)
    assert accuracy["coarse_pixel_factor"] == 1.0
    assert accuracy["rmse_verify_coarse_px"] == accuracy["rmse_verify_px"]
    assert accuracy["ceos_ard"] is meets
    assert (accuracy["rmse_verify_px"] <= CEOS_ARD_RMSE_PX) is meets


def test_already_aligned_figures_are_those_of_no_correction(write, tmp_path, texture):
    """Jitter without a shift: nothing is corrected, and the figures are the tie points' own
    measured corrections (the residuals of no correction)."""
    moving, fixed, field = jittered(write, texture, 0.5, (0.0, 0.0))
    result = align_image_pair(moving, fixed, tmp_path / "out.tif")
    summary, reg = result.summary, result.registration
    accuracy = summary["accuracy"]
    assert summary["verdict"] == "already_aligned", summary["message"]
    assert accuracy["model"] == "identity"
    src, dst = used_points(reg)
    lengths = np.hypot(*(dst - src).T)
    assert accuracy["rmse_fit_px"] == pytest.approx(rms(lengths), abs=2 * ROUNDING)
    assert accuracy["rmse_fit_px"] == pytest.approx(rms(np.hypot(*jitter_seen(field, src, reg.window_size).T)),
                                                    rel=0.2)
    # no model is fitted, so no point is held out of anything: the check points' RMSE is the same
    # measure on the final pass's table
    evidence = reg.decision.evidence
    table = np.hypot(*(evidence.dst - evidence.src).T)
    assert accuracy["rmse_verify_px"] == pytest.approx(rms(table), abs=2 * ROUNDING)
    assert accuracy["ce90_px"] == pytest.approx(np.percentile(table, 90), abs=2 * ROUNDING)
    assert accuracy["ceos_ard"] is (accuracy["rmse_verify_px"] <= CEOS_ARD_RMSE_PX)


def test_local_model_fit_is_in_sample_and_verify_held_out(write, tmp_path, texture):
    """A smooth non-affine field (0.85 px RMS): the local model's fit figures are its in-sample residuals
    (its spline runs close to its tie points), the check points' its held-out residuals, which the
    registration's own RMSE reports for the local model."""
    dx, dy = synthetic.local_jitter_field(texture.shape, 1.0, 512, seed=2)
    scale = 0.85 / np.sqrt(np.mean(dx ** 2 + dy ** 2))
    moving = write("moving.tif", synthetic.displace(texture, dx * scale, dy * scale), dtype="float32")
    fixed = write("fixed.tif", texture, dtype="float32")
    result = align_image_pair(moving, fixed, tmp_path / "out.tif")
    summary, reg = result.summary, result.registration
    accuracy = summary["accuracy"]
    assert accuracy["model"] == summary["model"] == "local", summary["model_choice"]
    src, dst = used_points(reg)
    in_sample = np.hypot(*(reg.local.correct(src) - dst).T)
    assert accuracy["rmse_fit_px"] == pytest.approx(rms(in_sample), abs=2 * ROUNDING)
    assert accuracy["rmse_verify_px"] == pytest.approx(summary["rmse_px"], abs=2 * ROUNDING)
    assert accuracy["rmse_fit_px"] < 0.5 * accuracy["rmse_verify_px"]
    assert accuracy["ceos_ard"] is True


def test_ceos_ard_is_judged_in_pixels_of_the_coarser_grid(write, tmp_path):
    """Moving 5 m with 1.2 px of jitter (0.2 px of the fixed grid), fixed 30 m: the held-out RMSE
    exceeds 0.5 moving px, yet meets the threshold in the 30 m grid's pixels it is judged in."""
    truth = read_window(S2_REF, 0, 0, 2400)
    shift = np.array([3.0, -1.8])
    dx, dy = synthetic.local_jitter_field(truth.shape, 1.2, 256, seed=5)
    moving = write("moving5.tif", synthetic.displace(truth, dx + shift[0], dy + shift[1]),
                   compose(ORIGIN, Affine.scale(0.5)))
    fixed = write("fixed30.tif", downscale_local_mean(truth, (6, 6)), compose(ORIGIN, Affine.scale(3)))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    accuracy = summary["accuracy"]
    assert summary["verdict"] == "corrected", summary["message"]
    assert accuracy["coarse_pixel_factor"] == pytest.approx(6.0, rel=1e-3)
    assert accuracy["pixel_size_m"] == pytest.approx(5.0, rel=0.005)
    assert accuracy["rmse_verify_px"] > CEOS_ARD_RMSE_PX
    assert accuracy["rmse_verify_coarse_px"] == pytest.approx(accuracy["rmse_verify_px"] / 6, abs=2 * ROUNDING)
    assert accuracy["rmse_verify_coarse_px"] < CEOS_ARD_RMSE_PX
    assert accuracy["ceos_ard"] is True
    assert accuracy["rmse_verify_m"] == pytest.approx(accuracy["rmse_verify_px"] * accuracy["pixel_size_m"],
                                                      abs=5 * ROUNDING)
    if accuracy["points_verify"] < CE90_MIN_POINTS:
        assert accuracy["ce90_px"] is None
    else:
        assert accuracy["ce90_coarse_px"] == pytest.approx(accuracy["ce90_px"] / 6, abs=2 * ROUNDING)


def test_figures_of_a_known_table():
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 1000, (50, 2))
    residuals = np.column_stack([rng.normal(0, 0.3, 50), rng.normal(0, 0.1, 50)])
    held_out = np.abs(rng.normal(0, 0.4, 40))
    held_out[[3, 17]] = np.nan  # folds that could not be fitted
    figures = standard_figures(targets + residuals, targets, held_out, model="translation", pixel_size_m=30.0,
                               coarse_pixel_factor=1.0)
    assert (figures.points_fit, figures.points_verify) == (50, 38)
    assert figures.rmse_fit_x_px == pytest.approx(np.sqrt(np.mean(residuals[:, 0] ** 2)))
    assert figures.rmse_fit_y_px == pytest.approx(np.sqrt(np.mean(residuals[:, 1] ** 2)))
    assert figures.rmse_fit_px == pytest.approx(np.sqrt(np.mean(np.sum(residuals ** 2, axis=1))))
    finite = held_out[np.isfinite(held_out)]
    assert figures.rmse_verify_px == pytest.approx(np.sqrt(np.mean(finite ** 2)))
    assert figures.ce90_px == pytest.approx(np.percentile(finite, 90))
    assert figures.metres(figures.ce90_px) == pytest.approx(30 * figures.ce90_px)
    as_dict = figures.as_dict()
    assert as_dict["ce90_m"] == pytest.approx(30 * figures.ce90_px, abs=1e-4)
    assert as_dict["ceos_ard"] is True
    assert as_dict["ceos_ard_threshold_coarse_px"] == 0.5
    # the threshold: 0.5 px of the coarser grid, at most
    for verify, factor, meets in ((0.49, 1, True), (0.5, 1, True), (0.51, 1, False), (2.9, 6, True),
                                  (3.1, 6, False)):
        judged = standard_figures(targets, targets, np.full(20, verify), model="affine", pixel_size_m=5.0,
                                  coarse_pixel_factor=factor)
        assert judged.ceos_ard is meets, (verify, factor)
        assert judged.rmse_verify_coarse_px == pytest.approx(verify / factor)


def test_figures_that_cannot_be_computed_are_none():
    few = standard_figures(np.zeros((3, 2)), np.ones((3, 2)), np.array([0.2, np.nan, 0.4]), model="translation",
                           pixel_size_m=math.nan)
    assert few.rmse_fit_px == pytest.approx(math.sqrt(2))
    assert math.isnan(few.ce90_px)  # fewer than CE90_MIN_POINTS held-out residuals
    assert few.as_dict()["ce90_px"] is None
    assert few.as_dict()["rmse_fit_m"] is None  # pixel size unknown
    assert few.ceos_ard is True  # held-out RMSE 0.32 px
    none = standard_figures(np.empty((0, 2)), np.empty((0, 2)), np.full(4, np.nan), model="affine",
                            pixel_size_m=10.0)
    as_dict = none.as_dict()
    assert (as_dict["points_fit"], as_dict["points_verify"]) == (0, 0)
    for key in ("rmse_fit_px", "rmse_verify_px", "ce90_px", "rmse_verify_m", "rmse_verify_coarse_px"):
        assert as_dict[key] is None, key
    assert as_dict["ceos_ard"] is None


def test_pixel_size_in_metres_on_the_ground():
    """Pixels are measured on the ground (a sphere: within 0.5 % of the ellipsoid), whatever the CRS's
    map scale: a Web Mercator pixel's map metres are 1 / cos(latitude) ground metres."""
    utm = Grid(CRS.from_epsg(32633), Affine(10, 0, 400000, 0, -10, 5800000), 100, 100)
    assert pixel_size_m(utm, (50, 50)) == pytest.approx(10.0, rel=0.005)
    feet = Grid(CRS.from_epsg(2249), Affine(3, 0, 700000, 0, -3, 2900000), 100, 100)  # US survey feet
    assert pixel_size_m(feet, (50, 50)) == pytest.approx(3 * 1200 / 3937, rel=0.005)
    # EPSG:3857 at 52.7 degrees north (y = 6 930 000 m): 16.5 map metres are about 10 m on the ground
    mercator = Grid(CRS.from_epsg(3857), Affine(16.5, 0, 1_400_000, 0, -16.5, 6_930_825), 100, 100)
    latitude = math.degrees(2 * math.atan(math.exp(6_930_000 / 6_378_137)) - math.pi / 2)
    assert pixel_size_m(mercator, (50, 50)) == pytest.approx(16.5 * math.cos(math.radians(latitude)), rel=0.005)
    degrees = Grid(CRS.from_epsg(4326), Affine(0.0001, 0, 10, 0, -0.0001, 60.005), 100, 100)
    # at 60 degrees north: 11.12 m north-south, 5.56 m east-west; the side of the same area
    expected = 0.0001 * EARTH_RADIUS_M * math.pi / 180 * math.sqrt(math.cos(math.radians(60)))
    assert pixel_size_m(degrees, (50, 50)) == pytest.approx(expected, rel=1e-4)
    assert math.isnan(pixel_size_m(Grid(None, Affine(10, 0, 0, 0, -10, 0), 10, 10), (5, 5)))


def test_summary_metres_are_ground_metres_in_web_mercator(write, tmp_path, texture):
    """The summary's ``rmse_m`` is in ground metres, as ``accuracy`` is: a Web Mercator pixel of 16.5
    map metres at 52.7 degrees north is about 10 m on the ground, so the RMSE in metres is about 10
    times the RMSE in pixels, not 16.5 times."""
    mercator = Affine(16.5, 0, 1_400_000, 0, -16.5, 6_930_825)
    dx, dy = synthetic.local_jitter_field(texture.shape, 0.3, 256, seed=3)
    moving = write("moving.tif", synthetic.displace(texture, dx + 0.6, dy - 0.4), mercator, crs="EPSG:3857")
    fixed = write("fixed.tif", texture, mercator, crs="EPSG:3857")
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    ground = summary["accuracy"]["pixel_size_m"]
    assert ground == pytest.approx(16.5 * math.cos(math.radians(52.7)), rel=0.01)
    assert summary["rmse_px"] > 0.05
    assert summary["rmse_m"] == pytest.approx(summary["rmse_px"] * ground, rel=0.01)
    assert summary["accuracy"]["rmse_fit_m"] == pytest.approx(summary["accuracy"]["rmse_fit_px"] * ground, rel=0.01)
