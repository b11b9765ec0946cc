"""The fast paths of issue 13 give what the slow ones gave: the two-pass (separable) resampling
against GDAL's warper, and tie-point windows placed inside the moving raster's blocks."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from conftest import S2_REF, read_window
from coreg_plugin import coregister_stack
from coreg_plugin.apply import blocks
from coreg_plugin.common.affines import compose
from coreg_plugin.common.progress import Progress
from coreg_plugin.estimate.tiepoints import window_origins
from coreg_plugin.io import separable, warp, writer
from coreg_plugin.io.raster_source import Grid, RasterSource
from coreg_plugin.testing import synthetic

CRS_UTM = CRS.from_epsg(32633)


def _map(rotation_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(rotation_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty],
                     [0, 0, 1.0]])


def _gdal(source: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], method: str) -> np.ndarray:
    """GDAL's warper through the same map (destination pixel -> source pixel)."""
    out = np.full(shape, np.nan, np.float32)
    reproject(source, out, src_transform=Affine.identity(), src_crs=CRS_UTM,
              dst_transform=Affine(*matrix[:2].ravel()), dst_crs=CRS_UTM, resampling=Resampling[method],
              dst_nodata=np.nan)
    return out


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return read_window(S2_REF, 900, 600, 560).astype(np.float32)


@pytest.mark.parametrize("method", ["bilinear", "cubic", "lanczos"])
def test_translation_gives_gdals_values(texture, method):
    """For a translation the two passes are GDAL's own kernel, weights and normalization: the same
    values (to float32 rounding) wherever the kernel stays inside the source."""
    matrix = _map(0.0, 1.0, 17.37, 9.61)
    fast = separable.resample(texture, matrix, (512, 512), method)
    slow = _gdal(texture, matrix, (512, 512), method)
    assert np.isfinite(fast).all()
    assert np.abs(fast - slow).max() < 2e-3


@pytest.mark.parametrize(("rotation", "scale"), [(0.02, 1.0), (0.4, 1.0), (0.0, 1 + 2e-5)])
def test_near_rigid_maps_agree_with_gdal(texture, rotation, scale):
    """A small rotation or a scale within 3e-5 of 1 (what a correction on the raster's own grid is)
    splits into the two passes; the values differ from GDAL's 2-D kernel by far less than the
    texture's variation (shear decomposition, and positions held to 0.001 px on line segments)."""
    matrix = _map(rotation, scale, 21.4, 12.8)
    assert separable.supports("lanczos", matrix)
    fast = separable.resample(texture, matrix, (500, 500), "lanczos")
    slow = _gdal(texture, matrix, (500, 500), "lanczos")
    inner = (slice(8, -8), slice(8, -8))
    difference = (fast - slow)[inner]
    assert np.isfinite(difference).all()
    assert np.sqrt(np.mean(difference ** 2)) < 1e-3 * texture.std()


@pytest.mark.parametrize(("rotation", "scale"), [(7.0, 1.0), (0.0, 1.01), (0.0, 0.7), (0.0, 2.0), (0.0, 0.51)])
def test_other_maps_are_left_to_gdal(rotation, scale):
    """Rotations of degrees, scale changes, upsampling by a factor that is not whole and downsampling
    (whose kernel GDAL widens) are neither near-rigid nor whole-factor upsampling: not supported."""
    assert not separable.supports("lanczos", _map(rotation, scale, 3.0, 4.0))
    assert not separable.supports("nearest", _map(0.0, 1.0, 3.0, 4.0))


def test_kernel_leaving_the_source_gives_no_data(texture):
    """Destination pixels whose kernel reaches past the source array are NaN, not invented."""
    matrix = _map(0.0, 1.0, -1.5, 5.25)
    fast = separable.resample(texture, matrix, (100, 100), "lanczos")
    assert np.isnan(fast[:, :4]).all()
    assert np.isfinite(fast[:, 4:]).all()


