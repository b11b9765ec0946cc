"""The scratch folder and what is kept in it for diagnosis (``keep_temp_dir``).

Kept: the coarse overlap images of both inputs, their edge proxies and validity masks (GeoTIFF on
the coarse grid), and the tie-point table (``tie_points.csv``, one row per window).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile

import numpy as np
import rasterio

from ..common.affines import apply
from ..estimate.registration import Registration
from ..io.outputs import OWNER_FILE, make_owned_folder, sweep_stale
from ..io.raster_source import Grid, RasterSource

#: Scratch folders are named ``coreg-<random>``.
PREFIX = "coreg-"


class TemporaryFolder:
    """A scratch folder: created inside ``parent`` (or the system's), removed unless ``keep``.

    It records its owner (:func:`coreg_plugin.io.outputs.make_owned_folder`), and the scratch folders in the same
    place whose owner is gone (a run that was killed) are removed first; a kept folder drops its
    record, so what was kept for diagnosis is never swept.
    """

    def __init__(self, parent: str | os.PathLike | None, keep: bool) -> None:
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        where = os.fspath(parent) if parent is not None else tempfile.gettempdir()
        sweep_stale(where, PREFIX)
        self.path = make_owned_folder(where, PREFIX)
        self.keep = keep

    def __enter__(self) -> TemporaryFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            os.remove(os.path.join(self.path, OWNER_FILE))
        except OSError:
            pass  # never recorded: never swept either


def write_image(path: str, grid: Grid, values: np.ndarray) -> None:
    """Write one float32 band on ``grid`` (NaN as nodata)."""
    with rasterio.open(path, "w", driver="GTiff", dtype="float32", count=1, nodata=np.nan,
                       crs=grid.crs, transform=grid.transform, width=grid.width,
                       height=grid.height, compress="deflate") as dst:
        dst.write(values.astype("float32"), 1)


def write_tie_points(path: str, reg: Registration, moving: RasterSource) -> None:
    """Write the tie-point table: position (px and map), correction (px), reliability, status."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["x_px", "y_px", "x_map", "y_map", "dx_px", "dy_px", "reliability", "residual_px", "status"])
        for p in reg.tie_points:
            x_map, y_map = apply(moving.grid.transform, p.x, p.y)
            out.writerow([p.x, p.y, x_map, y_map, p.dx, p.dy, p.reliability, p.residual_px, p.status])


def write_diagnostics(folder: TemporaryFolder, reg: Registration, moving: RasterSource) -> None:
    """Write the coarse images, proxies, masks and tie-point table into ``folder`` if it is kept."""
    if not folder.keep:
        return
    coarse = reg.coarse
    for name, image, proxy in (("moving", coarse.moving, coarse.moving_proxy),
                               ("fixed", coarse.fixed, coarse.fixed_proxy)):
        write_image(os.path.join(folder.path, f"{name}_overlap.tif"), coarse.grid, image)
        write_image(os.path.join(folder.path, f"{name}_edge_proxy.tif"), coarse.grid, proxy.values)
        write_image(os.path.join(folder.path, f"{name}_valid_mask.tif"), coarse.grid,
                    np.isfinite(image).astype("float32"))
    write_tie_points(os.path.join(folder.path, "tie_points.csv"), reg, moving)
