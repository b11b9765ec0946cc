"""Print how well Align Image Pair's 95 % bound holds the true error under correlated scene change.

Run from the repository root: ``.venv-core/bin/python tools/bound_calibration.py [--pairs N] [--seed S]``.

Each simulated pair is a crop of real Sentinel-2 texture (s2-inter1's reference, no zero fill) and
a copy displaced by a known translation (uniform in +-3 px) plus a smooth random displacement field
standing for scene change (:func:`coreg_plugin.testing.synthetic.local_jitter_field`: no mean, no
linear trend; RMS as one tie-point window sees it, and correlation length, drawn per pair from each
row's ranges). The error is the distance between the shift estimated at the overlap centre and the
truth (px); "inside" is the share of errors within the reported 95 % bound at the centre. For a
calibrated 2-D bound about 95 % fall inside and the median bound is about 2.1 times the median error
(the ratio of a circular normal's 95 % and 50 % radii).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "core")]

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from conftest import ORIGIN, S2_REF, read_window  # noqa: E402
from coreg_plugin import align_image_pair  # noqa: E402
from coreg_plugin.testing import synthetic  # noqa: E402

#: (crop size px, model, RMS range px, correlation length range px)
CASES = [
    (1024, "translation", (0.2, 0.6), (150, 400)),
    (1024, "auto", (0.2, 0.6), (150, 400)),
    (1024, "translation", (0.6, 1.5), (100, 250)),
    (1536, "translation", (0.2, 0.6), (150, 400)),
]


def crop_origins(size: int, step: int = 50) -> np.ndarray:
    """(row, col) of every ``size`` px crop of the reference, on a ``step`` px lattice, that is at least
    95 % valid (s2-inter1's reference has about 25 % zero fill)."""
    with rasterio.open(S2_REF) as dataset:
        valid = dataset.read(1) > 0
    rows, cols = valid.shape
    return np.array([(r, c) for r in range(0, rows - size + 1, step) for c in range(0, cols - size + 1, step)
                     if valid[r:r + size, c:c + size].mean() >= 0.95])


def simulate(size: int, model: str, rms_range: tuple[float, float], length_range: tuple[float, float], pairs: int,
             rng: np.random.Generator, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(errors, bounds) in px of ``pairs`` simulated pairs."""
    errors, bounds = [], []
    origins = crop_origins(size)
    seed = int(rng.integers(1 << 30))
    while len(errors) < pairs:
        seed += 1
        row, col = origins[rng.integers(len(origins))]
        truth = read_window(S2_REF, int(row), int(col), size).astype(float)
        rms, length = rng.uniform(*rms_range), rng.uniform(*length_range)
        field_x, field_y = synthetic.local_jitter_field(truth.shape, rms, int(length), seed=seed)
        shift = rng.uniform(-3, 3, 2)
        moving = synthetic.displace(truth, field_x + shift[0], field_y + shift[1])
        synthetic.write_raster(folder / "fixed.tif", truth.astype("float32"), ORIGIN)
        synthetic.write_raster(folder / "moving.tif", moving.astype("float32"), ORIGIN)
        summary = align_image_pair(folder / "moving.tif", folder / "fixed.tif", folder / "out.tif",
                                   model=model).summary
        estimated = np.array([summary["estimated_shift_px"]["x"], summary["estimated_shift_px"]["y"]])
        errors.append(float(np.hypot(*(estimated - shift))))
        bounds.append(float(summary["uncertainty_px"]["centre"]))
    return np.array(errors), np.array(bounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="simulated pairs per row (default 20)")
    parser.add_argument("--seed", type=int, default=2027, help="random seed (default 2027)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| crop (px) | model | scene change RMS (px) | correlation length (px) | pairs | inside the bound | "
          "median error (px) | median bound (px) | median bound / median error | s |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size, model, rms_range, length_range in CASES:
            started = time.perf_counter()
            errors, bounds = simulate(size, model, rms_range, length_range, args.pairs, rng, Path(folder))
            print(f"| {size} | {model} | {rms_range[0]:g}-{rms_range[1]:g} | {length_range[0]:g}-{length_range[1]:g} | "
                  f"{len(errors)} | {np.mean(errors <= bounds):.0%} | {np.median(errors):.3f} | "
                  f"{np.median(bounds):.3f} | {np.median(bounds) / np.median(errors):.2f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
