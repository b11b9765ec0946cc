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


@pytest.mark.parametrize("degrees", [1.0, 5.0, 30.0])
def test_rotated_input_lands_at_its_exact_position(tmp_path: Path, degrees: float) -> None:
    """An input with a rotated geotransform, merged onto a north-up grid of the same CRS."""
    north_up = Affine(10, 0, 500_000, 0, -10, 5_800_000)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype("float32")
    rotated = compose(north_up, Affine.rotation(degrees, pivot=(SIDE / 2, SIDE / 2)))
    ramps, reference, output = tmp_path / "ramps.tif", tmp_path / "reference.tif", tmp_path / "out.tif"
    write_raster(ramps, np.stack([cols, rows]), rotated, dtype="float32", nodata=float("nan"))
    write_raster(reference, np.zeros((SIDE, SIDE)), north_up)
    coregister_stack([str(ramps)], str(reference), str(output), resampling="bilinear")
    out_rows, out_cols = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    exact_cols, exact_rows = apply(compose(~rotated, north_up), out_cols, out_rows)
    exact_cols, exact_rows = exact_cols - 0.5, exact_rows - 0.5  # the ramps' values: centres at whole pixels
    with rasterio.open(output) as out:
        got_cols, got_rows = out.read().astype(float)
    inside = (exact_cols > 2) & (exact_cols < SIDE - 3) & (exact_rows > 2) & (exact_rows < SIDE - 3)
    assert np.isfinite(got_cols[inside]).all()
    errors = np.hypot(got_cols - exact_cols, got_rows - exact_rows)[inside]
    last_block = np.hypot(got_cols - exact_cols, got_rows - exact_rows)[:, 1024:][inside[:, 1024:]]
    assert errors.max() <= MAX_ERROR_PX, (np.median(errors), errors.max(), last_block.max(initial=0))


@pytest.mark.parametrize("resampling", ["bilinear", "cubic", "cubic_spline"])
def test_input_a_little_finer_keeps_the_kernel_at_its_width(tmp_path: Path, resampling: str) -> None:
    """An input with 9.99 m pixels merged onto a 10 m grid: downsampling by 0.1 %, which GDAL's own
    estimate counts as none (within 5 %). The kernel is not widened for it: a scale of 0.999 given
    to GDAL puts cubic_spline 0.58 px off (GDAL 3.6 and 3.10). The three methods reproduce a ramp."""
    side = 600
    fine = Affine(9.99, 0, 500_000, 0, -9.99, 5_800_000)
    grid = Affine(10, 0, 500_000, 0, -10, 5_800_000)
    rows, cols = np.mgrid[0:side, 0:side].astype("float32")
    ramps, reference, output = tmp_path / "ramps.tif", tmp_path / "reference.tif", tmp_path / "out.tif"
    write_raster(ramps, np.stack([cols, rows]), fine, dtype="float32", nodata=float("nan"))
    write_raster(reference, np.zeros((side - 10, side - 10)), grid)
    coregister_stack([str(ramps)], str(reference), str(output), resampling=resampling)
    out_rows, out_cols = np.mgrid[0:side - 10, 0:side - 10] + 0.5
    exact_cols, exact_rows = apply(compose(~fine, grid), out_cols, out_rows)
    exact_cols, exact_rows = exact_cols - 0.5, exact_rows - 0.5
    with rasterio.open(output) as out:
        got_cols, got_rows = out.read().astype(float)
    inside = (exact_cols > 4) & (exact_cols < side - 5) & (exact_rows > 4) & (exact_rows < side - 5)
    errors = np.hypot(got_cols - exact_cols, got_rows - exact_rows)[inside]
    assert errors.max() <= MAX_ERROR_PX, (np.median(errors), errors.max())
