"""Run Align Image Pair on real pairs as they are and with either raster moved to another grid or CRS.

Run from the repository root: ``.venv-core/bin/python tools/verdict_consistency.py [--json PATH]``.
It prints a Markdown table; ``--json`` also writes its rows as JSON.

The same pair should get the same verdict, and the same correction on the ground within the bounds,
whichever grid or CRS either raster is on. Every pair runs through
``coreg_plugin.align_image_pair(moving, fixed, output)`` with the defaults of the command line (band 1
of each, output on the moving grid) in five variants:

- **(a) as is**;
- **(b) moving in EPSG:3857**, resampled exactly at the same ground resolution (map pixel = the
  source pixel's extent in EPSG:3857 at the raster's centre);
- **(c) moving 2x coarser**: exact 2 x 2 block means of whole pixels;
- **(d) fixed 3x coarser**: exact 3 x 3 block means of whole pixels;
- **(e) fixed in EPSG:4326**, resampled exactly at the same ground resolution in each direction
  (degrees of longitude and latitude per pixel = one source pixel's extent east and north at the
  raster's centre: square on the ground, not in degrees).

"Exactly" keeps GDAL out of the geometry, whose warper displaces content by up to 0.07 px when
reprojecting (``tools/real_pairs_table.py``): every target pixel centre's source position comes from
PROJ (``rasterio.warp.transform``, every pixel) and is sampled by a quintic spline
(``scipy.ndimage.map_coordinates``, order 5), as ``exact_web_mercator`` there does. Variants are
written as float32 with NaN as nodata; a source pixel is invalid when it is 0, its file's nodata or
not finite; a block mean with any invalid pixel, or a resampled pixel whose spline reaches within two
pixels of an invalid one or outside the source, is NaN.

The pairs, from ``../shared/data`` (moving first, fixed second):

- **s2-inter1** target vs reference, both cut to the same 1400 x 1400 px block as in
  ``tools/real_pairs_table.py``: a real misregistration; AROSICS 1.13.2 corrects it by
  x = -0.64 to -0.71 px, y = +1.78 to +1.80 px, that is about -6.4 to -7.1 m east, -17.8 to -18.0 m north.
- **everest** band 4 (NIR) vs the RGB file's band 1 (red), the same scene: truth 0.
- **svalbard**: the hillshade with its content moved by x = +0.3 px, y = -0.2 px (right and up; exact
  quintic-spline shift, float32) vs the hillshade itself: truth -6.0 m east, -4.0 m north.

Columns: the correction is the estimated one (``registration.decision.estimated_h``, applied or not)
at one place on the ground for all variants: the overlap centre of the *as is* run. It is the
displacement in metres, east and north in the CRS of the *as is* moving raster (UTM for all three
pairs), of that point's content: PROJ takes the point into the variant's moving pixels and its
corrected position back, so map scale and grid convergence (Web Mercator) are accounted for. On the
moving raster's own grid this is ``shift_m`` of a corrected run and ``estimated_shift_px`` through
the geotransform (x right, y down to east, north) of an already aligned one. The bound is
``uncertainty_px.max`` times the moving pixel's ground size at that point (the square root of its
area in the *as is* CRS: for EPSG:3857 the map pixel times about cos(latitude)). *Agrees* compares
the distance between the variant's correction and the *as is* one with the two bounds combined,
sqrt(b1^2 + b2^2), and says whether the verdict is the same; *s* is Align Image Pair's wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rasterio.warp import calculate_default_transform  # noqa: E402
from rasterio.warp import transform as transform_points  # noqa: E402
from scipy import ndimage  # noqa: E402

from coreg_plugin import CoregError, align_image_pair  # noqa: E402
from tools.independent_evaluator import apply, compose  # noqa: E402
from tools.real_pairs_table import EVEREST, EVEREST_RGB, SVALBARD, _s2_pair  # noqa: E402

WEB_MERCATOR = CRS.from_epsg(3857)
WGS84 = CRS.from_epsg(4326)
#: Content shift (x right, y down; px) of the Svalbard hillshade's moving copy.
SVALBARD_SHIFT = (0.3, -0.2)


def _read(source: Path, band: int = 1) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Band ``band`` of ``source`` as float64, its validity (not 0, not nodata, finite) and its grid."""
    with rasterio.open(source) as ds:
        data = ds.read(band).astype(np.float64)
        valid = np.isfinite(data) & (data != 0)
        if ds.nodata is not None and not math.isnan(ds.nodata):
            valid &= data != ds.nodata
        grid = {"transform": ds.transform, "crs": ds.crs, "width": ds.width, "height": ds.height}
    return data, valid, grid


