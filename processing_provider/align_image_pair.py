"""Processing algorithm ``coreg:alignimagepair``: a thin QGIS wrapper around ``align_image_pair``.

The numerics live in the core (``coreg_plugin``). This module turns Processing parameters into
plain values, plain values into core keyword arguments (``core_kwargs``, testable without QGIS
running an algorithm), and the core's summary into Processing outputs (``outputs_from_summary``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qgis.core import (
    QgsFeatureSink,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from . import tie_point_style
from .common import (
    ALLOW_LARGE_OUTPUT,
    FALLBACK_RESAMPLING_METHODS,
    CoregAlgorithm,
    allow_large_output_parameter,
    can_execute,
    forward_core_log,
    layer_path,
    optional_double,
    processing_error,
    release_checked_layers,
)
from .qgis_enums import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_VECTOR_POINT, WKB_POINT

if TYPE_CHECKING:
    from ..coreg_plugin.workflows.align import AlignResult

# Used only to build the parameter list when the core cannot be imported (a dependency is
# missing); the algorithm then refuses to run through canExecute(), so these are never used to run.
FALLBACK_MODELS = ("auto", "translation", "affine", "local")
FALLBACK_DEFAULT_RESAMPLING = "lanczos"

OUTPUT_GRIDS = ("moving", "fixed")


def core_choices() -> tuple[Sequence[str], Sequence[str], str]:
    """The core's ``MODELS``, ``RESAMPLING_METHODS`` and default resampling, or fallbacks when it
    cannot be imported."""
    try:
        from ..coreg_plugin import MODELS, RESAMPLING_METHODS
        from ..coreg_plugin.common.names import DEFAULT_RESAMPLING
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
        "report": values.get("OUTPUT_REPORT") or None,
        "no_resample": bool(values.get("GEOREFERENCE_ONLY", False)),
        "correction_file": values.get("OUTPUT_CORRECTION") or None,
        "gcp_file": values.get("OUTPUT_GCP") or None,
        "allow_large_output": bool(values[ALLOW_LARGE_OUTPUT]),
    }


def outputs_from_summary(
    summary: Mapping[str, Any], output_image: str, tie_points: str | None = None, report: str | None = None
) -> dict[str, Any]:
    """Every output the algorithm declares, taken from the core's JSON summary.

    ``tie_points`` (the sink's destination id) and ``report`` (the HTML path) are ``None`` when not asked
    for, as are the correction and GCP files when the summary has none. The standard accuracy figures
    come from the summary's ``accuracy`` (``None`` where not computable, ``CEOS_ARD`` too).
    """
    accuracy = summary.get("accuracy") or {}
    return {
        "OUTPUT": output_image,
        "OUTPUT_TIE_POINTS": tie_points,
        "OUTPUT_REPORT": report,
        "OUTPUT_CORRECTION": summary.get("correction_file"),
        "OUTPUT_GCP": summary.get("gcp_file"),
        "SHIFT_X_PX": summary["shift_px"]["x"],
        "SHIFT_Y_PX": summary["shift_px"]["y"],
        "SHIFT_X_M": summary["shift_m"]["x"],
        "SHIFT_Y_M": summary["shift_m"]["y"],
        "RMSE_PX": summary["rmse_px"],
        "TIE_POINTS_USED": summary["tie_points"]["used"],
        "QUALITY": summary["quality"]["score"],
        "MODEL_USED": summary["model"],
        "VERDICT": summary["verdict"],
        "UNCERTAINTY_PX": summary["uncertainty_px"]["max"],
        "RMSE_FIT_PX": accuracy.get("rmse_fit_px"),
        "RMSE_VERIFY_PX": accuracy.get("rmse_verify_px"),
        "CE90_PX": accuracy.get("ce90_px"),
        "CE90_M": accuracy.get("ce90_m"),
        "CEOS_ARD": accuracy.get("ceos_ard"),
    }


class AlignImagePairAlgorithm(CoregAlgorithm):
    ICON_FILE = "align.svg"

    MOVING = "MOVING"
    FIXED = "FIXED"
    MOVING_BAND = "MOVING_BAND"
    FIXED_BAND = "FIXED_BAND"
    MODEL = "MODEL"
    RESAMPLING = "RESAMPLING"
    OUTPUT_GRID = "OUTPUT_GRID"
    GEOREFERENCE_ONLY = "GEOREFERENCE_ONLY"
    MOVING_NODATA = "MOVING_NODATA"
    FIXED_NODATA = "FIXED_NODATA"
    OUTPUT_NODATA = "OUTPUT_NODATA"
    EDGE_PROXY = "EDGE_PROXY"
    WINDOW_SIZE = "WINDOW_SIZE"
    FORCE = "FORCE"
    ALLOW_LARGE_OUTPUT = ALLOW_LARGE_OUTPUT
    OUTPUT = "OUTPUT"
    OUTPUT_TIE_POINTS = "OUTPUT_TIE_POINTS"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_CORRECTION = "OUTPUT_CORRECTION"
    OUTPUT_GCP = "OUTPUT_GCP"

    SHIFT_X_PX = "SHIFT_X_PX"
    SHIFT_Y_PX = "SHIFT_Y_PX"
    SHIFT_X_M = "SHIFT_X_M"
    SHIFT_Y_M = "SHIFT_Y_M"
    RMSE_PX = "RMSE_PX"
    TIE_POINTS_USED = "TIE_POINTS_USED"
    QUALITY = "QUALITY"
    MODEL_USED = "MODEL_USED"
    VERDICT = "VERDICT"
    UNCERTAINTY_PX = "UNCERTAINTY_PX"
    RMSE_FIT_PX = "RMSE_FIT_PX"
    RMSE_VERIFY_PX = "RMSE_VERIFY_PX"
    CE90_PX = "CE90_PX"
    CE90_M = "CE90_M"
    CEOS_ARD = "CEOS_ARD"

    def tr(self, string: str) -> str:
        return QCoreApplication.translate("AlignImagePairAlgorithm", string)

    def createInstance(self) -> AlignImagePairAlgorithm:  # noqa: N802 (QGIS API)
        return AlignImagePairAlgorithm()

    def name(self) -> str:
        return "alignimagepair"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Align Image Pair")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Aligns a moving raster onto a fixed (reference) raster.\n\n"
            "Tie points are found by phase correlation in windows spread over the overlap, by "
            "default on edge proxies so that images from different dates or sensors still match. "
            "A translation, an affine or a local model is fitted with outlier rejection ('auto' keeps the "
            "one that best explains tie points it was not fitted to), and the moving raster is resampled "
            "onto its own grid (default) or onto the fixed raster's grid.\n\n"
            "Outputs the aligned raster and the shift found, in pixels of the moving raster and in map units "
            "(metres), the RMSE of the fit, the number of tie points used and a quality score between 0 and 1, "
            "and the standard accuracy figures: the radial RMSE of the fit and on held-out tie points (as "
            "Landsat's GEOMETRIC_RMSE_MODEL and GEOMETRIC_RMSE_VERIFY), CE90 of the held-out residuals in pixels "
            "and metres, and whether the result meets the CEOS-ARD geometric threshold (held-out RMSE at most 0.5 "
            "pixel of the coarser grid). Optionally also a point layer of the tie points (arrows show the "
            "direction and size of the correction, rejected points are red) and an HTML report with pictures of "
            "the displacements, the residuals and a before/after checkerboard; the correction as a file, to apply "
            "to the other rasters of the scene with Apply Correction; and the tie points as a Georeferencer GCP "
            "file. 'Correct the georeference only' moves the geotransform and keeps the pixels unchanged "
            "(translations only).\n\n"
            "The quality score is the product of four terms, each between 0 and 1, so any one weakness "
            "pulls it down: count (inliers / 8, capped at 1), spread (how much of the overlap the inliers "
            "cover), fit (exp(-(RMSE / 3 px)^2), the RMSE in pixels of the coarser of the two grids: 0.89 "
            "at 1 px, 0.64 at 2 px: matches by chance scatter by tens of pixels) and correlation (median "
            "tie-point reliability / 0.4, capped at 1). "
            "The run fails, writing nothing, when the score is below 0.3, naming the weakest term, unless "
            "'Write the output even if the quality is low' is checked.\n\n"
            "The verdict: 'corrected', with the 95 % uncertainty of the correction; 'already aligned' when "
            "the correction found would not improve the image with 95 % confidence (below about 1.34 "
            "times its 95 % bound, over the overlap centre and corners; nothing is corrected: on the moving "
            "grid the output is the moving image unchanged); "
            "'not converged' when the refinement kept moving the model (applied, but not trusted); or "
            "refused, writing nothing, when the images cannot be matched or the quality gate fails.\n\n"
            "Only the moving and fixed images are required; every other setting has a default.\n\n"
            "Needs the Python packages rasterio and scikit-image (and matplotlib for the report)."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return can_execute()

    def initAlgorithm(self, config: Mapping[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        models, resampling_methods, default_resampling = core_choices()

        moving = QgsProcessingParameterRasterLayer(self.MOVING, self.tr("Moving image (to align)"))
        moving.setHelp(self.tr("The raster to shift or warp onto the fixed image (any GDAL raster, CRS, "
                               "pixel size, data type or band count)."))
        self.addParameter(moving)
        fixed = QgsProcessingParameterRasterLayer(self.FIXED, self.tr("Fixed image (reference)"))
        fixed.setHelp(self.tr("The reference raster; it is not changed. It may have another CRS and pixel size."))
        self.addParameter(fixed)
        # Optional with a default: QGIS 3.22 (qgis_process, processing.run) treats a mandatory band
        # parameter that is left out as missing, ignoring its default.
        moving_band = QgsProcessingParameterBand(
            self.MOVING_BAND, self.tr("Moving image band used for matching (default 1)"), 1, self.MOVING, optional=True
        )
        moving_band.setHelp(self.tr("Band of the moving image the tie points are measured on (1 = first band). "
                                    "Every band is corrected in the output."))
        fixed_band = QgsProcessingParameterBand(
            self.FIXED_BAND, self.tr("Fixed image band used for matching (default 1)"), 1, self.FIXED, optional=True
        )
        fixed_band.setHelp(self.tr("Band of the fixed image the tie points are measured on (1 = first band). "
                                   "It may be another wavelength than the moving band when edge proxies are on."))
        for band in (moving_band, fixed_band):
            self.addParameter(band)
        model = QgsProcessingParameterEnum(
            self.MODEL, self.tr("Geometric model"), options=list(models), defaultValue=list(models).index("auto")
        )
        model.setHelp(
            self.tr(
                "'auto' chooses no correction, a translation, an affine or the local model by how well "
                "each explains tie points it was not fitted to. 'translation' corrects a shift only; "
                "'affine' also rotation (up to 10 degrees), scale (0.9 to 1.1) and shear; 'local' adds a "
                "smooth displacement field through the tie points (relief, lens or orthorectification "
                "distortions), falling back to the affine outside them."
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
                "(bilinear and cubic leave 0.02 to 0.04 px of apparent shift at fractional offsets). "
                "Use 'nearest' for class or label rasters."
            )
        )
        self.addParameter(resampling)
        grid = QgsProcessingParameterEnum(
            self.OUTPUT_GRID,
            self.tr("Output grid"),
            options=[self.tr("Moving image grid"), self.tr("Fixed image grid")],
            defaultValue=0,
        )
        grid.setHelp(self.tr("'Moving image grid' keeps the moving image's CRS, pixels and extent and changes "
                             "only its content. 'Fixed image grid' writes onto the fixed image's CRS and pixels, "
                             "clipped to the moving image's footprint, ready to compare pixel by pixel."))
        self.addParameter(grid)
        georeference_only = QgsProcessingParameterBoolean(
            self.GEOREFERENCE_ONLY, self.tr("Correct the georeference only (pixels unchanged)"), defaultValue=False
        )
        georeference_only.setHelp(self.tr("Copy the moving image's pixels bit for bit and move only its geotransform "
                                          "(a translation is then estimated; the output stays on the moving grid). "
                                          "The 'affine' model and the fixed image grid cannot be used with it."))
        self.addParameter(georeference_only)
        moving_nodata = QgsProcessingParameterNumber(
            self.MOVING_NODATA, self.tr("Moving image no-data value (default: from the file)"),
            type=NUMBER_DOUBLE, optional=True,
        )
        moving_nodata.setHelp(self.tr("An extra value to ignore in the moving image, on top of its own no-data "
                                      "value and mask. Leave empty to use only the file's."))
        fixed_nodata = QgsProcessingParameterNumber(
            self.FIXED_NODATA, self.tr("Fixed image no-data value (default: from the file)"),
            type=NUMBER_DOUBLE, optional=True,
        )
        fixed_nodata.setHelp(self.tr("An extra value to ignore in the fixed image, on top of its own no-data "
                                     "value and mask. Leave empty to use only the file's."))
        output_nodata = QgsProcessingParameterNumber(
            self.OUTPUT_NODATA, self.tr("Output no-data value (default: the moving image's)"),
            type=NUMBER_DOUBLE, optional=True,
        )
        output_nodata.setHelp(self.tr("Value written where the output has no data. Default: the moving image's "
                                      "no-data value, else NaN for floating-point rasters and 0 for integers."))
        for nodata in (moving_nodata, fixed_nodata, output_nodata):
            self.addParameter(nodata)
        edge = QgsProcessingParameterBoolean(
            self.EDGE_PROXY, self.tr("Match on edge proxies (robust across dates and sensors)"), defaultValue=True
        )
        edge.setHelp(self.tr("Match gradient-magnitude images instead of the raw values, so that images from "
                             "different dates, seasons, bands or sensors still match. Turn off only for images "
                             "of the same kind with little texture."))
        self.addParameter(edge)

        window = QgsProcessingParameterNumber(
            self.WINDOW_SIZE,
            self.tr("Matching window size (pixels)"),
            type=NUMBER_INTEGER,
            defaultValue=256,
            minValue=32,
        )
        window.setHelp(self.tr("Side of each tie-point window, in moving-image pixels (in the fixed image's "
                               "pixels when those are coarser: the windows are matched there). Larger windows "
                               "match more reliably on weak texture; smaller ones give more tie points. Expert "
                               "setting."))
        force = QgsProcessingParameterBoolean(
            self.FORCE, self.tr("Write the output even if the quality is low"), defaultValue=False
        )
        force.setHelp(self.tr("Write the aligned image even when the quality score is below 0.3 (it is then "
                              "reported as not trusted). Expert setting: check the report first."))
        for parameter in (window, force):
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(allow_large_output_parameter())

        output = QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Aligned image"))
        output.setHelp(self.tr("The corrected moving image, with all its bands and its data type, in the format "
                               "its extension names (GeoTIFF by default). Nothing is written when the "
                               "registration fails."))
        self.addParameter(output)
        tie_points = QgsProcessingParameterFeatureSink(
            self.OUTPUT_TIE_POINTS, self.tr("Tie points"), type=SOURCE_VECTOR_POINT,
            optional=True, createByDefault=False,
        )
        tie_points.setHelp(self.tr("Optional point layer, in the moving image's CRS, with one point per matching "
                                   "window: its status (used, outlier, unreliable, no texture, nodata), the "
                                   "correction there in pixels and map units, its reliability and its residual "
                                   "after the fit. Loaded with arrows showing the direction and size of the "
                                   "correction; rejected points are red."))
        self.addParameter(tie_points)
        report = QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("Report"), self.tr("HTML files (*.html)"),
            optional=True, createByDefault=False,
        )
        report.setHelp(self.tr("Optional HTML report, shown in the Results Viewer: the model and its parameters, "
                               "the figures of the run, what the quality score means, and pictures of the "
                               "displacements, the residuals and a before/after checkerboard. Needs matplotlib."))
        self.addParameter(report)
        correction = QgsProcessingParameterFileDestination(
            self.OUTPUT_CORRECTION, self.tr("Correction file"), self.tr("JSON files (*.json)"),
            optional=True, createByDefault=False,
        )
        correction.setHelp(self.tr("Optional: the correction as a file (JSON), to apply to the other bands, masks and "
                                   "derived rasters of the scene with Apply Correction."))
        self.addParameter(correction)
        gcp = QgsProcessingParameterFileDestination(
            self.OUTPUT_GCP, self.tr("Ground control points"), self.tr("QGIS GCP files (*.points)"),
            optional=True, createByDefault=False,
        )
        gcp.setHelp(self.tr("Optional: the tie points used, as a QGIS Georeferencer .points file (pixel and map "
                            "coordinates), to inspect or edit them there or to warp with GDAL (gdalwarp -tps)."))
        self.addParameter(gcp)

        for name, description in (
            (self.SHIFT_X_PX, self.tr("Shift in x (moving image pixels)")),
            (self.SHIFT_Y_PX, self.tr("Shift in y (moving image pixels)")),
            (self.SHIFT_X_M, self.tr("Shift in x (map units)")),
            (self.SHIFT_Y_M, self.tr("Shift in y (map units)")),
            (self.RMSE_PX, self.tr("RMSE of the fit (pixels)")),
            (self.TIE_POINTS_USED, self.tr("Tie points used")),
            (self.QUALITY, self.tr("Quality score (0 to 1)")),
            (self.UNCERTAINTY_PX, self.tr("95 % uncertainty of the correction (moving image pixels, "
                                          "largest of the overlap centre and corners)")),
            (self.RMSE_FIT_PX, self.tr("Radial RMSE of the applied model on the tie points it was fitted to "
                                       "(moving image pixels; as Landsat's GEOMETRIC_RMSE_MODEL)")),
            (self.RMSE_VERIFY_PX, self.tr("Radial RMSE on held-out tie points (moving image pixels; as Landsat's "
                                          "GEOMETRIC_RMSE_VERIFY)")),
            (self.CE90_PX, self.tr("CE90: 90th percentile of the held-out radial residuals (moving image pixels)")),
            (self.CE90_M, self.tr("CE90 in metres")),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, description))
        self.addOutput(QgsProcessingOutputBoolean(
            self.CEOS_ARD, self.tr("Meets the CEOS-ARD geometric threshold: held-out radial RMSE at most 0.5 pixel "
                                   "of the coarser of the two grids")))
        self.addOutput(QgsProcessingOutputString(self.MODEL_USED, self.tr("Geometric model used")))
        self.addOutput(QgsProcessingOutputString(
            self.VERDICT, self.tr("Verdict: corrected, already_aligned (output = moving image unchanged) "
                                  "or not_converged (corrected, not trusted)")))

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        ok, message = self._check_parameter_values(parameters, context)
        if not ok:
            release_checked_layers(context)
        return ok, message

    def _check_parameter_values(self, parameters: dict[str, Any], context: QgsProcessingContext) -> tuple[bool, str]:
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

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback | None,
    ) -> dict[str, Any]:
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
            raise processing_error(error) from error
        feedback.pushInfo(result.summary["message"])
        feedback.pushInfo(json.dumps(result.summary, indent=2, default=str))
        tie_points = self.write_tie_points(result, parameters, context)
        return outputs_from_summary(result.summary, kwargs["output_image"], tie_points, kwargs["report"])

    def write_tie_points(
        self, result: AlignResult, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> str | None:
        """Fill the optional tie-point sink and style it on loading; return its destination id."""
        from ..coreg_plugin.report.html import tie_point_rows

        layer_fields = tie_point_style.fields()
        crs = self.parameterAsRasterLayer(parameters, self.MOVING, context).crs()
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT_TIE_POINTS, context, layer_fields, WKB_POINT, crs
        )
        if sink is None:
            return None
        for feature in tie_point_style.features(tie_point_rows(result), layer_fields):
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        del sink  # flush and close the file before Processing loads it
        if context.willLoadLayerOnCompletion(dest_id):
            details = context.layerToLoadOnCompletionDetails(dest_id)
            details.setPostProcessor(tie_point_style.keep(tie_point_style.TiePointStyler()))
        return dest_id

    def plain_values(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
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
        for name in (self.EDGE_PROXY, self.FORCE, self.GEOREFERENCE_ONLY, self.ALLOW_LARGE_OUTPUT):
            values[name] = self.parameterAsBool(parameters, name, context)
        values[self.OUTPUT] = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        values[self.OUTPUT_REPORT] = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        for name in (self.OUTPUT_CORRECTION, self.OUTPUT_GCP):
            values[name] = self.parameterAsFileOutput(parameters, name, context) or None
        return values