def test_read_warped_fills_edges_and_holes_as_gdal_does(write, monkeypatch):
    """``read_warped`` takes the two passes where the kernel sees valid pixels only and GDAL's answer
    (which weights the valid neighbours) at the raster's edge and around nodata: the same pixels as
    GDAL's warp alone, NaN included."""
    values = read_window(S2_REF, 900, 600, 400)
    values[150:170, 200:260] = 0
    path = write("holes.tif", values, dtype="uint16", nodata=0)
    with RasterSource(path, "moving") as source:
        corrected = compose(source.grid.transform, Affine.translation(2.3, -1.7), Affine.rotation(0.05))
        grid = source.grid.subgrid(-6, -6, 300, 300)
        fast = warp.read_warped(source, [1], grid, Resampling.lanczos, src_transform=corrected)
        monkeypatch.setattr(separable, "supports", lambda *args: False)
        slow = warp.read_warped(source, [1], grid, Resampling.lanczos, src_transform=corrected)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(fast).any()
    both = np.isfinite(fast)
    assert np.abs(fast - slow)[both].max() < 0.5  # digital numbers of a uint16 texture (std about 200)
    assert np.sqrt(np.mean((fast - slow)[both] ** 2)) < 0.01


def test_edge_bands_meeting_at_a_corner_take_tight_rectangles():
    """A rotated map's gaps in a corner block (slanted bands along the top rows and the left columns,
    their last row and column partly filled) are handed to GDAL as rectangles covering every gap
    pixel and about the bands alone: their bounding box was the whole block (0.11 to 0.14 s of GDAL's
    lanczos for a 1024 px block)."""
    rows, cols = np.mgrid[:1024, :1024]
    slope = np.tan(np.radians(0.05))
    gaps = (rows < 3 + slope * cols) | (cols < 3 + slope * rows)
    covered = np.zeros_like(gaps)
    for r0, r1, c0, c1 in warp._rectangles(gaps):
        covered[r0:r1, c0:c1] = True
    assert not (gaps & ~covered).any()
    assert covered.sum() <= 2 * gaps.sum() + warp.RECTANGLE_SLACK_PX, (covered.sum(), gaps.sum())


@pytest.mark.parametrize(("factor", "tx", "ty"), [(2, 17.37, 9.61), (3, 4.0, 11.0), (6, 0.23, 20.26)])
def test_integer_downsampling_by_average_gives_gdals_values(texture, factor, tx, ty):
    """Boxes of m x m whole source pixels at any offset (a coarse grid over a finer lattice) are
    averaged in two passes with GDAL's weights (each pixel by the length it covers): GDAL's values
    to float32 rounding, the lattice-aligned case (whole offsets) included."""
    matrix = _map(0.0, factor, tx, ty)
    assert separable.supports("average", matrix)
    shape = (80, 80)
    fast = separable.resample(texture, matrix, shape, "average")
    slow = _gdal(texture, matrix, shape, "average")
    assert np.isfinite(fast).all()
    assert np.abs(fast - slow).max() < 2e-3


def test_other_averages_are_left_to_gdal():
    """Non-integer or unequal factors, rotations and same-resolution grids are GDAL's."""
    assert not separable.supports("average", _map(0.0, 2.5, 3.0, 4.0))
    assert not separable.supports("average", _map(0.0, 1.0, 3.0, 4.0))
    assert not separable.supports("average", _map(0.01, 2.0, 3.0, 4.0))
    assert not separable.supports("average", np.array([[2.0, 0, 1.5], [0, 3.0, 2.5], [0, 0, 1]]))


