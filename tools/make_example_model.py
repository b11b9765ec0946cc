"""Write ``models/align_and_difference.model3``: align a pair, clip the fixed image, difference.

    QT_HASH_SEED=0 QT_QPA_PLATFORM=offscreen /usr/bin/python3 tools/make_example_model.py [path]

The model: ``coreg:alignimagepair`` aligns the moving image onto the fixed image's grid;
``gdal:cliprasterbyextent`` clips the fixed image to the aligned image's extent (same grid, so the
two rasters then match pixel for pixel); ``gdal:rastercalculator`` writes aligned minus fixed as
float32, the model's output ``subtract:difference``. Inputs: ``moving``, ``fixed``, and the matching bands
``moving_band`` and ``fixed_band`` (default 1). Run it with
``qgis_process.bin run models/align_and_difference.model3 -- moving=M.tif fixed=F.tif
subtract:difference=D.tif`` (with the plugin enabled in the profile). ``QT_HASH_SEED=0`` keeps the XML
byte-stable between runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = REPO_ROOT / "models" / "align_and_difference.model3"


def build_model():  # noqa: ANN201 (QgsProcessingModelAlgorithm; QGIS is imported lazily)
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterBand,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    def source_param(name: str) -> list:
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def static(value: object) -> list:
        return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]

    def child_output(child: str, output: str) -> list:
        return [QgsProcessingModelChildParameterSource.fromChildOutput(child, output)]

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


def main(argv: list[str]) -> int:
    if os.environ.get("QT_HASH_SEED") != "0":
        print("set QT_HASH_SEED=0 for a byte-stable model file", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
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
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = build_model().toFile(str(path))
    print(f"wrote {path}" if ok else f"could not write {path}")
    plugin.unload()
    app.exitQgis()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
