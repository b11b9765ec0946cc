"""The Coreg Processing provider (id ``coreg``)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .align_image_pair import AlignImagePairAlgorithm
from .apply_correction import ApplyCorrectionAlgorithm
from .coregister_stack import CoregisterStackAlgorithm

ICONS = Path(__file__).resolve().parent.parent / "icons"


class CoregProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "coreg"

    def name(self) -> str:
        return self.tr("Coreg")

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Coreg raster coregistration")

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / "coreg.svg"))

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS API)
        return str(ICONS / "coreg.svg")

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        self.addAlgorithm(AlignImagePairAlgorithm())
        self.addAlgorithm(ApplyCorrectionAlgorithm())
        self.addAlgorithm(CoregisterStackAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS API)
        """The extensions whose format Coreg chooses explicitly (``coreg_plugin.io.formats``), GeoTIFF first."""
        try:
            from ..coreg_plugin.io.formats import WRITABLE_EXTENSIONS
        except ImportError:  # a dependency is missing: the algorithms refuse to run anyway
            return ["tif"]
        return list(WRITABLE_EXTENSIONS)

    def tr(self, string: str) -> str:
        return QCoreApplication.translate("CoregProvider", string)
