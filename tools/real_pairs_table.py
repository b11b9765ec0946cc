"""Run Align Image Pair on every real pair with a counterpart and check each result independently.

Run from the repository root: ``.venv-core/bin/python tools/real_pairs_table.py [--json PATH]``.
It prints a Markdown table; ``--json`` also writes its rows (with the evaluator's full figures) as JSON.

Each pair runs through ``coreg_plugin.align_image_pair(moving, fixed, output)`` with the defaults
of the command line (band 1 of each, output on the moving grid). The misregistration is then measured
by ``tools/independent_evaluator.py`` (spatial-domain ZNCC of gradient magnitude, no Coreg code) on
the input (moving against fixed: *before*) and on the output (output against fixed: *after*), on the
coarser of the two grids. Nothing is tuned to a pair: every pair goes through the same calls with
the same settings.

The pairs, all from ``../shared/data`` (moving first, fixed second), and what each tests:

- **s2-inter1** target vs reference, both cut to the same 1400 x 1400 px (14 km) block at the centre
  of their overlap (the full scenes take half a minute): a real multi-date misregistration, with
  clouds and the undeclared zero fill. AROSICS 1.13.2 corrects it by x = -0.64 to -0.71 px,
  y = +1.78 to +1.80 px (data README).
- **everest** band 4 (NIR) vs the RGB file's band 1 (red), the same scene: cross-band matching,
  truth 0. The 726 x 174 px subset of band 4 vs the same RGB band: a small partial overlap, truth 0.
- **landsat-rgb** ``rgb1``..``rgb4`` vs ``RGB.byte.tif``: tiles cut from that image, in a non-EPSG
  WKT of UTM 18N against EPSG:32618 (same place): truth 0, a whole-pixel grid match.
- **landsat-rgb** ``rgb1_fake_nir_epsg3857`` (EPSG:3857, 200 m) vs ``rgb1`` (UTM WKT, 300 m):
  cross-CRS and cross-resolution; its maker's shift, if any, is unknown.
- **rgbn** ``rgbn_subb`` vs ``rgbn.tif``: a 4-band 5 m aerial subset whose grid is offset by
  (0.4, 0.2) px from the full image's. ``rgbn_suba`` vs ``rgbn_subb``: two subsets overlapping by
  about 120 x 150 px (too little for the evaluator's 64 px windows with their search margin).
- **same acquisition at two resolutions**, made here from real data with GDAL area averaging
  (``Resampling.average``, grids aligned, so the truth is 0): the s2-inter1 reference
  (1200 x 1800 px, 10 m, no zero fill) as the fixed image against its 6x average (60 m) as the
  moving one; the Svalbard hillshade (20 m, full) as the moving image against its 3x average
  (60 m); Landsat-8 (60 m, full) 3x averaged (180 m) as the moving image against the original.
- **cross-CRS**: a 1000 x 1000 px block of the s2-inter1 reference reprojected to EPSG:3857
  (GDAL's default pixel size) as the moving image against the original block, twice: by GDAL's cubic
  reprojection, whose truth is not 0 but GDAL's own displacement of this block, about +0.057 px in
  rows (content moved down; see below), and by an exact resampling onto the same grid (PROJ at every
  pixel centre, quintic spline: :func:`exact_web_mercator`), truth 0.

GDAL's displacement: reprojecting a ramp holding each UTM pixel's row index (bilinear, which
reproduces a ramp exactly) shows that GDAL samples every 3857 pixel 0.002-0.068 px (median 0.057)
higher in the UTM block than PROJ's exact coordinates of its centre, varying in arcs about 500 px
long along the rows (as from interpolating between exactly transformed points; rasterio's
``tolerance``, 0.125 or 0, changed nothing); the independent evaluator measures GDAL's image against
the exact one on their common grid at +0.059 px in rows.

Takes under a minute on one core (40 s when written).
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
from rasterio.warp import Resampling, calculate_default_transform, reproject  # noqa: E402
from rasterio.warp import transform as transform_points  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from scipy import ndimage  # noqa: E402

from coreg_plugin import CoregError, align_image_pair  # noqa: E402
from tools.independent_evaluator import Measurement, apply, compose, measure  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
S2_REF = DATA / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
S2_TGT = DATA / "s2-inter1" / "tgt_S2A_20160529_T33UUU.tif"
EVEREST = DATA / "everest"
LANDSAT_RGB = DATA / "landsat-rgb"
RGBN = DATA / "rgbn"
LANDSAT8 = DATA / "landsat8-60m" / "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"
SVALBARD = DATA / "svalbard" / "hillshade_Horn_DEM2009_full.tif"


def crop(source: Path, window: Window, out: Path) -> Path:
    """``window`` of ``source`` written to ``out`` as it is (same type, bands, nodata, CRS)."""
    with rasterio.open(source) as ds:
        profile = {**ds.profile, "width": int(window.width), "height": int(window.height),
                   "transform": ds.window_transform(window), "driver": "GTiff", "compress": "deflate"}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        profile["tiled"] = False
        data = ds.read(window=window)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def same_place(source: Path, reference: Path, window: Window, out: Path) -> Path:
    """The block of ``source`` covering ``window`` of ``reference`` (grids aligned to whole pixels)."""
    with rasterio.open(reference) as ref, rasterio.open(source) as src:
        bounds = rasterio.windows.bounds(window, ref.transform)
        other = src.window(*bounds).round_offsets().round_lengths()
    return crop(source, other, out)


def area_average(source: Path, factor: int, out: Path, nodata: float = 0.0) -> Path:
    """Band 1 of ``source`` averaged over ``factor`` x ``factor`` blocks (GDAL ``average``) as float32,
    on a grid with the same origin; ``nodata`` (and the source's own) pixels are left out."""
    with rasterio.open(source) as ds:
        data = ds.read(1).astype(np.float32)
        src_nodata = ds.nodata if ds.nodata is not None else nodata
        transform = compose(ds.transform, Affine.scale(factor))
        width, height = ds.width // factor, ds.height // factor
        crs = ds.crs
    target = np.full((height, width), nodata, dtype=np.float32)
    reproject(data, target, src_transform=ds.transform, src_crs=crs, dst_transform=transform, dst_crs=crs,
              resampling=Resampling.average, src_nodata=src_nodata, dst_nodata=nodata)
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32", crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(target, 1)
    return out


def exact_web_mercator(source: Path, out: Path) -> Path:
    """``source`` resampled onto the same EPSG:3857 grid as :func:`to_web_mercator` without GDAL: every
    target pixel centre's source coordinates by PROJ (``rasterio.warp.transform``, every pixel), sampled
    by a quintic spline (``scipy.ndimage.map_coordinates``, order 5: not the evaluator's cubic), rounded
    to the source's type; nodata 0 outside the source and where it is 0."""
    dst_crs = CRS.from_epsg(3857)
    with rasterio.open(source) as ds:
        transform, width, height = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds)
        data = ds.read(1).astype(np.float64)
        src_transform, src_crs, dtype = ds.transform, ds.crs, ds.dtypes[0]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    xs, ys = apply(transform, cols + 0.5, rows + 0.5)
    xs, ys = transform_points(dst_crs, src_crs, xs.ravel(), ys.ravel())
    c, r = apply(~src_transform, xs, ys)
    r, c = (np.asarray(v).reshape(height, width) - 0.5 for v in (r, c))
    values = ndimage.map_coordinates(data, [r, c], order=5, mode="nearest")
    zero = ndimage.map_coordinates((data == 0).astype(np.float64), [r, c], order=1, mode="constant", cval=1.0) > 0
    limits = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else np.finfo(dtype)
    target = np.clip(np.rint(values), max(limits.min, 1), limits.max).astype(dtype)
    target[zero] = 0
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=1, dtype=dtype, crs=dst_crs,
                       transform=transform, nodata=0) as dst:
        dst.write(target, 1)
    return out


