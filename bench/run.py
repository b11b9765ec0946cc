"""The benchmark (``make bench``): wall time and peak memory of Coreg's jobs, against baselines in the same run.

Every case runs in a child process of its own; its peak resident memory is that child's maxrss
(``os.wait4``). Results are printed as a table and written to ``build/bench/results.json`` so runs
can be compared. Scratch data is generated under ``build/bench`` from real texture (mirror-tiled
../shared/data/s2-inter1 reference), never downloaded.

Cases:
- ``stack_floor`` / ``stack_large``: a "first" merge of 4 inputs (4000 x 4000 px at 40 m) onto a
  30000 x 30000 px, 10 m reference grid, as plain block-wise warps with rasterio (the floor) and with
  ``coregister_stack``; then a 2000 x 2000 px window of the same grid run on its own, whose pixels
  must equal the large run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.vrt import WarpedVRT  # noqa: E402
from rasterio.windows import Window  # noqa: E402

SCRATCH = ROOT / "build" / "bench"
S2_REF = ROOT.parent / "shared" / "data" / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
CRS_UTM = CRS.from_epsg(32633)
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


def make_stack_inputs() -> tuple[Path, list[Path]]:
    """The sparse 30000 px reference and 4 overlapping 40 m inputs (written once, reused)."""
    folder = SCRATCH / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / "reference_30000.tif"
    if not reference.exists():
        with rasterio.open(reference, "w", driver="GTiff", width=BIG, height=BIG, count=1, dtype="uint8",
                           crs=CRS_UTM, transform=Affine(BIG_PIXEL, 0, ORIGIN[0], 0, -BIG_PIXEL, ORIGIN[1]),
                           tiled=True, sparse_ok=True, nodata=0):
            pass
    inputs = []
    span = INPUT_SIDE * INPUT_PIXEL
    for k, (dx, dy) in enumerate([(1000, 1000), (span - 30000, 2000), (3000, span - 25000), (span - 20000, span - 20000)]):
        path = folder / f"input_{k}.tif"
        inputs.append(path)
        if path.exists():
            continue
        transform = Affine(INPUT_PIXEL, 0, ORIGIN[0] + dx, 0, -INPUT_PIXEL, ORIGIN[1] - dy)
        with rasterio.open(path, "w", driver="GTiff", width=INPUT_SIDE, height=INPUT_SIDE, count=1, dtype="uint8",
                           crs=CRS_UTM, transform=transform, tiled=True, compress="deflate", nodata=0) as dst:
            dst.write(texture(INPUT_SIDE, INPUT_SIDE, row=k * 300, col=k * 500), 1)
    return reference, inputs


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
    return {"window_px": side * side, "pixels_differing": int((a != b).sum()), "max_abs_difference": int(np.abs(a.astype(int) - b).max())}


CASES = {"stack_floor": case_stack_floor, "stack_large": case_stack_large, "stack_window": case_stack_window}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("CASE", "KWARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CASES[args.child[0]](**json.loads(args.child[1]))))
        return
    reference, inputs = make_stack_inputs()
    out = SCRATCH / "stack"
    common = {"reference": str(reference), "inputs": [str(p) for p in inputs]}
    results = [
        run_child("stack_floor", {**common, "output": str(out / "floor.tif")}),
        run_child("stack_large", {**common, "output": str(out / "merged_30000.tif")}),
        run_child("stack_window", {**common, "output": str(out / "merged_window.tif"),
                                   "large_output": str(out / "merged_30000.tif")}),
    ]
    floor = results[0]["wall_s"]
    print(f"{'case':<14}{'wall s':>9}{'x floor':>9}{'peak RSS MB':>13}  details")
    for r in results:
        details = {k: v for k, v in r.items() if k not in ("case", "wall_s", "peak_rss_mb")}
        print(f"{r['case']:<14}{r['wall_s']:>9.1f}{r['wall_s'] / floor:>9.2f}{r['peak_rss_mb']:>13}  {json.dumps(details)}")
    (SCRATCH / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written {SCRATCH / 'results.json'}")


if __name__ == "__main__":
    main()
