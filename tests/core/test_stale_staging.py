"""Staging folders left by runs that were killed are removed by the next run in the same folder,
never those of a live run, of another host or without an owner record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from coreg_plugin import coregister_stack
from coreg_plugin.io.outputs import OWNER_FILE, STAGING_SUFFIX, make_owned_folder, sweep_stale

ROOT = Path(__file__).resolve().parents[2]
LANDSAT = ROOT.parent / "shared" / "data" / "landsat-rgb"
TILES = [LANDSAT / "rgb1.tif", LANDSAT / "rgb2.tif"]
REFERENCE = LANDSAT / "RGB.byte.tif"

#: The CLI, stopping for good once it wrote its first block (to be killed there).
STOP_AFTER_FIRST_BLOCK = """
import sys, time
import coreg_plugin.io.writer as writer
original = writer.BlockWriter.write
def write(self, window, values):
    original(self, window, values)
    print("written", flush=True)
    time.sleep(600)
writer.BlockWriter.write = write
from coreg_plugin.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _staging_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(STAGING_SUFFIX))


def _dead_pid() -> int:
    """The id of a process that ran and was reaped."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def _fake_staging(folder: Path, target: str, **record: object) -> Path:
    """A staging folder for ``target`` with this process's owner record, changed by ``record``."""
    staging = Path(make_owned_folder(str(folder), f".{target}.", STAGING_SUFFIX))
    owner = staging / OWNER_FILE
    owner.write_text(json.dumps({**json.loads(owner.read_text()), **record}))
    (staging / target).write_bytes(b"half a raster")
    return staging


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    """A stack run SIGKILLed after writing its first block leaves its staging folder (the old output
    untouched); the next run into the same folder removes it and publishes, nothing else is left."""
    out = tmp_path / "out"
    out.mkdir()
    merged = out / "merged.tif"
    merged.write_bytes(b"a good output of an earlier run")
    args = ["stack", *map(str, TILES), "--reference", str(REFERENCE), "--output", str(merged),
            "--resampling", "nearest"]
    child = subprocess.Popen([sys.executable, "-c", STOP_AFTER_FIRST_BLOCK, *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "written\n", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    stale = _staging_folders(out)
    assert len(stale) == 1
    assert (stale[0] / OWNER_FILE).is_file()
    assert merged.read_bytes() == b"a good output of an earlier run"

    second = subprocess.run([sys.executable, "-m", "coreg_plugin", *args], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["merged.tif"]
    with rasterio.open(merged) as ds, rasterio.open(REFERENCE) as ref:
        written, truth = ds.read(), ref.read()
    valid = (written != 0).any(axis=0)
    assert valid.sum() > 100_000
    np.testing.assert_array_equal(written[:, valid], truth[:, valid])


def test_folders_of_live_runs_other_hosts_or_no_record_are_kept(tmp_path):
    """In the folder of a new run: this process's staging folder (a live run), one of a dead process
    on another host and one without a record are kept; a dead process's and one whose process id now
    belongs to a process started at another time (a reused id) are removed."""
    out = tmp_path / "out"
    out.mkdir()
    live = _fake_staging(out, "merged.tif")
    elsewhere = _fake_staging(out, "merged.tif", pid=_dead_pid(), host="another-host")
    unrecorded = _fake_staging(out, "merged.tif")
    (unrecorded / OWNER_FILE).unlink()
    dead = _fake_staging(out, "merged.tif", pid=_dead_pid())
    reused = _fake_staging(out, "merged.tif", started="another boot:0")
    coregister_stack(TILES, REFERENCE, out / "merged.tif", resampling="nearest")
    assert _staging_folders(out) == sorted([live, elsewhere, unrecorded])
    assert not dead.exists()
    assert not reused.exists()
    assert (live / "merged.tif").read_bytes() == b"half a raster"


@pytest.mark.parametrize("placed", [False, True])
def test_an_old_output_moved_aside_by_a_killed_run_is_put_back(tmp_path, placed):
    """A run killed while publishing may have moved the old output into its staging folder: put
    back where nothing took its place, dropped where the new output was already placed."""
    stale = _fake_staging(tmp_path, "merged.tif", pid=_dead_pid())
    (stale / ".coreg-old-merged.tif").write_bytes(b"the old output")
    if placed:
        (tmp_path / "merged.tif").write_bytes(b"the new output")
    assert sweep_stale(str(tmp_path), ".", STAGING_SUFFIX) == [str(stale)]
    expected = b"the new output" if placed else b"the old output"
    assert (tmp_path / "merged.tif").read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.tif"]


def test_a_killed_runs_scratch_folder_is_swept_and_a_kept_one_is_not(tmp_path):
    """Scratch folders (``temp_dir``) of runs that are gone are removed when the next run makes its
    own there; a live run's and one kept for diagnosis (``keep_temp_dir``) stay."""
    from coreg_plugin.workflows.diagnostics import PREFIX, TemporaryFolder

    stale = Path(make_owned_folder(str(tmp_path), PREFIX))
    owner = stale / OWNER_FILE
    owner.write_text(json.dumps({**json.loads(owner.read_text()), "pid": _dead_pid()}))
    live = Path(make_owned_folder(str(tmp_path), PREFIX))
    with TemporaryFolder(tmp_path, keep=True) as kept:
        assert (Path(kept.path) / OWNER_FILE).is_file()
    assert not stale.exists()
    assert live.exists()
    assert not (Path(kept.path) / OWNER_FILE).exists()
    with TemporaryFolder(tmp_path, keep=False) as scratch:
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, Path(kept.path).name])
    assert not Path(scratch.path).exists()
