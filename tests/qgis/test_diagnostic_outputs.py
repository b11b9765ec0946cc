"""Align Image Pair's optional diagnostics: the styled tie-point layer and the HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import processing
import pytest
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt import sip

from processing_provider.qgis_enums import GEOMETRY_POINT, SYMBOL_PROPERTY_ANGLE, SYMBOL_PROPERTY_SIZE

ALGORITHM = "coreg:alignimagepair"
FIELDS = ["status", "used", "dx_px", "dy_px", "dx_map", "dy_map", "magnitude_px", "reliability", "residual_px"]


@pytest.fixture(scope="module")
def diagnostics_run(coreg_provider, sample_pair, tmp_path_factory):  # noqa: ANN001, ANN201, ARG001
    """A run asking for both diagnostics, with the tie points loaded into the project on completion.

    The context holds the run's raster layers: it is deleted when the module's tests are done, not
    left for the garbage collector to free after pytest-qgis has shut QGIS and GDAL down (freeing a
    context with raster layers then crashed QGIS 3.44 at exit; see run_and_load_results in
    test_coregister_stack.py).
    """
    folder, truth = sample_pair
    out = tmp_path_factory.mktemp("diagnostics")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    parameters = {
        "MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "OUTPUT": str(out / "aligned.tif"),
        "OUTPUT_TIE_POINTS": QgsProcessingOutputLayerDefinition(str(out / "tie_points.gpkg"), QgsProject.instance()),
        "OUTPUT_REPORT": str(out / "report.html"),
    }
    results = processing.run(ALGORITHM, parameters, context=context, feedback=QgsProcessingFeedback())
    yield results, context, out, truth
    context.temporaryLayerStore().removeAllMapLayers()
    sip.delete(context)


def test_tie_point_layer(diagnostics_run) -> None:  # noqa: ANN001
    results, _, out, truth = diagnostics_run
    layer = QgsVectorLayer(results["OUTPUT_TIE_POINTS"], "tie points", "ogr")
    assert layer.isValid()
    assert Path(layer.source().split("|")[0]) == out / "tie_points.gpkg"
    assert QgsWkbTypes.geometryType(layer.wkbType()) == GEOMETRY_POINT
    assert layer.crs().authid() == "EPSG:32633"
    assert FIELDS == [f.name() for f in layer.fields() if f.name() != "fid"]
    features = list(layer.getFeatures())
    used = [f for f in features if f["status"] == "used"]
    assert len(used) == results["TIE_POINTS_USED"] > 0
    assert all(f["used"] == 1 for f in used)
    for feature in used:
        # 10 m pixels, north-up: map units are pixels x 10, north is minus rows
        assert feature["dx_px"] == pytest.approx(truth["shift_px"]["x"], abs=0.1)
        assert feature["dy_px"] == pytest.approx(truth["shift_px"]["y"], abs=0.1)
        assert feature["dx_map"] == pytest.approx(feature["dx_px"] * 10, abs=1e-3)
        assert feature["dy_map"] == pytest.approx(-feature["dy_px"] * 10, abs=1e-3)
    extent = layer.extent()
    assert 400000 < extent.xMinimum() < extent.xMaximum() < 400000 + 7680


def test_tie_point_layer_is_styled_on_loading(diagnostics_run, coreg_package) -> None:  # noqa: ANN001
    results, context, _, _ = diagnostics_run
    dest_id = results["OUTPUT_TIE_POINTS"]
    assert context.willLoadLayerOnCompletion(dest_id)
    post_processor = context.layerToLoadOnCompletionDetails(dest_id).postProcessor()
    assert post_processor is not None
    layer = QgsVectorLayer(dest_id, "tie points", "ogr")
    post_processor.postProcessLayer(layer, context, QgsProcessingFeedback())
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "status"
    categories = {c.value(): c for c in renderer.categories()}
    assert {"used", "outlier", "unreliable", "no texture", "nodata"} <= set(categories)
    outlier = categories["outlier"].symbol()
    assert outlier.color().name() == "#e31a1c"  # rejected points in red
    for status in ("used", "outlier"):
        symbol_layer = categories[status].symbol().symbolLayer(0)
        angle = symbol_layer.dataDefinedProperties().property(SYMBOL_PROPERTY_ANGLE)
        size = symbol_layer.dataDefinedProperties().property(SYMBOL_PROPERTY_SIZE)
        assert "atan2" in angle.expressionString()
        assert "magnitude_px" in size.expressionString()
    assert coreg_package.processing_provider.tie_point_style.ANGLE_EXPRESSION in angle.expressionString()


def test_report_is_an_html_output(diagnostics_run, coreg_provider) -> None:  # noqa: ANN001, ARG001
    results, _, out, _ = diagnostics_run
    report = Path(results["OUTPUT_REPORT"])
    assert report == out / "report.html"
    text = report.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 4
    assert f"{results['SHIFT_X_PX']:g}" in text
    # declared as an HTML output, so the Processing dialog shows it in the Results Viewer
    alg = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert alg.outputDefinition("OUTPUT_REPORT").type() == "outputHtml"


def test_diagnostics_are_optional(coreg_provider, sample_pair, tmp_path) -> None:  # noqa: ANN001, ARG001
    folder, _ = sample_pair
    results = processing.run(ALGORITHM, {
        "MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"), "OUTPUT": str(tmp_path / "a.tif"),
    })
    assert results["OUTPUT_TIE_POINTS"] is None
    assert results["OUTPUT_REPORT"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
