"""Averaged reads of one raster shared by many registrations: a stack's reference, decoded once.

Coregister Stack registers every input against the same reference, and each registration's coarse
stage reads the reference averaged over k x k pixels (GDAL's decimated read), which decodes every
block of it: eight inputs, eight decodes of the same tile. Inside :func:`sharing`, such reads of the
named raster are served from one averaged copy of the whole band per factor, filled in bands of
rows on first use (so progress and cancel keep their pace) and kept until the last ``sharing`` of
that raster ends. Two registrations needing rows not yet read fill different bands side by side
rather than wait for each other. A copy is made only while all copies together stay within
:data:`MAX_BYTES`; reads that would not fit go to GDAL as before.

The values are GDAL's own: a request on the copy's lattice is a slice of what GDAL averaged over the
same k x k pixels. A copy whose lattice is the lattice of a finer copy already made (:func:`expect`:
a stack's tie points average its 10 m reference 2 x 2 for 20 m inputs, its coarse stage 6 x 6) is
made from that one, by the mean of its (k / j) x (k / j) blocks, instead of decoding the raster
again: for integer data the same values (each a sum of whole numbers divided once), for float data
within float32 rounding.

What the registrations make of the shared raster can be kept for the others too (:func:`keep`,
:func:`kept`: the tie points' prepared fixed windows, the same lattice windows for every input of a
stack), within :data:`MAX_KEPT_BYTES`, until the last ``sharing`` ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from rasterio.windows import Window

from ..common import machine

#: Averaged copies kept at once, in bytes at most (a sixteenth of the available memory if that is
#: less): a 10980 px tile's 2 x 2 average in float32 (the tie points' fixed windows of 20 m inputs on
#: a 10 m reference: 115 MiB) and its 6 x 6 (13 MiB).
MAX_BYTES = machine.budget(160 << 20, 1 / 16)
#: What registrations keep for each other (:func:`keep`) at once, in bytes at most (a sixteenth of
#: the available memory if that is less): a stack's prepared fixed windows (5490 px inputs at 20 m on
#: a 10980 px reference: about 300 windows of 256 KiB) and the reference's coarse image for each grid
#: of the inputs (up to 4 MiB each).
MAX_KEPT_BYTES = machine.budget(128 << 20, 1 / 16)
#: Rows of the raster read at once to fill a copy (one row of 512 px blocks).
FILL_ROWS = 512

#: Reads a window of the band decimated to a shape: (window, (rows, cols)) -> array.
Reader = Callable[[Window, tuple[int, int]], np.ndarray]


class AveragedBand:
    """One band averaged over ``factor`` x ``factor`` pixels on a lattice starting at (``col0``, ``row0``)
    (both below ``factor``), over the whole raster, filled on demand in bands of whole rows (about
    :data:`FILL_ROWS` of the raster's), each band once."""

    def __init__(
        self, factor: int, col0: int, row0: int, height: int, width: int, dtype: np.dtype,
        finer: AveragedBand | None = None,
    ) -> None:
        """``finer``: a copy whose lattice this one's lattice is part of, filled from it (see the module)."""
        self.factor, self.col0, self.row0, self.finer = factor, col0, row0, finer
        self.data = np.empty(((height - row0) // factor, (width - col0) // factor), dtype)
        self.band_rows = max(1, FILL_ROWS // factor)
        bands = -(-self.data.shape[0] // self.band_rows)
        self.filled = np.zeros(bands, bool)
        self.locks = [threading.Lock() for _ in range(bands)]

    def covers(self, window: Window, out_shape: tuple[int, int]) -> bool:
        """Whether ``window`` decimated to ``out_shape`` is a block of this copy."""
        k = self.factor
        col, row = int(window.col_off) - self.col0, int(window.row_off) - self.row0
        rows, cols = out_shape
        return (int(window.width) == cols * k and int(window.height) == rows * k and col % k == 0 and row % k == 0
                and col >= 0 and row >= 0 and col // k + cols <= self.data.shape[1]
                and row // k + rows <= self.data.shape[0])

    def read(self, window: Window, out_shape: tuple[int, int], reader: Reader) -> np.ndarray:
        """The block of the copy for a covered ``window``, filling its missing bands through ``reader``:
        first those no other thread is filling, then (waiting for them) the rest."""
        k = self.factor
        top = (int(window.row_off) - self.row0) // k
        left = (int(window.col_off) - self.col0) // k
        bottom = top + out_shape[0]
        busy = []
        for band in range(top // self.band_rows, (bottom - 1) // self.band_rows + 1):
            if self.filled[band]:
                continue
            if self.locks[band].acquire(blocking=False):
                try:
                    self._fill(band, reader)
                finally:
                    self.locks[band].release()
            else:
                busy.append(band)
        for band in busy:
            with self.locks[band]:
                self._fill(band, reader)
        return self.data[top:bottom, left:left + out_shape[1]].copy()

    def _fill(self, band: int, reader: Reader) -> None:
        """Read band ``band`` of the copy (whole rows) through ``reader``, unless it is filled already."""
        if self.filled[band]:
            return
        k = self.factor
        first = band * self.band_rows
        last = min(first + self.band_rows, self.data.shape[0])
        rows, cols = last - first, self.data.shape[1]
        whole = Window(self.col0, self.row0 + first * k, cols * k, rows * k)
        if self.finer is None:
            self.data[first:last] = reader(whole, (rows, cols))
        else:
            r = k // self.finer.factor
            blocks = self.finer.read(whole, (rows * r, cols * r), reader).reshape(rows, r, cols, r)
            self.data[first:last] = blocks.mean(axis=(1, 3), dtype=self.data.dtype)
        self.filled[band] = True

    def refines(self, factor: int, col0: int, row0: int, dtype: np.dtype) -> bool:
        """Whether the lattice of a ``factor`` copy at (``col0``, ``row0``) is part of this copy's."""
        return (factor % self.factor == 0 and factor > self.factor and self.data.dtype == dtype
                and (col0 - self.col0) % self.factor == 0 and (row0 - self.row0) % self.factor == 0
                and col0 >= self.col0 and row0 >= self.row0)


_lock = threading.Lock()
_scopes: dict[str, int] = {}
_copies: dict[tuple, AveragedBand] = {}
_kept: dict[str, dict[tuple, Any]] = {}
_kept_bytes: dict[str, int] = {}


@contextmanager
def sharing(path: str) -> Iterator[None]:
    """While active, averaged reads of the raster at ``path`` (as opened) are served from shared copies."""
    with _lock:
        _scopes[path] = _scopes.get(path, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _scopes[path] -= 1
            if not _scopes[path]:
                del _scopes[path]
                for key in [key for key in _copies if key[0] == path]:
                    del _copies[key]
                _kept.pop(path, None)
                _kept_bytes.pop(path, None)


def shared(path: str) -> bool:
    """Whether the raster at ``path`` (as opened) is shared now (inside :func:`sharing`)."""
    with _lock:
        return path in _scopes


def kept(path: str, key: tuple) -> Any | None:
    """What a registration kept under ``key`` for the raster at ``path`` (None: nothing, or not shared)."""
    with _lock:
        return _kept.get(path, {}).get(key)


def keep(path: str, key: tuple, value: Any, nbytes: int) -> None:
    """Keep ``value`` (``nbytes`` of memory) under ``key`` for the other registrations of the raster at
    ``path`` while it is shared, if all kept values stay within :data:`MAX_KEPT_BYTES`."""
    with _lock:
        if path not in _scopes or key in _kept.get(path, {}):
            return
        if sum(_kept_bytes.values()) + nbytes > MAX_KEPT_BYTES:
            return
        _kept.setdefault(path, {})[key] = value
        _kept_bytes[path] = _kept_bytes.get(path, 0) + nbytes


def copy_for(
    path: str, band: int, window: Window, out_shape: tuple[int, int], raster_shape: tuple[int, int], dtype: np.dtype,
) -> AveragedBand | None:
    """The shared copy that serves this averaged read, made if there is room; None when ``path`` is
    not shared, the read is not a whole-factor average, or the copy would not fit in :data:`MAX_BYTES`."""
    rows, cols = out_shape
    if path not in _scopes or rows < 1 or cols < 1 or int(window.width) % cols or int(window.height) % rows:
        return None
    factor = int(window.width) // cols
    if factor < 2 or int(window.height) // rows != factor:
        return None
    copy = _copy(path, band, factor, int(window.col_off) % factor, int(window.row_off) % factor, raster_shape, dtype)
    return copy if copy is not None and copy.covers(window, out_shape) else None


def expect(path: str, band: int, factor: int, raster_shape: tuple[int, int], dtype: np.dtype) -> None:
    """Make the copy of ``band`` averaged ``factor`` x ``factor`` on the raster's own lattice (from its
    first pixel) now, if the raster at ``path`` is shared and it fits, so that coarser copies on its
    lattice, asked for first, are made from it (see the module)."""
    if factor >= 2:
        _copy(path, band, factor, 0, 0, raster_shape, dtype)


def _copy(
    path: str, band: int, factor: int, col0: int, row0: int, raster_shape: tuple[int, int], dtype: np.dtype,
) -> AveragedBand | None:
    """The copy under this key, made (from a finer copy whose lattice it is part of, if one is made) if
    there is room; None when ``path`` is not shared or it would not fit in :data:`MAX_BYTES`."""
    dtype = np.dtype(dtype)
    key = (path, band, factor, col0, row0, dtype.str)
    with _lock:
        if path not in _scopes:
            return None
        copy = _copies.get(key)
        if copy is None:
            height, width = raster_shape
            size = ((height - row0) // factor) * ((width - col0) // factor) * dtype.itemsize
            if size + sum(c.data.nbytes for c in _copies.values()) > MAX_BYTES:
                return None
            finer = [c for k, c in _copies.items() if k[:2] == key[:2] and c.refines(factor, col0, row0, dtype)]
            copy = _copies[key] = AveragedBand(factor, col0, row0, height, width, dtype,
                                               max(finer, key=lambda c: c.factor, default=None))
    return copy
