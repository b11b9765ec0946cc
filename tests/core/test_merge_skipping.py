"""Merges that skip what is already decided: a "first" or "last" merge warps an input for a block only
where it could still change a pixel, the other merges only the inputs meeting the block; the pixels
and the summary (each input's coverage, the total coverage) are those of warping every input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.crs
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from conftest import DATA, truth_image
from coreg_plugin import coregister_stack
from coreg_plugin.apply import blocks
from coreg_plugin.io.raster_source import Grid, RasterSource
from coreg_plugin.testing import synthetic

LANDSAT = DATA / "landsat-rgb"
METHODS = ["first", "last", "min", "max", "sum", "count", "mean"]
SERIES_ORIGIN = (400000.0, 5800000.0)
#: Grid offsets (m) of the dates of one footprint at 20 m; (5, ...) puts pixel centres of the 10 m
#: grid exactly on the raster's edge (the count must then come from the warp).
SERIES_OFFSETS = [(0.0, 0.0), (3.0, -4.0), (-6.0, 2.0), (5.0, 9.0), (-2.0, -7.0), (7.5, 2.5), (-9.0, -3.0),
                  (4.0, 6.0)]


def _series(folder: Path, dates: int = 8, side: int = 96, holes: bool = True,
            float_date: int | None = None, border: int = 0) -> tuple[Path, list[Path]]:
    """A 10 m reference of 2 x ``side`` px and ``dates`` uint16 rasters (nodata 0) of one footprint at
    20 m, each a few metres off, from real texture; with ``holes``, some dates have no-data holes
    (the first one too) and a swath edge; date ``float_date`` is float64 (no data NaN) instead; the
    reference reaches ``border`` px beyond the footprint on every side."""
    folder.mkdir(parents=True, exist_ok=True)
    texture = truth_image("s2")
    reference = folder / "reference.tif"
    synthetic.write_raster(reference, np.zeros((2 * side + 2 * border, 2 * side + 2 * border)),
                           Affine(10, 0, SERIES_ORIGIN[0] - 10 * border, 0, -10, SERIES_ORIGIN[1] + 10 * border),
                           nodata=0)
    paths = []
    for k, (dx, dy) in enumerate(SERIES_OFFSETS[:dates]):
        values = texture[5 * k:5 * k + side, 7 * k:7 * k + side] + 1
        if holes and k in (0, 2, 5):
            values[10 + 9 * k:30 + 9 * k, 40 - 3 * k:75 - 3 * k] = 0  # a masked cloud
        if holes and k == 4:
            rows, cols = np.ogrid[:side, :side]
            values[rows + cols < side // 2] = 0  # a swath edge
        path = folder / f"date_{k}.tif"
        transform = Affine(20, 0, SERIES_ORIGIN[0] + dx, 0, -20, SERIES_ORIGIN[1] + dy)
        if k == float_date:
            synthetic.write_raster(path, np.where(values == 0, np.nan, values + 0.3), transform, dtype="float64",
                                   nodata=np.nan)
        else:
            synthetic.write_raster(path, values, transform, nodata=0)
        paths.append(path)
    return reference, paths


def _landsat(folder: Path) -> tuple[Path, list[Path]]:
    """The four Landsat tiles (3 bands, their rotated scene's corners no data), a copy of the second
    one moved over the first by a fraction of a pixel and a copy of the fourth in Web Mercator moved
    over the others, onto RGB.byte.tif."""
    folder.mkdir(parents=True, exist_ok=True)
    moved, mercator = folder / "rgb2_moved.tif", folder / "rgb4_mercator.tif"
    with rasterio.open(LANDSAT / "rgb2.tif") as src:
        profile = {**src.profile, "transform": src.transform * Affine.translation(-123.4, 37.7)}
        with rasterio.open(moved, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(LANDSAT / "rgb4.tif") as src:
        crs = rasterio.crs.CRS.from_epsg(3857)
        transform, width, height = rasterio.warp.calculate_default_transform(src.crs, crs, src.width, src.height,
                                                                             *src.bounds)
        transform = Affine.translation(-40000, 30000) * transform
        profile = {**src.profile, "crs": crs, "transform": transform, "width": width, "height": height}
        with rasterio.open(mercator, "w", **profile) as dst:
            for band in range(1, 4):
                rasterio.warp.reproject(rasterio.band(src, band), rasterio.band(dst, band),
                                        dst_transform=Affine.translation(40000, -30000) * transform,
                                        resampling=Resampling.nearest)
    tiles = [LANDSAT / f"rgb{i}.tif" for i in range(1, 5)]
    return LANDSAT / "RGB.byte.tif", [tiles[0], moved, mercator, tiles[1], tiles[2], tiles[3]]


def _run(reference: Path, inputs: list[Path], out: Path, skip: bool, monkeypatch, **kwargs) -> tuple[dict, bytes]:
    """The merge with the skipping on or off: its summary (without times) and its pixels, profile and all."""
    monkeypatch.setattr(blocks, "SKIP_DECIDED", skip)
    summary = coregister_stack(inputs, reference, out, **kwargs).summary
    for key in ("elapsed_s", "timings_s", "output"):
        summary.pop(key)
    with rasterio.open(out) as ds:
        pixels = ds.read()
        return summary, (pixels.tobytes(), pixels.dtype.str, str(ds.nodata), ds.transform, ds.profile["count"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ["landsat", "series", "series on a larger grid", "mixed types"])
def test_pixels_and_summary_are_those_of_warping_every_input(tmp_path, monkeypatch, case, method):
    if case == "landsat":  # stored in strips of a few rows: larger blocks read them faster
        (reference, inputs), resamplings, block_size = _landsat(tmp_path / "data"), ["bilinear"], 128
    elif case == "series":
        (reference, inputs), resamplings, block_size = _series(tmp_path / "data"), ["bilinear", "cubic", "average"], 64
    elif case == "series on a larger grid":
        (reference, inputs), block_size = _series(tmp_path / "data", border=24), 64
        resamplings = ["bilinear", "lanczos"]
    else:
        (reference, inputs), resamplings, block_size = _series(tmp_path / "data", float_date=2), ["nearest"], 64
    for resampling in resamplings:
        kwargs = {"merge_method": method, "resampling": resampling, "block_size": block_size}
        skipped = _run(reference, inputs, tmp_path / "skip.tif", True, monkeypatch, **kwargs)
        every = _run(reference, inputs, tmp_path / "every.tif", False, monkeypatch, **kwargs)
        assert skipped[1] == every[1], (method, resampling)
        assert skipped[0] == every[0], (method, resampling)
        assert 0.3 < skipped[0]["totals"]["coverage"] <= 1.0


def test_a_callable_merge_and_per_input_files_still_get_every_input(tmp_path, monkeypatch):
    reference, inputs = _series(tmp_path / "data", dates=4)

    def keep_larger(merged_data, new_data, merged_mask, new_mask, **kwargs):
        take = ~new_mask & (merged_mask | (new_data > merged_data))
        np.copyto(merged_data, new_data, where=take)

    for kwargs in ({"merge_method": keep_larger}, {"merge_method": "first", "output_folder": tmp_path / "each"}):
        warps = _count_warps(monkeypatch)
        skipped = _run(reference, inputs, tmp_path / "skip.tif", True, monkeypatch, block_size=64, **kwargs)
        assert len(warps) == 9 * 4  # every input meets every block of the 3 x 3
        every = _run(reference, inputs, tmp_path / "every.tif", False, monkeypatch, block_size=64, **kwargs)
        assert skipped == every


def _count_warps(monkeypatch) -> list:
    """Record every input's warp onto a block: (input path, block's transform)."""
    warps, lock, warp = [], threading.Lock(), blocks._warped_layer

    def counted(source, spec, block_grid, resampling):
        with lock:
            warps.append((spec.path, block_grid.transform))
        return warp(source, spec, block_grid, resampling)

    monkeypatch.setattr(blocks, "_warped_layer", counted)
    return warps


@pytest.mark.parametrize("method", ["first", "last"])
@pytest.mark.parametrize("border", [0, 32])
def test_a_first_merge_of_one_footprint_warps_few_inputs_per_block(tmp_path, monkeypatch, method, border):
    """8 dates of one footprint with no holes, on its grid or on a larger one: the first (last) date
    fills every block but for a pixel or two along the footprint's edges, which the dates a few
    metres off fill; the other dates are counted, not warped. Before, all 8 were warped for every block."""
    reference, inputs = _series(tmp_path / "data", side=128, holes=False, border=border)
    warps = _count_warps(monkeypatch)
    summary = coregister_stack(inputs, reference, tmp_path / "out.tif", merge_method=method, block_size=64).summary
    blocks_count = ((256 + 2 * border) // 64) ** 2
    assert len(warps) <= (2 if border == 0 else 2.5) * blocks_count  # 8 per block before
    footprint = 256 ** 2 / (256 + 2 * border) ** 2
    assert all(i["coverage"] > 0.98 * footprint for i in summary["inputs"])


def test_holes_are_filled_by_warping_later_inputs_only_where_needed(tmp_path, monkeypatch):
    reference, inputs = _series(tmp_path / "data", side=128)
    warps = _count_warps(monkeypatch)
    summary = coregister_stack(inputs, reference, tmp_path / "out.tif", merge_method="first", block_size=64).summary
    assert summary["totals"]["coverage"] == 1.0
    assert len(warps) <= 3 * 16  # 8 x 16 before


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
                                        "max", "q1"])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_counts_without_a_warp_are_the_warps_counts(tmp_path, resampling, scale):
    """Whenever the count of an input's valid pixels on a block is decided without warping, it is the
    warp's, on blocks inside, across the edges of and outside a raster with and without no data."""
    rng = np.random.default_rng(3)
    values = truth_image("s2")[:300, :280] + 1
    holes = values.copy()
    holes[140:160, 130:150] = 0
    decided = 0
    for name, data, nodata in (("full.tif", values, None), ("nodata.tif", values, 0), ("holes.tif", holes, 0)):
        path = tmp_path / name
        synthetic.write_raster(path, data, Affine(20, 0, 1000, 0, -20, 7000), nodata=nodata)
        with RasterSource(path, "input") as source:
            for _ in range(40):
                pixel = 20 / scale
                x0 = 1000 + rng.uniform(-60, 300) * 20
                y0 = 7000 - rng.uniform(-60, 320) * 20
                if rng.random() < 0.2:  # centres on the raster's edge
                    x0 = 1000 - pixel / 2 + round(rng.uniform(-10, 10)) * pixel
                block = Grid(source.grid.crs, Affine(pixel, 0, x0, 0, -pixel, y0), 37, 29)
                spec = blocks.InputSpec(str(path), None, tuple(source.grid.transform.to_gdal()), 1,
                                        (0, 0, 37, 29), "uint16")
                count = blocks._valid_count(source, spec, block, Resampling[resampling])
                warped = blocks._warped_layer(source, spec, block, Resampling[resampling])
                if count is not None:
                    decided += 1
                    assert count == int(np.isfinite(warped).any(axis=0).sum()), (name, x0, y0)
    assert decided > (60 if resampling in blocks.CENTRE_RULE_METHODS else 20)
