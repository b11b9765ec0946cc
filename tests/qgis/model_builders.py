"""Pieces of graphical-modeler models shared by the QGIS-lane tests."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
)


def add_statistics_child(model: QgsProcessingModelAlgorithm, source_child: str) -> None:
    """Add a ``native:rasterlayerstatistics`` child reading ``source_child``'s OUTPUT (band 1),
    exposing its HTML report as the model output ``report``."""
    stats = QgsProcessingModelChildAlgorithm("native:rasterlayerstatistics")
    stats.setChildId("stats")
    stats.setDescription("Raster layer statistics")
    stats.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput(source_child, "OUTPUT")])
    stats.addParameterSources("BAND", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    report = QgsProcessingModelOutput("report", "Statistics report")
    report.setChildId("stats")
    report.setChildOutputName("OUTPUT_HTML_FILE")
    stats.setModelOutputs({"report": report})
    model.addChildAlgorithm(stats)


def destination_name(model: QgsProcessingModelAlgorithm, child_id: str, output_name: str) -> str:
    """The name of the model parameter that sets child ``child_id``'s model output ``output_name``.

    QGIS 3.22 names it ``childId:outputName`` (``align:aligned``); 3.40 names it after the output's
    description (``aligned_image``). Both keep the output's description on the parameter, so the
    name is read from the model rather than assumed.
    """
    description = model.childAlgorithm(child_id).modelOutput(output_name).description()
    names = [p.name() for p in model.destinationParameterDefinitions() if p.description() == description]
    if len(names) != 1:
        raise AssertionError(f"{len(names)} destination parameters described {description!r} in the model")
    return names[0]
