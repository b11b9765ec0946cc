"""Corrections as files: estimate once on a synthetic pair with a known shift, apply everywhere.

The moving image misregisters real Sentinel-2 texture by a known translation; Align saves the
correction, and the tests apply it to other rasters of the scene (2 x coarser, a class mask), by
georeference only, and through the exported GCPs, measuring what is left against the truth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import reproject
from skimage.transform import downscale_local_mean

from conftest import ORIGIN, affine_correction, read_masked, truth_image
from coreg_plugin import InputError, align_image_pair, apply_correction
from coreg_plugin.cli import main
from coreg_plugin.common.affines import compose
from coreg_plugin.correction.gcp import read_points
from coreg_plugin.testing import evaluate, synthetic

SHIFT = (2.63, -1.37)
COLOURS = {1: (230, 25, 75, 255), 2: (60, 180, 75, 255), 3: (255, 225, 25, 255), 4: (0, 130, 200, 255)}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """Fixed and moving (10 m), a 2x coarser moving (20 m), truth arrays, and the saved correction."""
    folder = tmp_path_factory.mktemp("scene")
    truth = truth_image("s2")
    h = affine_correction(0.0, 1.0, SHIFT, truth.shape[0] / 2)
    moving = synthetic.misregister(truth, h)
    paths = {"folder": folder, "truth": truth, "moving_array": moving}
    for name, values, transform in (("fixed", truth, ORIGIN), ("moving", moving, ORIGIN),
                                    ("coarse", downscale_local_mean(moving, (2, 2)), compose(ORIGIN, Affine.scale(2)))):
        paths[name] = folder / f"{name}.tif"
        synthetic.write_raster(paths[name], values, transform)
    paths["correction"] = folder / "correction.json"
    paths["points"] = folder / "tie_points.points"
    paths["align"] = align_image_pair(paths["moving"], paths["fixed"], folder / "aligned.tif",
                                      correction_file=paths["correction"], gcp_file=paths["points"])
    return paths


def classes(values: np.ndarray) -> np.ndarray:
    """Four classes (1 to 4) by brightness quartile."""
    return (np.digitize(values, np.quantile(values, [0.25, 0.5, 0.75])) + 1).astype("uint8")


def test_correction_file_is_documented_json(scene):
    document = json.loads(Path(scene["correction"]).read_text())
    assert document["schema"] == "coreg-correction"
    assert document["version"] == 1
    assert document["model"]["type"] == scene["align"].summary["model"]
    assert "UTM zone 33N" in document["crs"]["wkt"]
    assert len(document["tie_points"]) == scene["align"].summary["tie_points"]["used"]
    assert document["producer"]["name"] == "coreg"
    umask = os.umask(0)
    os.umask(umask)
    for path in (scene["correction"], scene["points"]):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    # the matrix moves an apparent map position to the true one: content shown at the moving image's
    # centre truly lies SHIFT pixels (10 m each, rows pointing south) away
    (a, b, c), (d, e, f) = document["model"]["matrix"]
    x, y = 400000 + 3840, 5800000 - 3840
    np.testing.assert_allclose([a * x + b * y + c - x, d * x + e * y + f - y],
                               [SHIFT[0] * 10, -SHIFT[1] * 10], atol=0.05 * 10)


def test_applied_to_a_coarser_raster(scene, tmp_path):
    """The 10 m correction aligns a 20 m version of the moving raster to <= 0.05 of its pixels."""
    out = tmp_path / "coarse_corrected.tif"
    summary = apply_correction(scene["correction"], scene["coarse"], out)
    with rasterio.open(out) as ds, rasterio.open(scene["coarse"]) as src:
        assert ds.transform == src.transform
        assert ds.shape == src.shape
        assert ds.dtypes == src.dtypes
    np.testing.assert_allclose([summary["shift_px"]["x"], summary["shift_px"]["y"]], np.array(SHIFT) / 2, atol=0.05)
    coarse_truth = downscale_local_mean(scene["truth"], (2, 2))
    shifts = evaluate.residual_shifts(read_masked(out), coarse_truth, window=64, step=32)
    assert len(shifts) >= 40
    before = evaluate.residual_shifts(read_masked(scene["coarse"]), downscale_local_mean(scene["truth"], (2, 2)),
                                      window=64, step=32)
    assert evaluate.rmse(before) > 1.0
    assert evaluate.rmse(shifts) <= 0.05


def write_mask(path: Path, values: np.ndarray, transform: Affine = ORIGIN) -> None:
    with rasterio.open(path, "w", driver="GTiff", dtype="uint8", count=1, crs=synthetic.SAMPLE_CRS,
                       transform=transform, width=values.shape[1], height=values.shape[0], nodata=0) as dst:
        dst.write(values, 1)
        dst.write_colormap(1, COLOURS)
        dst.set_band_description(1, "land cover")


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_class_mask_keeps_values_and_colour_table(scene, tmp_path, resampling):
    mask, out = tmp_path / "mask.tif", tmp_path / "mask_corrected.tif"
    write_mask(mask, classes(scene["moving_array"]))
    apply_correction(scene["correction"], mask, out, resampling=resampling)
    truth = classes(scene["truth"])
    with rasterio.open(out) as ds:
        values = ds.read(1)
        assert ds.dtypes[0] == "uint8"
        assert ds.nodata == 0
        assert ds.descriptions[0] == "land cover"
        assert {k: ds.colormap(1)[k] for k in COLOURS} == COLOURS
    assert set(np.unique(values)) <= {0, 1, 2, 3, 4}
    inner = (slice(16, -16), slice(16, -16))
    agreement = np.mean(values[inner] == truth[inner])
    agreement_before = np.mean(classes(scene["moving_array"])[inner] == truth[inner])
    print(f"class agreement with the truth: {agreement:.3f} corrected, {agreement_before:.3f} before")
    assert agreement > 0.9
    assert agreement > agreement_before + 0.1


def test_no_resample_keeps_pixels_and_moves_the_georeference(scene, tmp_path):
    """Align --no-resample: identical pixels, geotransform within 0.05 px of the truth."""
    out = tmp_path / "georeferenced.tif"
    result = align_image_pair(scene["moving"], scene["fixed"], out, no_resample=True,
                              correction_file=tmp_path / "translation.json")
    assert result.summary["model"] == "translation"
    with rasterio.open(out) as ds, rasterio.open(scene["moving"]) as src:
        assert np.array_equal(ds.read(), src.read())
        assert ds.dtypes == src.dtypes
        assert ds.nodata == src.nodata
        origin = ~src.transform * (ds.transform.c, ds.transform.f)
        assert ds.transform.a == src.transform.a
        assert ds.transform.e == src.transform.e
    np.testing.assert_allclose(origin, SHIFT, atol=0.05)
    coarse_out = tmp_path / "coarse_georeferenced.tif"
    apply_correction(tmp_path / "translation.json", scene["coarse"], coarse_out, no_resample=True)
    with rasterio.open(coarse_out) as ds, rasterio.open(scene["coarse"]) as src:
        assert np.array_equal(ds.read(), src.read())
        origin = ~src.transform * (ds.transform.c, ds.transform.f)
    np.testing.assert_allclose(origin, np.array(SHIFT) / 2, atol=0.05)


def test_gcp_round_trip_with_gdal_thin_plate_spline(scene):
    """GDAL's warp with the exported GCPs (thin plate spline) brings the moving raster onto the truth."""
    gcps, crs = read_points(scene["points"])
    assert crs == synthetic.SAMPLE_CRS
    assert len(gcps) == scene["align"].summary["tie_points"]["used"] >= 9
    moving = scene["moving_array"].astype("float32")
    out = np.full_like(moving, np.nan)
    reproject(moving, out, gcps=gcps, src_crs=crs, dst_transform=ORIGIN, dst_crs=crs, src_nodata=np.nan,
              dst_nodata=np.nan, resampling=rasterio.enums.Resampling.lanczos, SRC_METHOD="GCP_TPS")
    shifts = evaluate.residual_shifts(out, scene["truth"], window=128, step=64)
    assert len(shifts) >= 40
    assert evaluate.rmse(shifts) <= 0.05


