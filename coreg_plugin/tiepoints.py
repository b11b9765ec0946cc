"""Tie points: a grid of windows over the overlap, each matched with sub-pixel accuracy.

A window is read from the moving image as it is (no resampling), and the fixed image is resampled
(lanczos: bilinear and cubic shift fine detail by up to 0.04 px at fractional offsets) onto the
grid where the current correction says that window's content belongs. The measured
displacement is therefore a *residual* of the current model, which shrinks to nearly 0 as the model
converges; this removes phase correlation's pull towards whole pixels.

GDAL resamples the fixed image once per window, onto the window grown by :data:`MARGIN` pixels,
whatever the CRSs and pixel sizes. Later passes place that in-memory patch by the small change of
the model since (a prefiltered cubic spline, :func:`replace_patch`), without reading or warping
again; only a change beyond the margin sends the window back to GDAL.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import ndimage

from .correlation import UPSAMPLE, Prepared, match, prepare
from .geometry import corrected_transform
from .raster_source import Grid, RasterSource
from .tasks import run_in_order
from .warp import read_warped

#: Windows where either image has less valid data than this are skipped.
MIN_VALID_FRACTION = 0.6
#: Worker threads measuring windows (one per core, at most 4).
WORKERS = min(4, os.cpu_count() or 1)
#: Matches less reliable than this (normalized proxy correlation) are discarded.
MIN_RELIABILITY = 0.15
#: Fixed windows are resampled with this many extra pixels on each side (moving pixels), so that
#: later passes can move them in memory by up to ``MARGIN - SPLINE_REACH`` px.
MARGIN = 8
#: Pixels of the margin the cubic spline needs beyond the moved window.
SPLINE_REACH = 2

STATUS_MEASURED = "measured"
STATUS_NODATA = "nodata"
STATUS_NO_TEXTURE = "no texture"
STATUS_UNRELIABLE = "unreliable"


@dataclass
class Measurement:
    """One window's match: residual shift (px, moving grid), reliability and status."""

    dx: float = math.nan
    dy: float = math.nan
    reliability: float = math.nan
    status: str = STATUS_NODATA


