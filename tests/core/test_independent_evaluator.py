"""Validation of tools/independent_evaluator.py on real texture from ../shared/data.

What is measured: the error of a measurement is the length of (the evaluator's median vector minus
the true displacement of the moving content), in pixels of the coarser grid. Truths are made in three
ways: fractional shifts by a quintic spline (``scipy.ndimage.shift``, order 5: not the evaluator's
cubic interpolator); free of any interpolation, whole-pixel shifts of a 10 m image followed by a
3 x 3 block mean, which moves the 30 m content by thirds of a pixel; across CRSs, without GDAL, the
UTM image resampled onto EPSG:3857 with PROJ's coordinates of every target pixel centre and a spline
(GDAL's warper does not put its pixels there: see the last tests).

Seen when written: same resolution, 12 shifts with fractions 0.1-0.9 on both axes over three
textures (Sentinel-2, Svalbard hillshade, Landsat-8), errors 0.001-0.008 px (median 0.004); across
the 3x resolution change, errors 0.003-0.005 px (30 m px), whichever image is the coarse one; across
CRSs, errors at most 0.004 px (UTM 10 m against EPSG:3857 about 30 m) and 0.003 px (against 3857 at
the same ground resolution, displacement (0.23, -0.31) px); equal pixel sizes on grids offset by
(0.4, 0.2) px, 0.002 px. GDAL's cubic reprojection of a 10 km UTM block onto its default 3857 grid
shows the content 0.059 px lower than the exact resampling does. The evaluator before the exact
resampling (GDAL ``average``) failed the cross-CRS and offset-grid tests here by 0.017-0.056 px.
Unrelated content is reported as not measurable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.warp import transform as transform_points
from scipy import ndimage

from conftest import DATA, S2_REF, S2_TGT, read_window
from tools.independent_evaluator import Grid, apply, compose, measure, source_coordinates

ROOT = Path(__file__).resolve().parents[2]
UTM33 = CRS.from_epsg(32633)
ORIGIN_10M = Affine(10, 0, 400000, 0, -10, 5800000)
LANDSAT8 = DATA / "landsat8-60m" / "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"
SVALBARD = DATA / "svalbard" / "hillshade_Horn_DEM2009_full.tif"
TEXTURES = {
    "s2": (S2_REF, 1000, 700),
    "svalbard": (SVALBARD, 100, 300),
    "landsat8": (LANDSAT8, 0, 100),
}
SIZE = 384
CROP = 8  # px cut from every side after shifting, where the spline saw the edge


def write(path: Path, data: np.ndarray, transform: Affine = ORIGIN_10M, crs: CRS = UTM33) -> Path:
    """A single-band float32 GeoTIFF (NaN as nodata)."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="float32", crs=crs, transform=transform, nodata=np.nan) as ds:
        ds.write(data.astype(np.float32), 1)
    return path


