"""Tie points across CRSs measure the content, not GDAL's coordinate interpolation.

A 1000 px crop of the real Sentinel-2 reference (UTM 33N, 10 m) is resampled onto an EPSG:3857 grid
twice: exactly (every pixel centre's source position by PROJ, a quintic spline: truth 0), and by
GDAL's warper (cubic), which interpolates the coordinate transformation between exactly computed
points and so displaces the content along the rows by up to 0.07 px. GDAL's displacement is measured
here independently, by warping an image of row and column indices with bilinear (which reproduces a
linear ramp exactly) and comparing with PROJ's positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from scipy import ndimage

from conftest import S2_REF
from coreg_plugin import align_image_pair, coregister_stack

MERCATOR = CRS.from_epsg(3857)
#: The estimate is within this (px) of the truth: a tenth of the displacement GDAL's warper makes.
MAX_ERROR_PX = 0.01


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crs") / "utm.tif"
    with rasterio.open(S2_REF) as src:
        window = Window(1300, 800, 1000, 1000)
        data, transform, crs = src.read(1, window=window), src.window_transform(window), src.crs
    with rasterio.open(path, "w", driver="GTiff", width=1000, height=1000, count=1, dtype=data.dtype, crs=crs,
                       transform=transform) as dst:
        dst.write(data, 1)
    return path


def _mercator_grid(path: Path) -> tuple[rasterio.Affine, int, int]:
    with rasterio.open(path) as src:
        return calculate_default_transform(src.crs, MERCATOR, src.width, src.height, *src.bounds)


def _source_positions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) in the crop's pixels of every Mercator pixel centre, exact (PROJ), pixel centres at 0."""
    transform, width, height = _mercator_grid(path)
    with rasterio.open(path) as src:
        src_transform, src_crs = src.transform, src.crs
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    xs, ys = transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    xs, ys = transform_points(MERCATOR, src_crs, xs, ys)
    c, r = ~src_transform * (np.asarray(xs), np.asarray(ys))
    return np.asarray(r).reshape(height, width) - 0.5, np.asarray(c).reshape(height, width) - 0.5


def _write_mercator(path: Path, values: np.ndarray, like: Path) -> Path:
    transform, width, height = _mercator_grid(like)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs=MERCATOR, transform=transform, nodata=np.nan) as dst:
        dst.write(values.astype("float32"), 1)
    return path


def test_exact_reprojection_is_already_aligned(crop: Path, tmp_path: Path) -> None:
    with rasterio.open(crop) as src:
        data = src.read(1).astype(float)
    rows, cols = _source_positions(crop)
    inside = (rows > 2) & (rows < 997) & (cols > 2) & (cols < 997)
    values = np.where(inside, ndimage.map_coordinates(data, [rows, cols], order=5, mode="nearest"), np.nan)
    moving = _write_mercator(tmp_path / "exact.tif", values, crop)
    summary = align_image_pair(moving, crop, tmp_path / "out.tif").summary
    estimated = np.hypot(summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"])
    assert estimated <= MAX_ERROR_PX, summary["estimated_shift_px"]
    assert summary["verdict"] == "already_aligned", summary["message"]


def test_gdal_reprojection_is_corrected_by_gdal_displacement(crop: Path, tmp_path: Path) -> None:
    transform, width, height = _mercator_grid(crop)
    with rasterio.open(crop) as src:
        data, src_transform, src_crs = src.read(1).astype("float32"), src.transform, src.crs
    warped = np.full((height, width), np.nan, "float32")
    reproject(data, warped, src_transform=src_transform, src_crs=src_crs, dst_transform=transform, dst_crs=MERCATOR,
              resampling=Resampling.cubic, dst_nodata=np.nan)
    moving = _write_mercator(tmp_path / "gdal.tif", warped, crop)
    # where GDAL's warper samples each Mercator pixel, against PROJ: a bilinear warp of index ramps
    ramps = np.full((2, height, width), np.nan)
    index_rows, index_cols = np.mgrid[0:1000, 0:1000].astype(float)
    for k, ramp in enumerate((index_rows, index_cols)):
        reproject(ramp, ramps[k], src_transform=src_transform, src_crs=src_crs, dst_transform=transform,
                  dst_crs=MERCATOR, resampling=Resampling.bilinear, dst_nodata=np.nan)
    rows, cols = _source_positions(crop)
    core = np.s_[100:-100, 100:-100]
    sampled_rows = float(np.nanmean(ramps[0][core] - rows[core]))
    sampled_cols = float(np.nanmean(ramps[1][core] - cols[core]))
    assert abs(sampled_rows) > 0.02  # the displacement the test is about (about -0.05 px in rows)
    summary = align_image_pair(moving, crop, tmp_path / "out.tif").summary
    # GDAL showed at each Mercator pixel the content sampled_rows rows from where it belongs: the
    # correction moves it back by that much, in Mercator pixels (nearly the crop's: 10 m on the ground)
    estimated = np.array([summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"]])
    assert np.hypot(*(estimated - (sampled_cols, sampled_rows))) <= MAX_ERROR_PX, (estimated, sampled_rows)


def test_output_onto_a_grid_in_another_crs_is_placed_by_proj(crop: Path, tmp_path: Path) -> None:
    """A raster brought onto a grid in another CRS lands where PROJ puts it, not where GDAL's
    interpolated coordinate transformation does (up to 0.07 px off, measured in this module's
    docstring). The input's two bands are its own column and row indices: bilinear reproduces such a
    ramp exactly, so every output pixel shows the source position its content came from, which is
    compared with PROJ's."""
    with rasterio.open(crop) as src:
        profile = {**src.profile, "count": 2, "dtype": "float32", "nodata": np.nan}
    rows, cols = np.mgrid[0:1000, 0:1000].astype("float32")
    ramps = tmp_path / "ramps.tif"
    with rasterio.open(ramps, "w", **profile) as dst:
        dst.write(np.stack([cols, rows]))
    reference = _write_mercator(tmp_path / "reference.tif", np.zeros(_mercator_grid(crop)[2:0:-1]), crop)
    output = tmp_path / "ramps_3857.tif"
    coregister_stack([str(ramps)], str(reference), str(output), resampling="bilinear")
    exact_rows, exact_cols = _source_positions(crop)
    with rasterio.open(output) as out:
        got_cols, got_rows = out.read().astype(float)
    inside = (exact_rows > 2) & (exact_rows < 997) & (exact_cols > 2) & (exact_cols < 997)
    assert inside.sum() > 900_000
    assert np.isfinite(got_cols[inside]).all()
    errors = np.hypot(got_cols - exact_cols, got_rows - exact_rows)[inside]
    assert errors.max() <= MAX_ERROR_PX, (np.median(errors), errors.max())
