"""Coreg QGIS plugin: raster coregistration as a Processing provider.

The repository root is the plugin package. QGIS imports it under the plugin folder's name and calls
``classFactory``; the pure-Python core lives in ``coreg_plugin`` and has no QGIS dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qgis.gui import QgisInterface

    from .processing_provider.plugin import CoregPlugin


def classFactory(iface: QgisInterface) -> CoregPlugin:  # noqa: N802 (name required by QGIS)
    """Return the plugin instance; QGIS calls this once when the plugin is loaded."""
    from .processing_provider.plugin import CoregPlugin

    return CoregPlugin(iface)
