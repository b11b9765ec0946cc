"""Issue 15: the local model, a smooth displacement field on top of the global affine correction."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.spatial import cKDTree
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, S2_REF, read_masked, read_window, residual_rmse
from coreg_plugin import align_image_pair, apply_correction
from coreg_plugin.common.affines import apply as apply_affine
from coreg_plugin.common.affines import compose
from coreg_plugin.common.errors import InputError, RegistrationError
from coreg_plugin.correction.file import read_correction
from coreg_plugin.estimate import local_fit as local_model
from coreg_plugin.report.html import FIGURE_COUNT, LOCAL_FIELD_TITLE
from coreg_plugin.testing import evaluate, synthetic

#: RMS (px) of the smooth non-affine displacement, as it is left after the best affine.
FIELD_RMS_PX = 0.85


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """1024 x 1024 px of the real Sentinel-2 reference."""
    return read_window(S2_REF, 900, 600, 1024)


@pytest.fixture(scope="module")
def smooth_field(texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth displacement with no mean and no linear trend, 0.85 px RMS per pixel, up to 2.15 px."""
    dx, dy = synthetic.local_jitter_field(texture.shape, 1.0, 512, seed=2)
    scale = FIELD_RMS_PX / np.sqrt(np.mean(dx ** 2 + dy ** 2))
    return dx * scale, dy * scale


@pytest.fixture(scope="module")
def bent_pair(tmp_path_factory, texture, smooth_field) -> tuple[str, str]:
    """(moving, fixed): the texture displaced by the smooth field, and the texture itself."""
    folder = tmp_path_factory.mktemp("bent")
    fixed, moving = str(folder / "fixed.tif"), str(folder / "moving.tif")
    synthetic.write_raster(fixed, texture, ORIGIN, dtype="float32")
    synthetic.write_raster(moving, synthetic.displace(texture, *smooth_field), ORIGIN, dtype="float32")
    return moving, fixed


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, bent_pair) -> dict:
    """Align with ``model="local"``, saving the correction file."""
    folder = tmp_path_factory.mktemp("local_run")
    out, correction = folder / "out.tif", folder / "correction.json"
    report = folder / "report.html"
    result = align_image_pair(*bent_pair, out, model="local", correction_file=correction, report=report)
    return {"result": result, "out": out, "correction": correction, "report": report}


def test_smooth_field_is_left_by_the_best_affine(bent_pair, texture):
    before, _ = residual_rmse(bent_pair[0], texture)
    assert before > 0.7


@pytest.mark.parametrize("model", ["local", "auto"])
def test_local_model_corrects_a_smooth_field(bent_pair, texture, tmp_path, model, local_run):
    if model == "local":
        out, summary = local_run["out"], local_run["result"].summary
    else:
        out = tmp_path / "out.tif"
        summary = align_image_pair(*bent_pair, out, model=model).summary
    assert summary["model"] == "local", summary["model_choice"]
    assert summary["verdict"] == "corrected"
    residual, windows = residual_rmse(out, texture)
    assert windows > 150
    assert residual <= 0.15
    assert summary["local"]["max_local_px"] > 1.0
    # judged by held-out residuals: a spline through its own points would show about 0 px here
    assert 0.03 < summary["rmse_px"] < 0.3
    held_out = {c["model"]: c["held_out_rmse_px"] for c in summary["model_choice"]["candidates"]}
    assert held_out["local"] < held_out["affine"] / 2


