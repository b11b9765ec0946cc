"""Writing rasters block by block into staged files, verified before they are published.

Values arrive as floats with NaN for "no data" and are converted back to the output's data type by
rounding to the nearest integer and clipping to the type's range (never truncating). Where there is
no data, the output holds its nodata value; a valid integer value that happens to equal nodata is
moved one step towards the type's middle (as GDAL's warper does), so it stays valid.

Formats (see :mod:`coreg_plugin.formats`): GeoTIFF (tiled, deflate with predictor, BIGTIFF when
needed) is written directly. Any other GDAL driver that can write (``COG``, ``HFA``, ``netCDF``, ...)
receives a complete intermediate GeoTIFF through ``rasterio.shutil.copy``.

Every output is written into a :class:`~.outputs.Staging` folder beside its target and
read back before it is published: GDAL reports failed block writes (a full disk) only as log
messages, so the file is opened again and every block of a GeoTIFF must be on disk (other formats
are read through). A failure names the output and says "no space left on device" when that is
the cause; the staged files are removed and an existing file at the target is left untouched.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..common import machine, options
from ..common.errors import OutputError
from .formats import SINGLE_FILE_DRIVERS, check_format, gdal_reasons, recordable_nodata, resolve_driver
from .outputs import Staging, free_bytes
from .raster_source import BandMetadata, Grid, RasterSource

log = logging.getLogger("coreg")

#: Output blocks are BLOCK x BLOCK pixels (a multiple of the GeoTIFF tile size).
BLOCK = 1024
TILE = 256
#: Threads warping output blocks while the calling thread writes.
WRITE_WORKERS = machine.threads(4)
#: Errors GDAL and rasterio raise while writing (``SystemError``: a GDAL call failed having only
#: logged why, rasterio's "Unknown GDAL Error").
WRITE_ERRORS = (RasterioError, CPLE_BaseError, OSError, SystemError)
#: Files a process keeps open besides its inputs and the outputs it writes (Python's, GDAL's, an
#: output opened again to verify or convert it, a process pool's pipes): under macOS's default
#: limit of 256, with a quarter for the inputs, 128 outputs are open at once (:func:`writers_at_once`).
RESERVED_FILES = 64

__all__ = ["OutputSpec", "BlockWriter", "writing", "resolve_driver", "check_driver",
           "SINGLE_FILE_DRIVERS", "default_nodata", "blocks", "to_dtype"]


def default_nodata(source: RasterSource) -> float:
    """The output nodata value when none is given: the source's, else NaN for floats, else 0."""
    if source.nodata is not None:
        return source.nodata
    return math.nan if np.dtype(source.dtype).kind == "f" else 0.0


def choose_nodata(chosen: float | None, source: RasterSource, path: str, driver: str) -> float:
    """The nodata of an output of ``source`` at ``path`` written by ``driver``: ``chosen`` (checked
    against the data type: ``InputError``), else :func:`default_nodata` if the format can record it,
    else one it can (:func:`.formats.recordable_nodata`)."""
    nodata = options.check_nodata_for_dtype(chosen, source.dtype, "output nodata")
    if nodata is not None:
        return nodata
    return recordable_nodata(path, driver, source.dtype, source.count, default_nodata(source))


def check_driver(
    path: str, driver: str, dtype: str = "uint8", count: int = 1, nodata: float | None = None,
    creation_options: Mapping[str, str] | None = None,
) -> None:
    """Raise ``OutputError`` now, before any work, if ``driver`` cannot write ``path``
    (see :func:`.formats.check_format`)."""
    check_format(path, driver, dtype, count, nodata, creation_options)