def block_mean(data: np.ndarray, k: int) -> np.ndarray:
    """k x k block mean (area average) of ``data``, cut to a multiple of k."""
    h, w = (s // k * k for s in data.shape)
    return data[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def error(result, truth: tuple[float, float]) -> float:
    """Length of the median vector's difference from the truth (px)."""
    assert result.measured, result.reason
    return float(np.hypot(result.median_px[0] - truth[0], result.median_px[1] - truth[1]))


WEB_MERCATOR = CRS.from_epsg(3857)
MERC_CROP = rasterio.windows.Window(1300, 800, 1000, 1000)  # of S2_REF: the crop of tools/real_pairs_table.py


def utm_crop() -> tuple[np.ndarray, Affine, CRS]:
    """The 1000 px (10 km) block of the s2-inter1 reference reprojected in the real pairs' table."""
    with rasterio.open(S2_REF) as ds:
        return ds.read(1, window=MERC_CROP).astype(float), ds.window_transform(MERC_CROP), ds.crs


def exact_resample(source: np.ndarray, src_transform: Affine, src_crs: CRS, dst_transform: Affine, dst_crs: CRS,
                   shape: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0), order: int = 3) -> np.ndarray:
    """``source`` resampled onto a grid without GDAL: every target pixel centre's source coordinates by
    PROJ (``rasterio.warp.transform``, every pixel, no approximation), sampled by a spline
    (``map_coordinates``, order ``order``, prefiltered). ``shift`` (x right, y down, target px) displaces the
    content: target pixel (c, r) shows what the unshifted image shows at (c - dx, r - dy). NaN outside."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    xs, ys = apply(dst_transform, cols + 0.5 - shift[0], rows + 0.5 - shift[1])
    xs, ys = transform_points(dst_crs, src_crs, xs.ravel(), ys.ravel())
    c, r = apply(~src_transform, xs, ys)
    out = ndimage.map_coordinates(source, [np.asarray(r) - 0.5, np.asarray(c) - 0.5], order=order, mode="constant",
                                  cval=np.nan)
    return out.reshape(shape)


def default_3857_grid(shape: tuple[int, int], transform: Affine, crs: CRS) -> tuple[Affine, int, int]:
    """GDAL's default EPSG:3857 grid for a raster (``calculate_default_transform``), as in the table."""
    bounds = rasterio.transform.array_bounds(shape[0], shape[1], transform)
    return calculate_default_transform(crs, WEB_MERCATOR, shape[1], shape[0], *bounds)


def local_jacobian(src_transform: Affine, src_crs: CRS, dst_transform: Affine, dst_crs: CRS,
                   centre: tuple[float, float]) -> np.ndarray:
    """2 x 2 matrix taking a vector in source pixels (x, y) at ``centre`` (source px) to target pixels,
    by PROJ on three points 1 px apart."""
    cx, cy = centre
    xs, ys = apply(src_transform, [cx, cx + 1, cx], [cy, cy, cy + 1])
    xs, ys = transform_points(src_crs, dst_crs, xs, ys)
    cols, rows = apply(~dst_transform, xs, ys)
    return np.array([[cols[1] - cols[0], cols[2] - cols[0]], [rows[1] - rows[0], rows[2] - rows[0]]])


def test_imports_nothing_from_coreg() -> None:
    code = ("import sys; import tools.independent_evaluator; "
            "sys.exit(any(m == 'coreg_plugin' or m.startswith('coreg_plugin.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


SHIFTS = [(0.1, 0.9), (-0.5, 0.3), (1.7, -0.2), (-2.4, -1.6)]  # content displacement (x right, y down), px


def test_fractional_shifts_same_resolution(tmp_path: Path) -> None:
    """Real texture shifted by 0.1-0.9 px fractions on both axes: each error at most 0.03 px, median 0.01."""
    errors = []
    for name, (path, row, col) in TEXTURES.items():
        truth = read_window(path, row, col, SIZE)
        fixed = write(tmp_path / f"{name}_fixed.tif", truth[CROP:-CROP, CROP:-CROP])
        for dx, dy in SHIFTS:
            # ndimage.shift moves the content by (+dy rows, +dx columns).
            moved = ndimage.shift(truth, (dy, dx), order=5, mode="nearest")[CROP:-CROP, CROP:-CROP]
            result = measure(write(tmp_path / "moving.tif", moved), fixed)
            errors.append(error(result, (dx, dy)))
            assert result.grid == "fixed"
            assert result.windows >= 40
            assert result.median_m == pytest.approx((result.median_px[0] * 10, -result.median_px[1] * 10))
    print("same-resolution errors (px):", np.round(errors, 4))
    assert max(errors) <= 0.03
    assert np.median(errors) <= 0.01


@pytest.mark.parametrize("moving_is_coarse", [True, False])
def test_thirds_across_a_resolution_change_without_interpolation(tmp_path: Path, moving_is_coarse: bool) -> None:
    """A 10 m image against the 3 x 3 block mean (30 m) of itself taken a whole number of 10 m pixels
    away: the 30 m content moves by thirds of a pixel, exactly. Measured on the 30 m grid either way."""
    big = read_window(S2_REF, 1000, 700, 3 * SIZE + 12)
    fine = big[6:6 + 3 * SIZE - 12, 6:6 + 3 * SIZE - 12]
    fine_path = write(tmp_path / "fine.tif", fine)
    coarse_grid = compose(ORIGIN_10M, Affine.scale(3))
    errors = []
    for a, b in [(1, 2), (-4, 1), (5, -2)]:  # (columns, rows) of 10 m pixels
        # The coarse pixel (i, j) averages fine pixels 3j + a .. (columns), so the content seen at fine
        # column x sits at coarse column (x - a) / 3: displaced by -a / 3 coarse px.
        coarse = block_mean(big[6 + b:6 + b + 3 * SIZE - 12, 6 + a:6 + a + 3 * SIZE - 12], 3)
        coarse_path = write(tmp_path / "coarse.tif", coarse, coarse_grid)
        if moving_is_coarse:
            result, truth = measure(coarse_path, fine_path), (-a / 3, -b / 3)
            assert result.grid == "moving"
        else:
            result, truth = measure(fine_path, coarse_path), (a / 3, b / 3)
            assert result.grid == "fixed"
        assert result.pixel_size == (30.0, 30.0)
        errors.append(error(result, truth))
    print("thirds, errors (px):", np.round(errors, 4))
    assert max(errors) <= 0.02


def test_fractional_shifts_across_a_resolution_change(tmp_path: Path) -> None:
    """A 10 m image shifted by fractions of a 10 m pixel, then block-averaged 3 x 3 (30 m), against the
    unshifted 10 m image: the truth is the shift / 3 in 30 m pixels. Each error at most 0.03 px."""
    fine = read_window(S2_REF, 900, 600, 3 * SIZE)
    cut = compose(ORIGIN_10M, Affine.translation(3 * CROP, 3 * CROP))
    fixed = write(tmp_path / "fine.tif", fine[3 * CROP:-3 * CROP, 3 * CROP:-3 * CROP], cut)
    coarse_grid = compose(cut, Affine.scale(3))
    errors = []
    for dx, dy in [(0.4, -0.7), (-1.3, 2.2), (2.9, 0.6)]:  # 10 m px
        moved = ndimage.shift(fine, (dy, dx), order=5, mode="nearest")[3 * CROP:-3 * CROP, 3 * CROP:-3 * CROP]
        result = measure(write(tmp_path / "moving.tif", block_mean(moved, 3), coarse_grid), fixed)
        assert result.grid == "moving"
        errors.append(error(result, (dx / 3, dy / 3)))
    print("fractional across 3x, errors (30 m px):", np.round(errors, 4))
    assert max(errors) <= 0.03


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.37, -0.52)])
def test_cross_crs_and_resolution(tmp_path: Path, offset: tuple[float, float]) -> None:
    """The 10 m UTM image resampled onto EPSG:3857 at about 30 m on the ground without GDAL (a 3 x 3
    box mean in its own grid, then PROJ at every 3857 pixel centre and a quintic spline: neither is
    the evaluator's box width or interpolator), its georeference then moved by ``offset`` of its pixels:
    the content is displaced by ``offset`` (x right, y down) in the 3857 grid's pixels. Error at most
    0.01 px. (Made with GDAL's cubic reprojection instead, the offset 0 measures about 0.025 px in rows:
    GDAL's own displacement, see the test below.)"""
    fine = read_window(S2_REF, 1000, 700, 3 * SIZE)
    fixed = write(tmp_path / "fine.tif", fine)
    bounds = rasterio.transform.array_bounds(fine.shape[0], fine.shape[1], ORIGIN_10M)  # west, south, east, north
    transform, width, height = calculate_default_transform(UTM33, WEB_MERCATOR, fine.shape[1], fine.shape[0],
                                                           *bounds, resolution=48.0)  # about 30 m on the ground
    out = exact_resample(ndimage.uniform_filter(fine, 3, mode="nearest"), ORIGIN_10M, UTM33, transform,
                         WEB_MERCATOR, (height, width), order=5)
    # Pixel (c, r) keeps its values but is labelled as the place (c + dx, r + dy) was.
    labelled = compose(transform, Affine.translation(*offset))
    result = measure(write(tmp_path / "moving.tif", out, labelled, WEB_MERCATOR), fixed)
    assert result.grid == "moving"
    print("cross-CRS, measured (px):", np.round(result.median_px, 4), "truth", offset, result.windows, "windows")
    assert error(result, offset) <= 0.01