def to_web_mercator(source: Path, out: Path) -> Path:
    """``source`` reprojected to EPSG:3857 (GDAL's default pixel size, cubic), same type, nodata 0."""
    dst_crs = CRS.from_epsg(3857)
    with rasterio.open(source) as ds:
        transform, width, height = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds)
        target = np.zeros((height, width), dtype=ds.dtypes[0])
        reproject(ds.read(1), target, src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform,
                  dst_crs=dst_crs, resampling=Resampling.cubic, src_nodata=0, dst_nodata=0)
        dtype = ds.dtypes[0]
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=1, dtype=dtype, crs=dst_crs,
                       transform=transform, nodata=0) as dst:
        dst.write(target, 1)
    return out


@dataclass
class Pair:
    """A pair of the table: its name, what it tests, and how to get (moving, fixed) into a folder."""

    name: str
    tests: str
    make: Callable[[Path], tuple[Path, Path]]


S2_BLOCK = Window(780, 650, 1400, 1400)  # of the reference: the centre of the overlap with the target


def _s2_pair(tmp: Path) -> tuple[Path, Path]:
    fixed = crop(S2_REF, S2_BLOCK, tmp / "s2_ref_block.tif")
    return same_place(S2_TGT, S2_REF, S2_BLOCK, tmp / "s2_tgt_block.tif"), fixed


