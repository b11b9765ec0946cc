"""Issue 25: every output format x data type x correction model x resampling method gets a right
output or a clear refusal.

One correction per model (translation, affine, local) is estimated once, by Align on small
synthetic pairs, and applied with :func:`coreg_plugin.apply_correction` to one 96 x 96 px raster
of the scene per data type. Each cell either

- writes a file whose driver, georeference (the input's grid), data type, nodata (the input's, else
  NaN for floats and 0 for integers; what GPKG can record instead: float32's lowest value, -32768
  for int16) and pixels are right: values as an independent expectation rounds them, class values
  only (no foreign value) for ``nearest`` and ``mode``; or
- refuses with one line naming the output (VRT, JPEG without a ``QUALITY`` creation option, PNG
  for int16 and float32), writing nothing.

The expectation for translations and affine maps is GDAL's warper itself (``rasterio.warp.reproject``
of the input with its corrected geotransform). For the local model it is GDAL's kernels (nearest,
bilinear, 3-lobe lanczos, checked against GDAL on the affine correction) evaluated at the exact
source position of every output pixel (the correction file's field inverted point by point), with
:data:`LOCAL_TOLERANCE_PX` of slack for the local warp's affine pieces; pixels whose kernel touches
a hole or the raster's edge are not compared. A few cells go through Align itself, to see the
format refused before the registration starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from scipy import ndimage

from coreg_plugin import InputError, align_image_pair, apply_correction
from coreg_plugin.common.affines import apply, compose
from coreg_plugin.correction.file import Correction, read_correction
from coreg_plugin.testing import synthetic

#: Output name and driver option of each format (COG is chosen by the driver option).
FORMATS: dict[str, tuple[str, str | None]] = {
    "GTiff": ("out.tif", None), "COG": ("out.tif", "COG"), "GPKG": ("out.gpkg", None), "HFA": ("out.img", None),
    "netCDF": ("out.nc", None), "PNG": ("out.png", None), "JPEG": ("out.jpg", None), "VRT": ("out.vrt", None),
}
MODELS = ("translation", "affine", "local")
METHODS = ("nearest", "mode", "bilinear", "lanczos")
#: Side (px) of the estimation pairs and of the rasters the corrections are applied to.
PAIR_PX = 320
INPUT_PX = 96
#: Where the applied rasters start in the pair's grid (px), well inside the corrections' domain.
INPUT_OFFSET = 96
PIXEL_M = 10.0
ORIGIN = Affine(PIXEL_M, 0, 400000, 0, -PIXEL_M, 5800000)
#: Slack (source px) of the local expectation: the local warp maps tiles of at least 32 px by one
#: affine map each (coreg_plugin.apply.local_warp); over this field its positions were measured up to
#: 0.053 px from the exact ones. A half-pixel error is far beyond it.
LOCAL_TOLERANCE_PX = 0.1
#: Share of the pixels compared with the expectation at least (default 0.6): local nearest leaves
#: out pixels within LOCAL_TOLERANCE_PX of a source pixel's edge, local mode has no expectation.
MIN_COMPARED = {("local", "nearest"): 0.5, ("local", "mode"): 0.0}
LOWEST_FLOAT32 = float(np.finfo("float32").min)
#: Holes of nodata in the inputs that declare nodata (rows, columns).
HOLE = np.s_[30:42, 44:56]


@dataclass(frozen=True)
class Kind:
    """An input data type: its values are ``scale`` x scene + ``offset`` (classes: 8 class values)."""

    dtype: str
    nodata: float | None
    scale: float = 1.0
    offset: float = 0.0
    classes: bool = False

    @property
    def default_nodata(self) -> float:
        """The output's nodata when none is chosen: the input's, else NaN for floats, else 0."""
        if self.nodata is not None:
            return self.nodata
        return math.nan if np.dtype(self.dtype).kind == "f" else 0.0


KINDS = {
    "uint8": Kind("uint8", None, classes=True),
    "uint16-nodata": Kind("uint16", 0.0, 3000.0, 500.0),
    "int16": Kind("int16", None, 3000.0, -1500.0),
    "float32-nan": Kind("float32", math.nan),
    "float32": Kind("float32", None),
}


def refusal(fmt: str, kind: Kind) -> str | None:
    """Words the refusal of a cell must contain, or None when the cell must be written."""
    if fmt == "VRT":
        return "VRT only points at other files"
    if fmt == "JPEG":
        return "QUALITY" if kind.dtype == "uint8" else "lossy"
    if fmt == "PNG" and kind.dtype not in ("uint8", "uint16"):
        return "cannot write"
    return None


def expected_nodata(fmt: str, kind: Kind) -> float:
    """The nodata a written cell must record: the default, or what GPKG records instead."""
    default = kind.default_nodata
    if fmt == "GPKG" and kind.dtype == "float32" and math.isnan(default):
        return LOWEST_FLOAT32
    if fmt == "GPKG" and kind.dtype == "int16":
        return -32768.0
    return default


def same(a: float | None, b: float | None) -> bool:
    """Nodata equality, NaN equal to NaN."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


