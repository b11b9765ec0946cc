"""Scoped QGIS enum members that work from QGIS 3.22 (Qt5) to QGIS 4 (Qt6).

PyQt6 only accepts enum members through their enum (``Qgis.ProcessingSourceType.Raster``, never
``QgsProcessing.TypeRaster``). QGIS 3.30 to 3.38 moved these enums into ``Qgis`` (and QGIS 4 dropped
the old classes' enums); 3.22 only has the old ones, in scoped form
(``QgsProcessing.SourceType.TypeRaster``). Each constant here is the ``Qgis`` member where the
installed QGIS has it, else the old class's scoped member; both are the same number.
"""

from __future__ import annotations

from qgis import core
from qgis.PyQt.QtCore import QMetaType, QVariant

#: QgsField takes a QMetaType.Type from QGIS 3.38 (a QVariant.Type before; Qt6 has no QVariant types).
FIELD_TYPES_ARE_METATYPES = core.Qgis.QGIS_VERSION_INT >= 33800


def scoped(new: str, old: str) -> object:
    """The enum member at dotted path ``new`` in ``qgis.core`` if it resolves, else the one at ``old``."""
    for path in (new, old):
        value: object = core
        try:
            for part in path.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError(f"neither {new} nor {old} exists in this QGIS ({core.Qgis.QGIS_VERSION})")


SOURCE_RASTER = scoped("Qgis.ProcessingSourceType.Raster", "QgsProcessing.SourceType.TypeRaster")
SOURCE_VECTOR_POINT = scoped("Qgis.ProcessingSourceType.VectorPoint", "QgsProcessing.SourceType.TypeVectorPoint")
NUMBER_INTEGER = scoped("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
NUMBER_DOUBLE = scoped("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double")
FLAG_ADVANCED = scoped("Qgis.ProcessingParameterFlag.Advanced", "QgsProcessingParameterDefinition.Flag.FlagAdvanced")
FLAG_OPTIONAL = scoped("Qgis.ProcessingParameterFlag.Optional", "QgsProcessingParameterDefinition.Flag.FlagOptional")
WKB_POINT = scoped("Qgis.WkbType.Point", "QgsWkbTypes.Type.Point")
GEOMETRY_POINT = scoped("Qgis.GeometryType.Point", "QgsWkbTypes.GeometryType.PointGeometry")
SYMBOL_PROPERTY_ANGLE = scoped("QgsSymbolLayer.Property.Angle", "QgsSymbolLayer.Property.PropertyAngle")
SYMBOL_PROPERTY_SIZE = scoped("QgsSymbolLayer.Property.Size", "QgsSymbolLayer.Property.PropertySize")

if FIELD_TYPES_ARE_METATYPES:
    FIELD_STRING, FIELD_INT, FIELD_DOUBLE = QMetaType.Type.QString, QMetaType.Type.Int, QMetaType.Type.Double
else:
    FIELD_STRING, FIELD_INT, FIELD_DOUBLE = QVariant.Type.String, QVariant.Type.Int, QVariant.Type.Double
