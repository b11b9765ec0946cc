"""Applying a correction (:mod:`coreg_plugin.correction`) to one raster of the scene.

The raster keeps its own grid (CRS, pixel size, extent); its content moves to where the correction
says it truly lies. Two ways:

- **resampling** (default): the raster's geotransform is corrected and GDAL's warper resamples it
  back onto its own grid, in one step, all bands (:func:`.blocks.write_warped`); a local
  correction goes through the same warp, tile by tile (:mod:`.local_warp`), so every
  resampling method means the same under every model;
- **georeference only** (``no_resample``): for a translation, the pixels are copied bit for bit and
  only the geotransform moves.

Other CRSs: the correction is a map affine in its own CRS. For a raster in another CRS it is
re-expressed as the affine (in the raster's CRS) that best fits the exact correction (raster CRS ->
correction CRS -> correction -> back) on a 9 x 9 grid of points over the raster; the largest
deviation of that fit, in the raster's pixels, is reported (``fit_deviation_px``; for shifts of a
few pixels across a scene it is far below 0.001 px, because a projection change is locally affine).

Align Image Pair writes its own output through :func:`apply_to_source`, and Apply Correction
(:mod:`coreg_plugin.workflows.apply_correction`) every raster it is given: one write path.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import xml.etree.ElementTree as ET  # nosec B405 (parses only XML that GDAL wrote: see below)
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.features import rasterize
from rasterio.warp import transform as transform_coords

from ..common import options
from ..common.affines import apply, compose
from ..common.errors import InputError
from ..common.progress import Progress
from ..correction.file import Correction
from ..io.outputs import Staging
from ..io.raster_source import Grid, RasterSource
from ..io.warp import effective_resampling, kernel_downsampling
from ..io.writer import OutputSpec, blocks, writing
from .blocks import write_warped

log = logging.getLogger("coreg")

#: Points per axis on which a correction is re-expressed in another CRS.
FIT_POINTS = 9
#: A georeference-only correction in another CRS must stay a translation to this (raster pixels).
TRANSLATION_TOLERANCE_PX = 0.01
#: Side (pixels) of the coarse grid on which the domain coverage is measured.
COVERAGE_GRID = 256
#: Points added along each edge of the domain before it is transformed into another CRS.
DOMAIN_DENSIFY = 32
#: Band metadata rasterio cannot write, carried over through GDAL's own XML (PAM ``.aux.xml``).
PAM_BAND_ELEMENTS = ("CategoryNames", "GDALRasterAttributeTable")


def band_pam_elements(path: str) -> dict[int, list[ET.Element]]:
    """Category names and raster attribute tables of each band of ``path`` (1-based band -> XML
    elements), as GDAL serialises them (a VRT copy of the raster's description, no pixels)."""
    with tempfile.TemporaryDirectory() as folder:
        description = os.path.join(folder, "source.vrt")
        rasterio.shutil.copy(path, description, driver="VRT")
        root = ET.parse(description).getroot()  # nosec B314 (the VRT GDAL just wrote)
    found = {}
    for band in root.iter("VRTRasterBand"):
        elements = [element for element in band if element.tag in PAM_BAND_ELEMENTS]
        if elements:
            found[int(band.get("band"))] = elements
    return found


def add_band_pam_elements(path: str, elements: dict[int, list[ET.Element]]) -> None:
    """Give the raster at ``path`` these band elements through its PAM file (``path.aux.xml``),
    which GDAL reads with the raster (rasterio cannot write category names or attribute tables)."""
    if not elements:
        return
    aux = path + ".aux.xml"
    # GDAL's own sidecar of the output being written, not untrusted input; Python's expat fetches no
    # external entities.
    root = ET.parse(aux).getroot() if os.path.exists(aux) else ET.Element("PAMDataset")  # nosec B314
    for number, band_elements in sorted(elements.items()):
        band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == str(number)), None)
        if band is None:
            band = ET.SubElement(root, "PAMRasterBand", band=str(number))
        for element in band_elements:
            for old in band.findall(element.tag):
                band.remove(old)
            band.append(element)
    ET.ElementTree(root).write(aux, encoding="unicode")


