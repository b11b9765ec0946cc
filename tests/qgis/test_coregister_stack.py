"""``coreg:coregisterstack``: parameters -> core kwargs, processing.run, the modeler and qgis_process."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
    QgsProject,
)
from qgis.PyQt import sip
from rasterio.transform import from_origin

from coreg_plugin import MERGE_METHOD_NAMES, MODELS, MODES, RESAMPLING_METHODS
from model_builders import add_statistics_child, destination_name
from processing_provider.qgis_enums import FLAG_ADVANCED, FLAG_OPTIONAL, SOURCE_RASTER
from summary_feedback import SummaryFeedback
from tools.qgis_env import enable_plugin, headless_env, qgis_process, run_json

ALGORITHM = "coreg:coregisterstack"
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LANDSAT = DATA_DIR / "landsat-rgb"
REFERENCE = LANDSAT / "RGB.byte.tif"
INPUTS = [LANDSAT / f"rgb{i}.tif" for i in range(1, 5)]
NEAREST = RESAMPLING_METHODS.index("nearest")
CHOICES = {"modes": MODES, "merge_methods": MERGE_METHOD_NAMES, "resampling_methods": RESAMPLING_METHODS,
           "models": MODELS}
MERGE, STACK = MODES.index("merge"), MODES.index("stack")


@pytest.fixture(scope="module", autouse=True)
def landsat_data() -> None:
    missing = [p for p in [REFERENCE, *INPUTS] if not p.exists()]
    if missing:
        pytest.fail(f"test data missing: {missing} (shared/data must sit beside the repository)")


@pytest.fixture
def module(coreg_provider):  # noqa: ANN001, ANN201, ARG001
    return importlib.import_module("coreg.processing_provider.coregister_stack")


@pytest.fixture
def algorithm(coreg_provider):  # noqa: ANN001, ANN201, ARG001
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    assert alg is not None, f"{ALGORITHM} is not registered"
    return alg


def grid(path: Path) -> tuple:
    with rasterio.open(path) as dataset:
        return dataset.crs, dataset.transform, dataset.width, dataset.height


def far_away_raster(path: Path) -> Path:
    """A small 3-band GeoTIFF in the reference's CRS, thousands of kilometres from it."""
    with rasterio.open(REFERENCE) as reference:
        crs = reference.crs
    data = np.full((3, 20, 20), 7, dtype="uint8")
    with rasterio.open(
        path, "w", driver="GTiff", width=20, height=20, count=3, dtype="uint8", crs=crs,
        transform=from_origin(700000, 6000000, 300, 300), nodata=0,
    ) as dataset:
        dataset.write(data)
    return path


# --- parameters and the pure parameter -> kwargs step ----------------------------------------------


