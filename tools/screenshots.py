"""Screenshots from the real QGIS desktop under Xvfb: the Align Image Pair dialog and an HTML report.

    /usr/bin/python3 tools/screenshots.py [build/screenshots]

Starts ``qgis`` with a fresh profile (the plugin linked as ``coreg`` and enabled) under
``xvfb-run``, and a ``--code`` script that opens the dialog with
``processing.createAlgorithmDialog`` once the desktop is up, saves ``align_dialog.png`` (the
dialog) and ``align_dialog_desktop.png`` (the whole screen), then renders a report of the synthetic
sample pair (written beforehand with ``write_report``) statically with ``QTextDocument`` (no web
engine: Debian 13 and Qt6 have no QtWebKit) into ``report.png`` (the top of the page), writes
``done.txt`` (the dialog's title) and quits. The run
is wrapped in ``timeout``: a dialog that never opens fails instead of hanging. Exit code 0 only when
both pictures were saved.

With ``--tutorial`` (what ``make screenshot`` runs after the dialog and report), a second desktop run
follows the documentation's tutorial on the real Sentinel-2 pair in ``../shared/data/s2-inter1``, as a
QGIS user would, and saves one picture per step (``tutorial-*.png``, listed in ``TUTORIAL_SHOTS``):
the two layers in the map, the Align Image Pair dialog filled in, its log after the run, the tie-point
layer over the map, the report, the Apply Correction dialog and the Coregister Stack dialog and log.
Each algorithm runs from its dialog (the Run button's code path, in a background task) and the
figures each run returned go to ``tutorial-results.json``, which the tutorial's numbers come from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 180

DESKTOP_SCRIPT = r'''
import re
import traceback
from pathlib import Path
from qgis.PyQt.QtCore import QByteArray, QRectF, QSize, QTimer, QUrl
from qgis.PyQt.QtGui import QImage, QPainter, QTextDocument
from qgis.PyQt.QtWidgets import QApplication
import processing

OUT = Path({out!r})
REPORT = {report!r}
state = {{}}


def fail(message):
    (OUT / "error.txt").write_text(message)
    QApplication.instance().exit(1)


def open_dialog():
    try:
        dialog = processing.createAlgorithmDialog("coreg:alignimagepair", {{}})
        if dialog is None:
            fail("createAlgorithmDialog returned None: coreg:alignimagepair is not registered")
            return
        dialog.resize(1100, 1020)
        dialog.show()
        dialog.raise_()
        state["dialog"] = dialog
        QTimer.singleShot(4000, save)
    except Exception:
        fail(traceback.format_exc())


def save():
    try:
        dialog = state["dialog"]
        if not dialog.isVisible():
            fail("the dialog is not visible")
            return
        dialog.grab().save(str(OUT / "align_dialog.png"))
        QApplication.primaryScreen().grabWindow(0).save(str(OUT / "align_dialog_desktop.png"))
        (OUT / "done.txt").write_text(dialog.windowTitle())
        dialog.close()
        if REPORT:
            render_report()
        else:
            QApplication.instance().exit(0)
    except Exception:
        fail(traceback.format_exc())


def render_report():
    """A static render of the report (no web engine: QtWebKit is gone from Debian 13 and Qt6)."""
    try:
        html = Path(REPORT).read_text(encoding="utf-8")
        document = QTextDocument()
        for number, match in enumerate(re.finditer(r'src="(data:image/png;base64,([^"]+))"', html)):
            image = QImage.fromData(QByteArray.fromBase64(match.group(2).encode("ascii")), "PNG")
            name = f"embedded-{{number}}.png"
            document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), image)
            html = html.replace(match.group(1), name, 1)
        document.setHtml(html)
        document.setTextWidth(1150)
        size = QSize(1150, min(int(document.size().height()), 2600))
        image = QImage(size, QImage.Format.Format_ARGB32)
        image.fill(0xFFFFFFFF)
        painter = QPainter(image)
        document.drawContents(painter, QRectF(0, 0, size.width(), size.height()))
        painter.end()
        image.save(str(OUT / "report.png"))
        QApplication.instance().exit(0)
    except Exception:
        fail(traceback.format_exc())


QTimer.singleShot(6000, open_dialog)
'''


#: The tutorial's pictures, in the order the tutorial shows them (docs/tutorial.md names each).
TUTORIAL_SHOTS = (
    "tutorial-layers.png", "tutorial-align-dialog.png", "tutorial-align-log.png", "tutorial-tie-points.png",
    "tutorial-report.png", "tutorial-apply-dialog.png", "tutorial-stack-dialog.png", "tutorial-stack-log.png",
)
TUTORIAL_TIMEOUT_S = 900
S2_FOLDER = REPO_ROOT.parent / "shared" / "data" / "s2-inter1"

# Runs inside the desktop after a header that defines OUT, WORK, DATA (strings).
TUTORIAL_SCRIPT = r"""
import json
import re
import traceback
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QByteArray, QRectF, QSize, QTimer, QUrl
from qgis.PyQt.QtGui import QImage, QPainter, QTextDocument
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface

