"""Outputs larger than the free disk space, in QGIS: every algorithm has the advanced parameter
``ALLOW_LARGE_OUTPUT``, the refusal names it by its label, and with it checked the output is written.

The free space is made to look small by replacing the core's ``free_bytes`` (the one ``check_space``
calls) in the plugin package's copy of the core, the one the provider runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException

from coreg_plugin import MODELS
from processing_provider.qgis_enums import FLAG_ADVANCED

ALGORITHMS = ("coreg:alignimagepair", "coreg:applycorrection", "coreg:coregisterstack")
TRANSLATION = MODELS.index("translation")
LABEL = "Write outputs larger than the free disk space (compression may make them fit)"


@pytest.fixture(scope="module")
def correction(coreg_provider, sample_pair, tmp_path_factory) -> Path:  # noqa: ANN001, ARG001
    """A correction file of the sample pair, written with the real free space."""
    folder, _ = sample_pair
    out = tmp_path_factory.mktemp("correction")
    processing.run("coreg:alignimagepair", {
        "MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "MODEL": TRANSLATION,
        "OUTPUT": str(out / "aligned.tif"), "OUTPUT_CORRECTION": str(out / "correction.json"),
    })
    return out / "correction.json"


@pytest.fixture
def small_disk(coreg_provider, monkeypatch) -> None:  # noqa: ANN001, ARG001
    """Every disk has 1000 bytes free, for the core the provider runs."""
    writer = importlib.import_module("coreg.coreg_plugin.io.writer")
    monkeypatch.setattr(writer, "free_bytes", lambda path: 1000)


def parameters(algorithm_id: str, sample_pair: tuple, correction: Path, out: Path) -> tuple[dict, Path]:
    """Parameters of a small run of ``algorithm_id`` and the output it writes."""
    folder, _ = sample_pair
    output = out / "output.tif"
    if algorithm_id == "coreg:alignimagepair":
        return {"MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "MODEL": TRANSLATION,
                "OUTPUT": str(output)}, output
    if algorithm_id == "coreg:applycorrection":
        return {"CORRECTION": str(correction), "INPUT": str(folder / "moving.tif"), "OUTPUT": str(output)}, output
    return {"INPUTS": [str(folder / "moving.tif")], "REFERENCE": str(folder / "fixed.tif"), "MODE": 0,
            "OUTPUT": str(output)}, output


@pytest.mark.parametrize("algorithm_id", ALGORITHMS)
def test_every_algorithm_has_the_advanced_parameter(coreg_provider, algorithm_id: str) -> None:  # noqa: ANN001, ARG001
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    parameter = algorithm.parameterDefinition("ALLOW_LARGE_OUTPUT")
    assert parameter is not None, algorithm_id
    assert parameter.type() == "boolean"
    assert parameter.description() == LABEL
    assert parameter.defaultValue() is False
    assert parameter.flags() & FLAG_ADVANCED
    assert "free space" in parameter.help()


@pytest.mark.parametrize("algorithm_id", ALGORITHMS)
def test_a_large_output_is_refused_naming_the_parameter_and_written_with_it(
    algorithm_id: str, sample_pair, correction: Path, small_disk: None, tmp_path: Path,  # noqa: ANN001, ARG001
) -> None:
    run, output = parameters(algorithm_id, sample_pair, correction, tmp_path)
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(algorithm_id, run)
    message = str(raised.value)
    assert "free on its disk" in message
    assert f"check '{LABEL}'" in message
    assert "--allow-large-output" not in message
    assert not output.exists()
    results = processing.run(algorithm_id, {**run, "ALLOW_LARGE_OUTPUT": True})
    assert output.exists()
    assert results["OUTPUT"] == str(output)