# -- the scene, the corrections, the inputs ---------------------------------------------------------


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """The true scene (PAIR_PX square, values about 0 to 1)."""
    return synthetic.realistic_scene(PAIR_PX, PAIR_PX, seed=11)


def misregistered(scene: np.ndarray, model: str) -> np.ndarray:
    """The moving image of each model's pair: shifted; also rotated and scaled; or bent locally."""
    shift = (1.3, -0.7)
    if model == "local":
        dx, dy = synthetic.local_jitter_field(scene.shape, 0.6, PAIR_PX, seed=3)
        return synthetic.displace(scene, dx + shift[0], dy + shift[1])
    h = np.eye(3)
    if model == "affine":
        angle, scale, centre = np.radians(0.4), 1.003, PAIR_PX / 2
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        h[:2, :2] = linear
        h[:2, 2] = np.array([centre, centre]) - linear @ [centre, centre]
    h[:2, 2] += shift
    return synthetic.misregister(scene, h)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, scene) -> dict[str, tuple[str, str]]:
    """(moving, fixed) per model, uint16."""
    folder = tmp_path_factory.mktemp("pairs")
    fixed = folder / "fixed.tif"
    synthetic.write_raster(fixed, scene * 3000 + 500, ORIGIN)
    found = {}
    for model in MODELS:
        moving = folder / f"moving_{model}.tif"
        synthetic.write_raster(moving, misregistered(scene, model) * 3000 + 500, ORIGIN)
        found[model] = (str(moving), str(fixed))
    return found


@pytest.fixture(scope="module")
def corrections(tmp_path_factory, pairs) -> dict[str, Correction]:
    """Each model's correction, estimated once by Align (tie-point windows of 64 px)."""
    folder = tmp_path_factory.mktemp("corrections")
    found = {}
    for model in MODELS:
        saved = folder / f"{model}.json"
        align_image_pair(*pairs[model], folder / f"{model}.tif", model=model, window_size=64, correction_file=saved)
        found[model] = read_correction(saved)
        assert found[model].model == model
    return found


def input_values(scene: np.ndarray, kind: Kind) -> np.ndarray:
    """The input raster's values (float, NaN in the hole if it declares nodata)."""
    part = scene[INPUT_OFFSET:INPUT_OFFSET + INPUT_PX, INPUT_OFFSET:INPUT_OFFSET + INPUT_PX].astype(float)
    if kind.classes:
        edges = np.quantile(part, np.linspace(0, 1, 9)[1:-1])
        values = 25.0 * (np.digitize(part, edges) + 1)
    else:
        values = part * kind.scale + kind.offset
    if kind.nodata is not None:
        values[HOLE] = np.nan
    return values


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, scene) -> dict[str, str]:
    """One INPUT_PX raster of the scene per kind."""
    folder = tmp_path_factory.mktemp("inputs")
    transform = compose(ORIGIN, Affine.translation(INPUT_OFFSET, INPUT_OFFSET))
    found = {}
    for name, kind in KINDS.items():
        values = input_values(scene, kind)
        if kind.nodata is not None:
            values = np.where(np.isnan(values), kind.nodata, values)
        path = folder / f"{name}.tif"
        synthetic.write_raster(path, values, transform, dtype=kind.dtype, nodata=kind.nodata)
        found[name] = str(path)
    return found


