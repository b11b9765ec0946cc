"""Resampling through a near-rigid affine map, or onto a grid finer by a whole factor, in two passes
of 1-D kernels: rows, then columns; likewise averaging onto a coarser grid of whole pixels.

GDAL's warper evaluates its kernel in two dimensions for every destination pixel (lanczos: 6 x 6
weights computed per pixel, about 0.25 microseconds a pixel on this project's 2-core machine).
When the map from destination to source pixels is a translation, a rotation of at most about half
a degree and a scale within about 3e-5 of 1 (what a registration's correction of a raster on its
own grid is), it splits into two passes (a shear decomposition, geometrically exact):

1. every source row is resampled at the columns where the destination columns cross it;
2. every destination column is resampled along those rows.

In each pass the positions along a line advance by one pixel per pixel (to within
``MAX_POSITION_ERROR_PX`` over a segment), so the whole line is shifted by one fraction and takes
one set of kernel weights: each pass is a handful of array slices times per-line weights, about
twenty times faster than GDAL's lanczos. The kernels are GDAL's (bilinear, cubic with a = -0.5,
lanczos with a = 3, normalized as GDAL normalizes them), so a translation gives GDAL's values.

A grid k times finer (k whole: 20 m inputs onto a 10 m grid, 30 m onto 10 m), north-up against the
source or rotated as little as above, is k interleaved near-rigid passes along each axis: every k-th
destination pixel advances by one source pixel. GDAL does not widen its kernel when upsampling, so
this too is GDAL's kernel and weights (a 512 px block of a 2 x bilinear upsampling: about 1.5 ms
here, 15 ms through GDAL's warper).

GDAL's ``average`` onto a grid whose pixels are boxes of m x m whole source pixels at any offset (a
coarse grid over a finer raster, or over a k x k average of it: the coarse stage's reference) is
separable too: each pass sums m + 1 slices weighted by the length of each pixel a box covers, as
GDAL weights them (:func:`box_average`: its values to float32 rounding; the coarse stage's
reference read onto a stack input's grid took 222 ms through GDAL's warper, 34 ms so).

Positions use GDAL's convention: pixel corners at integers, pixel (i, j) centred at (i + 0.5, j + 0.5).
No data is NaN and spreads: a destination pixel whose kernel meets a NaN or leaves the source array
is NaN (callers let GDAL fill those pixels, as it weights the valid neighbours).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: Lines summed together where each line takes kernel weights of its own (a rotated map): NumPy's
#: products of a whole 1024 px block by a column of weights per line ran 1.6 x slower (the pass down
#: the columns of a block rotated by 0.02 degrees: 8.2 ms whole, 5.1 ms in strips of 256 lines).
LINES_PER_STRIP = 256
#: Largest position error (px) allowed by treating a line segment's positions as one fraction.
MAX_POSITION_ERROR_PX = 1e-3
#: Line segments are at least this long (px); a map whose scale along a pass needs shorter ones
#: is not near-rigid (GDAL's warper is used).
MIN_SEGMENT_PX = 64
#: A map counts as boxes of m x m whole source pixels (:func:`box_average`) when its scale is within
#: this of the integer m: positions drift by less than 1e-4 px over 100 000 destination pixels.
INTEGER_SCALE_TOLERANCE = 1e-9


def _bilinear(t: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(t), 0.0, None)


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution with a = -0.5, as GDAL's ``cubic``."""
    t = np.abs(t)
    near = (1.5 * t - 2.5) * t * t + 1.0
    far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return np.where(t <= 1.0, near, np.where(t < 2.0, far, 0.0))


def _lanczos(t: np.ndarray) -> np.ndarray:
    """Lanczos with a = 3, as GDAL's ``lanczos``."""
    return np.where(np.abs(t) < 3.0, np.sinc(t) * np.sinc(t / 3.0), 0.0)


#: Method name (rasterio's) -> (kernel radius in pixels, kernel).
KERNELS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "bilinear": (1, _bilinear),
    "cubic": (2, _cubic),
    "lanczos": (3, _lanczos),
}


def _segment(slope: float) -> int | None:
    """Length (px) of line segments over which positions advancing by ``slope`` per pixel stay
    within ``MAX_POSITION_ERROR_PX`` of one fraction; None when shorter than ``MIN_SEGMENT_PX``."""
    spread = abs(slope - 1.0)
    if spread == 0.0:
        return 1 << 30
    length = int(2 * MAX_POSITION_ERROR_PX / spread)
    return length if length >= MIN_SEGMENT_PX else None


