"""Fixed tie-point windows read on the fixed raster's own pixel lattice, without resampling.

Where a tie-point window's grid (the moving grid as the current correction places it) is the fixed
raster's pixel lattice, or the lattice of its k x k average, moved by a translation and at most a
slight rotation, the window's content is a lattice window moved by a fraction of a pixel. That
lattice window is read as it is (a slice of a stack's shared average, or one GDAL read), prepared,
and its edge proxy moved by the fraction by Fourier shifts (band-limited interpolation, as the
matching's second measurement moves it already): along every row, then down every column, each
line by its own amount, which also turns it by the slight rotation. No resampling kernel, and no
GDAL warp at the raster's edge.

Sign convention: window pixel (col, row) shows the lattice window's content at
(col + dx + shear_x * (row - rc), row + dy + shear_y * (col - cc)) (px), with (cc, rc) the window's
central pixel, (dx, dy) = :attr:`Place.fraction` (in [-0.5, 0.5], but for a window reaching past the
raster's edge) and (shear_x, shear_y) = :attr:`Place.shear`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import fft

from ..common.affines import compose
from ..io import kept_windows, shared_reads
from ..io.kept_windows import KeptWindows
from ..io.raster_source import Grid, RasterSource
from ..io.warp import decimation_factor
from .proxies import Prepared

#: What the moves leave out (scale, and the second order of the rotation) moves no window pixel by
#: more than this (px): the matching's own resolution is a hundredth of a pixel.
MAX_DEVIATION_PX = 0.005
#: A window may reach past the raster's edge by this much (px): its lattice window is then the one
#: inside, moved by more than half a pixel, and the pixels beyond the edge show the window's opposite
#: border (wrapped by the Fourier shift), where the matching's taper weighs them by at most 6e-4 (256 px).
MAX_BEYOND_PX = 2.0
#: Rotations move a window's edges by at most this (px) against its centre (about 0.2 degrees for a
#: 256 px window); beyond it the window is resampled.
MAX_SHEAR_PX = 0.5


@dataclass(frozen=True)
class Place:
    """Where a window lies on the lattice of the fixed raster's ``factor`` x ``factor`` average: its
    top-left lattice pixel (``col``, ``row``), and ``fraction`` and ``shear`` (see the module)."""

    factor: int
    col: int
    row: int
    fraction: tuple[float, float]
    shear: tuple[float, float]


def place(source: RasterSource, band: int, window: Grid) -> Place | None:
    """Where ``window`` lies on ``source``'s lattice (its own pixels, or their k x k average where
    ``window``'s pixels span k whole source pixels and the band is valid throughout), or None: another
    CRS, a scale or rotation beyond :data:`MAX_DEVIATION_PX` and :data:`MAX_SHEAR_PX`, or a window
    reaching past the raster's edge by more than :data:`MAX_BEYOND_PX`."""
    return places(source, band, window, np.zeros((1, 2), int), (window.width, window.height))[0]


