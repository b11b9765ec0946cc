"""Resampling through a local model (:mod:`coreg_plugin.correction.local_field`), or onto a grid in
another CRS, with GDAL's warper, tile by tile.

A local field is smooth over hundreds of pixels, and so is the map between two CRSs, so over a small
enough part of the output grid either is an affine map to within a hundredth of a pixel (GDAL's own
reprojection interpolates the coordinate transformation instead, and places content up to 0.09 px
off). For an output grid (a block), the moving pixel position each output pixel's content comes
from is computed exactly on a lattice every :data:`LATTICE_PX` output pixels (output grid -> map ->
moving pixels where the content truly lies -> inverse of the local model; without a field, output
grid -> map -> PROJ -> the source's corrected pixels). The grid is then split into tiles, quarter by
quarter, until an affine map fitted to a tile's lattice positions is within :data:`TOLERANCE_PX` of every one of them
(or the tile is :data:`MIN_TILE_PX` wide), and each tile goes through GDAL's warper
(:func:`coreg_plugin.io.warp.read_warped_tiles`) with that affine map as the source's geotransform: the same warp
as an affine correction, with every resampling method (``mode`` keeps class values, ``average``
averages the footprint, ...) and GDAL's nodata-aware weighting next to holes.

Cost: one GDAL call per tile. A smooth field whose local part is flat over a block takes one tile;
the strongly bent field of ``tests/core/test_local_model.py`` (0.85 px RMS, up to 2 px, changing
over a few hundred pixels) needs 32 px tiles throughout, about 3 s per million output pixels on
one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform as transform_coords

from ..common.affines import apply, compose
from ..io.raster_source import Grid, RasterSource
from ..io.warp import read_warped_tiles

if TYPE_CHECKING:  # a field comes with a registration or a correction file, which load it
    from ..correction.local_field import LocalField

#: Output pixels between the lattice nodes where source positions are computed exactly.
LATTICE_PX = 16
#: Largest distance (source px) between a tile's affine map and the exact positions at its nodes.
TOLERANCE_PX = 0.01
#: Tiles are not split below this side (output px); the field would have to bend by more than
#: :data:`TOLERANCE_PX` within 32 px, far beyond what tie points hundreds of pixels apart can show.
MIN_TILE_PX = 32


def _to_crs(src_crs: CRS, dst_crs: CRS, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if src_crs == dst_crs:
        return xs, ys
    xs, ys = transform_coords(src_crs, dst_crs, xs, ys)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


@dataclass
class Lattice:
    """Exact positions on a grid's lattice nodes.

    ``cols``/``rows``: the nodes' output pixel indices (1-D, centres at index + 0.5); ``map_xy``
    (rows, cols, 2): each node's centre in map coordinates of the output grid's CRS; ``source_xy``
    (rows, cols, 2): the source pixel position (columns, rows; pixel corners at integers) whose
    content belongs there. Non-finite where a CRS transformation has no answer.
    """

    cols: np.ndarray
    rows: np.ndarray
    map_xy: np.ndarray
    source_xy: np.ndarray


def lattice(field: LocalField | None, frame: tuple[Affine, CRS], source: Grid, grid: Grid) -> Lattice:
    """The exact source positions of ``grid``'s pixel centres every :data:`LATTICE_PX` pixels
    (and on its last row and column), by PROJ where the CRSs differ: through ``field`` in ``frame``
    (the transform from the field's frame to map coordinates and their CRS: the moving grid's
    geotransform for a registration's field, the identity for a correction file's); without a
    field, ``frame`` is the source's (corrected) geotransform and CRS."""
    frame_transform, frame_crs = frame
    cols = np.unique(np.append(np.arange(0, grid.width, LATTICE_PX), grid.width - 1))
    rows = np.unique(np.append(np.arange(0, grid.height, LATTICE_PX), grid.height - 1))
    gx, gy = np.meshgrid(cols + 0.5, rows + 0.5)
    xs, ys = apply(grid.transform, gx.ravel(), gy.ravel())
    fx, fy = _to_crs(grid.crs, frame_crs, xs, ys)
    if field is None:
        px, py = apply(~frame_transform, fx, fy)
    else:
        apparent = field.inverse(np.column_stack(apply(~frame_transform, fx, fy)))
        sx, sy = _to_crs(frame_crs, source.crs, *apply(frame_transform, apparent[:, 0], apparent[:, 1]))
        px, py = apply(~source.transform, sx, sy)
    shape = (len(rows), len(cols), 2)
    return Lattice(cols, rows, np.stack([xs, ys], axis=-1).reshape(shape), np.stack([px, py], axis=-1).reshape(shape))