def _write(out: Path, values: np.ndarray, transform: Affine, crs: CRS) -> Path:
    """``values`` as a float32 GeoTIFF with NaN as nodata."""
    height, width = values.shape
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32", crs=crs,
                       transform=transform, nodata=float("nan"), compress="deflate") as dst:
        dst.write(values.astype(np.float32), 1)
    return out


def _filled(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``data`` with every invalid pixel set to its nearest valid neighbour's value (so that a spline's
    prefilter does not ring on nodata)."""
    if valid.all():
        return data
    _, (rows, cols) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return data[rows, cols]


def _sample(data: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``data`` at (``rows``, ``cols``) (pixel centres at integers) by a quintic spline; NaN where the
    spline reaches within two pixels of an invalid pixel or falls outside the image."""
    values = ndimage.map_coordinates(_filled(data, valid), [rows, cols], order=5, mode="nearest")
    near_invalid = ndimage.binary_dilation(~valid, iterations=2).astype(np.float64)
    bad = ndimage.map_coordinates(near_invalid, [rows, cols], order=1, mode="constant", cval=1.0) > 0
    values[bad] = np.nan
    return values


def block_mean(source: Path, factor: int, out: Path, band: int = 1) -> Path:
    """Band ``band`` of ``source`` as exact means of ``factor`` x ``factor`` blocks of whole pixels on
    a grid with the same origin (NaN where a block holds an invalid pixel)."""
    data, valid, grid = _read(source, band)
    height, width = grid["height"] // factor, grid["width"] // factor
    blocks = (height, factor, width, factor)
    data = data[:height * factor, :width * factor].reshape(blocks)
    valid = valid[:height * factor, :width * factor].reshape(blocks)
    means = data.mean(axis=(1, 3))
    means[~valid.all(axis=(1, 3))] = np.nan
    return _write(out, means, compose(grid["transform"], Affine.scale(factor)), grid["crs"])


def exact_shift(source: Path, shift: tuple[float, float], out: Path, band: int = 1) -> Path:
    """Band ``band`` of ``source`` with its content moved by ``shift`` (x right, y down; px) on the same
    grid, by a quintic spline."""
    data, valid, grid = _read(source, band)
    rows, cols = np.mgrid[0:grid["height"], 0:grid["width"]].astype(np.float64)
    values = _sample(data, valid, rows - shift[1], cols - shift[0])
    return _write(out, values, grid["transform"], grid["crs"])


def ground_resolution(grid: dict[str, Any], crs: CRS) -> tuple[float, float]:
    """The extent in ``crs`` units, along its x and y axes, of one pixel step east and one north of
    ``grid`` at its centre."""
    cx, cy = grid["width"] / 2, grid["height"] / 2
    t = grid["transform"]
    xs, ys = apply(t, [cx, cx + 1, cx], [cy, cy, cy + 1])
    xs, ys = (np.asarray(v) for v in transform_points(grid["crs"], crs, list(xs), list(ys)))
    east = math.hypot(xs[1] - xs[0], ys[1] - ys[0])
    north = math.hypot(xs[2] - xs[0], ys[2] - ys[0])
    return east, north


def exact_reproject(source: Path, crs: CRS, out: Path, band: int = 1) -> Path:
    """Band ``band`` of ``source`` resampled exactly into ``crs`` at the same ground resolution
    (:func:`ground_resolution`): PROJ for every target pixel centre, quintic spline."""
    data, valid, grid = _read(source, band)
    with rasterio.open(source) as ds:
        bounds = ds.bounds
    resolution = ground_resolution(grid, crs)
    transform, width, height = calculate_default_transform(grid["crs"], crs, grid["width"], grid["height"],
                                                           *bounds, resolution=resolution)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    xs, ys = apply(transform, cols.ravel() + 0.5, rows.ravel() + 0.5)
    xs, ys = transform_points(crs, grid["crs"], xs, ys)
    c, r = apply(~grid["transform"], xs, ys)
    r, c = (np.asarray(v).reshape(height, width) - 0.5 for v in (r, c))
    return _write(out, _sample(data, valid, r, c), transform, crs)


