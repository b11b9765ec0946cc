"""Processing algorithm ``coreg:coregisterstack``: a thin QGIS wrapper around ``coregister_stack``.

The numerics live in the core (``coreg_plugin``). This module turns Processing parameters into
plain values, plain values into core keyword arguments (``core_kwargs``, testable without QGIS
running an algorithm), and the core's summary into Processing outputs (``outputs_from_summary``).
The per-input files written to the output folder are loaded on completion into one layer-tree
group, by a layer post-processor that runs on the main thread (``GroupLayersPostProcessor``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from qgis.core import (
    QgsLayerTree,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication

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
from .qgis_enums import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_RASTER

# Used only to build the parameter list when the core cannot be imported (a dependency is
# missing); the algorithm then refuses to run through canExecute(), so these are never used to run.
FALLBACK_MODES = ("merge", "stack")
FALLBACK_MERGE_METHOD_NAMES = ("first", "last", "min", "max", "sum", "count", "mean")
FALLBACK_DEFAULT_RESAMPLING = "bilinear"
FALLBACK_MODELS = ("auto", "translation", "affine", "local")

GROUP_PREFIX = "Coregister Stack: "

# LayerDetails.setPostProcessor() takes ownership (the context deletes each post-processor when it
# is destroyed, so every layer gets its own instance), but a Python subclass must also be kept
# referenced from Python until then, or it can be garbage collected before it runs. Entries are
# dropped once their C++ side has been deleted.
_POST_PROCESSORS: list[GroupLayersPostProcessor] = []


def core_choices() -> tuple[Sequence[str], Sequence[str], Sequence[str], str, Sequence[str]]:
    """The core's ``MODES``, ``MERGE_METHOD_NAMES``, ``RESAMPLING_METHODS``, default stack
    resampling and ``MODELS``, or fallbacks when it cannot be imported."""
    try:
        from ..coreg_plugin import MERGE_METHOD_NAMES, MODELS, MODES, RESAMPLING_METHODS
        from ..coreg_plugin.common.names import DEFAULT_STACK_RESAMPLING
    except ImportError:
        return (FALLBACK_MODES, FALLBACK_MERGE_METHOD_NAMES, FALLBACK_RESAMPLING_METHODS,
                FALLBACK_DEFAULT_RESAMPLING, FALLBACK_MODELS)
    return MODES, MERGE_METHOD_NAMES, RESAMPLING_METHODS, DEFAULT_STACK_RESAMPLING, MODELS


def core_kwargs(
    values: Mapping[str, Any],
    *,
    modes: Sequence[str],
    merge_methods: Sequence[str],
    resampling_methods: Sequence[str],
    models: Sequence[str],
) -> dict[str, Any]:
    """Turn plain parameter values (keyed by parameter name) into ``coregister_stack`` kwargs.

    ``values`` holds what Processing resolved: file paths as ``str`` (``INPUTS`` a list of them;
    an output left empty as ``""`` or ``None``), bands 1-based as in QGIS, enums as option indices,
    the optional no-data as ``float`` or ``None``. Bands become 0-based; empty outputs ``None``.
    """
    return {
        "inputs": [str(path) for path in values["INPUTS"]],
        "reference": values["REFERENCE"],
        "output": values.get("OUTPUT") or None,
        "output_folder": values.get("OUTPUT_FOLDER") or None,
        "mode": modes[int(values["MODE"])],
        "merge_method": merge_methods[int(values["MERGE_METHOD"])],
        "resampling": resampling_methods[int(values["RESAMPLING"])],
        "register": bool(values["REGISTER"]),
        "band_index": int(values["BAND"]) - 1,
        "reference_band_index": int(values["REFERENCE_BAND"]) - 1,
        "model": models[int(values["MODEL"])],
        "use_edge_proxies": bool(values["EDGE_PROXY"]),
        "window_size": int(values["WINDOW_SIZE"]),
        "nodata": values.get("NODATA"),
        "allow_large_output": bool(values[ALLOW_LARGE_OUTPUT]),
    }


def outputs_from_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Every output the algorithm declares, taken from the core's JSON summary."""
    totals = summary["totals"]
    return {
        "OUTPUT": summary["output"],
        "OUTPUT_FOLDER": summary["output_folder"],
        "INPUTS_USED": totals["used"],
        "INPUTS_SKIPPED": totals["skipped"],
        "COVERAGE": totals["coverage"],
    }


