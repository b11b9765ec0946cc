"""Print the accuracy table of Align Image Pair: known distortions of real imagery and real pairs.

Run from the repository root with a Python that has the core's dependencies, e.g.
``.venv-core/bin/python tools/accuracy_table.py``. Uses the same truth images and measurement as
tests/core (residual = raw-intensity windowed phase correlation of the output against the truth).
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
from affine import Affine  # noqa: E402

from conftest import (  # noqa: E402
    ORIGIN,
    S2_REF,
    S2_TGT,
    affine_correction,
    reported_shift,
    residual_rmse,
    true_shift,
    truth_image,
)
from coreg_plugin import align_image_pair  # noqa: E402
from coreg_plugin.common.affines import compose  # noqa: E402
from coreg_plugin.testing import synthetic  # noqa: E402
from test_accuracy import coarse_moving  # noqa: E402

CASES = [
    ("s2", "translation 0.37, -0.71 px", 0.0, 1.0, (0.37, -0.71)),
    ("s2", "translation 4.26, -7.83 px", 0.0, 1.0, (4.26, -7.83)),
    ("s2", "translation -19.6, 13.35 px", 0.0, 1.0, (-19.6, 13.35)),
    ("landsat8", "translation -11.4, -2.7 px", 0.0, 1.0, (-11.4, -2.7)),
    ("svalbard", "translation 2.44, -0.09 px", 0.0, 1.0, (2.44, -0.09)),
    ("s2", "rotation 1.0 deg, scale 1.005", 1.0, 1.005, (1.3, -0.6)),
    ("s2", "rotation -0.7 deg, scale 0.996", -0.7, 0.996, (-6.2, 3.1)),
    ("landsat8", "rotation 0.5 deg, scale 1.003", 0.5, 1.003, (0.4, 2.2)),
]


def row(label: str, texture: str, error: float, rmse: float, summary: dict, seconds: float) -> str:
    return (f"| {texture} | {label} | {error:.3f} | {rmse:.3f} | {summary['model']} | "
            f"{summary['tie_points']['used']} | {seconds:.1f} |")


def main() -> None:
    print("| texture | distortion | reported shift error (px) | residual RMSE (px) | model | tie points | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for texture, label, rotation, scale, shift in CASES:
            truth = truth_image(texture)
            h = affine_correction(rotation, scale, shift, truth.shape[0] / 2)
            synthetic.write_raster(tmp / "fixed.tif", truth, ORIGIN)
            synthetic.write_raster(tmp / "moving.tif", synthetic.misregister(truth, h), ORIGIN)
            start = time.perf_counter()
            summary = align_image_pair(tmp / "moving.tif", tmp / "fixed.tif", tmp / "out.tif").summary
            seconds = time.perf_counter() - start
            error = float(np.hypot(*(reported_shift(summary) - true_shift(h, summary))))
            print(row(label, texture, error, residual_rmse(tmp / "out.tif", truth)[0], summary, seconds))
        truth = truth_image("s2")
        offset = (0.3, 0.6)
        for shift in [(0.31, -0.42), (-3.6, 2.15)]:
            h = affine_correction(0.0, 1.0, shift, truth.shape[0] / 4)
            synthetic.write_raster(tmp / "fixed.tif", truth, ORIGIN)
            synthetic.write_raster(tmp / "moving.tif", coarse_moving(truth, h, offset),
                                   compose(ORIGIN, Affine.translation(*offset), Affine.scale(2)))
            start = time.perf_counter()
            summary = align_image_pair(tmp / "moving.tif", tmp / "fixed.tif", tmp / "out.tif").summary
            seconds = time.perf_counter() - start
            error = float(np.hypot(*(reported_shift(summary) - np.array(shift))))
            rmse = residual_rmse(tmp / "out.tif", coarse_moving(truth, np.eye(3), offset), window=64)[0]
            label = f"moving 20 m on a grid offset (0.3, 0.6) px, shift {shift}"
            print(row(label, "s2", error, rmse, summary, seconds))
        start = time.perf_counter()
        summary = align_image_pair(S2_TGT, S2_REF, tmp / "s2.tif").summary
        print(f"\ns2-inter1 (tgt against ref): x {summary['shift_px']['x']:+.3f} px, "
              f"y {summary['shift_px']['y']:+.3f} px "
              f"(AROSICS -0.71, +1.80), {summary['model']}, {summary['tie_points']['used']} of "
              f"{summary['tie_points']['windows']} windows used, RMSE {summary['rmse_px']:.3f} px, "
              f"quality {summary['quality']['score']:.2f}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