import processing
from processing.core.ProcessingConfig import ProcessingConfig

OUT, WORK, DATA = Path(OUT), Path(WORK), Path(DATA)
state = {"results": {}}


def fail(message):
    (OUT / "tutorial-error.txt").write_text(message)
    QApplication.instance().exit(1)


def step(function):
    # Run a step; any exception ends the run with its traceback in tutorial-error.txt.
    def run(*args):
        try:
            function(*args)
        except Exception:
            fail(traceback.format_exc())
    return run


def later(seconds, function, *args):
    QTimer.singleShot(int(seconds * 1000), lambda: step(function)(*args))


def shoot_window(name):
    iface.mapCanvas().waitWhileRendering()
    QApplication.processEvents()
    iface.mainWindow().grab().save(str(OUT / name))


def open_dialog(algorithm, parameters):
    dialog = processing.createAlgorithmDialog(algorithm, parameters)
    if dialog is None:
        raise RuntimeError(algorithm + " is not registered")
    dialog.resize(1000, 860)
    dialog.show()
    dialog.raise_()
    state["dialog"] = dialog
    return dialog


def run_dialog(key, then):
    # Press Run: the dialog's own code path (a background task, the Log tab), then call `then`.
    dialog = state["dialog"]

    def finished(ok, results):
        kept = {k: short(v) for k, v in results.items() if not k.startswith("CHILD")}
        state["results"][key] = {"ok": bool(ok), **kept}
        write_results()
        if not ok:
            fail(key + " failed; see its log")
            return
        later(3, then)

    dialog.algorithmFinished.connect(finished)
    dialog.runAlgorithm()


def short(value):
    # Output paths by file name only: the numbers are what the tutorial quotes.
    return Path(value).name if isinstance(value, str) and "/" in value else value


def write_results():
    (OUT / "tutorial-results.json").write_text(json.dumps(state["results"], indent=2, default=str))


def start():
    ProcessingConfig.setSettingValue(ProcessingConfig.KEEP_DIALOG_OPEN, True)
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1400, 1000)
    for dock in window.findChildren(QDockWidget):
        if dock.objectName() == "Browser":
            dock.hide()  # a wider map: the tutorial opens files with Layer > Add Layer
    ref = iface.addRasterLayer(str(DATA / "ref_S2A_20160608_T33UUU.tif"), "ref_S2A_20160608_T33UUU")
    tgt = iface.addRasterLayer(str(DATA / "tgt_S2A_20160529_T33UUU.tif"), "tgt_S2A_20160529_T33UUU")
    if not (ref and ref.isValid() and tgt and tgt.isValid()):
        raise RuntimeError("the s2-inter1 layers did not load")
    state["ref"], state["tgt"] = ref, tgt
    iface.mapCanvas().setExtent(tgt.extent())
    iface.mapCanvas().refreshAllLayers()
    later(5, layers_shot)


def layers_shot():
    shoot_window("tutorial-layers.png")
    open_dialog("coreg:alignimagepair", {
        "MOVING": state["tgt"].id(), "FIXED": state["ref"].id(),
        "OUTPUT": str(WORK / "tgt_aligned.tif"), "OUTPUT_TIE_POINTS": str(WORK / "tie_points.gpkg"),
        "OUTPUT_REPORT": str(WORK / "report.html"), "OUTPUT_CORRECTION": str(WORK / "correction.json"),
    })
    later(3, align_dialog_shot)


def align_dialog_shot():
    state["dialog"].grab().save(str(OUT / "tutorial-align-dialog.png"))
    run_dialog("align", align_log_shot)


