"""The plugin object QGIS gets from ``classFactory``: it only registers the Processing provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qgis.core import QgsApplication

from .provider import CoregProvider

if TYPE_CHECKING:
    from qgis.gui import QgisInterface


class CoregPlugin:
    """Registers the Coreg provider in ``initProcessing`` so ``qgis_process`` sees it too."""

    def __init__(self, iface: QgisInterface) -> None:
        self.iface = iface
        self.provider: CoregProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        # Keep a reference: a provider passed inline to addProvider() is garbage collected.
        if self.provider is None:
            self.provider = CoregProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
