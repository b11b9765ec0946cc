"""Measure the misregistration left between two georeferenced rasters, independently of Coreg.

Nothing here imports ``coreg_plugin``. Coreg estimates shifts by Fourier phase correlation (a
whitened cross-power spectrum) of edge proxies, refined by upsampled-DFT. This evaluator uses a
different kind of matcher, in the spatial domain:

1. Both rasters are brought onto the **coarser** of the two grids (the grid whose pixel covers the
   larger ground area, measured in the fixed image's CRS; the fixed grid when they are equal), with
   no GDAL in the geometry. The coarser raster is used as it is when it already lies on that grid.
   Otherwise the source coordinates (row, column) of every target pixel centre are computed exactly:
   by composing the affine transforms when the CRSs are equal, else by PROJ
   (``rasterio.warp.transform``) on every 8th target pixel centre and the last row and column,
   interpolated to the other pixels by a bicubic spline (error against PROJ at every pixel at most
   5e-10 px on the test's grids). When those coordinates show the target pixel to be exactly a k x k
   block of source pixels (k a whole number, to 1e-6 px: crops, whole-pixel offsets, aligned integer
   reductions, whatever the CRSs' spelling), the value is that block's mean, exactly. Otherwise the
   finer raster is area-averaged in its **own** grid by a box filter as wide, along each of its axes,
   as the target pixel's footprint (the root of 12 times the footprint's second moment along that
   axis, which is the side of a square footprint whether rotated or not; each source pixel weighted
   by its overlap with the box, so widths need not be whole numbers; no filter below 1 px), then
   sampled at the exact coordinates by a cubic spline (``scipy.ndimage.map_coordinates``, order 3,
   prefiltered). Both filters are symmetric about the sampled point, so neither moves the content.
   A target pixel is valid only when every source pixel under its box, and the 5 x 5 samples round
   the nearest source pixel that the spline leans on, are valid and inside the raster.
   Why not GDAL: its warper does not put every target pixel where PROJ does. Reprojecting a 10 km
   block of the s2-inter1 reference (UTM 33N, 10 m) onto GDAL's default EPSG:3857 grid, a ramp of
   row indices shows GDAL sampling 0.002-0.068 px (median 0.057) above PROJ's coordinates, varying in
   arcs about 500 px long along the rows (rasterio's ``tolerance``, 0.125 or 0, changed nothing), so
   its cubic image shows the content about 0.057 px lower than the exact one. An evaluator that
   resampled with GDAL (this one until then: ``Resampling.average``) repeated that error, measuring
   GDAL's image against the UTM block at 0.003 px instead of 0.055 and an exact image at -0.049 px
   instead of 0 (``tests/core/test_independent_evaluator.py``).
2. Validity: the file's mask (declared nodata, alpha, mask band), NaN, and, for integer rasters that
   declare no nodata, the value 0 (the zero fill of s2-inter1, Landsat scene edges, the black
   margin of the Everest subset).
3. Each image is turned into its gradient magnitude (Gaussian derivatives, sigma 1 px of the
   coarser grid). Gradient magnitude does not care about the sign of a contrast, which matters
   across bands (NIR against red) and dates; the sigma also makes the signal smooth enough for
   accurate cubic-spline interpolation in step 5.
4. On a regular grid of windows (64 px, fully valid in both images, the moving side with a margin
   for the search), the fixed window is the template and the zero-mean normalised cross-correlation
   (ZNCC, Pearson's r) is computed at every whole-pixel offset within +-10 px
   (direct sums, no Fourier transform). A window is kept only when its best r is at least 0.4,
   lies inside the search range (not on its border) and stands out from the best r more than 2 px
   away by at least 0.05.
5. Sub-pixel: starting from a 2-D quadratic fit to the 3 x 3 r values round the best offset, the
   ZNCC between the fixed window and the moving image sampled at the window's pixel centres plus a
   continuous offset (cubic B-spline: ``scipy.ndimage.spline_filter`` coefficients, evaluated
   separably, as ``map_coordinates(order=3)`` would) is maximised over the
   offset (Nelder-Mead, to 5e-4 px). Maximising the correlation itself avoids the peak-locking bias
   of a parabola fit, and involves no Fourier transform.
6. Outliers: windows farther than ``max(0.5 px, 3 x 1.4826 x median distance)`` from the median
   vector are dropped. The pair is **not measurable** (``measured`` false, no number) when fewer
   than 5 windows match, or when fewer than half of the matched windows agree with the median.

Sign convention: a window's vector ``(dx, dy)`` is the displacement of the moving (output) image's
content relative to the fixed image's, in pixels of the coarser grid, x along columns (right
positive), y along rows (down positive): what the fixed image shows at column c, row r, the moving
image shows at c + dx, r + dy. (Coreg's ``shift_px`` is a correction, so for a pair on one grid an
uncorrected input measures about ``-shift_px`` here.) Metres are given in map convention: x east
positive, y north positive, in the coarser grid CRS's units.

Validated by ``tests/core/test_independent_evaluator.py`` on real texture from ``../shared/data``
(error of the median vector against the truth): fractional shifts 0.1-0.9 px on both axes at one
resolution, 0.001-0.008 px (median 0.004); across a 3x area-averaged resolution change, 0.003-0.005
px; UTM 10 m against EPSG:3857 made exactly (PROJ at every pixel, spline) with known displacements,
at most 0.003 px at the same ground resolution and 0.004 px at about 30 m; equal pixel sizes on
grids offset by (0.4, 0.2) px, 0.002 px. Unrelated real textures give "cannot measure".

Run ``python tools/independent_evaluator.py MOVING FIXED [--moving-band N] [--fixed-band N]`` to print
the measurement as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as transform_points
from scipy import interpolate, ndimage, optimize

WINDOW = 64  # px of the coarser grid
SEARCH = 10  # px of the coarser grid, each way
SIGMA = 1.0  # px: Gaussian derivative scale of the gradient magnitude
MIN_R = 0.4  # lowest accepted peak correlation
MIN_MARGIN = 0.05  # the peak must exceed the best r more than 2 px away by this much
MIN_WINDOWS = 5
MAX_WINDOWS = 100
EDGE = 4  # px: invalid pixels reach this far into the gradient magnitude (4 sigma)
_HAS_MATMUL = hasattr(Affine, "__matmul__")  # affine 3 spells composition and application @, 2.4 only *


def compose(*transforms: Affine) -> Affine:
    """``transforms[0]`` after ``transforms[1]`` after ...: the right-most one applies first."""
    out = transforms[0]
    for t in transforms[1:]:
        out = out @ t if _HAS_MATMUL else out * t
    return out


def apply(transform: Affine, xs: object, ys: object) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` applied to coordinates (scalars or arrays): (x, y)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return transform @ (xs, ys) if _HAS_MATMUL else transform * (xs, ys)


@dataclass
class Grid:
    """A raster grid: affine transform (pixel corners), size and CRS."""

    transform: Affine
    width: int
    height: int
    crs: CRS

    def same_as(self, other: Grid) -> bool:
        """True when both grids have the same CRS, size and transform (to 1e-9 of a pixel)."""
        return (self.crs == other.crs and (self.width, self.height) == (other.width, other.height)
                and self.transform.almost_equals(other.transform, precision=1e-9 * abs(self.transform.a)))


@dataclass
class Layer:
    """One band as float64 with NaN where invalid, on its grid."""

    data: np.ndarray
    grid: Grid


@dataclass
class Measurement:
    """The misregistration of a moving raster against a fixed one (see the module docstring).

    Vectors are (x, y): pixels of the coarser grid, the moving content's displacement relative to the
    fixed content, x right, y down; ``*_m`` in map units, x east, y north. ``rms_px`` is the root mean
    square length of the kept windows' vectors; ``rms_xy_px`` that of each component.
    ``median_ci95_px`` is the approximate 95 % half-width of each median component
    (1.96 x 1.2533 x standard deviation / sqrt(n)).
    """

    measured: bool
    reason: str
    grid: str  # "moving" or "fixed": whose grid the measurement is on (the coarser)
    pixel_size: tuple[float, float]  # of that grid, CRS units (x, y)
    windows_tried: int = 0
    windows_matched: int = 0
    windows: int = 0  # kept (matched and not outliers)
    median_px: tuple[float, float] | None = None
    mean_px: tuple[float, float] | None = None
    rms_px: float | None = None
    rms_xy_px: tuple[float, float] | None = None
    median_ci95_px: tuple[float, float] | None = None
    median_m: tuple[float, float] | None = None
    mean_m: tuple[float, float] | None = None
    rms_m: float | None = None
    median_correlation: float | None = None
    vectors_px: list[tuple[float, float]] = field(default_factory=list)  # kept windows, x, y
    centres_px: list[tuple[float, float]] = field(default_factory=list)  # their centres, column, row

    @property
    def median_length_px(self) -> float | None:
        """Length of the median vector (px of the coarser grid), None when not measured."""
        return None if self.median_px is None else float(math.hypot(*self.median_px))

    def as_dict(self, with_vectors: bool = False) -> dict:
        """JSON-friendly form; the per-window vectors only when asked."""
        out = asdict(self)
        out["median_length_px"] = self.median_length_px
        if not with_vectors:
            out.pop("vectors_px")
            out.pop("centres_px")
        return out


def read_layer(path: str | os.PathLike, band: int = 1, zero_is_nodata: bool = True) -> Layer:
    """Band ``band`` (1-based) as float64 with NaN where invalid (module docstring, step 2)."""
    with rasterio.open(path) as ds:
        data = ds.read(band).astype(np.float64)
        valid = ds.read_masks(band) > 0
        integer = np.issubdtype(np.dtype(ds.dtypes[band - 1]), np.integer)
        if zero_is_nodata and integer and ds.nodatavals[band - 1] is None:
            valid &= data != 0
        grid = Grid(ds.transform, ds.width, ds.height, ds.crs)
    valid &= np.isfinite(data)
    data[~valid] = np.nan
    return Layer(data, grid)


def pixel_area(grid: Grid, crs: CRS) -> float:
    """Ground area of one pixel of ``grid`` at its centre, in ``crs`` units squared."""
    cx, cy = grid.width / 2, grid.height / 2
    cols = np.array([cx, cx + 1, cx])
    rows = np.array([cy, cy, cy + 1])
    xs, ys = apply(grid.transform, cols, rows)
    if grid.crs != crs:
        xs, ys = transform_points(grid.crs, crs, list(xs), list(ys))
    ux, uy = xs[1] - xs[0], ys[1] - ys[0]
    vx, vy = xs[2] - xs[0], ys[2] - ys[0]
    return abs(ux * vy - uy * vx)


LATTICE = 8  # target px between the points whose source coordinates PROJ computes (module docstring, step 1)


def source_coordinates(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) in ``source``'s array indices (pixel centres at whole numbers) of every pixel
    centre of ``target``: an exact affine composition when the CRSs are equal; otherwise PROJ
    (``rasterio.warp.transform``) on every ``LATTICE``-th target pixel centre (and the last row and
    column), interpolated to every pixel by a bicubic spline through those points. NaN where PROJ fails."""
    if source.crs == target.crs:
        to_source = compose(~source.transform, target.transform)
        rows, cols = np.mgrid[0:target.height, 0:target.width].astype(np.float64)
        c, r = apply(to_source, cols + 0.5, rows + 0.5)
        return r - 0.5, c - 0.5

    def lattice(n: int) -> np.ndarray:
        points = np.unique(np.append(np.arange(0, n, LATTICE), n - 1))
        return np.arange(n) if len(points) < 4 else points

    def by_proj(at_rows: np.ndarray, at_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.meshgrid(at_cols + 0.5, at_rows + 0.5)
        xs, ys = apply(target.transform, cols, rows)
        xs, ys = transform_points(target.crs, source.crs, xs.ravel(), ys.ravel())
        c, r = apply(~source.transform, xs, ys)
        c, r = (np.where(np.isfinite(v), v, np.nan).reshape(rows.shape) - 0.5 for v in (c, r))
        return r, c

    every_row, every_col = np.arange(target.height), np.arange(target.width)
    lr, lc = lattice(target.height), lattice(target.width)
    if min(len(lr), len(lc)) < 4 or (len(lr) == target.height and len(lc) == target.width):
        return by_proj(every_row, every_col)
    r, c = by_proj(lr, lc)
    if not (np.isfinite(r).all() and np.isfinite(c).all()):  # partly outside the projection's domain
        return by_proj(every_row, every_col)
    return (interpolate.RectBivariateSpline(lr, lc, r, kx=3, ky=3, s=0)(every_row, every_col),
            interpolate.RectBivariateSpline(lr, lc, c, kx=3, ky=3, s=0)(every_row, every_col))


def aligned_factor(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int] | None:
    """(k, row offset, column offset) when every target pixel is exactly the k x k block of source
    pixels starting at (row offset + k r, column offset + k c) (to 1e-6 px), otherwise None."""
    if rows.size < 2 or not (np.isfinite(rows).all() and np.isfinite(cols).all()):
        return None
    k = round(float(cols[0, 1] - cols[0, 0])) if cols.shape[1] > 1 else round(float(rows[1, 0] - rows[0, 0]))
    if k < 1:
        return None
    r0, c0 = rows[0, 0] - (k - 1) / 2, cols[0, 0] - (k - 1) / 2
    if abs(r0 - round(r0)) > 1e-6 or abs(c0 - round(c0)) > 1e-6:
        return None
    r0, c0 = round(r0), round(c0)
    rr, cc = np.mgrid[0:rows.shape[0], 0:rows.shape[1]]
    if (np.abs(rows - (r0 + k * rr + (k - 1) / 2)).max() > 1e-6
            or np.abs(cols - (c0 + k * cc + (k - 1) / 2)).max() > 1e-6):
        return None
    return k, r0, c0


def block_mean(data: np.ndarray, k: int, r0: int, c0: int, shape: tuple[int, int]) -> np.ndarray:
    """Mean of the k x k blocks of ``data`` starting at (r0 + k r, c0 + k c), on a ``shape`` grid;
    NaN where a block holds an invalid pixel or reaches past ``data``'s edge."""
    height, width = shape
    padded = np.full((max(r0 + k * height, data.shape[0]) - min(r0, 0),
                      max(c0 + k * width, data.shape[1]) - min(c0, 0)), np.nan)
    pr, pc = -min(r0, 0), -min(c0, 0)
    padded[pr:pr + data.shape[0], pc:pc + data.shape[1]] = data
    block = padded[pr + r0:pr + r0 + k * height, pc + c0:pc + c0 + k * width]
    return block.reshape(height, k, width, k).mean(axis=(1, 3))


def box_weights(width: float) -> np.ndarray:
    """1-D weights of the mean over an interval ``width`` px long centred on a pixel centre, the pixels
    being constant over their 1 px: each pixel's overlap with the interval, divided by ``width``."""
    half = width / 2
    n = math.ceil(half - 0.5)
    j = np.arange(-n, n + 1, dtype=np.float64)
    overlap = np.clip(np.minimum(j + 0.5, half) - np.maximum(j - 0.5, -half), 0.0, None)
    return overlap / overlap.sum()


def footprint(rows: np.ndarray, cols: np.ndarray) -> tuple[float, float]:
    """Widths (rows, columns), in source px, of the box matching a target pixel's footprint at the
    target grid's centre: the root of 12 times the footprint parallelogram's second moment along each
    source axis (for a square footprint of side s, rotated or not, s on both)."""
    h, w = rows.shape
    i, j = min(h // 2, h - 2), min(w // 2, w - 2)
    if i < 0 or j < 0:
        return 1.0, 1.0
    u = np.array([rows[i, j + 1] - rows[i, j], cols[i, j + 1] - cols[i, j]])  # one target column
    v = np.array([rows[i + 1, j] - rows[i, j], cols[i + 1, j] - cols[i, j]])  # one target row
    return float(math.hypot(u[0], v[0])), float(math.hypot(u[1], v[1]))


def onto(layer: Layer, grid: Grid) -> np.ndarray:
    """``layer`` area-averaged onto ``grid`` (module docstring, step 1): NaN where any contributing
    pixel is invalid or missing. No GDAL: see :func:`source_coordinates`, :func:`block_mean`,
    :func:`box_weights`."""
    if layer.grid.same_as(grid):
        return layer.data.copy()
    shape = (grid.height, grid.width)
    rows, cols = source_coordinates(layer.grid, grid)
    aligned = aligned_factor(rows, cols)
    if aligned is not None:
        return block_mean(layer.data, *aligned, shape)
    valid = np.isfinite(layer.data)
    if not valid.any():
        return np.full(shape, np.nan)
    # Invalid pixels take their nearest valid neighbour's value, so that the spline does not ring.
    nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    data = layer.data[tuple(nearest)]
    bad = ~valid
    for axis, width in enumerate(footprint(rows, cols)):
        if width > 1 + 1e-6:
            weights = box_weights(width)
            data = ndimage.correlate1d(data, weights, axis=axis, mode="nearest")
            bad = ndimage.maximum_filter1d(bad, len(weights), axis=axis, mode="constant", cval=1)
    # A cubic spline's value at p depends mostly on the samples floor(p) - 1 .. floor(p) + 2, all
    # within 2 px of the nearest sample: those must be valid, and inside the raster.
    bad = ndimage.maximum_filter(bad, size=5, mode="constant", cval=1)
    finite = np.isfinite(rows) & np.isfinite(cols)
    r, c = np.where(finite, rows, -10.0), np.where(finite, cols, -10.0)
    out = ndimage.map_coordinates(data, [r, c], order=3, mode="nearest", prefilter=True)
    outside = ndimage.map_coordinates(bad.astype(np.float64), [r, c], order=0, mode="constant", cval=1.0) > 0
    out[outside | ~finite] = np.nan
    return out


def gradient_magnitude(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian gradient magnitude (sigma ``SIGMA``) and its validity (the input's, eroded by ``EDGE``)."""
    valid = np.isfinite(data)
    filled = np.where(valid, data, np.nanmean(data) if valid.any() else 0.0)
    magnitude = ndimage.gaussian_gradient_magnitude(filled, SIGMA)
    return magnitude, ndimage.binary_erosion(valid, iterations=EDGE, border_value=0)


def _unit(a: np.ndarray) -> np.ndarray:
    """``a`` made zero-mean and of unit norm, flattened (all zeros when constant)."""
    a0 = (a - a.mean()).ravel()
    norm = float(np.sqrt(a0 @ a0))
    return a0 / norm if norm > 0 else a0


def _r(unit_template: np.ndarray, block: np.ndarray) -> float:
    """Pearson's r of a :func:`_unit` template with a block of the same size."""
    b = block.ravel()
    variance = float(b @ b) - float(b.sum()) ** 2 / b.size
    return float(unit_template @ b) / math.sqrt(variance) if variance > 0 else 0.0


def _quadratic_peak(r: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Sub-pixel (row, column) of the maximum of a 2-D quadratic fitted to r's 3 x 3 values round (i, j)."""
    patch = r[i - 1:i + 2, j - 1:j + 2]
    y, x = np.mgrid[-1:2, -1:2]
    a = np.column_stack([np.ones(9), x.ravel(), y.ravel(), x.ravel() ** 2, x.ravel() * y.ravel(), y.ravel() ** 2])
    c = np.linalg.lstsq(a, patch.ravel(), rcond=None)[0]
    hessian = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.linalg.det(hessian) <= 0 or hessian[0, 0] >= 0:
        return float(i), float(j)
    dx, dy = np.linalg.solve(hessian, -c[1:3])
    if abs(dx) > 1 or abs(dy) > 1:
        return float(i), float(j)
    return i + float(dy), j + float(dx)


def zncc_map(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson's r of ``template`` with every same-sized block of ``image``, in the spatial domain.

    Element (i, j) is r of ``template`` with ``image[i:i + h, j:j + w]``; the sums are direct (no
    Fourier transform), the block statistics come from integral images.
    """
    h, w = template.shape
    t0 = template - template.mean()
    products = np.tensordot(sliding_window_view(image, (h, w)), t0, axes=2)
    s1 = np.pad(image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    s2 = np.pad((image * image).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def box(c: np.ndarray) -> np.ndarray:
        return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]

    variance = np.maximum(box(s2) - box(s1) ** 2 / (h * w), 0.0) * float((t0 * t0).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, products / np.sqrt(variance), 0.0)


def _bspline_weights(f: float) -> tuple[float, float, float, float]:
    """Cubic B-spline weights of the coefficients at k - 1, k, k + 1, k + 2 for position k + f, 0 <= f < 1."""
    g = 1.0 - f
    return g ** 3 / 6, 2 / 3 - f * f + f ** 3 / 2, 2 / 3 - g * g + g ** 3 / 2, f ** 3 / 6


def shifted_block(coefficients: np.ndarray, row: int, col: int, size: int, dy: float, dx: float) -> np.ndarray:
    """The size x size block of the cubic-spline image whose first pixel is at (row + dy, col + dx).

    ``coefficients`` are cubic B-spline coefficients (``scipy.ndimage.spline_filter``, order 3); the
    interpolation is separable, the same values as ``scipy.ndimage.map_coordinates(..., order=3,
    prefilter=False)`` away from the array's edges (which the caller keeps 3 px away).
    """
    iy, ix = math.floor(dy), math.floor(dx)
    wy, wx = _bspline_weights(dy - iy), _bspline_weights(dx - ix)
    r0, c0 = row + iy - 1, col + ix - 1
    block = coefficients[r0:r0 + size + 3, c0:c0 + size + 3]
    rows = sum(w * block[k:k + size] for k, w in enumerate(wy))
    return sum(w * rows[:, k:k + size] for k, w in enumerate(wx))


def match_window(fixed: np.ndarray, moving: np.ndarray, coefficients: np.ndarray, row: int, col: int,
                 window: int = WINDOW, search: int = SEARCH) -> tuple[float, float, float] | None:
    """(dx, dy, r) of one window, or None when it does not match (module docstring, steps 4 and 5).

    ``fixed`` and ``moving`` are the gradient magnitudes on one grid; ``coefficients`` the moving
    one's cubic B-spline coefficients (``scipy.ndimage.spline_filter``). ``row``, ``col``: the
    window's first pixel, at least ``search + 3`` px from the edges.
    """
    template = fixed[row:row + window, col:col + window]
    if template.std() == 0:
        return None
    r = zncc_map(moving[row - search:row + window + search, col - search:col + window + search], template)
    i, j = np.unravel_index(int(np.argmax(r)), r.shape)
    peak = float(r[i, j])
    if peak < MIN_R or not (0 < i < r.shape[0] - 1 and 0 < j < r.shape[1] - 1):
        return None
    yy, xx = np.mgrid[:r.shape[0], :r.shape[1]]
    away = (yy - i) ** 2 + (xx - j) ** 2 > 4
    if away.any() and peak - float(r[away].max()) < MIN_MARGIN:
        return None
    fi, fj = _quadratic_peak(r, i, j)
    unit = _unit(template)
    start = np.array([fj - search, fi - search])
    limit = search + 1

    def cost(d: np.ndarray) -> float:
        if abs(d[0]) > limit or abs(d[1]) > limit:
            return 1.0
        return -_r(unit, shifted_block(coefficients, row, col, window, float(d[1]), float(d[0])))

    simplex = np.array([start, start + [0.25, 0.0], start + [0.0, 0.25]])
    best = optimize.minimize(cost, start, method="Nelder-Mead",
                             options={"xatol": 5e-4, "fatol": 1e-9, "initial_simplex": simplex, "maxiter": 400})
    dx, dy = (float(v) for v in best.x)
    if math.hypot(dx - (j - search), dy - (i - search)) > 1.5:
        return None
    return dx, dy, -float(best.fun)


def window_corners(valid_fixed: np.ndarray, valid_moving: np.ndarray, window: int = WINDOW, search: int = SEARCH,
                   max_windows: int = MAX_WINDOWS) -> list[tuple[int, int]]:
    """Corners (row, col) of the windows to match, on a lattice of half a window.

    A window must be fully valid in the fixed image and, with the search margin (+3 px for the
    refinement), in the moving image. The lattice's origin (in steps of an eighth of a window) is the
    one that fits the most windows, which matters for small overlaps. At most ``max_windows``, evenly
    spread over the lattice's list when there are more.
    """
    margin = search + 3
    step = window // 2
    height, width = valid_fixed.shape
    if height < window + 2 * margin or width < window + 2 * margin:
        return []

    def clean(valid: np.ndarray, size: int) -> np.ndarray:
        """Whether each size x size block (indexed by its first pixel) is fully valid: integral image."""
        bad = np.pad((~valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return (bad[size:, size:] - bad[:-size, size:] - bad[size:, :-size] + bad[:-size, :-size]) == 0

    ok_moving = clean(valid_moving, window + 2 * margin)  # indexed by the region's first pixel
    ok = clean(valid_fixed, window)[margin:margin + ok_moving.shape[0], margin:margin + ok_moving.shape[1]]
    ok &= ok_moving  # ok[i, j]: the window whose first pixel is (i + margin, j + margin)
    offsets = [(oy, ox) for oy in range(0, step, max(step // 4, 1)) for ox in range(0, step, max(step // 4, 1))]
    oy, ox = max(offsets, key=lambda o: int(ok[o[0]::step, o[1]::step].sum()))
    rows, cols = np.nonzero(ok[oy::step, ox::step])
    corners = [(int(r * step + oy + margin), int(c * step + ox + margin)) for r, c in zip(rows, cols)]
    if len(corners) > max_windows:
        keep = np.unique(np.linspace(0, len(corners) - 1, max_windows).round().astype(int))
        corners = [corners[k] for k in keep]
    return corners


def measure_arrays(moving: np.ndarray, fixed: np.ndarray, *, window: int = WINDOW, search: int = SEARCH,
                   max_windows: int = MAX_WINDOWS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-window (dx, dy) of ``moving``'s content relative to ``fixed``'s (px; same grid, NaN invalid).

    Returns the matched windows' vectors (n, 2), their centres (n, 2: column, row), their peak
    correlations (n,) and the number of windows tried.
    """
    g_fixed, v_fixed = gradient_magnitude(fixed)
    g_moving, v_moving = gradient_magnitude(moving)
    corners = window_corners(v_fixed, v_moving, window, search, max_windows)
    coefficients = ndimage.spline_filter(g_moving, order=3)
    vectors, centres, peaks = [], [], []
    for row, col in corners:
        found = match_window(g_fixed, g_moving, coefficients, row, col, window, search)
        if found is not None:
            vectors.append(found[:2])
            centres.append((col + window / 2, row + window / 2))
            peaks.append(found[2])
    return (np.array(vectors, dtype=float).reshape(-1, 2), np.array(centres, dtype=float).reshape(-1, 2),
            np.array(peaks, dtype=float), len(corners))


def summarise(vectors: np.ndarray, peaks: np.ndarray, tried: int, grid_name: str,
              pixel_size: tuple[float, float], centres: np.ndarray | None = None) -> Measurement:
    """Outlier rejection and the statistics of a :class:`Measurement` (module docstring, step 6)."""
    base = {"grid": grid_name, "pixel_size": pixel_size, "windows_tried": tried, "windows_matched": len(vectors)}
    if len(vectors) < MIN_WINDOWS:
        return Measurement(False, f"cannot measure: {len(vectors)} of {tried} windows match (need {MIN_WINDOWS})",
                           **base)
    median = np.median(vectors, axis=0)
    distance = np.hypot(*(vectors - median).T)
    keep = distance <= max(0.5, 3 * 1.4826 * float(np.median(distance)))
    if keep.sum() < max(MIN_WINDOWS, 0.5 * len(vectors)):
        return Measurement(False, f"cannot measure: only {int(keep.sum())} of {len(vectors)} matched windows agree",
                           **base)
    kept = vectors[keep]
    median = np.median(kept, axis=0)
    mean = kept.mean(axis=0)
    rms_xy = np.sqrt((kept ** 2).mean(axis=0))
    rms = float(np.sqrt((kept ** 2).sum(axis=1).mean()))
    ci = 1.96 * 1.2533 * kept.std(axis=0, ddof=1) / math.sqrt(len(kept))
    sx, sy = pixel_size

    def metres(v: np.ndarray) -> tuple[float, float]:
        return float(v[0] * sx), float(-v[1] * sy)

    return Measurement(
        True, "", **{**base, "windows": int(keep.sum())},
        median_px=(float(median[0]), float(median[1])), mean_px=(float(mean[0]), float(mean[1])),
        rms_px=rms, rms_xy_px=(float(rms_xy[0]), float(rms_xy[1])), median_ci95_px=(float(ci[0]), float(ci[1])),
        median_m=metres(median), mean_m=metres(mean), rms_m=rms * math.sqrt(sx * sy),
        median_correlation=float(np.median(peaks[keep])),
        vectors_px=[(float(a), float(b)) for a, b in kept],
        centres_px=[] if centres is None else [(float(a), float(b)) for a, b in centres[keep]])


def common_grid(moving: Grid, fixed: Grid) -> tuple[str, Grid]:
    """The coarser grid (by pixel area in the fixed CRS; the fixed one on a tie) and whose it is."""
    a_moving, a_fixed = pixel_area(moving, fixed.crs), pixel_area(fixed, fixed.crs)
    if a_moving > a_fixed * (1 + 1e-6):
        return "moving", moving
    return "fixed", fixed


def measure(moving: str | os.PathLike, fixed: str | os.PathLike, *, moving_band: int = 1, fixed_band: int = 1,
            zero_is_nodata: bool = True, window: int = WINDOW, search: int = SEARCH,
            max_windows: int = MAX_WINDOWS) -> Measurement:
    """The misregistration of ``moving`` (e.g. Coreg's output) against ``fixed`` (module docstring).

    Bands are 1-based. ``zero_is_nodata``: treat 0 as invalid in integer rasters that declare no nodata.
    """
    m_layer = read_layer(moving, moving_band, zero_is_nodata)
    f_layer = read_layer(fixed, fixed_band, zero_is_nodata)
    name, grid = common_grid(m_layer.grid, f_layer.grid)
    pixel_size = (abs(grid.transform.a), abs(grid.transform.e))
    m_data, f_data = onto(m_layer, grid), onto(f_layer, grid)
    both = np.isfinite(m_data) & np.isfinite(f_data)
    if not both.any():
        return Measurement(False, "cannot measure: no common valid area", name, pixel_size)
    rows, cols = np.nonzero(both)
    pad = search + EDGE + 4
    r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, grid.height)
    c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, grid.width)
    m_data, f_data = m_data[r0:r1, c0:c1], f_data[r0:r1, c0:c1]
    f_data[~np.isfinite(m_data)] = np.nan  # the common valid area only
    vectors, centres, peaks, tried = measure_arrays(m_data, f_data, window=window, search=search,
                                                    max_windows=max_windows)
    return summarise(vectors, peaks, tried, name, pixel_size, centres + [c0, r0] if len(centres) else centres)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the measurement of MOVING against FIXED as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("moving", type=Path)
    parser.add_argument("fixed", type=Path)
    parser.add_argument("--moving-band", type=int, default=1, help="1-based (default 1)")
    parser.add_argument("--fixed-band", type=int, default=1, help="1-based (default 1)")
    parser.add_argument("--vectors", action="store_true", help="also print every kept window's vector")
    args = parser.parse_args(argv)
    result = measure(args.moving, args.fixed, moving_band=args.moving_band, fixed_band=args.fixed_band)
    print(json.dumps(result.as_dict(with_vectors=args.vectors), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
