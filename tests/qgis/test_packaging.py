"""The installable zip (``make zip``) in a fresh QGIS profile, and the example model, through qgis_process."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingModelAlgorithm

from model_builders import destination_name
from tools.package import build_zip, check_zip
from tools.qgis_env import REPO_ROOT, enable_plugin, headless_env, qgis_process, run_json

MODEL = REPO_ROOT / "models" / "align_and_difference.model3"
METADATA_KEYS = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                 "repository", "tracker", "tags", "category", "hasProcessingProvider", "icon", "changelog",
                 "homepage")


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:  # noqa: ANN001
    return build_zip(tmp_path_factory.mktemp("zip") / "coreg.zip")


def test_make_zip_builds_the_same_zip(tmp_path) -> None:  # noqa: ANN001
    done = subprocess.run(["make", "-s", "zip", f"PLUGIN_ZIP={tmp_path / 'coreg.zip'}", f"ZIP_PYTHON={sys.executable}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "coreg.zip").exists()
    assert "passes the plugins.qgis.org checks" in done.stdout


def test_the_zip_passes_the_plugin_site_checks(plugin_zip: Path) -> None:
    assert check_zip(plugin_zip) == []


def test_the_checks_find_what_the_plugin_site_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("coreg/metadata.txt", "[general]\nname=Coreg\n")
        archive.writestr("coreg/.env", "x")
        archive.writestr("coreg/helper.pyc", b"\0")
        script = zipfile.ZipInfo("coreg/run.sh")
        script.external_attr = 0o755 << 16
        archive.writestr(script, "#!/bin/sh\n")
        archive.writestr("coreg/bad.py", "import subprocess\n\n"
                         "subprocess.call('ls ' + input(), shell=True)\n"
                         "aws_access_key_id = 'AKIAZ4XJ3QWERTYUI0P1'\n"
                         f"x = '{'y' * 130}'\n")
    problems = "\n".join(check_zip(bad))
    for expected in ("coreg/LICENSE: missing", "coreg/__init__.py: missing",
                     "coreg/.env: hidden", "coreg/helper.pyc: compiled", "coreg/run.sh: executable",
                     "bandit: coreg/bad.py:3: B602", "detect-secrets: coreg/bad.py:4: AWS Access Key",
                     "flake8: coreg/bad.py:5:121: E501"):
        assert expected in problems, problems


def test_zip_holds_only_runtime_files(plugin_zip: Path) -> None:
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert all(name.startswith("coreg/") for name in names)
    for required in ("coreg/metadata.txt", "coreg/__init__.py", "coreg/LICENSE",
                     "coreg/coreg_plugin/workflows/align.py", "coreg/coreg_plugin/report/html.py",
                     "coreg/processing_provider/provider.py", "coreg/icons/coreg.svg"):
        assert required in names
    core = Path(__file__).resolve().parents[2] / "coreg_plugin"
    for module in core.rglob("*.py"):  # every module of the core, in every subpackage
        assert f"coreg/coreg_plugin/{module.relative_to(core).as_posix()}" in names
    for name in names:
        assert not any(part in name for part in ("tests/", "tools/", "bench/", "build/", ".venv", "__pycache__"))
        assert Path(name).suffix in (".py", ".txt", ".svg", "")
        assert not name.endswith("Makefile")


def test_metadata_is_complete(plugin_zip: Path) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(plugin_zip).read("coreg/metadata.txt").decode("utf-8"))
    general = parser["general"]
    for key in METADATA_KEYS:
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    # plugins.qgis.org lists a plugin as QGIS 4 ready by qgisMaximumVersion >= 4 (supportsQt6 is no longer read)
    assert float(general["qgisMaximumVersion"]) >= 4
    assert general["version"] == "0.3.5"
    assert general["changelog"].strip().startswith(f"{general['version']} - ")
    for text in ("Align Image Pair", "Coregister Stack", "Apply Correction", "corrected", "already aligned",
                 "refused", "95 percent"):
        assert text in general["about"], text
    assert general["category"] == "Raster"
    assert general["hasProcessingProvider"] == "yes"
    assert f"coreg/{general['icon']}" in zipfile.ZipFile(plugin_zip).namelist()


def test_the_zip_holds_the_gpl_v2_licence(plugin_zip: Path) -> None:
    """plugins.qgis.org refuses a zip without LICENSE; ours is the GNU GPL v2 text (GPL-2.0-or-later)."""
    text = zipfile.ZipFile(plugin_zip).read("coreg/LICENSE").decode("utf-8")
    assert text == (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:5] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version"]
    assert "Version 2, June 1991" in text
    assert "or (at your option) any later version" in " ".join(text.split())
    assert "END OF TERMS AND CONDITIONS" in text


def test_a_checkout_without_licence_is_not_packaged(tmp_path: Path) -> None:
    root = tmp_path / "plugin"
    root.mkdir()
    for name in ("metadata.txt", "__init__.py"):
        (root / name).write_text((REPO_ROOT / name).read_text())
    with pytest.raises(SystemExit, match="LICENSE missing"):
        build_zip(tmp_path / "coreg.zip", root)


def test_zip_installs_into_a_fresh_profile_and_runs(plugin_zip: Path, sample_pair, tmp_path: Path) -> None:  # noqa: ANN001
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    assert not (plugins / "coreg").is_symlink()
    env = headless_env(tmp_path / "qgis", plugins_dir=plugins)
    assert env["QGIS_PLUGINPATH"] == str(plugins.resolve())
    enable_plugin(env)
    folder, truth = sample_pair
    output, report = tmp_path / "aligned.tif", tmp_path / "report.html"
    code, payload, log = run_json("coreg:alignimagepair", {
        "MOVING": folder / "moving.tif", "FIXED": folder / "fixed.tif", "OUTPUT": output, "OUTPUT_REPORT": report,
    }, env)
    assert code == 0, log
    assert payload["results"]["SHIFT_X_PX"] == pytest.approx(truth["shift_px"]["x"], abs=0.05)
    assert output.exists()
    assert report.exists()


@pytest.fixture(scope="module")
def model_env(tmp_path_factory) -> dict:  # noqa: ANN001
    env = headless_env(tmp_path_factory.mktemp("model-qgis"))
    enable_plugin(env)
    return env


def test_example_model_runs_with_qgis_process(
    model_env: dict, coreg_provider, sample_pair, tmp_path: Path  # noqa: ANN001, ARG001
) -> None:
    folder, _ = sample_pair
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    difference = tmp_path / "difference.tif"
    done = qgis_process(["run", str(MODEL), "--", f"moving={folder / 'moving.tif'}", f"fixed={folder / 'fixed.tif'}",
                         f"{destination_name(model, 'subtract', 'difference')}={difference}"], model_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert difference.exists()
    with rasterio.open(difference) as d, rasterio.open(folder / "fixed.tif") as f, \
            rasterio.open(folder / "moving.tif") as m:
        values = d.read(1, masked=True).astype(float)
        assert d.crs == f.crs
        assert d.res == f.res
        fixed = f.read(1).astype(float)
        unaligned = np.abs(m.read(1).astype(float) - fixed)[20:-20, 20:-20]
    inner = values[20:-20, 20:-20]
    assert inner.count() > 0.9 * inner.size
    # aligned minus fixed is small where valid: far below the misregistered difference
    assert np.ma.median(np.abs(inner)) < 0.2 * np.median(unaligned)
    assert abs(float(np.ma.mean(inner))) < 0.01 * float(fixed.mean())