def _phases(slope: float) -> int | None:
    """The whole number k of destination pixels per source pixel along a pass whose positions
    advance by ``slope`` per pixel: 1 for a near-rigid pass, k >= 2 for an upsampling by a whole
    factor (every k-th destination pixel then advances by k * ``slope``, near 1: k interleaved
    near-rigid passes); None for any other slope (downsampling, whose kernel GDAL widens, or a
    factor that is not whole)."""
    if not 0.0 < slope <= 1.5:
        return None
    k = round(1.0 / slope)
    return k if k >= 1 and _segment(k * slope) is not None else None


def supports(method: str, matrix: np.ndarray) -> bool:
    """Whether :func:`resample` can map through ``matrix`` (3 x 3, destination pixel -> source
    pixel) with ``method``: a known kernel and a near-rigid map, or one upsampling by a whole
    factor along both axes (see the module docstring), or ``average`` onto boxes of whole pixels."""
    if method == "average":
        return _box_supports(matrix)
    a, b, d, e = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    if method not in KERNELS or e <= 0 or abs(b) > 0.01 * e or abs(d) > 0.01 * e:
        return False
    return _phases(a - b * d / e) is not None and _phases(e) is not None


def _weights(fractions: np.ndarray, method: str) -> np.ndarray:
    """Per-line kernel weights (lines, taps) for positions ``floor + fraction``; taps run from
    ``floor - radius + 1`` to ``floor + radius``; each line's weights sum to 1."""
    radius, kernel = KERNELS[method]
    taps = np.arange(-radius + 1, radius + 1)
    w = kernel(fractions[:, None] - taps[None, :])
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _line_pass(
    src: np.ndarray, slope: float, offsets: np.ndarray, length: int, method: str, out: np.ndarray | None = None,
) -> np.ndarray:
    """Resample each row ``k`` of ``src`` (2-D, NaN = no data) at index positions
    ``slope * x + offsets[k]`` for x = 0 .. ``length`` - 1 (pixel centres at integers), into
    ``out`` (lines, ``length``, all NaN; a new array if not given).

    Positions whose kernel leaves the row give NaN. The result has ``src``'s memory order: a pass
    along columns is a pass along the rows of ``src.T``, a view, without copying the data.
    An upsampling by a whole factor k is k interleaved passes, one for every k-th position.
    """
    radius = KERNELS[method][0]
    lines, size = src.shape
    if out is None:
        out = np.full((lines, length), np.nan, np.float32, order="F" if src.flags.f_contiguous else "C")
    k = _phases(slope) or 1
    if k > 1:
        for phase in range(min(k, length)):
            _line_pass(src, k * slope, offsets + slope * phase, len(range(phase, length, k)), method, out[:, phase::k])
        return out
    segment = min(_segment(slope) or MIN_SEGMENT_PX, length)
    for x0 in range(0, length, segment):
        x1 = min(length, x0 + segment)
        centre = (x0 + x1 - 1) // 2
        positions = slope * centre + offsets
        floors = np.floor(positions)
        fractions = positions - floors
        uniform = bool((fractions == fractions[0]).all())  # a translation: every line takes the same weights
        weights = _weights(fractions[:1] if uniform else fractions, method)
        # the first tap of output x (in this segment) is at base + x
        base = (floors - centre - radius + 1).astype(np.int64)
        starts = np.flatnonzero(np.diff(base)) + 1
        for r0, r1 in zip(np.r_[0, starts], np.r_[starts, lines]):
            first = int(base[r0])
            lo, hi = max(x0, -first), min(x1, size - 2 * radius + 1 - first)
            if hi <= lo:
                continue
            # per tap: a scalar, or a column of lines (contiguous: along memory in a pass down columns)
            w = weights[0] if uniform else np.ascontiguousarray(weights[r0:r1].T)[:, :, None]
            _taps(out[r0:r1, lo:hi], src[r0:r1, first + lo:first + hi + 2 * radius - 1], w)
    return out


def _taps(acc: np.ndarray, rows: np.ndarray, w: np.ndarray) -> None:
    """``acc`` = the sum over taps k of ``w[k]`` times ``rows`` shifted by k positions (``w[k]``: a
    scalar, or a column of the lines' weights), summed in place, one product at a time; lines with
    weights of their own :data:`LINES_PER_STRIP` at a time (the same products and sums)."""
    if np.ndim(w[0]) and acc.shape[0] > LINES_PER_STRIP:
        for start in range(0, acc.shape[0], LINES_PER_STRIP):
            lines = slice(start, start + LINES_PER_STRIP)
            _taps(acc[lines], rows[lines], w[:, lines])
        return
    width = acc.shape[1]
    np.multiply(w[0], rows[:, :width], out=acc)
    product = np.empty_like(acc)
    for k in range(1, len(w)):
        np.multiply(w[k], rows[:, k:k + width], out=product)
        acc += product


