"""The correction as a file: a model in map coordinates of a named CRS, saved as versioned JSON.

Align estimates ``h`` (3x3) on the moving raster's pixel grid: moving pixel position -> pixel
position where its content truly lies (see :mod:`coreg_plugin.geometry`). Expressed in map
coordinates of the moving raster's CRS it becomes ``matrix = T_m . h . T_m^-1``: an *apparent*
map position (where a raster of the scene shows something) -> the *true* map position (where the
reference shows it). Because it lives in map coordinates, the same correction applies to every
raster of the scene, at any resolution and in any CRS (see :mod:`coreg_plugin.apply`).

The file (schema ``coreg-correction``, version 1; docs/correction-schema.md) holds the model, the
CRS (WKT), the domain where it was estimated (the overlap's footprint, a polygon in that CRS),
the quality figures, the tie points used and the producing version.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from ..common.errors import InputError
from .local_field import LocalField

SCHEMA = "coreg-correction"
VERSION = 1
MODEL_TYPES = ("translation", "affine", "local")
#: Decimals of the local grid's displacements in the file (map units: 0.01 mm in metres).
LOCAL_DECIMALS = 5


@dataclass
class Correction:
    """A correction in map coordinates of ``crs``.

    ``matrix`` (3x3) maps an apparent map position (x, y, 1) to the true map position; for a
    ``translation`` its linear part is exactly the identity. ``domain`` is the ring (n, 2) of the
    polygon, in ``crs``, where the correction was estimated. ``tie_points`` are the tie points used,
    each a dict with apparent (``x``, ``y``) and true (``true_x``, ``true_y``) map positions,
    ``reliability`` and ``residual_px``.
    """

    model: str
    matrix: np.ndarray
    crs: CRS
    domain: np.ndarray
    quality: dict[str, Any] = field(default_factory=dict)
    tie_points: list[dict[str, float]] = field(default_factory=list)
    estimated_from: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    #: The local model's field in map coordinates of ``crs`` (``matrix`` is its global part).
    local: LocalField | None = None

    @property
    def affine(self) -> Affine:
        """``matrix`` as an ``Affine`` (apparent map position -> true map position)."""
        return Affine(*self.matrix[:2].ravel())

    @property
    def is_translation(self) -> bool:
        """Whether the model only moves (its linear part is the identity)."""
        return self.model == "translation"

    def describe(self) -> str:
        """A short description for messages, e.g. ``affine (rotation 0.31 deg, scale 1.002 x 0.998)``."""
        a, b, d, e = self.matrix[0, 0], self.matrix[0, 1], self.matrix[1, 0], self.matrix[1, 1]
        if self.is_translation:
            return f"translation ({self.matrix[0, 2]:+.4g}, {self.matrix[1, 2]:+.4g} map units)"
        rotation = math.degrees(math.atan2(d - b, a + e))
        return f"{self.model} (rotation {rotation:.3g} deg, scale {math.hypot(a, d):.5g} x {math.hypot(b, e):.5g})"


def from_registration(
    h: np.ndarray, model: str, moving_transform: Affine, crs: CRS, overlap_px: tuple[float, float, float, float],
    *, quality: dict[str, Any], tie_points_px: list[tuple[float, float, float, float, float, float]],
    estimated_from: dict[str, Any], local: LocalField | None = None,
) -> Correction:
    """The map-coordinate correction of a registration on a moving grid with ``moving_transform``.

    ``model`` is the registration's (``identity``, for a pair already aligned, is saved as a
    translation by nothing).

    ``overlap_px`` (col0, row0, col1, row1, moving pixels) becomes the domain; ``tie_points_px``
    are (x, y, dx, dy, reliability, residual_px) in moving pixels. ``local``: the local model's
    field in moving pixels (``h`` is its global part), saved in map coordinates.
    """
    from .. import __version__

    t = np.array([[moving_transform.a, moving_transform.b, moving_transform.c],
                  [moving_transform.d, moving_transform.e, moving_transform.f], [0.0, 0.0, 1.0]])
    if model == "identity":  # already aligned: a translation by nothing
        model = "translation"
    if model == "translation":
        matrix = np.eye(3)
        matrix[:2, 2] = t[:2, :2] @ h[:2, 2]
    else:
        matrix = t @ h @ np.linalg.inv(t)
        matrix[2] = (0.0, 0.0, 1.0)
    c0, r0, c1, r1 = overlap_px
    cols, rows = np.array([c0, c1, c1, c0, c0]), np.array([r0, r0, r1, r1, r0])
    ring = (t @ np.vstack([cols, rows, np.ones(5)]))[:2].T
    points = []
    for x, y, dx, dy, reliability, residual in tie_points_px:
        ax, ay = (t @ [x, y, 1.0])[:2]
        tx, ty = (t @ [x + dx, y + dy, 1.0])[:2]
        points.append({"x": float(ax), "y": float(ay), "true_x": float(tx), "true_y": float(ty),
                       "reliability": float(reliability), "residual_px": float(residual)})
    return Correction(model, matrix, crs, ring, quality, points, estimated_from,
                      {"name": "coreg", "version": __version__},
                      None if local is None else local.in_frame(moving_transform))


def to_dict(correction: Correction) -> dict[str, Any]:
    """The JSON document of ``correction`` (schema ``coreg-correction``, version 1)."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "producer": correction.producer,
        "model": {"type": correction.model, "matrix": [[float(v) for v in row] for row in correction.matrix[:2]],
                  **_local_grid(correction.local)},
        "crs": {"wkt": correction.crs.to_wkt()},
        "domain": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in correction.domain]]},
        "quality": correction.quality,
        "estimated_from": correction.estimated_from,
        "tie_points": correction.tie_points,
    }


