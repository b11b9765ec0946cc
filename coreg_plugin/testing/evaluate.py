"""Measuring the misregistration left between two images on the same grid.

Independent of the matcher: raw intensities (no edge proxy), Hann taper, scikit-image's
cross-correlation at 1/100 px, on a regular grid of windows. Used by the tests and the benchmark to
compare an output with the truth.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import window as taper_window
from skimage.registration import phase_cross_correlation


def residual_shifts(image: np.ndarray, truth: np.ndarray, *, window: int = 128, step: int | None = None) -> np.ndarray:
    """Shifts (dx, dy) in pixels of ``image``'s content against ``truth``, one row per window.

    Windows containing NaN in either image are skipped. Sign: ``image[r, c]`` shows
    ``truth[r + dy, c + dx]``.
    """
    step = step or window
    taper = taper_window("hann", (window, window))
    shifts = []
    for row in range(0, image.shape[0] - window + 1, step):
        for col in range(0, image.shape[1] - window + 1, step):
            a = truth[row:row + window, col:col + window].astype(np.float64)
            b = image[row:row + window, col:col + window].astype(np.float64)
            if not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0 or b.std() == 0:
                continue
            s = phase_cross_correlation((a - a.mean()) * taper, (b - b.mean()) * taper,
                                        upsample_factor=100, normalization=None)[0]
            shifts.append((s[1], s[0]))
    return np.array(shifts, dtype=float).reshape(-1, 2)


def rmse(shifts: np.ndarray) -> float:
    """Root-mean-square length of (n, 2) shifts, in pixels."""
    return float(np.sqrt(np.mean(np.sum(shifts ** 2, axis=1)))) if len(shifts) else float("nan")
