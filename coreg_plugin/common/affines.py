"""Composing and applying ``Affine`` transforms on every supported ``affine`` release.

affine 3 spells composition and application ``@`` and deprecates ``*``; affine 2.4 (Debian 12,
the Python QGIS 3.22 runs) has only ``*``. These two helpers pick whichever the installed one has.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np
from affine import Affine

_HAS_MATMUL = hasattr(Affine, "__matmul__")


def compose(*transforms: Affine) -> Affine:
    """``transforms[0]`` after ``transforms[1]`` after ...: the right-most one applies first."""
    if _HAS_MATMUL:
        return reduce(lambda a, b: a @ b, transforms)
    return reduce(lambda a, b: a * b, transforms)


def apply(transform: Affine, xs: Any, ys: Any) -> tuple[Any, Any]:
    """Apply ``transform`` to coordinates (scalars or arrays); returns (x, y)."""
    return transform @ (xs, ys) if _HAS_MATMUL else transform * (xs, ys)


def apply_matrix(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 affine matrix ``h`` to (n, 2) points (x, y)."""
    return points @ h[:2, :2].T + h[:2, 2]
