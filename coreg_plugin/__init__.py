"""Coreg: sub-pixel raster coregistration (pure Python core; never imports QGIS).

The public API, everything a script needs; every other module is internal and may move:

- :func:`align_image_pair` -> :class:`AlignResult`: estimate a moving raster's misregistration
  against a fixed one, say how sure that is, and write it corrected;
- :func:`apply_correction` -> summary dict: apply a saved :class:`Correction` (:func:`read_correction`)
  to any raster of the scene;
- :func:`coregister_stack` -> :class:`StackResult`: many rasters onto one reference grid, optionally
  registered, merged or stacked; :func:`align_many`: many pairs, on any executor;
- the errors (:class:`CoregError` and its kinds) and the names of the models, resampling methods,
  stack modes and merge methods shared with the CLI and the QGIS provider.

The layout below follows the pipeline (estimate -> correction -> apply -> write):
``workflows/`` (the three jobs) over ``report/``, ``estimate/`` and ``apply/``, over ``correction/``,
``io/`` and ``common/``; ``pyproject.toml`` states these layers and ``make lint`` keeps them.

The names and errors are plain Python; the functions and results load their modules (and numpy,
rasterio, scikit-image) on first use, so QGIS can load the plugin without loading the numerics.
"""

from importlib import import_module

from .common.errors import CancelledError, CoregError, InputError, LargeOutputError, OutputError, RegistrationError
from .common.names import MERGE_METHOD_NAMES, MODELS, MODES, RESAMPLING_METHODS

#: Public names that live in a module with numerics: loaded on first access.
_LAZY = {
    "AlignResult": "workflows.align", "align_image_pair": "workflows.align", "align_many": "workflows.batch",
    "apply_correction": "workflows.apply_correction", "StackResult": "workflows.stack",
    "coregister_stack": "workflows.stack", "Correction": "correction.file", "read_correction": "correction.file",
}

__all__ = [
    "align_image_pair", "AlignResult", "apply_correction", "Correction", "read_correction", "coregister_stack",
    "StackResult", "align_many", "CoregError", "InputError", "OutputError", "LargeOutputError", "RegistrationError",
    "CancelledError", "MODELS", "RESAMPLING_METHODS", "MODES", "MERGE_METHOD_NAMES",
]
__version__ = "0.3.5"


def __getattr__(name: str) -> object:
    """Load ``align_image_pair``, ``coregister_stack``... from their modules on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