def align_log_shot():
    dialog = state["dialog"]
    dialog.grab().save(str(OUT / "tutorial-align-log.png"))
    dialog.close()
    project = QgsProject.instance()
    for layer in project.mapLayers().values():
        node = project.layerTreeRoot().findLayer(layer.id())
        if node is not None and layer.id() not in (state["tgt"].id(),) and isinstance(layer, QgsRasterLayer):
            node.setItemVisibilityChecked(False)  # only the moving image under the tie points
    iface.mapCanvas().setExtent(state["tgt"].extent())
    iface.mapCanvas().refreshAllLayers()
    later(6, tie_points_shot)


def tie_points_shot():
    shoot_window("tutorial-tie-points.png")
    render_report(WORK / "report.html", OUT / "tutorial-report.png")
    prepare_scene_rasters()


def render_report(source, target):
    # A static render of the HTML report (QTextDocument: no web engine needed).
    html = Path(source).read_text(encoding="utf-8")
    document = QTextDocument()
    for number, match in enumerate(re.finditer(r'src="(data:image/png;base64,([^"]+))"', html)):
        image = QImage.fromData(QByteArray.fromBase64(match.group(2).encode("ascii")), "PNG")
        name = "embedded-" + str(number) + ".png"
        document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), image)
        html = html.replace(match.group(1), name, 1)
    document.setHtml(html)
    document.setTextWidth(1150)
    size = QSize(1150, min(int(document.size().height()), 2000))
    image = QImage(size, QImage.Format.Format_ARGB32)
    image.fill(0xFFFFFFFF)
    painter = QPainter(image)
    document.drawContents(painter, QRectF(0, 0, size.width(), size.height()))
    painter.end()
    image.save(str(target))


def prepare_scene_rasters():
    # What the tutorial has the user make: a 20 m raster of the scene and a cloud mask (uint8).
    warped = processing.run("gdal:warpreproject", {
        "INPUT": state["tgt"].id(), "RESAMPLING": 5, "TARGET_RESOLUTION": 20,
        "OUTPUT": str(WORK / "tgt_20m.tif")})
    mask = processing.run("gdal:rastercalculator", {
        "INPUT_A": state["tgt"].id(), "BAND_A": 1, "FORMULA": "A>4000", "RTYPE": 0,
        "OUTPUT": str(WORK / "clouds.tif")})
    state["tgt20"] = iface.addRasterLayer(warped["OUTPUT"], "tgt_20m")
    state["mask"] = iface.addRasterLayer(mask["OUTPUT"], "clouds")
    open_dialog("coreg:applycorrection", {
        "CORRECTION": str(WORK / "correction.json"), "INPUT": state["tgt20"].id(),
        "OUTPUT": str(WORK / "tgt_20m_aligned.tif")})
    later(3, apply_dialog_shot)


def apply_dialog_shot():
    state["dialog"].grab().save(str(OUT / "tutorial-apply-dialog.png"))
    run_dialog("apply_20m", apply_mask)


def apply_mask():
    state["dialog"].close()
    result = processing.run("coreg:applycorrection", {
        "CORRECTION": str(WORK / "correction.json"), "INPUT": state["mask"].id(), "RESAMPLING": 0,
        "OUTPUT": str(WORK / "clouds_aligned.tif")})
    state["results"]["apply_mask"] = {"ok": True, **{k: short(v) for k, v in result.items()}}
    write_results()
    open_dialog("coreg:coregisterstack", {
        "INPUTS": [state["tgt"].id(), state["tgt20"].id()], "REFERENCE": state["ref"].id(),
        "MODE": 1, "REGISTER": True, "OUTPUT": str(WORK / "stack.tif")})
    later(3, stack_dialog_shot)


def stack_dialog_shot():
    state["dialog"].grab().save(str(OUT / "tutorial-stack-dialog.png"))
    run_dialog("stack", stack_log_shot)


def stack_log_shot():
    state["dialog"].grab().save(str(OUT / "tutorial-stack-log.png"))
    state["dialog"].close()
    (OUT / "tutorial-done.txt").write_text("done")
    # Drop the layers first: QGIS 3.22 crashed (signal 11) removing them on its way out.
    state.clear()
    QgsProject.instance().clear()
    later(2, QApplication.instance().exit, 0)


