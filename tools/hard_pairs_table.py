"""Print the success / clear-failure table of Align Image Pair on real pairs and hard cases.

Run from the repository root with a Python that has the core's dependencies, e.g.
``.venv-core/bin/python tools/hard_pairs_table.py``. Synthetic cases misregister real texture
(../shared/data) by a known correction; "error" is the reported shift's distance to the truth.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "core")]

import numpy as np  # noqa: E402

from conftest import DATA, ORIGIN, S2_REF, S2_TGT, affine_correction, read_window, true_shift  # noqa: E402
from coreg_plugin import CoregError, align_image_pair  # noqa: E402
from coreg_plugin.testing import synthetic  # noqa: E402

REAL = [
    ("s2-inter1: tgt vs ref (multi-date, clouds)", S2_TGT, S2_REF, {}),
    ("everest: band 4 (NIR) vs RGB band 1 (cross-band)", DATA / "everest" / "LE71400412000304SGS00_B4_crop.TIF",
     DATA / "everest" / "LE71400412000304SGS00_RGB.TIF", {}),
    ("everest: small NIR subset vs RGB (partial overlap)", DATA / "everest" / "LE71400412000304SGS00_B4_crop2.TIF",
     DATA / "everest" / "LE71400412000304SGS00_RGB.TIF", {}),
    ("landsat-rgb: EPSG:3857 200 m vs UTM WKT 300 m (cross-CRS)", DATA / "landsat-rgb" / "rgb1_fake_nir_epsg3857.tif",
     DATA / "landsat-rgb" / "rgb1.tif", {}),
    ("svalbard hillshade vs s2 reference (no overlap)", DATA / "svalbard" / "hillshade_Horn_DEM2009_full.tif",
     S2_REF, {}),
]

SYNTHETIC = [
    ("offset 200, -200 px on 800 px", (0.0, 1.0, (200.0, -200.0))),
    ("rotation 10 deg, scale 1.1", (10.0, 1.1, (3.2, -1.7))),
    ("rotation -10 deg, scale 0.9", (-10.0, 0.9, (-2.0, 4.0))),
    ("rotation 25 deg (beyond range)", (25.0, 1.0, (0.0, 0.0))),
    ("scale 1.3 (beyond range)", (0.0, 1.3, (0.0, 0.0))),
]


def outcome(moving: Path, fixed: Path, out: Path, **kwargs: object) -> tuple[dict | None, str, float]:
    start = time.perf_counter()
    try:
        summary = align_image_pair(moving, fixed, out, **kwargs).summary
        return summary, "aligned", time.perf_counter() - start
    except CoregError as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:150]}", time.perf_counter() - start


def main() -> None:
    print("| case | outcome | shift x, y (px; real pairs: estimated, +-95 % bound) | error vs truth (px) | "
          "tie points used | quality | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for label, moving, fixed, kwargs in REAL:
            summary, text, seconds = outcome(moving, fixed, tmp / "out.tif", **kwargs)
            if summary:
                estimated = summary["estimated_shift_px"]
                text = (f"{estimated['x']:+.3f}, {estimated['y']:+.3f} (+-{summary['uncertainty_px']['max']:.3f}) | | "
                        f"{summary['tie_points']['used']} | {summary['quality']['score']:.2f}")
                print(f"| {label} | {summary['verdict']} ({summary['model']}) | {text} | {seconds:.1f} |")
            else:
                print(f"| {label} | {text} | | | | | {seconds:.1f} |")
        truth = read_window(S2_REF, 900, 600, 800)
        synthetic.write_raster(tmp / "fixed.tif", truth, ORIGIN)
        for label, (rotation, scale, shift) in SYNTHETIC:
            h = affine_correction(rotation, scale, shift, 400)
            synthetic.write_raster(tmp / "moving.tif", synthetic.misregister(truth, h), ORIGIN)
            summary, text, seconds = outcome(tmp / "moving.tif", tmp / "fixed.tif", tmp / "out.tif")
            if summary:
                got = np.array([summary["shift_px"]["x"], summary["shift_px"]["y"]])
                error = float(np.hypot(*(got - true_shift(h, summary))))
                print(f"| {label} | {summary['verdict']} ({summary['model']}) | {got[0]:+.3f}, {got[1]:+.3f} | "
                      f"{error:.4f} | {summary['tie_points']['used']} | {summary['quality']['score']:.2f} | "
                      f"{seconds:.1f} |")
            else:
                print(f"| {label} | {text} | | | | | {seconds:.1f} |")
        flat = tmp / "flat.tif"
        synthetic.write_raster(flat, np.full((400, 400), 1234.0), ORIGIN)
        other = tmp / "other.tif"
        synthetic.write_raster(other, synthetic.realistic_scene(800, 800, seed=99) * 3000, ORIGIN)
        for label, moving in (("constant (textureless) moving", flat), ("unrelated scene", other)):
            summary, text, seconds = outcome(moving, tmp / "fixed.tif", tmp / "out.tif")
            print(f"| {label} | {text if not summary else 'aligned (WRONG)'} | | | | | {seconds:.1f} |")


if __name__ == "__main__":
    main()
