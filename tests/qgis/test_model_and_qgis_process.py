"""The algorithm from the graphical modeler (.model3) and from the ``qgis_process`` command line."""

from __future__ import annotations

from pathlib import Path

import processing
import pytest
from qgis.core import (
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
)

from model_builders import add_statistics_child, destination_name
from tools.qgis_env import enable_plugin, headless_env, qgis_process, run_json

ALGORITHM = "coreg:alignimagepair"
TOLERANCE_PX = 0.05


def build_model() -> QgsProcessingModelAlgorithm:
    """Two raster inputs -> coreg:alignimagepair -> native:rasterlayerstatistics on the aligned raster."""
    model = QgsProcessingModelAlgorithm("align_then_statistics", "coreg tests")
    for name, description in (("moving", "Moving image"), ("fixed", "Fixed image")):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, description), QgsProcessingModelParameter(name))

    align = QgsProcessingModelChildAlgorithm(ALGORITHM)
    align.setChildId("align")
    align.setDescription("Align Image Pair")
    align.addParameterSources("MOVING", [QgsProcessingModelChildParameterSource.fromModelParameter("moving")])
    align.addParameterSources("FIXED", [QgsProcessingModelChildParameterSource.fromModelParameter("fixed")])
    aligned = QgsProcessingModelOutput("aligned", "Aligned image")
    aligned.setChildId("align")
    aligned.setChildOutputName("OUTPUT")
    align.setModelOutputs({"aligned": aligned})
    model.addChildAlgorithm(align)

    add_statistics_child(model, "align")

    model.updateDestinationParameters()
    return model


@pytest.fixture(scope="module")
def model_file(coreg_provider, tmp_path_factory) -> Path:  # noqa: ANN001, ARG001
    path = tmp_path_factory.mktemp("model") / "align_then_statistics.model3"
    assert build_model().toFile(str(path))
    return path


def test_model_destination_parameters(model_file: Path) -> None:
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_file))
    names = {p.name() for p in model.parameterDefinitions()}
    outputs = {destination_name(model, "align", "aligned"), destination_name(model, "stats", "report")}
    assert {"moving", "fixed"} | outputs <= names


def test_model_runs_with_processing_run(model_file: Path, sample_pair, tmp_path: Path) -> None:  # noqa: ANN001
    folder, _ = sample_pair
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_file))
    aligned, report = tmp_path / "aligned.tif", tmp_path / "stats.html"
    aligned_name = destination_name(model, "align", "aligned")
    results = processing.run(model, {
        "moving": str(folder / "moving.tif"), "fixed": str(folder / "fixed.tif"),
        aligned_name: str(aligned), destination_name(model, "stats", "report"): str(report),
    })
    assert Path(results[aligned_name]) == aligned
    assert aligned.exists()
    assert report.exists()
    assert "Mean" in report.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def qgis_process_env(tmp_path_factory) -> dict:  # noqa: ANN001
    """A fresh QGIS profile with the plugin (linked as ``coreg``) enabled."""
    env = headless_env(tmp_path_factory.mktemp("qgis-process"))
    enable_plugin(env)
    return env


def test_model_runs_with_qgis_process(
    model_file: Path, qgis_process_env: dict, sample_pair, tmp_path: Path  # noqa: ANN001
) -> None:
    folder, _ = sample_pair
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_file))
    aligned, report = tmp_path / "aligned.tif", tmp_path / "stats.html"
    done = qgis_process([
        "run", str(model_file), "--",
        f"moving={folder / 'moving.tif'}", f"fixed={folder / 'fixed.tif'}",
        f"{destination_name(model, 'align', 'aligned')}={aligned}",
        f"{destination_name(model, 'stats', 'report')}={report}",
    ], qgis_process_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert aligned.exists()
    assert report.exists()


def test_qgis_process_json_run(qgis_process_env: dict, sample_pair, tmp_path: Path) -> None:  # noqa: ANN001
    folder, truth = sample_pair
    output = tmp_path / "aligned.tif"
    code, payload, log = run_json(ALGORITHM, {
        "MOVING": folder / "moving.tif", "FIXED": folder / "fixed.tif", "OUTPUT": output,
    }, qgis_process_env)
    assert code == 0, log
    results = payload["results"]
    assert Path(results["OUTPUT"]) == output
    assert output.exists()
    assert results["SHIFT_X_PX"] == pytest.approx(truth["shift_px"]["x"], abs=TOLERANCE_PX)
    assert results["SHIFT_Y_PX"] == pytest.approx(truth["shift_px"]["y"], abs=TOLERANCE_PX)
    assert results["MODEL_USED"] in ("translation", "affine")


def test_qgis_process_reports_bad_input(qgis_process_env: dict, sample_pair, tmp_path: Path) -> None:  # noqa: ANN001
    folder, _ = sample_pair
    output = tmp_path / "aligned.tif"
    code, _, log = run_json(ALGORITHM, {
        "MOVING": tmp_path / "no-such-image.tif", "FIXED": folder / "fixed.tif", "OUTPUT": output,
    }, qgis_process_env)
    assert code != 0
    assert "no-such-image.tif" in log
    assert not output.exists()
