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
"""

from __future__ import annotations

import os
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
    out = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "build" / "screenshots"
    done = take(out)
    ok = done.returncode == 0 and (out / "done.txt").exists() and (out / "align_dialog.png").exists()
    print(f"{'saved' if ok else 'FAILED'}: {out / 'align_dialog.png'} (exit {done.returncode})")
    if not ok:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        if (out / "error.txt").exists():
            print((out / "error.txt").read_text(), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
