"""Write the example models: ``models/align_and_difference.model3`` and ``models/align_and_apply.model3``.

    QT_HASH_SEED=0 QT_QPA_PLATFORM=offscreen /usr/bin/python3 tools/make_example_model.py [folder]

The model: ``coreg:alignimagepair`` aligns the moving image onto the fixed image's grid;
``gdal:cliprasterbyextent`` clips the fixed image to the aligned image's extent (same grid, so the
two rasters then match pixel for pixel); ``gdal:rastercalculator`` writes aligned minus fixed as
float32, the model's output ``subtract:difference``. Inputs: ``moving``, ``fixed``, and the matching bands
``moving_band`` and ``fixed_band`` (default 1). Run it with
``qgis_process.bin run models/align_and_difference.model3 -- moving=M.tif fixed=F.tif
subtract:difference=D.tif`` (with the plugin enabled in the profile). ``QT_HASH_SEED=0`` keeps the XML
byte-stable between runs.

``align_and_apply.model3`` (:func:`build_apply_model`): estimate once, apply to the scene.
``coreg:alignimagepair`` aligns one band (``moving_band``, e.g. band 4 of a Sentinel-2 scene) and
saves the correction; ``coreg:applycorrection`` applies it to another raster of the scene
(``other``, e.g. a 20 m band; lanczos) and to a class mask (``mask``; nearest, class values and
colour table kept). Outputs ``align:aligned``, ``apply_other:other_corrected`` and
``apply_mask:mask_corrected``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = REPO_ROOT / "models"


def source_param(name: str) -> list:
    """A child parameter's source: the model parameter ``name``."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]


def static(value: object) -> list:
    """A child parameter's source: the fixed ``value``."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]


def child_output(child: str, output: str) -> list:
    """A child parameter's source: output ``output`` of child ``child``."""
    from qgis.core import QgsProcessingModelChildParameterSource

    return [QgsProcessingModelChildParameterSource.fromChildOutput(child, output)]


def build_model():  # noqa: ANN201 (QgsProcessingModelAlgorithm; QGIS is imported lazily)
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterBand,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm("Align and difference", "Coreg examples")
    model.setHelpContent({
        "ALG_DESC": "Aligns the moving image onto the fixed image's grid with Coreg, clips the fixed image to "
                    "the aligned image's extent and writes the difference aligned - fixed (float32).",
        "difference": "Aligned minus fixed, on the fixed image's grid over the moving image's footprint.",
    })
    for y, (name, description) in enumerate((("moving", "Moving image"), ("fixed", "Fixed image"))):
        parameter = QgsProcessingModelParameter(name)
        parameter.setPosition(QPointF(120, 60 + 70 * y))
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, description), parameter)
    for y, (name, description, parent) in enumerate((
        ("moving_band", "Moving image band used for matching", "moving"),
        ("fixed_band", "Fixed image band used for matching", "fixed"),
    )):
        parameter = QgsProcessingModelParameter(name)
        parameter.setPosition(QPointF(360, 60 + 70 * y))
        model.addModelParameter(QgsProcessingParameterBand(name, description, 1, parent, optional=True), parameter)

    align = QgsProcessingModelChildAlgorithm("coreg:alignimagepair")
    align.setChildId("align")
    align.setDescription("Align Image Pair (onto the fixed grid)")
    align.setPosition(QPointF(240, 240))
    align.addParameterSources("MOVING", source_param("moving"))
    align.addParameterSources("FIXED", source_param("fixed"))
    align.addParameterSources("MOVING_BAND", source_param("moving_band"))
    align.addParameterSources("FIXED_BAND", source_param("fixed_band"))
    align.addParameterSources("OUTPUT_GRID", static(1))
    model.addChildAlgorithm(align)

    clip = QgsProcessingModelChildAlgorithm("gdal:cliprasterbyextent")
    clip.setChildId("clip")
    clip.setDescription("Clip the fixed image to the aligned extent")
    clip.setPosition(QPointF(240, 360))
    clip.addParameterSources("INPUT", source_param("fixed"))
    clip.addParameterSources("PROJWIN", child_output("align", "OUTPUT"))
    clip.addParameterSources("DATA_TYPE", static(6))  # Float32
    model.addChildAlgorithm(clip)

    difference = QgsProcessingModelChildAlgorithm("gdal:rastercalculator")
    difference.setChildId("subtract")
    difference.setDescription("Aligned - fixed")
    difference.setPosition(QPointF(240, 480))
    difference.addParameterSources("INPUT_A", child_output("align", "OUTPUT"))
    difference.addParameterSources("BAND_A", static(1))
    difference.addParameterSources("INPUT_B", child_output("clip", "OUTPUT"))
    difference.addParameterSources("BAND_B", static(1))
    difference.addParameterSources("FORMULA", static("A.astype(numpy.float32) - B"))
    difference.addParameterSources("RTYPE", static(5))  # Float32
    output = QgsProcessingModelOutput("difference", "Difference (aligned - fixed)")
    output.setChildId("subtract")
    output.setChildOutputName("OUTPUT")
    output.setPosition(QPointF(440, 540))
    difference.setModelOutputs({"difference": output})
    model.addChildAlgorithm(difference)

    model.updateDestinationParameters()
    return model