def fit_tile(nodes: Lattice, col0: int, row0: int, col1: int, row1: int) -> tuple[Affine, float] | None:
    """The affine map (map coordinates of the output grid's CRS -> source pixels) that best fits the
    nodes of the tile of output pixels [col0, col1) x [row0, row1) and those on its far edges, and
    its largest distance to them (source px); None when fewer than three nodes are finite."""
    ci = np.flatnonzero((nodes.cols >= col0) & (nodes.cols <= col1))
    ri = np.flatnonzero((nodes.rows >= row0) & (nodes.rows <= row1))
    map_xy = nodes.map_xy[np.ix_(ri, ci)].reshape(-1, 2)
    source_xy = nodes.source_xy[np.ix_(ri, ci)].reshape(-1, 2)
    ok = np.isfinite(map_xy).all(axis=1) & np.isfinite(source_xy).all(axis=1)
    if ok.sum() < 3:
        return None
    centre = map_xy[ok].mean(axis=0)
    design = np.column_stack([map_xy[ok] - centre, np.ones(int(ok.sum()))])
    coefficients, *_ = np.linalg.lstsq(design, source_xy[ok], rcond=None)
    deviation = float(np.max(np.hypot(*(design @ coefficients - source_xy[ok]).T)))
    (a, d), (b, e), (c, f) = coefficients
    to_source = compose(Affine(a, b, c, d, e, f), Affine.translation(-centre[0], -centre[1]))
    return to_source, deviation


def tiles(nodes: Lattice, width: int, height: int) -> list[tuple[tuple[int, int, int, int], Affine]]:
    """The tiles (col0, row0, col1, row1) of a ``width`` x ``height`` grid, each with the affine map
    (map -> source pixels) that is within :data:`TOLERANCE_PX` of its nodes, or that of a tile
    :data:`MIN_TILE_PX` wide; tiles without three finite nodes are left out (no data there)."""
    done: list[tuple[tuple[int, int, int, int], Affine]] = []
    pending = [(0, 0, width, height)]
    while pending:
        box = pending.pop()
        c0, r0, c1, r1 = box
        fitted = fit_tile(nodes, c0, r0, min(c1, width - 1), min(r1, height - 1))
        if fitted is None:
            continue
        to_source, deviation = fitted
        wide, tall = c1 - c0 > MIN_TILE_PX, r1 - r0 > MIN_TILE_PX
        if deviation <= TOLERANCE_PX or not (wide or tall):
            done.append((box, to_source))
            continue
        cm = c0 + _half(c1 - c0) if wide else c1
        rm = r0 + _half(r1 - r0) if tall else r1
        pending.extend(b for b in [(c0, r0, cm, rm), (cm, r0, c1, rm), (c0, rm, cm, r1), (cm, rm, c1, r1)]
                       if b[2] > b[0] and b[3] > b[1])
    return done


def _half(size: int) -> int:
    """Half of ``size`` rounded to whole lattice steps, so the nodes fall on tile edges."""
    return max(LATTICE_PX, size // 2 // LATTICE_PX * LATTICE_PX)


def read_local(
    source: RasterSource, bands: list[int], field: LocalField | None, frame: tuple[Affine, CRS], grid: Grid,
    resampling: Resampling,
) -> np.ndarray:
    """``bands`` of ``source`` corrected by ``field`` (in ``frame``, see :func:`lattice`; without a
    field, placed by ``frame``, its corrected geotransform and CRS) and resampled onto ``grid`` by
    GDAL's warper, one tile at a time (see the module's docstring), each an affine warp in ``grid``'s
    CRS. Returns float data of shape (len(bands), grid.height, grid.width); NaN = no data."""
    nodes = lattice(field, frame, source.grid, grid)
    parts = [(box, ~to_source) for box, to_source in tiles(nodes, grid.width, grid.height)]
    return read_warped_tiles(source, bands, grid, resampling, parts, src_crs=grid.crs)