def test_parameters_and_defaults(algorithm) -> None:  # noqa: ANN001
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == [
        "INPUTS", "REFERENCE", "RESAMPLING", "MODE", "MERGE_METHOD", "REGISTER", "MODEL",
        "BAND", "REFERENCE_BAND", "EDGE_PROXY", "WINDOW_SIZE", "NODATA", "ALLOW_LARGE_OUTPUT",
        "OUTPUT", "OUTPUT_FOLDER",
    ]
    p = algorithm.parameterDefinition
    assert p("INPUTS").layerType() == SOURCE_RASTER
    assert p("RESAMPLING").options() == list(RESAMPLING_METHODS)
    from coreg_plugin import coregister_stack
    from coreg_plugin.workflows.stack import DEFAULT_STACK_RESAMPLING

    core_default = inspect.signature(coregister_stack).parameters["resampling"].default
    assert RESAMPLING_METHODS[p("RESAMPLING").defaultValue()] == DEFAULT_STACK_RESAMPLING == core_default
    assert p("MODE").options() == list(MODES) == ["merge", "stack"]
    assert MODES[p("MODE").defaultValue()] == "merge"
    assert p("MERGE_METHOD").options() == list(MERGE_METHOD_NAMES)
    assert MERGE_METHOD_NAMES[p("MERGE_METHOD").defaultValue()] == "first"
    assert p("REGISTER").defaultValue() is False
    assert p("BAND").defaultValue() == 1
    assert p("REFERENCE_BAND").defaultValue() == 1
    assert p("REFERENCE_BAND").parentLayerParameterName() == "REFERENCE"
    # the registration's options: the CLI's stack --model, and Align's advanced options the core's stack takes
    core = inspect.signature(coregister_stack).parameters
    assert p("MODEL").options() == list(MODELS) == ["auto", "translation", "affine", "local"]
    assert MODELS[p("MODEL").defaultValue()] == core["model"].default == "auto"
    assert not p("MODEL").flags() & FLAG_ADVANCED
    assert p("EDGE_PROXY").defaultValue() is core["use_edge_proxies"].default is True
    assert p("WINDOW_SIZE").defaultValue() == core["window_size"].default == 256
    assert p("ALLOW_LARGE_OUTPUT").defaultValue() is core["allow_large_output"].default is False
    for name in ("BAND", "REFERENCE_BAND", "EDGE_PROXY", "WINDOW_SIZE", "NODATA", "ALLOW_LARGE_OUTPUT"):
        assert p(name).flags() & FLAG_ADVANCED, name
    for name in ("NODATA", "OUTPUT", "OUTPUT_FOLDER"):
        assert p(name).flags() & FLAG_OPTIONAL, name
    assert not p("OUTPUT_FOLDER").defaultValue()
    outputs = {o.name(): o.type() for o in algorithm.outputDefinitions()}
    assert outputs == {
        "OUTPUT": "outputRaster", "OUTPUT_FOLDER": "outputFolder",
        "INPUTS_USED": "outputNumber", "INPUTS_SKIPPED": "outputNumber", "COVERAGE": "outputNumber",
    }
    assert algorithm.canExecute() == (True, "")
    assert not algorithm.icon().isNull()


def plain_values(**changes) -> dict:
    values = {
        "INPUTS": ["/data/a.tif", "/data/b.tif"], "REFERENCE": "/data/ref.tif",
        "RESAMPLING": RESAMPLING_METHODS.index("cubic"), "MODE": STACK,
        "MERGE_METHOD": MERGE_METHOD_NAMES.index("max"), "REGISTER": True, "BAND": 3, "REFERENCE_BAND": 2,
        "NODATA": -9999.0, "OUTPUT": "/out/stack.tif", "OUTPUT_FOLDER": "/out/folder",
        "MODEL": MODELS.index("affine"), "EDGE_PROXY": False, "WINDOW_SIZE": 128, "ALLOW_LARGE_OUTPUT": True,
    }
    values.update(changes)
    return values


def test_core_kwargs_converts_bands_and_enums(module) -> None:  # noqa: ANN001
    assert module.core_kwargs(plain_values(), **CHOICES) == {
        "inputs": ["/data/a.tif", "/data/b.tif"], "reference": "/data/ref.tif",
        "output": "/out/stack.tif", "output_folder": "/out/folder", "mode": "stack", "merge_method": "max",
        "resampling": "cubic", "register": True, "band_index": 2, "reference_band_index": 1, "nodata": -9999.0,
        "model": "affine", "use_edge_proxies": False, "window_size": 128, "allow_large_output": True,
    }
    kwargs = module.core_kwargs(
        plain_values(MODE=MERGE, MERGE_METHOD=0, RESAMPLING=NEAREST, REGISTER=False, BAND=1, REFERENCE_BAND=1,
                     NODATA=None, OUTPUT_FOLDER="", INPUTS=[Path("/data/c.tif")], MODEL=0),
        **CHOICES,
    )
    assert (kwargs["mode"], kwargs["merge_method"], kwargs["resampling"]) == ("merge", "first", "nearest")
    assert (kwargs["band_index"], kwargs["reference_band_index"]) == (0, 0)
    assert (kwargs["register"], kwargs["nodata"], kwargs["output_folder"]) == (False, None, None)
    assert kwargs["inputs"] == ["/data/c.tif"]
    assert kwargs["model"] == "auto"
    assert module.core_kwargs(plain_values(OUTPUT=""), **CHOICES)["output"] is None


