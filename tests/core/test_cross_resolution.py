"""Tie points across resolutions: measured on the coarser grid, at the aliasing floor.

The fixed image is the area average (GDAL's ``average``, as a coarser sensor sees the scene) of a
real Sentinel-2 crop onto a grid 2.5 to 6 times coarser, whose corner sits a fraction of a coarse
pixel off the fine lattice; the moving image is the 10 m crop itself, its geotransform off by a
known sub-pixel shift (in coarse pixels). Errors are judged in pixels of the coarser grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from conftest import DATA
from coreg_plugin import align_image_pair

S2 = DATA / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
#: Same acquisition at two resolutions: the issue's target, in pixels of the coarser grid.
MAX_ERROR_COARSE_PX = 0.05


def _write(path: Path, data: np.ndarray, transform: Affine, crs: object) -> None:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": "float32", "crs": crs, "transform": transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("float32"), 1)


def _pair(tmp_path: Path, factor: float, offset: tuple[float, float], shift: tuple[float, float],
          moving_fine: bool = True) -> tuple[Path, Path]:
    """(moving, fixed): the fine crop and its area average on a coarse grid ``factor`` times coarser,
    offset by ``offset`` coarse pixels; the moving one's content displaced by ``shift`` (its own px)."""
    with rasterio.open(S2) as src:
        window = rasterio.windows.Window(300, 900, 2000, 2000)
        fine, transform, crs = src.read(1, window=window).astype("float32"), src.window_transform(window), src.crs
    coarse_transform = transform * Affine.translation(offset[0] * factor, offset[1] * factor) * Affine.scale(factor)
    side = int((2000 - 2 * factor) // factor)
    coarse = np.zeros((side, side), "float32")
    reproject(fine, coarse, src_transform=transform, src_crs=crs, dst_transform=coarse_transform, dst_crs=crs,
              resampling=Resampling.average)
    fine_path, coarse_path = tmp_path / "fine.tif", tmp_path / "coarse.tif"
    if moving_fine:
        _write(fine_path, fine, transform * Affine.translation(-shift[0], -shift[1]), crs)
        _write(coarse_path, coarse, coarse_transform, crs)
        return fine_path, coarse_path
    _write(fine_path, fine, transform, crs)
    _write(coarse_path, coarse, coarse_transform * Affine.translation(-shift[0], -shift[1]), crs)
    return coarse_path, fine_path


@pytest.mark.parametrize(("factor", "offset", "shift_coarse"), [
    (3, (0.3, 0.6), (0.37, -0.21)),
    (6, (0.5, 0.5), (-0.41, 0.18)),
    (2.5, (0.1, 0.7), (0.12, 0.33)),
])
def test_fine_moving_against_coarse_fixed_recovers_the_shift(
    tmp_path: Path, factor: float, offset: tuple[float, float], shift_coarse: tuple[float, float]
) -> None:
    shift = np.array(shift_coarse) * factor
    moving, fixed = _pair(tmp_path, factor, offset, tuple(shift))
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    estimated = np.array([summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"]])
    error_coarse = float(np.hypot(*(estimated - shift))) / factor
    assert error_coarse <= MAX_ERROR_COARSE_PX / 2, (error_coarse, summary["notes"])
    assert summary["verdict"] == "corrected"
    assert error_coarse * factor <= summary["uncertainty_px"]["max"], summary["uncertainty_px"]
    assert any("matched on a grid of" in note for note in summary["notes"])


@pytest.mark.parametrize(("factor", "offset", "moving_fine"), [
    (3, (0.5, 0.0), True),
    (4, (0.0, 0.25), True),
    (3, (0.3, 0.6), False),
])
def test_same_acquisition_at_two_resolutions_is_already_aligned(
    tmp_path: Path, factor: float, offset: tuple[float, float], moving_fine: bool
) -> None:
    moving, fixed = _pair(tmp_path, factor, offset, (0.0, 0.0), moving_fine)
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    moving_px_per_coarse_px = factor if moving_fine else 1.0
    assert summary["verdict"] == "already_aligned", summary["message"]
    within = summary["uncertainty_px"]["max"] / moving_px_per_coarse_px
    assert within <= MAX_ERROR_COARSE_PX, summary["uncertainty_px"]
    estimated = np.hypot(summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"])
    assert estimated / moving_px_per_coarse_px <= MAX_ERROR_COARSE_PX / 2
