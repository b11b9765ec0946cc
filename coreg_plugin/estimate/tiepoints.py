"""Tie points: a grid of windows over the overlap, each matched with sub-pixel accuracy.

A window is read from the moving image as it is (no resampling), and the fixed image is placed on
the grid where the current correction says that window's content belongs: a window of the fixed
raster's own lattice moved there by Fourier shifts where that grid is the lattice moved by a
translation and a slight rotation (:mod:`.lattice`), else resampled (lanczos: bilinear and cubic
shift fine detail by up to 0.04 px at fractional offsets; the first, positioning pass, matched
roughly (:func:`.correlation.match`), resamples with cubic, three times faster in GDAL). The measured
displacement is therefore a *residual* of the current model, which shrinks to nearly 0 as the model
converges; this removes phase correlation's pull towards whole pixels.

Across resolutions the windows are matched where the information is, on the coarser grid: when the
moving image is the finer one, each window is its content area-averaged (GDAL's ``average``: every
coarse pixel the mean of the moving pixels its footprint covers, as a coarser sensor would see it)
onto a *match grid* whose pixels are ``scale`` moving pixels a side, and window sizes and the
matching's resolution are in that grid's pixels. Corrections come in, and measurements go out, in
moving pixels.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..common import machine
from ..common.affines import apply, compose
from ..common.tasks import run_in_order
from ..correction.geometry import corrected_transform, in_crs, translation
from ..io import kept_windows, shared_reads
from ..io.kept_windows import KEPT_DTYPES, KeptWindows
from ..io.raster_source import Grid, RasterSource
from ..io.warp import read_warped
from . import lattice
from .correlation import MAX_SMALL_SHIFT_PX, UPSAMPLE, match, match_many, refine_many
from .correlation import reliability as correlation_reliability
from .proxies import Prepared, prepare_many

#: Windows where either image has less valid data than this are skipped.
MIN_VALID_FRACTION = 0.6
#: Worker threads measuring windows (one per core, at most 4).
WORKERS = machine.threads(4)
#: Windows prepared and matched together, as one array operation: long steps that run without
#: Python's lock, so threads measuring windows share the cores (one window at a time they do not:
#: a window's many short steps queue for the lock).
BATCH = 4
#: The positioning pass keeps at most this many prepared moving windows for the next pass (32 MiB of
#: 256 px windows; the pass has 25 on grids of 8 or more a side).
MAX_KEPT_MOVING = 128
#: Windows move into the middle of the moving raster's blocks when those are at most this many
#: windows a side (larger blocks are decoded whole for every window anyway).
BLOCK_SNAP_MAX = 4
#: ... unless that leaves fewer than this share of the windows (blocks wider than the windows' spacing).
BLOCK_SNAP_MIN_SHARE = 0.9
#: A window's second measurement must stay within this (px) of its first to refine it: the range
#: of the least-squares step that makes it.
MAX_REFINEMENT_PX = MAX_SMALL_SHIFT_PX
#: Matches less reliable than this (normalized proxy correlation) are discarded.
MIN_RELIABILITY = 0.15
#: Across CRSs a window is resampled on an affine grid in the fixed raster's CRS where the map
#: between the CRSs departs from affine by at most this (px) over the window (least squares: the
#: departure has no mean, so it blurs the window's edges a little without moving its content);
#: elsewhere by GDAL's coordinate transformation.
MAX_CRS_CURVATURE_PX = 0.05
#: ... cut into parts no smaller than this (px) a side where it bends more over a whole window.
MIN_CRS_PART_PX = 32
#: Pixels kept around each planned window (:func:`windows_to_keep`): the windows read later move
#: from where they were planned by the coarse stage's correction (the fixed ones by the offset it
#: finds, the moving ones at the overlap's edges by its change of the overlap).
KEEP_MARGIN_PX = 8
#: The kept windows of one raster take at most this memory (bytes; a sixteenth of the available
#: memory if that is less); windows beyond it are read when measured. 56 MiB: about 395 of the 484
#: windows of 256 px of 16-bit data on a 10980 px tile, which keeps Align of such a pair within
#: 400 MB (with the small block cache of :data:`KEPT_RUN_CACHE_BYTES`).
KEEP_MAX_BYTES = machine.budget(56 << 20, 1 / 16)
#: GDAL's block cache (bytes) while a registration whose coarse stage kept windows measures its tie
#: points: they read only the windows not kept, and the coarse stage's blocks left in the cache are
#: of the image's far end, of no use to them; given back, they leave room for the kept windows.
#: GDAL has one cache per process: Align runs side by side in threads of one process slow each
#: other's coarse reads while one measures its tie points (the values are the same).
KEPT_RUN_CACHE_BYTES = 8 << 20

STATUS_MEASURED = "measured"
STATUS_NODATA = "nodata"
STATUS_NO_TEXTURE = "no texture"
STATUS_UNRELIABLE = "unreliable"


@dataclass
class Measurement:
    """One window's match: residual shift (px, moving grid), reliability and status.

    A precise measurement is made twice: once against the correction given, then again with the
    fixed window placed where the first one found the content; ``first_dx``, ``first_dy`` keep the
    first (what :mod:`coreg_plugin.registration` needs to tell whether a further pass would move
    the model).
    """

    dx: float = math.nan
    dy: float = math.nan
    reliability: float = math.nan
    status: str = STATUS_NODATA
    first_dx: float = math.nan
    first_dy: float = math.nan


def window_origins(
    box: tuple[int, int, int, int], size: int, max_per_axis: int, block: tuple[int, int] | None = None
) -> np.ndarray:
    """Top-left pixels (col, row) of a regular grid of ``size`` windows inside ``box``.

    Windows are at most half a window apart and at most ``max_per_axis`` along each axis. With the
    moving raster's ``block`` (rows, cols) of at least ``size`` and at most ``BLOCK_SNAP_MAX`` windows
    a side, each window moves to the middle of the block its centre is in (where that stays inside
    ``box``): a window inside one compressed block is decoded from one block, not two to four. Not
    when blocks are wider than the windows' spacing (fewer than ``BLOCK_SNAP_MIN_SHARE`` would be left).
    """
    c0, r0, c1, r1 = box

    def axis(lo: int, hi: int, step: int | None) -> np.ndarray:
        span = hi - lo - size
        count = min(max_per_axis, span // (size // 2) + 1)
        spread = np.round(np.linspace(lo, lo + span, count)).astype(int) if count > 1 else np.array([lo + span // 2])
        if step is None or not size <= step <= BLOCK_SNAP_MAX * size:
            return spread
        middle = (spread + size // 2) // step * step + (step - size) // 2
        inside = (middle >= lo) & (middle + size <= hi)
        snapped = np.unique(np.where(inside, middle, spread))
        return snapped if len(snapped) >= BLOCK_SNAP_MIN_SHARE * len(spread) else spread

    cols, rows = np.meshgrid(axis(c0, c1, block and block[1]), axis(r0, r1, block and block[0]))
    return np.column_stack([cols.ravel(), rows.ravel()])


def windows_to_keep(
    moving: RasterSource, fixed: RasterSource, moving_band: int, fixed_band: int, origins: np.ndarray, size: int,
    scale: float,
) -> tuple[KeptWindows | None, KeptWindows | None]:
    """The regions of the moving and the fixed raster that the coarse stage's reads keep for the
    tie points (:mod:`coreg_plugin.io.kept_windows`): the windows at ``origins`` (``size`` px,
    planned on the georeference before the coarse correction is known), each grown by
    :data:`KEEP_MARGIN_PX`, as many as :data:`KEEP_MAX_BYTES` holds. None for a raster whose windows
    are not read as stored (``scale`` above 1 averages the moving ones; the fixed ones are resampled
    off its lattice or averaged from a finer one), nor for a band with a mask or of a type
    :data:`~coreg_plugin.io.kept_windows.KEPT_DTYPES` leaves out; none at all in a stack (its
    reference shared: :mod:`coreg_plugin.io.shared_reads`), whose registrations run two at a time
    and share the reference's windows already (keeping each input's too raised the peak of a
    registered stack of 8 inputs from about 650 MB to 730-840 MB for a second of 11)."""
    if not len(origins) or shared_reads.shared(fixed.path):
        return None, None
    corners = np.column_stack([origins - KEEP_MARGIN_PX, origins + size + KEEP_MARGIN_PX]).astype(float)
    moving_keep = _keeper(moving, moving_band, corners) if scale == 1 else None
    centre = moving.grid.subgrid(int(origins[len(origins) // 2][0]), int(origins[len(origins) // 2][1]), size, size)
    where = lattice.place(fixed, fixed_band, centre) if moving.grid.crs == fixed.grid.crs else None
    if scale != 1 or where is None or where.factor != 1:
        return moving_keep, None
    pixel_map = compose(~fixed.dataset.transform, moving.grid.transform)
    xs = corners[:, [0, 2, 2, 0]]
    ys = corners[:, [1, 1, 3, 3]]
    fx, fy = apply(pixel_map, xs, ys)
    boxes = np.column_stack([np.floor(fx.min(axis=1)), np.floor(fy.min(axis=1)),
                             np.ceil(fx.max(axis=1)), np.ceil(fy.max(axis=1))])
    return moving_keep, _keeper(fixed, fixed_band, boxes)


def _keeper(source: RasterSource, band: int, boxes: np.ndarray) -> KeptWindows | None:
    """A :class:`KeptWindows` of ``boxes`` (col0, row0, col1, row1; px of ``source``) clipped to the
    raster, or None where ``band`` is not kept (a mask, or a type not in ``KEPT_DTYPES``)."""
    dtype = source.dataset.dtypes[band - 1]
    if dtype not in KEPT_DTYPES or not source.fully_valid(band):
        return None
    width, height = source.grid.width, source.grid.height
    c0, r0 = np.clip(boxes[:, 0], 0, width), np.clip(boxes[:, 1], 0, height)
    c1, r1 = np.clip(boxes[:, 2], 0, width), np.clip(boxes[:, 3], 0, height)
    inside = (c1 > c0) & (r1 > r0)
    regions = np.column_stack([c0, r0, c1 - c0, r1 - r0])[inside].astype(np.int64)
    fitting = np.cumsum(regions[:, 2] * regions[:, 3]) * np.dtype(dtype).itemsize <= KEEP_MAX_BYTES
    return KeptWindows(regions[fitting], dtype) if fitting.any() else None


def match_grid(moving: Grid, scale: float) -> Grid:
    """The grid tie points are matched on: the moving grid with pixels ``scale`` (>= 1) moving pixels
    a side, from the same corner (the moving grid itself when ``scale`` is 1)."""
    if scale == 1:
        return moving
    return Grid(moving.crs, compose(moving.transform, Affine.scale(scale)), int(moving.width // scale),
                int(moving.height // scale))


def _by_correction(hs: list[np.ndarray]) -> list[tuple[np.ndarray, list[int]]]:
    """Each correction in ``hs`` (the same array object: a pass of the global model hands every
    window the same one) with its positions there."""
    groups: dict[int, tuple[np.ndarray, list[int]]] = {}
    for k, h in enumerate(hs):
        groups.setdefault(id(h), (h, []))[1].append(k)
    return list(groups.values())


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
        workers: int | None = None,
        scale: float = 1.0,
        kept: tuple[KeptWindows | None, KeptWindows | None] = (None, None),
    ) -> None:
        """``origins`` (col, row) and ``size`` are in pixels of the match grid (:func:`match_grid`),
        whose pixels are ``scale`` moving pixels a side (1: the moving grid; above 1 the moving
        windows are area-averaged onto it). ``workers``: threads measuring windows (default
        :data:`WORKERS`; 1 when the caller runs several registrations at once). ``kept``: the
        (moving, fixed) windows the coarse stage kept (:func:`windows_to_keep`), taken from memory
        where they hold a window read as stored."""
        self.moving, self.fixed = moving, fixed
        self.scale = float(scale)
        self.grid = match_grid(moving.grid, self.scale)
        self.workers = WORKERS if workers is None else workers
        self.moving_band, self.fixed_band = moving_band, fixed_band
        self.origins, self.size = origins, size
        self.use_edge_proxy = use_edge_proxy
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._opened: list[RasterSource] = []
        self._lock = threading.Lock()
        self._kept_moving: dict[int, Prepared] = {}
        self.kept = kept

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
        self._kept_moving.clear()

    def measure_all(
        self, h: np.ndarray | list[np.ndarray], upsample: int, on_done: Callable[[int], None],
        workers: int | None = None, indices: np.ndarray | None = None,
    ) -> list[Measurement]:
        """Measure every window (or those at ``indices``) against ``h`` (one correction, or one per
        window); ``on_done(count)`` is called here, in window order.

        ``workers`` threads (default: the matcher's) share the windows, :data:`BATCH` at a time.
        """
        workers = self.workers if workers is None else workers
        per_window = self._on_match_grid(h if isinstance(h, list) else [h] * len(self.origins))
        chosen = [int(i) for i in (range(len(self.origins)) if indices is None else indices)]
        batches = [chosen[k:k + BATCH] for k in range(0, len(chosen), BATCH)]
        calls = [(batch, [per_window[i] for i in batch], upsample) for batch in batches]
        results: list[Measurement] = []

        def collect(measurements: list[Measurement]) -> None:
            for measurement in measurements:
                results.append(measurement)
                on_done(len(results))

        if workers <= 1:
            run_in_order(None, self.measure_batch, calls, collect, max_in_flight=1)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coreg-tiepoints") as pool:
                run_in_order(pool, self._measure_in_env, calls, collect, max_in_flight=2 * workers)
        return [self._in_moving_pixels(m) for m in results]

    def _on_match_grid(self, hs: list[np.ndarray]) -> list[np.ndarray]:
        """Corrections ``hs`` (moving px) in match-grid pixels; the same array object for the same
        correction (see :func:`_by_correction`)."""
        if self.scale == 1:
            return hs
        s = np.diag([self.scale, self.scale, 1.0])
        s_inv = np.diag([1 / self.scale, 1 / self.scale, 1.0])
        converted: dict[int, np.ndarray] = {}
        return [converted.setdefault(id(h), s_inv @ h @ s) for h in hs]

    def _in_moving_pixels(self, m: Measurement) -> Measurement:
        """Measurement ``m`` (match-grid px) in moving pixels."""
        if self.scale == 1:
            return m
        k = self.scale
        return Measurement(m.dx * k, m.dy * k, m.reliability, m.status, m.first_dx * k, m.first_dy * k)

    @property
    def centres(self) -> np.ndarray:
        """Window centres (x, y) in moving pixel coordinates."""
        return (self.origins + self.size / 2) * self.scale

    def _movings(self, indices: list[int], keep: bool) -> list[Prepared]:
        """The moving windows ``indices`` prepared: those the positioning pass kept (taken), the
        others read and prepared together, and kept for the next pass when ``keep`` (the positioning
        pass: 25 windows, all measured again by the next pass; the other passes read them again:
        keeping hundreds would cost more memory than reading costs time), at most :data:`MAX_KEPT_MOVING`."""
        found = {i: self._kept_moving.pop(i, None) for i in indices}
        missing = [i for i, window in found.items() if window is None]
        if missing:
            data = np.stack([self._moving_data(i) for i in missing])
            for i, window in zip(missing, prepare_many(data, use_edge_proxy=self.use_edge_proxy)):
                found[i] = window
                if keep and len(self._kept_moving) < MAX_KEPT_MOVING:
                    self._kept_moving[i] = window
        return [found[i] for i in indices]  # type: ignore[misc]

    def _moving_data(self, index: int) -> np.ndarray:
        """The moving window as read (area-averaged onto the match grid when its pixels are coarser)."""
        col, row = self.origins[index]
        moving = self._sources()[0]
        if self.scale == 1:
            return kept_windows.read_valid(moving, self.moving_band, Window(col, row, self.size, self.size),
                                           self.kept[0])
        window = self.grid.subgrid(col, row, self.size, self.size)
        return read_warped(moving, [self.moving_band], window, Resampling.average, decimate=1)[0]

    def _corrected_grid(self, h: np.ndarray) -> Grid:
        """The match grid as corrected by ``h`` (match-grid px)."""
        grid = self.grid
        return Grid(grid.crs, corrected_transform(grid, h), grid.width, grid.height)

    def _window_grid(self, index: int, h: np.ndarray) -> Grid:
        """Window ``index`` of the moving grid as corrected by ``h``: where the fixed image is read for it."""
        col, row = self.origins[index]
        return self._corrected_grid(h).subgrid(col, row, self.size, self.size)

    def _fixed_prepared(self, indices: list[int], hs: list[np.ndarray], resampling: Resampling) -> list[Prepared]:
        """The fixed image's windows ``indices`` placed by their corrections ``hs``, prepared for matching.

        A window on the fixed raster's lattice (:mod:`.lattice`) valid throughout is read as it is and
        its proxy moved by the fraction of a pixel left; any other is resampled onto its grid
        (``resampling``) and prepared. Across CRSs each window's grid is first expressed in the fixed
        raster's CRS (:meth:`_in_fixed_crs`), so that GDAL resamples it through affine maps only.
        """
        fixed = self._sources()[1]
        places: list[lattice.Place | None] = [None] * len(indices)
        grids: dict[int, Grid] = {}
        if self.grid.crs == fixed.grid.crs:
            for h, ks in _by_correction(hs):
                found = lattice.places(fixed, self.fixed_band, self._corrected_grid(h),
                                       self.origins[[indices[k] for k in ks]], (self.size, self.size))
                for k, where in zip(ks, found):
                    places[k] = where
        else:
            for k, (index, h) in enumerate(zip(indices, hs)):
                grids[k] = self._in_fixed_crs(self._window_grid(index, h))
                places[k] = lattice.place(fixed, self.fixed_band, grids[k]) if grids[k].crs == fixed.grid.crs else None
        on = self._lattice_windows({k: where for k, where in enumerate(places) if where is not None})
        out: list[Prepared | None] = [None] * len(indices)
        if on:
            for k, window in zip(on, lattice.placed(list(on.values()), [places[k] for k in on])):
                out[k] = window
        rest = [k for k in range(len(indices)) if out[k] is None]
        if rest:
            data = [self._read_fixed(fixed, grids.get(k) or self._window_grid(indices[k], hs[k]), resampling)
                    for k in rest]
            for k, window in zip(rest, prepare_many(np.stack(data), use_edge_proxy=self.use_edge_proxy)):
                out[k] = window
        return out  # type: ignore[return-value]

    def _in_fixed_crs(self, window: Grid) -> Grid:
        """``window`` (in the moving CRS) as an affine grid in the fixed raster's CRS (see
        :func:`coreg_plugin.correction.geometry.in_crs`), or as it is when the map between the CRSs
        bends by more than ``MAX_CRS_CURVATURE_PX`` over it (then read in parts: :meth:`_read_fixed`)."""
        affine, deviation = in_crs(window, self.fixed.grid.crs)
        return affine if deviation <= MAX_CRS_CURVATURE_PX else window

    def _read_fixed(self, fixed: RasterSource, window: Grid, resampling: Resampling) -> np.ndarray:
        """The fixed raster resampled onto ``window``. A window in another CRS than the fixed raster's
        is cut into quarters until the map between the CRSs is affine within ``MAX_CRS_CURVATURE_PX``
        over each (or a quarter is ``MIN_CRS_PART_PX`` a side), and each quarter read on its affine grid
        in the fixed CRS: GDAL's own coordinate interpolation is never used (at 78 degrees north a
        256 px window in EPSG:3857 bends by 0.24 px from its best affine map)."""
        if window.crs == fixed.grid.crs:
            return read_warped(fixed, [self.fixed_band], window, resampling, decimate=1, repeat_edges=True)[0]
        affine, deviation = in_crs(window, fixed.grid.crs)
        if deviation <= MAX_CRS_CURVATURE_PX or min(window.width, window.height) < 2 * MIN_CRS_PART_PX:
            return read_warped(fixed, [self.fixed_band], affine, resampling, decimate=1, repeat_edges=True)[0]
        out = np.empty((window.height, window.width), dtype=fixed.float_dtype)
        half_w, half_h = window.width // 2, window.height // 2
        for col, width in ((0, half_w), (half_w, window.width - half_w)):
            for row, height in ((0, half_h), (half_h, window.height - half_h)):
                out[row:row + height, col:col + width] = self._read_fixed(
                    fixed, window.subgrid(col, row, width, height), resampling)
        return out

    def _lattice_windows(self, places: dict[int, lattice.Place]) -> dict[int, Prepared]:
        """The fixed raster's lattice windows at ``places`` that are valid throughout, prepared (in
        the order of ``places``): those another registration of a stack kept (:mod:`coreg_plugin.io.shared_reads`),
        the others read, prepared together and kept."""
        fixed = self._sources()[1]
        keys = {k: (self.fixed_band, p.factor, p.col, p.row, self.size, self.use_edge_proxy) for k, p in places.items()}
        found = {k: shared_reads.kept(fixed.path, key) for k, key in keys.items()}
        missing = [k for k, window in found.items() if window is None]
        raw = {k: lattice.read(fixed, self.fixed_band, places[k], (self.size, self.size), self.kept[1])
               for k in missing}
        whole = [k for k in missing if np.isfinite(raw[k]).all()]
        if whole:
            for k, window in zip(whole, prepare_many(np.stack([raw[k] for k in whole]),
                                                     use_edge_proxy=self.use_edge_proxy)):
                found[k] = window
                shared_reads.keep(fixed.path, keys[k], window, window.proxy.nbytes)
        return {k: window for k, window in found.items() if window is not None}

    def _measure_in_env(self, indices: list[int], hs: list[np.ndarray], upsample: int) -> list[Measurement]:
        """:meth:`measure_batch` inside a GDAL environment of this worker thread's own (rasterio's are per thread)."""
        with rasterio.Env():
            return self.measure_batch(indices, hs, upsample)

    def measure_batch(self, indices: list[int], hs: list[np.ndarray], upsample: int = UPSAMPLE) -> list[Measurement]:
        """Match windows ``indices``, each with the fixed image placed by its correction in ``hs``, to
        1/``upsample`` px: the windows are read one by one, then prepared and matched together
        (:func:`.correlation.match_many`)."""
        out = [Measurement(status=STATUS_NODATA) for _ in indices]
        precise = upsample >= UPSAMPLE
        movings = self._movings(indices, keep=not precise)
        read = [k for k, moving in enumerate(movings) if moving.valid_fraction >= MIN_VALID_FRACTION]
        if not read:
            return out
        resampling = Resampling.lanczos if precise else Resampling.cubic
        fixeds = dict(zip(read, self._fixed_prepared([indices[k] for k in read], [hs[k] for k in read], resampling)))
        pairs = [k for k in read if fixeds[k].valid_fraction >= MIN_VALID_FRACTION]
        for k in pairs:
            if not (movings[k].textured and fixeds[k].textured):
                out[k] = Measurement(status=STATUS_NO_TEXTURE)
        pairs = [k for k in pairs if out[k].status != STATUS_NO_TEXTURE]
        if not pairs:
            return out
        fixed, moving = [fixeds[k] for k in pairs], [movings[k] for k in pairs]
        firsts = match_many(fixed, moving, upsample=upsample, with_reliability=not precise)
        # precise: measured again, with the fixed window placed where this measurement found the content
        # (what the next pass would measure, without waiting for it), in memory where the window is
        # valid throughout; the reliability is the second one's
        again: list[tuple[float, float, float] | None] = [None] * len(pairs)
        if precise:
            near = [j for j, (dx, dy, _) in enumerate(firsts) if max(abs(dx), abs(dy)) <= MAX_REFINEMENT_PX]
            if near:
                refined = refine_many([fixed[j] for j in near], [moving[j] for j in near],
                                      np.array([firsts[j][:2] for j in near]))
                for j, result in zip(near, refined):
                    again[j] = result
        for j, k in enumerate(pairs):
            out[k] = self._judged(indices[k], hs[k], fixed[j], moving[j], firsts[j], again[j], upsample)
        return out

    def _judged(
        self, index: int, h: np.ndarray, fixed: Prepared, moving: Prepared, first: tuple[float, float, float],
        refined: tuple[float, float, float] | None, upsample: int,
    ) -> Measurement:
        """Window ``index``'s measurement from its first match and its in-memory second one (if any);
        a precise window not measured again in memory is warped again through GDAL and matched."""
        dx, dy, first_reliability = first
        precise = upsample >= UPSAMPLE
        if refined is not None:
            ddx, ddy, again_reliability = refined
            status = STATUS_MEASURED if again_reliability >= MIN_RELIABILITY else STATUS_UNRELIABLE
            return Measurement(dx + ddx, dy + ddy, again_reliability, status, dx, dy)
        reliability = first_reliability if not precise else correlation_reliability(fixed, moving, dx, dy)
        if not (reliability >= MIN_RELIABILITY and max(abs(dx), abs(dy)) < self.size / 4):
            return Measurement(dx, dy, reliability, STATUS_UNRELIABLE, dx, dy)
        if not precise:
            return Measurement(dx, dy, reliability, STATUS_MEASURED, dx, dy)
        again = self._fixed_prepared([index], [h @ translation(dx, dy)], Resampling.lanczos)[0]
        if again.valid_fraction < MIN_VALID_FRACTION or not again.textured:
            return Measurement(dx, dy, reliability, STATUS_MEASURED, dx, dy)
        ddx, ddy, again_reliability = match(again, moving, upsample=upsample)
        # a second match far from the first is another peak (repeated texture), not a refinement
        if not (again_reliability >= MIN_RELIABILITY and max(abs(ddx), abs(ddy)) <= MAX_REFINEMENT_PX):
            return Measurement(dx, dy, reliability, STATUS_MEASURED, dx, dy)
        return Measurement(dx + ddx, dy + ddy, again_reliability, STATUS_MEASURED, dx, dy)
