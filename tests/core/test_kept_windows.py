"""Tie-point windows kept from the coarse stage's read (issue 28): the same pixels, the same coarse
image and the same registration as reading them again, and only windows that read brought whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from conftest import ORIGIN, S2_REF, read_window
from coreg_plugin.common.progress import Progress
from coreg_plugin.estimate import registration
from coreg_plugin.estimate.coarse import coarse_match
from coreg_plugin.estimate.tiepoints import KEEP_MARGIN_PX, window_origins, windows_to_keep
from coreg_plugin.io.kept_windows import KeptWindows, average_blocks
from coreg_plugin.io.raster_source import RasterSource
from coreg_plugin.testing.synthetic import misregister, write_raster

#: Not a length FFTs handle fast: the coarse grid (coarse_grid) leaves out a strip along the far edges.
SIDE = 1031
#: The correction (x, y; px) the pair's moving raster needs: within the kept windows' margin.
TRUTH_PX = (1.63, -2.41)


@pytest.mark.parametrize(("dtype", "offset"), [("uint16", 0), ("int16", -2000)])
@pytest.mark.parametrize("factor", [2, 3, 6, 11])
def test_block_average_is_gdals_decimated_average(tmp_path, dtype, offset, factor):
    """The coarse image made from the whole-resolution strips is GDAL's own decimated average, value
    for value (GDAL rounds half away from zero to the data type; negative values included)."""
    values = read_window(S2_REF, 300, 200, 330) + offset
    path = tmp_path / "band.tif"
    write_raster(path, values, ORIGIN, dtype=dtype)
    n = 330 // factor
    with rasterio.open(path) as ds:
        gdal = ds.read(1, window=Window(0, 0, n * factor, n * factor), out_shape=(n, n),
                       resampling=Resampling.average, out_dtype="float32")
        raw = ds.read(1, window=Window(0, 0, n * factor, n * factor))
    assert (raw < 0).any() == (offset < 0)
    np.testing.assert_array_equal(average_blocks(raw, factor), gdal)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[str, str]:
    """SIDE px of a real Sentinel-2 scene, and the same moved so that the correction is TRUTH_PX;
    uint16, tiled, valid throughout."""
    folder = tmp_path_factory.mktemp("kept")
    truth = read_window(S2_REF, 1200, 1000, SIDE)
    h = np.eye(3)
    h[:2, 2] = TRUTH_PX
    paths = (str(folder / "fixed.tif"), str(folder / "moving.tif"))
    write_raster(paths[0], truth, ORIGIN)
    write_raster(paths[1], misregister(truth, h), ORIGIN)
    return paths[0], paths[1]


def test_kept_windows_are_the_pixels_a_read_gives(pair):
    """Every window served from what the coarse read kept, anywhere within the margin of a planned
    window, equals the read of the file; windows the read did not bring whole (the coarse grid's far
    edges) are not served at all."""
    fixed_path, moving_path = pair
    with RasterSource(moving_path, "moving") as moving, RasterSource(fixed_path, "fixed") as fixed:
        origins = window_origins((0, 0, SIDE, SIDE), 256, 15, moving.block_shape(1))
        kept = windows_to_keep(moving, fixed, 1, 1, origins, 256, 1.0)
        assert all(isinstance(k, KeptWindows) for k in kept)
        coarse_match(moving, fixed, 1, 1, (0, 0, SIDE, SIDE), True, Progress(), kept)
        served = refused = 0
        for source, windows in ((moving, kept[0]), (fixed, kept[1])):
            for col, row in origins:
                for dc, dr in ((0, 0), (KEEP_MARGIN_PX, -KEEP_MARGIN_PX), (-3, 5)):
                    window = Window(int(col) + dc, int(row) + dr, 256, 256)
                    if min(window.col_off, window.row_off) < 0 or max(window.col_off, window.row_off) + 256 > SIDE:
                        continue
                    pixels = windows.window(window)
                    if pixels is None:
                        refused += 1
                        continue
                    served += 1
                    np.testing.assert_array_equal(pixels.astype(np.float32), source.read_valid([1], window)[0])
        far = Window(SIDE - 256, SIDE - 256, 256, 256)
        assert kept[0].window(far) is None
        assert kept[1].window(far) is None
    assert served > 100
    assert refused > 0


def test_registration_with_kept_windows_is_the_same(pair, monkeypatch):
    """Registering with the windows kept gives the very correction and tie points of reading every
    window again, and the kept windows are really taken."""
    fixed_path, moving_path = pair

    def run() -> registration.Registration:
        with RasterSource(moving_path, "moving") as moving, RasterSource(fixed_path, "fixed") as fixed:
            return registration.register(moving, fixed, 1, 1, model="auto", use_edge_proxy=True, window_size=256,
                                         min_quality=0.0, force=True, progress=Progress(), workers=2)

    taken = []
    served = KeptWindows.window

    def counting(self: KeptWindows, window: Window) -> np.ndarray | None:
        pixels = served(self, window)
        taken.append(pixels is not None)
        return pixels

    monkeypatch.setattr(KeptWindows, "window", counting)
    kept = run()
    monkeypatch.setattr(registration, "windows_to_keep", lambda *args: (None, None))
    read = run()
    assert sum(taken) > 50
    assert np.hypot(*(kept.h[:2, 2] - TRUTH_PX)) < 0.05
    np.testing.assert_array_equal(kept.h, read.h)
    assert kept.used == read.used > 20
    assert kept.model == read.model