def test_read_warped_averages_edges_and_holes_as_gdal_does(write, monkeypatch):
    """A coarse grid averaged by ``read_warped`` over a raster with nodata, reaching past its edge:
    the two passes where every box is valid, GDAL's answer (which weights the valid pixels) elsewhere:
    the same pixels as GDAL's warp alone, NaN included."""
    values = read_window(S2_REF, 900, 600, 400)
    values[150:170, 200:260] = 0
    path = write("holes.tif", values, dtype="uint16", nodata=0)
    with RasterSource(path, "moving") as source:
        grid = Grid(source.grid.crs, compose(source.grid.transform, Affine.translation(-7.4, 3.3), Affine.scale(3)),
                    140, 120)
        methods = []
        resample = separable.resample
        monkeypatch.setattr(separable, "resample", lambda *args: methods.append(args[3]) or resample(*args))
        fast = warp.read_warped(source, [1], grid, Resampling.average)
        assert methods == ["average"]
        monkeypatch.setattr(separable, "supports", lambda *args: False)
        slow = warp.read_warped(source, [1], grid, Resampling.average)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(fast).any()
    both = np.isfinite(fast)
    assert np.abs(fast - slow)[both].max() < 2e-3


def test_windows_sit_inside_the_moving_rasters_blocks():
    """With 512 px blocks, every 256 px window lies inside one block (one block decoded per window),
    the grid still spans the raster, and a 10980 px tile keeps more than 400 windows."""
    origins = window_origins((0, 0, 10980, 10980), 256, 22, block=(512, 512))
    assert len(origins) >= 400
    inside_one_block = (origins % 512) + 256 <= 512
    assert inside_one_block.all(axis=1).mean() > 0.9  # all but the last, partial block's row and column
    assert origins.min() < 512
    assert origins.max() + 256 > 10980 - 512
    strips = window_origins((0, 0, 10980, 10980), 256, 22, block=None)
    assert np.array_equal(strips, window_origins((0, 0, 10980, 10980), 256, 22))


def test_whole_pixel_translation_copies_pixels():
    """GDAL's pixel convention (corners at integers): a translation by whole pixels copies pixels."""
    values = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    out = separable.resample(values, _map(0.0, 1.0, 3.0, 5.0), (20, 20), "lanczos")
    np.testing.assert_allclose(out, values[5:25, 3:23], atol=1e-3)


def test_tie_point_windows_repeat_edge_pixels_where_the_kernel_leaves_the_raster(write, monkeypatch):
    """With ``repeat_edges`` a window at the raster's edge (a translation) takes the pixels resampled
    in full as they are and repeats the edge ones into the band where the kernel reaches past the
    raster, without a GDAL warp; a window reaching outside the raster keeps GDAL's answer (NaN there)."""
    values = read_window(S2_REF, 900, 600, 400)
    path = write("edge.tif", values, dtype="uint16")
    with RasterSource(path, "fixed") as source:
        corrected = compose(source.grid.transform, Affine.translation(-0.37, -0.58))  # inside the raster
        corner = source.grid.subgrid(0, 0, 64, 64)
        gdal = warp.read_warped(source, [1], corner, Resampling.lanczos, src_transform=corrected)[0]
        monkeypatch.setattr(warp, "_gdal_warp", lambda *args, **kwargs: pytest.fail("GDAL warp"))
        repeated = warp.read_warped(source, [1], corner, Resampling.lanczos, src_transform=corrected,
                                    repeat_edges=True)[0]
        full = np.isfinite(separable.resample(values.astype(np.float32), _map(0.0, 1.0, 0.37, 0.58), (64, 64),
                                              "lanczos"))
        monkeypatch.undo()
        outside = source.grid.subgrid(-2, 10, 64, 64)
        partly = warp.read_warped(source, [1], outside, Resampling.lanczos, src_transform=corrected,
                                  repeat_edges=True)[0]
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    top, left = rows[0], cols[0]
    assert top > 0  # the kernel of the first rows and columns reaches past the raster
    assert left > 0
    assert np.array_equal(repeated[full], gdal[full])
    assert np.array_equal(repeated[:top, left:], np.broadcast_to(repeated[top, left:], (top, 64 - left)))
    assert np.array_equal(repeated[:, :left], np.broadcast_to(repeated[:, left:left + 1], (64, left)))
    assert np.isnan(partly[:, 0]).all()
    assert np.isfinite(partly[:, 3:]).all()


