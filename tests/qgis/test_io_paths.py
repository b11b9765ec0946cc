"""QGIS side of inputs and outputs: layers in a zip or a GeoPackage table read exactly, outputs that
would overwrite an input refused, the report made with the raster or not at all, per-run logs."""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
import rasterio.shutil
from qgis.core import QgsProcessingException, QgsRasterLayer

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LANDSAT = DATA_DIR / "landsat-rgb"
REFERENCE = LANDSAT / "RGB.byte.tif"


@pytest.fixture
def common(coreg_provider):  # noqa: ANN001, ANN201, ARG001
    return importlib.import_module("coreg.processing_provider.common")


@pytest.fixture
def layers(tmp_path):  # noqa: ANN001, ANN201
    """A GeoTIFF in a zip and one table of a GeoPackage holding two raster tables, as QGIS layers."""
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(LANDSAT / "rgb1.tif", "inner/rgb1.tif")
    gpkg = tmp_path / "two.gpkg"
    with rasterio.open(REFERENCE) as src:
        window = rasterio.windows.Window(200, 200, 256, 256)
        for table, band in (("RED", 1), ("BLUE", 3)):
            single = tmp_path / f"{table}.tif"
            profile = dict(src.profile, count=1, width=256, height=256, transform=src.window_transform(window))
            with rasterio.open(single, "w", **profile) as dst:
                dst.write(src.read(band, window=window), 1)
            rasterio.shutil.copy(single, gpkg, driver="GPKG", RASTER_TABLE=table, APPEND_SUBDATASET="YES")
            single.unlink()
    zipped = QgsRasterLayer(f"/vsizip/{archive}/inner/rgb1.tif", "zipped", "gdal")
    blue = QgsRasterLayer(f"GPKG:{gpkg}:BLUE", "blue", "gdal")
    assert zipped.isValid()
    assert blue.isValid()
    return zipped, blue


def test_layer_path_keeps_the_gdal_dataset_name(common, layers) -> None:  # noqa: ANN001
    zipped, blue = layers
    assert common.layer_path(zipped).startswith("/vsizip/")
    assert common.layer_path(zipped).endswith("tiles.zip/inner/rgb1.tif")
    assert common.layer_path(blue).startswith("GPKG:")
    assert common.layer_path(blue).endswith("two.gpkg:BLUE")


def test_stack_reads_the_gpkg_table_and_the_zipped_layer(coreg_provider, layers, tmp_path) -> None:  # noqa: ANN001, ARG001
    zipped, blue = layers
    out = tmp_path / "stack.tif"
    processing.run("coreg:coregisterstack", {"INPUTS": [blue, zipped], "REFERENCE": str(REFERENCE), "MODE": 1,
                                             "RESAMPLING": 0, "OUTPUT": str(out)})
    with rasterio.open(out) as ds, rasterio.open(REFERENCE) as ref:
        stacked = ds.read()
        reference = ref.read()
    assert stacked.shape[0] == 1 + 3
    inside = np.s_[200:456, 200:456]
    np.testing.assert_array_equal(stacked[0][inside], reference[2][inside])  # the BLUE table, not RED


def test_stack_output_equal_to_an_input_is_refused(coreg_provider, tmp_path) -> None:  # noqa: ANN001, ARG001
    tile = tmp_path / "rgb1.tif"
    shutil.copy(LANDSAT / "rgb1.tif", tile)
    before = tile.read_bytes()
    with pytest.raises(QgsProcessingException, match="would overwrite the input"):
        processing.run("coreg:coregisterstack", {"INPUTS": [str(tile)], "REFERENCE": str(REFERENCE),
                                                 "MODE": 1, "OUTPUT_FOLDER": str(tmp_path)})
    assert tile.read_bytes() == before


def test_report_that_cannot_be_made_leaves_no_raster(coreg_provider, sample_pair, tmp_path, monkeypatch) -> None:  # noqa: ANN001, ARG001
    folder, _ = sample_pair
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing matplotlib now raises ImportError
    out = tmp_path / "aligned.tif"
    with pytest.raises(QgsProcessingException, match="matplotlib"):
        processing.run("coreg:alignimagepair", {
            "MOVING": str(folder / "moving.tif"), "FIXED": str(folder / "fixed.tif"),
            "OUTPUT": str(out), "OUTPUT_REPORT": str(tmp_path / "r.html")})
    assert list(tmp_path.iterdir()) == []


class Recording:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def pushInfo(self, message: str) -> None:  # noqa: N802
        self.messages.append(message)

    def pushWarning(self, message: str) -> None:  # noqa: N802
        self.messages.append(message)


def test_two_runs_at_once_keep_their_own_logs(common) -> None:  # noqa: ANN001
    logger = logging.getLogger("coreg")
    level_before = logger.level
    feedbacks = {"A": Recording(), "B": Recording()}
    both_forwarding = threading.Barrier(2)
    a_done = threading.Event()

    def run(name: str) -> None:
        with common.forward_core_log(feedbacks[name]):
            both_forwarding.wait()
            for i in range(3):
                logger.info("%s step %d", name, i)
            if name == "A":
                a_done.set()
            else:
                a_done.wait()  # B is still running when A's run has ended
                logger.info("B after A")

    threads = [threading.Thread(target=run, args=(name,)) for name in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert feedbacks["A"].messages == ["A step 0", "A step 1", "A step 2"]
    assert feedbacks["B"].messages == ["B step 0", "B step 1", "B step 2", "B after A"]
    assert logger.level == level_before