def build_apply_model():  # noqa: ANN201 (QgsProcessingModelAlgorithm; QGIS is imported lazily)
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterBand,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    def model_output(child: QgsProcessingModelChildAlgorithm, name: str, description: str, y: float) -> None:
        output = QgsProcessingModelOutput(name, description)
        output.setChildId(child.childId())
        output.setChildOutputName("OUTPUT")
        output.setPosition(QPointF(520, y))
        child.setModelOutputs({name: output})

    model = QgsProcessingModelAlgorithm("Align one band, apply to the scene", "Coreg examples")
    model.setHelpContent({
        "ALG_DESC": "Estimates the misregistration once, on one band (e.g. band 4 of a Sentinel-2 scene), and "
                    "applies the saved correction to another raster of the scene (e.g. a 20 m band) and to a "
                    "class mask (nearest: class values and colour table kept).",
        "aligned": "The matched band's raster, corrected on its own grid.",
        "other_corrected": "The other raster, corrected on its own grid (lanczos).",
        "mask_corrected": "The class mask, corrected on its own grid (nearest).",
    })
    for y, (name, description) in enumerate((("moving", "Moving image (the raster to match)"),
                                             ("fixed", "Fixed image (reference)"),
                                             ("other", "Another raster of the moving scene (e.g. a 20 m band)"),
                                             ("mask", "Class mask of the moving scene"))):
        parameter = QgsProcessingModelParameter(name)
        parameter.setPosition(QPointF(120, 60 + 70 * y))
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, description), parameter)
    for y, (name, description, parent) in enumerate((
        ("moving_band", "Moving image band used for matching (e.g. 4)", "moving"),
        ("fixed_band", "Fixed image band used for matching", "fixed"),
    )):
        parameter = QgsProcessingModelParameter(name)
        parameter.setPosition(QPointF(380, 60 + 70 * y))
        model.addModelParameter(QgsProcessingParameterBand(name, description, 1, parent, optional=True), parameter)

    align = QgsProcessingModelChildAlgorithm("coreg:alignimagepair")
    align.setChildId("align")
    align.setDescription("Align Image Pair (saves the correction)")
    align.setPosition(QPointF(260, 340))
    for parameter, source in (("MOVING", "moving"), ("FIXED", "fixed"), ("MOVING_BAND", "moving_band"),
                              ("FIXED_BAND", "fixed_band")):
        align.addParameterSources(parameter, source_param(source))
    model_output(align, "aligned", "Aligned image", 340)
    model.addChildAlgorithm(align)

    for y, (child_id, description, layer, resampling, output, output_description) in enumerate((
        ("apply_other", "Apply Correction to the other raster", "other", 4, "other_corrected",
         "Other raster, corrected"),
        ("apply_mask", "Apply Correction to the class mask", "mask", 0, "mask_corrected", "Class mask, corrected"),
    )):
        apply = QgsProcessingModelChildAlgorithm("coreg:applycorrection")
        apply.setChildId(child_id)
        apply.setDescription(description)
        apply.setPosition(QPointF(260, 460 + 110 * y))
        apply.addParameterSources("CORRECTION", child_output("align", "OUTPUT_CORRECTION"))
        apply.addParameterSources("INPUT", source_param(layer))
        apply.addParameterSources("RESAMPLING", static(resampling))  # 4 = lanczos, 0 = nearest
        model_output(apply, output, output_description, 460 + 110 * y)
        model.addChildAlgorithm(apply)

    model.updateDestinationParameters()
    return model


def main(argv: list[str]) -> int:
    if os.environ.get("QT_HASH_SEED") != "0":
        print("set QT_HASH_SEED=0 for a byte-stable model file", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    folder = Path(argv[1]) if len(argv) > 1 else DEFAULT_FOLDER
    sys.path[:0] = [str(REPO_ROOT / "build" / "plugins"), "/usr/share/qgis/python/plugins"]
    from qgis.core import QgsApplication

    from tools.qgis_env import link_plugin

    link_plugin(REPO_ROOT / "build" / "plugins")
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import coreg

    plugin = coreg.classFactory(None)
    plugin.initProcessing()
    folder.mkdir(parents=True, exist_ok=True)
    ok = True
    for name, build in (("align_and_difference.model3", build_model), ("align_and_apply.model3", build_apply_model)):
        path = folder / name
        written = build().toFile(str(path))
        print(f"wrote {path}" if written else f"could not write {path}")
        ok = ok and written
    plugin.unload()
    app.exitQgis()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