def test_local_tie_points_carry_held_out_residuals(local_run):
    reg = local_run["result"].registration
    used = [p for p in reg.tie_points if p.status == "used"]
    assert len(used) > 100
    residuals = np.array([p.residual_px for p in used])
    assert np.all(np.isfinite(residuals))
    assert np.all(residuals > 0)
    assert np.sqrt(np.mean(residuals ** 2)) == pytest.approx(reg.rmse_px)
    text = Path(local_run["report"]).read_text()
    assert "local part of the correction, largest (moving px)" in text
    title = html.escape(LOCAL_FIELD_TITLE)
    pictures = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pictures) == FIGURE_COUNT + 1
    local_pictures = [data for alt, data in pictures if alt == title]
    assert len(local_pictures) == 1
    png = base64.b64decode(local_pictures[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5000  # a real picture, not an empty canvas


def test_correction_file_carries_the_local_model_to_a_coarser_raster(local_run, bent_pair, texture, tmp_path):
    document = json.loads(Path(local_run["correction"]).read_text())
    assert document["model"]["type"] == "local"
    grid = document["model"]["local_grid"]
    assert len(grid["transform"]) == 6
    assert np.max(np.hypot(grid["dx"], grid["dy"])) > 10  # map units: more than 1 px of 10 m
    with rasterio.open(bent_pair[0]) as src:
        moving = src.read(1).astype(float)
    coarse = write_coarse(tmp_path / "coarse.tif", moving)
    out = tmp_path / "coarse_corrected.tif"
    summary = apply_correction(local_run["correction"], coarse, out)
    assert summary["model"] == "local"
    coarse_truth = downscale_local_mean(texture, (2, 2))
    before = evaluate.rmse(evaluate.residual_shifts(read_masked(coarse), coarse_truth, window=64, step=32))
    shifts = evaluate.residual_shifts(read_masked(out), coarse_truth, window=64, step=32)
    assert before > 0.35  # half the 0.8 px of the 10 m raster
    assert len(shifts) > 150
    assert evaluate.rmse(shifts) <= 0.1
    with pytest.raises(InputError, match="local"):
        apply_correction(local_run["correction"], coarse, tmp_path / "georef.tif", no_resample=True)
    assert not (tmp_path / "georef.tif").exists()


def write_coarse(path: Path, moving: np.ndarray) -> Path:
    """A 20 m version (2 x 2 means) of a 10 m raster at ``ORIGIN``."""
    synthetic.write_raster(path, downscale_local_mean(moving, (2, 2)), compose(ORIGIN, Affine.scale(2)),
                           dtype="float32")
    return path


def test_local_model_refuses_unrelated_content(write, tmp_path, texture):
    fixed = write("fixed.tif", texture)
    moving = write("moving.tif", read_window(S2_REF, 2150, 1350, 1024))
    with pytest.raises(RegistrationError, match="no trustworthy registration") as error:
        align_image_pair(moving, fixed, tmp_path / "out.tif", model="local")
    assert str(moving) in str(error.value)
    assert not (tmp_path / "out.tif").exists()


def test_local_model_refuses_a_textureless_moving_image(write, tmp_path, texture):
    fixed = write("fixed.tif", texture[:512, :512])
    moving = write("moving.tif", np.full((512, 512), 700.0))
    with pytest.raises(RegistrationError, match="no texture"):
        align_image_pair(moving, fixed, tmp_path / "out.tif", model="local")


def test_local_outlier_rule_flags_the_point_that_disagrees_with_its_neighbours():
    xs, ys = np.meshgrid(np.arange(8) * 100.0, np.arange(8) * 100.0)
    src = np.column_stack([xs.ravel(), ys.ravel()])
    residuals = np.column_stack([np.sin(src[:, 0] / 300), np.cos(src[:, 1] / 300)]) * 0.8
    residuals[27] += (0.6, -0.5)
    assert np.flatnonzero(local_model.local_outliers(src, residuals)).tolist() == [27]


@pytest.mark.parametrize("layout", ["grid", "line"])
def test_local_outlier_planes_are_each_points_own_least_squares_plane(layout):
    """All points' planes at once equal one least-squares fit per point, also where the neighbours
    are collinear (a line of tie points: the minimum-norm solution)."""
    rng = np.random.default_rng(5)
    if layout == "grid":
        xs, ys = np.meshgrid(np.arange(9) * 120.0, np.arange(7) * 120.0)
        src = np.column_stack([xs.ravel(), ys.ravel()]) + rng.normal(0, 4, (63, 2))
    else:
        src = np.column_stack([np.arange(20) * 100.0, np.zeros(20)])
    residuals = rng.normal(0, 0.2, (len(src), 2))
    k = local_model.NEIGHBOURS
    index = cKDTree(src).query(src, k + 1)[1]
    expected = [np.linalg.lstsq(np.column_stack([src[near] - src[i], np.ones(k)]), residuals[near], rcond=None)[0][2]
                for i, near in enumerate(index[:, 1:])]
    np.testing.assert_allclose(local_model.neighbour_planes(src, residuals, k), expected, rtol=0, atol=1e-12)


def test_field_tapers_to_the_affine_outside_the_tie_points_and_inverts():
    xs, ys = np.meshgrid(np.linspace(200, 800, 7), np.linspace(200, 800, 7))
    src = np.column_stack([xs.ravel(), ys.ravel()])
    h = np.array([[1.001, 0.002, 1.5], [-0.002, 0.999, -0.7], [0, 0, 1]])
    bump = np.column_stack([np.sin(src[:, 0] / 150), np.cos(src[:, 1] / 200)])
    dst = src @ h[:2, :2].T + h[:2, 2] + bump
    field, keep, _ = local_model.fit_local(src, dst, h, 1000, 1000, taper_px=100)
    assert keep.all()
    np.testing.assert_allclose(field.correct(src), dst, atol=0.02)
    far = np.array([[20.0, 500.0], [980.0, 980.0]])  # beyond the hull by more than the taper
    np.testing.assert_allclose(field.local_at(far), 0, atol=1e-3)
    inside = np.array([[333.0, 444.0], [650.0, 250.0]])
    np.testing.assert_allclose(field.correct(field.inverse(inside)), inside, atol=1e-3)


@pytest.mark.parametrize(("model", "processes"), [("local", False), ("auto", True)])
def test_coregister_stack_applies_the_local_model(bent_pair, texture, tmp_path, model, processes):
    from coreg_plugin import coregister_stack

    out = tmp_path / "merged.tif"
    with ExitStack() as stack:  # on processes, the field travels pickled from the registration to the blocks
        pool = stack.enter_context(ProcessPoolExecutor(2)) if processes else None
        result = coregister_stack([bent_pair[0]], bent_pair[1], output=out, register=True, model=model,
                                  executor=pool)
    registration = result.summary["inputs"][0]["registration"]
    assert registration["model"] == "local", registration
    assert registration["max_local_px"] > 1.0
    residual, windows = residual_rmse(out, texture)
    assert windows > 150
    assert residual <= 0.15


#: Class values of the class raster (255 = nodata).
CLASSES = (10, 20, 30, 40, 50)


@pytest.fixture(scope="module")
def class_raster(tmp_path_factory, bent_pair) -> Path:
    """A uint8 raster of five classes on the moving grid, patches with irregular boundaries (the
    smoothed moving image cut at its quintiles)."""
    from scipy import ndimage

    with rasterio.open(bent_pair[0]) as src:
        smooth = ndimage.gaussian_filter(src.read(1).astype(float), 6)
    labels = np.digitize(smooth, np.quantile(smooth, [0.2, 0.4, 0.6, 0.8]))
    path = tmp_path_factory.mktemp("classes") / "classes.tif"
    synthetic.write_raster(path, np.asarray(CLASSES, dtype=np.uint8)[labels], ORIGIN, dtype="uint8", nodata=255)
    return path


def exact_source_positions(correction_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Where each output pixel centre's content lies in the input (pixel corners at integers, x, y),
    computed point by point from the correction file's field, independently of the warp."""
    correction = read_correction(correction_path)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xs, ys = apply_affine(ORIGIN, cols.ravel() + 0.5, rows.ravel() + 0.5)
    apparent = correction.local.inverse(np.column_stack([xs, ys]))
    px, py = apply_affine(~ORIGIN, apparent[:, 0], apparent[:, 1])
    return np.stack([px.reshape(shape), py.reshape(shape)])


@pytest.mark.parametrize("method", ["nearest", "mode"])
def test_local_correction_keeps_class_values(local_run, class_raster, tmp_path, method):
    out = tmp_path / f"{method}.tif"
    apply_correction(local_run["correction"], class_raster, out, resampling=method)
    with rasterio.open(class_raster) as src, rasterio.open(out) as dst:
        classes, values = src.read(1), dst.read(1)
        assert dst.nodata == 255
    assert set(np.unique(values)) <= {*CLASSES, 255}
    assert np.mean(values != 255) > 0.97
    px, py = exact_source_positions(local_run["correction"], values.shape)
    inside = (px >= 0) & (py >= 0) & (px < values.shape[1]) & (py < values.shape[0]) & (values != 255)
    expected = classes[np.clip(py.astype(int), 0, values.shape[0] - 1), np.clip(px.astype(int), 0, values.shape[1] - 1)]
    agree = np.mean(values[inside] == expected[inside])
    if method == "nearest":  # the pixel the content's position falls in, but where it is within 0.01 px of an edge
        assert agree > 0.998
    else:  # the most common class under each output pixel's footprint: the same one away from boundaries
        assert agree > 0.97


def test_local_correction_next_to_nodata_is_as_good_as_elsewhere(local_run, bent_pair, texture, tmp_path):
    from scipy import ndimage

    with rasterio.open(bent_pair[0]) as src:
        moving = src.read(1).astype("float32")
    holes = np.zeros(moving.shape, bool)
    for row in range(100, 1000, 150):
        for col in range(100, 1000, 150):
            holes[row:row + 24, col:col + 24] = True
    holed = write_with_holes(tmp_path / "holed.tif", moving, holes)
    out, out_affine = tmp_path / "out.tif", tmp_path / "affine.tif"
    apply_correction(local_run["correction"], holed, out, resampling="lanczos")
    correction = read_correction(local_run["correction"])
    affine_only = dataclasses.replace(correction, local=None)
    apply_correction(affine_only, holed, out_affine, resampling="lanczos")
    with rasterio.open(out) as dst, rasterio.open(out_affine) as ref:
        values, invalid = dst.read(1, masked=True).filled(np.nan), ~dst.read_masks(1).astype(bool)
        invalid_affine = ~ref.read_masks(1).astype(bool)
    interior = np.zeros(values.shape, bool)
    interior[40:-40, 40:-40] = True
    # no extra erosion: the holes are as large as GDAL's nodata-aware warp of the affine part makes them
    assert invalid_affine[interior].sum() >= holes[interior].sum()
    assert invalid[interior].sum() <= invalid_affine[interior].sum() * 1.01
    error = np.abs(values - texture)
    distance = ndimage.distance_transform_cdt(~invalid, metric="chessboard")
    next_to_hole = (distance == 1) & interior
    elsewhere = (distance >= 8) & interior
    assert next_to_hole.sum() > 1000
    assert np.all(np.isfinite(values[next_to_hole]))
    assert np.median(error[next_to_hole]) <= 2 * np.median(error[elsewhere])
    assert np.percentile(error[next_to_hole], 95) <= 2 * np.percentile(error[elsewhere], 95)


def write_with_holes(path: Path, values: np.ndarray, holes: np.ndarray) -> Path:
    """``values`` (float32) with nodata -9999 where ``holes``."""
    synthetic.write_raster(path, np.where(holes, -9999, values), ORIGIN, dtype="float32", nodata=-9999)
    return path


def test_stack_footprint_margin_counts_the_local_part_in_output_pixels(local_run, bent_pair):
    """A 20 m input's local part of up to ``max_local_px`` input px is twice as many 10 m output px."""
    from coreg_plugin.io.raster_source import Grid, SourceInfo
    from coreg_plugin.workflows.stack import StackInput, local_margin

    field = local_run["result"].registration.local
    coarse = Grid(synthetic.SAMPLE_CRS, compose(ORIGIN, Affine.scale(2)), 512, 512)
    fine = Grid(synthetic.SAMPLE_CRS, ORIGIN, 1024, 1024)
    info = SourceInfo(bent_pair[0], "input", coarse, "float32", 1, None, None, None)
    item = StackInput(bent_pair[0], info, coarse.transform, local=field)
    assert field.max_local_px > 1.0
    assert local_margin(item, fine) == 1 + math.ceil(2 * field.max_local_px)
    assert local_margin(item, Grid(coarse.crs, compose(ORIGIN, Affine.scale(4)), 256, 256)) == \
        1 + math.ceil(field.max_local_px / 2)
