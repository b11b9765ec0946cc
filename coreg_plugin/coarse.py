"""The coarse stage: one match of the whole overlap at reduced resolution.

It finds large offsets (up to about a quarter of the overlap) before the tie-point windows are
placed, checks that both images have valid, textured data in the overlap, and provides the
overview proxies written for diagnosis.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from skimage.transform import AffineTransform, warp

from .affines import compose
from .correlation import Prepared, match, prepare
from .errors import InputError, RegistrationError
from .raster_source import Grid, RasterSource
from .warp import read_warped

#: Longest side of the coarse overlap image, in pixels.
MAX_SIDE = 1024
#: Below this reliability the coarse offset is not trusted and the tie points start from zero.
MIN_RELIABILITY = 0.1
#: Relative spread below which an image is constant (no texture).
CONSTANT_EPS = 1e-9


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
    """The reduced grid over ``box`` (moving pixels) and its reduction factor."""
    c0, r0, c1, r1 = box
    factor = max(1, math.ceil(max(c1 - c0, r1 - r0) / max_side))
    transform = compose(moving.transform, Affine.translation(c0, r0), Affine.scale(factor))
    width, height = math.ceil((c1 - c0) / factor), math.ceil((r1 - r0) / factor)
    return Grid(moving.crs, transform, width, height), factor


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


def _read_coarse(source: RasterSource, band: int, grid: Grid) -> np.ndarray:
    """``band`` of ``source`` averaged onto ``grid``, read through a handle of this thread's own."""
    with source.reopen() as own:
        return read_warped(own, [band], grid, Resampling.average)[0]


def coarse_match(
    moving: RasterSource,
    fixed: RasterSource,
    moving_band: int,
    fixed_band: int,
    box: tuple[int, int, int, int],
    use_edge_proxy: bool,
) -> CoarseMatch:
    """Match the whole overlap ``box`` (moving pixels) at reduced resolution."""
    grid, factor = coarse_grid(moving.grid, box)
    with ThreadPoolExecutor(2, thread_name_prefix="coreg-coarse") as pool:  # a handle per thread
        futures = [pool.submit(_read_coarse, source, band, grid) for source, band in
                   ((moving, moving_band), (fixed, fixed_band))]
        mov, fix = (future.result() for future in futures)
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
