"""Output formats chosen the same way everywhere, nodata values per format, lossy formats only on
request, GDAL failures as one line, GDAL dataset names as inputs, damaged inputs, unusable output
paths, huge outputs and SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from coreg_plugin import InputError, align_image_pair, coregister_stack
from coreg_plugin.cli import main
from coreg_plugin.io.formats import check_format, recordable_nodata, resolve_driver
from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]
LANDSAT = ROOT.parent / "shared" / "data" / "landsat-rgb"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A small synthetic misregistered pair (uint16, 256 px)."""
    return synthetic.make_sample_pair(tmp_path_factory.mktemp("pair"), size=256, shift=(1.3, -0.6))


def typed_pair(folder: Path, dtype: str, scale: float, offset: float) -> dict:
    """The synthetic pair of :func:`pair` (256 px, shift (1.3, -0.6) px) as ``dtype`` without nodata."""
    truth = synthetic.realistic_scene(256, 256, seed=7) * scale + offset
    h = np.eye(3)
    h[:2, 2] = (1.3, -0.6)
    transform = synthetic.Affine(10, 0, 400000, 0, -10, 5800000)
    fixed, moving = folder / "fixed.tif", folder / "moving.tif"
    synthetic.write_raster(fixed, truth, transform, dtype=dtype)
    synthetic.write_raster(moving, synthetic.misregister(truth, h), transform, dtype=dtype)
    return {"fixed_image": str(fixed), "moving_image": str(moving)}


@pytest.fixture(scope="module")
def float_pair(tmp_path_factory):
    """The pair as float32 without nodata: the output's default nodata is then NaN."""
    return typed_pair(tmp_path_factory.mktemp("float_pair"), "float32", 1.0, 0.0)


@pytest.fixture(scope="module")
def byte_pair(tmp_path_factory):
    """The pair as uint8 without nodata."""
    return typed_pair(tmp_path_factory.mktemp("byte_pair"), "uint8", 200.0, 20.0)


@pytest.fixture
def no_registration(monkeypatch):
    """Fail the test if Align starts registering: a refusal must come before the work."""
    monkeypatch.setattr("coreg_plugin.workflows.align.register",
                        lambda *args, **kwargs: pytest.fail("registration started"))


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the command line."""
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("name", "driver"), [
    ("out.img", "HFA"), ("out.tif", "GTiff"), ("out.tiff", "GTiff"), ("out.TIF", "GTiff"), ("out.gif", "GIF"),
    ("out.nc", "netCDF"), ("out.xml", "PDS4"), ("out", "GTiff"), ("out.png", "PNG"), ("out.gpkg", "GPKG"),
])
def test_driver_for_each_ambiguous_extension_is_fixed(name, driver):
    assert resolve_driver(name, None) == driver


def test_explicit_table_wins_over_what_gdal_answers(monkeypatch):
    """GDAL 3.13 answers MiraMonRaster for .img: the output stays HFA whatever GDAL says."""
    import coreg_plugin.io.formats

    monkeypatch.setattr(coreg_plugin.io.formats, "driver_from_extension", lambda path: "MiraMonRaster")
    assert [resolve_driver(name, None) for name in ("x.img", "x.tif", "x.nc", "x.gif")] == [
        "HFA", "GTiff", "netCDF", "GIF"]


@pytest.mark.parametrize("name", ["out.grd", "out.hdr", "out.ter"])
def test_extensions_of_several_writable_formats_need_a_driver(name):
    with pytest.raises(InputError, match="several formats"):
        resolve_driver(name, None)
    assert resolve_driver(name, "GSBG") == "GSBG"


@pytest.mark.parametrize(("name", "driver"), [("out.png", "PNG"), ("out.img", "HFA"), ("out.nc", "netCDF")])
def test_align_writes_the_format_its_extension_names(tmp_path, pair, name, driver):
    out = tmp_path / name
    align_image_pair(pair["moving_image"], pair["fixed_image"], out, model="translation")
    with rasterio.open(out) as ds, rasterio.open(pair["moving_image"]) as moving:
        assert ds.driver == driver
        assert ds.dtypes[0] == "uint16"
        if driver != "PNG":
            assert ds.crs == moving.crs
            assert ds.transform.a == pytest.approx(moving.transform.a)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == [name]


def test_align_cog_through_the_driver_option(tmp_path, pair):
    out = tmp_path / "out.tif"
    code = main(["align", "--moving-image", pair["moving_image"], "--fixed-image", pair["fixed_image"],
                 "--output-image", str(out), "--model", "translation", "--driver", "COG", "--co", "BLOCKSIZE=128"])
    assert code == 0
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


@pytest.mark.parametrize(("name", "words"), [
    ("out.jpg", ["JPEG is lossy", "uint16"]),
    ("out.vrt", ["VRT only points at other files"]),
])
def test_align_refuses_formats_that_would_lose_the_data(tmp_path, pair, name, words):
    seen = []
    with pytest.raises(InputError) as caught:
        align_image_pair(pair["moving_image"], pair["fixed_image"], tmp_path / name, progress=seen.append)
    for word in words:
        assert word in str(caught.value)
    assert str(tmp_path / name) in str(caught.value)
    assert seen == []  # before any work
    assert list(tmp_path.iterdir()) == []


def test_stack_vrt_and_lossy_jpeg_are_refused(tmp_path):
    with pytest.raises(InputError, match="VRT only points"):
        coregister_stack([LANDSAT / "rgb1.tif"], LANDSAT / "RGB.byte.tif", tmp_path / "merged.vrt")
    values = np.random.default_rng(0).integers(0, 4000, (300, 300)).astype(float)
    wide = tmp_path / "wide.tif"
    synthetic.write_raster(wide, values, synthetic.Affine(10, 0, 400000, 0, -10, 5800000))
    with pytest.raises(InputError, match="JPEG is lossy"):
        coregister_stack([wide], wide, tmp_path / "merged.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.tif"]


def test_default_nodata_the_format_cannot_record_becomes_the_lowest_value(tmp_path, float_pair):
    """GPKG cannot record NaN (GDAL died after the registration with 'Unknown GDAL Error'): a
    nodata the user did not choose becomes float32's lowest value, recorded and reported."""
    out = tmp_path / "out.gpkg"
    summary = align_image_pair(float_pair["moving_image"], float_pair["fixed_image"], out,
                               model="translation").summary
    lowest = float(np.finfo("float32").min)
    assert summary["output_nodata"] == lowest
    with rasterio.open(out) as ds:
        assert (ds.driver, ds.dtypes[0], ds.nodata) == ("GPKG", "float32", lowest)
        values = ds.read(1, masked=True)
    assert 0 < values.mask.sum() < values.size / 10  # the edge the shift uncovers, and only that
    assert np.isfinite(values.compressed()).all()
    assert values.compressed().min() > -1