def correction_in(correction: Correction, grid: Grid, *, translation_only: bool = False) -> tuple[Affine, float]:
    """The correction as an affine in ``grid``'s CRS (apparent -> true map position) and the largest
    deviation (``grid`` pixels) of that affine from the exact correction over ``grid``'s footprint.

    ``translation_only`` fits a pure translation (for georeference-only corrections).
    """
    if grid.crs == correction.crs:
        return correction.affine, 0.0
    t = np.linspace(0.0, 1.0, FIT_POINTS)
    cols, rows = np.meshgrid(t * grid.width, t * grid.height)
    xs, ys = apply(grid.transform, cols.ravel(), rows.ravel())
    ax, ay = transform_coords(grid.crs, correction.crs, xs, ys)
    tx, ty = apply(correction.affine, np.asarray(ax), np.asarray(ay))
    bx, by = (np.asarray(v) for v in transform_coords(correction.crs, grid.crs, tx, ty))
    x0, y0 = xs.mean(), ys.mean()
    if translation_only:
        dx, dy = np.mean(bx - xs), np.mean(by - ys)
        fitted = Affine.translation(dx, dy)
        fx, fy = xs + dx, ys + dy
    else:
        design = np.column_stack([xs - x0, ys - y0, np.ones_like(xs)])
        coef, *_ = np.linalg.lstsq(design, np.column_stack([bx - x0, by - y0]), rcond=None)
        (a, d), (b, e), (c, f) = coef
        fitted = compose(Affine.translation(x0, y0), Affine(a, b, c, d, e, f), Affine.translation(-x0, -y0))
        fx, fy = apply(fitted, xs, ys)
    pixel = math.sqrt(abs(grid.transform.determinant))
    return fitted, float(np.max(np.hypot(fx - bx, fy - by)) / pixel)


def domain_coverage(correction: Correction, grid: Grid) -> float:
    """Fraction (0 to 1) of ``grid``'s pixels inside the correction's domain (measured on a coarse
    version of ``grid``, at most ``COVERAGE_GRID`` pixels a side)."""
    ring = correction.domain
    steps = np.linspace(0.0, 1.0, DOMAIN_DENSIFY, endpoint=False)
    dense = np.vstack([a + steps[:, None] * (b - a) for a, b in zip(ring[:-1], ring[1:])] + [ring[:1]])
    xs, ys = dense[:, 0], dense[:, 1]
    if grid.crs != correction.crs:
        xs, ys = (np.asarray(v) for v in transform_coords(correction.crs, grid.crs, xs, ys))
    factor = max(1.0, max(grid.width, grid.height) / COVERAGE_GRID)
    width, height = max(1, round(grid.width / factor)), max(1, round(grid.height / factor))
    coarse = compose(grid.transform, Affine.scale(grid.width / width, grid.height / height))
    polygon = {"type": "Polygon", "coordinates": [list(zip(xs.tolist(), ys.tolist()))]}
    inside = rasterize([(polygon, 1)], out_shape=(height, width), transform=coarse, fill=0, dtype="uint8")
    return float(inside.mean())


def check_georeference_only(correction: Correction, name: str) -> None:
    """Raise ``InputError`` unless ``correction`` is a translation (the only model a georeference-only
    correction can apply), naming the model and the options that work."""
    if not correction.is_translation:
        raise InputError(
            f"{name} is {correction.describe()}: a georeference-only correction (--no-resample, "
            "GEOREFERENCE_ONLY) can only move a raster (a translation model). Resample instead (leave "
            "out --no-resample / GEOREFERENCE_ONLY), or estimate a translation (--model translation)"
        )