def resample(
    source: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], method: str, out: np.ndarray | None = None,
) -> np.ndarray:
    """``source`` (2-D, NaN = no data) resampled onto a destination of ``shape`` (rows, columns).

    ``matrix`` (3 x 3) maps destination pixel-corner coordinates (x = column, y = row) to the
    source's; it must satisfy :func:`supports`. Returns float32, NaN where the kernel meets no data
    or leaves ``source``, in ``out`` if given (float32, ``shape``, C order, all NaN). ``average``
    takes :func:`box_average`.
    """
    if method == "average":
        values = box_average(source, matrix, shape)
        if out is None:
            return values
        out[...] = values
        return out
    height, width = shape
    a, b, c = matrix[0]
    d, e, f = matrix[1]
    # index positions (pixel centres at integers) of destination pixel centres
    c_idx = a * 0.5 + b * 0.5 + c - 0.5
    f_idx = d * 0.5 + e * 0.5 + f - 0.5
    radius = KERNELS[method][0]
    x = np.arange(width)
    q_ends = f_idx + np.array([0.0, d * (width - 1)]) + np.array([[0.0], [e * (height - 1)]])
    j0 = max(0, math.floor(q_ends.min()) - radius + 1)
    j1 = min(source.shape[0], math.floor(q_ends.max()) + radius + 1)
    if j1 <= j0:
        return np.full(shape, np.nan, np.float32) if out is None else out
    rows = np.arange(j0, j1)
    # pass 1: source row j at the column where destination column x crosses it
    slope1 = a - b * d / e
    offsets1 = (b / e) * rows + (c_idx - b * f_idx / e)
    between = _line_pass(source[j0:j1].astype(np.float32, copy=False), slope1, offsets1, width, method)
    # pass 2: destination column x along rows j0.. at q = e * y + d * x + f
    offsets2 = d * x + f_idx - j0
    return _line_pass(between.T, e, offsets2, height, method, None if out is None else out.T).T


def _box_supports(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` maps destination pixels onto boxes of m x m whole source pixels (m >= 2
    an integer along both axes, no rotation), at any offset: what :func:`box_average` resamples."""
    a, b, d, e = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    m = round(a)
    return m >= 2 and round(e) == m and max(abs(a - m), abs(e - m)) <= INTEGER_SCALE_TOLERANCE and b == 0 and d == 0


def _box_pass(src: np.ndarray, m: int, start: float, length: int) -> np.ndarray:
    """Average each row of 2-D ``src`` over boxes of ``m`` px, box x spanning pixel-corner
    coordinates [``start`` + m x, ``start`` + m (x + 1)) (pixel k spans [k, k + 1)), each pixel
    weighted by the length it covers, as GDAL's ``average`` weights them; NaN where a box leaves
    ``src`` (or meets NaN). Keeps ``src``'s memory order, as :func:`_line_pass` does."""
    lines, size = src.shape
    first = math.floor(start)
    fraction = start - first
    taps = m + 1 if fraction > 0 else m  # a box on the lattice covers m whole pixels
    out = np.full((lines, length), np.nan, np.float32, order="F" if src.flags.f_contiguous else "C")
    lo = max(0, -(first // m))  # the first box starting at pixel 0 or later
    hi = min(length, (size - taps - first) // m + 1)  # the last box ending inside
    if hi <= lo:
        return out
    count = hi - lo
    base = first + m * lo

    def tap(t: int) -> np.ndarray:
        return src[:, base + t:base + t + m * (count - 1) + 1:m]

    acc = (1 - fraction) * tap(0)
    for t in range(1, m):
        acc += tap(t)
    if fraction > 0:
        acc += fraction * tap(m)
    out[:, lo:hi] = acc / m
    return out


def box_average(source: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``source`` (2-D, NaN = no data) averaged onto a destination of ``shape`` (rows, columns) whose
    pixels are boxes of m x m source pixels (``matrix``: destination pixel corners -> source pixel
    corners, see :func:`_box_supports`): rows, then columns. Returns float32, NaN where a box meets
    no data or leaves ``source``."""
    height, width = shape
    m = round(matrix[0, 0])
    top = math.floor(matrix[1, 2])
    j0, j1 = max(0, top), min(source.shape[0], top + m * height + 1)
    if j1 <= j0:
        return np.full(shape, np.nan, np.float32)
    between = _box_pass(source[j0:j1].astype(np.float32, copy=False), m, matrix[0, 2], width)
    return _box_pass(between.T, m, matrix[1, 2] - j0, height).T