def test_chosen_nodata_the_format_cannot_record_is_refused_before_registration(
        tmp_path, float_pair, no_registration, capsys):
    out = tmp_path / "out.gpkg"
    code, err = run_cli(["align", "--moving-image", float_pair["moving_image"], "--fixed-image",
                         float_pair["fixed_image"], "--output-image", str(out), "--output-nodata", "nan"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(out) in err
    assert "nodata nan" in err
    assert "--output-nodata" in err
    assert list(tmp_path.iterdir()) == []


def test_stack_nodata_per_format(tmp_path, float_pair):
    """Stack: a default NaN becomes float32's lowest value in a GeoPackage; a chosen NaN is
    refused before any work, naming the stack's option."""
    moving, fixed = float_pair["moving_image"], float_pair["fixed_image"]
    out = tmp_path / "merged.gpkg"
    coregister_stack([moving], fixed, out)
    with rasterio.open(out) as ds:
        assert (ds.driver, ds.dtypes[0], ds.nodata) == ("GPKG", "float32", float(np.finfo("float32").min))
    seen = []
    refused = tmp_path / "refused.gpkg"
    with pytest.raises(InputError) as caught:
        coregister_stack([moving], fixed, refused, nodata=float("nan"), progress=seen.append)
    assert len(str(caught.value).splitlines()) == 1
    assert f"output '{refused}'" in str(caught.value)
    assert "--nodata, NODATA" in str(caught.value)
    assert max(seen, default=0) == 0
    assert not refused.exists()


def test_nodata_is_probed_with_its_value():
    """GPKG writes int16 through a UInt16 encoding whose nodata is always -32768."""
    with pytest.raises(InputError, match=r"'x.gpkg'.*nodata -9999 .*gives back -32768"):
        check_format("x.gpkg", "GPKG", "int16", 1, -9999.0)
    check_format("x.gpkg", "GPKG", "int16", 1, -32768.0)
    check_format("x.img", "HFA", "float32", 1, float("nan"))
    assert recordable_nodata("x.gpkg", "GPKG", "int16", 1, 0.0) == -32768
    assert recordable_nodata("x.gpkg", "GPKG", "float32", 1, float("nan")) == float(np.finfo("float32").min)
    assert recordable_nodata("x.gpkg", "GPKG", "uint16", 1, 0.0) == 0
    assert np.isnan(recordable_nodata("x.nc", "netCDF", "float32", 1, float("nan")))


def test_gdal_failure_after_the_work_is_one_line_naming_the_output(tmp_path, float_pair, monkeypatch, capsys):
    """A GDAL error while converting the finished output (here GPKG refusing NaN, the probe
    disabled) is one line naming the output and saying what GDAL said, exit 2, nothing written."""
    monkeypatch.setattr("coreg_plugin.io.formats._probe", lambda *args: "")
    out = tmp_path / "out.gpkg"
    code, err = run_cli(["align", "--moving-image", float_pair["moving_image"], "--fixed-image",
                         float_pair["fixed_image"], "--output-image", str(out), "--model", "translation",
                         "--output-nodata", "nan"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"output '{out}'" in err
    assert "NaN nodata value cannot be recorded" in err
    assert list(tmp_path.iterdir()) == []


def test_lossy_jpeg_only_on_request(tmp_path, byte_pair, no_registration):
    """uint8 JPEG loses up to tens of DN: refused unless a QUALITY creation option asks for it."""
    out = tmp_path / "out.jpg"
    with pytest.raises(InputError) as caught:
        align_image_pair(byte_pair["moving_image"], byte_pair["fixed_image"], out)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert str(out) in message
    assert "QUALITY" in message
    assert list(tmp_path.iterdir()) == []


def test_lossy_jpeg_written_with_quality(tmp_path, byte_pair):
    out = tmp_path / "out.jpg"
    align_image_pair(byte_pair["moving_image"], byte_pair["fixed_image"], out, model="translation",
                     creation_options={"quality": "95"})
    with rasterio.open(out) as ds, rasterio.open(byte_pair["moving_image"]) as moving:
        assert (ds.driver, ds.dtypes[0], ds.nodata, ds.crs) == ("JPEG", "uint8", 0, moving.crs)


@pytest.fixture
def gdal_names(tmp_path):
    """A GeoTIFF inside a zip, and a GeoPackage holding two raster tables of different content."""
    tile = LANDSAT / "rgb1.tif"
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tile, "inner/rgb1.tif")
    gpkg = tmp_path / "two.gpkg"
    with rasterio.open(LANDSAT / "RGB.byte.tif") as src:
        profile = src.profile
        window = rasterio.windows.Window(200, 200, 256, 256)
        for table, band in (("RED", 1), ("BLUE", 3)):  # rasterio upper-cases option values
            single = tmp_path / f"{table}.tif"
            p = dict(profile, count=1, width=256, height=256, transform=src.window_transform(window), driver="GTiff")
            with rasterio.open(single, "w", **p) as dst:
                dst.write(src.read(band, window=window), 1)
            rasterio.shutil.copy(single, gpkg, driver="GPKG", RASTER_TABLE=table, APPEND_SUBDATASET="YES")
            single.unlink()
    return f"/vsizip/{archive}/inner/rgb1.tif", f"GPKG:{gpkg}:RED", f"GPKG:{gpkg}:BLUE"


def test_stack_reads_exactly_the_gdal_dataset_named(tmp_path, gdal_names):
    zipped, red, blue = gdal_names
    out = tmp_path / "out"
    summary = coregister_stack([zipped, red, blue], LANDSAT / "RGB.byte.tif", mode="stack",
                               output_folder=out, resampling="nearest").summary
    assert [Path(i["output"]).name for i in summary["inputs"]] == ["rgb1.tif", "two_RED.tif", "two_BLUE.tif"]
    with rasterio.open(LANDSAT / "RGB.byte.tif") as ref:
        reference = ref.read()
    with rasterio.open(out / "two_RED.tif") as r, rasterio.open(out / "two_BLUE.tif") as b:
        red_values, blue_values = r.read(1), b.read(1)
    inside = np.s_[200:456, 200:456]  # the window each table holds, on the reference grid
    np.testing.assert_array_equal(red_values[inside], reference[0][inside])
    np.testing.assert_array_equal(blue_values[inside], reference[2][inside])
    assert not np.array_equal(red_values[inside], blue_values[inside])
    assert red_values[:200].max() == 0
    assert blue_values[:, 456:].max() == 0
    with rasterio.open(out / "rgb1.tif") as z, rasterio.open(LANDSAT / "rgb1.tif") as plain:
        assert z.count == plain.count == 3


def test_gdal_name_that_does_not_exist_names_the_file(tmp_path, gdal_names):
    _, red, _ = gdal_names
    missing = red.replace("two.gpkg", "none.gpkg")
    with pytest.raises(InputError, match="none.gpkg:RED' does not exist"):
        coregister_stack([missing], LANDSAT / "RGB.byte.tif", tmp_path / "x.tif")
    with pytest.raises(InputError, match="GREEN' is not a raster GDAL can read"):
        coregister_stack([red.replace(":RED", ":GREEN")], LANDSAT / "RGB.byte.tif", tmp_path / "x.tif")


def test_truncated_geotiff_one_line_exit_2(tmp_path, pair, capsys):
    moving = Path(pair["moving_image"])
    data = moving.read_bytes()
    with rasterio.open(moving) as ds:
        first_block = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) or 0)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: max(first_block + 64, len(data) // 3)])
    out = tmp_path / "out.tif"
    code = main(["align", "--moving-image", str(cut), "--fixed-image", pair["fixed_image"], "--output-image", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(cut) in err
    assert not out.exists()


def test_unusable_output_paths_found_before_the_work(tmp_path, pair, capsys):
    folder_as_output = tmp_path / "a_folder"
    folder_as_output.mkdir()
    seen = []
    with pytest.raises(InputError, match="a_folder' is a folder"):
        align_image_pair(pair["moving_image"], pair["fixed_image"], folder_as_output, progress=seen.append)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        code = main(["align", "--moving-image", pair["moving_image"], "--fixed-image", pair["fixed_image"],
                     "--output-image", str(readonly / "out.tif")])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1, err
        assert "cannot write in folder" in err
        assert str(readonly) in err
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
    assert seen == []


def test_huge_declared_grid_is_refused(tmp_path):
    """A VRT declaring 200000 x 200000 px over a small file: the output would need 40 GB."""
    vrt = tmp_path / "huge.vrt"
    with rasterio.open(LANDSAT / "rgb1.tif") as src:
        t = src.transform
    vrt.write_text(f"""<VRTDataset rasterXSize="200000" rasterYSize="200000">
  <SRS>EPSG:32618</SRS><GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1"><SimpleSource>
    <SourceFilename relativeToVRT="0">{LANDSAT / 'rgb1.tif'}</SourceFilename><SourceBand>1</SourceBand>
  </SimpleSource></VRTRasterBand></VRTDataset>""")
    out = tmp_path / "out"
    out.mkdir()
    if shutil.disk_usage(out).free > 200000 * 200000:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(out)],
                                 capture_output=True, check=False)
        if mounted.returncode != 0:
            pytest.skip("this disk has more than 40 GB free and no small tmpfs can be mounted")
    try:
        seen = []
        with pytest.raises(InputError) as caught:
            coregister_stack([vrt], vrt, out / "out.tif", progress=seen.append)
        message = str(caught.value)
        assert "200000 x 200000 px" in message
        assert "40000 MB uncompressed" in message
        assert "free on its disk" in message
        assert max(seen, default=0) < 10  # refused before the blocks
        assert list(out.iterdir()) == []
    finally:
        if os.path.ismount(out):
            subprocess.run(["umount", str(out)], check=True)


def test_sigterm_removes_staged_files(tmp_path):
    """SIGTERM during the write leaves nothing behind, as Ctrl-C does."""
    big = tmp_path / "big.tif"
    values = synthetic.realistic_scene(3000, 3000, seed=3) * 3000
    synthetic.write_raster(big, np.stack([values] * 4), synthetic.Affine(10, 0, 400000, 0, -10, 5800000))
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "coreg_plugin", "stack", str(big), "--reference", str(big),
                            "--output", str(out / "stack.tif"), "--resampling", "lanczos", "--log-to-console"],
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    before = []
    for line in run.stderr:  # wait until the output is being written
        before.append(line)
        if "uncompressed" in line:
            break
    assert run.poll() is None, "".join(before)  # still running: the signal arrives during the write
    time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    rest = run.stderr.read()
    assert run.wait(timeout=60) == 143, "".join(before) + rest
    assert "terminated; nothing was written" in rest
    assert list(out.iterdir()) == []