# -- the expectation --------------------------------------------------------------------------------


def read_input(path: str) -> tuple[np.ndarray, Affine, rasterio.crs.CRS]:
    """Band 1 as float with NaN where the input has no data, its transform and CRS."""
    with rasterio.open(path) as ds:
        values = ds.read(1, masked=True).astype(float).filled(np.nan)
        return values, ds.transform, ds.crs


def gdal_expectation(correction: Correction, path: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's warp of the input with its corrected geotransform onto its own grid: (values with NaN
    for no data, the pixels compared: all)."""
    values, transform, crs = read_input(path)
    expected = np.full(values.shape, np.nan)
    reproject(values, expected, src_transform=compose(correction.affine, transform), src_crs=crs,
              dst_transform=transform, dst_crs=crs, src_nodata=np.nan, dst_nodata=np.nan,
              resampling=Resampling[method])
    return expected, np.ones(values.shape, bool)


def source_positions(correction: Correction, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """(2, rows, cols): the exact source pixel position (x, y; pixel corners at integers) whose
    content belongs at each output pixel's centre: where the correction (its local field, else its
    affine map) takes the apparent position to the output pixel's."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    xs, ys = apply(transform, cols.ravel(), rows.ravel())
    if correction.local is not None:
        apparent = correction.local.inverse(np.column_stack([xs, ys]), iterations=20)
        xs, ys = apparent[:, 0], apparent[:, 1]
    else:
        xs, ys = apply(~correction.affine, xs, ys)
    px, py = apply(~transform, xs, ys)
    return np.stack([np.asarray(px).reshape(shape), np.asarray(py).reshape(shape)])


def lanczos(t: np.ndarray) -> np.ndarray:
    """GDAL's 3-lobe lanczos kernel."""
    return np.where(np.abs(t) < 3, np.sinc(t) * np.sinc(t / 3), 0.0)


def kernel_at(values: np.ndarray, positions: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's ``method`` (nearest, bilinear, lanczos) at each source position (x, y; pixel corners
    at integers), as GDAL computes it at the same resolution: (values, where every tap of the kernel
    is inside the raster and valid). Nearest also counts as undecided within LOCAL_TOLERANCE_PX of
    a pixel edge."""
    px, py = positions
    if method == "nearest":
        col, row = np.floor(px).astype(int), np.floor(py).astype(int)
        taps = [(0, 0, 1.0)]
        u = v = None
    else:
        u, v = px - 0.5, py - 0.5  # pixel centres at integers
        col, row = np.floor(u).astype(int), np.floor(v).astype(int)
        reach = range(0, 2) if method == "bilinear" else range(-2, 4)
        taps = [(dr, dc, None) for dr in reach for dc in reach]
    total = np.zeros(px.shape)
    weights = np.zeros(px.shape)
    decided = np.ones(px.shape, bool)
    for dr, dc, weight in taps:
        r, c = row + dr, col + dc
        inside = (r >= 0) & (r < values.shape[0]) & (c >= 0) & (c < values.shape[1])
        tap = values[np.clip(r, 0, values.shape[0] - 1), np.clip(c, 0, values.shape[1] - 1)]
        decided &= inside & np.isfinite(tap)
        if weight is None:
            wx = 1 - np.abs(u - c) if method == "bilinear" else lanczos(u - c)
            wy = 1 - np.abs(v - r) if method == "bilinear" else lanczos(v - r)
            weight = wx * wy
        total += weight * np.nan_to_num(tap)
        weights += weight
    if method == "nearest":
        fx, fy = px - np.floor(px), py - np.floor(py)
        decided &= np.minimum(np.minimum(fx, 1 - fx), np.minimum(fy, 1 - fy)) > LOCAL_TOLERANCE_PX
    return total / weights, decided


def local_expectation(correction: Correction, path: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's kernels at the exact source positions of the local correction: (values, decided)."""
    values, transform, _ = read_input(path)
    positions = source_positions(correction, transform, values.shape)
    if method == "mode":  # no value to expect: class values only (checked for every cell)
        return np.full(values.shape, np.nan), np.zeros(values.shape, bool)
    expected, decided = kernel_at(values, positions, method)
    outside = (positions[0] < -LOCAL_TOLERANCE_PX) | (positions[0] > values.shape[1] + LOCAL_TOLERANCE_PX) | \
        (positions[1] < -LOCAL_TOLERANCE_PX) | (positions[1] > values.shape[0] + LOCAL_TOLERANCE_PX)
    expected[outside] = np.nan
    return expected, decided | outside