def _s2_60m(tmp: Path) -> tuple[Path, Path]:
    fixed = crop(S2_REF, Window(1200, 600, 1200, 1800), tmp / "s2_10m.tif")
    return area_average(fixed, 6, tmp / "s2_60m.tif"), fixed


def _svalbard_60m(tmp: Path) -> tuple[Path, Path]:
    return SVALBARD, area_average(SVALBARD, 3, tmp / "svalbard_60m.tif")


def _landsat8_180m(tmp: Path) -> tuple[Path, Path]:
    return area_average(LANDSAT8, 3, tmp / "landsat8_180m.tif"), LANDSAT8


def _s2_3857(tmp: Path) -> tuple[Path, Path]:
    fixed = crop(S2_REF, Window(1300, 800, 1000, 1000), tmp / "s2_utm.tif")
    return to_web_mercator(fixed, tmp / "s2_3857.tif"), fixed


def _s2_3857_exact(tmp: Path) -> tuple[Path, Path]:
    fixed = crop(S2_REF, Window(1300, 800, 1000, 1000), tmp / "s2_utm.tif")
    return exact_web_mercator(fixed, tmp / "s2_3857_exact.tif"), fixed


def _files(moving: Path, fixed: Path) -> Callable[[Path], tuple[Path, Path]]:
    return lambda _tmp: (moving, fixed)


