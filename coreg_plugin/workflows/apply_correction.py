"""Apply Correction: a saved correction applied to any raster of the scene (every band, masks, DEMs).

The pipeline: read the correction -> open the raster and measure how much of it lies in the
correction's domain -> choose the output's nodata -> apply and write
(:func:`coreg_plugin.apply.correct.apply_to_source`) -> summarise.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from affine import Affine

from ..apply.correct import apply_to_source, check_georeference_only, domain_coverage
from ..common import options
from ..common.affines import apply
from ..common.errors import InputError
from ..common.progress import CancelCallback, Progress, ProgressCallback
from ..correction.file import Correction, read_correction
from ..io.formats import resolve_driver
from ..io.outputs import check_outputs
from ..io.raster_source import RasterSource
from ..io.writer import choose_nodata

log = logging.getLogger("coreg")


def apply_correction(
    correction: str | os.PathLike | Correction,
    input_image: str | os.PathLike,
    output_image: str | os.PathLike,
    *,
    resampling: str = options.DEFAULT_RESAMPLING,
    no_resample: bool = False,
    output_nodata: float | None = None,
    driver: str | None = None,
    creation_options: dict[str, str] | None = None,
    allow_large_output: bool = False,
    progress: ProgressCallback | None = None,
    is_cancelled: CancelCallback | None = None,
) -> dict[str, Any]:
    """Apply a saved correction to ``input_image`` (any raster of the scene) and write ``output_image``
    on the input's own grid, every band; return a JSON-friendly summary.

    ``resampling``: any rasterio method (``nearest`` or ``mode`` keep a class raster's values).
    ``no_resample``: copy the pixels bit for bit and move only the geotransform (translations only;
    otherwise ``InputError`` naming the model). ``driver`` and ``creation_options`` choose the
    output format (default: from the extension, else GeoTIFF). ``allow_large_output`` writes an output
    whose uncompressed size exceeds the disk's free space (refused otherwise).

    Raises ``InputError`` when the correction file is missing, damaged, of an unknown schema
    version or not a correction, or when the input lies wholly outside the correction's domain
    (nothing is written); an input partly outside is corrected with a warning giving the fraction
    covered. Nothing is written at ``output_image`` unless the whole run succeeds.
    """
    started = time.perf_counter()
    input_image, output_image = os.fspath(input_image), os.fspath(output_image)
    name, loaded = _read(correction)
    _check_options(loaded, name, resampling, no_resample, output_nodata)
    tracker = Progress(progress, is_cancelled)
    inputs = [("input", input_image)] + ([] if isinstance(correction, Correction)
                                         else [("correction file", os.fspath(correction))])
    check_outputs([("output", output_image)], inputs)
    with options.gdal_environment(), RasterSource(input_image, "input") as source:
        coverage, notes = _coverage(loaded, source, name)
        nodata = choose_nodata(output_nodata, source, output_image, resolve_driver(output_image, driver))
        tracker.check()
        done = apply_to_source(loaded, source, source.grid, output_image, resampling=resampling,
                               nodata=nodata, no_resample=no_resample, driver=driver,
                               creation_options=creation_options, allow_large_output=allow_large_output,
                               progress=tracker.span(0.0, 1.0), name=name)
        shift_px, shift_m = _shift_at_centre(source, done["transform"])
    log.info("wrote %s", output_image)
    return {
        "correction": name,
        "input_image": input_image,
        "output_image": output_image,
        "model": loaded.model,
        "no_resample": no_resample,
        "resampling": None if no_resample else resampling,
        "domain_coverage": round(coverage, 4),
        "shift_px": shift_px,
        "shift_m": shift_m,
        "corrected_geotransform": list(done["transform"].to_gdal()),
        "fit_deviation_px": round(done["fit_deviation_px"], 6),
        "output_nodata": None if nodata is None or math.isnan(nodata) else nodata,
        "notes": notes + done["notes"],
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _read(correction: str | os.PathLike | Correction) -> tuple[str, Correction]:
    """The correction's name for messages, and the correction (read from its file if a path)."""
    if isinstance(correction, Correction):
        return "the correction", correction
    return f"correction file '{os.fspath(correction)}'", read_correction(correction)


def _check_options(correction: Correction, name: str, resampling: str, no_resample: bool,
                   output_nodata: float | None) -> None:
    """``InputError`` for options that cannot go together, before any raster is opened."""
    if not no_resample:
        options.resampling_method(resampling)
        return
    check_georeference_only(correction, name)
    if output_nodata is not None:
        raise InputError("a georeference-only correction copies the input's pixels and keeps its nodata: "
                         "leave out --output-nodata, or resample")


def _coverage(correction: Correction, source: RasterSource, name: str) -> tuple[float, list[str]]:
    """The share of ``source`` inside the correction's domain, and the note when it is partial;
    ``InputError`` when it is wholly outside."""
    coverage = domain_coverage(correction, source.grid)
    if coverage == 0.0:
        raise InputError(f"input '{source.path}' lies wholly outside the domain of {name} (where it was "
                         "estimated): nothing written")
    if coverage == 1.0:
        return coverage, []
    note = (f"input '{source.path}' is only partly inside the domain of {name}: {coverage:.1%} of "
            "it is covered; outside it the correction is extrapolated")
    log.warning(note)
    return coverage, [note]


def _shift_at_centre(source: RasterSource, corrected: Affine) -> tuple[dict[str, float], dict[str, float]]:
    """How far the correction moved the raster's centre: in its pixels (x right, y down) and in map
    units of its CRS (x east, y north for north-up CRSs)."""
    centre = (source.grid.width / 2, source.grid.height / 2)
    x0, y0 = apply(source.grid.transform, *centre)
    x1, y1 = apply(corrected, *centre)
    col, row = apply(~source.grid.transform, x1, y1)
    return ({"x": round(float(col - centre[0]), 4), "y": round(float(row - centre[1]), 4)},
            {"x": round(float(x1 - x0), 4), "y": round(float(y1 - y0), 4)})