@pytest.fixture(scope="module")
def expectations(corrections, inputs) -> dict:
    """(values, decided) per (model, kind, method), computed on first use."""
    cache: dict = {}

    def expectation(model: str, kind: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        key = (model, kind, method)
        if key not in cache:
            make = local_expectation if model == "local" else gdal_expectation
            cache[key] = make(corrections[model], inputs[kind], method)
        return cache[key]

    return expectation


def as_written(values: np.ndarray, kind: Kind, nodata: float) -> np.ndarray:
    """Float values (NaN = no data) as the output stores them: rounded and clipped for integers, a
    valid value equal to nodata moved one step towards the type's middle; NaN where no data."""
    if kind.dtype == "float32":
        return values.astype(np.float32).astype(float)
    info = np.iinfo(kind.dtype)
    out = np.clip(np.rint(values), info.min, info.max)
    clash = out == nodata
    out[clash] = nodata + 1 if nodata < info.max else nodata - 1
    return out


def steepness(values: np.ndarray, axis: int) -> np.ndarray:
    """The largest change between neighbours along ``axis`` around each pixel (3 x 3)."""
    step = np.abs(np.diff(np.nan_to_num(values), axis=axis))
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 0)
    before = np.pad(step, pad)
    pad[axis] = (0, 1)
    return ndimage.maximum_filter(np.maximum(before, np.pad(step, pad)), size=3)


def tolerance(expected: np.ndarray, kind: Kind, model: str, method: str) -> np.ndarray:
    """Largest difference allowed per pixel: none for nearest and mode, rounding for integers and
    float32 otherwise; under the local model also what LOCAL_TOLERANCE_PX along each axis changes."""
    if method in ("nearest", "mode"):
        return np.zeros(expected.shape)
    rounding = 1.0 if kind.dtype != "float32" else 1e-4 * max(1.0, float(np.nanmax(np.abs(expected))))
    if model != "local":
        return np.full(expected.shape, rounding)
    return rounding + LOCAL_TOLERANCE_PX * (steepness(expected, 0) + steepness(expected, 1))


def test_local_expectation_is_gdal_on_an_affine_map(corrections, inputs):
    """The kernels of the local expectation, at the affine correction's exact positions, give what
    GDAL's warper gives (where every tap is inside and valid)."""
    correction = corrections["affine"]
    for kind in ("uint16-nodata", "float32"):
        values, transform, _ = read_input(inputs[kind])
        positions = source_positions(correction, transform, values.shape)
        for method in ("nearest", "bilinear", "lanczos"):
            gdal, _ = gdal_expectation(correction, inputs[kind], method)
            ours, decided = kernel_at(values, positions, method)
            assert decided.mean() > 0.3
            scale = np.nanmax(np.abs(values))
            np.testing.assert_allclose(ours[decided], gdal[decided], rtol=0, atol=2e-5 * scale, err_msg=method)


# -- the cells --------------------------------------------------------------------------------------