def _local_grid(local: LocalField | None) -> dict[str, Any]:
    """The ``local_grid`` entry of a local model (nothing for other models)."""
    if local is None:
        return {}
    return {"local_grid": {"transform": [float(v) for v in local.nodes.to_gdal()],
                           "dx": np.round(local.dx, LOCAL_DECIMALS).tolist(),
                           "dy": np.round(local.dy, LOCAL_DECIMALS).tolist()}}


def _read_local_grid(model: dict[str, Any], matrix: np.ndarray) -> LocalField | None:
    """The local field of a ``local`` model entry (None for other models)."""
    if model["type"] != "local":
        return None
    grid = model["local_grid"]
    dx, dy = np.asarray(grid["dx"], dtype=float), np.asarray(grid["dy"], dtype=float)
    finite = np.isfinite(dx).all() and np.isfinite(dy).all()
    if dx.ndim != 2 or dx.shape != dy.shape or min(dx.shape) < 2 or not finite:
        raise ValueError("model.local_grid.dx and dy must be two tables of the same shape of finite numbers")
    nodes = Affine.from_gdal(*(float(v) for v in grid["transform"]))
    if abs(nodes.determinant) == 0 or not all(math.isfinite(v) for v in nodes):
        raise ValueError("model.local_grid.transform must be an invertible geotransform")
    return LocalField(matrix, nodes, dx, dy)


def write_text_file(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) at ``path`` through a temporary file in the same folder, renamed when
    complete; the file gets the usual mode (0666 less the umask). Returns the path."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_correction(correction: Correction, path: str | os.PathLike) -> str:
    """Write ``correction`` as JSON at ``path`` (through a temporary file renamed when complete)."""
    return write_text_file(path, json.dumps(to_dict(correction), indent=1, allow_nan=False, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def read_correction(path: str | os.PathLike) -> Correction:
    """Read a correction file; raise ``InputError`` naming the file when it is missing, damaged, of
    an unknown schema version or not a correction."""
    path = os.fspath(path)
    what = f"correction file '{path}'"
    if not os.path.isfile(path):
        raise InputError(f"{what} does not exist" if not os.path.exists(path) else f"{what} is not a file")
    try:
        with open(path, encoding="utf-8") as source:
            document = json.load(source)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is damaged: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InputError(f"{what} is not a Coreg correction (it has no \"schema\": \"{SCHEMA}\")")
    version = document.get("version")
    if version != VERSION:
        raise InputError(f"{what} has schema version {version!r}; this Coreg reads version {VERSION}: "
                         "write it again with this version of Coreg")
    try:
        return _from_dict(document)
    except KeyError as exc:
        raise InputError(f"{what} is damaged: it lacks {exc}") from None
    except (TypeError, ValueError, IndexError, CRSError) as exc:
        raise InputError(f"{what} is damaged: {exc}") from None


def _from_dict(document: dict[str, Any]) -> Correction:
    model = document["model"]["type"]
    if model not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model!r} (known: {', '.join(MODEL_TYPES)})")
    rows = np.asarray(document["model"]["matrix"], dtype=float)
    if rows.shape != (2, 3) or not np.isfinite(rows).all():
        raise ValueError("model.matrix must be 2 rows of 3 finite numbers")
    matrix = np.vstack([rows, [0.0, 0.0, 1.0]])
    if model == "translation" and not np.array_equal(matrix[:2, :2], np.eye(2)):
        raise ValueError("a translation's matrix must have the identity as its linear part")
    if abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise ValueError("model.matrix is singular")
    ring = np.asarray(document["domain"]["coordinates"][0], dtype=float)
    if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 4 or not np.isfinite(ring).all():
        raise ValueError("domain.coordinates must hold one ring of at least 4 (x, y) points")
    crs = CRS.from_wkt(document["crs"]["wkt"])
    return Correction(model, matrix, crs, ring, dict(document.get("quality") or {}),
                      list(document.get("tie_points") or []), dict(document.get("estimated_from") or {}),
                      dict(document.get("producer") or {}), _read_local_grid(document["model"], matrix))
