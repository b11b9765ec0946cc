"""Coreg: sub-pixel raster coregistration (pure Python core; never imports QGIS).

Public API: :func:`align_image_pair`, its :class:`AlignResult`, the errors, and the names of the
models and resampling methods shared with the CLI and the QGIS provider.
"""

from .align import AlignResult, align_image_pair
from .errors import CancelledError, CoregError, InputError, RegistrationError
from .options import MODELS, RESAMPLING_METHODS

__all__ = [
    "AlignResult", "align_image_pair", "CoregError", "InputError", "RegistrationError",
    "CancelledError", "MODELS", "RESAMPLING_METHODS",
]
__version__ = "0.1.0"
