"""The benchmark (``make bench``): wall time and peak memory of Coreg's jobs, against baselines in the same run.

Every case runs in a child process of its own; its peak resident memory is that child's maxrss
(``os.wait4``). The runner itself imports only the standard library and generates data in a child
too: a forked child starts with its parent's high-water mark, which would otherwise floor every
figure. Results are printed as a table and written to ``build/bench/results.json`` so runs
can be compared. Scratch data is generated under ``build/bench`` from real texture (mirror-tiled
../shared/data/s2-inter1 reference), never downloaded.

Cases:
- ``floor`` / ``align`` (group ``pair``): a 10980 x 10980 uint16 pair (a Sentinel-2 tile's size), the
  moving copy displaced by a known sub-pixel shift and a small rotation. The floor reads both
  rasters, warps the moving one once (bilinear, both cores) and writes it as Coreg's writer does
  (tiled deflate with predictor, both cores); ``align`` is ``align_image_pair`` end to end with
  default settings (lanczos), ``align_bilinear`` with bilinear output, their residual measured
  against the truth. Group ``translation``: the same with a moving copy displaced by the sub-pixel
  shift alone (the common case), against a floor of its own. Group ``align_cpu``: that floor part by
  part and ``align_image_pair`` on that pair, each part's CPU seconds (every thread's; they vary less
  than wall time on a shared machine): where Align's time goes against its floor.
- ``copy`` / ``georeference_only``: the same moving raster copied by GDAL with the writer's GeoTIFF
  options (the baseline), and corrected by a translation correction file with
  ``apply_correction(no_resample=True)`` (pixels copied, geotransform moved).
- ``warps8`` / ``stack8``: 8 inputs (2600 px, 20 m) onto a 5000 x 5000 px, 10 m grid, one file
  per input: plain rasterio warps, then ``coregister_stack(mode="stack", output_folder=...)``.
- ``stack_plain`` / ``stack_registered``: 8 inputs of 5490 px at 20 m (the pair's moving raster
  averaged 2 x 2, each displaced by a different known offset) merged onto the pair's 10980 px, 10 m
  fixed raster, without and with registration: the price of registering a stack.
- ``stack_floor`` / ``stack_large``: a "first" merge of 4 inputs (4000 x 4000 px at 40 m) onto a
  30000 x 30000 px, 10 m reference grid, as plain block-wise warps with rasterio (the floor) and with
  ``coregister_stack``; then a 2000 x 2000 px window of the same grid run on its own, whose pixels
  must equal the large run's.
- ``peers`` (``merge_peers``): Coregister Stack against the tools a user would pick instead, in one
  run, on two "first" merges onto a 6000 x 6000 px, 10 m grid written as tiled deflate GeoTIFF with
  the writer's options: a time series of one footprint (8 inputs of 3000 px at 20 m, uint16, nodata
  0, each date a few metres off the others, some with a swath edge of no data) and a mosaic of 9
  tiles of 1040 px at 20 m overlapping only at their edges (40 px). Timed: Coreg's command line
  (``python -m coreg_plugin stack --merge-method first --resampling bilinear``), ``gdalwarp -multi
  -wo NUM_THREADS=ALL_CPUS -r bilinear`` with the inputs in reverse order (the last one written wins
  in gdalwarp) and ``rasterio.merge.merge(method="first", resampling=bilinear)`` in memory, then
  written; each row's ratio is to the faster peer, and Coreg's output is compared with both
  (largest difference in DN where both have data, and pixels where only one has data).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "--child" in sys.argv:  # heavy imports only in the children (see the module docstring)
    import numpy as np
    import rasterio
    import rasterio.warp
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

SCRATCH = ROOT / "build" / "bench"
S2_REF = ROOT.parent / "shared" / "data" / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
UTM_EPSG = 32633
BIG = 30000
BIG_PIXEL = 10.0
ORIGIN = (300000.0, 6000000.0)
INPUT_SIDE = 4000
INPUT_PIXEL = 40.0


def texture(height: int, width: int, *, dtype: str = "uint8", row: int = 0, col: int = 0) -> np.ndarray:
    """Real texture of any size: the S2 reference mirror-tiled, scaled to ``dtype``."""
    with rasterio.open(S2_REF) as ds:
        base = ds.read(1, window=Window(0, 800, 2400, 2400)).astype(np.float32)
    reps = (height + row) // base.shape[0] + 1, (width + col) // base.shape[1] + 1
    tiled = np.pad(base, ((0, base.shape[0] * (reps[0] - 1)), (0, base.shape[1] * (reps[1] - 1))), mode="symmetric")
    tile = tiled[row:row + height, col:col + width]
    if dtype == "uint8":
        return np.clip(tile / 12.0 + 1, 1, 255).astype(np.uint8)
    return tile.astype(dtype)


def make_stack_inputs() -> dict:
    """The sparse 30000 px reference and 4 overlapping 40 m inputs (written once, reused)."""
    folder = SCRATCH / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / "reference_30000.tif"
    if not reference.exists():
        with rasterio.open(reference, "w", driver="GTiff", width=BIG, height=BIG, count=1, dtype="uint8",
                           crs=CRS.from_epsg(UTM_EPSG),
                           transform=Affine(BIG_PIXEL, 0, ORIGIN[0], 0, -BIG_PIXEL, ORIGIN[1]),
                           tiled=True, sparse_ok=True, nodata=0):
            pass
    inputs = []
    span = INPUT_SIDE * INPUT_PIXEL
    offsets = [(1000, 1000), (span - 30000, 2000), (3000, span - 25000), (span - 20000, span - 20000)]
    for k, (dx, dy) in enumerate(offsets):
        path = folder / f"input_{k}.tif"
        inputs.append(path)
        if path.exists():
            continue
        transform = Affine(INPUT_PIXEL, 0, ORIGIN[0] + dx, 0, -INPUT_PIXEL, ORIGIN[1] - dy)
        with rasterio.open(path, "w", driver="GTiff", width=INPUT_SIDE, height=INPUT_SIDE, count=1, dtype="uint8",
                           crs=CRS.from_epsg(UTM_EPSG), transform=transform, tiled=True, compress="deflate",
                           nodata=0) as dst:
            dst.write(texture(INPUT_SIDE, INPUT_SIDE, row=k * 300, col=k * 500), 1)
    return {"reference": str(reference), "inputs": [str(p) for p in inputs]}


PAIR_SIDE = 10980
PAIR_SHIFT = (0.37, -0.61)
PAIR_ROTATION_DEG = 0.02


#: The pairs' moving rasters: a rotated one (a small rotation and the shift) and a translated one (the shift).
PAIR_KINDS = ("rotated", "translation")


def pair_correction(kind: str = "rotated") -> list[list[float]]:
    """The true correction of the benchmark pair of ``kind`` (3x3, moving pixels)."""
    from coreg_plugin.estimate.rotation_scale import rotation_scale_about

    h = np.eye(3)
    if kind == "rotated":
        h = rotation_scale_about(PAIR_ROTATION_DEG, 1.0, np.array([PAIR_SIDE / 2, PAIR_SIDE / 2]))
    h[:2, 2] += PAIR_SHIFT
    return h.tolist()


def make_pair(kind: str = "rotated") -> dict:
    """The 10980 px uint16 pair of ``kind``: the fixed raster and a moving one (written once, reused)."""
    from coreg_plugin.testing.synthetic import misregister

    folder = SCRATCH / "pair"
    folder.mkdir(parents=True, exist_ok=True)
    fixed, moving = folder / "fixed.tif", folder / ("moving.tif" if kind == "rotated" else f"moving_{kind}.tif")
    profile = dict(driver="GTiff", width=PAIR_SIDE, height=PAIR_SIDE, count=1, dtype="uint16",
                   crs=CRS.from_epsg(UTM_EPSG), transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", predictor=2)
    if not moving.exists() or not fixed.exists():
        truth = texture(PAIR_SIDE, PAIR_SIDE, dtype="float32")
        if not fixed.exists():
            with rasterio.open(fixed, "w", **profile) as dst:
                dst.write(np.clip(np.rint(truth), 0, 65535).astype("uint16"), 1)
        shifted = misregister(truth, np.array(pair_correction(kind)))
        del truth
        with rasterio.open(moving, "w", **profile) as dst:
            dst.write(np.clip(np.rint(shifted), 0, 65535).astype("uint16"), 1)
    return {"fixed": str(fixed), "moving": str(moving)}


STACK_REG_SHIFTS_M = [(3.0 * k - 9.0, 7.0 - 2.5 * k) for k in range(8)]


def make_stack_reg() -> dict:
    """8 inputs of 5490 px at 20 m from the pair's moving raster, each moved by a known offset (m)."""
    pair = make_pair()
    folder = SCRATCH / "stack_reg"
    folder.mkdir(parents=True, exist_ok=True)
    inputs = [str(folder / f"input_{k}.tif") for k in range(len(STACK_REG_SHIFTS_M))]
    if not all(os.path.exists(p) for p in inputs):
        with rasterio.open(pair["moving"]) as src:
            data = src.read(1, out_shape=(PAIR_SIDE // 2, PAIR_SIDE // 2), resampling=Resampling.average)
            profile = {**src.profile, "width": PAIR_SIDE // 2, "height": PAIR_SIDE // 2}
            for path, (dx, dy) in zip(inputs, STACK_REG_SHIFTS_M):
                t = src.transform
                profile["transform"] = Affine(2 * t.a, 0, t.c + dx, 0, 2 * t.e, t.f + dy)
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data, 1)
    return {"reference": pair["fixed"], "inputs": inputs}


def case_stack_reg(reference: str, inputs: list[str], output: str, register: bool) -> dict:
    """``coregister_stack`` merging the inputs onto the reference, with or without registration."""
    from coreg_plugin import coregister_stack

    summary = coregister_stack(inputs, reference, output, merge_method="first", register=register).summary
    return {"used": summary["totals"]["used"], "coverage": summary["totals"]["coverage"],
            "timings_s": summary["timings_s"]}


def case_floor(fixed: str, moving: str, output: str, kind: str = "rotated") -> dict:
    """Read both rasters, warp the moving one once (bilinear, on both cores, the true correction of
    the pair of ``kind``), write it as Coreg's writer does (tiled deflate with predictor, both cores)."""
    from coreg_plugin.common.affines import compose
    from coreg_plugin.correction.geometry import as_affine
    from coreg_plugin.io.writer import geotiff_options

    with rasterio.open(fixed) as f:
        f.read(1)
    with rasterio.open(moving) as m:
        data, profile = m.read(1), m.profile
        out = np.zeros_like(data)
        correction = as_affine(np.array(pair_correction(kind)))
        rasterio.warp.reproject(data, out, src_transform=compose(m.transform, correction),
                                src_crs=m.crs, dst_transform=m.transform, dst_crs=m.crs,
                                resampling=Resampling.bilinear, num_threads=2)
    for key in ("blockxsize", "blockysize", "compress", "predictor", "tiled", "interleave"):
        profile.pop(key, None)
    with rasterio.open(output, "w", **profile, **geotiff_options(str(data.dtype))) as dst:
        dst.write(out, 1)
    return {}


def _cpu(parts: dict, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function``, adding its process CPU seconds (every thread's) to ``parts[name]``."""
    start = time.process_time()
    try:
        return function(*args, **kwargs)
    finally:
        parts[name] = round(parts.get(name, 0.0) + time.process_time() - start, 2)


def case_floor_cpu(fixed: str, moving: str, output: str, kind: str = "translation") -> dict:
    """The floor of the pair of ``kind`` part by part: CPU seconds of each (every thread's)."""
    from coreg_plugin.common.affines import compose
    from coreg_plugin.correction.geometry import as_affine
    from coreg_plugin.io.writer import geotiff_options

    parts: dict = {}

    def read(path: str) -> tuple:
        with rasterio.open(path) as ds:
            return ds.read(1), ds.profile

    _cpu(parts, "read fixed", read, fixed)
    data, profile = _cpu(parts, "read moving", read, moving)
    out = np.zeros_like(data)
    transform = compose(profile["transform"], as_affine(np.array(pair_correction(kind))))
    _cpu(parts, "warp", rasterio.warp.reproject, data, out, src_transform=transform, src_crs=profile["crs"],
         dst_transform=profile["transform"], dst_crs=profile["crs"], resampling=Resampling.bilinear, num_threads=2)
    for key in ("blockxsize", "blockysize", "compress", "predictor", "tiled", "interleave"):
        profile.pop(key, None)

    def write() -> None:
        with rasterio.open(output, "w", **profile, **geotiff_options(str(data.dtype))) as dst:
            dst.write(out, 1)

    _cpu(parts, "write", write)
    return {"cpu_s": parts}


def case_align_cpu(fixed: str, moving: str, output: str) -> dict:
    """``align_image_pair`` (defaults) with the CPU seconds (every thread's) of its registration and
    of its output stage."""
    from coreg_plugin.workflows import align

    parts: dict = {}
    register, apply_to_source = align.register, align.apply_to_source
    align.register = lambda *args, **kwargs: _cpu(parts, "registration", register, *args, **kwargs)
    align.apply_to_source = lambda *args, **kwargs: _cpu(parts, "output", apply_to_source, *args, **kwargs)
    start = time.process_time()
    summary = align.align_image_pair(moving, fixed, output).summary
    parts["total"] = round(time.process_time() - start, 2)
    return {"cpu_s": parts, "timings_s": summary["timings_s"]}


def residual_against_truth(output: str, truth: str, windows: int = 12, size: int = 256) -> dict:
    """RMSE (px) of the shifts left between output and truth, on a grid of windows read one by one."""
    from coreg_plugin.testing import evaluate

    shifts = []
    with rasterio.open(output) as o, rasterio.open(truth) as t:
        for row in np.linspace(size, o.height - 2 * size, windows).astype(int):
            for col in np.linspace(size, o.width - 2 * size, windows).astype(int):
                win = Window(col, row, size, size)
                a = o.read(1, window=win, masked=True).astype(float).filled(np.nan)
                shifts.extend(evaluate.residual_shifts(a, t.read(1, window=win).astype(float), window=size))
    return {"residual_rmse_px": round(evaluate.rmse(np.array(shifts)), 4), "residual_windows": len(shifts)}


def case_align(fixed: str, moving: str, output: str, resampling: str | None = None, kind: str = "rotated") -> dict:
    """``align_image_pair`` end to end, default settings, on the pair of ``kind`` (the output is
    checked by ``verify``, in a process of its own, so that checking is not counted in Align's time)."""
    from coreg_plugin import align_image_pair

    summary = align_image_pair(moving, fixed, output, **({"resampling": resampling} if resampling else {})).summary
    true = np.array(pair_correction(kind))
    centre = np.array([summary["overlap_centre_px"]["x"], summary["overlap_centre_px"]["y"]])
    expected = true[:2, :2] @ centre + true[:2, 2] - centre
    error = np.hypot(summary["shift_px"]["x"] - expected[0], summary["shift_px"]["y"] - expected[1])
    return {"tie_points_used": summary["tie_points"]["used"], "model": summary["model"],
            "verdict": summary["verdict"], "shift_error_px": round(float(error), 4),
            "timings_s": summary["timings_s"]}


def case_verify(output: str, truth: str) -> dict:
    """The residual (px) of an aligned output against the truth."""
    return residual_against_truth(output, truth)


def case_copy(moving: str, output: str) -> dict:
    """Baseline of the georeference-only correction: GDAL's copy of the moving raster, the writer's options."""
    import rasterio.shutil

    from coreg_plugin.io.writer import geotiff_options

    rasterio.shutil.copy(moving, output, driver="GTiff", **geotiff_options("uint16"))
    return {}


def case_georeference_only(moving: str, output: str) -> dict:
    """apply_correction --no-resample with a translation correction file: pixels copied, geotransform moved."""
    from coreg_plugin import apply_correction
    from coreg_plugin.correction.file import Correction, write_correction

    with rasterio.open(moving) as src:
        crs, bounds = src.crs, src.bounds
    matrix = np.eye(3)
    matrix[:2, 2] = PAIR_SHIFT[0] * 10, -PAIR_SHIFT[1] * 10
    ring = np.array([[bounds.left, bounds.top], [bounds.right, bounds.top], [bounds.right, bounds.bottom],
                     [bounds.left, bounds.bottom], [bounds.left, bounds.top]])
    correction = write_correction(Correction("translation", matrix, crs, ring), output + ".json")
    summary = apply_correction(correction, moving, output, no_resample=True)
    return {"shift_px": summary["shift_px"]}


STACK8_SIDE = 5000
STACK8_INPUT = 2600


def make_stack8() -> dict:
    """A 5000 px, 10 m reference and 8 inputs of 2600 px at 20 m, offset across it."""
    folder = SCRATCH / "stack8"
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / "reference.tif"
    crs = CRS.from_epsg(UTM_EPSG)
    if not reference.exists():
        with rasterio.open(reference, "w", driver="GTiff", width=STACK8_SIDE, height=STACK8_SIDE, count=1,
                           dtype="uint16", crs=crs, transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]),
                           tiled=True, sparse_ok=True, nodata=0):
            pass
    inputs = []
    for k in range(8):
        path = folder / f"input_{k}.tif"
        inputs.append(str(path))
        if path.exists():
            continue
        dx, dy = 1000 + 2900 * (k % 4), 1000 + 6000 * (k // 4) + 700 * (k % 3)
        with rasterio.open(path, "w", driver="GTiff", width=STACK8_INPUT, height=STACK8_INPUT, count=1,
                           dtype="uint16", crs=crs, transform=Affine(20, 0, ORIGIN[0] + dx - 3000, 0, -20,
                                                                      ORIGIN[1] - dy + 3000),
                           tiled=True, compress="deflate", predictor=2, nodata=0) as dst:
            dst.write(texture(STACK8_INPUT, STACK8_INPUT, dtype="uint16", row=k * 200, col=k * 300) + 1, 1)
    return {"reference": str(reference), "inputs": inputs}


def case_warps8(reference: str, inputs: list[str], folder: str) -> dict:
    """Baseline: each input warped onto the reference grid (bilinear) with a WarpedVRT, block-wise, deflate."""
    os.makedirs(folder, exist_ok=True)
    with rasterio.open(reference) as ref:
        for path in inputs:
            with rasterio.open(path) as src, WarpedVRT(src, crs=ref.crs, transform=ref.transform, width=ref.width,
                                                       height=ref.height, resampling=Resampling.bilinear) as vrt:
                profile = dict(driver="GTiff", width=ref.width, height=ref.height, count=1, dtype=src.dtypes[0],
                               crs=ref.crs, transform=ref.transform, tiled=True, compress="deflate", predictor=2,
                               nodata=0, num_threads="ALL_CPUS")
                with rasterio.open(os.path.join(folder, os.path.basename(path)), "w", **profile) as dst:
                    for _, win in dst.block_windows(1):
                        dst.write(vrt.read(1, window=win), 1, window=win)
    return {}


def case_stack8(reference: str, inputs: list[str], folder: str) -> dict:
    from coreg_plugin import coregister_stack

    summary = coregister_stack(inputs, reference, mode="stack", output_folder=folder).summary
    return {"used": summary["totals"]["used"], "coverage": summary["totals"]["coverage"]}


def case_stack_floor(reference: str, inputs: list[str], output: str) -> dict:
    """Baseline: each input through a WarpedVRT on the reference grid, block-wise "first" merge, deflate."""
    with rasterio.open(reference) as ref:
        profile = dict(driver="GTiff", width=ref.width, height=ref.height, count=1, dtype="uint8", crs=ref.crs,
                       transform=ref.transform, tiled=True, compress="deflate", predictor=2, bigtiff="IF_SAFER",
                       nodata=0)
        vrts = [WarpedVRT(rasterio.open(p), crs=ref.crs, transform=ref.transform, width=ref.width,
                          height=ref.height, resampling=Resampling.bilinear) for p in inputs]
        with rasterio.open(output, "w", **profile) as dst:
            for row in range(0, ref.height, 512):
                for col in range(0, ref.width, 512):
                    win = Window(col, row, min(512, ref.width - col), min(512, ref.height - row))
                    merged = np.zeros((int(win.height), int(win.width)), np.uint8)
                    for vrt in vrts:
                        data = vrt.read(1, window=win)
                        np.copyto(merged, data, where=(merged == 0) & (data != 0))
                    dst.write(merged, 1, window=win)
    return {}


def case_stack_large(reference: str, inputs: list[str], output: str) -> dict:
    from coreg_plugin import coregister_stack

    summary = coregister_stack(inputs, reference, output, merge_method="first", resampling="bilinear").summary
    return {"coverage": summary["totals"]["coverage"], "used": summary["totals"]["used"]}


def case_stack_window(reference: str, inputs: list[str], output: str, large_output: str) -> dict:
    """The same merge on a 2000 px window of the large grid, compared with the large run's pixels."""
    from coreg_plugin import coregister_stack

    col, row, side = 11000, 11000, 2000
    small_ref = str(Path(output).with_name("reference_window.tif"))
    with rasterio.open(reference) as ref:
        transform = ref.window_transform(Window(col, row, side, side))
        with rasterio.open(small_ref, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8",
                           crs=ref.crs, transform=transform, nodata=0) as dst:
            dst.write(np.zeros((1, side, side), np.uint8))
    coregister_stack(inputs, small_ref, output, merge_method="first", resampling="bilinear")
    with rasterio.open(output) as small, rasterio.open(large_output) as large:
        a, b = small.read(1), large.read(1, window=Window(col, row, side, side))
    return {"window_px": side * side, "pixels_differing": int((a != b).sum()),
            "max_abs_difference": int(np.abs(a.astype(int) - b).max())}


def case_align_model(fixed: str, moving: str, output: str, model: str) -> dict:
    """Align the 10980 px pair with one ``model`` (the local model's time against the affine's)."""
    from coreg_plugin import align_image_pair

    summary = align_image_pair(moving, fixed, output, model=model).summary
    return {"model": summary["model"], "tie_points_used": summary["tie_points"]["used"],
            **residual_against_truth(output, fixed)}


PEERS_SIDE = 6000
PEERS_PIXEL = 10.0
SERIES_SIDE = 3000
#: Each date's grid offset (m) from the footprint: a time series of one footprint, never quite on one grid.
SERIES_OFFSETS_M = [(0.0, 0.0), (3.0, -4.0), (-6.0, 2.0), (8.0, 5.0), (-2.0, -7.0), (5.0, 9.0), (-9.0, -3.0),
                    (4.0, 6.0)]
#: Dates with a swath edge of no data: (corner, fraction of the side the diagonal edge cuts off).
SERIES_SWATH_EDGES = {1: ("top-left", 0.35), 3: ("bottom-right", 0.5), 6: ("top-right", 0.25)}
MOSAIC_TILES, MOSAIC_SIDE, MOSAIC_STEP = 3, 1040, 1000


def _write_input(path: Path, data: np.ndarray, transform: Affine) -> None:
    """A uint16 input as products come: tiled 512 px, deflate with predictor, nodata 0."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="uint16", crs=CRS.from_epsg(UTM_EPSG), transform=transform, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", predictor=2, nodata=0) as dst:
        dst.write(data, 1)


def make_peers() -> dict:
    """The peers' two cases (written once, reused): a 6000 px, 10 m reference, a time series of 8
    dates of one footprint and a mosaic of 9 tiles overlapping at their edges (20 m, uint16, nodata 0)."""
    folder = SCRATCH / "peers"
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / "reference_6000.tif"
    if not reference.exists():
        with rasterio.open(reference, "w", driver="GTiff", width=PEERS_SIDE, height=PEERS_SIDE, count=1,
                           dtype="uint16", crs=CRS.from_epsg(UTM_EPSG),
                           transform=Affine(PEERS_PIXEL, 0, ORIGIN[0], 0, -PEERS_PIXEL, ORIGIN[1]),
                           tiled=True, sparse_ok=True, nodata=0):
            pass
    series = []
    for k, (dx, dy) in enumerate(SERIES_OFFSETS_M):
        path = folder / f"series_{k}.tif"
        series.append(str(path))
        if path.exists():
            continue
        data = texture(SERIES_SIDE, SERIES_SIDE, dtype="uint16", row=k * 170, col=k * 90) + 1
        if k in SERIES_SWATH_EDGES:
            corner, fraction = SERIES_SWATH_EDGES[k]
            rows, cols = np.ogrid[:SERIES_SIDE, :SERIES_SIDE]
            rows = rows if corner.startswith("top") else SERIES_SIDE - 1 - rows
            cols = cols if corner.endswith("left") else SERIES_SIDE - 1 - cols
            data[rows + cols < 2 * fraction * SERIES_SIDE] = 0
        _write_input(path, data, Affine(20, 0, ORIGIN[0] + dx, 0, -20, ORIGIN[1] + dy))
    mosaic = []
    for k in range(MOSAIC_TILES * MOSAIC_TILES):
        path = folder / f"tile_{k}.tif"
        mosaic.append(str(path))
        if path.exists():
            continue
        row, col = divmod(k, MOSAIC_TILES)
        data = texture(MOSAIC_SIDE, MOSAIC_SIDE, dtype="uint16", row=row * 700 + 13 * k, col=col * 800) + 1
        x0 = ORIGIN[0] - 400.0 + col * MOSAIC_STEP * 20
        y0 = ORIGIN[1] + 400.0 - row * MOSAIC_STEP * 20
        _write_input(path, data, Affine(20, 0, x0, 0, -20, y0))
    return {"reference": str(reference), "series": series, "mosaic": mosaic}


def peer_creation_options() -> dict:
    """The options Coreg's writer gives a uint16 GeoTIFF: every tool writes with them."""
    from coreg_plugin.io.writer import geotiff_options

    return geotiff_options("uint16")


def case_options() -> dict:
    """The writer's options and the GDAL versions (rasterio's, and the gdalwarp command's)."""
    import shutil

    version = None
    if shutil.which("gdalwarp"):
        version = subprocess.run(["gdalwarp", "--version"], capture_output=True, text=True).stdout.strip()
    return {"options": peer_creation_options(), "rasterio_gdal": rasterio.__gdal_version__, "gdalwarp": version}


def case_rasterio_merge(reference: str, inputs: list[str], output: str, options: dict) -> dict:
    """rasterio.merge.merge(method="first", resampling=bilinear) onto the reference grid, in memory,
    then written with the writer's options (the seed recipe)."""
    import rasterio.merge

    with rasterio.open(reference) as ref:
        bounds, res, crs = ref.bounds, ref.res, ref.crs
    datasets = [rasterio.open(p) for p in inputs]
    try:
        merged, transform = rasterio.merge.merge(datasets, bounds=bounds, res=res, method="first",
                                                 resampling=Resampling.bilinear, nodata=0)
    finally:
        for ds in datasets:
            ds.close()
    with rasterio.open(output, "w", driver="GTiff", width=merged.shape[2], height=merged.shape[1],
                       count=merged.shape[0], dtype=merged.dtype, crs=crs, transform=transform, nodata=0,
                       **options) as dst:
        dst.write(merged)
    return {}


def gdalwarp_command(reference: str, inputs: list[str], output: str, options: dict) -> list[str]:
    """gdalwarp onto the reference grid, both cores, bilinear; the inputs in reverse order, since the
    last input gdalwarp writes wins: the first input's pixels are kept, as in a "first" merge."""
    with rasterio.open(reference) as ref:
        b = ref.bounds
        size = [str(ref.width), str(ref.height)]
    creation = [arg for key, value in options.items() for arg in ("-co", f"{key}={value}")]
    return ["gdalwarp", "-q", "-overwrite", "-multi", "-wo", "NUM_THREADS=ALL_CPUS", "-r", "bilinear",
            "-te", *map(repr, (b.left, b.bottom, b.right, b.top)), "-ts", *size, *creation,
            *reversed(inputs), output]


def case_compare(output: str, others: dict) -> dict:
    """Differences of ``output`` from each of ``others`` (name -> path), read block by block: the
    largest difference (DN) and the pixels differing where both have data, and the pixels where
    only one has data."""
    result = {}
    for name, path in others.items():
        largest, differing, one_only = 0, 0, 0
        with rasterio.open(output) as a, rasterio.open(path) as b:
            for _, win in a.block_windows(1):
                x, y = a.read(1, window=win).astype(np.int64), b.read(1, window=win).astype(np.int64)
                both = (x != a.nodata) & (y != b.nodata)
                diff = np.abs(x - y)[both]
                largest = max(largest, int(diff.max()) if diff.size else 0)
                differing += int((diff > 0).sum())
                one_only += int(((x != a.nodata) != (y != b.nodata)).sum())
        result[name] = {"max_abs_dn": largest, "pixels_differing": differing, "data_in_one_only": one_only}
    return result


CASES = {"make_pair": make_pair, "floor": case_floor, "align": case_align, "make_stack8": make_stack8,
         "warps8": case_warps8, "stack8": case_stack8, "make_stack_inputs": make_stack_inputs,
         "stack_floor": case_stack_floor, "stack_large": case_stack_large,
         "stack_window": case_stack_window, "make_stack_reg": make_stack_reg, "stack_reg": case_stack_reg}
CASES.update(floor_cpu=case_floor_cpu, align_cpu=case_align_cpu)
CASES.update(copy=case_copy, georeference_only=case_georeference_only, align_model=case_align_model,
             verify=case_verify, make_peers=make_peers, peer_options=case_options,
             rasterio_merge=case_rasterio_merge, compare=case_compare,
             peer_gdalwarp_argv=lambda **kwargs: {"argv": gdalwarp_command(**kwargs)})


def run_child(case: str, kwargs: dict) -> dict:
    """Run ``case`` in a fresh process; return its result with wall time and peak RSS (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", case, json.dumps(kwargs)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench case {case} failed (exit {proc.returncode})")
    result = json.loads(out)
    result.update(case=case, wall_s=round(time.perf_counter() - start, 2), peak_rss_mb=round(usage.ru_maxrss / 1024))
    return result


def run_command(case: str, argv: list[str]) -> dict:
    """Run ``argv`` as a process of its own; its wall time and peak RSS (MB) as :func:`run_child` measures them."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench case {case} failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(argv)}")
    result = {"case": case, "wall_s": round(time.perf_counter() - start, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if out.strip().startswith("{"):
        summary = json.loads(out)
        result["coverage"] = summary.get("totals", {}).get("coverage")
    return result


def run_peers(reference: str, inputs: list[str], name: str, folder: Path) -> list[tuple[dict, dict]]:
    """One merge of the peers group: Coreg's command line, gdalwarp and rasterio.merge, each row
    against the faster of the two peers; Coreg's pixels compared with both."""
    import shutil

    setup = data("peer_options")
    options = setup["options"]
    outputs = {tool: str(folder / f"{name}_{tool}.tif") for tool in ("coreg", "gdalwarp", "rasterio")}
    coreg = run_command(f"{name}_coreg", [
        sys.executable, "-m", "coreg_plugin", "stack", "--reference", reference, "--output", outputs["coreg"],
        "--merge-method", "first", "--resampling", "bilinear", *inputs])
    rows = [coreg]
    if shutil.which("gdalwarp") is None:
        raise SystemExit("bench group peers needs gdalwarp (Debian's gdal-bin)")
    argv = run_child("peer_gdalwarp_argv", {"reference": reference, "inputs": inputs, "output": outputs["gdalwarp"],
                                             "options": options})["argv"]
    rows.append(run_command(f"{name}_gdalwarp", argv))
    rows[-1]["gdal"] = setup["gdalwarp"]
    rows.append(run_child("rasterio_merge", {"reference": reference, "inputs": inputs, "output": outputs["rasterio"],
                                             "options": options}))
    rows[-1]["case"] = f"{name}_rasterio_merge"
    rows[0]["gdal"] = rows[-1]["gdal"] = setup["rasterio_gdal"]
    differences = run_child("compare", {"output": outputs["coreg"],
                                        "others": {"gdalwarp": outputs["gdalwarp"], "rasterio": outputs["rasterio"]}})
    coreg["vs_gdalwarp"], coreg["vs_rasterio"] = differences["gdalwarp"], differences["rasterio"]
    faster = min(rows[1:], key=lambda r: r["wall_s"])
    coreg["faster_peer"] = faster["case"]
    return [(row, faster) for row in rows]


def verified(output: str, truth: str) -> dict:
    """The residual against the truth of ``output`` (checked in a child of its own)."""
    result = run_child("verify", {"output": output, "truth": truth})
    return {k: v for k, v in result.items() if k not in ("case", "wall_s", "peak_rss_mb")}


def data(case: str) -> dict:
    """Run a data-making child; return its paths."""
    result = run_child(case, {})
    return {k: v for k, v in result.items() if k not in ("case", "wall_s", "peak_rss_mb")}


GROUPS = ("pair", "translation", "align_cpu", "georef", "stack8", "stack_reg", "stack30000", "local", "peers")


def run_group(group: str) -> list[tuple[dict, dict]]:
    """(result, baseline) rows of one group of cases."""
    if group in ("pair", "translation"):
        kind = "rotated" if group == "pair" else "translation"
        suffix = "" if group == "pair" else "_translation"
        pair = run_child("make_pair", {"kind": kind})
        pair = {"fixed": pair["fixed"], "moving": pair["moving"]}
        floor = run_child("floor", {**pair, "output": str(SCRATCH / "pair" / f"floor{suffix}.tif"), "kind": kind})
        align = run_child("align", {**pair, "output": str(SCRATCH / "pair" / f"aligned{suffix}.tif"), "kind": kind})
        bilinear = run_child("align", {**pair, "output": str(SCRATCH / "pair" / f"aligned{suffix}_bilinear.tif"),
                                       "resampling": "bilinear", "kind": kind})
        floor["case"], align["case"], bilinear["case"] = (f"floor{suffix}", f"align{suffix}",
                                                          f"align{suffix}_bilinear")
        for row, name in ((align, f"aligned{suffix}.tif"), (bilinear, f"aligned{suffix}_bilinear.tif")):
            row.update(verified(str(SCRATCH / "pair" / name), pair["fixed"]))
        return [(floor, floor), (align, floor), (bilinear, floor)]
    if group == "align_cpu":
        pair = run_child("make_pair", {"kind": "translation"})
        pair = {"fixed": pair["fixed"], "moving": pair["moving"]}
        floor = run_child("floor_cpu", {**pair, "output": str(SCRATCH / "pair" / "floor_translation.tif")})
        align = run_child("align_cpu", {**pair, "output": str(SCRATCH / "pair" / "aligned_translation.tif")})
        return [(floor, floor), (align, floor)]
    if group == "stack_reg":
        stack = data("make_stack_reg")
        plain = run_child("stack_reg", {**stack, "output": str(SCRATCH / "stack_reg" / "plain.tif"), "register": False})
        plain["case"] = "stack_plain"
        registered = run_child("stack_reg", {**stack, "output": str(SCRATCH / "stack_reg" / "registered.tif"),
                                             "register": True})
        registered["case"] = "stack_registered"
        return [(plain, plain), (registered, plain)]
    if group == "georef":
        pair = data("make_pair")
        copy = run_child("copy", {"moving": pair["moving"], "output": str(SCRATCH / "pair" / "copy.tif")})
        georef = run_child("georeference_only", {"moving": pair["moving"],
                                                 "output": str(SCRATCH / "pair" / "georeferenced.tif")})
        return [(copy, copy), (georef, copy)]
    if group == "local":
        pair = data("make_pair")
        rows = {model: run_child("align_model", {**pair, "model": model,
                                                 "output": str(SCRATCH / "pair" / f"aligned_{model}.tif")})
                for model in ("affine", "local")}
        for model, row in rows.items():
            row["case"] = f"align_{model}"
        return [(rows["affine"], rows["affine"]), (rows["local"], rows["affine"])]
    if group == "peers":
        peers = data("make_peers")
        folder = SCRATCH / "peers"
        return (run_peers(peers["reference"], peers["series"], "series", folder)
                + run_peers(peers["reference"], peers["mosaic"], "mosaic", folder))
    if group == "stack8":
        stack = data("make_stack8")
        warps = run_child("warps8", {**stack, "folder": str(SCRATCH / "stack8" / "warps")})
        coreg = run_child("stack8", {**stack, "folder": str(SCRATCH / "stack8" / "coreg")})
        return [(warps, warps), (coreg, warps)]
    common = data("make_stack_inputs")
    out = SCRATCH / "stack"
    floor = run_child("stack_floor", {**common, "output": str(out / "floor.tif")})
    large = run_child("stack_large", {**common, "output": str(out / "merged_30000.tif")})
    window = run_child("stack_window", {**common, "output": str(out / "merged_window.tif"),
                                        "large_output": str(out / "merged_30000.tif")})
    return [(floor, floor), (large, floor), (window, floor)]


def print_table(rows: list[tuple[dict, dict]]) -> None:
    """One run's table: wall time, ratio to the baseline of the same run, peak RSS, details, stages."""
    print(f"{'case':<22}{'wall s':>9}{'x base':>9}{'peak RSS MB':>13}  details")
    for r, base in rows:
        details = {k: v for k, v in r.items() if k not in ("case", "wall_s", "peak_rss_mb", "timings_s")}
        print(f"{r['case']:<22}{r['wall_s']:>9.1f}{r['wall_s'] / base['wall_s']:>9.2f}{r['peak_rss_mb']:>13}  "
              f"{json.dumps(details)}")
        if "timings_s" in r:
            stages = ", ".join(f"{name} {seconds:.1f} s ({seconds / base['wall_s']:.2f} x)"
                               for name, seconds in r["timings_s"].items())
            print(f"{'':<22}stages: {stages}; {base['case']} {base['wall_s']:.1f} s")


def print_medians(runs: list[list[tuple[dict, dict]]]) -> None:
    """Each case's ratio in every run (each against its baseline in that run) and their median."""
    print(f"ratios over {len(runs)} runs (each against the baseline of its own run):")
    for k, (first, _) in enumerate(runs[0]):
        ratios = sorted(rows[k][0]["wall_s"] / rows[k][1]["wall_s"] for rows in runs)
        middle = len(ratios) // 2
        median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
        print(f"{first['case']:<22}{', '.join(f'{x:.2f}' for x in ratios)}  (median {median:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("CASE", "KWARGS"), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the groups N times and print every case's N ratios and their median "
                             "(timings on a shared machine vary by 10 to 20 %% from run to run)")
    parser.add_argument("groups", nargs="*", default=list(GROUPS),
                        help=f"case groups to run: {', '.join(GROUPS)} (all)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CASES[args.child[0]](**json.loads(args.child[1]))))
        return
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}: choose from {', '.join(GROUPS)}")
    if args.repeat < 1:
        parser.error("--repeat needs at least 1 run")
    runs = []
    for _ in range(args.repeat):
        runs.append([row for group in args.groups for row in run_group(group)])
        print_table(runs[-1])
    if args.repeat > 1:
        print_medians(runs)
    results = [{**r, "run": k, "baseline": base["case"], "ratio": round(r["wall_s"] / base["wall_s"], 3)}
               for k, rows in enumerate(runs) for r, base in rows]
    (SCRATCH / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written {SCRATCH / 'results.json'}")


if __name__ == "__main__":
    main()
