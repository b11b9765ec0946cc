"""The tie-point layer of Align Image Pair: its fields, features and the style it is loaded with.

Rows come from the core (``coreg_plugin.report.tie_point_rows``); this module only turns them into
QGIS features and styles the loaded layer: one category per status, used points as blue arrows and
outliers as red arrows, each rotated to the direction of the correction (data-defined angle from
``atan2(dx_map, dy_map)``, clockwise from north as QGIS rotates markers) and sized by its length;
windows that gave no measurement as small grey or orange crosses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsMapLayer,
    QgsMarkerSymbol,
    QgsPointXY,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProperty,
    QgsRendererCategory,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication

from .qgis_enums import FIELD_DOUBLE, FIELD_INT, FIELD_STRING

FIELDS = (
    ("status", FIELD_STRING),
    ("used", FIELD_INT),
    ("dx_px", FIELD_DOUBLE),
    ("dy_px", FIELD_DOUBLE),
    ("dx_map", FIELD_DOUBLE),
    ("dy_map", FIELD_DOUBLE),
    ("magnitude_px", FIELD_DOUBLE),
    ("reliability", FIELD_DOUBLE),
    ("residual_px", FIELD_DOUBLE),
)

ANGLE_EXPRESSION = 'degrees(atan2("dx_map", "dy_map"))'
SIZE_EXPRESSION = 'coalesce(scale_linear("magnitude_px", 0, maximum("magnitude_px"), 2.5, 8), 2.5)'

# status -> (marker shape, fill colour, arrow?)
CATEGORIES = (
    ("used", "arrow", "#1f78b4", True),
    ("outlier", "arrow", "#e31a1c", True),
    ("unreliable", "cross2", "#ff7f00", False),
    ("no texture", "cross2", "#969696", False),
    ("nodata", "cross2", "#cccccc", False),
)

_POST_PROCESSORS: list[TiePointStyler] = []


def tr(string: str) -> str:
    return QCoreApplication.translate("TiePointStyle", string)


def fields() -> QgsFields:
    result = QgsFields()
    for name, kind in FIELDS:
        result.append(QgsField(name, kind))
    return result


def features(rows: Sequence[Mapping[str, Any]], layer_fields: QgsFields) -> list[QgsFeature]:
    """One point feature per row of ``tie_point_rows`` (``None`` stays NULL)."""
    result = []
    for row in rows:
        feature = QgsFeature(layer_fields)
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row["x_map"], row["y_map"])))
        for name, _ in FIELDS:
            value = row.get(name)
            if value is not None:
                feature[name] = value
        result.append(feature)
    return result


def symbol(shape: str, colour: str, arrow: bool) -> QgsMarkerSymbol:
    """An arrow rotated and sized by the correction, or a small fixed cross."""
    marker = QgsMarkerSymbol.createSimple({
        "name": shape, "color": colour, "outline_color": "#202020" if arrow else colour,
        "outline_width": "0.2", "size": "3" if arrow else "2.2",
    })
    if arrow:
        marker.setDataDefinedAngle(QgsProperty.fromExpression(ANGLE_EXPRESSION))
        marker.setDataDefinedSize(QgsProperty.fromExpression(SIZE_EXPRESSION))
    return marker


def renderer() -> QgsCategorizedSymbolRenderer:
    """The categorized renderer by ``status``."""
    labels = {
        "used": tr("used in the fit"),
        "outlier": tr("outlier (rejected by the fit)"),
        "unreliable": tr("unreliable (weak correlation)"),
        "no texture": tr("no texture"),
        "nodata": tr("nodata"),
    }
    categories = [
        QgsRendererCategory(status, symbol(shape, colour, arrow), labels[status])
        for status, shape, colour, arrow in CATEGORIES
    ]
    return QgsCategorizedSymbolRenderer("status", categories)


class TiePointStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies :func:`renderer` to the loaded tie-point layer (main thread, after loading)."""

    def postProcessLayer(  # noqa: N802 (QGIS API)
        self, layer: QgsMapLayer | None, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if layer is None or not layer.isValid():
            return
        layer.setRenderer(renderer())
        layer.triggerRepaint()


def keep(post_processor: TiePointStyler) -> TiePointStyler:
    """Keep a Python reference until QGIS has run and deleted the post-processor."""
    _POST_PROCESSORS[:] = [p for p in _POST_PROCESSORS if not sip.isdeleted(p)]
    _POST_PROCESSORS.append(post_processor)
    return post_processor
