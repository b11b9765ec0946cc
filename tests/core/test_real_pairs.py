"""Real image pairs from ../shared/data: the real misregistered Sentinel-2 pair, cross-CRS, cross-band."""

from __future__ import annotations

import numpy as np
import rasterio

from conftest import DATA, S2_REF, S2_TGT, reported_shift
from coreg_plugin import align_image_pair
from coreg_plugin.common.affines import apply

# AROSICS 1.13.2's correction for tgt against ref (global mode), see ../shared/data/README.md.
AROSICS_S2_SHIFT = (-0.71, 1.80)


def test_s2_inter1_matches_arosics(tmp_path):
    out = tmp_path / "tgt_aligned.tif"
    summary = align_image_pair(S2_TGT, S2_REF, out).summary
    np.testing.assert_allclose(reported_shift(summary), AROSICS_S2_SHIFT, atol=0.15)
    # shift_m is the same correction in metres, east and north positive (10 m pixels, rows down).
    np.testing.assert_allclose([summary["shift_m"]["x"], summary["shift_m"]["y"]],
                               [summary["shift_px"]["x"] * 10, -summary["shift_px"]["y"] * 10], atol=0.05)
    assert summary["tie_points"]["used"] >= 50
    assert summary["quality"]["trusted"]
    with rasterio.open(out) as o, rasterio.open(S2_TGT) as m:
        assert (o.crs, o.transform, o.shape, o.dtypes) == (m.crs, m.transform, m.shape, m.dtypes)


def test_cross_crs_pair_aligns(tmp_path):
    """EPSG:3857 at 200 m against UTM 18N (written as a non-EPSG WKT) at 300 m."""
    moving = DATA / "landsat-rgb" / "rgb1_fake_nir_epsg3857.tif"
    fixed = DATA / "landsat-rgb" / "rgb1.tif"
    out = tmp_path / "nir_aligned.tif"
    summary = align_image_pair(moving, fixed, out).summary
    assert summary["tie_points"]["used"] >= 5
    assert np.hypot(*reported_shift(summary)) < 1.0  # same scene, same geolocation within a pixel
    with rasterio.open(out) as o, rasterio.open(moving) as m:
        assert o.crs == m.crs
        assert o.transform == m.transform


def test_cross_crs_pair_on_fixed_grid(tmp_path):
    moving = DATA / "landsat-rgb" / "rgb1_fake_nir_epsg3857.tif"
    fixed = DATA / "landsat-rgb" / "rgb1.tif"
    out = tmp_path / "nir_on_utm.tif"
    align_image_pair(moving, fixed, out, output_on_moving_grid=False)
    with rasterio.open(out) as o, rasterio.open(fixed) as f:
        assert o.crs == f.crs
        assert o.res == f.res
        # a whole-pixel window of the fixed grid
        col, row = apply(~f.transform, o.transform.c, o.transform.f)
        assert abs(col - round(col)) < 1e-6
        assert abs(row - round(row)) < 1e-6


def test_near_infrared_band_against_rgb(tmp_path):
    """Cross-band: Landsat-7 band 4 against band 3 (red) of the same scene: no shift to find."""
    summary = align_image_pair(DATA / "everest" / "LE71400412000304SGS00_B4_crop.TIF",
                               DATA / "everest" / "LE71400412000304SGS00_RGB.TIF",
                               tmp_path / "b4.tif", fixed_band_index=0).summary
    assert summary["tie_points"]["used"] >= 10
    np.testing.assert_allclose(reported_shift(summary), (0, 0), atol=0.15)


def test_narrow_partial_overlap_cross_band(tmp_path):
    """A 726 x 174 px NIR strip against the RGB scene: one row of windows, translation, no shift to find."""
    summary = align_image_pair(DATA / "everest" / "LE71400412000304SGS00_B4_crop2.TIF",
                               DATA / "everest" / "LE71400412000304SGS00_RGB.TIF", tmp_path / "strip.tif").summary
    # the translation fitted to the one row of windows is within its own uncertainty: nothing to correct
    assert "the translation correction" in summary["model_choice"]["reason"]
    assert summary["verdict"] == "already_aligned"
    assert summary["model"] == "identity"
    assert summary["tie_points"]["used"] >= 5
    np.testing.assert_allclose(reported_shift(summary), (0, 0), atol=0.2)