def test_positioning_pass_hands_its_moving_windows_to_the_next(scene, monkeypatch):
    """The moving windows the positioning pass prepared are not read again by the next pass (which
    measures every window), and that pass measures exactly what it measures reading them all."""
    from coreg_plugin.estimate import tiepoints
    from coreg_plugin.estimate.correlation import UPSAMPLE, UPSAMPLE_ROUGH
    from coreg_plugin.estimate.tiepoints import TiePointMatcher

    fixed, moving = scene
    h = np.eye(3)
    h[:2, 2] = (1.5, -2.0)
    origins = window_origins((0, 0, 768, 768), 128, 5)
    subset = np.arange(0, len(origins), 2)
    reads: list[int] = []
    counted = TiePointMatcher._moving_data

    def counting(self, index):  # noqa: ANN001, ANN202
        reads.append(index)
        return counted(self, index)

    monkeypatch.setattr(TiePointMatcher, "_moving_data", counting)

    def measure(passes: list[tuple[int, np.ndarray | None]]) -> list:
        with RasterSource(moving, "moving") as m, RasterSource(fixed, "fixed") as f:
            matcher = TiePointMatcher(m, f, 1, 1, origins, 128, True, 1)
            try:
                return [matcher.measure_all(h, upsample, lambda done: None, indices=indices)
                        for upsample, indices in passes][-1]
            finally:
                matcher.close()

    both = measure([(UPSAMPLE_ROUGH, subset), (UPSAMPLE, None)])
    assert len(origins) == 25
    assert sorted(reads) == list(range(25))
    reads.clear()
    alone = measure([(UPSAMPLE, None)])
    assert sorted(reads) == list(range(25))
    assert [(p.dx, p.dy, p.reliability, p.status) for p in both] == \
        [(p.dx, p.dy, p.reliability, p.status) for p in alone]
    assert sum(p.status == "measured" for p in both) >= 20
    reads.clear()
    monkeypatch.setattr(tiepoints, "MAX_KEPT_MOVING", 5)  # the rest of the subset is read again
    capped = measure([(UPSAMPLE_ROUGH, subset), (UPSAMPLE, None)])
    assert len(reads) == len(subset) + 25 - 5
    assert [(p.dx, p.dy) for p in capped] == [(p.dx, p.dy) for p in both]


