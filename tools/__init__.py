"""Development tools: headless qgis_process helpers and the demo (not part of the plugin)."""
