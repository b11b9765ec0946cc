"""What the written raster keeps: data type with rounding, nodata, metadata, layout, grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject

from conftest import DATA, read_masked, truth_image
from coreg_plugin import align_image_pair
from coreg_plugin.io.writer import to_dtype
from coreg_plugin.testing import synthetic


def test_to_dtype_rounds_and_clips_never_truncates():
    values = np.array([1.4, 1.5, 2.6, -3.0, 300.0, np.nan, 0.2])
    out = to_dtype(values, "uint8", nodata=0)
    # 0.2 rounds to 0, which is nodata: a valid pixel is moved to 1 instead of vanishing
    assert out.tolist() == [1, 2, 3, 1, 255, 0, 1]
    floats = to_dtype(np.array([np.nan, 2.5, -np.inf]), "float32", np.nan)
    assert floats.dtype == np.float32
    assert np.isnan(floats[0])
    assert floats[1] == 2.5
    assert np.isnan(floats[2])
    assert to_dtype(np.array([np.nan, 2.5]), "float32", -9999.0).tolist() == [-9999.0, 2.5]


@pytest.fixture
def everest_rgb(tmp_path):
    """Landsat-7 RGB (uint8, 3 bands) with band descriptions, scale/offset; and a shifted copy."""
    src = DATA / "everest" / "LE71400412000304SGS00_RGB.TIF"
    with rasterio.open(src) as ds:
        data, profile = ds.read().astype(float), ds.profile
    h = np.eye(3)
    h[:2, 2] = (2.3, -1.6)
    moving = tmp_path / "moving.tif"
    profile.update(driver="GTiff", nodata=None)
    with rasterio.open(moving, "w", **profile) as dst:
        dst.write(np.stack([np.clip(np.rint(synthetic.misregister(b, h)), 0, 255) for b in data]).astype("uint8"))
        dst.descriptions = ("red", "green", "blue")
        dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        dst.scales = (0.01, 0.02, 0.03)
        dst.offsets = (1.0, 2.0, 3.0)
    return src, moving, data


def test_all_bands_corrected_with_metadata_and_no_bias(tmp_path, everest_rgb):
    fixed, moving, truth = everest_rgb
    out = tmp_path / "out.tif"
    summary = align_image_pair(moving, fixed, out, resampling="bilinear").summary
    with rasterio.open(out) as ds:
        assert ds.count == 3
        assert ds.dtypes == ("uint8",) * 3
        assert ds.descriptions == ("red", "green", "blue")
        assert tuple(ds.colorinterp) == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert ds.scales == (0.01, 0.02, 0.03)
        assert ds.offsets == (1.0, 2.0, 3.0)
        assert ds.profile["tiled"]
        assert ds.profile["compress"] == "deflate"
        assert ds.nodata == 0
        values = ds.read(masked=True)
        grid = (ds.crs, ds.transform)
    assert summary["resampling"] == "bilinear"
    # the same warp in floating point, with the reported corrected geotransform
    with rasterio.open(moving) as src:
        expected = np.full(values.shape, np.nan)
        corrected = Affine.from_gdal(*summary["correction"]["geotransform"])
        reproject(src.read().astype(float), expected, src_transform=corrected, src_crs=src.crs,
                  dst_transform=grid[1], dst_crs=grid[0], resampling=Resampling.bilinear,
                  src_nodata=np.nan, dst_nodata=np.nan)
    inner = (slice(None), slice(20, -20), slice(20, -20))
    difference = values[inner].astype(float) - expected[inner]
    assert np.nanmax(np.abs(difference)) <= 0.5 + 1e-3  # rounded to the nearest integer
    assert abs(float(np.nanmean(difference))) < 0.02  # no truncation bias (coregix: -0.44 DN)


def test_output_nodata_where_no_source(write, tmp_path):
    truth = truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (6.0, -4.0)
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", synthetic.misregister(truth, h))
    out = tmp_path / "out.tif"
    align_image_pair(moving, fixed, out, output_nodata=65535, model="translation")
    with rasterio.open(out) as ds:
        assert ds.nodata == 65535
        values = ds.read(1)
    # content moves by (+6, -4) px: 6 columns on the left, 4 rows at the bottom have no source
    assert (values[:, :5] == 65535).all()
    assert (values[-3:, :] == 65535).all()
    assert (values[10:-10, 10:-10] != 65535).all()


def test_float_nan_nodata_input(write, tmp_path):
    """Float moving image with NaN holes: holes stay nodata, registration still works."""
    truth = truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (0.6, 1.2)
    moving_values = synthetic.misregister(truth, h)
    moving_values[300:380, 200:420] = np.nan
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", moving_values, dtype="float32", nodata=np.nan)
    out = tmp_path / "out.tif"
    summary = align_image_pair(moving, fixed, out, model="translation").summary
    np.testing.assert_allclose([summary["shift_px"]["x"], summary["shift_px"]["y"]], (0.6, 1.2), atol=0.05)
    result = read_masked(out)
    assert np.isnan(result[305:375, 210:410]).all()
    assert summary["output_nodata"] is None  # NaN is reported as null in JSON
    json.dumps(summary)


def test_keep_temp_dir_keeps_diagnostics(write, tmp_path):
    truth = truth_image("s2")
    fixed = write("fixed.tif", truth)
    moving = write("moving.tif", synthetic.misregister(truth, np.eye(3)))
    scratch = tmp_path / "scratch"
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif", temp_dir=scratch, keep_temp_dir=True).summary
    kept = {p.name for p in (scratch / summary["temp_dir"].split("/")[-1]).iterdir()}
    assert {"tie_points.csv", "moving_edge_proxy.tif", "fixed_valid_mask.tif"} <= kept
    rows = (scratch / summary["temp_dir"].split("/")[-1] / "tie_points.csv").read_text().splitlines()
    assert len(rows) == summary["tie_points"]["windows"] + 1
    align_image_pair(moving, fixed, tmp_path / "out2.tif", temp_dir=tmp_path / "scratch2")
    assert list((tmp_path / "scratch2").iterdir()) == []
