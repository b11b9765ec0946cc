"""Processing algorithm ``coreg:alignimagepair``: a thin QGIS wrapper around ``align_image_pair``.

The numerics live in the core (``coreg_plugin``). This module turns Processing parameters into
plain values, plain values into core keyword arguments (``core_kwargs``, testable without QGIS
running an algorithm), and the core's summary into Processing outputs (``outputs_from_summary``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .common import ICONS, can_execute, forward_core_log, layer_path, optional_double

ICON = ICONS / "align.svg"

# Used only to build the parameter list when the core cannot be imported (a dependency is
# missing); the algorithm then refuses to run through canExecute(), so these are never used to run.
FALLBACK_MODELS = ("auto", "translation", "affine")
FALLBACK_DEFAULT_RESAMPLING = "lanczos"
FALLBACK_RESAMPLING_METHODS = (
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
    "max", "min", "med", "q1", "q3", "sum", "rms",
)

OUTPUT_GRIDS = ("moving", "fixed")


def core_choices() -> tuple[Sequence[str], Sequence[str], str]:
    """The core's ``MODELS``, ``RESAMPLING_METHODS`` and default resampling, or fallbacks when it
    cannot be imported."""
    try:
        from ..coreg_plugin import MODELS, RESAMPLING_METHODS
        from ..coreg_plugin.options import DEFAULT_RESAMPLING
    except ImportError:
        return FALLBACK_MODELS, FALLBACK_RESAMPLING_METHODS, FALLBACK_DEFAULT_RESAMPLING
    return MODELS, RESAMPLING_METHODS, DEFAULT_RESAMPLING


def core_kwargs(
    values: Mapping[str, Any], *, models: Sequence[str], resampling_methods: Sequence[str]
) -> dict[str, Any]:
    """Turn plain parameter values (keyed by parameter name) into ``align_image_pair`` kwargs.

    ``values`` holds what Processing resolved: file paths as ``str``, bands 1-based as in QGIS,
    enums as option indices, optional numbers as ``float`` or ``None``. Bands become 0-based.
    """
    return {
        "moving_image": values["MOVING"],
        "fixed_image": values["FIXED"],
        "output_image": values["OUTPUT"],
        "moving_band_index": int(values["MOVING_BAND"]) - 1,
        "fixed_band_index": int(values["FIXED_BAND"]) - 1,
        "model": models[int(values["MODEL"])],
        "resampling": resampling_methods[int(values["RESAMPLING"])],
        "output_on_moving_grid": OUTPUT_GRIDS[int(values["OUTPUT_GRID"])] == "moving",
        "moving_nodata": values.get("MOVING_NODATA"),
        "fixed_nodata": values.get("FIXED_NODATA"),
        "output_nodata": values.get("OUTPUT_NODATA"),
        "use_edge_proxies": bool(values["EDGE_PROXY"]),
        "window_size": int(values["WINDOW_SIZE"]),
        "force": bool(values["FORCE"]),
    }


def outputs_from_summary(summary: Mapping[str, Any], output_image: str) -> dict[str, Any]:
    """Every output the algorithm declares, taken from the core's JSON summary."""
    return {
        "OUTPUT": output_image,
        "SHIFT_X_PX": summary["shift_px"]["x"],
        "SHIFT_Y_PX": summary["shift_px"]["y"],
        "SHIFT_X_M": summary["shift_m"]["x"],
        "SHIFT_Y_M": summary["shift_m"]["y"],
        "RMSE_PX": summary["rmse_px"],
        "TIE_POINTS_USED": summary["tie_points"]["used"],
        "QUALITY": summary["quality"]["score"],
        "MODEL_USED": summary["model"],
    }


