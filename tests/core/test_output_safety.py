"""Outputs under real conditions: full disks, outputs that are inputs, reports that cannot be made,
file modes. Nothing is published unless everything succeeded, and an existing file is kept then."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from coreg_plugin import InputError, align_image_pair, coregister_stack
from coreg_plugin.cli import main
from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]


#: Run by :func:`tiny_disk` where it may mount: mount a 1 MB tmpfs at the disk folder, create the
#: files (text, or that many random bytes), run the CLI, and print as JSON its exit code, its stderr
#: and what is on the disk (a file's text when small, else None); exit 97 if the tmpfs cannot be mounted.
ON_TINY_DISK = """
import json, os, subprocess, sys
disk, files, args = json.loads(sys.argv[1])
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], capture_output=True, text=True)
if mounted.returncode != 0:
    print(mounted.stderr.strip() or "mount failed", file=sys.stderr)
    sys.exit(97)
try:
    for name, content in files.items():
        with open(os.path.join(disk, name), "wb") as f:
            f.write(os.urandom(content) if isinstance(content, int) else content.encode())
    run = subprocess.run([sys.executable, "-m", "coreg_plugin", *args], capture_output=True, text=True)
    listing = {}
    for name in sorted(os.listdir(disk)):
        path = os.path.join(disk, name)
        small = os.path.isfile(path) and os.path.getsize(path) < 4096
        with open(path, "rb") if small else open(os.devnull, "rb") as f:
            listing[name] = f.read().decode("latin-1") if small else None
    print(json.dumps({"returncode": run.returncode, "stderr": run.stderr, "listing": listing}))
finally:
    subprocess.run(["umount", disk], capture_output=True)
"""


@dataclass
class DiskRun:
    """What a CLI run on the tiny disk did: exit code, stderr, and the disk's files (text or None)."""

    returncode: int
    stderr: str
    listing: dict

    @property
    def messages(self) -> list[str]:
        """The CLI's own lines of stderr (libtiff prints its write errors to the process's stderr
        itself, "_tiffWriteProc: No space left on device.", past Python's)."""
        return [line for line in self.stderr.splitlines() if line.startswith("coreg:")]


@pytest.fixture
def tiny_disk(tmp_path):
    """The folder tmp_path / "disk" and a function running the CLI (its arguments, and files to put
    on the disk first) with a 1 MB tmpfs mounted there: mounted directly as root, else (or if that
    is refused) in a user and mount namespace of the run's own (``unshare -Urm``); the test fails,
    never skips, where neither works."""
    folder = tmp_path / "disk"
    folder.mkdir()
    ways = ([("as root", [])] if os.geteuid() == 0 else []) + [("in a user namespace", ["unshare", "-Urm"])]

    def run(args: list[str], files: dict) -> DiskRun:
        refused = []
        for how, prefix in ways:
            spec = json.dumps([str(folder), files, args])
            try:
                done = subprocess.run([*prefix, sys.executable, "-c", ON_TINY_DISK, spec], cwd=ROOT,
                                      capture_output=True, text=True, check=False)
            except OSError as exc:  # no unshare
                refused.append(f"{how}: {exc}")
                continue
            if done.returncode == 0:
                return DiskRun(**json.loads(done.stdout))
            refused.append(f"{how}: {done.stderr.strip() or done.returncode}")
        pytest.fail("cannot mount a 1 MB tmpfs for the disk-full tests (" + "; ".join(refused) + ")")

    return folder, run


@pytest.fixture
def noise(tmp_path):
    """An incompressible 3-band uint16 raster of 700 x 700 px (about 2.9 MB, more than the tiny disk)."""
    path = tmp_path / "noise.tif"
    values = np.random.default_rng(1).integers(1, 60000, (3, 700, 700))
    synthetic.write_raster(path, values.astype(float), synthetic.Affine(10, 0, 400000, 0, -10, 5800000))
    return path


def test_disk_full_stack_fails_and_keeps_the_existing_output(tiny_disk, noise):
    folder, run = tiny_disk
    out = folder / "merged.tif"
    done = run(["stack", str(noise), "--reference", str(noise), "--output", str(out), "--allow-large-output"],
               {"merged.tif": "a good output of an earlier run"})
    assert done.returncode == 2
    assert len(done.messages) == 1, done.stderr
    assert "no space left on device" in done.messages[0]
    assert str(out) in done.messages[0]
    assert done.listing == {"merged.tif": "a good output of an earlier run"}


def test_disk_full_align_cli_exit_2_one_line(tiny_disk, tmp_path):
    folder, run = tiny_disk
    pair = synthetic.make_sample_pair(tmp_path / "pair", size=512, shift=(1.2, -0.7))
    out = folder / "aligned.tif"
    done = run(["align", "--moving-image", pair["moving_image"], "--fixed-image", pair["fixed_image"],
                "--output-image", str(out), "--model", "translation", "--allow-large-output"], {"filler": 900_000})
    assert done.returncode == 2
    assert len(done.messages) == 1, done.stderr
    assert "no space left on device" in done.messages[0]
    assert str(out) in done.messages[0]
    assert done.listing == {"filler": None}


