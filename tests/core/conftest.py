"""Shared fixtures of the core tests: real rasters from ../shared/data and known distortions of them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from coreg_plugin.testing import evaluate, synthetic

# Tie-point matching runs many small matrix products; BLAS threads only slow them down.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
S2_REF = DATA / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
S2_TGT = DATA / "s2-inter1" / "tgt_S2A_20160529_T33UUU.tif"
ORIGIN = Affine(10, 0, 400000, 0, -10, 5800000)


def pytest_collection_modifyitems(items: list) -> None:
    """Real-data tests must never skip silently: fail loudly when the data folder is missing."""
    if not DATA.is_dir():
        raise pytest.UsageError(f"test data folder {DATA} is missing (../shared/data beside the repository)")


def read_window(path: Path, row: int, col: int, size: int, band: int = 1) -> np.ndarray:
    """A float window of a real raster."""
    with rasterio.open(path) as ds:
        return ds.read(band, window=Window(col, row, size, size)).astype(float)


def truth_image(name: str) -> np.ndarray:
    """Real textures used as undistorted truth (768 x 768 px)."""
    if name == "s2":
        return read_window(S2_REF, 1000, 700, 768)
    if name == "landsat8":
        return read_window(DATA / "landsat8-60m" / "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF", 0, 100, 700)
    if name == "svalbard":
        return read_window(DATA / "svalbard" / "hillshade_Horn_DEM2009_full.tif", 100, 300, 768)
    raise KeyError(name)


def affine_correction(rotation_deg: float, scale: float, shift: tuple[float, float], centre: float) -> np.ndarray:
    """A correction rotating by ``rotation_deg`` and scaling about ``centre``, then shifting (px)."""
    a = np.radians(rotation_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    h = np.eye(3)
    h[:2, :2] = linear
    h[:2, 2] = np.array([centre, centre]) - linear @ [centre, centre] + np.asarray(shift)
    return h


def true_shift(h: np.ndarray, summary: dict) -> np.ndarray:
    """The correction ``h`` applies at the overlap centre the summary reports on."""
    centre = np.array([summary["overlap_centre_px"]["x"], summary["overlap_centre_px"]["y"]])
    return h[:2, :2] @ centre + h[:2, 2] - centre


def reported_shift(summary: dict) -> np.ndarray:
    """The summary's shift as an array (x, y)."""
    return np.array([summary["shift_px"]["x"], summary["shift_px"]["y"]])


def read_masked(path: Path, band: int = 1) -> np.ndarray:
    """A band as float with NaN where the mask says invalid."""
    with rasterio.open(path) as ds:
        return ds.read(band, masked=True).astype(float).filled(np.nan)


def residual_rmse(output: Path, truth: np.ndarray, window: int = 128) -> tuple[float, int]:
    """RMSE (px) of the misregistration left between ``output`` and ``truth``, and the window count."""
    shifts = evaluate.residual_shifts(read_masked(output), truth, window=window, step=window // 2)
    return evaluate.rmse(shifts), len(shifts)


@pytest.fixture
def write(tmp_path: Path):
    """Write an array as a GeoTIFF in tmp_path and return its path."""

    def _write(name: str, values: np.ndarray, transform: Affine = ORIGIN, **kwargs) -> Path:
        path = tmp_path / name
        synthetic.write_raster(path, values, transform, **kwargs)
        return path

    return _write


@pytest.fixture
def scene(write):
    """A fixed image (S2 texture) and its copy shifted by (1.5, -2.0) px: (fixed path, moving path)."""
    truth = truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (1.5, -2.0)
    return write("fixed.tif", truth), write("moving.tif", synthetic.misregister(truth, h))