EVEREST_RGB = EVEREST / "LE71400412000304SGS00_RGB.TIF"
PAIRS = [
    Pair("s2-inter1 tgt vs ref (1400 px blocks)", "multi-date, clouds, zero fill; AROSICS: -0.64..-0.71, +1.78..+1.80",
         _s2_pair),
    Pair("everest B4 vs RGB band 1", "cross-band (NIR vs red), truth 0",
         _files(EVEREST / "LE71400412000304SGS00_B4_crop.TIF", EVEREST_RGB)),
    Pair("everest B4_crop2 vs RGB band 1", "cross-band, 726 x 174 px partial overlap, truth 0",
         _files(EVEREST / "LE71400412000304SGS00_B4_crop2.TIF", EVEREST_RGB)),
    *[Pair(f"landsat-rgb rgb{k} vs RGB.byte", "tile of the same image, WKT vs EPSG CRS, truth 0",
           _files(LANDSAT_RGB / f"rgb{k}.tif", LANDSAT_RGB / "RGB.byte.tif")) for k in range(1, 5)],
    Pair("landsat-rgb rgb1_fake_nir_epsg3857 vs rgb1", "cross-CRS (3857 vs UTM WKT), 200 m vs 300 m",
         _files(LANDSAT_RGB / "rgb1_fake_nir_epsg3857.tif", LANDSAT_RGB / "rgb1.tif")),
    Pair("rgbn_subb vs rgbn", "5 m aerial subset, grid offset (0.4, 0.2) px",
         _files(RGBN / "rgbn_subb.tif", RGBN / "rgbn.tif")),
    Pair("rgbn_suba vs rgbn_subb", "two subsets, about 120 x 150 px overlap",
         _files(RGBN / "rgbn_suba.tif", RGBN / "rgbn_subb.tif")),
    Pair("s2-inter1 ref 6x average (60 m) vs ref (10 m)", "same acquisition, coarse moving, truth 0", _s2_60m),
    Pair("svalbard hillshade (20 m) vs its 3x average (60 m)", "same acquisition, coarse fixed, truth 0",
         _svalbard_60m),
    Pair("landsat8 3x average (180 m) vs landsat8 (60 m)", "same acquisition, coarse moving, truth 0",
         _landsat8_180m),
    Pair("s2-inter1 ref reprojected to EPSG:3857 by GDAL vs ref",
         "cross-CRS (GDAL cubic); truth GDAL's displacement, about +0.057 px in rows, not 0", _s2_3857),
    Pair("s2-inter1 ref resampled exactly to EPSG:3857 vs ref", "cross-CRS (PROJ + quintic spline), truth 0",
         _s2_3857_exact),
]


def moving_to_evaluator(moving: Path, fixed: Path, grid: str, centre: tuple[float, float]) -> np.ndarray:
    """2 x 2 matrix taking a vector in moving pixels (x, y) at ``centre`` (moving px) to pixels of the
    evaluator's grid (the ``grid`` image's: "moving" or "fixed")."""
    with rasterio.open(moving) as m, rasterio.open(fixed) as f:
        if grid == "moving":
            return np.eye(2)
        cx, cy = centre
        xs, ys = apply(m.transform, [cx, cx + 1, cx], [cy, cy, cy + 1])
        if m.crs != f.crs:
            xs, ys = transform_points(m.crs, f.crs, list(xs), list(ys))
        cols, rows = apply(~f.transform, xs, ys)
    return np.array([[cols[1] - cols[0], cols[2] - cols[0]], [rows[1] - rows[0], rows[2] - rows[0]]])


def _vector(v: tuple[float, float] | None) -> str:
    return "" if v is None else f"{v[0]:+.3f}, {v[1]:+.3f}"


def _measured(m: Measurement) -> str:
    if not m.measured:
        return m.reason
    ci = math.hypot(*m.median_ci95_px)
    return f"{_vector(m.median_px)} (± {ci:.3f}; RMS {m.rms_px:.2f}; {m.windows} w)"


