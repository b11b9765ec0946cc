"""Coreg: sub-pixel raster coregistration (pure Python core; never imports QGIS).

Public API: :func:`align_image_pair`, :func:`apply_correction` and :func:`coregister_stack` with
their results, the errors, and the names of the models, resampling methods, stack modes and merge methods shared with the CLI
and the QGIS provider.
"""

from .align import AlignResult, align_image_pair
from .apply import apply_correction
from .batch import align_many
from .errors import CancelledError, CoregError, InputError, RegistrationError
from .merge import MERGE_METHOD_NAMES
from .options import MODELS, RESAMPLING_METHODS
from .stack import MODES, StackResult, coregister_stack

__all__ = [
    "AlignResult", "align_image_pair", "apply_correction", "align_many", "CoregError", "InputError", "RegistrationError",
    "CancelledError", "MODELS", "RESAMPLING_METHODS", "coregister_stack", "StackResult", "MODES",
    "MERGE_METHOD_NAMES",
]
__version__ = "0.1.0"
