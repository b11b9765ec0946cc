"""Sign conventions and invariants of the building blocks, on real texture."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.enums import Resampling
from scipy import ndimage

from conftest import ORIGIN, truth_image
from coreg_plugin.common.affines import apply_matrix, compose
from coreg_plugin.estimate import model_fit
from coreg_plugin.estimate.correlation import match, match_many, refine_many
from coreg_plugin.estimate.proxies import gaussian, hann, prepare, prepare_many
from coreg_plugin.io.raster_source import Grid, RasterSource
from coreg_plugin.io.warp import read_warped


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
    dst = apply_matrix(h, src) + rng.normal(0, 0.02, src.shape)
    dst[:15] += rng.uniform(5, 30, (15, 2))
    fitted, inliers = model_fit.robust_fit(src, dst, "affine")
    assert inliers[15:].all()
    assert not inliers[:15].any()
    # 45 inliers with 0.02 px noise: the model agrees with the truth to about 0.01 px over the points
    error = np.hypot(*(apply_matrix(fitted, src) - apply_matrix(h, src)).T)
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


def test_proxy_smoothing_is_scipys_gaussian():
    """The edge proxy's smoothing computed in float32 by slices and scipy equals scipy's Gaussian
    (sigma 1, 4 sigma, reflected edges) to float32 rounding, for a stack and for one patch."""
    image = truth_image("s2").astype(np.float32)
    stack = np.stack([image[:256, :256], image[100:356, 40:296], image[300:556, 200:456]])
    for values, sigmas in ((stack, (0, 1, 1)), (stack[1, :64, :200], 1)):
        expected = ndimage.gaussian_filter(values, sigmas)
        assert gaussian(values).dtype == np.float32
        np.testing.assert_allclose(gaussian(values), expected, rtol=0, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(256, 256), (100, 37), (37, 100), (1, 5), (1000, 1000)])
def test_taper_is_scikit_images_hann_window(shape):
    """The matching's taper, built without importing SciPy's signal module, is scikit-image's 2-D Hann
    window (``skimage.filters.window``) to float64 rounding."""
    from skimage.filters import window

    expected = window("hann", shape)
    assert hann(shape).shape == expected.shape
    np.testing.assert_allclose(hann(shape), expected, rtol=0, atol=1e-15)


def _window_pairs(shifts: list[tuple[float, float]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """256 px windows of the Sentinel-2 truth image, one place per shift (dx, dy): the fixed window,
    and the moving one showing at (r, c) what the image shows at (r + dy, c + dx) (cubic spline),
    which :func:`match` returns as (dx, dy)."""
    image = truth_image("s2")
    fixed, moving = [], []
    for k, (dx, dy) in enumerate(shifts):
        row, col = 60 + 70 * k, 300 - 40 * k
        fixed.append(image[row:row + 256, col:col + 256])
        moving.append(ndimage.shift(image, (-dy, -dx), order=3)[row:row + 256, col:col + 256])
    return fixed, moving


def test_windows_matched_together_equal_one_by_one():
    """Preparing, matching and measuring again many windows at once (what tie points do) gives each
    window what it gets alone, whatever its neighbours in the stack: sub-pixel and larger shifts,
    a window with a hole and one without texture."""
    shifts = [(0.3, -0.2), (-0.12, 0.41), (2.6, -1.3), (0.05, 0.0), (-0.35, -0.25), (0.2, 0.1)]
    fixed, moving = _window_pairs(shifts)
    moving[4] = moving[4].copy()
    moving[4][30:60, 100:140] = np.nan
    fixed[5] = np.full((256, 256), 7.0)
    fixed_many, moving_many = prepare_many(np.stack(fixed)), prepare_many(np.stack(moving))
    for many, one in zip(fixed_many + moving_many, [prepare(p) for p in fixed + moving]):
        np.testing.assert_array_equal(many.proxy, one.proxy)
        np.testing.assert_array_equal(many.valid, one.valid)
        assert (many.textured, many.valid_fraction) == (one.textured, one.valid_fraction)
    assert [p.textured for p in fixed_many] == [True] * 5 + [False]
    assert moving_many[4].valid[1:-1, 1:-1].sum() < 254 * 254  # the hole
    matched = match_many(fixed_many[:5], moving_many[:5])
    for found, f, m, truth in zip(matched, fixed_many, moving_many, shifts):
        assert found == match(f, m)
        np.testing.assert_allclose(found[:2], truth, atol=0.06)
        assert found[2] > 0.9
    firsts = np.array([found[:2] for found in matched])
    refined = refine_many(fixed_many[:5], moving_many[:5], firsts)
    for k in range(5):
        assert refined[k] == refine_many([fixed_many[k]], [moving_many[k]], firsts[k:k + 1])[0]
        total = firsts[k] + refined[k][:2]
        np.testing.assert_allclose(total, shifts[k], atol=0.02)


def test_positioning_match_steps_from_the_whole_pixel_peak(monkeypatch):
    """The positioning pass's match (1/UPSAMPLE_ROUGH px) of windows valid throughout takes the
    least-squares step from the whole-pixel peak, without the upsampled DFT, and lands within 0.05 px
    of the truth; a window with a hole, or a peak farther than MAX_ROUGH_STEP_PX, goes to the DFT."""
    from coreg_plugin.estimate import correlation

    calls = []
    dft = correlation.phase_cross_correlation
    monkeypatch.setattr(correlation, "phase_cross_correlation", lambda *a, **k: calls.append(1) or dft(*a, **k))
    shifts = [(0.3, -0.2), (2.6, -1.3), (-4.45, 3.7), (7.2, 0.4), (-12.3, 5.6), (1.4, -0.6)]
    fixed, moving = _window_pairs(shifts)
    moving[5] = moving[5].copy()
    moving[5][30:60, 100:140] = np.nan
    found = match_many(prepare_many(np.stack(fixed)), prepare_many(np.stack(moving)),
                       upsample=correlation.UPSAMPLE_ROUGH)
    assert len(calls) == 2  # the 12 px shift and the window with a hole
    for (dx, dy, reliability), truth in zip(found, shifts):
        np.testing.assert_allclose((dx, dy), truth, atol=0.05)
        assert reliability > 0.9


def test_log_polar_map_is_scikit_images():
    """The Fourier-Mellin log-polar map sampled through cached coordinates is scikit-image's
    ``warp_polar`` (log scaling, order 1) of the same image, to float32 rounding, for an odd and an
    even side."""
    from skimage.transform import warp_polar

    from coreg_plugin.estimate import rotation_scale

    image = truth_image("s2").astype(np.float32)
    for side in (768, 511):
        patch = image[:side, :side]
        radius = side // 4
        mapped = ndimage.map_coordinates(patch, rotation_scale._log_polar_coordinates(patch.shape, radius), order=1,
                                         mode="constant", prefilter=False)
        expected = warp_polar(patch, radius=radius, output_shape=(rotation_scale.ANGLES, rotation_scale.RADII),
                              scaling="log", order=1)
        np.testing.assert_allclose(mapped, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