def window_origins(box: tuple[int, int, int, int], size: int, max_per_axis: int) -> np.ndarray:
    """Top-left pixels (col, row) of a regular grid of ``size`` windows inside ``box``.

    Windows are at most half a window apart and at most ``max_per_axis`` along each axis.
    """
    c0, r0, c1, r1 = box

    def axis(lo: int, hi: int) -> np.ndarray:
        span = hi - lo - size
        count = min(max_per_axis, span // (size // 2) + 1)
        return np.round(np.linspace(lo, lo + span, count)).astype(int) if count > 1 else np.array([lo + span // 2])

    cols, rows = np.meshgrid(axis(c0, c1), axis(r0, r1))
    return np.column_stack([cols.ravel(), rows.ravel()])


class TiePointMatcher:
    """Measures the windows of one image pair against successive corrections.

    :meth:`measure_all` spreads the windows over worker threads (GDAL reads and warps, FFTs and
    matrix products release the GIL); each thread reads through its own dataset handles, since a
    rasterio dataset must not be shared between threads. Call :meth:`close` when done.
    """

    def __init__(
        self,
        moving: RasterSource,
        fixed: RasterSource,
        moving_band: int,
        fixed_band: int,
        origins: np.ndarray,
        size: int,
        use_edge_proxy: bool,
    ) -> None:
        self.moving, self.fixed = moving, fixed
        self.moving_band, self.fixed_band = moving_band, fixed_band
        self.origins, self.size = origins, size
        self.use_edge_proxy = use_edge_proxy
        self._moving_patches: dict[int, Prepared] = {}
        self._fixed_windows: dict[int, PlacedWindow] = {}
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._opened: list[RasterSource] = []
        self._lock = threading.Lock()

    def _sources(self) -> tuple[RasterSource, RasterSource]:
        """This thread's (moving, fixed) sources: the originals on the creating thread, copies elsewhere."""
        if threading.get_ident() == self._owner:
            return self.moving, self.fixed
        if not hasattr(self._local, "sources"):
            sources = (self.moving.reopen(), self.fixed.reopen())
            with self._lock:
                self._opened.extend(sources)
            self._local.sources = sources
        return self._local.sources

    def close(self) -> None:
        """Close the dataset handles opened for worker threads."""
        for source in self._opened:
            source.close()
        self._opened.clear()

    def measure_all(
        self, h: np.ndarray, upsample: int, on_done: Callable[[int], None], workers: int | None = None
    ) -> list[Measurement]:
        """Measure every window against ``h``; ``on_done(count)`` is called here, in window order.

        ``workers`` threads (default :data:`WORKERS`) share the windows.
        """
        workers = WORKERS if workers is None else workers
        calls = [(i, h, upsample) for i in range(len(self.origins))]
        results: list[Measurement] = []

        def collect(measurement: Measurement) -> None:
            results.append(measurement)
            on_done(len(results))

        if workers <= 1:
            run_in_order(None, self.measure, calls, collect, max_in_flight=1)
            return results
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coreg-tiepoints") as pool:
            run_in_order(pool, self._measure_in_env, calls, collect, max_in_flight=2 * workers)
        return results

    @property
    def centres(self) -> np.ndarray:
        """Window centres (x, y) in moving pixel coordinates."""
        return self.origins + self.size / 2

    def _moving_patch(self, index: int) -> Prepared:
        if index not in self._moving_patches:
            col, row = self.origins[index]
            moving = self._sources()[0]
            data = moving.read_valid([self.moving_band], Window(col, row, self.size, self.size))[0]
            self._moving_patches[index] = prepare(data, use_edge_proxy=self.use_edge_proxy)
        return self._moving_patches[index]

    def _fixed_patch(self, index: int, h: np.ndarray) -> Prepared:
        """The fixed image placed by ``h`` on window ``index``: moved in memory if an earlier pass
        resampled it close enough, else resampled by GDAL (with a margin, kept for later passes)."""
        col, row = self.origins[index]
        placed = self._fixed_windows.get(index)
        data = None if placed is None else replace_patch(placed, h, (col, row), self.size)
        if data is None:
            moving_grid = self.moving.grid
            grid = Grid(moving_grid.crs, corrected_transform(moving_grid, h), moving_grid.width, moving_grid.height)
            window_grid = grid.subgrid(col - MARGIN, row - MARGIN, self.size + 2 * MARGIN, self.size + 2 * MARGIN)
            grown = read_warped(self._sources()[1], [self.fixed_band], window_grid, Resampling.lanczos)[0]
            self._fixed_windows[index] = PlacedWindow(grown.astype(np.float32), h.copy())
            data = grown[MARGIN:-MARGIN, MARGIN:-MARGIN]
        return prepare(data, use_edge_proxy=self.use_edge_proxy)

    def _measure_in_env(self, index: int, h: np.ndarray, upsample: int) -> Measurement:
        """:meth:`measure` inside a GDAL environment of this worker thread's own (rasterio's are per thread)."""
        with rasterio.Env():
            return self.measure(index, h, upsample)

    def measure(self, index: int, h: np.ndarray, upsample: int = UPSAMPLE) -> Measurement:
        """Match window ``index`` with the fixed image placed by correction ``h``, to 1/``upsample`` px."""
        moving = self._moving_patch(index)
        if moving.valid_fraction < MIN_VALID_FRACTION:
            return Measurement(status=STATUS_NODATA)
        fixed = self._fixed_patch(index, h)
        if fixed.valid_fraction < MIN_VALID_FRACTION:
            return Measurement(status=STATUS_NODATA)
        if not (moving.textured and fixed.textured):
            return Measurement(status=STATUS_NO_TEXTURE)
        dx, dy, reliability = match(fixed, moving, upsample=upsample)
        reliable = reliability >= MIN_RELIABILITY and max(abs(dx), abs(dy)) < self.size / 4
        return Measurement(dx, dy, reliability, STATUS_MEASURED if reliable else STATUS_UNRELIABLE)


@dataclass
class PlacedWindow:
    """A fixed window resampled by GDAL: ``data`` (NaN = invalid) is the fixed image placed by the
    correction ``h`` on a tie-point window grown by :data:`MARGIN` px on every side."""

    data: np.ndarray
    h: np.ndarray


def replace_patch(placed: PlacedWindow, h: np.ndarray, origin: tuple[int, int], size: int) -> np.ndarray | None:
    """The fixed image placed by ``h`` on the ``size`` px window at ``origin`` (col, row; moving px),
    resampled in memory from ``placed``; None when ``h`` moves it beyond the margin.

    Pixel (r, c) of the window shows the fixed content at ``h(col + c + 0.5, row + r + 0.5)``, which
    ``placed`` holds at its own position ``placed.h^-1 h (...)``: that small affine change is applied
    with a prefiltered cubic spline. Pixels next to a NaN (bilinear footprint) become NaN.
    """
    col, row = origin
    to_window = np.array([[1.0, 0, col + 0.5], [0, 1, row + 0.5], [0, 0, 1]])
    from_grown = np.array([[1.0, 0, -(col - MARGIN + 0.5)], [0, 1, -(row - MARGIN + 0.5)], [0, 0, 1]])
    b = from_grown @ np.linalg.solve(placed.h, h) @ to_window
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], float).T
    moved = (b @ corners)[:2] - corners[:2] - MARGIN
    if np.max(np.abs(moved)) > MARGIN - SPLINE_REACH:
        return None
    matrix, offset = np.array([[b[1, 1], b[1, 0]], [b[0, 1], b[0, 0]]]), (b[1, 2], b[0, 2])
    valid = np.isfinite(placed.data)
    if valid.all():
        return ndimage.affine_transform(placed.data, matrix, offset, (size, size), order=3, mode="nearest")
    filled = np.where(valid, placed.data, np.mean(placed.data[valid]) if valid.any() else 0.0)
    values = ndimage.affine_transform(filled, matrix, offset, (size, size), order=3, mode="nearest")
    touched = ndimage.affine_transform((~valid).astype(np.float32), matrix, offset, (size, size), order=1,
                                       mode="nearest")
    values[touched > 0] = np.nan
    return values
