"""Issue 4: every bad input of the core's table, through processing.run: a QgsProcessingException
with a clear message, and nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import QgsProcessingException

from coreg_plugin.testing import synthetic

CORE_TESTS = Path(__file__).resolve().parents[1] / "core"
ALGORITHM = "coreg:alignimagepair"


def _load(name: str, path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _core_table():  # noqa: ANN202
    """The core's bad-input table (tests/core/test_bad_input.py), loaded from its file; while it loads,
    ``conftest`` is the core's (it imports helpers from there), then this lane's again."""
    import sys

    own = sys.modules.get("conftest")
    sys.modules["conftest"] = _load("core_conftest", CORE_TESTS / "conftest.py")
    try:
        return _load("core_bad_input", CORE_TESTS / "test_bad_input.py")
    finally:
        if own is not None:
            sys.modules["conftest"] = own


TABLE = _core_table()
ORIGIN = TABLE.ORIGIN

#: How each core keyword becomes a Processing parameter (bands are 1-based in QGIS).
PARAMETERS = {
    "moving_band_index": ("MOVING_BAND", lambda v: v + 1),
    "output_nodata": ("OUTPUT_NODATA", float),
    "moving_nodata": ("MOVING_NODATA", float),
    "window_size": ("WINDOW_SIZE", int),
    "resampling": ("RESAMPLING", lambda v: 99),  # not an option of the enum
}
#: Rows that QGIS's own parameter checks refuse before the core runs: the message names the parameter.
REFUSED_BY_QGIS = {"unknown resampling": ["RESAMPLING"], "negative window": ["WINDOW_SIZE"],
                   "band out of range": ["has no band 4", "1 band"]}


@pytest.fixture
def write(tmp_path: Path):
    def _write(name: str, values: np.ndarray, transform=ORIGIN, **kwargs) -> Path:  # noqa: ANN001
        path = tmp_path / name
        synthetic.write_raster(path, values, transform, **kwargs)
        return path

    return _write


@pytest.mark.parametrize("name", TABLE.CASES)
def test_processing_run_rejects_bad_input(coreg_provider, tmp_path, write, name) -> None:  # noqa: ANN001, ARG001
    truth = TABLE.truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (1.5, -2.0)
    scene = write("fixed.tif", truth), write("moving.tif", synthetic.misregister(truth, h))
    moving, fixed, kwargs, _, words = TABLE.bad_case(name, tmp_path, write, scene)
    before = {p.name for p in tmp_path.iterdir()}
    parameters = {"MOVING": str(moving), "FIXED": str(fixed), "OUTPUT": str(tmp_path / "out.tif")}
    for key, value in kwargs.items():
        parameter, convert = PARAMETERS[key]
        parameters[parameter] = convert(value)
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(ALGORITHM, parameters)
    message = str(raised.value)
    expected = REFUSED_BY_QGIS.get(name) or [w for w in words if "/" not in w]
    file_words = [w for w in words if "/" in w]
    for word in expected:
        assert word in message
    for word in file_words:  # QGIS may name the file by its path or its name
        assert word in message or Path(word).name in message
    # QGIS itself leaves GDAL's .aux.xml statistics sidecars beside rasters it loaded as layers
    written = sorted(p.name for p in tmp_path.iterdir() if p.name not in before and not p.name.endswith(".aux.xml"))
    assert written == []