def test_same_pixel_size_on_an_offset_grid(tmp_path: Path) -> None:
    """Equal pixel sizes, grids offset by (0.4, 0.2) px: the moving image (a quintic spline onto the
    offset grid, truth 0) is resampled back onto the fixed grid. Measured at most 0.01 px from 0.
    (GDAL's cubic or bilinear onto the offset grid measures about (0.007, 0.017) px: at fractions 0.4
    and 0.2, those interpolators are not pure shifts; GDAL's cubic_spline and lanczos measure 0.002.)"""
    truth = read_window(S2_REF, 1000, 700, SIZE)
    fixed = write(tmp_path / "fixed.tif", truth)
    offset_grid = compose(ORIGIN_10M, Affine.translation(0.4, 0.2))
    rows, cols = np.mgrid[0:SIZE - 2, 0:SIZE - 2].astype(float)
    moved = ndimage.map_coordinates(truth, [rows + 0.2, cols + 0.4], order=5, mode="constant", cval=np.nan)
    result = measure(write(tmp_path / "moving.tif", moved, offset_grid), fixed)
    assert result.grid == "fixed"
    assert error(result, (0.0, 0.0)) <= 0.01


def test_real_pair_sign_and_zero_fill(tmp_path: Path) -> None:
    """s2-inter1: the moving content sits about 7 m east and 18 m north of the reference's (README;
    AROSICS's correction is x = -0.64 to -0.71 px, y = +1.78 to +1.80 px). The zero fill of these
    uint16 files (no declared nodata) must not be matched."""
    window = rasterio.windows.Window(1200, 1000, 900, 900)  # of the reference; the same place in the target
    with rasterio.open(S2_REF) as ref, rasterio.open(S2_TGT) as tgt:
        ref_block = ref.read(1, window=window)
        ref_transform = ref.window_transform(window)
        tgt_window = tgt.window(*rasterio.windows.bounds(window, ref.transform)).round_offsets().round_lengths()
        tgt_block = tgt.read(1, window=tgt_window)
        tgt_transform = tgt.window_transform(tgt_window)
        profile = {"driver": "GTiff", "count": 1, "dtype": "uint16", "crs": ref.crs}
    tgt_block[:, :200] = 0  # a zero-filled strip, as at the scene's edges
    paths = []
    for name, block, transform in (("ref", ref_block, ref_transform), ("tgt", tgt_block, tgt_transform)):
        with rasterio.open(tmp_path / f"{name}.tif", "w", width=block.shape[1], height=block.shape[0],
                           transform=transform, **profile) as ds:
            ds.write(block, 1)
        paths.append(tmp_path / f"{name}.tif")
    result = measure(paths[1], paths[0])
    assert result.measured, result.reason
    assert result.median_px[0] == pytest.approx(0.67, abs=0.12)
    assert result.median_px[1] == pytest.approx(-1.80, abs=0.12)
    assert result.median_m[1] > 15  # north
    assert all(c[0] > 200 for c in result.centres_px)  # no window centred in the zero strip