def group_name(folder: str) -> str:
    """The layer-tree group the per-input files of ``folder`` are loaded into."""
    return GROUP_PREFIX + (os.path.basename(os.path.normpath(folder)) or folder)


def keep_post_processor(post_processor: GroupLayersPostProcessor) -> GroupLayersPostProcessor:
    """Keep a Python reference to ``post_processor``; forget those QGIS has already deleted."""
    _POST_PROCESSORS[:] = [p for p in _POST_PROCESSORS if not sip.isdeleted(p)]
    _POST_PROCESSORS.append(post_processor)
    return post_processor


class GroupLayersPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Moves one loaded per-input layer into the run's layer-tree group, keeping input order.

    Runs on the main thread, after Processing has added the layer to the project. ``paths`` are
    all the per-input files of the run, in input order (to place the layer within the group).
    """

    def __init__(self, name: str, paths: Sequence[str]) -> None:
        super().__init__()
        self.name = name
        self.order = [os.path.normcase(os.path.abspath(p)) for p in paths]

    def postProcessLayer(  # noqa: N802 (QGIS API)
        self, layer: QgsMapLayer, context: QgsProcessingContext | None, feedback: QgsProcessingFeedback
    ) -> None:
        project = context.project() if context is not None else None
        project = project or getattr(layer, "project", lambda: None)()
        if project is None:
            return
        root = project.layerTreeRoot()
        node = root.findLayer(layer.id())
        if node is None:
            return
        parent = node.parent() or root
        group = parent.findGroup(self.name)
        if group is None:
            group = parent.insertGroup(parent.children().index(node), self.name)
        rank = self.rank(layer)
        position = sum(
            1 for child in group.children()
            if QgsLayerTree.isLayer(child) and child.layer() is not None and self.rank(child.layer()) < rank
        )
        group.insertLayer(position, layer)
        parent.removeChildNode(node)

    def rank(self, layer: QgsMapLayer) -> int:
        path = os.path.normcase(os.path.abspath(layer_path(layer)))
        return self.order.index(path) if path in self.order else len(self.order)


class CoregisterStackAlgorithm(CoregAlgorithm):
    ICON_FILE = "stack.svg"

    INPUTS = "INPUTS"
    REFERENCE = "REFERENCE"
    RESAMPLING = "RESAMPLING"
    MODE = "MODE"
    MERGE_METHOD = "MERGE_METHOD"
    REGISTER = "REGISTER"
    MODEL = "MODEL"
    BAND = "BAND"
    REFERENCE_BAND = "REFERENCE_BAND"
    EDGE_PROXY = "EDGE_PROXY"
    WINDOW_SIZE = "WINDOW_SIZE"
    NODATA = "NODATA"
    ALLOW_LARGE_OUTPUT = ALLOW_LARGE_OUTPUT
    OUTPUT = "OUTPUT"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    INPUTS_USED = "INPUTS_USED"
    INPUTS_SKIPPED = "INPUTS_SKIPPED"
    COVERAGE = "COVERAGE"

    def tr(self, string: str) -> str:
        return QCoreApplication.translate("CoregisterStackAlgorithm", string)

    def createInstance(self) -> CoregisterStackAlgorithm:  # noqa: N802 (QGIS API)
        return CoregisterStackAlgorithm()

    def name(self) -> str:
        return "coregisterstack"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Coregister Stack")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Brings many rasters onto the grid of one reference raster: its CRS, pixel grid and "
            "bounds. Each input is reprojected and resampled once onto that grid.\n\n"
            "With 'Register each input to the reference first' checked, the misregistration of "
            "every input against the reference is measured first (as in Align Image Pair) and "
            "corrected in the same resampling step.\n\n"
            "Mode 'merge' combines the inputs into one mosaic with the chosen merge method (first, "
            "last, min, max, sum, count or mean where inputs overlap); all inputs need the same "
            "number of bands. Mode 'stack' keeps every band of every input, one after the other, "
            "in one multi-band raster. Optionally each input is also written on the reference grid "
            "as its own file in an output folder; these files are loaded into one layer group.\n\n"
            "Typical uses: a mosaic on an existing grid, a time series on a common grid, or "
            "pixel-aligned layers (image, labels, DEM...) as training data for machine learning.\n\n"
            "Inputs that do not overlap the reference, or cannot be registered, are skipped with a "
            "warning; the run fails when none can be used. Outputs the number of inputs used and "
            "skipped and the fraction of the reference grid covered.\n\n"
            "When registering, each input is registered as in Align Image Pair, with the chosen geometric "
            "model ('auto' by default) and the same quality gate: a score between 0 and 1, the product of "
            "count (inliers / 8), spread (how much of the overlap the inliers cover), fit "
            "(exp(-(RMSE / 3 px)^2), the RMSE in pixels of the coarser of the input's and the reference's "
            "grids: 0.89 at 1 px, 0.64 at 2 px) and correlation (median tie-point reliability / 0.4), "
            "each capped at 1. An input scoring below 0.3 is refused and skipped, with the weakest term "
            "named. An input whose correction would not improve it with 95 % confidence against its own "
            "95 % uncertainty (below about 1.34 times that bound) is already aligned: it is brought onto the "
            "grid uncorrected (its "
            "model is reported as 'identity'). The log's summary gives each input's model, shift, RMSE, "
            "tie points and quality.\n\n"
            "Only the input rasters and the reference are required; every other setting has a default.\n\n"
            "Needs the Python packages rasterio and scikit-image."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return can_execute()

    def initAlgorithm(self, config: Mapping[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        modes, merge_methods, resampling_methods, default_resampling, models = core_choices()

        inputs = QgsProcessingParameterMultipleLayers(
            self.INPUTS, self.tr("Input rasters"), layerType=SOURCE_RASTER
        )
        inputs.setHelp(self.tr("The rasters to bring onto the reference grid, in merge priority order."))
        self.addParameter(inputs)
        reference = QgsProcessingParameterRasterLayer(self.REFERENCE, self.tr("Reference raster (target grid)"))
        reference.setHelp(self.tr("Its CRS, pixel grid and bounds define the output grid; it is not changed."))
        self.addParameter(reference)
        resampling = QgsProcessingParameterEnum(
            self.RESAMPLING,
            self.tr("Resampling method"),
            options=list(resampling_methods),
            defaultValue=list(resampling_methods).index(default_resampling),
        )
        resampling.setHelp(self.tr("Use 'nearest' for class or label rasters."))
        self.addParameter(resampling)
        mode = QgsProcessingParameterEnum(
            self.MODE, self.tr("Mode"), options=list(modes), defaultValue=list(modes).index("merge")
        )
        mode.setHelp(
            self.tr("'merge': one mosaic of the inputs. 'stack': all bands of all inputs in one raster.")
        )
        self.addParameter(mode)
        merge = QgsProcessingParameterEnum(
            self.MERGE_METHOD,
            self.tr("Merge method (merge mode)"),
            options=list(merge_methods),
            defaultValue=list(merge_methods).index("first"),
        )
        merge.setHelp(self.tr("How overlapping inputs are combined in merge mode; 'first' keeps the earliest input."))
        self.addParameter(merge)
        register = QgsProcessingParameterBoolean(
            self.REGISTER, self.tr("Register each input to the reference first"), defaultValue=False
        )
        register.setHelp(self.tr("Measure each input's misregistration against the reference (as Align Image "
                                 "Pair does, with its quality gate) and correct it in the same resampling step. "
                                 "Inputs that cannot be registered are skipped with a warning."))
        self.addParameter(register)
        model = QgsProcessingParameterEnum(
            self.MODEL, self.tr("Geometric model (when registering)"), options=list(models),
            defaultValue=list(models).index("auto"),
        )
        model.setHelp(
            self.tr(
                "The correction model of each input's registration, as in Align Image Pair. 'auto' chooses "
                "no correction, a translation, an affine or the local model by how well each explains tie "
                "points it was not fitted to. 'translation' corrects a shift only; 'affine' also rotation "
                "(up to 10 degrees), scale (0.9 to 1.1) and shear; 'local' adds a smooth displacement field "
                "through the tie points, falling back to the affine outside them."
            )
        )
        self.addParameter(model)

        band = QgsProcessingParameterNumber(
            self.BAND,
            self.tr("Input band used for registration (default 1)"),
            type=NUMBER_INTEGER,
            defaultValue=1,
            minValue=1,
        )
        # Optional with a default: QGIS 3.22 (qgis_process, processing.run) treats a mandatory band
        # parameter that is left out as missing, ignoring its default.
        reference_band = QgsProcessingParameterBand(
            self.REFERENCE_BAND,
            self.tr("Reference band used for registration (default 1)"),
            1,
            self.REFERENCE,
            optional=True,
        )
        nodata = QgsProcessingParameterNumber(
            self.NODATA,
            self.tr("Output no-data value (default: from the inputs)"),
            type=NUMBER_DOUBLE,
            optional=True,
        )
        band.setHelp(self.tr("Band of each input matched against the reference when registering (1 = first band)."))
        reference_band.setHelp(self.tr("Band of the reference matched when registering (1 = first band)."))
        nodata.setHelp(self.tr("Value written where no input has data. Default: the first input's no-data value, "
                               "else NaN for floating-point outputs and 0 for integers."))
        edge = QgsProcessingParameterBoolean(
            self.EDGE_PROXY, self.tr("Match on edge proxies when registering (robust across dates and sensors)"),
            defaultValue=True,
        )
        edge.setHelp(self.tr("Match gradient-magnitude images instead of the raw values, so that inputs from "
                             "other dates, seasons, bands or sensors than the reference still match. Turn off "
                             "only for images of the same kind with little texture."))
        window = QgsProcessingParameterNumber(
            self.WINDOW_SIZE,
            self.tr("Matching window size when registering (pixels)"),
            type=NUMBER_INTEGER,
            defaultValue=256,
            minValue=32,
        )
        window.setHelp(self.tr("Side of each tie-point window, in input pixels. Larger windows match more "
                               "reliably on weak texture; smaller ones give more tie points. Expert setting."))
        for parameter in (band, reference_band, edge, window, nodata, allow_large_output_parameter()):
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)

        output = QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Merged or stacked raster"), optional=True, createByDefault=True
        )
        output.setHelp(self.tr("The mosaic (merge mode) or multi-band stack (stack mode) on the reference grid. "
                               "Needed in merge mode; optional in stack mode when an output folder is set."))
        self.addParameter(output)
        folder = QgsProcessingParameterFolderDestination(
            self.OUTPUT_FOLDER,
            self.tr("Folder for one raster per input (on the reference grid)"),
            defaultValue=None,
            optional=True,
            createByDefault=False,
        )
        folder.setHelp(self.tr("Optional: also write each input on the reference grid as its own file in this "
                               "folder; the files are loaded into one layer group."))
        self.addParameter(folder)

        for name, description in (
            (self.INPUTS_USED, self.tr("Inputs used")),
            (self.INPUTS_SKIPPED, self.tr("Inputs skipped")),
            (self.COVERAGE, self.tr("Fraction of the reference grid covered (0 to 1)")),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, description))

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        ok, message = self._check_parameter_values(parameters, context)
        if not ok:
            release_checked_layers(context)
        return ok, message

    def _check_parameter_values(self, parameters: dict[str, Any], context: QgsProcessingContext) -> tuple[bool, str]:
        # Name the file in the message: the generic check only says "Incorrect parameter value".
        if parameters.get(self.REFERENCE) not in (None, ""):
            layer = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
            if layer is None or not layer.isValid():
                return False, self.tr(
                    "Cannot open the reference raster {}: the file does not exist or is not a raster."
                ).format(parameters[self.REFERENCE])
            if parameters.get(self.REFERENCE_BAND) not in (None, ""):
                band = self.parameterAsInt(parameters, self.REFERENCE_BAND, context)
                if not 1 <= band <= layer.bandCount():
                    return False, self.tr("The reference raster {} has no band {} (it has {} band(s)).").format(
                        layer_path(layer), band, layer.bandCount()
                    )
        unreadable = self.unreadable_inputs(parameters, context)
        if unreadable:
            return False, self.tr("Cannot open the input raster(s) {}: not found or not a raster.").format(
                ", ".join(unreadable)
            )
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
        from ..coreg_plugin import MERGE_METHOD_NAMES, MODELS, MODES, RESAMPLING_METHODS, CoregError, coregister_stack

        feedback = feedback or QgsProcessingFeedback()
        kwargs = core_kwargs(
            self.plain_values(parameters, context),
            modes=MODES,
            merge_methods=MERGE_METHOD_NAMES,
            resampling_methods=RESAMPLING_METHODS,
            models=MODELS,
        )
        if kwargs["mode"] == "merge" and kwargs["output"] is None:
            raise QgsProcessingException(
                self.tr("Merge mode needs an output raster: set 'Merged or stacked raster'.")
            )
        if kwargs["output"] is None and kwargs["output_folder"] is None:
            raise QgsProcessingException(
                self.tr(
                    "Stack mode needs an output raster, an output folder, or both: set 'Merged or "
                    "stacked raster' or 'Folder for one raster per input'."
                )
            )
        feedback.pushInfo(
            self.tr("Bringing {} input(s) onto the grid of {} ({} mode)").format(
                len(kwargs["inputs"]), kwargs["reference"], kwargs["mode"]
            )
        )
        try:
            with forward_core_log(feedback):
                result = coregister_stack(**kwargs, progress=feedback.setProgress, is_cancelled=feedback.isCanceled)
        except CoregError as error:
            raise processing_error(error) from error
        summary = result.summary
        feedback.pushInfo(json.dumps(summary, indent=2, default=str))
        if summary["output_folder"]:
            self.load_folder_outputs(summary, context)
        return outputs_from_summary(summary)

    def load_folder_outputs(self, summary: Mapping[str, Any], context: QgsProcessingContext) -> None:
        """Ask Processing to load the per-input files on completion, into one group.

        Only registers the layers with the context: the project is touched later, on the main
        thread, by Processing and the post-processor.
        """
        paths = [item["output"] for item in summary["inputs"] if item.get("output")]
        if not paths:
            return
        name = group_name(summary["output_folder"])
        for path in paths:
            details = QgsProcessingContext.LayerDetails(
                os.path.splitext(os.path.basename(path))[0],
                context.project(),
                self.OUTPUT_FOLDER,
                QgsProcessingUtils.LayerHint.Raster,
            )
            details.setPostProcessor(keep_post_processor(GroupLayersPostProcessor(name, paths)))
            context.addLayerToLoadOnCompletion(path, details)

    def unreadable_inputs(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list[str]:
        """The raw ``INPUTS`` entries (paths or layer ids) that do not resolve to a raster layer."""
        raw = parameters.get(self.INPUTS)
        if raw in (None, ""):
            return []
        entries = raw if isinstance(raw, (list, tuple)) else str(raw).split(";")
        unreadable = []
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                continue
            layer = QgsProcessingUtils.mapLayerFromString(entry, context, True, QgsProcessingUtils.LayerHint.Raster)
            if layer is None or not layer.isValid():
                unreadable.append(entry)
        return unreadable

    def plain_values(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """Resolve Processing parameters into the plain values ``core_kwargs`` takes."""
        values: dict[str, Any] = {}
        layers = self.parameterAsLayerList(parameters, self.INPUTS, context)
        unreadable = self.unreadable_inputs(parameters, context)
        if unreadable:
            raise QgsProcessingException(
                self.tr("Cannot open the input raster(s) {}: not found or not a raster.").format(", ".join(unreadable))
            )
        if not layers:
            raise QgsProcessingException(self.tr("No input rasters given."))
        reference = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        if reference is None or not reference.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.REFERENCE))
        for layer in [*layers, reference]:
            if layer.providerType() != "gdal":
                raise QgsProcessingException(
                    self.tr("{} is not a file-based (GDAL) raster; save it to a GeoTIFF first.").format(layer.name())
                )
        values[self.INPUTS] = [layer_path(layer) for layer in layers]
        values[self.REFERENCE] = layer_path(reference)
        for name in (self.BAND, self.REFERENCE_BAND, self.WINDOW_SIZE):
            values[name] = self.parameterAsInt(parameters, name, context)
        for name in (self.RESAMPLING, self.MODE, self.MERGE_METHOD, self.MODEL):
            values[name] = self.parameterAsEnum(parameters, name, context)
        for name in (self.REGISTER, self.EDGE_PROXY, self.ALLOW_LARGE_OUTPUT):
            values[name] = self.parameterAsBool(parameters, name, context)
        values[self.NODATA] = optional_double(self, parameters, self.NODATA, context)
        values[self.OUTPUT] = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        values[self.OUTPUT_FOLDER] = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        return values
