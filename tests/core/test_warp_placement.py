"""Where GDAL's warper resamples (rotated grids, grid changes), every output pixel shows the content
of the exact source position.

The input's two bands are its own column and row indices, which a bilinear warp reproduces exactly
wherever its kernel sees source pixels on both sides, so each output pixel says where its content
came from. GDAL derives its kernel's scale from each chunk's bounding box in the source: for a
rotated map, or a narrow chunk such as a grid's last block, that box is wider than the chunk and the
kernel is widened as for downsampling, off-centre after normalization (measured with rasterio's
GDAL 3.10 and Debian's 3.6, before Coreg gave GDAL the scale: up to 0.08 px off at 1 degree, 1.5 px
at 5 degrees, 2.8 px at 30 degrees in the 6 px wide last block).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from coreg_plugin import coregister_stack
from coreg_plugin.common.affines import apply, compose
from coreg_plugin.testing.synthetic import write_raster

#: A bilinear warp of the index ramps is within this (px) of the exact source position.
MAX_ERROR_PX = 0.001
SIDE = 1030  # the output's last 1024 px block is 6 px wide


def placement_errors(tmp_path: Path, source: Affine, side: int, grid: Affine, grid_side: int, resampling: str,
                     margin: int) -> np.ndarray:
    """Merge a ``side`` px input with geotransform ``source``, whose two bands are its own column and
    row indices, onto a ``grid_side`` px grid at ``grid``; the distance (px) of each output pixel's
    value from the exact source position of its centre, where that lies ``margin`` px inside."""
    rows, cols = np.mgrid[0:side, 0:side].astype("float32")
    ramps, reference, output = tmp_path / "ramps.tif", tmp_path / "reference.tif", tmp_path / "out.tif"
    write_raster(ramps, np.stack([cols, rows]), source, dtype="float32", nodata=float("nan"))
    write_raster(reference, np.zeros((grid_side, grid_side)), grid)
    coregister_stack([str(ramps)], str(reference), str(output), resampling=resampling)
    out_rows, out_cols = np.mgrid[0:grid_side, 0:grid_side] + 0.5
    exact_cols, exact_rows = apply(compose(~source, grid), out_cols, out_rows)
    exact_cols, exact_rows = exact_cols - 0.5, exact_rows - 0.5  # the ramps' values: centres at whole pixels
    with rasterio.open(output) as out:
        got_cols, got_rows = out.read().astype(float)
    inside = (exact_cols > margin) & (exact_cols < side - margin - 1) & \
        (exact_rows > margin) & (exact_rows < side - margin - 1)
    assert np.isfinite(got_cols[inside]).all()
    return np.where(inside, np.hypot(got_cols - exact_cols, got_rows - exact_rows), np.nan)


@pytest.mark.parametrize("degrees", [1.0, 5.0, 30.0])
def test_rotated_input_lands_at_its_exact_position(tmp_path: Path, degrees: float) -> None:
    """An input with a rotated geotransform, merged onto a north-up grid of the same CRS."""
    north_up = Affine(10, 0, 500_000, 0, -10, 5_800_000)
    rotated = compose(north_up, Affine.rotation(degrees, pivot=(SIDE / 2, SIDE / 2)))
    errors = placement_errors(tmp_path, rotated, SIDE, north_up, SIDE, "bilinear", margin=2)
    assert np.nanmax(errors) <= MAX_ERROR_PX, (np.nanmedian(errors), np.nanmax(errors),
                                               np.nanmax(errors[:, 1024:], initial=0))


@pytest.mark.parametrize("resampling", ["bilinear", "cubic", "cubic_spline"])
def test_input_a_little_finer_keeps_the_kernel_at_its_width(tmp_path: Path, resampling: str) -> None:
    """An input with 9.99 m pixels merged onto a 10 m grid: downsampling by 0.1 %, which GDAL's own
    estimate counts as none (within 5 %). The kernel is not widened for it: a scale of 0.999 given
    to GDAL puts cubic_spline 0.82 px off here (GDAL 3.6 and 3.10). The three methods reproduce a ramp."""
    fine = Affine(9.99, 0, 500_000, 0, -9.99, 5_800_000)
    grid = Affine(10, 0, 500_000, 0, -10, 5_800_000)
    errors = placement_errors(tmp_path, fine, 600, grid, 590, resampling, margin=4)
    assert np.nanmax(errors) <= MAX_ERROR_PX, (np.nanmedian(errors), np.nanmax(errors))
