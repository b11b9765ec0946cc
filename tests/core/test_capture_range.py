"""Issue 4: large offsets, rotation and scale found without tuning; beyond the range, a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import S2_REF, affine_correction, read_window, reported_shift, residual_rmse, true_shift
from coreg_plugin import RegistrationError, align_image_pair
from coreg_plugin.testing import synthetic


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return read_window(S2_REF, 900, 600, 800)


@pytest.mark.parametrize("shift", [(200.0, 200.0), (-200.0, 150.0), (-35.5, -180.25)])
def test_offsets_up_to_a_quarter_of_the_overlap(write, tmp_path, truth, shift):
    h = affine_correction(0.0, 1.0, shift, 400)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    summary = align_image_pair(moving, write("fixed.tif", truth), tmp_path / "out.tif").summary
    np.testing.assert_allclose(reported_shift(summary), true_shift(h, summary), atol=0.05)


@pytest.mark.parametrize(("rotation", "scale"), [(10.0, 1.0), (-10.0, 1.1), (6.5, 0.9), (-3.0, 0.95), (0.0, 1.08)])
def test_rotation_and_scale_within_the_supported_range(write, tmp_path, truth, rotation, scale):
    h = affine_correction(rotation, scale, (3.2, -1.7), 400)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    out = tmp_path / "out.tif"
    summary = align_image_pair(moving, write("fixed.tif", truth), out).summary
    assert summary["model"] == "affine"
    np.testing.assert_allclose(summary["correction"]["rotation_deg"], rotation, atol=0.01)
    np.testing.assert_allclose(summary["correction"]["scale_x"], scale, atol=1e-4)
    np.testing.assert_allclose(reported_shift(summary), true_shift(h, summary), atol=0.05)
    rmse, windows = residual_rmse(out, truth)
    assert windows >= 20
    assert rmse <= 0.10


@pytest.mark.parametrize(("rotation", "scale"), [(25.0, 1.0), (-40.0, 1.0), (0.0, 1.3)])
def test_beyond_the_range_is_a_clear_error(write, tmp_path, truth, rotation, scale):
    h = affine_correction(rotation, scale, (0.0, 0.0), 400)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    with pytest.raises(RegistrationError) as caught:
        align_image_pair(moving, write("fixed.tif", truth), tmp_path / "out.tif")
    message = str(caught.value)
    assert str(moving) in message
    assert "supported" in message or "trustworthy" in message
    assert not (tmp_path / "out.tif").exists()