@pytest.mark.parametrize("per_axis", [8, 15, 22])
def test_positioning_pass_measures_5_by_5_windows_from_edge_to_edge(per_axis):
    """The positioning pass (it only places the next pass's windows) measures 25 windows spread over
    the grid from edge to edge, the corner windows included, whatever the grid's size from 8 a side;
    a smaller grid is measured whole."""
    from coreg_plugin.estimate.registration import _rough_subset

    side = 256 + (per_axis - 1) * 128
    origins = window_origins((0, 0, side, side), 256, per_axis)
    chosen = origins[_rough_subset(origins)]
    assert len(chosen) == 25
    for axis in (0, 1):
        positions = np.unique(chosen[:, axis])
        every = np.unique(origins[:, axis])
        assert len(positions) == 5
        assert positions[0] == every[0]
        assert positions[-1] == every[-1]
        assert np.diff(np.searchsorted(every, positions)).max() <= -(-(per_axis - 1) // 4)
    assert _rough_subset(window_origins((0, 0, 1024, 1024), 256, 7)) is None


UPSAMPLINGS = [(2, 17.37, 9.61), (2, 17.0, 9.0), (3, 4.1, 11.3), (4, 3.23, 20.26)]


@pytest.mark.parametrize("method", ["bilinear", "cubic", "lanczos"])
@pytest.mark.parametrize(("factor", "tx", "ty"), UPSAMPLINGS)
def test_whole_factor_upsampling_gives_gdals_values(texture, method, factor, tx, ty):
    """A grid k times finer (k whole: 20 m onto 10 m, 30 m onto 10 m), at any offset, is k interleaved
    translations along each axis: GDAL's own kernel and weights (GDAL does not widen the kernel when
    upsampling), so GDAL's values to float32 rounding wherever the kernel stays inside the source."""
    matrix = _map(0.0, 1.0 / factor, tx, ty)
    assert separable.supports(method, matrix)
    shape = (500, 480)
    fast = separable.resample(texture, matrix, shape, method)
    slow = _gdal(texture, matrix, shape, method)
    assert np.isfinite(fast).all()
    assert np.abs(fast - slow).max() < 2e-3


def test_upsampling_with_a_small_rotation_agrees_with_gdal(texture):
    """A 2 x upsampling combined with a registration's small rotation takes the two passes as a
    near-rigid map does: values within the same bound of GDAL's 2-D kernel."""
    matrix = _map(0.02, 0.5, 21.4, 12.8)
    assert separable.supports("lanczos", matrix)
    fast = separable.resample(texture, matrix, (500, 500), "lanczos")
    slow = _gdal(texture, matrix, (500, 500), "lanczos")
    difference = (fast - slow)[8:-8, 8:-8]
    assert np.isfinite(difference).all()
    assert np.sqrt(np.mean(difference ** 2)) < 1e-3 * texture.std()


def _fast_and_gdal(source: RasterSource, grid: Grid, method: str, monkeypatch) -> tuple[np.ndarray, np.ndarray, list]:
    """``read_warped`` onto ``grid`` as it runs (the GDAL warps it still made listed) and with GDAL's
    warper alone."""
    gdal_warps = []
    gdal_warp = warp._gdal_warp
    monkeypatch.setattr(warp, "_gdal_warp", lambda *args: gdal_warps.append(args[3]) or gdal_warp(*args))
    fast = warp.read_warped(source, [1], grid, Resampling[method])
    monkeypatch.undo()
    monkeypatch.setattr(separable, "supports", lambda *args: False)
    slow = warp.read_warped(source, [1], grid, Resampling[method])
    monkeypatch.undo()
    return fast[0], slow[0], gdal_warps


@pytest.mark.parametrize("nodata", [None, 0])
@pytest.mark.parametrize("method", ["bilinear", "cubic", "lanczos"])
@pytest.mark.parametrize(("factor", "tx", "ty"), [(1, -3.37, -2.61), (2, -7.3, -5.6), (2, -6.0, -6.0),
                                                  (3, -4.1, -3.3), (4, -3.0, -2.875)])
def test_read_warped_upsamples_past_the_rasters_edges_as_gdal_does(write, monkeypatch, nodata, method, factor, tx, ty):
    """A grid finer by a whole factor (or the raster's own) reaching past every edge of a real uint16
    raster (a tile of a mosaic): the same pixels as GDAL's warp alone, NaN included, where the
    kernel is cut by the edge too (GDAL weights the pixels inside: for bilinear, and cubic, which
    falls back to bilinear there, that is the edge pixels repeated, computed here without GDAL;
    lanczos's edge bands go to GDAL, a band at a time). (4, -3.0, -2.875) puts pixel centres exactly
    on the top and bottom edges, where GDAL decides."""
    values = read_window(S2_REF, 900, 600, 300) + 1
    path = write("tile.tif", values, Affine(20, 0, 400000, 0, -20, 5800000), dtype="uint16", nodata=nodata)
    with RasterSource(path, "input") as source:
        side = 310 * factor
        grid = Grid(source.grid.crs, compose(source.grid.transform, Affine.translation(tx, ty),
                                             Affine.scale(1.0 / factor)), side, side)
        fast, slow, gdal_warps = _fast_and_gdal(source, grid, method, monkeypatch)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(fast).any()
    assert np.isfinite(fast).mean() > 0.9
    both = np.isfinite(fast)
    assert np.abs(fast - slow)[both].max() < 2e-3
    if method == "lanczos":  # the edge bands, one rectangle each: none as wide as the grid is high
        assert len(gdal_warps) <= 4
        assert all(min(g.width, g.height) < 8 * factor for g in gdal_warps)
    elif ty != -2.875:
        assert not gdal_warps


def test_read_warped_upsamples_around_holes_as_gdal_does(write, monkeypatch):
    """Around no-data holes inside the raster GDAL weights the valid neighbours: those pixels are
    GDAL's answer, the rest the two passes; the same pixels as GDAL's warp alone, NaN included."""
    values = read_window(S2_REF, 900, 600, 300) + 1
    values[150:170, 100:160] = 0
    path = write("holes.tif", values, Affine(20, 0, 400000, 0, -20, 5800000), dtype="uint16", nodata=0)
    with RasterSource(path, "input") as source:
        grid = Grid(source.grid.crs, compose(source.grid.transform, Affine.translation(-5.3, -4.7), Affine.scale(0.5)),
                    620, 620)
        for method in ("bilinear", "cubic", "lanczos"):
            fast, slow, _ = _fast_and_gdal(source, grid, method, monkeypatch)
            assert np.array_equal(np.isnan(fast), np.isnan(slow))
            both = np.isfinite(fast)
            assert np.abs(fast - slow)[both].max() < 2e-3


@pytest.mark.parametrize("resampling", ["bilinear", "cubic", "lanczos"])
def test_a_mosaic_of_20_m_tiles_on_a_10_m_grid_is_gdals_warp(tmp_path, resampling):
    """Coregister Stack's "first" merge of tiles overlapping at their edges (20 m, uint16, nodata 0,
    real texture) onto a 10 m grid reaching past them: within 1 DN of each tile warped by GDAL's
    warper and merged in order (values within float32 rounding of a half are rounded to even here,
    up there), the same pixels with data."""
    texture = read_window(S2_REF, 700, 500, 400) + 1
    tiles = []
    for k, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        path = tmp_path / f"tile_{k}.tif"
        x0, y0 = 400000 + col * 120 * 20, 5800000 - row * 120 * 20
        synthetic.write_raster(path, texture[row * 120:row * 120 + 130, col * 120:col * 120 + 130] + 10 * k,
                               Affine(20, 0, x0, 0, -20, y0), dtype="uint16", nodata=0)
        tiles.append(path)
    reference = tmp_path / "reference.tif"
    ref_transform = Affine(10, 0, 400000 - 60, 0, -10, 5800000 + 50)
    synthetic.write_raster(reference, np.zeros((520, 530)), ref_transform, dtype="uint16", nodata=0)
    out = tmp_path / "mosaic.tif"
    coregister_stack(tiles, reference, out, merge_method="first", resampling=resampling, block_size=128)
    merged = np.full((520, 530), np.nan, np.float32)
    for path in tiles:
        with rasterio.open(path) as src:
            layer = np.full((520, 530), np.nan, np.float32)
            reproject(src.read(1).astype(np.float32), layer, src_transform=src.transform, src_crs=src.crs,
                      src_nodata=0, dst_transform=ref_transform, dst_crs=src.crs, dst_nodata=np.nan,
                      resampling=Resampling[resampling])
        np.copyto(merged, layer, where=np.isnan(merged))
    with rasterio.open(out) as ds:
        pixels = ds.read(1).astype(np.int64)
    assert np.array_equal(pixels == 0, np.isnan(merged))
    gdal = np.clip(np.rint(np.nan_to_num(merged)), 0, 65535).astype(np.int64)
    assert np.abs(pixels - gdal).max() <= 1
    assert (pixels != gdal).mean() < 1e-3


@pytest.mark.parametrize(("dtype", "nodata"), [("uint16", 0), ("int16", -9999), ("uint8", 255), ("int32", 7),
                                               ("uint16", 0.5), ("uint16", None)])
def test_valid_pixels_of_a_nodata_value_are_gdals_mask(write, dtype, nodata):
    """An integer band whose mask is its nodata value alone is read without asking GDAL for the mask
    (the pixels that differ from it are valid, as GDAL's mask says); any other mask is GDAL's."""
    values = read_window(S2_REF, 900, 600, 200) % 200
    values[50:80, 20:90] = 7 if nodata == 0.5 else (nodata or 0)
    values[120:130, :] = 255 if dtype == "uint8" else 0
    path = write("band.tif", values, dtype=dtype, nodata=nodata)
    window = rasterio.windows.Window(10, 30, 150, 120)
    with RasterSource(path, "input") as source, rasterio.open(path) as ds:
        data = source.read_valid([1], window)[0]
        expected = np.where(ds.read_masks(1, window=window) > 0, ds.read(1, window=window), np.nan)
    assert np.array_equal(np.isnan(data), np.isnan(expected))
    assert np.array_equal(data[~np.isnan(data)], expected[~np.isnan(expected)])


def test_valid_pixels_under_an_alpha_band_are_gdals_mask(tmp_path):
    """With an alpha band (a mask other than the nodata value), GDAL's mask decides, as before."""
    path = tmp_path / "rgba.tif"
    values = (read_window(S2_REF, 900, 600, 100) % 250).astype(np.uint8)
    alpha = np.full_like(values, 255)
    alpha[20:40, 10:60] = 0
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=2, dtype="uint8", crs=CRS_UTM,
                       transform=Affine(10, 0, 400000, 0, -10, 5800000), nodata=None, alpha="YES") as dst:
        dst.write(np.stack([values, alpha]))
    with rasterio.open(path) as ds:
        assert rasterio.enums.MaskFlags.alpha in ds.mask_flag_enums[0]
    with RasterSource(path, "input") as source:
        data = source.read_valid([1], rasterio.windows.Window(0, 0, 100, 100))[0]
    assert np.isnan(data[20:40, 10:60]).all()
    assert np.isfinite(data).sum() == 100 * 100 - 20 * 50