def geotiff_options(dtype: str, user: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tiled, deflate-compressed GeoTIFF options (predictor by type, BIGTIFF when needed); ``user``
    options override them (keys are case-insensitive)."""
    kind = np.dtype(dtype).kind
    options = {"TILED": "YES", "BLOCKXSIZE": str(TILE), "BLOCKYSIZE": str(TILE), "COMPRESS": "DEFLATE",
               "PREDICTOR": "3" if kind == "f" else "2", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}
    options.update({k.upper(): str(v) for k, v in (user or {}).items()})
    return options


def to_dtype(values: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """Convert float values (NaN = no data) to ``dtype``: round, clip, fill nodata."""
    dt = np.dtype(dtype)
    invalid = ~np.isfinite(values)
    if dt.kind == "f":
        out = values.astype(dt)
        out[invalid] = nodata
        return out
    info = np.iinfo(dt)
    rounded = np.rint(values)  # in place from here: one float copy, one integer one
    np.clip(rounded, info.min, info.max, out=rounded)
    some_invalid = bool(invalid.any())
    if some_invalid:
        rounded[invalid] = 0
    out = rounded.astype(dt)
    if not math.isnan(nodata):
        clash = out == nodata
        if some_invalid:
            clash &= ~invalid
        out[clash] = nodata + 1 if nodata < info.max else nodata - 1
    if some_invalid:
        out[invalid] = nodata
    return out


def blocks(grid: Grid, size: int = BLOCK) -> list[Window]:
    """Row-major windows of at most ``size`` x ``size`` pixels covering ``grid``."""
    return [
        Window(col, row, min(size, grid.width - col), min(size, grid.height - row))
        for row in range(0, grid.height, size)
        for col in range(0, grid.width, size)
    ]


@dataclass
class OutputSpec:
    """One raster to write: where, on which grid, with which type, bands and format."""

    path: str
    grid: Grid
    dtype: str
    count: int
    nodata: float
    driver: str | None = None
    creation_options: Mapping[str, str] | None = None
    descriptions: Sequence[str | None] | None = None
    band_metadata_from: RasterSource | BandMetadata | None = None
    resolved_driver: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        self.resolved_driver = resolve_driver(self.path, self.driver)


class BlockWriter:
    """Writes one :class:`OutputSpec` block by block into its staging folder; :meth:`finish`
    converts it to the target format and verifies it. Publishing is the :class:`Staging`'s job."""

    def __init__(self, spec: OutputSpec, staging: Staging) -> None:
        self.spec = spec
        self.staged = staging.path(spec.path)
        gtiff = spec.resolved_driver == "GTiff"
        self.blocks_file = self.staged if gtiff else os.path.join(staging.folder(spec.path), ".coreg-blocks.tif")
        options = geotiff_options(spec.dtype, spec.creation_options if gtiff else None)
        try:
            self.dataset = rasterio.open(
                self.blocks_file, "w", driver="GTiff", dtype=spec.dtype, count=spec.count, nodata=spec.nodata,
                crs=spec.grid.crs, transform=spec.grid.transform, width=spec.grid.width, height=spec.grid.height,
                **options,
            )
            self._describe()
        except WRITE_ERRORS as exc:
            from .raster_source import _out_of_file_handles, too_many_open_files

            if _out_of_file_handles():
                raise OutputError(f"output '{spec.path}' cannot be written: {too_many_open_files()}") from None
            raise write_failure(spec.path, self.blocks_file, exc) from None

    def _describe(self) -> None:
        spec, dst = self.spec, self.dataset
        if spec.band_metadata_from is not None:
            copy_band_metadata(spec.band_metadata_from, dst)
        else:
            dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (spec.count - 1)
        for i, text in enumerate(spec.descriptions or ()):
            if text:
                dst.set_band_description(i + 1, text)

    def write(self, window: Window, values: np.ndarray) -> None:
        """Write float ``values`` (bands, rows, cols; NaN = no data) into ``window``."""
        try:
            self.dataset.write(to_dtype(values, self.spec.dtype, self.spec.nodata), window=window)
        except WRITE_ERRORS as exc:
            raise write_failure(self.spec.path, self.blocks_file, exc) from None

    def write_parts(self, window: Window, parts: Sequence[tuple[int, np.ndarray | None]]) -> None:
        """Write the bands of ``window`` as consecutive parts: (band count, float values as
        :meth:`write` takes them, or None for bands of no data only)."""
        if len(parts) == 1 and parts[0][1] is not None:
            self.write(window, parts[0][1])
            return
        spec = self.spec
        out = np.full((spec.count, int(window.height), int(window.width)), spec.nodata, np.dtype(spec.dtype))
        band = 0
        for count, values in parts:
            if values is not None:
                out[band:band + count] = to_dtype(values, spec.dtype, spec.nodata)
            band += count
        self.write_raw(window, out)

    def write_empty(self, window: Window) -> None:
        """Write no data into every band of ``window``."""
        spec = self.spec
        self.write_raw(window, np.full((spec.count, int(window.height), int(window.width)), spec.nodata,
                                       np.dtype(spec.dtype)))

    def write_raw(self, window: Window, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Write ``values`` (bands, rows, cols) already in the output's data type, as they are, and
        the dataset mask (rows, cols; 0 = no data) if given."""
        try:
            self.dataset.write(values, window=window)
            if mask is not None:
                self.dataset.write_mask(mask, window=window)
        except WRITE_ERRORS as exc:
            raise write_failure(self.spec.path, self.blocks_file, exc) from None

    def finish(self) -> None:
        """Close, convert into the target format if it is not GeoTIFF, and verify the staged file.

        Any GDAL error on the way is raised as one ``OutputError`` line naming the output."""
        spec = self.spec
        try:
            with gdal_reasons():
                self.dataset.close()
                if self.blocks_file != self.staged:
                    options = {"COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER"} if spec.resolved_driver == "COG" else {}
                    options.update({k.upper(): str(v) for k, v in (spec.creation_options or {}).items()})
                    rasterio.shutil.copy(self.blocks_file, self.staged, driver=spec.resolved_driver, **options)
                    os.remove(self.blocks_file)
                verify_written(self.staged, spec)
        except WRITE_ERRORS as exc:
            raise write_failure(spec.path, self.staged, exc) from None

    def discard(self) -> None:
        """Close the dataset if it is open (the staging folder is removed by its owner)."""
        if not self.dataset.closed:
            try:
                self.dataset.close()
            except WRITE_ERRORS:
                pass  # the staged file is thrown away anyway


def verify_written(path: str, spec: OutputSpec) -> None:
    """Open the written file again and check it: its size and bands, and for GeoTIFF and COG that
    every block of every band is on disk (a block GDAL failed to write has no offset); other formats
    are read through. Raises ``OutputError`` naming ``spec.path`` if anything is missing."""
    with rasterio.open(path) as ds:
        if (ds.width, ds.height, ds.count) != (spec.grid.width, spec.grid.height, spec.count):
            raise OutputError(f"output '{spec.path}': the written file has {ds.count} band(s) of "
                              f"{ds.width} x {ds.height} px instead of {spec.count} of "
                              f"{spec.grid.width} x {spec.grid.height}")
        if ds.driver != "GTiff":
            for band in range(1, ds.count + 1):
                ds.checksum(band)
            return
        for band in range(1, ds.count + 1):
            rows, cols = ds.block_shapes[band - 1]
            for y in range(math.ceil(ds.height / rows)):
                for x in range(math.ceil(ds.width / cols)):
                    if ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band) in (None, "", "0"):
                        raise OutputError(f"output '{spec.path}': block {x}, {y} of band {band} is missing "
                                          f"from the written file{_no_space_hint(path)}")


def _no_space_hint(path: str) -> str:
    return ": no space left on device" if _disk_full(path) else ""


def _disk_full(path: str) -> bool:
    """Whether one more tile (1 MB) cannot be written beside ``path`` now."""
    probe = os.path.join(os.path.dirname(os.path.abspath(path)), ".coreg-space-probe")
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        if os.path.exists(probe):
            os.remove(probe)
    return False


def write_failure(target: str, staged: str, error: BaseException) -> OutputError:
    """The error to raise when writing ``target`` (staged at ``staged``) failed with ``error``."""
    if isinstance(error, OutputError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) or _disk_full(staged):
        return OutputError(f"output '{target}': no space left on device (the disk holding "
                           f"'{os.path.dirname(os.path.abspath(target))}' is full); nothing was written")
    reason = " ".join(str(error).split()) or type(error).__name__
    return OutputError(f"output '{target}': writing failed ({reason}); nothing was written")


def output_bytes(specs: Sequence[OutputSpec]) -> int:
    """Uncompressed size of ``specs`` in bytes (an upper bound for compressed formats)."""
    return sum(s.grid.width * s.grid.height * s.count * np.dtype(s.dtype).itemsize for s in specs)


def check_space(specs: Sequence[OutputSpec], allow_large_output: bool = False) -> None:
    """Log the size of the outputs and raise ``LargeOutputError`` when their uncompressed size exceeds
    the free space of their disk, unless ``allow_large_output`` (compression may make them fit).

    The message ends without naming the option: each interface names its own."""
    from ..common.errors import LargeOutputError

    for spec in specs:
        size = output_bytes([spec])
        log.info("output %s: %d x %d px, %d band(s) of %s, %.1f MB uncompressed", spec.path, spec.grid.width,
                 spec.grid.height, spec.count, spec.dtype, size / 1e6)
    if allow_large_output or not specs:
        return
    by_folder: dict[int, list[OutputSpec]] = {}
    for spec in specs:
        by_folder.setdefault(os.stat(os.path.dirname(os.path.abspath(spec.path))).st_dev, []).append(spec)
    for group in by_folder.values():
        needed, free = output_bytes(group), free_bytes(group[0].path)
        if needed > free:
            first = group[0]
            others = " with the other outputs there" if len(group) > 1 else ""
            raise LargeOutputError(
                f"output '{first.path}': {first.grid.width} x {first.grid.height} px, {first.count} band(s) of "
                f"{first.dtype} ({needed / 1e6:.0f} MB uncompressed{others}) is more than the "
                f"{free / 1e6:.0f} MB free on its disk (compression may make it fit)"
            )


@contextmanager
def writing(
    specs: Sequence[OutputSpec], staging: Staging | None = None, *, allow_large_output: bool = False,
    check: bool = True,
) -> Iterator[list[BlockWriter]]:
    """Open a writer per spec; when the block succeeds, finish and verify them all.

    With a ``staging`` of the caller (one that also holds the run's other outputs), the caller
    publishes; without one, the outputs are published here, all or none. On failure nothing is
    published and existing files at the targets are untouched. ``check``: check the formats and
    the free space here (off when the caller checked every output of the run at once and writes
    them a group at a time, see :func:`writers_at_once`).
    """
    if check:
        for spec in specs:
            check_format(spec.path, spec.resolved_driver, spec.dtype, spec.count, spec.nodata, spec.creation_options)
        check_space(specs, allow_large_output)
    own = Staging([("output", s.path) for s in specs]) if staging is None else None
    writers: list[BlockWriter] = []
    try:
        for spec in specs:
            writers.append(BlockWriter(spec, staging or own))
        yield writers
        for writer in writers:
            writer.finish()
        if own is not None:
            own.publish()
    finally:
        for writer in writers:
            writer.discard()
        if own is not None:
            own.discard()


def writers_at_once(reserved: int) -> int:
    """How many outputs may be open for writing at once (one file each): the process's soft limit
    of open files less ``reserved`` (what its readers may hold at once) and :data:`RESERVED_FILES`;
    at least 1 (the limit as :func:`coreg_plugin.common.machine.open_files` gives it)."""
    return max(1, machine.open_files() - reserved - RESERVED_FILES)


def copy_band_metadata(source: RasterSource | BandMetadata, dst: rasterio.io.DatasetWriter) -> None:
    """Carry band descriptions, colour interpretation, scale/offset and units over to ``dst``."""
    meta = source.band_metadata if isinstance(source, RasterSource) else source
    for i, text in enumerate(meta.descriptions):
        if text:
            dst.set_band_description(i + 1, text)
    for i, unit in enumerate(meta.units):
        if unit:
            dst.set_band_unit(i + 1, unit)
    dst.scales = meta.scales
    dst.offsets = meta.offsets
    dst.colorinterp = meta.colorinterp
    for band, colormap in enumerate(meta.colormaps, start=1):
        if colormap is not None:
            dst.write_colormap(band, colormap)
