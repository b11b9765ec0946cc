"""Patches made ready for matching: *edge proxies*, one patch or a stack of them at once.

An edge proxy is the gradient magnitude (Sobel) smoothed by a 1 px Gaussian: it looks alike across
dates, bands and sensors where raw intensities do not. It is made mean-free and zero where invalid;
:mod:`.correlation` tapers it with a Hann window so the patch border does not dominate the spectrum.

Tie points prepare their windows in stacks (:func:`prepare_many`): every step is one array
operation over all windows valid throughout, long enough to run without Python's lock, so two
threads measuring windows use two cores. A window with holes is prepared on its own. Both ways give
the same proxy for a window (the same operations, per pixel, in the same precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import ndimage
from skimage.transform import warp

#: Gaussian smoothing (px) of the gradient magnitude. Taking the magnitude creates harmonics above
#: the Nyquist frequency that alias and bend sub-pixel shifts; 1 px suppresses them (measured on
#: Sentinel-2 windows: shifts of 0.02 to 1.3 px recovered to the 1/100 px quantum, against errors
#: up to 0.04 px unsmoothed).
PROXY_SIGMA = 1.0
#: A patch whose proxy varies less than this, relative to its magnitude, has no texture.
TEXTURE_EPS = 1e-6


@dataclass(frozen=True)
class Prepared:
    """A patch ready for matching, stored compactly (float32 and a mask: hundreds are kept per run).

    ``proxy`` is mean-free and zero where invalid; ``valid`` marks where it is defined.
    """

    proxy: np.ndarray
    valid: np.ndarray
    valid_fraction: float
    textured: bool

    @cached_property
    def weight(self) -> np.ndarray:
        """The Hann taper, zero where invalid."""
        return taper(self.proxy.shape) * self.valid

    @cached_property
    def values(self) -> np.ndarray:
        """The tapered proxy, what phase correlation sees."""
        return self.proxy * self.weight


@lru_cache(maxsize=4)
def hann(shape: tuple[int, int]) -> np.ndarray:
    """scikit-image's 2-D Hann window of ``shape`` (``skimage.filters.window("hann", shape)``: the
    symmetric 1-D window of the longer side, rotated about the centre by scikit-image's warp and
    stretched to each side), float64, read-only. Built as scikit-image builds it, with NumPy's Hann
    window (the same values) in place of SciPy's, whose module takes 0.8 s to import: every Align
    run would pay that. Cached: a run asks for the same few shapes again and again."""
    longest = max(shape)
    # the stretch as scikit-image computes it (a NumPy scalar: float64 lines under NumPy 2, float32 before)
    lines = [np.arange(side, dtype=np.float32) * (np.int64(longest) / np.int64(side)) for side in shape]
    centre = longest / 2 - 0.5
    rows, cols = (line - centre for line in np.meshgrid(*lines, sparse=True, indexing="ij"))
    coords = np.zeros((2, *shape), dtype=np.float32)
    coords[0] = np.sqrt(0 + rows * rows + cols * cols) + centre
    values = warp(np.hanning(longest)[:, None], coords, mode="constant", cval=0.0)
    values.flags.writeable = False
    return values


@lru_cache(maxsize=8)
def taper(shape: tuple[int, int]) -> np.ndarray:
    """The 2-D Hann window of ``shape``, float32 (cached: every window of a run has the same shape)."""
    return hann(shape).astype(np.float32)


def stacked(patches: list[Prepared]) -> tuple[np.ndarray, np.ndarray]:
    """(proxies, weights) of same-shaped ``patches`` as arrays (patch, row, col), float32."""
    proxies = np.stack([p.proxy for p in patches])
    weights = np.stack([p.valid for p in patches]) * taper(proxies.shape[1:])
    return proxies, weights


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude over the last two axes of ``image`` (one patch or a stack) as
    ``skimage.filters.sobel`` defines it (kernels [1, 0, -1] x [1, 2, 1] / 4, reflected edges, root
    mean square of the two directions), in the image's own precision and by array slices: five times
    faster than skimage on a 256 px float32 window."""
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(1, 1), (1, 1)], mode="symmetric")
    # in place, the same operations in the same order: fewer large temporaries, the same values
    rows = 2 * padded[..., 1:-1, :]
    rows += padded[..., :-2, :]
    rows += padded[..., 2:, :]
    cols = 2 * padded[..., :, 1:-1]
    cols += padded[..., :, :-2]
    cols += padded[..., :, 2:]
    across = rows[..., :, 2:] - rows[..., :, :-2]
    down = cols[..., 2:, :] - cols[..., :-2, :]
    across *= across
    down *= down
    across += down
    across /= 32
    return np.sqrt(across, out=across)


def smoothed_edges(image: np.ndarray) -> np.ndarray:
    """The edge proxy's values over the last two axes of float32 ``image`` (no holes): Sobel
    magnitude smoothed by :data:`PROXY_SIGMA`."""
    return gaussian(sobel_magnitude(image))