def places(
    source: RasterSource, band: int, grid: Grid, origins: np.ndarray, size: tuple[int, int]
) -> list[Place | None]:
    """:func:`place` for the windows of ``size`` (width, height) px at pixels ``origins`` (col, row)
    of ``grid``, all at once (one tie-point batch)."""
    if grid.crs != source.grid.crs or not len(origins):
        return [None] * len(origins)
    src_transform = source.dataset.transform
    factor = decimation_factor(source, [band], src_transform, grid)
    m = compose(~compose(src_transform, Affine.scale(factor)), grid.transform)
    half_x, half_y = size[0] / 2, size[1] / 2
    left_out = abs(m.a - 1) * half_x + abs(m.e - 1) * half_y + abs(m.b) * (0.5 + abs(m.d) * half_x)
    if left_out > MAX_DEVIATION_PX or max(abs(m.b) * half_y, abs(m.d) * half_x) > MAX_SHEAR_PX:
        return [None] * len(origins)
    centre_x = origins[:, 0] + half_x
    centre_y = origins[:, 1] + half_y
    left = m.a * centre_x + m.b * centre_y + m.c - half_x
    top = m.d * centre_x + m.e * centre_y + m.f - half_y
    cols = np.clip(np.round(left), 0, source.grid.width // factor - size[0]).astype(int)
    rows = np.clip(np.round(top), 0, source.grid.height // factor - size[1]).astype(int)
    out: list[Place | None] = []
    for col, row, dx, dy in zip(cols.tolist(), rows.tolist(), (left - cols).tolist(), (top - rows).tolist()):
        fits = min(col, row) >= 0 and max(abs(dx), abs(dy)) <= 0.5 + MAX_BEYOND_PX
        out.append(Place(factor, col, row, (dx, dy), (m.b, m.d)) if fits else None)
    return out


def expect_copy(source: RasterSource, band: int, grid: Grid) -> None:
    """While ``source`` is shared (:mod:`coreg_plugin.io.shared_reads`), make the copy of its k x k average that the
    tie-point windows of ``grid`` (the moving grid, near its own) will read (where k >= 2), before the
    coarse stage asks for a coarser one: that one is then made from it, not by decoding the raster again."""
    factor = decimation_factor(source, [band], source.dataset.transform, grid)
    shared_reads.expect(source.path, band, factor, (source.dataset.height, source.dataset.width), source.float_dtype)


def read(
    source: RasterSource, band: int, where: Place, shape: tuple[int, int], kept: KeptWindows | None = None
) -> np.ndarray:
    """The lattice window of ``shape`` (rows, cols) at ``where``, float, NaN where invalid; taken
    from ``kept`` (the raster's own pixels kept by the coarse stage) where it holds the window."""
    k = where.factor
    rows, cols = shape
    if k == 1:
        return kept_windows.read_valid(source, band, Window(where.col, where.row, cols, rows), kept)
    return source.read_average(band, Window(where.col * k, where.row * k, cols * k, rows * k), shape,
                               source.float_dtype)


def placed(patches: list[Prepared], places: list[Place]) -> list[Prepared]:
    """Prepared lattice windows (same shape, valid throughout but for their border) moved to their
    ``places``: zero where invalid and mean-free again over the valid pixels, as
    :func:`.proxies.prepare` makes a proxy (the taper of the matching keeps the wrapped border out)."""
    proxies = np.stack([p.proxy for p in patches])
    rows, cols = proxies.shape[1:]
    along_rows = np.stack([_line_ramps(p.fraction[0], p.shear[0], rows, cols) for p in places])
    values = fft.irfft(fft.rfft(proxies, axis=2) * along_rows, n=cols, axis=2)
    down_cols = np.stack([_line_ramps(p.fraction[1], p.shear[1], cols, rows).T for p in places])
    values = fft.irfft(fft.rfft(values, axis=1) * down_cols, n=rows, axis=1).astype(np.float32, copy=False)
    weights = np.stack([p.valid for p in patches]).astype(np.float32)
    values -= (np.einsum("kij,kij->k", values, weights) / weights.sum(axis=(1, 2)))[:, None, None]
    values *= weights
    return [Prepared(v, p.valid, p.valid_fraction, p.textured) for v, p in zip(values, patches)]


def _line_ramps(fraction: float, shear: float, lines: int, length: int) -> np.ndarray:
    """(line, frequency) phase ramps that move each of ``lines`` lines of ``length`` px by
    ``fraction + shear * (line - central line)`` px towards its start (``out[x] = in[x + shift]``),
    complex64 for a real-input FFT along the line."""
    return _shear_ramps(shear, lines, length) * _ramp(fraction * fft.rfftfreq(length))


@lru_cache(maxsize=8)
def _shear_ramps(shear: float, lines: int, length: int) -> np.ndarray:
    """The shear's part of :func:`_line_ramps` (cached: one registration pass has one rotation)."""
    offsets = shear * (np.arange(lines) - (lines - 1) / 2)
    ramps = _ramp(offsets[:, None] * fft.rfftfreq(length))
    ramps.flags.writeable = False
    return ramps


def _ramp(cycles: np.ndarray) -> np.ndarray:
    """``exp(2 pi i cycles)``, complex64."""
    return np.exp(2j * np.pi * cycles).astype(np.complex64)
