"""Sign conventions and invariants of the building blocks, on real texture."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.enums import Resampling
from scipy import ndimage

from conftest import ORIGIN, truth_image
from coreg_plugin import model_fit
from coreg_plugin.affines import compose
from coreg_plugin.correlation import match, prepare
from coreg_plugin.raster_source import Grid, RasterSource
from coreg_plugin.warp import read_warped


@pytest.mark.parametrize("shift", [(0.3, -0.7), (2.25, 1.5), (-10.4, 6.6)])
def test_match_sign_convention(shift):
    """moving[r, c] shows fixed[r + dy, c + dx]: match returns (dx, dy)."""
    image = truth_image("s2")
    dx, dy = shift
    moving = ndimage.shift(image, (-dy, -dx), order=3)
    found = match(prepare(image[200:456, 200:456]), prepare(moving[200:456, 200:456]))
    np.testing.assert_allclose(found[:2], shift, atol=0.06)
    assert found[2] > 0.9


def test_robust_fit_rejects_outliers():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 1000, (60, 2))
    h = np.array([[1.002, -0.01, 3.0], [0.01, 0.999, -2.0], [0, 0, 1]])
    dst = model_fit.apply(h, src) + rng.normal(0, 0.02, src.shape)
    dst[:15] += rng.uniform(5, 30, (15, 2))
    fitted, inliers = model_fit.robust_fit(src, dst, "affine")
    assert inliers[15:].all()
    assert not inliers[:15].any()
    # 45 inliers with 0.02 px noise: the model agrees with the truth to about 0.01 px over the points
    error = np.hypot(*(model_fit.apply(fitted, src) - model_fit.apply(h, src)).T)
    assert error.max() < 0.02


@pytest.mark.parametrize("method", ["lanczos", "cubic", "bilinear", "average"])
def test_downsampling_keeps_positions(write, method):
    """A ramp downsampled 2x keeps pixel-centre positions (GDAL < 3.10.1 shifts lanczos; we must not)."""
    ramp = np.tile(np.arange(128) + 0.5, (128, 1))
    path = write("ramp.tif", ramp, dtype="float32")
    with RasterSource(path, "ramp") as source:
        coarse = Grid(source.grid.crs, compose(ORIGIN, Affine.scale(2)), 64, 64)
        out = read_warped(source, [1], coarse, Resampling[method])[0]
    expected = np.tile(np.arange(64) * 2 + 1.0, (64, 1))
    np.testing.assert_allclose(out[8:-8, 8:-8], expected[8:-8, 8:-8], atol=1e-3)
