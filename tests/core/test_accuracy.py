"""Done-means 1 of Align Image Pair: known distortions of real imagery, residual against the truth.

Each case misregisters a real texture by a known correction, aligns it, and checks (a) the reported
shift at the overlap centre against the truth and (b) the misregistration left in the output,
measured independently (raw-intensity windowed phase correlation) against the undistorted truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, affine_correction, read_masked, reported_shift, residual_rmse, true_shift, truth_image
from coreg_plugin import align_image_pair
from coreg_plugin.common.affines import compose
from coreg_plugin.testing import evaluate, synthetic

TRANSLATIONS = [
    ("s2", (0.37, -0.71)),
    ("s2", (-0.5, 0.5)),
    ("s2", (4.26, -7.83)),
    ("s2", (-19.6, 13.35)),
    ("landsat8", (0.81, 0.23)),
    ("landsat8", (-11.4, -2.7)),
    ("svalbard", (2.44, -0.09)),
]


@pytest.mark.parametrize(("texture", "shift"), TRANSLATIONS)
def test_translation_is_recovered(write, tmp_path, texture, shift):
    truth = truth_image(texture)
    h = affine_correction(0.0, 1.0, shift, truth.shape[0] / 2)
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    result = align_image_pair(moving, fixed, tmp_path / "out.tif", model="translation")
    np.testing.assert_allclose(reported_shift(result.summary), shift, atol=0.05)
    rmse, windows = residual_rmse(tmp_path / "out.tif", truth)
    assert windows >= 40
    assert rmse <= 0.05


AFFINE_CASES = [
    ("s2", 1.0, 1.005, (1.3, -0.6)),
    ("s2", -0.7, 0.996, (-6.2, 3.1)),
    ("landsat8", 0.5, 1.003, (0.4, 2.2)),
]


@pytest.mark.parametrize(("texture", "rotation", "scale", "shift"), AFFINE_CASES)
def test_rotation_and_scale_are_recovered(write, tmp_path, texture, rotation, scale, shift):
    truth = truth_image(texture)
    h = affine_correction(rotation, scale, shift, truth.shape[0] / 2)
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    result = align_image_pair(moving, fixed, tmp_path / "out.tif")
    assert result.summary["model"] == "affine"
    np.testing.assert_allclose(reported_shift(result.summary), true_shift(h, result.summary), atol=0.05)
    np.testing.assert_allclose(result.summary["correction"]["rotation_deg"], rotation, atol=0.005)
    rmse, windows = residual_rmse(tmp_path / "out.tif", truth)
    assert windows >= 40
    assert rmse <= 0.10


def coarse_moving(truth: np.ndarray, h_coarse: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """A 2x coarser image on a grid offset by ``offset`` fine px, misregistered by ``h_coarse``."""
    scale = np.diag([2.0, 2.0, 1.0])
    h_fine = np.eye(3)
    h_fine[:2, 2] = offset
    h_fine = h_fine @ scale @ h_coarse @ np.linalg.inv(scale)
    return downscale_local_mean(synthetic.misregister(truth, h_fine), (2, 2))


@pytest.mark.parametrize("shift", [(0.31, -0.42), (-3.6, 2.15)])
def test_coarser_offset_moving_grid(write, tmp_path, shift):
    """Moving at 20 m on a grid offset by (0.3, 0.6) of a 10 m pixel from the fixed 10 m grid."""
    truth = truth_image("s2")
    offset = (0.3, 0.6)
    moving_transform = compose(ORIGIN, Affine.translation(*offset), Affine.scale(2))
    h = affine_correction(0.0, 1.0, shift, truth.shape[0] / 4)
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", coarse_moving(truth, h, offset), moving_transform)
    result = align_image_pair(moving, fixed, tmp_path / "out.tif", model="translation")
    np.testing.assert_allclose(reported_shift(result.summary), shift, atol=0.05)
    coarse_truth = coarse_moving(truth, np.eye(3), offset)
    rmse, windows = residual_rmse(tmp_path / "out.tif", coarse_truth, window=64)
    assert windows >= 40
    assert rmse <= 0.05


def test_output_on_fixed_grid_matches_truth(write, tmp_path):
    """Coarse, offset moving grid written on the fine fixed grid: aligned with the fixed truth."""
    truth = truth_image("s2")
    offset = (0.3, 0.6)
    h = affine_correction(0.0, 1.0, (1.35, -0.8), truth.shape[0] / 4)
    fixed = write("fixed.tif", truth)
    moving_grid = compose(ORIGIN, Affine.translation(*offset), Affine.scale(2))
    moving = write("moving.tif", coarse_moving(truth, h, offset), moving_grid)
    out = tmp_path / "out.tif"
    align_image_pair(moving, fixed, out, output_on_moving_grid=False, clip_fixed_to_moving=False)
    import rasterio
    with rasterio.open(out) as ds, rasterio.open(fixed) as ref:
        assert ds.transform == ref.transform
        assert ds.shape == ref.shape
        assert ds.crs == ref.crs
    shifts = evaluate.residual_shifts(read_masked(out), truth, window=128, step=64)
    assert len(shifts) >= 40
    assert evaluate.rmse(shifts) <= 0.05
