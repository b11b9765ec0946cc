"""Issue 15: the local model, a smooth displacement field on top of the global affine correction."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import S2_REF, read_window, residual_rmse

from coreg_plugin import align_image_pair, local_model, synthetic
from coreg_plugin.errors import RegistrationError

#: RMS (px) of the smooth non-affine displacement, as it is left after the best affine.
FIELD_RMS_PX = 0.85


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """1024 x 1024 px of the real Sentinel-2 reference."""
    return read_window(S2_REF, 900, 600, 1024)


@pytest.fixture(scope="module")
def smooth_field(texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth displacement with no mean and no linear trend, 0.85 px RMS per pixel, up to 2.15 px."""
    dx, dy = synthetic.local_jitter_field(texture.shape, 1.0, 512, seed=2)
    scale = FIELD_RMS_PX / np.sqrt(np.mean(dx ** 2 + dy ** 2))
    return dx * scale, dy * scale


@pytest.fixture(scope="module")
def bent_pair(tmp_path_factory, texture, smooth_field) -> tuple[str, str]:
    """(moving, fixed): the texture displaced by the smooth field, and the texture itself."""
    from conftest import ORIGIN

    folder = tmp_path_factory.mktemp("bent")
    fixed, moving = str(folder / "fixed.tif"), str(folder / "moving.tif")
    synthetic.write_raster(fixed, texture, ORIGIN, dtype="float32")
    synthetic.write_raster(moving, synthetic.displace(texture, *smooth_field), ORIGIN, dtype="float32")
    return moving, fixed


def test_smooth_field_is_left_by_the_best_affine(bent_pair, texture):
    before, _ = residual_rmse(bent_pair[0], texture)
    assert before > 0.7


@pytest.mark.parametrize("model", ["local", "auto"])
def test_local_model_corrects_a_smooth_field(bent_pair, texture, tmp_path, model):
    out = tmp_path / "out.tif"
    summary = align_image_pair(*bent_pair, out, model=model).summary
    assert summary["model"] == "local", summary["model_choice"]
    assert summary["verdict"] == "corrected"
    residual, windows = residual_rmse(out, texture)
    assert windows > 150
    assert residual <= 0.15
    assert summary["local"]["max_local_px"] > 1.0
    # judged by held-out residuals: a spline through its own points would show about 0 px here
    assert 0.03 < summary["rmse_px"] < 0.3
    held_out = {c["model"]: c["held_out_rmse_px"] for c in summary["model_choice"]["candidates"]}
    assert held_out["local"] < held_out["affine"] / 2


def test_local_tie_points_carry_held_out_residuals(bent_pair, tmp_path):
    reg = align_image_pair(*bent_pair, tmp_path / "out.tif", model="local").registration
    used = [p for p in reg.tie_points if p.status == "used"]
    assert len(used) > 100
    residuals = np.array([p.residual_px for p in used])
    assert np.all(np.isfinite(residuals))
    assert np.all(residuals > 0)
    assert np.sqrt(np.mean(residuals ** 2)) == pytest.approx(reg.rmse_px)


def test_local_model_refuses_unrelated_content(write, tmp_path, texture):
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", read_window(S2_REF, 2150, 1350, 1024))
    with pytest.raises(RegistrationError, match="no trustworthy registration") as error:
        align_image_pair(moving, fixed, tmp_path / "out.tif", model="local")
    assert str(moving) in str(error.value)
    assert not (tmp_path / "out.tif").exists()


def test_local_model_refuses_a_textureless_moving_image(write, tmp_path, texture):
    fixed = write("fixed.tif", texture[:512, :512])
    moving = write("moving.tif", np.full((512, 512), 700.0))
    with pytest.raises(RegistrationError, match="no texture"):
        align_image_pair(moving, fixed, tmp_path / "out.tif", model="local")


def test_local_outlier_rule_flags_the_point_that_disagrees_with_its_neighbours():
    xs, ys = np.meshgrid(np.arange(8) * 100.0, np.arange(8) * 100.0)
    src = np.column_stack([xs.ravel(), ys.ravel()])
    residuals = np.column_stack([np.sin(src[:, 0] / 300), np.cos(src[:, 1] / 300)]) * 0.8
    residuals[27] += (0.6, -0.5)
    assert np.flatnonzero(local_model.local_outliers(src, residuals)).tolist() == [27]


def test_field_tapers_to_the_affine_outside_the_tie_points_and_inverts():
    xs, ys = np.meshgrid(np.linspace(200, 800, 7), np.linspace(200, 800, 7))
    src = np.column_stack([xs.ravel(), ys.ravel()])
    h = np.array([[1.001, 0.002, 1.5], [-0.002, 0.999, -0.7], [0, 0, 1]])
    bump = np.column_stack([np.sin(src[:, 0] / 150), np.cos(src[:, 1] / 200)])
    dst = src @ h[:2, :2].T + h[:2, 2] + bump
    field, keep, _ = local_model.fit_local(src, dst, h, 1000, 1000, taper_px=100)
    assert keep.all()
    np.testing.assert_allclose(field.correct(src), dst, atol=0.02)
    far = np.array([[20.0, 500.0], [980.0, 980.0]])  # beyond the hull by more than the taper
    np.testing.assert_allclose(field.local_at(far), 0, atol=1e-3)
    inside = np.array([[333.0, 444.0], [650.0, 250.0]])
    np.testing.assert_allclose(field.correct(field.inverse(inside)), inside, atol=1e-3)
