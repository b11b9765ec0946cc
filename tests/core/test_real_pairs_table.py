"""The helpers of tools/real_pairs_table.py (the table itself is run by hand: see docs/accuracy.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import DATA, S2_REF
from tools.independent_evaluator import Measurement
from tools.real_pairs_table import (
    PAIRS,
    area_average,
    crop,
    exact_web_mercator,
    inside,
    markdown,
    moving_to_evaluator,
    to_web_mercator,
)


def _measurement(median: tuple[float, float] | None, ci: tuple[float, float] = (0.01, 0.01)) -> Measurement:
    if median is None:
        return Measurement(False, "cannot measure: 0 of 9 windows match (need 5)", "fixed", (10.0, 10.0))
    return Measurement(True, "", "fixed", (10.0, 10.0), 9, 9, 9, median_px=median, mean_px=median, rms_px=0.1,
                       rms_xy_px=(0.07, 0.07), median_ci95_px=ci)


def test_inside_the_bound() -> None:
    assert inside(_measurement((0.03, 0.04)), 0.06) == "yes"
    assert inside(_measurement((0.03, 0.04)), 0.04).startswith("within the evaluator's")
    assert inside(_measurement((0.3, 0.4)), 0.1).startswith("**no**")
    assert inside(_measurement((0.3, 0.4)), None) == "no bound"
    assert inside(_measurement(None), 0.1) == "not measured"


def test_markdown_rows() -> None:
    before = _measurement((0.6, -1.8)).as_dict()
    after = _measurement((0.01, 0.02)).as_dict()
    rows = [{"pair": "a", "tests": "t", "before": before, "after": after, "verdict": "corrected",
             "model": "translation", "estimated_shift_px": [-0.6, 1.8], "bound_px": 0.05, "bound_evaluator_px": 0.05,
             "inside_bound": "yes", "estimate_error_px": 0.0, "seconds": 1.0},
            {"pair": "b", "tests": "t", "before": _measurement(None).as_dict(), "refused": "RegistrationError: no",
             "seconds": 0.5}]
    lines = markdown(rows).splitlines()
    assert len(lines) == 4
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "+0.600, -1.800" in lines[2]
    assert "refused: RegistrationError" in lines[3]


def test_pixel_vectors_across_crs_and_resolution() -> None:
    """rgb1_fake_nir (EPSG:3857, 200 m, about 182 m on the ground at 24 deg N) onto rgb1 (300 m)."""
    folder = DATA / "landsat-rgb"
    jacobian = moving_to_evaluator(folder / "rgb1_fake_nir_epsg3857.tif", folder / "rgb1.tif", "fixed", (300, 300))
    assert np.sqrt(abs(np.linalg.det(jacobian))) == pytest.approx(0.6, abs=0.02)
    assert moving_to_evaluator(folder / "rgb1.tif", folder / "rgb1.tif", "moving", (0, 0)).tolist() == [[1, 0], [0, 1]]


def test_area_average_is_the_block_mean(tmp_path: Path) -> None:
    block = crop(S2_REF, rasterio.windows.Window(1200, 600, 60, 48), tmp_path / "block.tif")
    coarse = area_average(block, 6, tmp_path / "coarse.tif")
    with rasterio.open(block) as fine, rasterio.open(coarse) as out:
        data = fine.read(1).astype(float)
        assert out.res == (60.0, 60.0)
        assert out.transform.c == fine.transform.c
        assert out.transform.f == fine.transform.f
        np.testing.assert_allclose(out.read(1), data.reshape(8, 6, 10, 6).mean(axis=(1, 3)), rtol=1e-6)


def test_every_pair_names_what_it_tests() -> None:
    assert len({p.name for p in PAIRS}) == len(PAIRS)
    assert all(p.tests for p in PAIRS)


def test_exact_web_mercator_is_on_gdals_grid(tmp_path: Path) -> None:
    """The exact 3857 image lies on the grid of GDAL's (same size and transform), is 0 (nodata) only
    outside the source, and differs from GDAL's cubic image by a small fraction of the texture."""
    block = crop(S2_REF, rasterio.windows.Window(1300, 800, 200, 200), tmp_path / "block.tif")
    exact, gdal = exact_web_mercator(block, tmp_path / "exact.tif"), to_web_mercator(block, tmp_path / "gdal.tif")
    with rasterio.open(exact) as e, rasterio.open(gdal) as g:
        assert (e.crs, e.transform, e.shape, e.dtypes, e.nodata) == (g.crs, g.transform, g.shape, g.dtypes, g.nodata)
        a, b = e.read(1).astype(float), g.read(1).astype(float)
    both = (a > 0) & (b > 0)
    assert both.sum() > 0.9 * (b > 0).sum()
    assert np.median(np.abs(a - b)[both]) < 0.1 * np.std(b[both])
