"""The 95 % bound against the truth, on pairs whose tie points share spatially correlated scene change.

Each pair is a 1024 px crop of real Sentinel-2 texture (s2-inter1's reference, no zero fill) and a
copy displaced by a known sub-pixel translation plus a smooth random displacement field (the scene
change: 0.2 to 0.6 px RMS as one tie-point window sees it, correlation length 150 to 400 px, no
mean and no linear trend, :func:`coreg_plugin.testing.synthetic.local_jitter_field`). The error is
the distance between the shift Coreg estimates at the overlap centre and the truth.

A calibrated 2-D 95 % radius holds at least 90 % of the errors, and is not much wider than it needs
to be: for a circular normal error the 95 % radius is 2.08 times the median error; the bound's
median may be at most 3 times the errors' median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, ORIGIN, read_window
from coreg_plugin import align_image_pair
from coreg_plugin.estimate import model_choice, uncertainty
from coreg_plugin.testing import synthetic

S2 = DATA / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
SIZE = 1024
PAIRS = 16
MIN_INSIDE = 0.9
MAX_MEDIAN_RATIO = 3.0


def _simulated(tmp_path: Path, rng: np.random.Generator, seed: int) -> tuple[Path, Path, np.ndarray] | None:
    row, col = int(rng.integers(700, 3150 - SIZE)), int(rng.integers(100, 2350 - SIZE))
    truth = read_window(S2, row, col, SIZE).astype(float)
    if (truth == 0).mean() > 0.05:
        return None
    length, rms = rng.uniform(150, 400), rng.uniform(0.2, 0.6)
    field_x, field_y = synthetic.local_jitter_field(truth.shape, rms, int(length), seed=seed)
    shift = rng.uniform(-3, 3, 2)
    moving = synthetic.displace(truth, field_x + shift[0], field_y + shift[1])
    synthetic.write_raster(tmp_path / "fixed.tif", truth.astype("float32"), ORIGIN)
    synthetic.write_raster(tmp_path / "moving.tif", moving.astype("float32"), ORIGIN)
    return tmp_path / "moving.tif", tmp_path / "fixed.tif", shift


def test_bound_is_calibrated_and_sharp_under_correlated_scene_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2026)
    errors, bounds = [], []
    seed = 100
    while len(errors) < PAIRS:
        seed += 1
        pair = _simulated(tmp_path, rng, seed)
        if pair is None:
            continue
        moving, fixed, shift = pair
        summary = align_image_pair(moving, fixed, tmp_path / "out.tif", model="translation").summary
        estimated = np.array([summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"]])
        errors.append(float(np.hypot(*(estimated - shift))))
        bounds.append(summary["uncertainty_px"]["centre"])
    errors, bounds = np.array(errors), np.array(bounds)
    inside = float(np.mean(errors <= bounds))
    ratio = float(np.median(bounds) / np.median(errors))
    assert inside >= MIN_INSIDE, (inside, errors.round(3), bounds.round(3))
    assert ratio <= MAX_MEDIAN_RATIO, (ratio, errors.round(3), bounds.round(3))


def test_independent_scatter_keeps_the_least_squares_bound() -> None:
    """Without spatial correlation (white residuals) the modelled bound is the independent one."""
    rng = np.random.default_rng(5)
    cols, rows = np.meshgrid(np.linspace(128, 1920, 15), np.linspace(128, 1920, 15))
    src = np.column_stack([cols.ravel(), rows.ravel()])
    dst = src + rng.normal(0, 0.3, src.shape)
    h = np.eye(3)
    h[:2, 2] = (dst - src).mean(axis=0)
    at = np.array([[1024.0, 1024.0]])
    independent = uncertainty.correction_bound(src, dst, h, "translation", at)[0]
    modelled = uncertainty.correction_bound(src, dst, h, "translation", at, (0.0, 0.0, 2048.0, 2048.0))[0]
    assert modelled == pytest.approx(independent, rel=0.35)


@pytest.mark.parametrize(("share", "applied"), [(1.5, True), (1.38, True), (1.3, False), (1.0, False), (0.0, False)])
def test_a_correction_is_applied_when_it_improves_the_image_with_95_percent_confidence(
    share: float, applied: bool
) -> None:
    """Applying c changes the squared misregistration by a normal amount of mean |c|² and standard
    deviation |c| sqrt(2 e): positive with 95 % confidence from |c| = 1.645 sqrt(2 e). For a 95 %
    radius B over 200 tie points e = B² / F(0.95; 2, 199) = B² / 3.04: the line lies at 1.33 B, so a
    correction barely larger than its bound is not applied."""
    bounds = np.full(5, 0.2)
    expected = uncertainty.expected_squared_error(bounds, "translation", 200)
    assert model_choice.improves(share * bounds, expected) is applied


@pytest.mark.parametrize(("rms", "length"), [(1.2, 150), (2.0, 150)])
def test_much_scene_change_is_corrected_within_its_bound_not_refused(tmp_path: Path, rms: float, length: int) -> None:
    """Images of distant dates: tie points scatter by 1.5 to 2 px (a smooth scene-change field and
    sensor noise) yet match clearly; the verdict is a correction whose bound holds the truth."""
    truth = read_window(S2, 1500, 800, SIZE).astype(float)
    field_x, field_y = synthetic.local_jitter_field(truth.shape, rms, length, seed=int(10 * rms))
    shift = np.array([0.6, -0.4])
    moving = synthetic.displace(truth, field_x + shift[0], field_y + shift[1])
    moving += np.random.default_rng(1).normal(0, 0.05 * truth.std(), moving.shape)
    synthetic.write_raster(tmp_path / "fixed.tif", truth.astype("float32"), ORIGIN)
    synthetic.write_raster(tmp_path / "moving.tif", moving.astype("float32"), ORIGIN)
    summary = align_image_pair(tmp_path / "moving.tif", tmp_path / "fixed.tif", tmp_path / "out.tif").summary
    assert summary["rmse_px"] > 1.0
    assert summary["verdict"] == "corrected"
    assert summary["quality"]["trusted"]
    estimated = np.array([summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"]])
    assert np.hypot(*(estimated - shift)) <= summary["uncertainty_px"]["centre"]