@dataclass
class Pair:
    """A pair of the table: its name, the truth in words, and how to get (moving, fixed) into a folder."""

    name: str
    truth: str
    make: Callable[[Path], tuple[Path, Path]]


def _everest(_tmp: Path) -> tuple[Path, Path]:
    return EVEREST / "LE71400412000304SGS00_B4_crop.TIF", EVEREST_RGB


def _svalbard(tmp: Path) -> tuple[Path, Path]:
    return exact_shift(SVALBARD, SVALBARD_SHIFT, tmp / "svalbard_shifted.tif"), SVALBARD


PAIRS = [
    Pair("s2-inter1 tgt vs ref (1400 px blocks)", "AROSICS about -6.4..-7.1, -17.8..-18.0", _s2_pair),
    Pair("everest B4 vs RGB band 1", "0, 0", _everest),
    Pair("svalbard hillshade shifted (+0.3, -0.2) px vs itself", "-6.0, -4.0", _svalbard),
]


@dataclass
class Variant:
    """A way to move one raster of the pair: its name and how to make (moving, fixed) from the pair's."""

    name: str
    make: Callable[[Path, Path, Path], tuple[Path, Path]]


VARIANTS = [
    Variant("(a) as is", lambda m, f, _d: (m, f)),
    Variant("(b) moving in EPSG:3857", lambda m, f, d: (exact_reproject(m, WEB_MERCATOR, d / "moving_3857.tif"), f)),
    Variant("(c) moving 2x coarser", lambda m, f, d: (block_mean(m, 2, d / "moving_2x.tif"), f)),
    Variant("(d) fixed 3x coarser", lambda m, f, d: (m, block_mean(f, 3, d / "fixed_3x.tif"))),
    Variant("(e) fixed in EPSG:4326", lambda m, f, d: (m, exact_reproject(f, WGS84, d / "fixed_4326.tif"))),
]


def correction_m(moving: Path, h: np.ndarray, point: tuple[float, float], crs: CRS) -> tuple[np.ndarray, float]:
    """The correction ``h`` (moving px) at ``point`` (map coordinates in ``crs``) as a displacement in
    ``crs`` units (x east, y north), and the moving pixel's side there in ``crs`` units."""
    with rasterio.open(moving) as ds:
        t, moving_crs = ds.transform, ds.crs
    xs, ys = transform_points(crs, moving_crs, [point[0]], [point[1]])
    col, row = apply(~t, xs[0], ys[0])
    corrected = h[:2, :2] @ [col, row] + h[:2, 2]
    cols = [corrected[0], col + 1, col]
    rows = [corrected[1], row, row + 1]
    xs, ys = apply(t, cols, rows)
    xs, ys = (np.asarray(v) for v in transform_points(moving_crs, crs, list(xs), list(ys)))
    shift = np.array([xs[0] - point[0], ys[0] - point[1]])
    jacobian = np.array([[xs[1] - point[0], xs[2] - point[0]], [ys[1] - point[1], ys[2] - point[1]]])
    return shift, math.sqrt(abs(np.linalg.det(jacobian)))


def overlap_centre(moving: Path, summary: dict[str, Any]) -> tuple[float, float]:
    """The overlap centre of a run in map coordinates of its moving raster's CRS."""
    with rasterio.open(moving) as ds:
        x, y = apply(ds.transform, summary["overlap_centre_px"]["x"], summary["overlap_centre_px"]["y"])
    return float(x), float(y)


def run(moving: Path, fixed: Path, out: Path, point: tuple[float, float] | None, crs: CRS | None) -> dict[str, Any]:
    """One Align Image Pair run: verdict, model and the estimated correction at ``point`` (map
    coordinates in ``crs``; the run's own overlap centre and moving CRS when None) in metres, with its
    95 % bound in metres."""
    started = time.perf_counter()
    try:
        result = align_image_pair(moving, fixed, out)
    except CoregError as exc:
        message = str(exc).replace(f"'{moving}'", f"'{moving.name}'").replace(f"'{fixed}'", f"'{fixed.name}'")
        return {"seconds": time.perf_counter() - started, "refused": f"{type(exc).__name__}: {message}"}
    seconds = time.perf_counter() - started
    summary, reg = result.summary, result.registration
    if point is None:
        point = overlap_centre(moving, summary)
        with rasterio.open(moving) as ds:
            crs = ds.crs
    h = reg.decision.estimated_h if reg.decision is not None else reg.h
    shift, pixel = correction_m(moving, h, point, crs)
    bound_px = (summary.get("uncertainty_px") or {}).get("max")
    return {"seconds": seconds, "verdict": summary["verdict"], "model": summary["model"],
            "estimated_shift_px": summary.get("estimated_shift_px"), "shift_m_summary": summary["shift_m"],
            "bound_px": bound_px, "pixel_m": pixel, "correction_m": shift.tolist(),
            "bound_m": None if bound_px is None else bound_px * pixel, "point": list(point), "crs": str(crs),
            "tie_points": summary["tie_points"]}


