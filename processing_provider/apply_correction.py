"""Processing algorithm ``coreg:applycorrection``: a thin QGIS wrapper around ``apply_correction``.

Applies a correction file saved by Align Image Pair (its ``OUTPUT_CORRECTION``) to any raster of the
same scene; the output stays on the input's own grid. The numerics live in the core.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from .common import (
    ALLOW_LARGE_OUTPUT,
    FALLBACK_RESAMPLING_METHODS,
    CoregAlgorithm,
    allow_large_output_parameter,
    can_execute,
    forward_core_log,
    layer_path,
    processing_error,
)

FALLBACK_DEFAULT_RESAMPLING = "lanczos"


def core_choices() -> tuple[Sequence[str], str]:
    """The core's resampling methods and default, or fallbacks when it cannot be imported."""
    try:
        from ..coreg_plugin import RESAMPLING_METHODS
        from ..coreg_plugin.common.names import DEFAULT_RESAMPLING
    except ImportError:
        return FALLBACK_RESAMPLING_METHODS, FALLBACK_DEFAULT_RESAMPLING
    return RESAMPLING_METHODS, DEFAULT_RESAMPLING


def core_kwargs(values: Mapping[str, Any], *, resampling_methods: Sequence[str]) -> dict[str, Any]:
    """Plain parameter values (paths as ``str``, enum as index, bools) -> ``apply_correction`` kwargs."""
    return {
        "correction": values["CORRECTION"],
        "input_image": values["INPUT"],
        "output_image": values["OUTPUT"],
        "resampling": resampling_methods[int(values["RESAMPLING"])],
        "no_resample": bool(values["GEOREFERENCE_ONLY"]),
        "allow_large_output": bool(values[ALLOW_LARGE_OUTPUT]),
    }


def outputs_from_summary(summary: Mapping[str, Any], output_image: str) -> dict[str, Any]:
    """Every output the algorithm declares, from the core's summary."""
    return {
        "OUTPUT": output_image,
        "SHIFT_X_PX": summary["shift_px"]["x"],
        "SHIFT_Y_PX": summary["shift_px"]["y"],
        "DOMAIN_COVERAGE": summary["domain_coverage"],
        "MODEL_USED": summary["model"],
    }


class ApplyCorrectionAlgorithm(CoregAlgorithm):
    ICON_FILE = "align.svg"

    CORRECTION = "CORRECTION"
    INPUT = "INPUT"
    RESAMPLING = "RESAMPLING"
    GEOREFERENCE_ONLY = "GEOREFERENCE_ONLY"
    ALLOW_LARGE_OUTPUT = ALLOW_LARGE_OUTPUT
    OUTPUT = "OUTPUT"

    def tr(self, string: str) -> str:
        return QCoreApplication.translate("ApplyCorrectionAlgorithm", string)

    def createInstance(self) -> ApplyCorrectionAlgorithm:  # noqa: N802 (QGIS API)
        return ApplyCorrectionAlgorithm()

    def name(self) -> str:
        return "applycorrection"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Apply Correction")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Applies a correction saved by Align Image Pair (its 'Correction file' output, JSON) to any "
            "raster of the same scene: other bands at other resolutions, masks, derived rasters, in any CRS.\n\n"
            "The output keeps the input's own grid (CRS, pixel size, extent), every band, the data type, "
            "no-data value, band descriptions and colour table. Use 'nearest' or 'mode' resampling for "
            "class rasters: they keep exactly the class values.\n\n"
            "'Correct the georeference only' copies the pixels unchanged and moves only the geotransform; "
            "it works for translations only (a correction estimated with the 'translation' model).\n\n"
            "An input wholly outside the area where the correction was estimated is refused; an input "
            "partly outside is corrected with a warning giving the fraction covered."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return can_execute()

    def initAlgorithm(self, config: Mapping[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        resampling_methods, default_resampling = core_choices()
        correction = QgsProcessingParameterFile(self.CORRECTION, self.tr("Correction file"), extension="json")
        correction.setHelp(self.tr("The correction saved by Align Image Pair ('Correction file' output, JSON)."))
        self.addParameter(correction)
        source = QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Raster to correct"))
        source.setHelp(self.tr("Any raster of the scene the correction was estimated on (any band, resolution, "
                               "CRS, data type; masks and class rasters too)."))
        self.addParameter(source)
        resampling = QgsProcessingParameterEnum(
            self.RESAMPLING, self.tr("Resampling method"), options=list(resampling_methods),
            defaultValue=list(resampling_methods).index(default_resampling),
        )
        resampling.setHelp(self.tr("How the output is resampled. The default, lanczos, keeps sub-pixel positions. "
                                   "Use 'nearest' or 'mode' for class or mask rasters (no new values)."))
        self.addParameter(resampling)
        georeference_only = QgsProcessingParameterBoolean(
            self.GEOREFERENCE_ONLY, self.tr("Correct the georeference only (pixels unchanged)"), defaultValue=False
        )
        georeference_only.setHelp(self.tr("Copy the pixels bit for bit and move only the geotransform. Only for "
                                          "a translation; any other model is refused."))
        self.addParameter(georeference_only)
        self.addParameter(allow_large_output_parameter())
        output = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Corrected raster"))
        output.setHelp(self.tr("The corrected raster, on the input's own grid. Nothing is written on failure."))
        self.addParameter(output)
        for name, description in (
            ("SHIFT_X_PX", self.tr("Shift in x at the raster's centre (its pixels)")),
            ("SHIFT_Y_PX", self.tr("Shift in y at the raster's centre (its pixels)")),
            ("DOMAIN_COVERAGE", self.tr("Fraction of the raster inside the correction's domain")),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, description))
        self.addOutput(QgsProcessingOutputString("MODEL_USED", self.tr("Model of the correction")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, ANN001, ANN201 (QGIS API)
        ok, message = self.canExecute()
        if not ok:
            raise QgsProcessingException(message)
        from ..coreg_plugin import RESAMPLING_METHODS, CoregError, apply_correction

        feedback = feedback or QgsProcessingFeedback()
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        values = {
            "CORRECTION": self.parameterAsFile(parameters, self.CORRECTION, context),
            "INPUT": layer_path(layer),
            "OUTPUT": self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            "RESAMPLING": self.parameterAsEnum(parameters, self.RESAMPLING, context),
            "GEOREFERENCE_ONLY": self.parameterAsBool(parameters, self.GEOREFERENCE_ONLY, context),
            self.ALLOW_LARGE_OUTPUT: self.parameterAsBool(parameters, self.ALLOW_LARGE_OUTPUT, context),
        }
        kwargs = core_kwargs(values, resampling_methods=RESAMPLING_METHODS)
        try:
            with forward_core_log(feedback):
                summary = apply_correction(**kwargs, progress=feedback.setProgress, is_cancelled=feedback.isCanceled)
        except CoregError as error:
            raise processing_error(error) from error
        feedback.pushInfo(json.dumps(summary, indent=2, default=str))
        return outputs_from_summary(summary, kwargs["output_image"])
