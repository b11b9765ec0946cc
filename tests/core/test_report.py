"""The HTML report of a run: written from a real Sentinel-2 texture misregistered by a known correction."""

from __future__ import annotations

import base64
import builtins
import html
import re

import numpy as np
import pytest

from conftest import ORIGIN, affine_correction, truth_image
from coreg_plugin import align_image_pair
from coreg_plugin.common.errors import InputError
from coreg_plugin.report.html import (
    ACCURACY_FIGURES,
    ACCURACY_TITLE,
    FIGURE_COUNT,
    LOCAL_FIELD_TITLE,
    checkerboard,
    residual_vectors,
    tie_point_rows,
    write_report,
)
from coreg_plugin.testing import synthetic

PNG_DATA = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """An affine-misregistered S2 texture aligned onto the truth: (result, folder)."""
    folder = tmp_path_factory.mktemp("report")
    truth = truth_image("s2")
    h = affine_correction(1.5, 1.02, (2.3, -1.6), 384)
    synthetic.write_raster(folder / "fixed.tif", truth, ORIGIN)
    synthetic.write_raster(folder / "moving.tif", synthetic.misregister(truth, h), ORIGIN)
    result = align_image_pair(folder / "moving.tif", folder / "fixed.tif", folder / "aligned.tif")
    return result, folder


def test_report_has_figures_numbers_and_pictures(aligned, tmp_path):
    result, _ = aligned
    path = tmp_path / "report.html"
    assert write_report(path, result) == str(path)
    text = path.read_text(encoding="utf-8")
    summary = result.summary
    for value in (summary["shift_px"]["x"], summary["shift_px"]["y"], summary["shift_m"]["x"], summary["shift_m"]["y"]):
        assert f"{value:g}" in text, value
    tie = summary["tie_points"]
    assert f"{tie['windows']} / {tie['found']} / {tie['used']}" in text
    assert summary["model"] in text
    assert "Verdict and model choice" in text
    assert f"<b>{summary['verdict']}</b>" in text
    assert html.escape(summary["model_choice"]["reason"]) in text
    for candidate in summary["model_choice"]["candidates"]:
        assert f"<td>{candidate['held_out_rmse_px']:g}</td>" in text, candidate
    for term in ("Count", "Spread", "Fit", "Correlation"):
        assert term in text
    images = PNG_DATA.findall(text)
    assert len(images) == FIGURE_COUNT
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 5000  # a real picture, not an empty canvas
    assert LOCAL_FIELD_TITLE not in text  # drawn for the local model only
    assert "<script" not in text  # self-contained
    assert "http" not in text


def test_report_has_the_standard_accuracy_figures(aligned, tmp_path):
    """The summary's accuracy figures, each in moving px, coarser grid's px and metres, and the CEOS-ARD
    outcome (a clean affine pair: well inside the threshold)."""
    result, _ = aligned
    path = write_report(tmp_path / "report.html", result)
    text = open(path, encoding="utf-8").read()
    accuracy = result.summary["accuracy"]
    assert accuracy["model"] == result.summary["model"] == "affine"
    assert accuracy["ceos_ard"] is True
    section = text[text.index(f"<h2>{ACCURACY_TITLE}</h2>"):text.index("<h2>Model</h2>")]
    for key, label, standard in ACCURACY_FIGURES:
        px, metres = accuracy[f"{key}_px"], accuracy[f"{key}_m"]
        assert px is not None, key
        assert metres == pytest.approx(10 * px, abs=1e-3), key
        row = f"<tr><th>{html.escape(label)}</th><td>{px:g}</td><td>{round(px, 4):g}</td><td>{metres:g}</td>"
        assert row in section, (row, section)
        assert html.escape(standard) in section
    assert 'CEOS-ARD geometric threshold</b> (0.5 px radial RMSE' in section
    assert '<span class="good">meets it</span>' in section
    assert f"computed on the {accuracy['points_fit']} tie points" in section


def test_residuals_are_small_for_used_points(aligned):
    result, _ = aligned
    rows = residual_vectors(result.registration)
    used = rows[rows[:, 4] == 1]
    assert len(used) == result.summary["tie_points"]["used"]
    assert np.sqrt(np.mean(used[:, 2] ** 2 + used[:, 3] ** 2)) == pytest.approx(
        result.summary["rmse_px"], abs=0.05
    )


def test_checkerboard_alternates():
    first, second = np.zeros((8, 8)), np.ones((8, 8))
    board = checkerboard(first, second, squares=4)
    assert (board[0, 0], board[0, 2], board[2, 2]) == (0, 1, 0)
    assert board.mean() == pytest.approx(0.5)


def test_missing_matplotlib_names_the_fix(aligned, tmp_path, monkeypatch):
    result, _ = aligned
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(InputError, match="matplotlib"):
        write_report(tmp_path / "report.html", result)
    assert not (tmp_path / "report.html").exists()


def test_report_folder_must_exist(aligned, tmp_path):
    result, _ = aligned
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "missing" / "report.html", result)


def test_tie_point_rows_in_map_units(aligned):
    result, _ = aligned
    rows = tie_point_rows(result)
    assert len(rows) == result.summary["tie_points"]["windows"]
    assert sum(row["used"] for row in rows) == result.summary["tie_points"]["used"]
    for row in rows:
        if row["dx_px"] is not None:
            # 10 m pixels, north-up: east = columns, north = -rows
            assert row["dx_map"] == pytest.approx(row["dx_px"] * 10, abs=1e-3)
            assert row["dy_map"] == pytest.approx(-row["dy_px"] * 10, abs=1e-3)
        assert 400000 <= row["x_map"] <= 400000 + 768 * 10
        assert 5800000 - 768 * 10 <= row["y_map"] <= 5800000
