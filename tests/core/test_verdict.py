"""Issue 11: the verdict (corrected / already aligned), model choice by held-out tie points, the
uncertainty of the correction, and scatter judged in the coarser grid's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, S2_REF, affine_correction, read_window, reported_shift
from coreg_plugin import align_image_pair
from coreg_plugin.cli import EXIT_REGISTRATION_FAILED, main
from coreg_plugin.common.affines import compose
from coreg_plugin.common.errors import RegistrationError
from coreg_plugin.estimate import model_choice, uncertainty
from coreg_plugin.estimate.verdict import decide
from coreg_plugin.testing import synthetic

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
    assert "improves the image with 95 % confidence" in choice["reason"]


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
    from coreg_plugin.estimate import registration

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


def patched_pair(write, texture: np.ndarray, corners: list[tuple[int, int]]) -> tuple:
    """A fixed image and its copy shifted by 4 px, nodata (0) except 280 px squares at the (row, col)
    ``corners``: each square holds one tie-point window of the 256 px grid, so each gives one tie point."""
    h = np.eye(3)
    h[:2, 2] = (4.0, 0.0)
    shifted = synthetic.misregister(texture, h)
    values = np.zeros_like(shifted)
    for row, col in corners:
        values[row:row + 280, col:col + 280] = shifted[row:row + 280, col:col + 280]
    return write("moving.tif", values, nodata=0), write("fixed.tif", texture)


THREE_PATCHES = [(100, 100), (100, 600), (620, 440)]


def test_three_tie_points_cannot_bound_an_affine_and_are_refused(write, tmp_path, texture, capsys):
    """Issue 25 item 6: three tie points fit an affine exactly, so its uncertainty is unknown. It was
    "already aligned within +-inf px" with quality 0.335 (trusted), dropping the 4 px correction."""
    moving, fixed = patched_pair(write, texture, THREE_PATCHES)
    out = tmp_path / "out.tif"
    with pytest.raises(RegistrationError, match=r"3 tie point\(s\) fit the affine model, which needs at least 4"):
        align_image_pair(moving, fixed, out, model="affine")
    assert not out.exists()
    code = main(["align", "--moving-image", str(moving), "--fixed-image", str(fixed), "--output-image", str(out),
                 "--model", "affine"])
    assert code == EXIT_REGISTRATION_FAILED
    assert "needs at least 4 to bound its uncertainty" in capsys.readouterr().err


def test_three_tie_points_forced_affine_are_applied_untrusted(write, tmp_path, texture):
    moving, fixed = patched_pair(write, texture, THREE_PATCHES)
    report = tmp_path / "report.html"
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif", model="affine", force=True, report=report).summary
    assert "unknown: too few tie points for the model to bound its uncertainty" in report.read_text()
    assert summary["tie_points"]["used"] == 3
    assert summary["verdict"] == "corrected", summary["message"]
    assert summary["model"] == "affine"
    np.testing.assert_allclose(reported_shift(summary), (4.0, 0.0), atol=0.05)
    assert summary["quality"]["trusted"] is False
    assert summary["uncertainty_px"]["max"] is None
    assert summary["uncertainty_px"]["known"] is False
    assert "uncertainty unknown" in summary["message"]
    assert "already aligned" not in summary["message"]
    assert any("TOO FEW TIE POINTS" in note for note in summary["notes"])


def test_one_tie_point_forced_translation_is_applied_untrusted(write, tmp_path, texture):
    moving, fixed = patched_pair(write, texture, [(400, 400)])
    with pytest.raises(RegistrationError, match=r"1 tie point\(s\) fit the translation model"):
        align_image_pair(moving, fixed, tmp_path / "out.tif")
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif", model="translation", force=True).summary
    assert summary["tie_points"]["used"] == 1
    assert summary["verdict"] == "corrected", summary["message"]
    np.testing.assert_allclose(reported_shift(summary), (4.0, 0.0), atol=0.05)
    assert summary["quality"]["trusted"] is False
    assert summary["uncertainty_px"]["centre"] is None
    assert "uncertainty unknown" in summary["message"]


@pytest.mark.parametrize(("model", "count"), [("translation", 1), ("affine", 3)])
def test_already_aligned_never_rests_on_an_unknown_bound(model, count):
    """A fit with no residual degree of freedom has no bound: never "already aligned within +-inf"."""
    src = np.array([[100.0, 100.0], [900.0, 150.0], [500.0, 800.0]])[:count]
    h = np.eye(3)
    h[:2, 2] = (4.0, 0.0)
    dst = src + h[:2, 2]
    corners = np.array([[0.0, 0.0], [1000.0, 0.0], [1000.0, 1000.0], [0.0, 1000.0]])
    decision = decide(src, dst, h, model, f"{model}: requested", np.array([500.0, 500.0]), corners, True,
                      model_choice.HeldOut(src, dst))
    assert decision.verdict == "corrected"
    assert not decision.uncertainty_known
    assert np.array_equal(decision.h, h)
    assert uncertainty.min_points(model) == count + 1
    assert model_choice.improves(np.array([0.0, 0.0]), np.array([np.inf, 5.0]))
    assert model_choice.improves(np.array([0.0, 0.0]), np.array([np.nan, 5.0]))