def test_core_kwargs_are_accepted_by_the_core(module) -> None:  # noqa: ANN001
    from coreg_plugin import coregister_stack

    kwargs = module.core_kwargs(plain_values(), **CHOICES)
    inspect.signature(coregister_stack).bind(**kwargs, progress=None, is_cancelled=None)


def test_outputs_from_summary(module) -> None:  # noqa: ANN001
    summary = {
        "output": "/o.tif", "output_folder": None, "mode": "merge",
        "totals": {"inputs": 5, "used": 4, "skipped": 1, "coverage": 0.67},
    }
    assert module.outputs_from_summary(summary) == {
        "OUTPUT": "/o.tif", "OUTPUT_FOLDER": None, "INPUTS_USED": 4, "INPUTS_SKIPPED": 1, "COVERAGE": 0.67,
    }
    assert module.group_name("/tmp/run/tiles/") == "Coregister Stack: tiles"


# --- processing.run ------------------------------------------------------------------------------


def run_stack(**parameters) -> dict:
    base = {"INPUTS": [str(p) for p in INPUTS], "REFERENCE": str(REFERENCE), "RESAMPLING": NEAREST}
    return processing.run(ALGORITHM, {**base, **parameters})


@pytest.fixture(scope="module")
def merge_run(coreg_provider, tmp_path_factory):  # noqa: ANN001, ANN201, ARG001
    output = tmp_path_factory.mktemp("merge") / "merged.tif"
    return run_stack(MODE=MERGE, OUTPUT=str(output)), output


def test_merge_rebuilds_the_reference(merge_run) -> None:  # noqa: ANN001
    """rgb1..rgb4 are tiles cut from RGB.byte.tif on its grid: with nearest, the merge is the reference."""
    results, output = merge_run
    assert Path(results["OUTPUT"]) == output
    assert grid(output) == grid(REFERENCE)
    with rasterio.open(output) as merged, rasterio.open(REFERENCE) as reference:
        assert merged.count == reference.count == 3
        data, valid = merged.read(), merged.read_masks() > 0
        expected = reference.read()
    assert valid.any()
    np.testing.assert_array_equal(data[valid], expected[valid])
    assert results["INPUTS_USED"] == 4
    assert results["INPUTS_SKIPPED"] == 0
    assert results["COVERAGE"] == pytest.approx(valid[0].mean(), abs=1e-3)


@pytest.fixture(scope="module")
def stack_run(coreg_provider, tmp_path_factory):  # noqa: ANN001, ANN201, ARG001
    folder = tmp_path_factory.mktemp("stack")
    output, tiles = folder / "stack.tif", folder / "tiles"
    return run_stack(MODE=STACK, OUTPUT=str(output), OUTPUT_FOLDER=str(tiles)), output, tiles


def test_stack_with_output_folder(stack_run, merge_run) -> None:  # noqa: ANN001
    results, output, tiles = stack_run
    assert Path(results["OUTPUT"]) == output
    assert Path(results["OUTPUT_FOLDER"]) == tiles
    files = sorted(tiles.glob("*.tif"))
    assert [f.name for f in files] == [f"rgb{i}.tif" for i in range(1, 5)]
    for path in files:
        assert grid(path) == grid(REFERENCE)
    with rasterio.open(output) as stacked:
        assert stacked.count == 12
        assert (stacked.crs, stacked.transform, stacked.width, stacked.height) == grid(REFERENCE)
    assert results["INPUTS_USED"] == 4
    assert results["INPUTS_SKIPPED"] == 0
    assert 0.5 < results["COVERAGE"] < 1
    assert results["COVERAGE"] == pytest.approx(merge_run[0]["COVERAGE"])


