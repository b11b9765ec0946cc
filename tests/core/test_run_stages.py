"""A run's stages: the GDAL environment it runs in, the time each stage takes (summary
``timings_s``), and cancellation answered inside every stage."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import rasterio
from conftest import truth_image

from coreg_plugin import CancelledError, align_image_pair, synthetic

STAGES = ("coarse", "tie_points", "model_fit", "output")


def gdal_cache_max_bytes() -> int:
    """GDAL's block cache limit really in force (GDALGetCacheMax64 of the GDAL rasterio loaded)."""
    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "libgdal" in line)
    gdal = ctypes.CDLL(path)
    gdal.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(gdal.GDALGetCacheMax64())


@pytest.fixture
def scene(write):
    """A fixed image and its copy shifted by (1.5, -2.0) px."""
    truth = truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (1.5, -2.0)
    return write("fixed.tif", truth), write("moving.tif", synthetic.misregister(truth, h))


def test_gdal_block_cache_is_megabytes_during_a_run(tmp_path, scene):
    fixed, moving = scene
    seen = []

    def progress(_: float) -> None:
        seen.append((gdal_cache_max_bytes(), int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))))

    align_image_pair(moving, fixed, tmp_path / "out.tif", progress=progress)
    assert seen
    for really_set, configured in seen:
        assert 32 << 20 <= really_set <= 256 << 20, f"GDAL block cache is {really_set} bytes"
        assert configured == really_set


def test_gdal_block_cache_is_megabytes_during_a_stack(tmp_path, scene):
    from coreg_plugin import coregister_stack

    fixed, moving = scene
    seen = []
    coregister_stack([moving], fixed, tmp_path / "merged.tif", progress=lambda _: seen.append(gdal_cache_max_bytes()))
    assert seen
    assert all(32 << 20 <= value <= 256 << 20 for value in seen), seen[:3]
