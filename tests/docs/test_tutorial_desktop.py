"""The documentation's tutorial in the real QGIS desktop under Xvfb (what ``make screenshot`` runs).

Run by the host's QGIS lane (Debian 12, QGIS 3.22: the pictures the docs show), not by the Debian-root
lanes, which run tests/qgis only.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from qgis.PyQt.QtGui import QImage

from tools.screenshots import S2_FOLDER, TUTORIAL_SHOTS, take_tutorial

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_tutorial_runs_in_the_desktop_and_every_picture_is_saved(qgis_app) -> None:  # noqa: ANN001, ARG001
    """``make screenshot`` follows the documentation's tutorial on the real s2-inter1 pair: each algorithm
    runs from its dialog, and every picture docs/tutorial.md shows is saved with the run's results."""
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: make deps installs Debian's xvfb and xauth")
    if not S2_FOLDER.is_dir():
        pytest.fail(f"test data missing: {S2_FOLDER} (shared/data must sit beside the repository)")
    out = REPO_ROOT / "build" / "screenshots"
    done = take_tutorial(out)
    error = (out / "tutorial-error.txt").read_text() if (out / "tutorial-error.txt").exists() else ""
    assert done.returncode == 0, f"exit {done.returncode} (124 = timeout)\n{error}\n{done.stderr[-2000:]}"
    for name in TUTORIAL_SHOTS:
        image = QImage(str(out / name))
        assert image.width() >= 800, name
        assert image.height() >= 600, name
    results = json.loads((out / "tutorial-results.json").read_text())
    assert results["align"]["VERDICT"] == "corrected"
    assert abs(results["align"]["SHIFT_X_PX"] - -0.63) < 0.1  # AROSICS: -0.71, +1.80
    assert abs(results["align"]["SHIFT_Y_PX"] - 1.82) < 0.1
    assert results["apply_20m"]["ok"]
    assert results["apply_mask"]["ok"]
    assert results["stack"]["INPUTS_USED"] == 2
    # every picture the tutorial shows is one this run takes
    shown = set(re.findall(r"images/(tutorial-[\w-]+\.png)", (REPO_ROOT / "docs" / "tutorial.md").read_text()))
    assert shown <= set(TUTORIAL_SHOTS), shown - set(TUTORIAL_SHOTS)
    assert len(shown) >= 3