later(8, start)
"""


def take_tutorial(out: Path, work: Path | None = None) -> subprocess.CompletedProcess:
    """Follow the tutorial in the desktop on the real s2-inter1 pair; save ``TUTORIAL_SHOTS`` into ``out``."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (*TUTORIAL_SHOTS, "tutorial-results.json", "tutorial-done.txt", "tutorial-error.txt"):
        (out / name).unlink(missing_ok=True)
    work = Path(work or out / "tutorial-run").resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "outputs").mkdir(parents=True)
    command, env = prepare(out, work, None)
    header = f"OUT = {str(out)!r}\nWORK = {str(work / 'outputs')!r}\nDATA = {str(S2_FOLDER)!r}\n"
    script = work / "tutorial.py"
    script.write_text(header + TUTORIAL_SCRIPT)
    command[command.index("--code") + 1] = str(script)
    command[1] = str(TUTORIAL_TIMEOUT_S)  # timeout's duration
    env["OPENBLAS_NUM_THREADS"] = "1"
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TUTORIAL_TIMEOUT_S + 30,
                          check=False)


def sample_report(work: Path) -> str:
    """Align the synthetic sample pair and write its HTML report; return the report's path."""
    from coreg_plugin import align_image_pair
    from coreg_plugin.report.html import write_report
    from coreg_plugin.testing.synthetic import make_sample_pair

    pair = make_sample_pair(work / "pair")
    result = align_image_pair(pair["moving_image"], pair["fixed_image"], work / "pair" / "aligned.tif")
    return write_report(work / "report.html", result)


def prepare(out: Path, work: Path, report: str | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the desktop run."""
    from tools.qgis_env import link_plugin

    profiles = work / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[PythonPlugins]\ncoreg=true\nprocessing=true\n\n[qgis]\nshowTips=false\n"
                   "checkVersion=false\n")
    script = work / "open_dialog.py"
    script.write_text(DESKTOP_SCRIPT.format(out=str(out), report=report))
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    runtime = work / "xdg-runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CACHE_HOME=str(work / "cache"), XDG_DATA_HOME=str(work / "data"),
               XDG_CONFIG_HOME=str(work / "config"), QGIS_PLUGINPATH=str(link_plugin(work / "plugins")),
               HOME=str(work / "home"))
    command = ["timeout", str(TIMEOUT_S), "xvfb-run", "-a", "-s", "-screen 0 1400x1100x24",
               "qgis", "--noversioncheck", "--nologo", "--profiles-path", str(profiles), "--code", str(script)]
    return command, env


def take(out: Path, work: Path | None = None, *, report: bool = True) -> subprocess.CompletedProcess:
    """Run the desktop and save the screenshots into ``out``; return the finished process.

    With ``report`` false, only the dialog is shot.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("align_dialog.png", "align_dialog_desktop.png", "report.png", "done.txt", "error.txt"):
        (out / name).unlink(missing_ok=True)
    work = Path(work or out / "run").resolve()
    work.mkdir(parents=True, exist_ok=True)
    command, env = prepare(out, work, sample_report(work) if report else None)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S + 30, check=False)


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("--")]
    out = Path(args[0]) if args else REPO_ROOT / "build" / "screenshots"
    done = take(out)
    ok = done.returncode == 0 and (out / "done.txt").exists() and (out / "align_dialog.png").exists()
    print(f"{'saved' if ok else 'FAILED'}: {out / 'align_dialog.png'} (exit {done.returncode})")
    if not ok:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        if (out / "error.txt").exists():
            print((out / "error.txt").read_text(), file=sys.stderr)
        return 1
    if "--tutorial" not in argv:
        return 0
    done = take_tutorial(out)
    missing = [name for name in TUTORIAL_SHOTS if not (out / name).exists()]
    ok = done.returncode == 0 and (out / "tutorial-done.txt").exists() and not missing
    print(f"{'saved' if ok else 'FAILED'}: {len(TUTORIAL_SHOTS) - len(missing)} tutorial pictures in {out} "
          f"(exit {done.returncode}{'; missing ' + ', '.join(missing) if missing else ''})")
    if not ok:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        if (out / "tutorial-error.txt").exists():
            print((out / "tutorial-error.txt").read_text(), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
