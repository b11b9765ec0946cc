"""Windows of a raster kept from a read that decodes it anyway, for a later stage to take from memory.

Align's coarse stage decodes every block of both rasters to average them; its tie-point stage then
reads some 400 windows of each, which decodes most blocks a second time. A :class:`KeptWindows`
names the regions the tie points will read before the coarse read starts; that read, reading
whole-resolution strips (:func:`average_blocks` makes the coarse image of them as GDAL would),
copies each region's pixels as its strips pass (:meth:`~KeptWindows.take`); the tie points then take
any window inside a region from memory (:meth:`~KeptWindows.window`) and read every other one as
before. Keeping about 395 windows of each raster (56 MiB a raster:
:data:`coreg_plugin.estimate.tiepoints.KEEP_MAX_BYTES`), with GDAL's block cache given back during
the tie points, takes the Align of a 10980 px pair shifted by a translation from 1.05 to 0.96 times
its I/O floor (medians of 5 paired runs; keeping 280 windows had taken it from 9.2 s to 8.6 s).

Only bands GDAL reads without a mask (valid throughout) and of :data:`KEPT_DTYPES` are kept, whose
decimated average :func:`average_blocks` reproduces exactly: a kept window is the very array a read
would have given, and the coarse image the very one GDAL's averaging gives.
"""

from __future__ import annotations

import threading

import numpy as np
from rasterio.windows import Window

from .raster_source import RasterSource

#: Data types whose windows are kept: those (of the 16 bits or more that the coarse stage reads
#: decimated) whose average over k x k pixels GDAL 3.6 and 3.10 round half away from zero to the
#: data type, as :func:`average_blocks` does (measured; GDAL 3.6 departs from it for uint32).
KEPT_DTYPES = ("uint16", "int16")


def average_blocks(data: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block of integer ``data`` (rows, cols: whole blocks),
    rounded half away from zero to a whole number, as float32: GDAL's decimated ``average`` read of
    integer data (exact integer arithmetic, no float rounding)."""
    rows, cols = data.shape[0] // factor, data.shape[1] // factor
    count = factor * factor
    wide = np.int32 if count * (1 << 16) < (1 << 31) else np.int64  # holds every sum of 16-bit values
    # down the rows first (contiguous), then along each row: several times faster than one 4-D sum
    sums = data.reshape(rows, factor, cols * factor).sum(axis=1, dtype=wide).reshape(rows, cols, factor).sum(axis=2)
    rounded = (2 * np.abs(sums) + count) // (2 * count)
    return (np.sign(sums) * rounded).astype(np.float32)


class KeptWindows:
    """The pixels of one band of a raster in ``regions``, filled by a read passing over them.

    ``regions``: (n, 4) whole pixels (col, row, width, height), inside the raster; ``dtype``: the
    band's data type. Windows are served once :meth:`finish` says the read is over, from the regions
    it covered whole (strips do not overlap: a region is whole when they brought all its pixels).
    """

    def __init__(self, regions: np.ndarray, dtype: str) -> None:
        self.regions = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
        self.dtype = np.dtype(dtype)
        sizes = self.regions[:, 2] * self.regions[:, 3]
        # one allocation, given back to the system whole when released (hundreds of small ones stay
        # in the allocator's heap and raise the peak of the stages after)
        self._buffer: np.ndarray | None = np.empty(int(sizes.sum()), self.dtype)
        ends = np.cumsum(sizes)
        self._data: list[np.ndarray] | None = [self._buffer[end - size:end].reshape(h, w) for end, size, (_, _, w, h)
                                               in zip(ends, sizes, self.regions)]
        self._taken = np.zeros(len(self.regions), np.int64)
        self._counting = threading.Lock()
        self._whole = np.zeros(len(self.regions), bool)

    @property
    def nbytes(self) -> int:
        """Memory held by the kept pixels, in bytes."""
        return self._buffer.nbytes if self._buffer is not None else 0

    def take(self, strip: np.ndarray, col: int, row: int) -> None:
        """Copy what the regions hold of ``strip`` (rows, cols), read at pixel (``col``, ``row``)."""
        if self._data is None:
            return
        c0, r0, w, h = self.regions.T
        top, bottom = np.maximum(r0, row), np.minimum(r0 + h, row + strip.shape[0])
        left, right = np.maximum(c0, col), np.minimum(c0 + w, col + strip.shape[1])
        for k in np.flatnonzero((bottom > top) & (right > left)):
            self._data[k][top[k] - r0[k]:bottom[k] - r0[k], left[k] - c0[k]:right[k] - c0[k]] = \
                strip[top[k] - row:bottom[k] - row, left[k] - col:right[k] - col]
            with self._counting:  # strips of one raster are taken on two threads
                self._taken[k] += (bottom[k] - top[k]) * (right[k] - left[k])

    def finish(self) -> None:
        """Say that the read is over: from then on, windows are served from the regions it brought whole."""
        if self._data is not None:
            self._whole = self._taken == self.regions[:, 2] * self.regions[:, 3]

    def window(self, window: Window) -> np.ndarray | None:
        """The pixels of ``window`` (whole pixels) as kept, or None when no region holds all of it."""
        if self._data is None:
            return None
        col, row, width, height = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        c0, r0, w, h = self.regions.T
        holding = np.flatnonzero(self._whole & (c0 <= col) & (r0 <= row) & (col + width <= c0 + w)
                                 & (row + height <= r0 + h))
        if not len(holding):
            return None
        k = holding[0]
        return self._data[k][row - r0[k]:row - r0[k] + height, col - c0[k]:col - c0[k] + width]

    def release(self) -> None:
        """Free the kept pixels (windows are read again from then on)."""
        self._data = self._buffer = None
        self._whole[:] = False


def read_valid(source: RasterSource, band: int, window: Window, kept: KeptWindows | None) -> np.ndarray:
    """1-based ``band`` of ``source`` in ``window`` as :meth:`RasterSource.read_valid` gives it (float,
    NaN where invalid), taken from ``kept`` (that raster's kept windows) where it holds the window."""
    pixels = kept.window(window) if kept is not None else None
    if pixels is not None:
        return pixels.astype(source.float_dtype)
    return source.read_valid([band], window)[0]
