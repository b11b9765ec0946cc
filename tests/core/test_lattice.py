"""Fixed tie-point windows on the fixed raster's own lattice (issue 13): found where a correction
places them, moved by Fourier shifts to what resampling gives, and shared by a stack's registrations."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from conftest import ORIGIN, S2_REF, read_window
from coreg_plugin.common.affines import compose
from coreg_plugin.estimate import lattice
from coreg_plugin.estimate.correlation import match
from coreg_plugin.estimate.proxies import prepare
from coreg_plugin.estimate.tiepoints import TiePointMatcher, window_origins
from coreg_plugin.io import shared_reads, warp
from coreg_plugin.io.raster_source import Grid, RasterSource
from coreg_plugin.testing.synthetic import SAMPLE_CRS

SIZE = 256


def _turned(rotation_deg: float) -> Affine:
    """A rotation by ``rotation_deg`` about the centre of a SIZE px window (pixel-corner coordinates)."""
    centre = Affine.translation(SIZE / 2, SIZE / 2)
    return compose(centre, Affine.rotation(rotation_deg), ~centre)


def _window(factor: int, col: float, row: float, rotation_deg: float = 0.0) -> Grid:
    """A SIZE px window grid whose pixels span ``factor`` x ``factor`` pixels of ORIGIN's, its
    top-left corner at ORIGIN's pixel (col, row), turned about its centre."""
    transform = compose(ORIGIN, Affine.translation(col, row), Affine.scale(factor), _turned(rotation_deg))
    return Grid(SAMPLE_CRS, transform, SIZE, SIZE)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return read_window(S2_REF, 1000, 1000, 900).astype(np.float32)


@pytest.fixture
def fixed(write, texture) -> str:
    return str(write("fixed.tif", texture, dtype="uint16"))


@pytest.mark.parametrize(("factor", "col", "row", "rotation", "place"), [
    (1, 37.3, 21.8, 0.0, (37, 22, 0.3, -0.2)),
    (2, 75.4, 43.0, 0.0, (38, 22, -0.3, -0.5)),
    (1, 37.3, 21.8, 0.02, (37, 22, 0.3, -0.2)),
    (1, -1.3, 645.6, 0.0, (0, 644, -1.3, 1.6)),
])
def test_place_finds_the_lattice_window_and_what_is_left(fixed, factor, col, row, rotation, place):
    """A window on the raster's own pixels (or their 2 x 2 average), moved by a translation and a
    slight rotation about its centre: its lattice window, the fraction left at its centre (lattice px)
    and the rotation as a shear of its rows and columns; a window reaching past the raster's edge by
    less than 2 px takes the lattice window inside it."""
    with RasterSource(fixed, "fixed") as source:
        where = lattice.place(source, 1, _window(factor, col, row, rotation))
    assert where is not None
    assert (where.factor, where.col, where.row) == (factor, place[0], place[1])
    np.testing.assert_allclose(where.fraction, place[2:], atol=1e-9)
    turn = np.radians(rotation)
    np.testing.assert_allclose(where.shear, (-np.sin(turn), np.sin(turn)), atol=1e-12)


@pytest.mark.parametrize("case", ["rotated by 1 degree", "scaled by 1e-4", "outside the raster", "other CRS",
                                  "20 m on a raster with nodata"])
def test_place_leaves_other_windows_to_resampling(write, texture, fixed, case):
    """Windows the lattice cannot give to a hundredth of a pixel, or at all, are not placed on it."""
    path, window = fixed, _window(1, 37.3, 21.8)
    if case == "rotated by 1 degree":
        window = _window(1, 37.3, 21.8, 1.0)
    elif case == "scaled by 1e-4":
        window = Grid(window.crs, compose(window.transform, Affine.scale(1 + 1e-4)), SIZE, SIZE)
    elif case == "outside the raster":
        window = _window(1, 646.6, 21.8)
    elif case == "other CRS":
        window = Grid(CRS.from_epsg(32632), window.transform, SIZE, SIZE)
    else:
        holed = texture.copy()
        holed[:50] = 0
        path, window = str(write("holed.tif", holed, dtype="uint16", nodata=0)), _window(2, 75.4, 143.0)
    with RasterSource(path, "fixed") as source:
        assert lattice.place(source, 1, window) is None


@pytest.mark.parametrize(("col", "row", "rotation"), [(37.3, 21.8, 0.0), (141.55, 88.45, 0.0), (60.8, 90.3, 0.02),
                                                      (60.8, 90.3, -0.15)])
