"""The names and defaults the interfaces offer (models, resampling, stack modes, merge methods).

Plain strings, no imports: the QGIS provider builds its parameter lists from them when QGIS loads
the plugin, without loading numpy, rasterio or scikit-image (they load when an algorithm runs).
``options``, ``stack`` and ``merge`` re-export them.
"""

#: Correction models. ``auto`` picks the one held-out tie points support; ``local`` is the affine plus a
#: smooth displacement field (:mod:`coreg_plugin.estimate.local_fit`).
MODELS: tuple[str, ...] = ("auto", "translation", "affine", "local")

#: Resampling methods for the output warp: every method rasterio's warper offers.
#: ``lanczos`` is Align Image Pair's default because it is the only one that keeps sub-pixel
#: positions: warping Sentinel-2 texture by an exactly known fractional shift and measuring the
#: result by windowed phase correlation leaves 0.002 px with lanczos, 0.007 px with cubic_spline
#: (which also blurs), but 0.02 to 0.04 px with bilinear and cubic (their phase error at
#: fractional offsets). Its slight overshoot at sharp edges is clipped to the data type's range.
RESAMPLING_METHODS: tuple[str, ...] = (
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
    "max", "min", "med", "q1", "q3", "sum", "rms",
)
DEFAULT_RESAMPLING = "lanczos"

#: Coregister Stack's output modes: one merged raster, or the inputs as bands of one raster.
MODES: tuple[str, ...] = ("merge", "stack")
#: Stack resampling default: the classic recipe's, cheap and without overshoot.
DEFAULT_STACK_RESAMPLING = "bilinear"

#: Built-in merge methods, by name.
MERGE_METHOD_NAMES: tuple[str, ...] = ("first", "last", "min", "max", "sum", "count", "mean")
DEFAULT_MERGE_METHOD = "first"
