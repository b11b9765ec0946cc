"""Issue 11: the verdict (corrected / already aligned), model choice by held-out tie points, the
uncertainty of the correction, and scatter judged in the coarser grid's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, S2_REF, affine_correction, read_window, reported_shift
from coreg_plugin import align_image_pair, synthetic
from coreg_plugin.affines import compose
from coreg_plugin.errors import RegistrationError

#: Tie-point windows see local jitter of this RMS (px) and no global shift.
JITTER_PX = 0.5


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """1024 x 1024 px of the real Sentinel-2 reference."""
    return read_window(S2_REF, 900, 600, 1024)


@pytest.fixture(scope="module")
def jitter(texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean local jitter with no linear trend: 0.5 px RMS as one 256 px window sees it."""
    return synthetic.local_jitter_field(texture.shape, JITTER_PX, 256, seed=3)


def test_local_jitter_without_shift_is_already_aligned(write, tmp_path, texture, jitter):
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", synthetic.displace(texture, *jitter))
    out = tmp_path / "out.tif"
    result = align_image_pair(moving, fixed, out)
    summary = result.summary
    assert summary["verdict"] == "already_aligned", summary["model_choice"]
    assert summary["model"] == "identity"
    assert summary["shift_px"] == {"x": 0.0, "y": 0.0}
    assert 0 < summary["uncertainty_px"]["max"] < 0.5
    assert np.hypot(*reported_shift({"shift_px": summary["estimated_shift_px"]})) < summary["uncertainty_px"]["centre"]
    assert "already aligned within +-" in summary["message"]
    with rasterio.open(out) as o, rasterio.open(moving) as m:
        assert (o.crs, o.transform, o.shape, o.dtypes, o.nodata) == (m.crs, m.transform, m.shape, m.dtypes, m.nodata)
        assert np.array_equal(o.read(), m.read())


def test_local_jitter_with_small_shift_is_corrected_as_translation(write, tmp_path, texture, jitter):
    shift = (0.4, 0.0)
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", synthetic.displace(texture, jitter[0] + shift[0], jitter[1] + shift[1]))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    assert summary["verdict"] == "corrected", summary["model_choice"]
    assert summary["model"] == "translation", summary["model_choice"]
    np.testing.assert_allclose(reported_shift(summary), shift, atol=0.05)
    assert summary["uncertainty_px"]["max"] < np.hypot(*shift)


def test_model_choice_lists_held_out_residuals(write, tmp_path, texture, jitter):
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", synthetic.displace(texture, jitter[0] + 0.4, jitter[1]))
    choice = align_image_pair(moving, fixed, tmp_path / "out.tif").summary["model_choice"]
    names = [c["model"] for c in choice["candidates"]]
    assert names == ["identity", "translation", "affine"]
    held_out = {c["model"]: c["held_out_rmse_px"] for c in choice["candidates"]}
    # the 0.4 px shift shows in held-out residuals: no correction leaves more than a translation
    assert held_out["identity"] > held_out["translation"] + 0.05
    assert choice["chosen"] == "translation"
    assert "exceeds its 95 % uncertainty" in choice["reason"]


def test_rotation_still_picks_affine(write, tmp_path, texture):
    h = affine_correction(0.4, 1.002, (0.3, -0.2), 512)
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", synthetic.misregister(texture, h))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    assert summary["verdict"] == "corrected"
    assert summary["model"] == "affine"
    assert summary["uncertainty_px"]["max"] < 0.05


def test_mixed_resolution_scatter_is_judged_in_coarse_pixels(write, tmp_path):
    """Moving 5 m with 1.2 px of local jitter (0.2 px of the fixed grid), fixed 30 m (6 x 6 block means)."""
    truth = read_window(S2_REF, 0, 0, 2400)
    shift = np.array([3.0, -1.8])  # moving pixels: 0.5, -0.3 fixed pixels
    dx, dy = synthetic.local_jitter_field(truth.shape, 1.2, 256, seed=5)
    moving_values = synthetic.displace(truth, dx + shift[0], dy + shift[1])
    moving = write("moving5.tif", moving_values, compose(ORIGIN, Affine.scale(0.5)))
    fixed = write("fixed30.tif", downscale_local_mean(truth, (6, 6)), compose(ORIGIN, Affine.scale(3)))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    assert summary["verdict"] == "corrected"
    assert summary["rmse_px"] > 0.5  # in 5 m pixels the scatter alone would fail the old gate
    assert summary["rmse_coarse_px"] == pytest.approx(summary["rmse_px"] / 6, rel=0.01)
    assert summary["rmse_m"] == pytest.approx(summary["rmse_px"] * 5, rel=0.01)
    np.testing.assert_allclose(reported_shift(summary), shift, atol=0.3)  # 0.05 fixed pixels


def test_unrelated_content_is_still_refused(write, tmp_path, texture):
    other = read_window(S2_REF, 2150, 1350, 1024)
    with pytest.raises(RegistrationError):
        align_image_pair(write("moving.tif", other), write("fixed.tif", texture), tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_unconverged_run_says_so_and_is_not_trusted(write, tmp_path, texture, monkeypatch):
    """One (rough) pass only: the model cannot have converged, and the run must not pass as trusted."""
    from coreg_plugin import registration

    monkeypatch.setattr(registration, "MAX_ITERATIONS", 1)
    h = np.eye(3)
    h[:2, 2] = (1.3, -0.7)
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", synthetic.misregister(texture, h))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    assert summary["verdict"] == "not_converged"
    assert summary["quality"]["converged"] is False
    assert summary["quality"]["trusted"] is False
    assert any("NOT CONVERGED" in note for note in summary["notes"])
