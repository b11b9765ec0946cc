"""The QGIS side of Coreg: plugin class, Processing provider and algorithms (no numerics here)."""
