"""Coregister Stack: many inputs onto the reference grid, merged or stacked, registered if asked."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.merge
from affine import Affine
from rasterio.enums import Resampling

from conftest import DATA, ORIGIN, truth_image
from coreg_plugin import CancelledError, InputError, coregister_stack
from coreg_plugin.apply import blocks
from coreg_plugin.common.affines import compose
from coreg_plugin.io.raster_source import Grid
from coreg_plugin.testing import evaluate, synthetic

LANDSAT = DATA / "landsat-rgb"
TILES = [LANDSAT / f"rgb{i}.tif" for i in range(1, 5)]
ROOT = Path(__file__).resolve().parents[2]


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile


def test_merge_reproduces_the_reference_and_rasterio_merge(tmp_path):
    out = tmp_path / "merged.tif"
    summary = coregister_stack(TILES, LANDSAT / "RGB.byte.tif", out, resampling="nearest").summary
    merged, profile = read(out)
    reference, ref_profile = read(LANDSAT / "RGB.byte.tif")
    assert (profile["crs"], profile["transform"], profile["width"], profile["height"]) == (
        ref_profile["crs"], ref_profile["transform"], ref_profile["width"], ref_profile["height"])
    valid = (merged != profile["nodata"]).any(axis=0)
    assert valid.sum() > 300_000
    np.testing.assert_array_equal(merged[:, valid], reference[:, valid])
    with rasterio.open(LANDSAT / "RGB.byte.tif") as ref:
        datasets = [rasterio.open(p) for p in TILES]
        try:
            expected, transform = rasterio.merge.merge(datasets, bounds=ref.bounds, res=ref.res, method="first",
                                                       resampling=Resampling.nearest, nodata=0)
        finally:
            for ds in datasets:
                ds.close()
    assert transform == ref_profile["transform"]
    np.testing.assert_array_equal(merged, expected)
    coverage = pytest.approx(valid.mean(), abs=1e-3)
    assert summary["totals"] == {"inputs": 4, "used": 4, "skipped": 0, "coverage": coverage}


def test_other_crs_and_resolution_land_on_the_reference_grid(tmp_path):
    """EPSG:3857 at 200 m onto UTM 18N at 300 m: same georeference as the reference, content in place."""
    out = tmp_path / "nir.tif"
    coregister_stack([LANDSAT / "rgb1_fake_nir_epsg3857.tif"], LANDSAT / "RGB.byte.tif", out, mode="stack")
    with rasterio.open(out) as o, rasterio.open(LANDSAT / "RGB.byte.tif") as ref:
        assert (o.crs, o.transform, o.shape) == (ref.crs, ref.transform, ref.shape)
        nir = o.read(1, masked=True).astype(float).filled(np.nan)
        red = ref.read(1).astype(float)
    nir[np.isnan(nir)] = np.nan
    shifts = evaluate.residual_shifts(nir, np.where(red == 0, np.nan, red), window=64, step=32)
    assert len(shifts) >= 10
    assert np.all(np.abs(np.median(shifts, axis=0)) < 0.25)  # same place within a quarter pixel


@pytest.mark.parametrize("part", ["rgbn_suba.tif", "rgbn_subb.tif"])
def test_subsets_land_in_place_on_their_parent_grid(tmp_path, part):
    """rgbn_subb sits on a grid offset by (0.4, 0.2) px from rgbn.tif; both subsets must land in place."""
    out = tmp_path / "part.tif"
    coregister_stack([DATA / "rgbn" / part], DATA / "rgbn" / "rgbn.tif", out, mode="stack", resampling="cubic")
    with rasterio.open(out) as o, rasterio.open(DATA / "rgbn" / "rgbn.tif") as parent:
        assert (o.crs, o.transform, o.shape, o.count) == (parent.crs, parent.transform, parent.shape, 4)
        nir = o.read(4, masked=True).astype(float).filled(np.nan)
        shifts = evaluate.residual_shifts(nir, parent.read(4).astype(float), window=64, step=32)
    assert len(shifts) >= 20
    assert evaluate.rmse(shifts) < 0.1


@pytest.fixture
def two_layers(write):
    """Two overlapping 1-band float inputs with known values, and a reference grid covering both."""
    ref = write("ref.tif", np.zeros((40, 60)), dtype="float32")
    a = np.full((40, 40), 2.0)
    a[:, :5] = np.nan
    b = np.full((40, 40), 6.0)
    left = write("a.tif", a, dtype="float32", nodata=np.nan)
    right = write("b.tif", b, compose(ORIGIN, Affine.translation(20, 0)), dtype="float32", nodata=np.nan)
    return ref, left, right


@pytest.mark.parametrize(("method", "overlap_value"), [
    ("first", 2.0), ("last", 6.0), ("min", 2.0), ("max", 6.0), ("sum", 8.0), ("count", 2.0), ("mean", 4.0)])
def test_merge_methods(tmp_path, two_layers, method, overlap_value):
    ref, left, right = two_layers
    out = tmp_path / f"{method}.tif"
    coregister_stack([left, right], ref, out, merge_method=method, resampling="nearest")
    values = read(out)[0][0]
    assert values[10, 30] == overlap_value  # both inputs
    assert values[10, 10] == (1 if method == "count" else 2.0)  # only the left one
    assert values[10, 50] == (1 if method == "count" else 6.0)  # only the right one
    with rasterio.open(out) as ds:
        assert ds.read(1, masked=True).mask[10, 2]  # neither


def test_merge_accepts_a_rasterio_style_callable(tmp_path, two_layers):
    ref, left, right = two_layers

    def keep_larger(merged_data, new_data, merged_mask, new_mask, **kwargs):
        take = ~new_mask & (merged_mask | (new_data > merged_data))
        np.copyto(merged_data, new_data, where=take)

    out = tmp_path / "callable.tif"
    summary = coregister_stack([left, right], ref, out, merge_method=keep_larger, resampling="nearest").summary
    assert read(out)[0][0][10, 30] == 6.0
    assert summary["merge_method"] == "keep_larger"


def test_stack_mode_bands_descriptions_and_folder(tmp_path):
    out = tmp_path / "stack.tif"
    folder = tmp_path / "per_input"
    summary = coregister_stack(TILES[:2], LANDSAT / "RGB.byte.tif", out, mode="stack", output_folder=folder).summary
    with rasterio.open(out) as ds:
        assert ds.count == 6
        assert ds.descriptions[0] == "rgb1.tif band 1"
        assert ds.descriptions[5] == "rgb2.tif band 3"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["rgb1.tif", "rgb2.tif"]
    with rasterio.open(folder / "rgb2.tif") as ds, rasterio.open(out) as stack:
        np.testing.assert_array_equal(ds.read(), stack.read([4, 5, 6]))
    assert [i["output"] for i in summary["inputs"]] == [str(folder / "rgb1.tif"), str(folder / "rgb2.tif")]


def test_register_corrects_each_input(write, tmp_path):
    """Two inputs with known misregistrations, one on a coarser grid, come out aligned to the truth."""
    truth = truth_image("s2")
    reference = write("reference.tif", truth)
    inputs = []
    for name, shift in (("a.tif", (1.37, -0.62)), ("b.tif", (-7.4, 3.9))):
        h = np.eye(3)
        h[:2, 2] = shift
        inputs.append(write(name, synthetic.misregister(truth, h)))
    out = tmp_path / "stack.tif"
    summary = coregister_stack(inputs, reference, out, mode="stack", register=True).summary
    reported = [(i["registration"]["shift_px"]["x"], i["registration"]["shift_px"]["y"]) for i in summary["inputs"]]
    np.testing.assert_allclose(reported, [(1.37, -0.62), (-7.4, 3.9)], atol=0.05)
    with rasterio.open(out) as ds:
        for band in (1, 2):
            values = ds.read(band, masked=True).astype(float).filled(np.nan)
            shifts = evaluate.residual_shifts(values[16:-16, 16:-16], truth[16:-16, 16:-16], window=128, step=64)
            assert len(shifts) >= 40
            assert evaluate.rmse(shifts) <= 0.05


def test_skips_inputs_that_miss_the_reference(tmp_path, write):
    far = write("far.tif", truth_image("s2")[:100, :100], compose(ORIGIN, Affine.translation(1e6, 0)))
    out = tmp_path / "merged.tif"
    summary = coregister_stack([TILES[0], far], LANDSAT / "RGB.byte.tif", out).summary
    assert summary["totals"]["used"] == 1
    assert summary["skipped"][0]["path"] == str(far)
    assert "does not overlap" in summary["skipped"][0]["reason"]
    with pytest.raises(InputError, match="none of the 1 inputs"):
        coregister_stack([far], LANDSAT / "RGB.byte.tif", tmp_path / "none.tif")
    assert not (tmp_path / "none.tif").exists()


def test_unreadable_input_is_an_error_and_nothing_is_written(tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    with pytest.raises(InputError, match="broken.tif' is not a raster"):
        coregister_stack([TILES[0], broken], LANDSAT / "RGB.byte.tif", tmp_path / "out.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tif"]


def test_cancel_leaves_nothing(tmp_path):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError):
        coregister_stack(TILES, LANDSAT / "RGB.byte.tif", tmp_path / "out.tif", mode="stack",
                         output_folder=tmp_path / "folder", block_size=128, is_cancelled=cancelled)
    assert list(tmp_path.iterdir()) == []  # the output folder made for the run is removed too


def test_other_formats(tmp_path):
    cog = tmp_path / "merged_cog.tif"
    coregister_stack(TILES, LANDSAT / "RGB.byte.tif", cog, driver="COG", creation_options={"BLOCKSIZE": "256"})
    with rasterio.open(cog) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    img = tmp_path / "merged.img"
    coregister_stack(TILES, LANDSAT / "RGB.byte.tif", img, resampling="nearest")
    with rasterio.open(img) as ds, rasterio.open(cog) as ref:
        assert ds.driver == "HFA"
        assert ds.transform == ref.transform
    with pytest.raises(InputError, match="cannot write"):
        coregister_stack(TILES, LANDSAT / "RGB.byte.tif", tmp_path / "x.tif", driver="NoSuchDriver")


def test_cli_stack(tmp_path):
    out = tmp_path / "merged.tif"
    run = subprocess.run(
        [sys.executable, "-m", "coreg_plugin", "stack", "--reference", str(LANDSAT / "RGB.byte.tif"),
         "--output", str(out), "--merge-method", "max", *map(str, TILES)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["merge_method"] == "max"
    assert summary["totals"]["used"] == 4
    assert out.exists()


def test_stack_blocks_hold_no_memory_for_inputs_that_miss_them(tmp_path):
    """A stack's block task (mode stack, with each input's layer for its own file) holds and returns
    arrays for the inputs that meet its block only: with 200 inputs of which one meets the block, its
    memory (numpy's arrays, traced) and its result (what a Dask worker sends back) are those of a few
    layers, not of 200; the stacked block's other bands and the other inputs' files are no data."""
    texture = truth_image("s2")
    reference, near, far = tmp_path / "reference.tif", tmp_path / "near.tif", tmp_path / "far.tif"
    synthetic.write_raster(reference, np.zeros((512, 512)), ORIGIN, nodata=0)
    synthetic.write_raster(near, texture[:100, :100] + 1, ORIGIN, nodata=0)
    far_transform = compose(ORIGIN, Affine.translation(400, 400))
    synthetic.write_raster(far, texture[200:300, 200:300] + 1, far_transform, nodata=0)
    inputs = [blocks.InputSpec(str(near), None, tuple(ORIGIN.to_gdal()), 1, (0, 0, 100, 100), "uint16")]
    far_spec = blocks.InputSpec(str(far), None, tuple(far_transform.to_gdal()), 1, (400, 400, 500, 500), "uint16")
    inputs += [far_spec] * 199
    grid = blocks.GridSpec.of(Grid(synthetic.SAMPLE_CRS, ORIGIN, 512, 512))
    tracemalloc.start()
    try:
        result = blocks.block_task(inputs, grid, (0, 0, 128, 128), "stack", "first", "bilinear", True, True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    layer_bytes = 128 * 128 * 4
    assert peak < 20 * layer_bytes  # 200 layers and their stacked copy took 400
    assert len(pickle.dumps(result)) < 4 * layer_bytes
    assert result.valid_pixels == [100 * 100] + [0] * 199
    assert result.covered == 100 * 100
    out = tmp_path / "stack.tif"
    coregister_stack([near] + [far] * 3, reference, out, mode="stack", output_folder=tmp_path / "each",
                     block_size=128)
    with rasterio.open(out) as ds, rasterio.open(tmp_path / "each" / "near.tif") as alone:
        stacked = ds.read()
        assert np.array_equal(stacked[0], alone.read(1))
    assert (stacked[0, :100, :100] != 0).all()
    assert (stacked[0, 100:] == 0).all()
    assert (stacked[1:, 400:500, 400:500] != 0).all()
    assert (stacked[1:, :400] == 0).all()
