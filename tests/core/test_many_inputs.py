"""Many inputs under a small open-file limit, and cancelling a registered stack quickly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from coreg_plugin import CancelledError, coregister_stack
from coreg_plugin.common.tasks import run_in_order
from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "data" / "landsat-rgb" / "RGB.byte.tif"


def _run_limited(code: str, limit: int) -> subprocess.CompletedProcess:
    prelude = ("import resource, sys\n"
               f"hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
               f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, hard))\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_more_inputs_than_open_files_allowed(tmp_path):
    """120 crops of a real raster merged under a limit of 64 open files: every pixel in place."""
    crops = []
    with rasterio.open(REFERENCE) as src:
        profile = dict(src.profile, driver="GTiff", width=60, height=60)
        for i in range(120):
            row, col = 60 * (i // 12), 60 * (i % 12)
            window = Window(col, row, 60, 60)
            path = tmp_path / f"crop_{i:03d}.tif"
            with rasterio.open(path, "w", **dict(profile, transform=src.window_transform(window))) as dst:
                dst.write(src.read(window=window))
            crops.append(str(path))
        reference = src.read()
    out = tmp_path / "merged.tif"
    run = _run_limited(f"""
        from coreg_plugin.cli import main
        sys.exit(main(["stack", *{crops!r}, "--reference", {str(REFERENCE)!r}, "--output", {str(out)!r},
                       "--resampling", "nearest"]))
    """, 64)
    assert run.returncode == 0, run.stderr[-2000:]
    with rasterio.open(out) as ds:
        merged = ds.read()
    np.testing.assert_array_equal(merged[:, :600, :720], reference[:, :600, :720])


def test_out_of_file_handles_says_so(tmp_path):
    run = _run_limited(f"""
        import os
        from coreg_plugin.cli import main
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        sys.exit(main(["stack", {str(REFERENCE)!r}, "--reference", {str(REFERENCE)!r},
                       "--output", {str(tmp_path / "o.tif")!r}]))
    """, 32)
    assert run.returncode == 2
    assert "too many open files (this process may open 32)" in run.stderr
    assert "ulimit -n" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_cancel_reaches_into_the_registration(write, tmp_path):
    """Cancelled as soon as the first registration runs: it stops there, not after registering."""
    truth = synthetic.realistic_scene(768, 768, seed=5) * 3000 + 400
    reference = write("reference.tif", truth)
    inputs = []
    for i, shift in enumerate([(1.2, -0.4), (-2.1, 0.8), (0.6, 1.7)]):
        h = np.eye(3)
        h[:2, 2] = shift
        inputs.append(write(f"in{i}.tif", synthetic.misregister(truth, h)))
    seen: list[float] = []

    with pytest.raises(CancelledError):
        coregister_stack(inputs, reference, tmp_path / "out.tif", mode="stack", register=True,
                         progress=seen.append, is_cancelled=lambda: any(0 < p < 40 for p in seen))
    # the first input's registration owns 0 to 13.3 %: stopped in its first half, not after it
    assert max(seen) < 40 / 3 / 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in0.tif", "in1.tif", "in2.tif", "reference.tif"]


class CountingExecutor:
    """An executor that runs tasks on submit and records how many were pending at most."""

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(workers)
        self._max_workers = workers
        self.pending = 0
        self.most = 0

    def submit(self, fn, *args):  # noqa: ANN001, ANN201
        self.pending += 1
        self.most = max(self.most, self.pending)
        future = self._pool.submit(fn, *args)

        def done(_):  # noqa: ANN001, ANN202
            self.pending -= 1

        future.add_done_callback(done)
        return future


def test_registrations_on_an_executor_never_exceed_its_workers(write, tmp_path):
    truth = synthetic.realistic_scene(400, 400, seed=6) * 3000 + 400
    reference = write("reference.tif", truth)
    inputs = [write(f"in{i}.tif", truth) for i in range(5)]
    executor = CountingExecutor(2)
    coregister_stack(inputs, reference, tmp_path / "out.tif", mode="stack", register=True, executor=executor)
    assert executor.most <= 2


def test_run_in_order_polls_while_waiting():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()
    polls = []

    def poll():
        polls.append(1)
        if len(polls) >= 3:
            raise CancelledError("stop")

    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(CancelledError):
            run_in_order(pool, release.wait, [(5.0,)], lambda r: None, max_in_flight=1, poll=poll,
                         poll_interval_s=0.01)
        release.set()
    assert len(polls) == 3



def _crops_of_the_reference(folder: Path, count: int, size: int = 64) -> tuple[Path, list[tuple[Path, int, int]]]:
    """A 256 x 256 px reference cut from the real raster and ``count`` crops of ``size`` px around it
    (some reaching past its edges): the reference and (path, row, col) of each crop in the raster."""
    folder.mkdir()
    with rasterio.open(REFERENCE) as src:
        profile = dict(src.profile, driver="GTiff")
        window = Window(200, 200, 256, 256)
        reference = folder / "reference.tif"
        with rasterio.open(reference, "w", **dict(profile, width=256, height=256,
                                                    transform=src.window_transform(window))) as dst:
            dst.write(src.read(window=window))
        crops = []
        for i in range(count):
            row, col = 168 + 14 * (i % 20), 168 + 14 * (i // 20)
            crop = Window(col, row, size, size)
            path = folder / f"crop_{i:03d}.tif"
            with rasterio.open(path, "w", **dict(profile, width=size, height=size,
                                                 transform=src.window_transform(crop))) as dst:
                dst.write(src.read(window=crop))
            crops.append((path, row, col))
    return reference, crops


@pytest.fixture(scope="module")
def crops_300(tmp_path_factory):
    """300 crops of 64 x 64 px around a 256 x 256 px reference (see :func:`_crops_of_the_reference`)."""
    return _crops_of_the_reference(tmp_path_factory.mktemp("crops") / "in", 300)


def _limited_cli(args: list[str], limit: int, code: str = "") -> subprocess.CompletedProcess:
    """``python -m coreg_plugin ARGS`` in a child whose open-file limit is ``limit`` (``code`` runs first)."""
    import resource

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    run = f"import sys\n{code}\nfrom coreg_plugin.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", run, *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          preexec_fn=lower)


def test_300_per_input_files_under_256_open_files(crops_300, tmp_path):
    """Stack mode writing one file per input: 300 inputs of 64 x 64 px under macOS's default limit of
    256 open files, every file written with the input's pixels where it lies, nodata elsewhere."""
    reference, crops = crops_300
    out = tmp_path / "out"
    run = _limited_cli(["stack", *[str(p) for p, _, _ in crops], "--reference", str(reference), "--mode", "stack",
                        "--output-folder", str(out), "--resampling", "nearest"], 256)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p, _, _ in crops)
    with rasterio.open(REFERENCE) as src:
        truth = src.read()
    for path, row, col in crops:
        expected = np.zeros((3, 256, 256), np.uint8)
        r0, c0 = max(row, 200), max(col, 200)
        r1, c1 = min(row + 64, 456), min(col + 64, 456)
        expected[:, r0 - 200:r1 - 200, c0 - 200:c1 - 200] = truth[:, r0:r1, c0:c1]
        with rasterio.open(out / path.name) as ds:
            np.testing.assert_array_equal(ds.read(), expected, err_msg=path.name)