def listing(folder: Path) -> set[str]:
    return set(os.listdir(folder))


@pytest.mark.parametrize(("content", "expected"), [
    ('{"schema": "coreg-correction", "version": 1, "model": {"type": "tran', "damaged: not valid JSON"),
    ('{"schema": "coreg-correction", "version": 7}', "schema version 7"),
    ('{"type": "FeatureCollection", "features": []}', "is not a Coreg correction"),
    ('[1, 2, 3]', "is not a Coreg correction"),
    ('{"schema": "coreg-correction", "version": 1, "model": {"type": "affine"}}', "is damaged"),
])
def test_bad_correction_files(scene, tmp_path, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    before = listing(tmp_path)
    with pytest.raises(InputError, match=expected) as error:
        apply_correction(bad, scene["coarse"], tmp_path / "out.tif")
    assert str(bad) in str(error.value)
    assert listing(tmp_path) == before
    assert main(["apply", "--correction", str(bad), "--input", str(scene["coarse"]),
                 "--output", str(tmp_path / "out.tif")]) == 2
    assert listing(tmp_path) == before


def test_missing_correction_file(scene, tmp_path):
    with pytest.raises(InputError, match="correction file .*nowhere.json' does not exist"):
        apply_correction(tmp_path / "nowhere.json", scene["coarse"], tmp_path / "out.tif")
    assert listing(tmp_path) == set()


def test_input_outside_the_domain(scene, tmp_path):
    far = tmp_path / "far.tif"
    synthetic.write_raster(far, scene["truth"], compose(Affine.translation(100000, 0), ORIGIN))
    before = listing(tmp_path)
    with pytest.raises(InputError, match="far.tif' lies wholly outside the domain of correction file"):
        apply_correction(scene["correction"], far, tmp_path / "out.tif")
    assert listing(tmp_path) == before


def test_input_partly_outside_the_domain_warns_with_the_fraction(scene, tmp_path, caplog):
    half = tmp_path / "half.tif"
    synthetic.write_raster(half, scene["truth"], compose(Affine.translation(3840, 0), ORIGIN))
    summary = apply_correction(scene["correction"], half, tmp_path / "out.tif")
    assert 0.45 < summary["domain_coverage"] < 0.55
    assert f"{summary['domain_coverage']:.1%} of it is covered" in caplog.text
    assert (tmp_path / "out.tif").exists()


def test_no_resample_with_an_affine_correction_is_refused(scene, tmp_path):
    document = json.loads(Path(scene["correction"]).read_text())
    document["model"] = {"type": "affine", "matrix": [[1.001, 0.0, -400.0], [0.0, 1.0, 0.0]]}
    affine = tmp_path / "affine.json"
    affine.write_text(json.dumps(document))
    before = listing(tmp_path)
    with pytest.raises(InputError, match=r"affine.json' is affine .*translation \(--model translation\)"):
        apply_correction(affine, scene["coarse"], tmp_path / "out.tif", no_resample=True)
    assert main(["apply", "--correction", str(affine), "--input", str(scene["coarse"]),
                 "--output", str(tmp_path / "out.tif"), "--no-resample"]) == 2
    with pytest.raises(InputError, match="model 'affine' cannot be applied as a georeference-only"):
        align_image_pair(scene["moving"], scene["fixed"], tmp_path / "out.tif", model="affine", no_resample=True)
    document["model"] = {"type": "translation", "matrix": [[1.0, 0.0, 26.3], [0.0, 1.0, 13.7]]}
    translation = tmp_path / "translation.json"
    translation.write_text(json.dumps(document))
    with pytest.raises(InputError, match="keeps its nodata"):
        apply_correction(translation, scene["coarse"], tmp_path / "out.tif", no_resample=True, output_nodata=5)
    with pytest.raises(InputError, match="cannot write onto the fixed grid"):
        align_image_pair(scene["moving"], scene["fixed"], tmp_path / "out.tif", no_resample=True,
                         output_on_moving_grid=False)
    assert listing(tmp_path) == before | {"translation.json"}


def test_cli_apply(scene, tmp_path, capsys):
    out = tmp_path / "out.tif"
    assert main(["apply", "--correction", str(scene["correction"]), "--input", str(scene["coarse"]),
                 "--output", str(out), "--resampling", "cubic_spline"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output_image"] == str(out)
    assert summary["resampling"] == "cubic_spline"
    assert out.exists()


def test_applied_to_a_raster_in_another_crs(scene, tmp_path):
    """The UTM 33N correction applied to the 20 m raster reprojected to UTM 32N aligns it to the truth
    reprojected the same way (both resampled by the same kernel onto the same grid)."""
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform

    target = CRS.from_epsg(32632)
    with rasterio.open(scene["coarse"]) as src:
        transform, width, height = calculate_default_transform(src.crs, target, src.width, src.height, *src.bounds)
        source_transform = src.transform

    def reprojected(values: np.ndarray, name: str) -> Path:
        out = np.full((height, width), np.nan, "float32")
        reproject(values.astype("float32"), out, src_transform=source_transform, src_crs=synthetic.SAMPLE_CRS,
                  dst_transform=transform, dst_crs=target, dst_nodata=np.nan, resampling=Resampling.lanczos)
        path = tmp_path / name
        synthetic.write_raster(path, out, transform, crs=target, dtype="float32", nodata=float("nan"))
        return path

    moving = reprojected(downscale_local_mean(scene["moving_array"], (2, 2)), "moving_32n.tif")
    truth = read_masked(reprojected(downscale_local_mean(scene["truth"], (2, 2)), "truth_32n.tif"))
    out = tmp_path / "corrected_32n.tif"
    summary = apply_correction(scene["correction"], moving, out)
    assert summary["fit_deviation_px"] < 0.001
    with rasterio.open(out) as ds:
        assert ds.crs == target
        assert ds.transform == transform
    shifts = evaluate.residual_shifts(read_masked(out), truth, window=64, step=32)
    before = evaluate.residual_shifts(read_masked(moving), truth, window=64, step=32)
    print(f"another CRS: residual {evaluate.rmse(shifts):.4f} px, before {evaluate.rmse(before):.3f} px, "
          f"fit deviation {summary['fit_deviation_px']} px")
    assert len(shifts) >= 30
    assert evaluate.rmse(before) > 1.0
    assert evaluate.rmse(shifts) <= 0.05


def test_category_names_are_kept(scene, tmp_path):
    """Category names (stored by GDAL in the GeoTIFF's .aux.xml) reach the corrected mask."""
    mask, out = tmp_path / "mask.tif", tmp_path / "mask_corrected.tif"
    write_mask(mask, classes(scene["moving_array"]))
    names = ["", "water", "forest", "crops", "urban"]
    categories = "".join(f"<Category>{n}</Category>" for n in names)
    Path(str(mask) + ".aux.xml").write_text(
        f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{categories}</CategoryNames></PAMRasterBand></PAMDataset>')
    from coreg_plugin.apply.correct import band_pam_elements

    assert [c.text or "" for c in band_pam_elements(str(mask))[1][0]] == names
    for no_resample, correction in ((False, scene["correction"]), (True, None)):
        if no_resample:
            correction = tmp_path / "translation.json"
            document = json.loads(Path(scene["correction"]).read_text())
            document["model"] = {"type": "translation", "matrix": [[1.0, 0.0, 26.3], [0.0, 1.0, 13.7]]}
            correction.write_text(json.dumps(document))
        apply_correction(correction, mask, out, resampling="nearest", no_resample=no_resample)
        elements = band_pam_elements(str(out))
        assert [c.text or "" for c in elements[1][0]] == names
        with rasterio.open(out) as ds:
            assert {k: ds.colormap(1)[k] for k in COLOURS} == COLOURS
        out.unlink()
        Path(str(out) + ".aux.xml").unlink()


def test_no_resample_keeps_a_dataset_mask(scene, tmp_path):
    """An input whose no-data is an internal mask (no nodata value) keeps that mask, bit for bit."""
    masked, out = tmp_path / "masked.tif", tmp_path / "masked_georeferenced.tif"
    values = scene["moving_array"].round().astype("uint16")
    valid = np.full(values.shape, 255, "uint8")
    valid[:100, :300] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            masked, "w", driver="GTiff", dtype="uint16", count=1, crs=synthetic.SAMPLE_CRS, transform=ORIGIN,
            width=values.shape[1], height=values.shape[0]) as dst:
        dst.write(values, 1)
        dst.write_mask(valid)
    document = json.loads(Path(scene["correction"]).read_text())
    document["model"] = {"type": "translation", "matrix": [[1.0, 0.0, 26.3], [0.0, 1.0, 13.7]]}
    translation = tmp_path / "translation.json"
    translation.write_text(json.dumps(document))
    apply_correction(translation, masked, out, no_resample=True)
    with rasterio.open(out) as ds:
        assert ds.nodata is None
        assert np.array_equal(ds.read(1), values)
        assert np.array_equal(ds.dataset_mask(), valid)
        assert ds.transform == compose(Affine.translation(26.3, 13.7), ORIGIN)
    assert listing(tmp_path) == {"masked.tif", "translation.json", "masked_georeferenced.tif"}


def test_already_aligned_pair_saves_a_translation_by_nothing(scene, tmp_path):
    """A pair found already aligned (verdict) saves a correction that applies, and moves nothing."""
    from coreg_plugin.correction.file import read_correction

    correction = tmp_path / "nothing.json"
    result = align_image_pair(scene["fixed"], scene["fixed"], tmp_path / "out.tif", correction_file=correction)
    assert result.summary["verdict"] == "already_aligned"
    saved = read_correction(correction)
    assert saved.model == "translation"
    assert np.array_equal(saved.matrix, np.eye(3))
    out = tmp_path / "coarse.tif"
    apply_correction(correction, scene["coarse"], out, no_resample=True)
    with rasterio.open(out) as ds, rasterio.open(scene["coarse"]) as src:
        assert ds.transform == src.transform
        assert np.array_equal(ds.read(), src.read())