def test_placed_window_measures_as_the_resampled_one(fixed, texture, col, row, rotation):
    """The lattice window's proxy moved to the window's place matches the proxy of GDAL's lanczos
    resampling of the same window to 0.02 px (lanczos departs from band-limited interpolation by
    about a hundredth of a pixel at fractional offsets); unmoved, it is off by the fraction."""
    window = _window(1, col, row, rotation)
    resampled = np.full((SIZE, SIZE), np.nan, np.float32)
    reproject(texture, resampled, src_transform=ORIGIN, src_crs=window.crs, dst_transform=window.transform,
              dst_crs=window.crs, resampling=Resampling.lanczos, dst_nodata=np.nan)
    with RasterSource(fixed, "fixed") as source:
        where = lattice.place(source, 1, window)
        lattice_window = prepare(lattice.read(source, 1, where, (SIZE, SIZE)))
    moved = lattice.placed([lattice_window], [where])[0]
    wanted = prepare(resampled)
    dx, dy, reliability = match(moved, wanted)
    assert abs(dx) < 0.02, dx
    assert abs(dy) < 0.02, dy
    assert reliability > 0.99
    unmoved = np.array(match(lattice_window, wanted)[:2])
    assert (np.abs(unmoved) > 0.15).all(), unmoved
    assert (np.sign(unmoved) == np.sign(where.fraction)).all(), unmoved


def test_a_stacks_registrations_prepare_each_lattice_window_once(fixed, texture, write, monkeypatch):
    """Inside a stack's sharing of the fixed raster, a second registration on the same lattice takes
    the windows the first prepared (no read of them) and measures exactly what it measures alone."""
    moving = str(write("moving.tif", texture[:600, :600], compose(ORIGIN, Affine.translation(0.37, -0.42)),
                       dtype="uint16"))
    h = np.eye(3)
    reads: list[lattice.Place] = []
    counted = lattice.read

    def counting(source, band, where, shape, kept=None):  # noqa: ANN001, ANN202
        reads.append(where)
        return counted(source, band, where, shape, kept)

    monkeypatch.setattr(lattice, "read", counting)
    monkeypatch.setattr(warp, "_gdal_warp", lambda *args, **kwargs: pytest.fail("GDAL warp"))

    def measured() -> list[tuple[float, float, float]]:
        with RasterSource(moving, "moving") as m, RasterSource(fixed, "fixed") as f:
            matcher = TiePointMatcher(m, f, 1, 1, window_origins((20, 20, 580, 580), SIZE, 3), SIZE, True, 1)
            try:
                return [(p.dx, p.dy, p.reliability) for p in matcher.measure_all(h, 100, lambda done: None)]
            finally:
                matcher.close()

    alone = measured()
    assert len(reads) == 9
    with shared_reads.sharing(fixed):
        first, second = measured(), measured()
    assert len(reads) == 18
    assert alone == first == second
    np.testing.assert_allclose([m[:2] for m in alone], [(-0.37, 0.42)] * 9, atol=0.01)


def test_windows_reaching_past_the_fixed_rasters_edge_measure_as_gdals_filled_windows(texture, write, monkeypatch):
    """The moving raster reaches 0.63 px past the fixed raster on the left and 1.42 px at the top:
    the windows there take the lattice windows inside the raster (no GDAL warp) and measure within
    0.005 px of what GDAL's warp (no data beyond the edge) gave them; all windows measure the
    misregistration of the moving raster's georeference (-0.37, +0.42 px)."""
    fixed = str(write("inner.tif", texture[50:850, 50:850], compose(ORIGIN, Affine.translation(50, 50)),
                      dtype="uint16"))
    moving = str(write("beyond.tif", texture[49:649, 49:649], compose(ORIGIN, Affine.translation(49.37, 48.58)),
                       dtype="uint16"))
    origins = window_origins((0, 0, 600, 600), SIZE, 3)
    edge = origins.min(axis=1) == 0

    def measured() -> np.ndarray:
        with RasterSource(moving, "moving") as m, RasterSource(fixed, "fixed") as f:
            matcher = TiePointMatcher(m, f, 1, 1, origins, SIZE, True, 1)
            try:
                found = matcher.measure_all(np.eye(3), 100, lambda done: None)
            finally:
                matcher.close()
        assert [p.status for p in found] == ["measured"] * 9
        return np.array([(p.dx, p.dy) for p in found])

    monkeypatch.setattr(lattice, "MAX_BEYOND_PX", 0.0)
    gdal = measured()
    monkeypatch.undo()
    monkeypatch.setattr(warp, "_gdal_warp", lambda *args, **kwargs: pytest.fail("GDAL warp"))
    inside = measured()
    assert edge.sum() == 5
    np.testing.assert_allclose(inside[edge], gdal[edge], atol=0.005)
    np.testing.assert_allclose(np.median(inside, axis=0), (-0.37, 0.42), atol=0.01)
