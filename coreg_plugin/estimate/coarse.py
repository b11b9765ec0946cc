"""The coarse stage: one match of the whole overlap at reduced resolution.

It finds large offsets (up to about a quarter of the overlap) before the tie-point windows are
placed, checks that both images have valid, textured data in the overlap, and provides the
overview proxies written for diagnosis.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import fft
from skimage.transform import AffineTransform, warp

from ..common.affines import compose
from ..common.errors import InputError, RegistrationError
from ..common.progress import Progress
from ..io import shared_reads
from ..io.kept_windows import KeptWindows, average_blocks
from ..io.raster_source import Grid, RasterSource
from ..io.warp import read_warped
from .correlation import match
from .proxies import Prepared, prepare

#: Longest side of the coarse overlap image, in pixels.
MAX_SIDE = 1024
#: Below this reliability the coarse offset is not trusted and the tie points start from zero.
MIN_RELIABILITY = 0.1
#: Relative spread below which an image is constant (no texture).
CONSTANT_EPS = 1e-9
#: Source pixels averaged per strip of the coarse grid: after each strip, progress is reported and
#: a cancel is answered (a few hundredths of a second of work per strip).
STRIP_SOURCE_PIXELS = 1 << 20


@dataclass
class CoarseMatch:
    """Offset (px, moving grid) of the moving content against the fixed, and its reliability."""

    dx: float
    dy: float
    reliability: float
    grid: Grid
    moving: np.ndarray
    fixed: np.ndarray
    moving_proxy: Prepared
    fixed_proxy: Prepared
    factor: int
    use_edge_proxy: bool


def coarse_grid(moving: Grid, box: tuple[int, int, int, int], max_side: int = MAX_SIDE) -> tuple[Grid, int]:
    """The reduced grid over ``box`` (moving pixels) from its top-left corner, and its reduction factor.

    Whole coarse pixels only (a partial last one would reach past the raster and rule out the
    decimated read), and as many along each axis as FFTs handle fast (:func:`fast_length`): the
    coarse match and Fourier-Mellin transform the whole image several times, five times slower at
    914 px (2 x 457) than at 900.
    """
    c0, r0, c1, r1 = box
    factor = max(1, math.ceil(max(c1 - c0, r1 - r0) / max_side))
    transform = compose(moving.transform, Affine.translation(c0, r0), Affine.scale(factor))
    width, height = fast_length((c1 - c0) // factor), fast_length((r1 - r0) // factor)
    return Grid(moving.crs, transform, width, height), factor


def fast_length(length: int) -> int:
    """The largest length at most ``length`` (at least 1) with no prime factor above 11, which FFTs
    handle fast (``scipy.fft.next_fast_len``): at most 2.5 % shorter from 500 px up (923 -> 900), at
    most 6 % from 100 px up; the part left out is a strip along the overlap's far edges."""
    length = max(1, length)
    while fft.next_fast_len(length) != length:
        length -= 1
    return length


def check_content(values: np.ndarray, source: RasterSource, other: RasterSource) -> None:
    """Raise a clear error when ``values`` (the overlap, NaN = invalid) has no valid or no varying data."""
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        raise InputError(
            f"{source.role} '{source.path}' has no valid pixels where it overlaps {other.role} "
            f"'{other.path}' (all nodata there)"
        )
    low, high = float(valid.min()), float(valid.max())
    if high - low <= CONSTANT_EPS * max(1.0, abs(high)):
        raise RegistrationError(
            f"{source.role} '{source.path}' is constant ({low:g}) where it overlaps {other.role} "
            f"'{other.path}': there is no texture to register"
        )


