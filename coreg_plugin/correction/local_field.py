"""The local model's field: a smooth displacement on top of the global affine correction.

The correction of a position ``p`` is ``A(p) + r(p)``: the global affine ``A`` (3x3, as everywhere
in Coreg, apparent position -> where the content truly lies) plus a local part ``r`` (x right, y
down in pixel frames). ``r`` is sampled on a regular grid of nodes and interpolated between them with
cubic splines, so evaluating it costs the same whatever the number of tie points it was fitted to
(:mod:`coreg_plugin.estimate.local_fit` fits it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy import ndimage

from ..common.affines import apply, apply_matrix, compose


@dataclass
class LocalField:
    """Global affine ``h`` (3x3) plus the local field sampled on a regular grid of nodes.

    Positions are in one *frame*: moving pixels for a registration, map coordinates of the
    correction's CRS in a correction file. ``nodes`` maps a node index (column, row) to its position
    in the frame; ``dx``/``dy`` (rows = node rows) are the local part of the correction there, in
    frame units.
    """

    h: np.ndarray
    nodes: Affine
    dx: np.ndarray
    dy: np.ndarray

    @property
    def step(self) -> float:
        """Node spacing along the frame's first axis (px in the pixel frame)."""
        return float(abs(self.nodes.a))

    def local_at(self, points: np.ndarray) -> np.ndarray:
        """The local part (n, 2) of the correction at (n, 2) positions of the frame."""
        cols, rows = apply(~self.nodes, points[:, 0], points[:, 1])
        return np.column_stack([ndimage.map_coordinates(c, [rows, cols], order=3, mode="nearest")
                                for c in (self.dx, self.dy)])

    def in_frame(self, transform: Affine) -> LocalField:
        """This field re-expressed in the frame ``transform`` maps the current frame into (e.g. a
        moving grid's geotransform: pixel frame -> map frame)."""
        t = np.array([[transform.a, transform.b, transform.c], [transform.d, transform.e, transform.f], [0, 0, 1]])
        h = t @ self.h @ np.linalg.inv(t)
        linear = t[:2, :2]
        dx = linear[0, 0] * self.dx + linear[0, 1] * self.dy
        dy = linear[1, 0] * self.dx + linear[1, 1] * self.dy
        return LocalField(h, compose(transform, self.nodes), dx, dy)

    def correct(self, points: np.ndarray) -> np.ndarray:
        """Where the content of (n, 2) moving pixel positions truly lies (px, moving grid)."""
        return apply_matrix(self.h, points) + self.local_at(points)

    def inverse(self, targets: np.ndarray, iterations: int = 6) -> np.ndarray:
        """The moving pixel positions whose content truly lies at (n, 2) ``targets`` (fixed-point
        iteration; the field is smooth and much smaller than its scale, so it contracts fast)."""
        a_inv = np.linalg.inv(self.h)
        points = apply_matrix(a_inv, targets)
        for _ in range(iterations):
            points = apply_matrix(a_inv, targets - self.local_at(points))
        return points

    @property
    def max_local_px(self) -> float:
        """Largest length of the local part at the nodes (px)."""
        return float(np.max(np.hypot(self.dx, self.dy))) if self.dx.size else 0.0
