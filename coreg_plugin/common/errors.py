"""The errors the core raises, one hierarchy so callers can catch them together.

Every message names the file involved and says what is wrong, so the CLI can print it as it is
and the QGIS provider can turn it into a ``QgsProcessingException``.
"""

from __future__ import annotations


class CoregError(Exception):
    """Base class of every error Coreg raises on purpose."""


class InputError(CoregError, ValueError):
    """An input file or parameter is unusable: missing, not a raster, band out of range, no overlap..."""


class RegistrationError(CoregError):
    """The images could be read, but no trustworthy registration was found (no texture, too few tie points)."""


class CancelledError(CoregError):
    """The caller asked to stop; nothing was written."""


class OutputError(InputError):
    """An output cannot be written: its folder, its name, its format, the disk. Nothing was published."""


class LargeOutputError(OutputError):
    """An output is larger (uncompressed) than the free space of its disk.

    The message says what does not fit and ends there, without naming an option: each interface adds
    how to write it anyway in its own terms (the CLI's ``--allow-large-output``, the core's
    ``allow_large_output=True``, the QGIS parameter's label).
    """