def test_threads_reading_one_shared_handle_read_what_each_reads_alone(write):
    """Threads reading windows through one handle (their reads take turns) get what one thread reads:
    the output blocks of Align and Apply share the moving raster's handle, and its decoded blocks."""
    values = read_window(S2_REF, 600, 400, 700) + 1
    values[100:140, 200:300] = 0
    path = write("shared.tif", values, dtype="uint16", nodata=0)
    windows = [rasterio.windows.Window(c, r, 300, 260) for r in range(0, 440, 110) for c in range(0, 400, 90)]
    with RasterSource(path, "input") as alone:
        expected = [alone.read_valid([1], w) for w in windows]
    with RasterSource(path, "input") as shared, ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda w: shared.read_valid([1], w), windows * 4))
    for a, b in zip(got, expected * 4):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("resampling", ["lanczos", "bilinear"])
def test_output_blocks_through_a_shared_handle_are_those_of_a_handle_each(tmp_path, write, monkeypatch, resampling):
    """``write_warped`` warps its blocks on worker threads through the source's own handle (each
    decoded block serving every thread): the same file as with a handle per thread."""
    values = read_window(S2_REF, 600, 400, 700) + 1
    path = write("moving.tif", values, dtype="uint16", nodata=0)
    monkeypatch.setattr(blocks, "blocks", lambda grid: writer.blocks(grid, 128))  # 36 blocks, on 2 to 4 threads
    outputs = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(blocks, "sharing_source", lambda source: contextlib.nullcontext())
        out = tmp_path / f"out_{shared}.tif"
        with RasterSource(path, "moving") as source:
            corrected = compose(source.grid.transform, Affine.translation(0.37, -0.61))
            blocks.write_warped(source, corrected, source.grid.subgrid(3, -5, 650, 690), str(out),
                                resampling=Resampling[resampling], nodata=0, progress=Progress())
        with rasterio.open(out) as ds:
            outputs.append(ds.read())
    assert np.array_equal(outputs[0], outputs[1])
    assert (outputs[0] != 0).mean() > 0.9