def apply_to_source(
    correction: Correction,
    source: RasterSource,
    grid: Grid,
    path: str,
    *,
    resampling: str,
    nodata: float,
    no_resample: bool = False,
    driver: str | None = "GTiff",
    creation_options: dict[str, str] | None = None,
    progress: Progress,
    name: str = "the correction",
    staging: Staging | None = None,
    allow_large_output: bool = False,
) -> dict[str, Any]:
    """Write ``source`` corrected by ``correction`` at ``path``, on ``grid``; return what was done.

    Resampled with ``resampling`` (rasterio name) onto ``grid``, or, with ``no_resample``, the
    pixels copied bit for bit with the corrected geotransform (then ``grid`` must be the source's
    own grid and the correction a translation). Returns ``transform`` (the source's corrected
    geotransform), ``fit_deviation_px`` and ``notes``. With a ``staging`` of the caller (holding
    the run's other outputs) the caller publishes; otherwise the output is published here.
    """
    own = Staging([("output", path)]) if staging is None else None
    try:
        done = _apply_to_source(correction, source, grid, path, resampling=resampling, nodata=nodata,
                                no_resample=no_resample, driver=driver, creation_options=creation_options,
                                progress=progress, name=name, staging=staging or own,
                                allow_large_output=allow_large_output)
        if own is not None:
            own.publish()
    finally:
        if own is not None:
            own.discard()
    return done


def _apply_to_source(
    correction: Correction, source: RasterSource, grid: Grid, path: str, *, resampling: str, nodata: float,
    no_resample: bool, driver: str | None, creation_options: dict[str, str] | None, progress: Progress,
    name: str, staging: Staging, allow_large_output: bool,
) -> dict[str, Any]:
    notes: list[str] = []
    extras = band_pam_elements(source.path)
    if no_resample:
        check_georeference_only(correction, name)
        if grid != source.grid:
            raise InputError("a georeference-only correction keeps the input's own grid: "
                             "it cannot write onto another grid (use the moving grid, or resample)")
    fitted, deviation = correction_in(correction, source.grid, translation_only=no_resample)
    if no_resample and deviation > TRANSLATION_TOLERANCE_PX:
        raise InputError(f"{name} is a translation in its CRS but varies by {deviation:.3f} px over "
                         f"'{source.path}' in that raster's CRS: resample instead (leave out --no-resample)")
    if deviation > TRANSLATION_TOLERANCE_PX:
        notes.append(f"the correction, re-expressed in the CRS of '{source.path}', deviates by up to "
                     f"{deviation:.3f} px from the exact correction")
        log.warning(notes[-1])
    corrected = compose(fitted, source.grid.transform)
    if no_resample:
        write_georeferenced(source, corrected, path, driver=driver, creation_options=creation_options,
                            progress=progress, staging=staging)
    else:
        method = options.resampling_method(resampling)
        used = effective_resampling(method, kernel_downsampling(source.grid, corrected, grid))
        if used != method:
            notes.append(f"{resampling} replaced by {used.name}: this GDAL ({rasterio.__gdal_version__}) "
                         "shifts lanczos by half a pixel when downsampling")
            log.warning(notes[-1])
        write_warped(source, corrected, grid, path, resampling=method, nodata=nodata, progress=progress,
                     driver=driver, creation_options=creation_options, staging=staging,
                     allow_large_output=allow_large_output, local=correction.local,
                     frame=(Affine.identity(), correction.crs))
    add_band_pam_elements(staging.path(path), extras)
    return {"transform": corrected, "fit_deviation_px": deviation, "notes": notes}


def write_georeferenced(
    source: RasterSource, transform: Affine, path: str, *, driver: str | None,
    creation_options: dict[str, str] | None, progress: Progress, staging: Staging | None = None,
) -> None:
    """Copy every band of ``source`` bit for bit into ``path`` with geotransform ``transform``
    (data type, nodata, an internal or sidecar dataset mask, band descriptions, colour tables kept)."""
    grid = Grid(source.grid.crs, transform, source.grid.width, source.grid.height)
    spec = OutputSpec(path, grid, source.dtype, source.count, source.dataset.nodata, driver=driver,
                      creation_options=creation_options, band_metadata_from=source)
    windows = blocks(grid)
    own_mask = all(MaskFlags.per_dataset in flags for flags in source.dataset.mask_flag_enums)
    # a mask goes inside the GeoTIFF (GDAL before 3.7 would write a .msk sidecar beside the temporary file)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), writing([spec], staging) as (writer,):
        for done, window in enumerate(windows, 1):
            mask = source.dataset.dataset_mask(window=window) if own_mask else None
            writer.write_raw(window, source.dataset.read(window=window), mask)
            progress.update(done / len(windows))