@pytest.mark.parametrize("other", ["svalbard", "s2_elsewhere", "landsat8"])
def test_unrelated_content_cannot_be_measured(tmp_path: Path, other: str) -> None:
    """Unrelated real texture on the same grid: no number, a reason."""
    fixed = write(tmp_path / "fixed.tif", read_window(S2_REF, 1000, 700, SIZE))
    texture = {"svalbard": lambda: read_window(SVALBARD, 100, 300, SIZE),
               "s2_elsewhere": lambda: read_window(S2_REF, 2400, 1500, SIZE),
               "landsat8": lambda: read_window(LANDSAT8, 300, 500, SIZE)}[other]()
    result = measure(write(tmp_path / "moving.tif", texture), fixed)
    assert not result.measured
    assert result.reason.startswith("cannot measure")
    assert result.median_px is None
    assert result.rms_px is None
    assert result.windows_tried >= 40


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.23, -0.31)])
def test_cross_crs_exact_truth(tmp_path: Path, shift: tuple[float, float]) -> None:
    """The UTM crop resampled onto GDAL's default EPSG:3857 grid exactly (PROJ at every pixel centre,
    cubic spline, no GDAL), its content displaced by ``shift`` 3857 px: the evaluator recovers the
    displacement to 0.01 px. The crop's grid is the coarser here (its pixel covers a little more
    ground), so the truth is ``shift`` carried into UTM pixels by the local Jacobian (a rotation of
    about 2 degrees, the meridian convergence)."""
    utm, utm_transform, utm_crs = utm_crop()
    transform, width, height = default_3857_grid(utm.shape, utm_transform, utm_crs)
    moved = exact_resample(utm, utm_transform, utm_crs, transform, WEB_MERCATOR, (height, width), shift)
    fixed = write(tmp_path / "utm.tif", utm, utm_transform, utm_crs)
    result = measure(write(tmp_path / "m.tif", moved, transform, WEB_MERCATOR), fixed)
    assert result.grid == "fixed"
    jacobian = local_jacobian(transform, WEB_MERCATOR, utm_transform, utm_crs, (width / 2, height / 2))
    truth = jacobian @ np.array(shift)
    print("cross-CRS exact, measured (px):", np.round(result.median_px, 4), "truth", np.round(truth, 4),
          result.windows, "windows")
    assert result.windows >= 40
    assert error(result, tuple(truth)) <= 0.01