def test_stack_folder_only(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    results = run_stack(INPUTS=[str(INPUTS[0]), str(INPUTS[3])], MODE=STACK, OUTPUT_FOLDER=str(tmp_path / "only"))
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["rgb1.tif", "rgb4.tif"]
    assert not results.get("OUTPUT")
    assert results["INPUTS_USED"] == 2


def run_and_load_results(algorithm: str, parameters: dict) -> str | None:
    """``processing.runAndLoadResults``; the error as text if it raised, else None.

    Only the text leaves this function: a kept traceback would hold the run's processing context and
    its raster layers until pytest ends, after pytest-qgis has shut QGIS and GDAL down; freeing them
    then crashed QGIS 3.44 (segmentation fault at exit) when this test failed.
    """
    try:
        processing.runAndLoadResults(algorithm, parameters)
    except Exception as error:  # noqa: BLE001 (reported by the caller's assertion)
        return f"{type(error).__name__}: {error}"
    return None


def test_folder_layers_are_loaded_into_one_group(coreg_provider, tmp_path, monkeypatch) -> None:  # noqa: ANN001, ARG001
    module = importlib.import_module("coreg.processing_provider.coregister_stack")
    # Load results as a headless QGIS does (no iface): QGIS 3.44 hands iface.layerTreeView() to C++,
    # which pytest-qgis' mock iface answers with a MagicMock (3.22 has no iface there: raising=False).
    monkeypatch.setattr(importlib.import_module("processing.gui.Postprocessing"), "iface", None, raising=False)
    project = QgsProject.instance()
    project.clear()
    tiles = tmp_path / "training-tiles"
    try:
        failure = run_and_load_results(ALGORITHM, {
            "INPUTS": [str(p) for p in INPUTS], "REFERENCE": str(REFERENCE), "RESAMPLING": NEAREST,
            "MODE": STACK, "OUTPUT_FOLDER": str(tiles),
        })
        assert failure is None, failure
        group = project.layerTreeRoot().findGroup("Coregister Stack: training-tiles")
        assert group is not None
        assert [node.layer().name() for node in group.findLayers()] == [f"rgb{i}" for i in range(1, 5)]
        assert len(project.mapLayers()) == 4
        assert not project.layerTreeRoot().findLayers() or all(
            node.parent() is group for node in project.layerTreeRoot().findLayers()
        )
        # the post-processors were kept referenced until QGIS deleted them with the context
        assert all(sip.isdeleted(p) for p in module._POST_PROCESSORS)
    finally:
        project.clear()


def test_non_overlapping_input_is_skipped(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    far = far_away_raster(tmp_path / "far.tif")
    output = tmp_path / "merged.tif"
    results = run_stack(INPUTS=[str(p) for p in INPUTS] + [str(far)], MODE=MERGE, OUTPUT=str(output))
    assert results["INPUTS_SKIPPED"] == 1
    assert results["INPUTS_USED"] == 4
    assert output.exists()
    assert grid(output) == grid(REFERENCE)


def test_all_inputs_non_overlapping_fails_and_writes_nothing(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    far = far_away_raster(tmp_path / "far.tif")
    output = tmp_path / "merged.tif"
    with pytest.raises(QgsProcessingException) as raised:
        run_stack(INPUTS=[str(far)], MODE=MERGE, OUTPUT=str(output))
    assert "far.tif" in str(raised.value)
    assert not output.exists()


def test_merge_without_output_fails(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    with pytest.raises(QgsProcessingException, match="[Mm]erge mode needs an output raster"):
        run_stack(MODE=MERGE, OUTPUT_FOLDER=str(tmp_path / "tiles"))
    assert not any((tmp_path / "tiles").glob("*"))


def test_stack_without_any_output_fails(coreg_provider) -> None:  # noqa: ANN001, ARG001
    with pytest.raises(QgsProcessingException, match="output folder"):
        run_stack(MODE=STACK)


def test_missing_input_file_is_named(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    output = tmp_path / "merged.tif"
    with pytest.raises(QgsProcessingException, match="no-such-input.tif"):
        run_stack(INPUTS=[str(INPUTS[0]), str(tmp_path / "no-such-input.tif")], OUTPUT=str(output))
    assert not output.exists()


# --- the modeler and qgis_process ---------------------------------------------------------------


def build_model() -> QgsProcessingModelAlgorithm:
    """Raster inputs + reference -> coreg:coregisterstack (merge, nearest) -> raster statistics."""
    model = QgsProcessingModelAlgorithm("stack_then_statistics", "coreg tests")
    model.addModelParameter(
        QgsProcessingParameterMultipleLayers("inputs", "Input rasters", SOURCE_RASTER),
        QgsProcessingModelParameter("inputs"),
    )
    model.addModelParameter(
        QgsProcessingParameterRasterLayer("reference", "Reference raster"), QgsProcessingModelParameter("reference")
    )

    stack = QgsProcessingModelChildAlgorithm(ALGORITHM)
    stack.setChildId("stack")
    stack.setDescription("Coregister Stack")
    stack.addParameterSources("INPUTS", [QgsProcessingModelChildParameterSource.fromModelParameter("inputs")])
    stack.addParameterSources("REFERENCE", [QgsProcessingModelChildParameterSource.fromModelParameter("reference")])
    stack.addParameterSources("RESAMPLING", [QgsProcessingModelChildParameterSource.fromStaticValue(NEAREST)])
    stack.addParameterSources("MODE", [QgsProcessingModelChildParameterSource.fromStaticValue(MERGE)])
    merged = QgsProcessingModelOutput("merged", "Merged raster")
    merged.setChildId("stack")
    merged.setChildOutputName("OUTPUT")
    stack.setModelOutputs({"merged": merged})
    model.addChildAlgorithm(stack)

    add_statistics_child(model, "stack")

    model.updateDestinationParameters()
    return model


@pytest.fixture(scope="module")
def model_file(coreg_provider, tmp_path_factory) -> Path:  # noqa: ANN001, ARG001
    path = tmp_path_factory.mktemp("stack-model") / "stack_then_statistics.model3"
    assert build_model().toFile(str(path))
    return path


def test_model_runs_with_processing_run(model_file: Path, tmp_path: Path) -> None:
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_file))
    merged_name, report_name = destination_name(model, "stack", "merged"), destination_name(model, "stats", "report")
    assert {"inputs", "reference", merged_name, report_name} <= {p.name() for p in model.parameterDefinitions()}
    merged, report = tmp_path / "merged.tif", tmp_path / "stats.html"
    results = processing.run(model, {
        "inputs": [str(p) for p in INPUTS], "reference": str(REFERENCE),
        merged_name: str(merged), report_name: str(report),
    })
    assert Path(results[merged_name]) == merged
    assert grid(merged) == grid(REFERENCE)
    assert "Mean" in report.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def qgis_process_env(tmp_path_factory) -> dict:  # noqa: ANN001
    """A fresh QGIS profile with the plugin (linked as ``coreg``) enabled."""
    env = headless_env(tmp_path_factory.mktemp("qgis-process-stack"))
    enable_plugin(env)
    return env


def test_qgis_process_json_run_with_repeated_inputs(qgis_process_env: dict, tmp_path: Path) -> None:
    """qgis_process 3.22 takes a multiple-layer parameter as the same NAME=value repeated."""
    output, tiles = tmp_path / "stack.tif", tmp_path / "tiles"
    code, payload, log = run_json(ALGORITHM, {
        "INPUTS": INPUTS, "REFERENCE": REFERENCE, "RESAMPLING": NEAREST, "MODE": STACK,
        "OUTPUT": output, "OUTPUT_FOLDER": tiles,
    }, qgis_process_env)
    assert code == 0, log
    results = payload["results"]
    assert results["INPUTS_USED"] == 4
    assert results["INPUTS_SKIPPED"] == 0
    assert 0.5 < results["COVERAGE"] < 1
    assert Path(results["OUTPUT"]) == output
    with rasterio.open(output) as stacked:
        assert stacked.count == 12
    assert len(list(tiles.glob("*.tif"))) == 4


def test_qgis_process_reports_all_inputs_skipped(qgis_process_env: dict, tmp_path: Path) -> None:
    far = far_away_raster(tmp_path / "far.tif")
    output = tmp_path / "merged.tif"
    code, _, log = run_json(ALGORITHM, {"INPUTS": [far], "REFERENCE": REFERENCE, "OUTPUT": output}, qgis_process_env)
    assert code != 0
    assert "far.tif" in log
    assert not output.exists()


def test_model_runs_with_qgis_process(model_file: Path, qgis_process_env: dict, tmp_path: Path) -> None:
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(model_file))
    merged, report = tmp_path / "merged.tif", tmp_path / "stats.html"
    done = qgis_process([
        "run", str(model_file), "--",
        *(f"inputs={p}" for p in INPUTS), f"reference={REFERENCE}",
        f"{destination_name(model, 'stack', 'merged')}={merged}",
        f"{destination_name(model, 'stats', 'report')}={report}",
    ], qgis_process_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert grid(merged) == grid(REFERENCE)
    assert report.exists()


def test_can_execute_uses_the_shared_package_check(algorithm, monkeypatch) -> None:  # noqa: ANN001
    common = importlib.import_module("coreg.processing_provider.common")
    monkeypatch.setattr(common, "missing_packages", lambda: ["rasterio"])
    ok, message = algorithm.canExecute()
    assert not ok
    assert "rasterio" in message
    assert "apt install python3-rasterio python3-skimage" in message


def test_register_first_with_chosen_bands(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    """The tiles sit exactly on the reference: registering them first changes nothing."""
    output = tmp_path / "registered.tif"
    results = run_stack(MODE=MERGE, REGISTER=True, BAND=2, REFERENCE_BAND=2, OUTPUT=str(output))
    assert results["INPUTS_USED"] == 4
    assert results["INPUTS_SKIPPED"] == 0
    with rasterio.open(output) as merged, rasterio.open(REFERENCE) as reference:
        valid = merged.read_masks() > 0
        assert (merged.read()[valid] == reference.read()[valid]).mean() > 0.99


@pytest.mark.parametrize("model", ["translation", "affine"])
def test_register_with_the_chosen_model(coreg_provider, sample_pair, tmp_path, model: str) -> None:  # noqa: ANN001, ARG001
    """The synthetic pair's moving image is shifted: registered with MODEL, the summary reports that model."""
    folder, truth = sample_pair
    output = tmp_path / "registered.tif"
    feedback = SummaryFeedback("inputs")
    results = processing.run(ALGORITHM, {
        "INPUTS": [str(folder / "moving.tif")], "REFERENCE": str(folder / "fixed.tif"), "MODE": MERGE,
        "REGISTER": True, "MODEL": MODELS.index(model), "OUTPUT": str(output),
    }, feedback=feedback)
    assert results["INPUTS_USED"] == 1
    summary = feedback.summary()
    registration = summary["inputs"][0]["registration"]
    assert registration["model"] == model
    assert registration["shift_px"]["x"] == pytest.approx(truth["shift_px"]["x"], abs=0.05)
    assert registration["shift_px"]["y"] == pytest.approx(truth["shift_px"]["y"], abs=0.05)
    assert output.exists()
