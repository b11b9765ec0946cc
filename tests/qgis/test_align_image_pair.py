"""Run ``coreg:alignimagepair`` through ``processing.run``, the surface the toolbox and modeler use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from summary_feedback import SummaryFeedback

ALGORITHM = "coreg:alignimagepair"
SYNTHETIC_TOLERANCE_PX = 0.05
REAL_TOLERANCE_PX = 0.15
REAL_SHIFT_PX = {"x": -0.71, "y": 1.80}  # tgt_S2A_20160529 relative to ref_S2A_20160608, T33UUU


def grid(path: Path) -> tuple:
    with rasterio.open(path) as dataset:
        return dataset.crs, dataset.transform, dataset.width, dataset.height


@pytest.fixture(scope="module")
def default_run(coreg_provider, sample_pair, tmp_path_factory):  # noqa: ANN001, ANN201, ARG001
    folder, truth = sample_pair
    output = tmp_path_factory.mktemp("default-run") / "aligned.tif"
    results = processing.run(
        ALGORITHM, {"MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "OUTPUT": str(output)}
    )
    return results, output, truth


def test_synthetic_pair_shift_matches_truth(default_run) -> None:  # noqa: ANN001
    results, output, truth = default_run
    assert Path(results["OUTPUT"]) == output
    assert output.exists()
    assert results["SHIFT_X_PX"] == pytest.approx(truth["shift_px"]["x"], abs=SYNTHETIC_TOLERANCE_PX)
    assert results["SHIFT_Y_PX"] == pytest.approx(truth["shift_px"]["y"], abs=SYNTHETIC_TOLERANCE_PX)
    with rasterio.open(truth.get("moving_image", output)) as moving:
        pixel_size = max(abs(moving.res[0]), abs(moving.res[1]))
    assert results["SHIFT_X_M"] == pytest.approx(truth["shift_m"]["x"], abs=SYNTHETIC_TOLERANCE_PX * pixel_size)
    assert results["SHIFT_Y_M"] == pytest.approx(truth["shift_m"]["y"], abs=SYNTHETIC_TOLERANCE_PX * pixel_size)


def test_every_declared_output_is_returned(default_run, coreg_provider) -> None:  # noqa: ANN001, ARG001
    from qgis.core import QgsApplication

    results, _, _ = default_run
    alg = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert {o.name() for o in alg.outputDefinitions()} <= set(results)
    for name in ("SHIFT_X_PX", "SHIFT_Y_PX", "SHIFT_X_M", "SHIFT_Y_M", "RMSE_PX", "TIE_POINTS_USED", "QUALITY"):
        assert np.isfinite(results[name]), name
    assert results["TIE_POINTS_USED"] > 0
    assert 0 <= results["QUALITY"] <= 1
    assert results["MODEL_USED"] in ("translation", "affine")
    assert results["VERDICT"] == "corrected"
    assert 0 < results["UNCERTAINTY_PX"] < SYNTHETIC_TOLERANCE_PX


def test_standard_accuracy_figures_are_the_summary_s(coreg_provider, sample_pair, tmp_path) -> None:  # noqa: ANN001, ARG001
    """RMSE_FIT_PX, RMSE_VERIFY_PX, CE90_PX, CE90_M and CEOS_ARD are the numbers of the summary's
    ``accuracy``; on the clean synthetic pair (no scatter between tie points) far inside CEOS-ARD."""
    folder, _ = sample_pair
    feedback = SummaryFeedback("accuracy")
    results = processing.run(ALGORITHM, {"MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"),
                                         "OUTPUT": str(tmp_path / "aligned.tif")}, feedback=feedback)
    accuracy = feedback.summary()["accuracy"]
    assert accuracy["model"] == results["MODEL_USED"]
    for name, key in (("RMSE_FIT_PX", "rmse_fit_px"), ("RMSE_VERIFY_PX", "rmse_verify_px"), ("CE90_PX", "ce90_px"),
                      ("CE90_M", "ce90_m")):
        assert isinstance(results[name], float), name
        assert results[name] == accuracy[key], name
    assert results["CEOS_ARD"] is True
    assert accuracy["ceos_ard"] is True
    assert 0 < results["RMSE_FIT_PX"] <= results["RMSE_VERIFY_PX"] < SYNTHETIC_TOLERANCE_PX
    assert results["RMSE_VERIFY_PX"] < results["CE90_PX"] < 3 * SYNTHETIC_TOLERANCE_PX
    assert results["CE90_M"] == pytest.approx(10 * results["CE90_PX"], abs=1e-3)  # 10 m pixels


def test_already_aligned_pair_gives_the_moving_image_unchanged(  # noqa: ANN201
    coreg_provider, sample_pair, tmp_path,  # noqa: ANN001, ARG001
):
    """Two copies of one image: VERDICT already_aligned, the output is the moving raster bit for bit."""
    import shutil

    folder, _ = sample_pair
    moving = shutil.copy(folder / "fixed.tif", tmp_path / "moving.tif")
    output = tmp_path / "aligned.tif"
    parameters = {"MOVING": str(moving), "FIXED": str(folder / "fixed.tif"), "OUTPUT": str(output)}
    results = processing.run(ALGORITHM, parameters)
    assert results["VERDICT"] == "already_aligned"
    assert results["MODEL_USED"] == "identity"
    assert (results["SHIFT_X_PX"], results["SHIFT_Y_PX"]) == (0.0, 0.0)
    assert 0 < results["UNCERTAINTY_PX"] < SYNTHETIC_TOLERANCE_PX
    with rasterio.open(output) as out, rasterio.open(moving) as source:
        assert (out.crs, out.transform, out.nodata, out.dtypes) == (source.crs, source.transform, source.nodata,
                                                                    source.dtypes)
        assert np.array_equal(out.read(), source.read())


def test_default_output_is_on_the_moving_grid(default_run, sample_pair) -> None:  # noqa: ANN001
    _, output, _ = default_run
    folder, _ = sample_pair
    crs, transform, width, height = grid(output)
    m_crs, m_transform, m_width, m_height = grid(folder / "moving.tif")
    assert crs == m_crs
    assert (width, height) == (m_width, m_height)
    assert transform.almost_equals(m_transform)


def test_output_on_the_fixed_grid(coreg_provider, sample_pair, tmp_path) -> None:  # noqa: ANN001, ARG001
    folder, truth = sample_pair
    output = tmp_path / "on-fixed.tif"
    results = processing.run(ALGORITHM, {
        "MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"),
        "OUTPUT_GRID": 1, "OUTPUT": str(output),
    })
    assert results["SHIFT_X_PX"] == pytest.approx(truth["shift_px"]["x"], abs=SYNTHETIC_TOLERANCE_PX)
    with rasterio.open(output) as aligned, rasterio.open(folder / "fixed.tif") as fixed:
        assert aligned.crs == fixed.crs
        assert aligned.res == pytest.approx(fixed.res)


def test_real_sentinel2_pair(coreg_provider, real_pair, tmp_path) -> None:  # noqa: ANN001, ARG001
    moving, fixed = real_pair
    output = tmp_path / "s2-aligned.tif"
    results = processing.run(ALGORITHM, {"MOVING": str(moving), "FIXED": str(fixed), "OUTPUT": str(output)})
    assert output.exists()
    assert results["SHIFT_X_PX"] == pytest.approx(REAL_SHIFT_PX["x"], abs=REAL_TOLERANCE_PX)
    assert results["SHIFT_Y_PX"] == pytest.approx(REAL_SHIFT_PX["y"], abs=REAL_TOLERANCE_PX)
    assert grid(output)[1].almost_equals(grid(moving)[1])


def constant_copy(source: Path, target: Path, value: float = 42) -> Path:
    with rasterio.open(source) as dataset:
        profile = dataset.profile
        data = np.full((dataset.count, dataset.height, dataset.width), value, dtype=dataset.dtypes[0])
    with rasterio.open(target, "w", **profile) as dataset:
        dataset.write(data)
    return target


@pytest.mark.parametrize("case", ["missing file", "constant raster", "band out of range"])
def test_bad_input_fails_naming_the_file_and_writes_nothing(
    case: str, coreg_provider, sample_pair, tmp_path  # noqa: ANN001, ARG001
) -> None:
    folder, _ = sample_pair
    moving, band = folder / "moving.tif", 1
    if case == "missing file":
        moving = tmp_path / "no-such-image.tif"
    elif case == "constant raster":
        moving = constant_copy(folder / "moving.tif", tmp_path / "constant.tif")
    else:
        band = 7
    output = tmp_path / "aligned.tif"
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(ALGORITHM, {
            "MOVING": str(moving), "FIXED": str(folder / "fixed.tif"), "MOVING_BAND": band, "OUTPUT": str(output),
        })
    assert moving.name in str(raised.value)
    assert not output.exists()


def test_cancelled_run_fails_and_writes_nothing(coreg_provider, sample_pair, tmp_path) -> None:  # noqa: ANN001, ARG001
    folder, _ = sample_pair
    output = tmp_path / "aligned.tif"
    feedback = QgsProcessingFeedback()
    seen = []

    def cancel_once_registering(percent: float) -> None:
        seen.append(percent)
        if percent > 5:
            feedback.cancel()

    feedback.progressChanged.connect(cancel_once_registering)
    with pytest.raises(QgsProcessingException, match="cancelled by the user; nothing was written"):
        processing.run(
            ALGORITHM,
            {"MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "OUTPUT": str(output)},
            feedback=feedback,
        )
    assert 5 < max(seen) < 50  # stopped during the registration, not after it
    assert list(tmp_path.iterdir()) == []