class AlignImagePairAlgorithm(QgsProcessingAlgorithm):
    MOVING = "MOVING"
    FIXED = "FIXED"
    MOVING_BAND = "MOVING_BAND"
    FIXED_BAND = "FIXED_BAND"
    MODEL = "MODEL"
    RESAMPLING = "RESAMPLING"
    OUTPUT_GRID = "OUTPUT_GRID"
    MOVING_NODATA = "MOVING_NODATA"
    FIXED_NODATA = "FIXED_NODATA"
    OUTPUT_NODATA = "OUTPUT_NODATA"
    EDGE_PROXY = "EDGE_PROXY"
    WINDOW_SIZE = "WINDOW_SIZE"
    FORCE = "FORCE"
    OUTPUT = "OUTPUT"

    SHIFT_X_PX = "SHIFT_X_PX"
    SHIFT_Y_PX = "SHIFT_Y_PX"
    SHIFT_X_M = "SHIFT_X_M"
    SHIFT_Y_M = "SHIFT_Y_M"
    RMSE_PX = "RMSE_PX"
    TIE_POINTS_USED = "TIE_POINTS_USED"
    QUALITY = "QUALITY"
    MODEL_USED = "MODEL_USED"

    def tr(self, string: str) -> str:
        return QCoreApplication.translate("AlignImagePairAlgorithm", string)

    def createInstance(self) -> AlignImagePairAlgorithm:  # noqa: N802 (QGIS API)
        return AlignImagePairAlgorithm()

    def name(self) -> str:
        return "alignimagepair"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Align Image Pair")

    def group(self) -> str:
        return self.tr("Coregistration")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "coregistration"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS API)
        return str(ICON)

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Aligns a moving raster onto a fixed (reference) raster.\n\n"
            "Tie points are found by phase correlation in windows spread over the overlap, by "
            "default on edge proxies so that images from different dates or sensors still match. "
            "A translation or an affine model is fitted with outlier rejection ('auto' takes affine "
            "when there are enough well-spread reliable tie points), and the moving raster is resampled onto its "
            "own grid (default) or onto the fixed raster's grid.\n\n"
            "Outputs the aligned raster and the shift found, in pixels of the moving raster and in "
            "map units (metres), the RMSE of the fit, the number of tie points used and a quality "
            "score between 0 and 1. The run fails, writing nothing, when the registration is not "
            "trustworthy, unless 'Write the output even if the quality is low' is checked.\n\n"
            "Needs the Python packages rasterio and scikit-image."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return can_execute()

    def initAlgorithm(self, config: Mapping[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        models, resampling_methods, default_resampling = core_choices()

        moving = QgsProcessingParameterRasterLayer(self.MOVING, self.tr("Moving image (to align)"))
        moving.setHelp(self.tr("The raster to shift or warp onto the fixed image."))
        self.addParameter(moving)
        fixed = QgsProcessingParameterRasterLayer(self.FIXED, self.tr("Fixed image (reference)"))
        fixed.setHelp(self.tr("The reference raster; it is not changed."))
        self.addParameter(fixed)
        # Optional with a default: QGIS 3.22 (qgis_process, processing.run) treats a mandatory band
        # parameter that is left out as missing, ignoring its default.
        for name, description, parent in (
            (self.MOVING_BAND, self.tr("Moving image band used for matching (default 1)"), self.MOVING),
            (self.FIXED_BAND, self.tr("Fixed image band used for matching (default 1)"), self.FIXED),
        ):
            self.addParameter(QgsProcessingParameterBand(name, description, 1, parent, optional=True))
        model = QgsProcessingParameterEnum(
            self.MODEL, self.tr("Geometric model"), options=list(models), defaultValue=list(models).index("auto")
        )
        model.setHelp(
            self.tr(
                "'auto' uses an affine model when there are enough well-spread reliable tie points, "
                "else a translation."
            )
        )
        self.addParameter(model)
        resampling = QgsProcessingParameterEnum(
            self.RESAMPLING,
            self.tr("Resampling method"),
            options=list(resampling_methods),
            defaultValue=list(resampling_methods).index(default_resampling),
        )
        resampling.setHelp(
            self.tr(
                "How the output is resampled. The default, lanczos, keeps sub-pixel positions "
                "(bilinear and cubic leave 0.02 to 0.04 px of apparent shift at fractional offsets)."
            )
        )
        self.addParameter(resampling)
        self.addParameter(
            QgsProcessingParameterEnum(
                self.OUTPUT_GRID,
                self.tr("Output grid"),
                options=[self.tr("Moving image grid"), self.tr("Fixed image grid")],
                defaultValue=0,
            )
        )
        for name, description in (
            (self.MOVING_NODATA, self.tr("Moving image no-data value (default: from the file)")),
            (self.FIXED_NODATA, self.tr("Fixed image no-data value (default: from the file)")),
            (self.OUTPUT_NODATA, self.tr("Output no-data value (default: the moving image's)")),
        ):
            self.addParameter(
                QgsProcessingParameterNumber(
                    name, description, type=QgsProcessingParameterNumber.Double, optional=True
                )
            )
        edge = QgsProcessingParameterBoolean(
            self.EDGE_PROXY, self.tr("Match on edge proxies (robust across dates and sensors)"), defaultValue=True
        )
        self.addParameter(edge)

        window = QgsProcessingParameterNumber(
            self.WINDOW_SIZE,
            self.tr("Matching window size (pixels)"),
            type=QgsProcessingParameterNumber.Integer,
            defaultValue=256,
            minValue=32,
        )
        force = QgsProcessingParameterBoolean(
            self.FORCE, self.tr("Write the output even if the quality is low"), defaultValue=False
        )
        for parameter in (window, force):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Aligned image")))

        for name, description in (
            (self.SHIFT_X_PX, self.tr("Shift in x (moving image pixels)")),
            (self.SHIFT_Y_PX, self.tr("Shift in y (moving image pixels)")),
            (self.SHIFT_X_M, self.tr("Shift in x (map units)")),
            (self.SHIFT_Y_M, self.tr("Shift in y (map units)")),
            (self.RMSE_PX, self.tr("RMSE of the fit (pixels)")),
            (self.TIE_POINTS_USED, self.tr("Tie points used")),
            (self.QUALITY, self.tr("Quality score (0 to 1)")),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, description))
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, self.tr("Geometric model used")))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        # Name the file in the message: the generic check only says "Incorrect parameter value".
        for name, band_name, cannot_open, no_band in (
            (
                self.MOVING,
                self.MOVING_BAND,
                self.tr("Cannot open the moving image {}: the file does not exist or is not a raster."),
                self.tr("The moving image {} has no band {} (it has {} band(s))."),
            ),
            (
                self.FIXED,
                self.FIXED_BAND,
                self.tr("Cannot open the fixed image {}: the file does not exist or is not a raster."),
                self.tr("The fixed image {} has no band {} (it has {} band(s))."),
            ),
        ):
            if parameters.get(name) in (None, ""):
                continue
            layer = self.parameterAsRasterLayer(parameters, name, context)
            if layer is None or not layer.isValid():
                return False, cannot_open.format(parameters[name])
            if parameters.get(band_name) not in (None, ""):
                band = self.parameterAsInt(parameters, band_name, context)
                if not 1 <= band <= layer.bandCount():
                    return False, no_band.format(layer_path(layer), band, layer.bandCount())
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        ok, message = self.canExecute()
        if not ok:
            raise QgsProcessingException(message)
        from ..coreg_plugin import MODELS, RESAMPLING_METHODS, CoregError, align_image_pair

        feedback = feedback or QgsProcessingFeedback()
        kwargs = core_kwargs(
            self.plain_values(parameters, context), models=MODELS, resampling_methods=RESAMPLING_METHODS
        )
        feedback.pushInfo(self.tr("Aligning {} onto {}").format(kwargs["moving_image"], kwargs["fixed_image"]))
        try:
            with forward_core_log(feedback):
                result = align_image_pair(
                    **kwargs, progress=feedback.setProgress, is_cancelled=feedback.isCanceled
                )
        except CoregError as error:
            raise QgsProcessingException(str(error)) from error
        feedback.pushInfo(json.dumps(result.summary, indent=2, default=str))
        return outputs_from_summary(result.summary, kwargs["output_image"])

    def plain_values(self, parameters, context) -> dict[str, Any]:
        """Resolve Processing parameters into the plain values ``core_kwargs`` takes."""
        values: dict[str, Any] = {}
        for name in (self.MOVING, self.FIXED):
            layer = self.parameterAsRasterLayer(parameters, name, context)
            if layer is None or not layer.isValid():
                raise QgsProcessingException(self.invalidRasterError(parameters, name))
            if layer.providerType() != "gdal":
                raise QgsProcessingException(
                    self.tr("{} is not a file-based (GDAL) raster; save it to a GeoTIFF first.").format(layer.name())
                )
            values[name] = layer_path(layer)
        for name in (self.MOVING_BAND, self.FIXED_BAND, self.WINDOW_SIZE):
            values[name] = self.parameterAsInt(parameters, name, context)
        for name in (self.MODEL, self.RESAMPLING, self.OUTPUT_GRID):
            values[name] = self.parameterAsEnum(parameters, name, context)
        for name in (self.MOVING_NODATA, self.FIXED_NODATA, self.OUTPUT_NODATA):
            values[name] = optional_double(self, parameters, name, context)
        for name in (self.EDGE_PROXY, self.FORCE):
            values[name] = self.parameterAsBool(parameters, name, context)
        values[self.OUTPUT] = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        return values
