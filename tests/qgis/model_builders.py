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
