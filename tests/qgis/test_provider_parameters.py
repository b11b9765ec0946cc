"""The provider's registration, parameter list and parameter -> core kwargs step (no alignment run)."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from qgis.core import QgsApplication

from coreg_plugin import MODELS, RESAMPLING_METHODS
from processing_provider.qgis_enums import FLAG_ADVANCED, FLAG_OPTIONAL

ALGORITHM = "coreg:alignimagepair"


@pytest.fixture
def module(coreg_provider):  # noqa: ANN001, ANN201, ARG001
    return importlib.import_module("coreg.processing_provider.align_image_pair")


@pytest.fixture
def algorithm(coreg_provider):  # noqa: ANN001, ANN201, ARG001
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    assert alg is not None, f"{ALGORITHM} is not registered"
    return alg


def test_provider_is_registered(coreg_provider) -> None:  # noqa: ANN001
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("coreg") is coreg_provider
    assert coreg_provider.name() == "Coreg"
    algorithm_ids = sorted(alg.id() for alg in coreg_provider.algorithms())
    assert algorithm_ids == [ALGORITHM, "coreg:applycorrection", "coreg:coregisterstack"]
    assert not coreg_provider.icon().isNull()


def test_parameters_and_defaults(algorithm) -> None:  # noqa: ANN001
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == [
        "MOVING", "FIXED", "MOVING_BAND", "FIXED_BAND", "MODEL", "RESAMPLING", "OUTPUT_GRID", "GEOREFERENCE_ONLY",
        "MOVING_NODATA", "FIXED_NODATA", "OUTPUT_NODATA", "EDGE_PROXY", "WINDOW_SIZE", "FORCE", "ALLOW_LARGE_OUTPUT",
        "OUTPUT", "OUTPUT_TIE_POINTS", "OUTPUT_REPORT", "OUTPUT_CORRECTION", "OUTPUT_GCP",
    ]
    p = algorithm.parameterDefinition
    assert p("MOVING_BAND").defaultValue() == 1
    assert p("MOVING_BAND").parentLayerParameterName() == "MOVING"
    assert p("FIXED_BAND").parentLayerParameterName() == "FIXED"
    assert p("MODEL").options() == list(MODELS)
    assert MODELS[p("MODEL").defaultValue()] == "auto"
    assert p("RESAMPLING").options() == list(RESAMPLING_METHODS)
    # the dialog's default is the core's (same defaults in the API, the CLI and QGIS)
    import inspect

    from coreg_plugin import align_image_pair

    core_default = inspect.signature(align_image_pair).parameters["resampling"].default
    assert RESAMPLING_METHODS[p("RESAMPLING").defaultValue()] == core_default == "lanczos"
    assert p("OUTPUT_GRID").defaultValue() == 0
    assert p("EDGE_PROXY").defaultValue() is True
    assert p("WINDOW_SIZE").defaultValue() == 256
    for name in ("MOVING_NODATA", "FIXED_NODATA", "OUTPUT_NODATA"):
        assert p(name).flags() & FLAG_OPTIONAL
    for name in ("WINDOW_SIZE", "FORCE", "ALLOW_LARGE_OUTPUT"):
        assert p(name).flags() & FLAG_ADVANCED
    assert p("ALLOW_LARGE_OUTPUT").defaultValue() is False
    outputs = {o.name(): o.type() for o in algorithm.outputDefinitions()}
    assert outputs == {
        "OUTPUT": "outputRaster",
        "OUTPUT_TIE_POINTS": "outputVector",
        "OUTPUT_REPORT": "outputHtml",
        "OUTPUT_CORRECTION": "outputFile",
        "OUTPUT_GCP": "outputFile",
        **{n: "outputNumber" for n in (
            "SHIFT_X_PX", "SHIFT_Y_PX", "SHIFT_X_M", "SHIFT_Y_M", "RMSE_PX", "TIE_POINTS_USED", "QUALITY",
            "UNCERTAINTY_PX", "RMSE_FIT_PX", "RMSE_VERIFY_PX", "CE90_PX", "CE90_M")},
        "MODEL_USED": "outputString",
        "VERDICT": "outputString",
        "CEOS_ARD": "outputBoolean",
    }
    assert algorithm.canExecute() == (True, "")


def test_core_kwargs_converts_bands_enums_and_grid(module) -> None:  # noqa: ANN001
    values = {
        "MOVING": "/data/m.tif", "FIXED": "/data/f.tif", "OUTPUT": "/out/o.tif",
        "MOVING_BAND": 3, "FIXED_BAND": 1, "MODEL": MODELS.index("affine"),
        "RESAMPLING": RESAMPLING_METHODS.index("cubic"), "OUTPUT_GRID": 1,
        "MOVING_NODATA": None, "FIXED_NODATA": 0.0, "OUTPUT_NODATA": -9999.0,
        "EDGE_PROXY": False, "WINDOW_SIZE": 128, "FORCE": True, "OUTPUT_REPORT": "/out/r.html",
        "GEOREFERENCE_ONLY": True, "OUTPUT_CORRECTION": "/out/c.json", "OUTPUT_GCP": None,
        "ALLOW_LARGE_OUTPUT": True,
    }
    kwargs = module.core_kwargs(values, models=MODELS, resampling_methods=RESAMPLING_METHODS)
    assert kwargs == {
        "moving_image": "/data/m.tif", "fixed_image": "/data/f.tif", "output_image": "/out/o.tif",
        "moving_band_index": 2, "fixed_band_index": 0, "model": "affine", "resampling": "cubic",
        "output_on_moving_grid": False, "moving_nodata": None, "fixed_nodata": 0.0, "output_nodata": -9999.0,
        "use_edge_proxies": False, "window_size": 128, "force": True, "report": "/out/r.html",
        "no_resample": True, "correction_file": "/out/c.json", "gcp_file": None, "allow_large_output": True,
    }
    values.update(OUTPUT_GRID=0, MODEL=0, RESAMPLING=1)
    kwargs = module.core_kwargs(values, models=MODELS, resampling_methods=RESAMPLING_METHODS)
    assert (kwargs["output_on_moving_grid"], kwargs["model"], kwargs["resampling"]) == (True, "auto", "bilinear")


def test_core_kwargs_are_accepted_by_the_core(module) -> None:  # noqa: ANN001
    import inspect

    from coreg_plugin import align_image_pair

    values = {
        "MOVING": "m", "FIXED": "f", "OUTPUT": "o", "MOVING_BAND": 1, "FIXED_BAND": 1, "MODEL": 0,
        "RESAMPLING": 1, "OUTPUT_GRID": 0, "EDGE_PROXY": True, "WINDOW_SIZE": 256, "FORCE": False,
        "ALLOW_LARGE_OUTPUT": False,
    }
    kwargs = module.core_kwargs(values, models=MODELS, resampling_methods=RESAMPLING_METHODS)
    signature = inspect.signature(align_image_pair)
    signature.bind(**kwargs, progress=None, is_cancelled=None)


def test_outputs_from_summary(module) -> None:  # noqa: ANN001
    summary = {
        "output_image": "/o.tif", "model": "translation", "shift_px": {"x": 1.5, "y": -2.0},
        "shift_m": {"x": 15.0, "y": 20.0}, "rmse_px": 0.1, "tie_points": {"found": 30, "used": 25},
        "quality": {"score": 0.9}, "elapsed_s": 1.0, "verdict": "corrected",
        "uncertainty_px": {"centre": 0.02, "corners": [0.03] * 4, "max": 0.03},
        "accuracy": {"rmse_fit_px": 0.1, "rmse_verify_px": 0.11, "ce90_px": 0.17, "ce90_m": 1.7, "ceos_ard": True},
    }
    assert module.outputs_from_summary(summary, "/o.tif") == {
        "OUTPUT": "/o.tif", "OUTPUT_TIE_POINTS": None, "OUTPUT_REPORT": None, "OUTPUT_CORRECTION": None,
        "OUTPUT_GCP": None,
        "SHIFT_X_PX": 1.5, "SHIFT_Y_PX": -2.0, "SHIFT_X_M": 15.0, "SHIFT_Y_M": 20.0,
        "RMSE_PX": 0.1, "TIE_POINTS_USED": 25, "QUALITY": 0.9, "MODEL_USED": "translation",
        "VERDICT": "corrected", "UNCERTAINTY_PX": 0.03,
        "RMSE_FIT_PX": 0.1, "RMSE_VERIFY_PX": 0.11, "CE90_PX": 0.17, "CE90_M": 1.7, "CEOS_ARD": True,
    }


def test_every_parameter_has_help_and_only_inputs_are_required(coreg_provider) -> None:  # noqa: ANN001
    for algorithm_id, required in (
        (ALGORITHM, {"MOVING", "FIXED", "OUTPUT"}),
        ("coreg:coregisterstack", {"INPUTS", "REFERENCE"}),
        ("coreg:applycorrection", {"CORRECTION", "INPUT"}),
    ):
        alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        assert len(alg.shortHelpString()) > 200
        for parameter in alg.parameterDefinitions():
            assert parameter.help().strip(), f"{algorithm_id}: {parameter.name()} has no help"
            mandatory = not parameter.flags() & FLAG_OPTIONAL
            if mandatory and parameter.defaultValue() is None and not parameter.isDestination():
                assert parameter.name() in required, f"{algorithm_id}: {parameter.name()} needs a value"
    align = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert "product of four terms" in align.shortHelpString()
    for term in ("count", "spread", "fit", "correlation"):
        assert term in align.shortHelpString()


@pytest.mark.parametrize("algorithm_id", [ALGORITHM, "coreg:coregisterstack"])
def test_help_states_the_quality_gate_and_verdicts_of_the_core(coreg_provider, algorithm_id) -> None:  # noqa: ANN001, ARG001
    from coreg_plugin.common.options import DEFAULT_MIN_QUALITY
    from coreg_plugin.estimate.quality import RMSE_SCALE_PX

    text = QgsApplication.processingRegistry().algorithmById(algorithm_id).shortHelpString()
    assert f"fit (exp(-(RMSE / {RMSE_SCALE_PX:g} px)^2), the RMSE in pixels of the coarser of" in text
    assert "0.5 px)^2" not in text
    assert f"below {DEFAULT_MIN_QUALITY:g}" in text
    assert "already aligned" in text
    assert "95 % uncertainty" in text
    assert "95 % confidence" in text  # the rule that makes it "already aligned" (estimate.model_choice.improves)


def test_apply_correction_parameters_and_kwargs(coreg_provider) -> None:  # noqa: ANN001, ARG001
    import inspect

    from coreg_plugin import apply_correction

    module = importlib.import_module("coreg.processing_provider.apply_correction")
    alg = QgsApplication.processingRegistry().createAlgorithmById("coreg:applycorrection")
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "CORRECTION", "INPUT", "RESAMPLING", "GEOREFERENCE_ONLY", "ALLOW_LARGE_OUTPUT", "OUTPUT"]
    assert RESAMPLING_METHODS[alg.parameterDefinition("RESAMPLING").defaultValue()] == "lanczos"
    assert alg.parameterDefinition("GEOREFERENCE_ONLY").defaultValue() is False
    kwargs = module.core_kwargs({"CORRECTION": "c.json", "INPUT": "i.tif", "OUTPUT": "o.tif",
                                 "RESAMPLING": RESAMPLING_METHODS.index("mode"), "GEOREFERENCE_ONLY": False,
                                 "ALLOW_LARGE_OUTPUT": True},
                                resampling_methods=RESAMPLING_METHODS)
    assert kwargs == {"correction": "c.json", "input_image": "i.tif", "output_image": "o.tif",
                      "resampling": "mode", "no_resample": False, "allow_large_output": True}
    inspect.signature(apply_correction).bind(**kwargs, progress=None, is_cancelled=None)
    assert alg.canExecute() == (True, "")


def test_can_execute_names_missing_packages(algorithm, monkeypatch) -> None:  # noqa: ANN001
    common = importlib.import_module("coreg.processing_provider.common")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        common.importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real_find_spec(name, *a)
    )
    ok, message = algorithm.canExecute()
    assert not ok
    assert "scikit-image" in message
    assert "apt install python3-rasterio python3-skimage" in message
    assert "pip install rasterio scikit-image" in message


class RecordingFeedback:
    def __init__(self) -> None:
        self.info: list[str] = []
        self.warnings: list[str] = []

    def pushInfo(self, message: str) -> None:  # noqa: N802
        self.info.append(message)

    def pushWarning(self, message: str) -> None:  # noqa: N802
        self.warnings.append(message)


def test_core_log_is_forwarded_only_during_the_run(module) -> None:  # noqa: ANN001
    logger = logging.getLogger("coreg")
    feedback = RecordingFeedback()
    handlers_before, level_before = list(logger.handlers), logger.level
    with module.forward_core_log(feedback):
        logger.info("found %d tie points", 12)
        logger.warning("few tie points")
        logger.debug("not shown")
    logger.info("after the run")
    assert feedback.info == ["found 12 tie points"]
    assert feedback.warnings == ["few tie points"]
    assert (logger.handlers, logger.level) == (handlers_before, level_before)
