"""Apply Correction in QGIS: through Processing, qgis_process and the shipped example model.

The scene: the synthetic pair with a known shift (conftest ``sample_pair``; fixed.tif is the
truth), a 4-band moving raster whose band 4 is matched, a 2 x coarser (20 m) version of the moving
raster and a uint8 class mask with a colour table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from affine import Affine
from qgis.core import QgsProcessingException
from skimage.transform import downscale_local_mean

from coreg_plugin.testing import evaluate
from tools.qgis_env import REPO_ROOT, enable_plugin, headless_env, qgis_process, run_json

MODEL = REPO_ROOT / "models" / "align_and_apply.model3"
COLOURS = {1: (230, 25, 75, 255), 2: (60, 180, 75, 255), 3: (255, 225, 25, 255), 4: (0, 130, 200, 255)}


def classes(values: np.ndarray) -> np.ndarray:
    """Four classes (1 to 4) by brightness quartile."""
    return (np.digitize(values, np.quantile(values, [0.25, 0.5, 0.75])) + 1).astype("uint8")


@pytest.fixture(scope="module")
def scene(sample_pair, tmp_path_factory) -> dict:  # noqa: ANN001
    folder, truth = sample_pair
    out = tmp_path_factory.mktemp("scene")
    with rasterio.open(folder / "moving.tif") as src:
        moving, profile = src.read(1).astype(float), src.profile
    with rasterio.open(folder / "fixed.tif") as src:
        fixed = src.read(1).astype(float)
    paths = {"moving": folder / "moving.tif", "fixed": folder / "fixed.tif", "truth": truth, "fixed_array": fixed}
    paths["bands"] = out / "moving_4_bands.tif"
    with rasterio.open(paths["bands"], "w", **{**profile, "count": 4}) as dst:
        dst.write(np.stack([moving * 0.5, moving * 0.7, moving * 0.9, moving]).round().astype("uint16"))
    paths["coarse"] = out / "moving_20m.tif"
    coarse_profile = {**profile, "width": moving.shape[1] // 2, "height": moving.shape[0] // 2,
                      "transform": profile["transform"] * Affine.scale(2)}
    with rasterio.open(paths["coarse"], "w", **coarse_profile) as dst:
        dst.write(downscale_local_mean(moving, (2, 2)).round().astype("uint16"), 1)
    paths["mask"] = out / "classes.tif"
    with rasterio.open(paths["mask"], "w", **{**profile, "dtype": "uint8", "nodata": 0}) as dst:
        dst.write(classes(moving), 1)
        dst.write_colormap(1, COLOURS)
    return paths


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:  # noqa: ANN001
    environment = headless_env(tmp_path_factory.mktemp("qgis-apply"))
    enable_plugin(environment)
    return environment


def coarse_residual(path: Path, scene: dict) -> float:
    with rasterio.open(path) as ds:
        values = ds.read(1, masked=True).astype(float).filled(np.nan)
    shifts = evaluate.residual_shifts(values, downscale_local_mean(scene["fixed_array"], (2, 2)), window=64, step=32)
    assert len(shifts) >= 40
    return evaluate.rmse(shifts)


def test_align_then_apply_through_qgis_process(scene: dict, env: dict, tmp_path: Path) -> None:
    correction, points = tmp_path / "correction.json", tmp_path / "tie_points.points"
    code, payload, log = run_json("coreg:alignimagepair", {
        "MOVING": scene["moving"], "FIXED": scene["fixed"], "OUTPUT": tmp_path / "aligned.tif",
        "OUTPUT_CORRECTION": correction, "OUTPUT_GCP": points,
    }, env)
    assert code == 0, log
    assert Path(payload["results"]["OUTPUT_CORRECTION"]) == correction
    assert json.loads(correction.read_text())["schema"] == "coreg-correction"
    assert points.read_text().splitlines()[1] == "mapX,mapY,pixelX,pixelY,enable,dX,dY,residual"
    output = tmp_path / "coarse_corrected.tif"
    code, payload, log = run_json("coreg:applycorrection", {
        "CORRECTION": correction, "INPUT": scene["coarse"], "OUTPUT": output,
    }, env)
    assert code == 0, log
    results = payload["results"]
    assert results["SHIFT_X_PX"] == pytest.approx(scene["truth"]["shift_px"]["x"] / 2, abs=0.05)
    assert results["SHIFT_Y_PX"] == pytest.approx(scene["truth"]["shift_px"]["y"] / 2, abs=0.05)
    assert 0.95 < results["DOMAIN_COVERAGE"] <= 1.0
    with rasterio.open(output) as ds, rasterio.open(scene["coarse"]) as src:
        assert ds.transform == src.transform
        assert ds.shape == src.shape
    assert coarse_residual(output, scene) <= 0.05


def test_damaged_correction_file_through_qgis_process(scene: dict, env: dict, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"schema": "coreg-correction", "version": 1, "mod')
    output = tmp_path / "out.tif"
    code, _, log = run_json("coreg:applycorrection", {"CORRECTION": damaged, "INPUT": scene["coarse"],
                                                      "OUTPUT": output}, env)
    assert code != 0
    assert "damaged.json' is damaged: not valid JSON" in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.json"]


def test_georeference_only_with_processing_run(scene: dict, coreg_provider, tmp_path: Path) -> None:  # noqa: ANN001, ARG001
    output, correction = tmp_path / "georeferenced.tif", tmp_path / "translation.json"
    results = processing.run("coreg:alignimagepair", {
        "MOVING": str(scene["moving"]), "FIXED": str(scene["fixed"]), "GEOREFERENCE_ONLY": True,
        "OUTPUT": str(output), "OUTPUT_CORRECTION": str(correction),
    })
    assert results["MODEL_USED"] == "translation"
    with rasterio.open(output) as ds, rasterio.open(scene["moving"]) as src:
        assert np.array_equal(ds.read(), src.read())
        origin = ~src.transform * (ds.transform.c, ds.transform.f)
    np.testing.assert_allclose(origin, [scene["truth"]["shift_px"]["x"], scene["truth"]["shift_px"]["y"]], atol=0.05)
    document = json.loads(correction.read_text())
    document["model"] = {"type": "affine", "matrix": [[1.001, 0.0, -400.0], [0.0, 1.0, 0.0]]}
    affine = tmp_path / "affine.json"
    affine.write_text(json.dumps(document))
    with pytest.raises(QgsProcessingException, match="is affine .*--model translation"):
        processing.run("coreg:applycorrection", {"CORRECTION": str(affine), "INPUT": str(scene["coarse"]),
                                                 "GEOREFERENCE_ONLY": True, "OUTPUT": str(tmp_path / "no.tif")})
    assert not (tmp_path / "no.tif").exists()


def test_example_model_aligns_band_4_and_applies_to_the_scene(scene: dict, env: dict, tmp_path: Path) -> None:
    aligned, other, mask = tmp_path / "aligned.tif", tmp_path / "other.tif", tmp_path / "mask.tif"
    done = qgis_process(["run", str(MODEL), "--", f"moving={scene['bands']}", "moving_band=4",
                         f"fixed={scene['fixed']}", f"other={scene['coarse']}", f"mask={scene['mask']}",
                         f"align:aligned={aligned}", f"apply_other:other_corrected={other}",
                         f"apply_mask:mask_corrected={mask}"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    with rasterio.open(aligned) as ds:
        assert ds.count == 4
    assert coarse_residual(other, scene) <= 0.05
    with rasterio.open(mask) as ds:
        values = ds.read(1)
        assert ds.dtypes[0] == "uint8"
        assert {k: ds.colormap(1)[k] for k in COLOURS} == COLOURS
    assert set(np.unique(values)) <= {0, 1, 2, 3, 4}
    inner = (slice(16, -16), slice(16, -16))
    truth = classes(scene["fixed_array"])[inner]
    with rasterio.open(scene["mask"]) as ds:
        before = np.mean(ds.read(1)[inner] == truth)
    after = np.mean(values[inner] == truth)
    print(f"class agreement with the truth: {after:.3f} corrected, {before:.3f} before")
    assert after > before + 0.3
