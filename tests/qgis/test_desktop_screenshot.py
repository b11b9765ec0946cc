"""The real QGIS desktop under Xvfb opens the Align Image Pair dialog (and renders a report)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qgis.PyQt.QtGui import QImage

from tools.screenshots import take

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_dialog_opens_in_the_desktop_and_is_saved() -> None:
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: make deps installs Debian's xvfb and xauth")
    out = REPO_ROOT / "build" / "screenshots"
    done = take(out)
    error = (out / "error.txt").read_text() if (out / "error.txt").exists() else ""
    log = f"{error}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, f"exit {done.returncode} (124 = timeout)\n{log}"
    # 3.22 titles the dialog "Align Image Pair", 3.40 prefixes the provider: "Coreg - Align Image Pair"
    assert (out / "done.txt").read_text().endswith("Align Image Pair")
    dialog = QImage(str(out / "align_dialog.png"))
    assert dialog.width() >= 800
    assert dialog.height() >= 600
    report = QImage(str(out / "report.png"))
    assert report.width() >= 1000
    assert report.height() >= 1000
    # not a blank capture: many distinct colours
    colours = {dialog.pixel(x, y) for x in range(0, dialog.width(), 7) for y in range(0, dialog.height(), 7)}
    assert len(colours) > 20