def assert_one_line_naming(error: BaseException, out: Path, words: str) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, message
    assert f"'{out}'" in message, message
    assert words in message, message


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind_name", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_cell(tmp_path, fmt, kind_name, model, method, corrections, inputs, expectations):
    kind = KINDS[kind_name]
    name, driver = FORMATS[fmt]
    out = tmp_path / name
    words = refusal(fmt, kind)
    if words is not None:
        with pytest.raises(InputError) as caught:
            apply_correction(corrections[model], inputs[kind_name], out, resampling=method, driver=driver)
        assert_one_line_naming(caught.value, out, words)
        assert list(tmp_path.iterdir()) == []
        return
    summary = apply_correction(corrections[model], inputs[kind_name], out, resampling=method, driver=driver)
    nodata = expected_nodata(fmt, kind)
    assert same(summary["output_nodata"], None if math.isnan(nodata) else nodata)
    source, transform, crs = read_input(inputs[kind_name])
    with rasterio.open(out) as ds:
        assert ds.driver == ("GTiff" if fmt == "COG" else fmt)
        if fmt == "COG":
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.crs == crs
        assert ds.transform.almost_equals(transform, precision=1e-6)
        assert (ds.count, ds.width, ds.height, ds.dtypes[0]) == (1, INPUT_PX, INPUT_PX, kind.dtype)
        assert same(ds.nodata, nodata), ds.nodata
        got = ds.read(1, masked=True).astype(float).filled(np.nan)
    valid = np.isfinite(got)
    if method in ("nearest", "mode"):
        foreign = np.setdiff1d(got[valid], as_written(source[np.isfinite(source)], kind, nodata))
        assert foreign.size == 0, f"{foreign.size} values not in the input, e.g. {foreign[:5]}"
    expected, decided = expectations(model, kind_name, method)
    assert decided.mean() >= MIN_COMPARED.get((model, method), 0.6)
    stored = as_written(expected, kind, nodata)
    assert np.array_equal(valid[decided], np.isfinite(stored)[decided]), \
        f"{int((valid != np.isfinite(stored))[decided].sum())} pixels valid in one and not the other"
    both = decided & valid
    excess = np.abs(got - stored)[both] - tolerance(expected, kind, model, method)[both]
    assert (excess <= 0).all(), f"{int((excess > 0).sum())} pixels off, by up to {excess.max():.4g} beyond tolerance"


# -- the same cells through Align: refused before the registration, or written -----------------------


@pytest.fixture
def no_registration(monkeypatch):
    monkeypatch.setattr("coreg_plugin.workflows.align.register",
                        lambda *args, **kwargs: pytest.fail("registration started"))


@pytest.fixture(scope="module")
def float_pair(tmp_path_factory, scene) -> tuple[str, str]:
    """The translation pair as float32 without nodata (the output's default nodata is NaN)."""
    folder = tmp_path_factory.mktemp("float_pair")
    fixed, moving = folder / "fixed.tif", folder / "moving.tif"
    synthetic.write_raster(fixed, scene, ORIGIN, dtype="float32")
    synthetic.write_raster(moving, misregistered(scene, "translation"), ORIGIN, dtype="float32")
    return str(moving), str(fixed)


@pytest.mark.parametrize(("name", "options", "words"), [
    ("out.vrt", {}, "VRT only points at other files"),
    ("out.png", {}, "cannot write 1 band(s) of float32"),
    ("out.jpg", {"creation_options": {"QUALITY": "90"}}, "lossy"),
    ("out.gpkg", {"output_nodata": math.nan}, "cannot write nodata nan for float32 data"),
    ("out.gpkg", {"output_nodata": math.nan}, "choose another output nodata value (--output-nodata"),
])
def test_align_refuses_before_the_registration(tmp_path, float_pair, no_registration, name, options, words):
    out = tmp_path / name
    with pytest.raises(InputError) as caught:
        align_image_pair(*float_pair, out, **options)
    assert_one_line_naming(caught.value, out, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "driver", "nodata"), [
    ("out.gpkg", "GPKG", LOWEST_FLOAT32), ("out.nc", "netCDF", None),
])
def test_align_writes_float_data_with_a_nodata_the_format_records(tmp_path, float_pair, name, driver, nodata):
    """GPKG cannot record NaN, the default: float32's lowest value instead; netCDF records NaN."""
    out = tmp_path / name
    summary = align_image_pair(*float_pair, out, model="translation", window_size=64).summary
    assert summary["output_nodata"] == nodata
    with rasterio.open(out) as ds, rasterio.open(float_pair[0]) as moving:
        assert (ds.driver, ds.dtypes[0], ds.crs) == (driver, "float32", moving.crs)
        assert ds.transform.almost_equals(moving.transform, precision=1e-6)
        assert same(ds.nodata, math.nan if nodata is None else nodata)
        values = ds.read(1, masked=True)
    assert 0 < values.mask.mean() < 0.05  # the edge the shift uncovers
    assert np.all((values.compressed() > -1) & (values.compressed() < 2))
