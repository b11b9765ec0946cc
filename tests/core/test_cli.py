"""The command line: JSON on stdout, logs on stderr, coregix option names, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]


def test_cli_prints_summary_json_and_logs_to_stderr(tmp_path):
    truth = synthetic.make_sample_pair(tmp_path, size=512, shift=(2.4, -1.3))
    out = tmp_path / "out.tif"
    run = subprocess.run(
        [sys.executable, "-m", "coreg_plugin", "align", "--moving-image", truth["moving_image"],
         "--fixed-image", truth["fixed_image"], "--output-image", str(out), "--log-to-console",
         "--split-factor", "2", "--model", "translation", "--resampling", "cubic"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    np.testing.assert_allclose([summary["shift_px"]["x"], summary["shift_px"]["y"]], (2.4, -1.3), atol=0.05)
    assert summary["model"] == "translation"
    assert summary["resampling"] == "cubic"
    assert summary["output_image"] == str(out)
    assert out.exists()
    assert "iteration" in run.stderr
    assert "split_factor" in run.stderr


def test_cli_missing_file_exit_code(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "coreg_plugin", "align", "--moving-image", str(tmp_path / "a.tif"),
         "--fixed-image", str(tmp_path / "b.tif"), "--output-image", str(tmp_path / "c.tif")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert "a.tif' does not exist" in run.stderr


def test_cli_report(tmp_path):
    truth = synthetic.make_sample_pair(tmp_path, size=512, shift=(-1.25, 0.5))
    report = tmp_path / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "coreg_plugin", "align", "--moving-image", truth["moving_image"],
         "--fixed-image", truth["fixed_image"], "--output-image", str(tmp_path / "out.tif"), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["report"] == str(report)
    html = report.read_text()
    assert f">{summary['shift_px']['x']:g}, {summary['shift_px']['y']:g}<" in html  # as the summary gives it
    assert html.count("data:image/png;base64,") == 4


def run_reporting_modules(args: list[str], prelude: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """The command line with ``args`` run in a child Python, after the imports of ``prelude``: the
    finished run and the modules it loaded beyond those (the child prints them on stderr's last line)."""
    code = ("import json, sys\n" + prelude + "before = set(sys.modules)\n"
            "from coreg_plugin.cli import main\ncode = main(sys.argv[1:])\n"
            "print(json.dumps(sorted(set(sys.modules) - before)), file=sys.stderr)\nsys.exit(code)\n")
    run = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    lines = run.stderr.strip().splitlines()
    return run, json.loads(lines[-1]) if lines and lines[-1].startswith("[") else []


def test_align_does_not_load_scipys_statistics_or_signal_modules(tmp_path):
    """Align imports what it uses: two normal and F quantiles come from scipy.special and the Hann
    taper is built with NumPy, so Align loads no module of scipy.stats or scipy.signal (0.5 s of every
    run's start on the newest wheels) beyond those its other SciPy and scikit-image functions load
    (scikit-image 0.19, Debian 12's, loads scipy.signal itself)."""
    truth = synthetic.make_sample_pair(tmp_path, size=512, shift=(2.4, -1.3))
    uses = ("from scipy import fft, ndimage\nfrom scipy.interpolate import RBFInterpolator\n"
            "from scipy.optimize import lsq_linear\nfrom scipy.spatial import ConvexHull, cKDTree\n"
            "from scipy.spatial.distance import cdist\nfrom scipy.special import fdtri, ndtri\n"
            "from skimage.measure import ransac\nfrom skimage.registration import phase_cross_correlation\n"
            "from skimage.transform import AffineTransform, warp\n")
    run, loaded = run_reporting_modules(["align", "--fixed-image", truth["fixed_image"], "--moving-image",
                                         truth["moving_image"], "--output-image", str(tmp_path / "aligned.tif")], uses)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["verdict"] == "corrected"
    assert [m for m in loaded if m.startswith(("scipy.stats", "scipy.signal"))] == []


def test_an_unregistered_stack_never_loads_the_estimation(tmp_path):
    """A stack without registration (the job gdalwarp and rasterio.merge do) runs without loading the
    estimation's modules and what they import (scipy, scikit-image: about 1 s of the start); a
    registered one loads them."""
    truth = synthetic.make_sample_pair(tmp_path, size=256, shift=(1.5, -0.5))
    loaded = {}
    for name, extra in (("plain", []), ("registered", ["--register"])):
        run, modules = run_reporting_modules(["stack", "--reference", truth["fixed_image"], "--output",
                                              str(tmp_path / f"{name}.tif"), *extra, truth["moving_image"]])
        assert run.returncode in (0, 1), run.stderr
        assert json.loads(run.stdout)["totals"]["inputs"] == 1
        loaded[name] = ({m.split(".")[0] for m in modules if m.startswith(("scipy", "skimage"))}
                        | {m for m in modules if m.startswith("coreg_plugin.estimate")})
    assert loaded["plain"] == set()
    assert "scipy" in loaded["registered"]
    assert "coreg_plugin.estimate.registration" in loaded["registered"]
