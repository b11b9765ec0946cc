"""Coreg: sub-pixel raster coregistration (pure Python core; never imports QGIS).

Public API: :func:`align_image_pair`, :func:`apply_correction` and :func:`coregister_stack` with
their results, the errors, and the names of the models, resampling methods, stack modes and merge
methods shared with the CLI and the QGIS provider.

The names and errors are plain Python; the functions and results load their modules (and numpy,
rasterio, scikit-image) on first use, so QGIS can load the plugin without loading the numerics.
"""

from importlib import import_module

from .common.errors import CancelledError, CoregError, InputError, OutputError, RegistrationError
from .common.names import MERGE_METHOD_NAMES, MODELS, MODES, RESAMPLING_METHODS

#: Public names that live in a module with numerics: loaded on first access.
_LAZY = {
    "AlignResult": "workflows.align", "align_image_pair": "workflows.align", "align_many": "workflows.batch",
    "apply_correction": "apply.correct", "StackResult": "workflows.stack",
    "coregister_stack": "workflows.stack", "Correction": "correction.file", "read_correction": "correction.file",
}

__all__ = [
    "AlignResult", "align_image_pair", "apply_correction", "align_many", "CoregError", "InputError", "OutputError",
    "RegistrationError", "CancelledError", "MODELS", "RESAMPLING_METHODS", "coregister_stack", "StackResult",
    "MODES", "MERGE_METHOD_NAMES",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    """Load ``align_image_pair``, ``coregister_stack``... from their modules on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