def gaussian(image: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` by :data:`PROXY_SIGMA` over the last two axes of float32
    ``image`` (truncated at 4 sigma, reflected edges), in float32: down the columns by array slices
    (scipy's pass along that axis gathers every column first: twice as slow on a stack of 256 px
    windows), then along the rows by scipy. Differs from scipy's by float32 rounding (1e-7)."""
    taps = _gaussian_taps()
    radius = len(taps) // 2
    rows = image.shape[-2]
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(radius, radius), (0, 0)], mode="symmetric")
    down = taps[radius] * padded[..., radius:radius + rows, :]
    pair = np.empty_like(down)
    for k in range(1, radius + 1):
        np.add(padded[..., radius - k:radius - k + rows, :], padded[..., radius + k:radius + k + rows, :], out=pair)
        pair *= taps[radius + k]
        down += pair
    return ndimage.correlate1d(down, taps, axis=-1, mode="reflect")


@lru_cache(maxsize=1)
def _gaussian_taps() -> np.ndarray:
    """The normalized Gaussian of :data:`PROXY_SIGMA` sampled at whole pixels out to 4 sigma, float32."""
    radius = int(4 * PROXY_SIGMA + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / PROXY_SIGMA) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def prepare(patch: np.ndarray, *, use_edge_proxy: bool = True) -> Prepared:
    """Turn a float patch (NaN = invalid) into a :class:`Prepared` patch for matching."""
    return prepare_many(patch[None], use_edge_proxy=use_edge_proxy)[0]


def prepare_many(patches: np.ndarray, *, use_edge_proxy: bool = True) -> list[Prepared]:
    """:func:`prepare` for each patch of a stack (patch, row, col): those valid throughout together."""
    whole = np.isfinite(patches).all(axis=(1, 2))
    out: list[Prepared | None] = [None] * len(patches)
    chosen = np.flatnonzero(whole)
    if chosen.size:
        together = patches if chosen.size == len(patches) else patches[chosen]
        for k, prepared in zip(chosen, _prepare_valid(together, use_edge_proxy)):
            out[k] = prepared
    for k in np.flatnonzero(~whole):
        out[k] = _prepare_with_holes(patches[k], use_edge_proxy)
    return out  # type: ignore[return-value]


def _prepare_valid(patches: np.ndarray, use_edge_proxy: bool) -> list[Prepared]:
    """Patches valid throughout, prepared together. With edge proxies the outermost pixels are
    invalid (their 3 x 3 neighbourhood leaves the patch)."""
    patches = patches.astype(np.float32, copy=False)
    valid = np.ones(patches.shape[1:], bool)
    if use_edge_proxy:
        values = smoothed_edges(patches)
        valid[0] = valid[-1] = valid[:, 0] = valid[:, -1] = False
    else:
        values = patches.copy()
    if not valid.any():
        return [_empty(valid) for _ in patches]
    inside = values[:, 1:-1, 1:-1] if use_edge_proxy else values
    largest = np.maximum(inside.max(axis=(1, 2)), -inside.min(axis=(1, 2)))
    values -= inside.mean(axis=(1, 2))[:, None, None]
    spread = np.sqrt(np.einsum("kij,kij->k", inside, inside) / inside[0].size)  # the mean-free values' std
    values[:, ~valid] = 0.0
    fraction = float(valid.mean())
    return [Prepared(v, valid, fraction, _textured(float(s), float(m))) for v, s, m in zip(values, spread, largest)]


def _prepare_with_holes(patch: np.ndarray, use_edge_proxy: bool) -> Prepared:
    """One patch with invalid (NaN) pixels: holes are filled with the mean before filtering, and
    pixels whose 3 x 3 neighbourhood touches a hole or the border are invalid in the proxy, so the
    border of a nodata area never looks like an edge."""
    valid = np.isfinite(patch)
    if not valid.any():
        return _empty(valid)
    if use_edge_proxy:
        filled = np.where(valid, patch, np.mean(patch[valid])).astype(np.float32)
        valid = ndimage.binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=0)
        values = np.where(valid, smoothed_edges(filled), 0.0)
    else:
        values = np.where(valid, patch, 0.0)
    fraction = float(valid.mean())
    if fraction == 0:
        return _empty(valid)
    inside = values[valid]
    proxy = np.where(valid, values - np.mean(inside), 0.0).astype(np.float32)
    return Prepared(proxy, valid, fraction, _textured(float(np.std(inside)), float(np.max(np.abs(inside)))))


def _textured(spread: float, largest: float) -> bool:
    """Whether a proxy whose valid values have this standard deviation and largest magnitude has
    texture (:data:`TEXTURE_EPS`)."""
    return spread > TEXTURE_EPS * max(1.0, largest)


def _empty(valid: np.ndarray) -> Prepared:
    """A patch with no valid proxy pixel: nothing to match."""
    return Prepared(np.zeros(valid.shape, np.float32), valid, 0.0, False)