def run(pair: Pair, tmp: Path) -> dict[str, Any]:
    """One row: Coreg's summary figures and the evaluator's before and after."""
    folder = tmp / pair.name.replace(" ", "_").replace("/", "_")
    folder.mkdir()
    moving, fixed = pair.make(folder)
    row: dict[str, Any] = {"pair": pair.name, "tests": pair.tests, "moving": str(moving), "fixed": str(fixed)}
    before = measure(moving, fixed)
    row["before"] = before.as_dict()
    started = time.perf_counter()
    try:
        summary = align_image_pair(moving, fixed, folder / "out.tif").summary
    except CoregError as exc:
        message = str(exc).replace(f"'{moving}'", f"'{moving.name}'").replace(f"'{fixed}'", f"'{fixed.name}'")
        row.update(seconds=time.perf_counter() - started, refused=f"{type(exc).__name__}: {message}")
        return row
    row["seconds"] = time.perf_counter() - started
    estimated = summary.get("estimated_shift_px") or summary["shift_px"]
    bound = (summary.get("uncertainty_px") or {}).get("max")
    row.update(verdict=summary["verdict"], model=summary["model"], estimated_shift_px=[estimated["x"], estimated["y"]],
               applied_shift_px=[summary["shift_px"]["x"], summary["shift_px"]["y"]], bound_px=bound,
               tie_points_used=summary["tie_points"]["used"], quality=summary["quality"]["score"])
    after = measure(folder / "out.tif", fixed)
    row["after"] = after.as_dict()
    grid = after.grid if after.measured else before.grid
    centre = (summary["overlap_centre_px"]["x"], summary["overlap_centre_px"]["y"])
    jacobian = moving_to_evaluator(moving, fixed, grid, centre)
    row["moving_px_to_evaluator_px"] = jacobian.tolist()
    # Coreg's estimated correction seen as the displacement the evaluator should measure before.
    row["estimate_as_displacement_px"] = (-jacobian @ np.array(row["estimated_shift_px"])).tolist()
    if before.measured:
        missed = np.array(before.median_px) - row["estimate_as_displacement_px"]
        row["before_minus_estimate_px"] = missed.tolist()
        row["estimate_error_px"] = float(np.hypot(*missed))
    scale = math.sqrt(abs(np.linalg.det(jacobian)))
    row["bound_evaluator_px"] = None if bound is None else bound * scale
    row["inside_bound"] = inside(after, row["bound_evaluator_px"])
    return row


def inside(after: Measurement, bound: float | None) -> str:
    """Whether the misregistration left (the median vector's length) is within Coreg's 95 % bound."""
    if not after.measured:
        return "not measured"
    if bound is None:
        return "no bound"
    length = after.median_length_px
    if length <= bound:
        return "yes"
    if length - math.hypot(*after.median_ci95_px) <= bound:
        return f"within the evaluator's ± ({length:.3f} vs {bound:.3f})"
    return f"**no** ({length:.3f} > {bound:.3f})"


def _distance(row: dict[str, Any]) -> str:
    """How far Coreg's estimate (as a displacement) is from the evaluator's *before*, and whether
    that is within Coreg's bound."""
    if "estimate_error_px" not in row:
        return ""
    bound = row["bound_evaluator_px"]
    within = "" if bound is None else (" (within)" if row["estimate_error_px"] <= bound else " (**outside**)")
    return f"{row['estimate_error_px']:.3f}{within}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table."""
    lines = [
        "| pair | what it tests | verdict (model) | Coreg's estimated shift at overlap centre (moving px) | "
        "Coreg's 95 % bound (moving px; evaluator px) | before (evaluator px) | after (evaluator px) | "
        "after inside the bound? | estimate's distance from before (evaluator px) | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        before = Measurement(**{k: v for k, v in row["before"].items() if k in Measurement.__dataclass_fields__})
        if "refused" in row:
            lines.append(f"| {row['pair']} | {row['tests']} | refused: {row['refused'].split('. ')[0][:240]} | | | "
                         f"{_measured(before)} | | | | {row['seconds']:.1f} |")
            continue
        after = Measurement(**{k: v for k, v in row["after"].items() if k in Measurement.__dataclass_fields__})
        bound = "unknown" if row["bound_px"] is None else f"{row['bound_px']:.3f}; {row['bound_evaluator_px']:.3f}"
        lines.append(f"| {row['pair']} | {row['tests']} | {row['verdict']} ({row['model']}) | "
                     f"{_vector(row['estimated_shift_px'])} | {bound} | {_measured(before)} | {_measured(after)} | "
                     f"{row['inside_bound']} | {_distance(row)} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every pair, print the table, optionally write the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows (all figures) to this JSON file")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"data folder {DATA} is missing (../shared/data beside the repository)")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for pair in PAIRS:
            rows.append(run(pair, Path(folder)))
            print(f"{pair.name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(markdown(rows))
    print(f"\n{len(rows)} pairs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
