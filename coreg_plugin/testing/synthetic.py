"""Synthetic scenes and known misregistrations, for the demo, the tests and the benchmark.

:func:`misregister` turns a true image into the image a misregistered sensor would have delivered
on the same grid, for a known correction ``h`` (see :mod:`coreg_plugin.geometry`): aligning the
result must report ``h``.
"""

from __future__ import annotations

import os

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.draw import line_aa

SAMPLE_CRS = CRS.from_epsg(32633)
SAMPLE_ORIGIN = (400000.0, 5800000.0)
SAMPLE_PIXEL_M = 10.0


def realistic_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A landscape-like float image in about [0, 1]: field parcels, fractal texture, roads."""
    rng = np.random.default_rng(seed)
    parcels = rng.uniform(0, 1, (max(8, height * width // 2500), 2)) * (height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    nearest = cKDTree(parcels).query(np.column_stack([rows.ravel(), cols.ravel()]))[1]
    image = 0.55 * rng.uniform(0.1, 0.9, len(parcels))[nearest].reshape(height, width)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    radius = np.hypot(fy, fx)
    radius[0, 0] = np.inf
    amplitude = radius ** -0.9
    noise = np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.uniform(size=(height, width)))).real
    image += 0.3 * (noise - noise.mean()) / (noise.std() + 1e-12)
    for _ in range(max(2, (height + width) // 150)):
        r0, r1 = rng.integers(0, height, 2)
        c0, c1 = rng.integers(0, width, 2)
        rr, cc, val = line_aa(int(r0), int(c0), int(r1), int(c1))
        image[rr, cc] = np.maximum(image[rr, cc], 0.9 * val)
    return ndimage.gaussian_filter(image, 0.7).astype(np.float32)


def misregister(truth: np.ndarray, h: np.ndarray, order: int = 3) -> np.ndarray:
    """The image whose content at pixel position p is ``truth``'s content at ``h``(p).

    Positions are pixel-corner coordinates (x = column, y = row); cubic-spline interpolation.
    """
    a, t = h[:2, :2], h[:2, 2]
    matrix = a[::-1, ::-1]
    offset = (a @ np.array([0.5, 0.5]) + t - 0.5)[::-1]
    return ndimage.affine_transform(truth.astype(np.float64), matrix, offset, order=order, mode="nearest")


def write_raster(
    path: str | os.PathLike,
    bands: np.ndarray,
    transform: Affine,
    crs: CRS = SAMPLE_CRS,
    dtype: str = "uint16",
    nodata: float | None = None,
) -> None:
    """Write (bands, rows, cols) or (rows, cols) values, rounded and clipped for integer types."""
    bands = bands[None] if bands.ndim == 2 else bands
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        bands = np.clip(np.rint(bands), info.min, info.max)
    with rasterio.open(path, "w", driver="GTiff", dtype=dtype, count=len(bands), crs=crs,
                       transform=transform, width=bands.shape[2], height=bands.shape[1],
                       nodata=nodata, tiled=True, compress="deflate") as dst:
        dst.write(bands.astype(dt))


def make_sample_pair(
    folder: str | os.PathLike, *, size: int = 768, shift: tuple[float, float] = (3.37, -2.62), seed: int = 7
) -> dict:
    """Write ``fixed.tif`` and ``moving.tif`` (uint16, UTM 33N, 10 m) into ``folder``.

    The moving image's content is displaced so that the correction to apply to it is ``shift``
    (x columns right, y rows down, pixels). Returns the truth as a dict.
    """
    os.makedirs(folder, exist_ok=True)
    truth = realistic_scene(size, size, seed) * 3000 + 500
    h = np.eye(3)
    h[:2, 2] = shift
    transform = Affine(SAMPLE_PIXEL_M, 0, SAMPLE_ORIGIN[0], 0, -SAMPLE_PIXEL_M, SAMPLE_ORIGIN[1])
    fixed = os.path.join(folder, "fixed.tif")
    moving = os.path.join(folder, "moving.tif")
    write_raster(fixed, truth, transform)
    write_raster(moving, misregister(truth, h), transform)
    return {
        "fixed_image": fixed,
        "moving_image": moving,
        "shift_px": {"x": shift[0], "y": shift[1]},
        "shift_m": {"x": shift[0] * SAMPLE_PIXEL_M, "y": -shift[1] * SAMPLE_PIXEL_M},
    }


def local_jitter_field(
    shape: tuple[int, int], rms_px: float, window_px: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (dx, dy), pixels, with no global shift and no linear trend.

    White noise smoothed over a quarter of ``window_px``, with its mean and best-fit plane removed
    from each component over the whole image, scaled so that its average over a ``window_px``
    square (what one tie-point window sees) has an RMS magnitude of ``rms_px``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    design = np.column_stack([np.ones(rows.size), cols.ravel(), rows.ravel()])
    components = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=shape), window_px / 4, mode="wrap")
        trend = design @ np.linalg.lstsq(design, field.ravel(), rcond=None)[0]
        components.append(field - trend.reshape(shape))
    seen = [ndimage.uniform_filter(c, window_px, mode="nearest") for c in components]
    scale = rms_px / np.sqrt(np.mean(seen[0] ** 2 + seen[1] ** 2))
    return components[0] * scale, components[1] * scale


def displace(truth: np.ndarray, dx: np.ndarray | float, dy: np.ndarray | float) -> np.ndarray:
    """The image whose content at pixel (x, y) is ``truth``'s content at (x + dx, y + dy).

    ``dx``/``dy`` are the correction (pixels, right and down positive) at every pixel, as arrays
    of ``truth``'s shape or constants; cubic-spline interpolation.
    """
    rows, cols = np.mgrid[0:truth.shape[0], 0:truth.shape[1]].astype(float)
    return ndimage.map_coordinates(truth.astype(np.float64), [rows + dy, cols + dx], order=3, mode="nearest")
