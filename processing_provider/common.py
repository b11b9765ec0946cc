"""Pieces shared by the Coreg Processing algorithms (no numerics, no algorithm of its own).

- the check for the Python packages the core needs, and the ``canExecute`` answer naming them;
- the forwarding of one run's records of the core's ``coreg`` logger to its Processing feedback;
- the GDAL dataset name behind a raster layer, and the reading of an optional number parameter;
- the ``ALLOW_LARGE_OUTPUT`` parameter every algorithm has, and the ``QgsProcessingException`` for an
  error of the core (naming that parameter when an output does not fit on its disk).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

from .qgis_enums import FLAG_ADVANCED

PLUGIN_DIR = Path(__file__).resolve().parent.parent
ICONS = PLUGIN_DIR / "icons"
#: Where the plugin's own copy of the documentation site is, first found wins: inside the plugin zip
#: (``make zip`` ships build/docs there), then a checkout's ``make docs`` output.
DOCS_SITES = ("docs/site", "build/docs")

#: The parameter (in every algorithm) that writes outputs larger than the free disk space.
ALLOW_LARGE_OUTPUT = "ALLOW_LARGE_OUTPUT"

# Python modules the core needs, and the name to install each under.
REQUIRED_MODULES = (("rasterio", "rasterio"), ("skimage", "scikit-image"))


def help_url(page: str, plugin_dir: Path = PLUGIN_DIR) -> str:
    """The ``file://`` URL of ``algorithms/<page>.html`` in the plugin's copy of the documentation (it
    works offline), or "" when the plugin has none (QGIS then shows the help text only)."""
    for site in DOCS_SITES:
        path = plugin_dir / site / "algorithms" / f"{page}.html"
        if path.is_file():
            return QUrl.fromLocalFile(str(path)).toString()
    return ""


def missing_packages() -> list[str]:
    """Names (as installed with pip) of the packages the core needs that this Python lacks."""
    return [package for module, package in REQUIRED_MODULES if importlib.util.find_spec(module) is None]


def can_execute() -> tuple[bool, str]:
    """What every Coreg algorithm's ``canExecute`` answers: (True, "") or (False, how to install)."""
    missing = missing_packages()
    if not missing:
        return True, ""
    return False, QCoreApplication.translate(
        "Coreg",
        "Coreg needs the Python package(s) {} in the Python that QGIS runs. "
        "Debian/Ubuntu: sudo apt install python3-rasterio python3-skimage. "
        "Windows: in the OSGeo4W Shell, python -m pip install rasterio scikit-image. "
        "macOS: /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install rasterio scikit-image. "
        "Then restart QGIS.",
    ).format(", ".join(missing))


class FeedbackLogHandler(logging.Handler):
    """Sends the core's log records to the Processing log."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        super().__init__(logging.INFO)
        self.feedback = feedback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 (logging's own contract)
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.feedback.pushWarning(message)
        else:
            self.feedback.pushInfo(message)


_log_lock = threading.Lock()
_log_runs = 0
_log_level_before = logging.NOTSET


@contextmanager
def forward_core_log(feedback: QgsProcessingFeedback) -> Iterator[None]:
    """Forward this run's records of the ``coreg`` logger (INFO and up) to ``feedback``.

    QGIS runs algorithms in background threads, several at once: the handler only takes the
    records logged by this thread, and the logger is held at INFO while any run forwards,
    then given back its own level when the last one ends.
    """
    global _log_runs, _log_level_before
    logger = logging.getLogger("coreg")
    handler = FeedbackLogHandler(feedback)
    handler.addFilter(_ThisThread())
    with _log_lock:
        if _log_runs == 0:
            _log_level_before = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        _log_runs += 1
        logger.addHandler(handler)
    try:
        yield
    finally:
        with _log_lock:
            logger.removeHandler(handler)
            _log_runs -= 1
            if _log_runs == 0:
                logger.setLevel(_log_level_before)


class _ThisThread(logging.Filter):
    """Passes the records logged by the thread that created it."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


def layer_path(layer: QgsMapLayer) -> str:
    """The GDAL dataset name behind a raster layer, exactly as GDAL opens it: the file path with
    its virtual file system prefix and inner path (``/vsizip//data/a.zip/b.tif``) or its subdataset
    or table (``GPKG:/data/file.gpkg:table``, ``NETCDF:"file.nc":var``) kept. Only QGIS's own
    ``|option:...`` suffixes (open options, which the core does not take) are dropped."""
    return layer.source().split("|", 1)[0]


def optional_double(
    algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], name: str, context: QgsProcessingContext
) -> float | None:
    """An optional number parameter as ``float``, or ``None`` when it is left empty."""
    value = parameters.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return algorithm.parameterAsDouble(parameters, name, context)


def allow_large_output_label() -> str:
    """The label of the ``ALLOW_LARGE_OUTPUT`` parameter, as the dialog shows it."""
    return QCoreApplication.translate(
        "Coreg", "Write outputs larger than the free disk space (compression may make them fit)"
    )


def allow_large_output_parameter() -> QgsProcessingParameterBoolean:
    """The advanced ``ALLOW_LARGE_OUTPUT`` parameter (unchecked): the core's ``allow_large_output``."""
    parameter = QgsProcessingParameterBoolean(ALLOW_LARGE_OUTPUT, allow_large_output_label(), defaultValue=False)
    parameter.setHelp(QCoreApplication.translate(
        "Coreg",
        "Outputs whose uncompressed size is larger than the free space of their disk are refused before "
        "any work, since a full disk would stop the run half way. Check this to write them anyway: "
        "compression (GeoTIFF's deflate by default) often makes them much smaller. Nothing is published "
        "if the disk does fill up.",
    ))
    parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
    return parameter


def processing_error(error: Exception) -> QgsProcessingException:
    """The ``QgsProcessingException`` to raise for an error of the core: its message, and for an
    output larger than the free disk space, the parameter that writes it anyway."""
    from ..coreg_plugin.common.errors import LargeOutputError

    if isinstance(error, LargeOutputError):
        return QgsProcessingException(QCoreApplication.translate(
            "Coreg", "{}; check '{}' (advanced parameters) to write it anyway"
        ).format(error, allow_large_output_label()))
    return QgsProcessingException(str(error))


def release_checked_layers(context: QgsProcessingContext) -> None:
    """Delete the layers a failed parameter check loaded into ``context``, now.

    Otherwise they are deleted whenever Python's garbage collector frees the failed run's context,
    which crashed QGIS 3.22 (segmentation fault) in a later, unrelated step.
    """
    context.temporaryLayerStore().removeAllMapLayers()


#: The core's resampling names, used only to build parameter lists when the core cannot be imported
#: (a dependency is missing); the algorithms then refuse to run through canExecute().
FALLBACK_RESAMPLING_METHODS = (
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
    "max", "min", "med", "q1", "q3", "sum", "rms",
)


class CoregAlgorithm(QgsProcessingAlgorithm):
    """What every Coreg algorithm shares: its group and its icon (``ICON_FILE`` in icons/)."""

    ICON_FILE = "coreg.svg"

    def group(self) -> str:
        return QCoreApplication.translate("Coreg", "Coregistration")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "coregistration"

    def icon(self) -> QIcon:
        return QIcon(self.svgIconPath())

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS API)
        return str(ICONS / self.ICON_FILE)

    def helpUrl(self) -> str:  # noqa: N802 (QGIS API)
        """This algorithm's page of the documentation shipped in the plugin (the dialog's Help button)."""
        return help_url(self.name())
