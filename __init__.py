"""Coreg QGIS plugin: raster coregistration as a Processing provider.

The repository root is the plugin package. QGIS imports it under the plugin folder's name and calls
``classFactory``; the pure-Python core lives in ``coreg_plugin`` and has no QGIS dependency.
"""


def classFactory(iface):  # noqa: N802 (name required by QGIS)
    """Return the plugin instance; QGIS calls this once when the plugin is loaded."""
    from .processing_provider.plugin import CoregPlugin

    return CoregPlugin(iface)