def agreement(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Whether ``row`` gives the verdict of ``reference`` and a correction within their combined bounds."""
    if "refused" in row or "refused" in reference:
        return {"same_verdict": "refused" in row and "refused" in reference}
    distance = float(np.hypot(*np.subtract(row["correction_m"], reference["correction_m"])))
    found = {"same_verdict": row["verdict"] == reference["verdict"], "distance_m": distance}
    if row["bound_m"] is not None and reference["bound_m"] is not None:
        found["combined_bound_m"] = math.hypot(row["bound_m"], reference["bound_m"])
        found["within"] = distance <= found["combined_bound_m"]
    return found


def run_pair(pair: Pair, tmp: Path, variants: list[Variant] = VARIANTS) -> list[dict[str, Any]]:
    """The rows of one pair: the first variant (as is) sets the place and the CRS of the others'
    corrections and the reference they are compared with."""
    folder = tmp / pair.name.replace(" ", "_").replace("/", "_")
    folder.mkdir()
    moving, fixed = pair.make(folder)
    rows: list[dict[str, Any]] = []
    point = crs = None
    for variant in variants:
        sub = folder / variant.name.split(")")[0].strip("(")
        sub.mkdir()
        made = time.perf_counter()
        m, f = variant.make(moving, fixed, sub)
        row = {"pair": pair.name, "truth_m": pair.truth, "variant": variant.name, "moving": m.name, "fixed": f.name,
               "made_s": time.perf_counter() - made, **run(m, f, sub / "out.tif", point, crs)}
        if not rows:
            if "refused" in row:
                return [row]
            point, crs = tuple(row["point"]), CRS.from_string(row["crs"])
        else:
            row["agrees"] = agreement(row, rows[0])
        rows.append(row)
    return rows


def _agrees(row: dict[str, Any]) -> str:
    if "agrees" not in row:
        return "(reference)"
    found = row["agrees"]
    verdict = "same verdict" if found["same_verdict"] else "**other verdict**"
    if "distance_m" not in found:
        return verdict
    if "within" not in found:
        return f"{verdict}; {found['distance_m']:.2f} m, bound unknown"
    word = "yes" if found["within"] and found["same_verdict"] else "**no**"
    sign = "<=" if found["within"] else "**>**"
    return f"{word}: {verdict}; {found['distance_m']:.2f} {sign} {found['combined_bound_m']:.2f} m"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table (each pair named on its first row)."""
    lines = [
        "| pair (truth, m east, north) | variant | verdict (model) | estimated correction (m east, north) | "
        "95 % bound (m) | agrees with (a)? | s |",
        "|---|---|---|---|---|---|---|",
    ]
    previous = None
    for row in rows:
        pair = "" if row["pair"] == previous else f"{row['pair']} ({row['truth_m']})"
        previous = row["pair"]
        if "refused" in row:
            lines.append(f"| {pair} | {row['variant']} | refused: {row['refused'].split('. ')[0][:200]} | | | "
                         f"{_agrees(row)} | {row['seconds']:.1f} |")
            continue
        east, north = row["correction_m"]
        bound = "unknown" if row["bound_m"] is None else f"{row['bound_m']:.2f}"
        lines.append(f"| {pair} | {row['variant']} | {row['verdict']} ({row['model']}) | {east:+.2f}, {north:+.2f} | "
                     f"{bound} | {_agrees(row)} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every pair in every variant, print the table, optionally write the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows (all figures) to this JSON file")
    args = parser.parse_args(argv)
    if not SVALBARD.is_file():
        raise SystemExit(f"data folder {SVALBARD.parents[1]} is missing (../shared/data beside the repository)")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for pair in PAIRS:
            rows.extend(run_pair(pair, Path(folder)))
            print(f"{pair.name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(markdown(rows))
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
