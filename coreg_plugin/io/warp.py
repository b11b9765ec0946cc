"""Resampling a raster onto any grid, reading only the part of it that the grid needs.

This is the one warp primitive of the package: the coarse matching stage, every tie-point window,
every output block and every stack block go through :func:`read_warped`. It reads a bounded source
window, marks invalid pixels as NaN and lets GDAL's warper (``rasterio.warp.reproject``) resample,
so memory is bounded by the destination grid, never by the source raster's size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window

from ..common.affines import apply, compose
from . import separable
from .raster_source import Grid, RasterSource

# rasterio's reproject of numpy arrays wraps them in MEM datasets that, in worker threads, warn
# "no geotransform" before their transform is set (spurious, see opendatacube/odc-geo#131). Coreg
# checks every input's georeference itself (RasterSource), so this exact message is not needed.
warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs",
                        category=NotGeoreferencedWarning)

#: Source pixels read at once at most; larger requests are split into strips of destination rows.
MAX_SOURCE_PIXELS = 1 << 22
#: Extra source pixels read around the footprint, for the resampling kernel (lanczos needs 3).
KERNEL_MARGIN = 4
#: A pixel centre this close (source pixels) to a source's edge may fall on either side of it in
#: GDAL's transformer (whose warper gives no data where a centre falls outside the source).
EDGE_TOLERANCE_PX = 1e-6
#: Points per destination edge used to find the footprint when CRSs differ.
EDGE_POINTS = 9
#: GDAL before 3.10.1 shifts lanczos results by half a source pixel when downsampling
#: (OSGeo/gdal#11042, fixed by #11046). Measured here with GDAL 3.6.2, Debian 12's, which QGIS 3.22
#: uses: 0.5 px off for a 2x downsampling (and for a same-resolution grid rotated by 3.6 degrees or
#: more, were GDAL left to count the rotated footprint's larger extent as downsampling: see
#: :func:`kernel_scales`); cubic is exact.
LANCZOS_DOWNSAMPLING_OK = tuple(int(v) for v in rasterio.__gdal_version__.split(".")[:3]) >= (3, 10, 1)
#: What to use instead on those versions: no shift when downsampling (measured on GDAL 3.6.2).
LANCZOS_DOWNSAMPLING_SUBSTITUTE = Resampling.cubic
#: GDAL's warper treats a kernel scale (destination pixels per source pixel) from this to 1 as 1:
#: no downsampling, the kernel at its nominal width (its 5 % margin, measured: 0.9506 counts as 1,
#: 0.9488 does not, GDAL 3.6.2 and 3.10.3). Scales just below 1 must not reach GDAL: its generic
#: kernel then misplaces cubic_spline by up to 0.8 px on both, and lanczos by 0.25 px on 3.6.
UNIT_SCALE_FROM = 0.95


def effective_resampling(resampling: Resampling, source_pixels_per_destination_pixel: float) -> Resampling:
    """The method to hand GDAL: ``resampling``, unless that is lanczos downsampling (as measured by
    :func:`kernel_downsampling`) on a GDAL that shifts it, then :data:`LANCZOS_DOWNSAMPLING_SUBSTITUTE`."""
    if (resampling == Resampling.lanczos and source_pixels_per_destination_pixel > 1 / UNIT_SCALE_FROM
            and not LANCZOS_DOWNSAMPLING_OK):
        return LANCZOS_DOWNSAMPLING_SUBSTITUTE
    return resampling


def kernel_scales(src_transform: Affine, dst_transform: Affine) -> tuple[float, float]:
    """The scale GDAL's kernel is given for a warp between two grids of one CRS: destination pixels
    per source pixel along the destination's columns and rows (below 1: downsampling, the kernel
    widened by its inverse), from the affine map between the grids, so independent of the chunk
    GDAL warps at a time. At :data:`UNIT_SCALE_FROM` or above it is 1, as GDAL counts it."""
    return _unit_snapped(compose(~src_transform, dst_transform))


def kernel_downsampling(source_grid: Grid, src_transform: Affine, dst: Grid) -> float:
    """Source pixels per destination pixel as GDAL's kernel counts them for an output warp of a
    source (pixel-to-map ``src_transform`` in ``source_grid``'s CRS) onto ``dst``: the inverse of
    the smaller of :func:`kernel_scales`. Across CRSs, of the map's derivative at ``dst``'s centre:
    such an output is warped in tiles (:func:`read_warped_tiles`), each an affine map in ``dst``'s
    CRS given its own kernel scale."""
    if source_grid.crs == dst.crs:
        return 1 / min(kernel_scales(src_transform, dst.transform))
    cols, rows = np.array([0.0, 1.0, 0.0]) + dst.width / 2, np.array([0.0, 0.0, 1.0]) + dst.height / 2
    xs, ys = transform_coords(dst.crs, source_grid.crs, *apply(dst.transform, cols, rows))
    scols, srows = apply(~src_transform, np.asarray(xs), np.asarray(ys))
    if not (np.isfinite(scols).all() and np.isfinite(srows).all()):
        return extent_scale(footprint_in_source(source_grid, src_transform, dst), dst)
    derivative = Affine(scols[1] - scols[0], scols[2] - scols[0], 0, srows[1] - srows[0], srows[2] - srows[0], 0)
    return 1 / min(_unit_snapped(derivative))


def _unit_snapped(pixel_map: Affine) -> tuple[float, float]:
    """Destination pixels per source pixel along the destination's axes of ``pixel_map``
    (destination pixel -> source pixel), 1 from :data:`UNIT_SCALE_FROM` up."""
    scales = (1 / math.hypot(pixel_map.a, pixel_map.d), 1 / math.hypot(pixel_map.b, pixel_map.e))
    return tuple(1.0 if scale >= UNIT_SCALE_FROM else scale for scale in scales)


def footprint_in_source(
    source_grid: Grid, src_transform: Affine, dst: Grid
) -> tuple[float, float, float, float]:
    """Bounding box (col0, row0, col1, row1) of ``dst`` in the source's pixel coordinates.

    ``src_transform`` is the source's pixel-to-map transform (possibly corrected); coordinates
    are continuous pixel-corner coordinates and may fall outside the source raster.
    """
    same_crs = dst.crs == source_grid.crs
    if same_crs:  # an affine map: the box of the corners is the box of the edges
        cols, rows = np.array([0.0, dst.width, dst.width, 0.0]), np.array([0.0, 0.0, dst.height, dst.height])
    else:
        t = np.linspace(0.0, 1.0, EDGE_POINTS)
        cols = np.concatenate([t * dst.width, np.full_like(t, dst.width), t * dst.width, np.zeros_like(t)])
        rows = np.concatenate([np.zeros_like(t), t * dst.height, np.full_like(t, dst.height), t * dst.height])
    xs, ys = apply(dst.transform, cols, rows)
    if not same_crs:
        xs, ys = transform_coords(dst.crs, source_grid.crs, xs, ys)
        xs, ys = np.asarray(xs), np.asarray(ys)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return (0.0, 0.0, 0.0, 0.0)
    scols, srows = apply(~src_transform, xs[ok], ys[ok])
    return float(np.min(scols)), float(np.min(srows)), float(np.max(scols)), float(np.max(srows))


def extent_scale(box: tuple[float, float, float, float], dst: Grid) -> float:
    """Source pixels per destination pixel along the footprint's box, as GDAL's warper counts them.

    A rotated destination grid has a larger box than its area, so it counts as downsampling here,
    as it does for GDAL's own estimate (used across CRSs); within one CRS :func:`kernel_scales`
    gives GDAL the map's own scale instead.
    """
    return max((box[2] - box[0]) / max(dst.width, 1), (box[3] - box[1]) / max(dst.height, 1))


def kernel_margin(scale: float, factor: int = 1) -> int:
    """Source pixels read beyond a destination's footprint for the resampling kernel: ``scale``
    source pixels per destination pixel, read averaged over ``factor`` x ``factor`` pixels."""
    return factor * KERNEL_MARGIN + math.ceil(2 * max(scale, 1.0))


def source_window(source_grid: Grid, box: tuple[float, float, float, float], margin: int) -> Window | None:
    col0, row0, col1, row1 = box
    c0 = max(0, math.floor(col0) - margin)
    r0 = max(0, math.floor(row0) - margin)
    c1 = min(source_grid.width, math.ceil(col1) + margin)
    r1 = min(source_grid.height, math.ceil(row1) + margin)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def decimation_factor(source: RasterSource, bands: list[int], src_transform: Affine, dst: Grid, share: int = 1) -> int:
    """Whole source pixels per ``dst`` pixel (the smaller axis) divided by ``share``, when that is 2
    or more, the CRSs are the same and ``bands`` are valid throughout (GDAL's decimated read applies
    no mask); else 1."""
    if dst.crs != source.grid.crs or not all(source.fully_valid(band) for band in bands):
        return 1
    pixel_map = compose(~src_transform, dst.transform)
    per_pixel = min(math.hypot(pixel_map.a, pixel_map.d), math.hypot(pixel_map.b, pixel_map.e))
    factor = math.floor(per_pixel / share + 0.01)  # a correction scales by a few parts per million either way
    return factor if factor >= 2 else 1


def _aligned(window: Window, factor: int, grid: Grid) -> Window | None:
    """``window`` grown to whole blocks of ``factor`` x ``factor`` source pixels on the source's own
    lattice, inside the raster; None when no whole block is left (at the raster's last partial one)."""
    c0 = int(window.col_off) // factor * factor
    r0 = int(window.row_off) // factor * factor
    c1 = min(-(-int(window.col_off + window.width) // factor) * factor, grid.width // factor * factor)
    r1 = min(-(-int(window.row_off + window.height) // factor) * factor, grid.height // factor * factor)
    return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None


def read_warped(
    source: RasterSource,
    bands: list[int],
    dst: Grid,
    resampling: Resampling,
    *,
    src_transform: Affine | None = None,
    src_crs: CRS | None = None,
    num_threads: int = 1,
    decimate: int = 0,
    repeat_edges: bool = False,
) -> np.ndarray:
    """Resample 1-based ``bands`` of ``source`` onto ``dst``; NaN where no valid source pixel lands.

    ``src_transform`` replaces the source's geotransform, which is how a registration correction is
    applied: the corrected geotransform places the source's content where it truly belongs, and the
    resampling onto ``dst`` happens once. Returns float data of shape (len(bands), dst.height, dst.width).

    ``decimate`` (n >= 1): where ``dst``'s pixels span k >= 2 times n of the source's (k whole) and
    the source is valid throughout, read the source averaged over k x k pixels (GDAL's decimated
    read) and resample that, instead of filtering every full-resolution pixel in the warp. With
    n = 1 (matching: a 10 m fixed window on a 20 m moving window) what is left is near-rigid; with
    n = 2 (the coarse stage's average) every output pixel still averages 2 x 2 or more of them.

    ``repeat_edges``: where ``dst`` lies inside a source valid throughout and the resampling kernel
    of its pixels nearest the raster's edge reaches past it (bands along ``dst``'s edges, for a
    translation), repeat the edge pixels resampled in full instead of GDAL's kernel cut at the edge
    (a tie-point window, whose few border pixels the matching's taper all but ignores: one GDAL
    warp for them cost more than the rest of the read).
    """
    src_transform = source.dataset.transform if src_transform is None else src_transform
    grid = _framed(source.grid, src_crs)
    out = np.full((len(bands), dst.height, dst.width), np.nan, dtype=source.float_dtype)
    box = footprint_in_source(grid, src_transform, dst)
    scale = extent_scale(box, dst)
    factor = decimation_factor(source, bands, src_transform, dst, decimate) if decimate and src_crs is None else 1
    window = source_window(grid, box, kernel_margin(scale, factor))
    if window is None:
        return out
    if window.width * window.height > MAX_SOURCE_PIXELS * factor * factor and dst.height > 1:
        half = dst.height // 2
        kwargs = {"src_transform": src_transform, "src_crs": src_crs, "num_threads": num_threads,
                  "decimate": decimate}
        top = read_warped(source, bands, dst.subgrid(0, 0, dst.width, half), resampling, **kwargs)
        rest = dst.subgrid(0, half, dst.width, dst.height - half)
        bottom = read_warped(source, bands, rest, resampling, **kwargs)
        return np.concatenate([top, bottom], axis=1)
    blocks = _aligned(window, factor, source.grid) if factor > 1 else None
    if blocks is not None:
        window = blocks
        data = np.stack([source.read_average(band, window, (int(window.height) // factor, int(window.width) // factor),
                                             source.float_dtype) for band in bands])
        window_transform = compose(src_transform, Affine.translation(window.col_off, window.row_off),
                                   Affine.scale(factor))
        scale /= factor
    else:
        data = source.read_valid(bands, window)
        window_transform = compose(src_transform, Affine.translation(window.col_off, window.row_off))
    # in one CRS GDAL gets the kernel's scale; across CRSs it estimates it from the chunk's box
    downsampling = kernel_downsampling(grid, window_transform, dst) if dst.crs == grid.crs else scale
    method = effective_resampling(resampling, downsampling)
    matrix = np.array(compose(~window_transform, dst.transform)).reshape(3, 3)
    if dst.crs == grid.crs and separable.supports(method.name, matrix):
        for band, values in enumerate(data):
            if out.dtype == np.float32:
                separable.resample(values, matrix, dst.shape, method.name, out[band])
            else:
                out[band] = separable.resample(values, matrix, dst.shape, method.name)
        gaps = np.isnan(out).any(axis=0)
        if gaps.any() and repeat_edges and _inside(box, grid) and not np.isnan(data).any():
            if all(_repeated_edges(values) for values in out):
                return out
        region = _bounding_box(gaps)
        if region is not None:  # where the kernel met no data or the source's edge: GDAL weights the valid pixels
            gaps[region] &= _centres_inside(matrix, region, data.shape[1:])  # elsewhere GDAL gives no data too
        rectangles = _rectangles(gaps)
        if (rectangles and region is not None and method.name in EDGE_BILINEAR_METHODS and not np.isnan(data).any()
                and not (gaps[region] & ~_centres_inside(matrix, region, data.shape[1:], -EDGE_TOLERANCE_PX)).any()):
            _bilinear_edges(data, matrix, out, gaps, rectangles)  # no centre on the edge, where GDAL decides
            return out
        for r0, r1, c0, c1 in rectangles:
            part = dst.subgrid(c0, r0, c1 - c0, r1 - r0)
            near, near_transform = _source_part(data, window_transform, part, scale)
            filled = _gdal_warp(near, near_transform, grid.crs, part, method, num_threads)
            np.copyto(out[:, r0:r1, c0:c1], filled, where=gaps[r0:r1, c0:c1])
        return out
    return _gdal_warp(data, window_transform, grid.crs, dst, method, num_threads, out)


def read_warped_tiles(
    source: RasterSource,
    bands: list[int],
    dst: Grid,
    resampling: Resampling,
    tiles: list[tuple[tuple[int, int, int, int], Affine]],
    src_crs: CRS | None = None,
) -> np.ndarray:
    """Resample ``bands`` of ``source`` onto ``dst`` tile by tile, each tile (col0, row0, col1, row1
    of ``dst``) with its own source geotransform, by GDAL's warper as :func:`read_warped` does; NaN
    where no valid source pixel lands (and outside every tile). The geotransforms map source pixels
    into ``src_crs`` (default: the source's CRS); in ``dst``'s CRS each tile is an affine warp, with
    no coordinate transformation for GDAL to interpolate.

    The source window under all the tiles is read once when it is small enough (the tiles of a
    local correction lie side by side), else each tile is read on its own.
    """
    out = np.full((len(bands), dst.height, dst.width), np.nan, dtype=source.float_dtype)
    parts = [(dst.subgrid(c0, r0, c1 - c0, r1 - r0), (c0, r0, c1, r1), transform)
             for (c0, r0, c1, r1), transform in tiles]
    grid = _framed(source.grid, src_crs)
    boxes = [footprint_in_source(grid, transform, part) for part, _, transform in parts]
    if not boxes:
        return out
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    scale = max(extent_scale(box, part) for box, (part, _, _) in zip(boxes, parts))
    window = source_window(grid, union, kernel_margin(scale))
    if window is None:
        return out
    if window.width * window.height > MAX_SOURCE_PIXELS:
        for part, (c0, r0, c1, r1), transform in parts:
            out[:, r0:r1, c0:c1] = read_warped(source, bands, part, resampling, src_transform=transform,
                                               src_crs=src_crs)
        return out
    data = source.read_valid(bands, window)
    method = effective_resampling(resampling, max(kernel_downsampling(grid, transform, part)
                                                  for part, _, transform in parts))
    for part, (c0, r0, c1, r1), transform in parts:
        window_transform = compose(transform, Affine.translation(window.col_off, window.row_off))
        near, near_transform = _source_part(data, window_transform, part, scale)
        if near.size:
            out[:, r0:r1, c0:c1] = _gdal_warp(near, near_transform, grid.crs, part, method, 1)
    return out


def _framed(grid: Grid, crs: CRS | None) -> Grid:
    """``grid`` with its pixels placed in ``crs`` (by a geotransform given there) instead of its own CRS."""
    return grid if crs is None else Grid(crs, grid.transform, grid.width, grid.height)


#: Methods whose GDAL kernel, for a pixel whose kernel the source's edge cuts, is bilinear with the
#: weights of the pixels inside (cubic falls back to bilinear within 2 px of the edge when the
#: source has no mask and GDAL's warper takes 4 samples, as it does for the maps of
#: :mod:`.separable`): the edge pixels repeated, as :func:`_bilinear_edges` resamples them.
EDGE_BILINEAR_METHODS = frozenset({"bilinear", "cubic"})


def _bilinear_edges(
    data: np.ndarray, matrix: np.ndarray, out: np.ndarray, gaps: np.ndarray,
    rectangles: list[tuple[int, int, int, int]],
) -> None:
    """Fill the ``gaps`` of ``out`` (bands, rows, cols; within ``rectangles``) where the kernel met
    the edge of ``data`` (valid throughout; ``matrix``: ``out``'s pixel corners -> ``data``'s) as
    GDAL's bilinear does there: the weights of the pixels inside, renormalized, which is bilinear
    over ``data`` with its edge pixels repeated once around it."""
    padded = np.pad(data, ((0, 0), (1, 1), (1, 1)), mode="edge")
    for r0, r1, c0, c1 in rectangles:
        # out's pixel corners in the rectangle -> padded's pixel corners
        part = matrix @ np.array([[1.0, 0.0, c0], [0.0, 1.0, r0], [0.0, 0.0, 1.0]]) + [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
        where = gaps[r0:r1, c0:c1]
        for band, values in enumerate(padded):
            filled = separable.resample(values, part, (r1 - r0, c1 - c0), "bilinear")
            np.copyto(out[band, r0:r1, c0:c1], filled, where=where)


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns (slices) of the smallest box holding the True pixels of 2-D ``mask``;
    None when there is none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _centres_inside(
    matrix: np.ndarray, region: tuple[slice, slice], source_shape: tuple[int, int], tol: float = EDGE_TOLERANCE_PX,
) -> np.ndarray:
    """The pixels of ``region`` (rows, columns: slices with bounds) of a destination whose centres
    ``matrix`` (destination pixel corners -> source pixel corners) maps into a source of
    ``source_shape`` (rows, columns), or within ``tol`` of its edge (by default
    :data:`EDGE_TOLERANCE_PX`: GDAL's warper gives no data anywhere else; -:data:`EDGE_TOLERANCE_PX`:
    those it surely gives data, when the kernel meets some). A rotated map's test takes a float per
    pixel of ``region``: callers ask only for the box of the pixels they test."""
    rows, cols = region
    ys = np.arange(rows.start, rows.stop)[:, None] + 0.5
    xs = np.arange(cols.start, cols.stop)[None, :] + 0.5
    height, width = source_shape
    sx = matrix[0, 0] * xs + matrix[0, 2] + (matrix[0, 1] * ys if matrix[0, 1] else 0.0)  # a row, unless rotated
    sy = matrix[1, 1] * ys + matrix[1, 2] + (matrix[1, 0] * xs if matrix[1, 0] else 0.0)  # a column, unless rotated
    return ((sx > -tol) & (sx < width + tol)) & ((sy > -tol) & (sy < height + tol))


#: A rectangle of :func:`_row_groups` covers at most this many times the extents of the rows it
#: takes (plus :data:`RECTANGLE_SLACK_PX`); a row that would take it beyond starts a new one.
RECTANGLE_SLACK = 2
#: ... so that rectangles of a few pixels are not cut further (pixels).
RECTANGLE_SLACK_PX = 256


def _rectangles(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Few rectangles (row0, row1, col0, col1) covering the True pixels of 2-D ``mask`` tightly: in
    each half of its bounding box (left, right), runs of consecutive rows grouped by
    :func:`_row_groups`; a group of the left half and one of the right over the same rows, meeting in
    the middle, are one rectangle. Bands along a raster's edges (a frame round a small raster, or two
    bands meeting at a block's corner, slanted under a rotation) take a rectangle each instead of
    their bounding box (a warp of the whole block: 0.11 to 0.14 s of GDAL's lanczos for a 1024 px
    corner block)."""
    box = _bounding_box(mask)
    if box is None:
        return []
    r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
    middle = (c0 + c1) // 2
    left = [(a + r0, b + r0, x + c0, y + c0) for a, b, x, y in _row_groups(mask[r0:r1, c0:middle])]
    right = {(a + r0, b + r0): (x + middle, y + middle) for a, b, x, y in _row_groups(mask[r0:r1, middle:c1])}
    out = []
    for a, b, x, y in left:
        if y == middle and right.get((a, b), (None,))[0] == middle:
            y = right.pop((a, b))[1]
        out.append((a, b, x, y))
    return out + [(a, b, x, y) for (a, b), (x, y) in right.items()]


def _row_groups(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Rectangles (row0, row1, col0, col1) covering the True pixels of 2-D ``mask``: runs of
    consecutive rows whose True pixels, from each row's first to its last, box together within
    :data:`RECTANGLE_SLACK` times those extents (plus :data:`RECTANGLE_SLACK_PX`)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return []
    firsts = mask[rows].argmax(axis=1)
    stops = mask.shape[1] - mask[rows, ::-1].argmax(axis=1)
    out: list[tuple[int, int, int, int]] = []
    r0 = previous = int(rows[0])
    c0, c1, covered = int(firsts[0]), int(stops[0]), int(stops[0] - firsts[0])
    for row, first, stop in zip(rows[1:].tolist(), firsts[1:].tolist(), stops[1:].tolist()):
        lo, hi = min(c0, first), max(c1, stop)
        if row == previous + 1 and (row + 1 - r0) * (hi - lo) <= (
                RECTANGLE_SLACK * (covered + stop - first) + RECTANGLE_SLACK_PX):
            c0, c1, covered = lo, hi, covered + stop - first
        else:
            out.append((r0, previous + 1, c0, c1))
            r0, c0, c1, covered = row, first, stop, stop - first
        previous = row
    out.append((r0, previous + 1, c0, c1))
    return out


def _inside(box: tuple[float, float, float, float], grid: Grid) -> bool:
    """Whether the footprint ``box`` (source pixel corners) lies within the source raster ``grid``."""
    return box[0] >= 0 and box[1] >= 0 and box[2] <= grid.width and box[3] <= grid.height


def _repeated_edges(values: np.ndarray) -> bool:
    """Where the finite pixels of 2-D ``values`` form one rectangle (a translation's kernel cut at
    the source's edges), fill the bands around it with its edge pixels, in place; False (nothing
    changed) where they do not."""
    finite = np.isfinite(values)
    box = _bounding_box(finite)
    if box is None:
        return False
    r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
    if not finite[r0:r1, c0:c1].all():
        return False
    height, width = values.shape
    values[:] = np.pad(values[r0:r1, c0:c1], ((r0, height - r1), (c0, width - c1)), mode="edge")
    return True


def _source_part(
    data: np.ndarray, transform: Affine, dst: Grid, scale: float
) -> tuple[np.ndarray, Affine]:
    """The part of ``data`` (bands, rows, cols; geotransform ``transform``) that resampling onto
    ``dst`` (same CRS) reads, with the margin of :func:`read_warped`'s own window, and its
    geotransform: GDAL then wraps and scans that part, not the whole of ``data``."""
    grid = Grid(dst.crs, transform, data.shape[2], data.shape[1])
    window = source_window(grid, footprint_in_source(grid, transform, dst), kernel_margin(scale))
    if window is None:
        return data, transform
    c0, r0 = int(window.col_off), int(window.row_off)
    part = data[:, r0:r0 + int(window.height), c0:c0 + int(window.width)]
    return part, compose(transform, Affine.translation(c0, r0))


def _gdal_warp(
    data: np.ndarray, src_transform: Affine, src_crs: CRS, dst: Grid, resampling: Resampling, num_threads: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``data`` (bands, rows, cols; NaN = no data) with geotransform ``src_transform`` resampled by
    GDAL's warper onto ``dst`` (into ``out`` if given); NaN where no valid source pixel lands.

    In one CRS the kernel's scale comes from the map between the grids (:func:`kernel_scales`).
    GDAL would derive it from each chunk's bounding box in the source, which for a rotated map or a
    narrow chunk is wider than the chunk: it widens the kernel as for downsampling, off-centre once
    normalized (a bilinear warp of index ramps: up to 0.08 px off at 1 degree, 1.5 px at 5 degrees,
    2.8 px at 30 degrees in a 6 px wide last block; tests/core/test_warp_placement.py)."""
    if out is None:
        out = np.full((len(data), dst.height, dst.width), np.nan, dtype=data.dtype)
    scales = {}
    if src_crs == dst.crs:
        x_scale, y_scale = kernel_scales(src_transform, dst.transform)
        scales = {"XSCALE": repr(x_scale), "YSCALE": repr(y_scale)}
    reproject(
        source=data,
        destination=out,
        src_transform=src_transform,
        src_crs=src_crs,
        # Without invalid pixels, no source nodata: same result, and GDAL's faster kernels (cubic: 2x).
        src_nodata=np.nan if np.isnan(data).any() else None,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=np.nan,
        resampling=resampling,
        num_threads=num_threads,
        **scales,
    )
    return out