def test_large_output_cli_names_its_option_and_the_option_writes(noise, tmp_path, monkeypatch, capsys):
    """An output larger than the free space is refused with the CLI's own option named; with it, written."""
    monkeypatch.setattr("coreg_plugin.io.writer.free_bytes", lambda path: 1_000_000)
    out = tmp_path / "out" / "merged.tif"
    out.parent.mkdir()
    code = main(["stack", str(noise), "--reference", str(noise), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "free on its disk" in err
    assert err.endswith("use --allow-large-output to write it anyway")
    assert "allow large outputs" not in err
    assert list(out.parent.iterdir()) == []
    code = main(["stack", str(noise), "--reference", str(noise), "--output", str(out), "--allow-large-output"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()

@pytest.fixture
def tiles(tmp_path):
    """Two real tiles copied into tmp_path / "in"."""
    folder = tmp_path / "in"
    folder.mkdir()
    landsat = ROOT.parent / "shared" / "data" / "landsat-rgb"
    for name in ("rgb1.tif", "rgb2.tif"):
        shutil.copy(landsat / name, folder / name)
    return [folder / "rgb1.tif", folder / "rgb2.tif"], landsat / "RGB.byte.tif"


def _contents(paths):
    return [Path(p).read_bytes() for p in paths]


def test_stack_output_equal_to_an_input_is_refused_before_any_work(tiles):
    inputs, reference = tiles
    before = _contents(inputs)
    with pytest.raises(InputError, match="rgb1.tif' would overwrite the input"):
        coregister_stack(inputs, reference, inputs[0])
    alias = inputs[0].parent / "." / ".." / "in" / "rgb1.tif"
    with pytest.raises(InputError, match="would overwrite the input"):
        coregister_stack(inputs, reference, alias, mode="stack")
    with pytest.raises(InputError, match="would overwrite the input"):
        coregister_stack(inputs, reference, mode="stack", output_folder=inputs[0].parent)
    assert _contents(inputs) == before
    assert sorted(p.name for p in inputs[0].parent.iterdir()) == ["rgb1.tif", "rgb2.tif"]


def test_two_outputs_on_one_path_are_refused(tiles, tmp_path):
    inputs, reference = tiles
    with pytest.raises(InputError, match="more than one output"):
        coregister_stack(inputs, reference, tmp_path / "out" / "rgb1.tif", mode="stack",
                         output_folder=tmp_path / "out")
    assert not (tmp_path / "out" / "rgb1.tif").exists()


def test_align_report_equal_to_output_is_refused(tmp_path):
    pair = synthetic.make_sample_pair(tmp_path, size=256, shift=(1.0, 0.5))
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match="more than one output"):
        align_image_pair(pair["moving_image"], pair["fixed_image"], out, report=out)
    assert not out.exists()


def test_missing_matplotlib_refuses_the_report_before_writing_anything(tmp_path, monkeypatch):
    pair = synthetic.make_sample_pair(tmp_path / "pair", size=256, shift=(1.0, 0.5))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing matplotlib now raises ImportError
    seen = []
    with pytest.raises(InputError, match="matplotlib"):
        align_image_pair(pair["moving_image"], pair["fixed_image"], tmp_path / "out.tif",
                         report=tmp_path / "report.html", progress=seen.append)
    assert seen == []  # refused before the registration started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair"]


def test_outputs_honour_the_umask(tmp_path, tiles):
    inputs, reference = tiles
    pair = synthetic.make_sample_pair(tmp_path / "pair", size=256, shift=(1.0, 0.5))
    previous = os.umask(0o022)
    try:
        align_image_pair(pair["moving_image"], pair["fixed_image"], tmp_path / "aligned.tif", model="translation")
        coregister_stack(inputs, reference, tmp_path / "merged.tif", output_folder=tmp_path / "each")
        coregister_stack(inputs, reference, tmp_path / "merged_cog.tif", driver="COG")
    finally:
        os.umask(previous)
    for path in (tmp_path / "aligned.tif", tmp_path / "merged.tif", tmp_path / "each" / "rgb1.tif",
                 tmp_path / "merged_cog.tif"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        with rasterio.open(path) as ds:
            assert ds.count >= 1


def test_already_aligned_copy_is_staged_like_every_output(tmp_path):
    """An identical pair is copied unchanged: in place, mode from the umask, nothing left beside it."""
    pair = synthetic.make_sample_pair(tmp_path / "pair", size=256, shift=(0.0, 0.0))
    previous = os.umask(0o022)
    try:
        summary = align_image_pair(pair["fixed_image"], pair["fixed_image"].replace("fixed", "moving"),
                                   tmp_path / "out.tif").summary
    finally:
        os.umask(previous)
    assert summary["verdict"] == "already_aligned"
    assert stat.S_IMODE((tmp_path / "out.tif").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "pair"]


def test_correction_and_gcp_files_are_checked_with_the_other_outputs(tmp_path):
    pair = synthetic.make_sample_pair(tmp_path, size=256, shift=(1.0, 0.5))
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match="more than one output"):
        align_image_pair(pair["moving_image"], pair["fixed_image"], out, correction_file=out)
    with pytest.raises(InputError, match="would overwrite the fixed image"):
        align_image_pair(pair["moving_image"], pair["fixed_image"], out, gcp_file=pair["fixed_image"])
    assert not out.exists()