def test_gdal_cubic_reprojection_to_3857_displaces_the_content(tmp_path: Path) -> None:
    """The finding behind the exact resampling: GDAL's cubic reprojection of the crop onto its default
    EPSG:3857 grid (as ``tools/real_pairs_table.py`` makes it) shows the content about 0.03 px up
    (rows) from where an exact resampling onto the same grid puts it. Measured on one grid (no
    resampling in the evaluator): |dy| >= 0.02. The evaluator must then see the same displacement
    between GDAL's image and the UTM crop itself, within 0.01 px: a GDAL-based evaluator repeats
    GDAL's geometry and reports about 0 there."""
    utm, utm_transform, utm_crs = utm_crop()
    transform, width, height = default_3857_grid(utm.shape, utm_transform, utm_crs)
    gdal = np.zeros((height, width), dtype=np.uint16)
    reproject(utm.astype(np.uint16), gdal, src_transform=utm_transform, src_crs=utm_crs, dst_transform=transform,
              dst_crs=WEB_MERCATOR, resampling=Resampling.cubic, src_nodata=0, dst_nodata=0)
    gdal_path = write(tmp_path / "gdal.tif", np.where(gdal > 0, gdal, np.nan), transform, WEB_MERCATOR)
    exact = exact_resample(utm, utm_transform, utm_crs, transform, WEB_MERCATOR, (height, width))
    against_exact = measure(gdal_path, write(tmp_path / "exact.tif", exact, transform, WEB_MERCATOR))
    against_utm = measure(gdal_path, write(tmp_path / "utm.tif", utm, utm_transform, utm_crs))
    jacobian = local_jacobian(transform, WEB_MERCATOR, utm_transform, utm_crs, (width / 2, height / 2))
    expected = jacobian @ np.array(against_exact.median_px)
    print("GDAL 3857 against the exact image (3857 px):", np.round(against_exact.median_px, 4),
          "; against the UTM crop (UTM px):", np.round(against_utm.median_px, 4), "expected", np.round(expected, 4))
    assert against_exact.grid == "fixed"
    assert abs(against_exact.median_px[1]) >= 0.02
    assert error(against_utm, tuple(expected)) <= 0.01


def test_proj_lattice_interpolation_is_exact_to_a_thousandth_of_a_pixel() -> None:
    """Source coordinates from PROJ on every 8th target pixel, bicubically interpolated, against PROJ
    at every pixel: the crop onto its 3857 grid and back, and rgb1_fake_nir (3857, 200 m) onto rgb1
    (UTM WKT, 300 m) and back. Seen when written: at most 5e-10 px."""
    utm, utm_transform, utm_crs = utm_crop()
    transform, width, height = default_3857_grid(utm.shape, utm_transform, utm_crs)
    pairs = [(Grid(utm_transform, utm.shape[1], utm.shape[0], utm_crs), Grid(transform, width, height, WEB_MERCATOR))]
    with (rasterio.open(DATA / "landsat-rgb" / "rgb1_fake_nir_epsg3857.tif") as a,
          rasterio.open(DATA / "landsat-rgb" / "rgb1.tif") as b):
        pairs.append((Grid(a.transform, a.width, a.height, a.crs), Grid(b.transform, b.width, b.height, b.crs)))
    worst = 0.0
    for one, other in pairs:
        for source, target in ((one, other), (other, one)):
            rows, cols = source_coordinates(source, target)
            every_rows, every_cols = np.mgrid[0:target.height, 0:target.width] + 0.5
            xs, ys = apply(target.transform, every_cols, every_rows)
            xs, ys = transform_points(target.crs, source.crs, xs.ravel(), ys.ravel())
            c, r = apply(~source.transform, xs, ys)
            worst = max(worst, float(np.abs(rows - (r.reshape(rows.shape) - 0.5)).max()),
                        float(np.abs(cols - (c.reshape(cols.shape) - 0.5)).max()))
    print("lattice interpolation, worst error (px):", worst)
    assert worst < 1e-3