def test_too_few_open_files_for_the_writers_names_ulimit_and_leaves_no_folder(crops_300, tmp_path):
    """Every per-input file open at once (as before the writers were grouped) under 256 open files:
    exit 2, one line naming ``ulimit -n``, and no output folder left behind."""
    reference, crops = crops_300
    out = tmp_path / "made" / "out"
    unbounded = ("import coreg_plugin.workflows.stack\n"
                 "coreg_plugin.workflows.stack.writers_at_once = lambda reserved: 10 ** 6")
    run = _limited_cli(["stack", *[str(p) for p, _, _ in crops], "--reference", str(reference), "--mode", "stack",
                        "--output-folder", str(out)], 256, unbounded)
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "too many open files (this process may open 256)" in run.stderr
    assert "ulimit -n" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_per_input_files_written_in_groups_are_those_written_at_once(tmp_path, monkeypatch):
    """Four tiles stacked with a file each, the files one at a time (as under a tiny open-file limit):
    the same bytes in every file, the same stacked output and coverage as with every file open."""
    tiles = [ROOT.parent / "shared" / "data" / "landsat-rgb" / f"rgb{i}.tif" for i in range(1, 5)]

    def run(name: str) -> dict:
        return coregister_stack(tiles, REFERENCE, tmp_path / name / "stacked.tif", mode="stack",
                                output_folder=tmp_path / name / "each", block_size=256).summary

    at_once = run("at_once")
    # the main output and one more
    monkeypatch.setattr("coreg_plugin.workflows.stack.writers_at_once", lambda reserved: 2)
    grouped = run("grouped")
    assert [i["coverage"] for i in grouped["inputs"]] == [i["coverage"] for i in at_once["inputs"]]
    assert grouped["totals"] == at_once["totals"]
    for name in ["stacked.tif"] + [f"each/rgb{i}.tif" for i in range(1, 5)]:
        assert (tmp_path / "grouped" / name).read_bytes() == (tmp_path / "at_once" / name).read_bytes(), name