def strip_rows(grid: Grid, factor: int) -> int:
    """Rows of the coarse ``grid`` per strip, so that a strip averages about ``STRIP_SOURCE_PIXELS``."""
    return max(1, STRIP_SOURCE_PIXELS // max(1, grid.width * factor * factor))


def decimation_window(source: RasterSource, band: int, grid: Grid, factor: int) -> Window | None:
    """The source window that ``grid`` decimates by ``factor`` exactly, or None if there is none.

    There is one when ``grid`` lies on the source's own pixels (same CRS, pixel edges on pixel
    edges, ``factor`` source pixels per grid pixel), inside the raster, every pixel is valid
    (no mask, nodata or override) and the data are integers of 16 bits or more (GDAL rounds the
    averages to the data type: half a unit is nothing there, but could flatten 8-bit texture). Then
    a decimated read (GDAL's averaging, which also uses overviews) gives the coarse image without a
    warp, several times faster.
    """
    ds = source.dataset
    dtype = np.dtype(source.dtype)
    if grid.crs != source.grid.crs or dtype.kind not in "iu" or dtype.itemsize < 2 or not source.fully_valid(band):
        return None
    offset = compose(~ds.transform, grid.transform)
    col, row = round(offset.c), round(offset.f)
    if not (np.allclose([offset.a, offset.b, offset.d, offset.e], [factor, 0, 0, factor], atol=1e-9)
            and np.allclose([offset.c, offset.f], [col, row], atol=1e-6)):
        return None
    window = Window(col, row, grid.width * factor, grid.height * factor)
    inside = col >= 0 and row >= 0 and col + window.width <= ds.width and row + window.height <= ds.height
    return window if inside else None


@dataclass(frozen=True)
class _CoarseRead:
    """What the coarse read of one (source, band) needs: its decimated window (None: warp each
    strip), the regions it keeps for the tie points (None: none) and its coarse image, filled strip
    by strip."""

    source: RasterSource
    band: int
    window: Window | None
    keep: KeptWindows | None
    out: np.ndarray


def read_both(
    sources: tuple[tuple[RasterSource, int], ...], grid: Grid, factor: int, progress: Progress,
    keep: tuple[KeptWindows | None, ...] = (None, None),
) -> list[np.ndarray]:
    """Each (source, band) (both, or one) averaged onto ``grid``; progress and cancel between strips.
    ``keep``: for each source, the regions its read keeps for the tie points (or None).

    A thread per raster reads its strips from the top, through a handle of its own; one done with
    its raster reads the other's from the bottom (one raster may take longer to decode than the
    other: a thread left with nothing would leave a core idle). Each thread reads one end of a
    raster in order, so a tile row two strips share is decoded once, from GDAL's block cache (whose
    blocks are a handle's own), but where the two threads meet."""
    reads = [_plan(source, band, grid, factor, kept) for (source, band), kept in zip(sources, keep)]
    rows = strip_rows(grid, factor)
    strips = _Strips(reads, range(0, grid.height, rows))
    done: queue.Queue = queue.Queue()
    stop = threading.Event()
    with ThreadPoolExecutor(len(reads), thread_name_prefix="coreg-coarse") as pool:
        futures = [pool.submit(_read_strips, strips, own, grid, factor, rows, done, stop) for own in range(len(reads))]
        try:
            for finished in range(1, strips.total + 1):
                if done.get() is not None:
                    break  # a read failed: its future raises below
                progress.update(finished / strips.total)
        finally:
            stop.set()
        for future in futures:
            future.result()
    for read in reads:
        if read.keep is not None:
            read.keep.finish()
    return [read.out for read in reads]


class _Strips:
    """The strips (first rows) each coarse read has left, shared by the threads reading them."""

    def __init__(self, reads: list[_CoarseRead], rows: range) -> None:
        self.reads = reads
        self._left = [deque(rows) for _ in reads]
        self.total = len(reads) * len(rows)
        self._lock = threading.Lock()

    def next(self, own: int) -> tuple[int, int] | None:
        """The next strip (read's index, first row) for the thread of read ``own``: its own next from
        the top, else another read's last one left; None when none is left."""
        with self._lock:
            if self._left[own]:
                return own, self._left[own].popleft()
            for other, left in enumerate(self._left):
                if left:
                    return other, left.pop()
        return None


def _plan(source: RasterSource, band: int, grid: Grid, factor: int, keep: KeptWindows | None) -> _CoarseRead:
    """The coarse read of ``band`` of ``source``: a decimated read where :func:`decimation_window`
    allows, else a warp per strip; regions kept for the tie points (``keep``) when the decimated
    read applies to a data type it takes (:mod:`coreg_plugin.io.kept_windows`)."""
    window = decimation_window(source, band, grid, factor)
    keeping = keep is not None and window is not None and source.dataset.dtypes[band - 1] == keep.dtype
    return _CoarseRead(source, band, window, keep if keeping else None,
                       np.empty((grid.height, grid.width), source.float_dtype))


def _read_strips(
    strips: _Strips, own: int, grid: Grid, factor: int, rows: int, done: queue.Queue, stop: threading.Event,
) -> None:
    """Read strips of ``rows`` rows (:meth:`_Strips.next` for read ``own``) until none is left or
    ``stop`` is set, through handles of this thread's own; puts a token in ``done`` per finished
    strip (an exception if one fails)."""
    try:
        with rasterio.Env(), ExitStack() as handles:  # this thread's own (see stack.register_task)
            opened: dict[int, RasterSource] = {}
            while not stop.is_set():
                strip = strips.next(own)
                if strip is None:
                    return
                index, row = strip
                read = strips.reads[index]
                if index not in opened:
                    opened[index] = handles.enter_context(read.source.reopen())
                _read_strip(read, opened[index], grid, factor, row, min(rows, grid.height - row))
                done.put(None)
    except BaseException as exc:
        done.put(exc)
        raise


def _read_strip(read: _CoarseRead, own: RasterSource, grid: Grid, factor: int, row: int, height: int) -> None:
    """Rows ``row`` to ``row + height`` of ``read``'s coarse image, read through the handle ``own``."""
    if read.window is None:
        read.out[row:row + height] = read_warped(own, [read.band], grid.subgrid(0, row, grid.width, height),
                                                 Resampling.average, decimate=2)[0]
        return
    strip = Window(read.window.col_off, read.window.row_off + row * factor, read.window.width, height * factor)
    if read.keep is not None:
        pixels = own.read_band(read.band, strip)
        read.keep.take(pixels, int(strip.col_off), int(strip.row_off))
        read.out[row:row + height] = average_blocks(pixels, factor)
    else:
        read.out[row:row + height] = own.read_average(read.band, strip, (height, grid.width), read.out.dtype)


def coarse_match(
    moving: RasterSource,
    fixed: RasterSource,
    moving_band: int,
    fixed_band: int,
    box: tuple[int, int, int, int],
    use_edge_proxy: bool,
    progress: Progress | None = None,
    keep: tuple[KeptWindows | None, KeptWindows | None] = (None, None),
) -> CoarseMatch:
    """Match the whole overlap ``box`` (moving pixels) at reduced resolution. ``keep``: the (moving,
    fixed) regions that the reads keep for the tie points, if any (the fixed one's only when the
    fixed raster is read here, not served from a stack's shared copy)."""
    grid, factor = coarse_grid(moving.grid, box)
    progress = Progress() if progress is None else progress
    # a stack's inputs on one grid see the same coarse reference: read once, kept for the others
    key = ("coarse", fixed_band, tuple(grid.transform)[:6], grid.width, grid.height, factor)
    fix = shared_reads.kept(fixed.path, key)
    if fix is None:
        mov, fix = read_both(((moving, moving_band), (fixed, fixed_band)), grid, factor, progress, keep)
        shared_reads.keep(fixed.path, key, fix, fix.nbytes)
    else:
        mov = read_both(((moving, moving_band),), grid, factor, progress, keep[:1])[0]
    check_content(mov, moving, fixed)
    check_content(fix, fixed, moving)
    if not (np.isfinite(mov) & np.isfinite(fix)).any():
        raise InputError(
            f"{moving.role} '{moving.path}' and {fixed.role} '{fixed.path}' overlap, but have no "
            "valid pixels in common"
        )
    mov_proxy = prepare(mov, use_edge_proxy=use_edge_proxy)
    fix_proxy = prepare(fix, use_edge_proxy=use_edge_proxy)
    dx, dy, reliability = match(fix_proxy, mov_proxy)
    return CoarseMatch(dx * factor, dy * factor, reliability, grid, mov, fix, mov_proxy, fix_proxy, factor,
                       use_edge_proxy)


def match_placed_by(coarse: CoarseMatch, h_coarse: np.ndarray) -> tuple[float, float, float]:
    """Match the coarse moving image with the coarse fixed image placed by ``h_coarse`` (coarse px).

    Returns the residual (dx, dy) in coarse pixels and the reliability. The fixed image is resampled
    in memory (no new read): ``placed(u) = fixed(h_coarse(u))``.
    """
    centre_shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    inverse_map = AffineTransform(matrix=np.linalg.inv(centre_shift) @ h_coarse @ centre_shift)
    placed = warp(coarse.fixed, inverse_map, order=1, cval=np.nan, preserve_range=True)
    return match(prepare(placed, use_edge_proxy=coarse.use_edge_proxy), coarse.moving_proxy)
