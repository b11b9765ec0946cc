"""Issue 28: a registered stack from the command line on a real Dask cluster on this machine.

A ``dask scheduler`` and two ``dask worker`` processes (one thread each, no nanny, so each worker is
the process measured and killed) listen on 127.0.0.1 only; ``python -m coreg_plugin stack
--dask-scheduler`` runs 200 registered inputs through them. Each worker's open files and resident
memory are polled from /proc during the run and bounded; a worker killed mid-stack is either
replaced by the other (the run succeeds, pixels equal to the serial run) or the run stops with a
one-line error and publishes nothing; with every worker gone it stops with that error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from conftest import S2_REF
from coreg_plugin.apply.blocks import handles_per_thread

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).parent / "dask"
INPUTS = 200
INPUT_PX = 96
REFERENCE_PX = 768
#: Each worker's memory limit; measured peaks must stay well below it.
MEMORY_LIMIT = 1 << 30
STACK_OPTIONS = ["--register", "--window-size", "32", "--merge-method", "mean", "--resampling", "bilinear"]

distributed = pytest.importorskip("distributed")


def _environment() -> dict[str, str]:
    """Workers and the CLI import coreg_plugin from this checkout; BLAS on one thread."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                OPENBLAS_NUM_THREADS="1")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 768 px reference cut from the real Sentinel-2 raster and 200 crops of 96 px of it, each
    declared at a known sub-pixel shift from where it lies (so each registration has something to
    find and succeeds)."""
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(28)
    with rasterio.open(S2_REF) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled", "compress")}
        row0, col0 = 1000, 700
        window = Window(col0, row0, REFERENCE_PX, REFERENCE_PX)
        reference = folder / "reference.tif"
        with rasterio.open(reference, "w", **dict(profile, width=REFERENCE_PX, height=REFERENCE_PX,
                                                  transform=src.window_transform(window))) as dst:
            dst.write(src.read(window=window))
        inputs = []
        for i in range(INPUTS):
            row, col = (int(v) for v in rng.integers(0, REFERENCE_PX - INPUT_PX, 2))
            crop = Window(col0 + col, row0 + row, INPUT_PX, INPUT_PX)
            shifted = src.window_transform(crop) @ Affine.translation(*rng.uniform(-2, 2, 2))
            path = folder / f"in_{i:03d}.tif"
            with rasterio.open(path, "w", **dict(profile, width=INPUT_PX, height=INPUT_PX,
                                                 transform=shifted)) as dst:
                dst.write(src.read(window=crop))
            inputs.append(str(path))
    return reference, inputs


def _stack(inputs: list[str], reference: Path, output: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coreg_plugin", "stack", *inputs, "--reference", str(reference),
                             "--output", str(output), *STACK_OPTIONS, *extra],
                            cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(run: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
        pytest.fail(f"the stack ran over {timeout} s: {err[-2000:]}")
    return run.returncode, out, err


def _pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def serial(scene, tmp_path_factory):
    """The same stack on this machine, without Dask: the pixels and summary to match."""
    reference, inputs = scene
    output = tmp_path_factory.mktemp("serial") / "serial.tif"
    started = time.perf_counter()
    code, out, err = _finish(_stack(inputs, reference, output))
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["totals"]["used"] == INPUTS, summary["skipped"][:3]
    print(f"serial run: {time.perf_counter() - started:.1f} s")
    return _pixels(output), summary


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, always stopped on exit."""

    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.folder = folder
        self.count = workers
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self.addresses: dict[str, str] = {}

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.folder / log, "w") as stream:
            return subprocess.Popen([str(DASK), *args], cwd=self.folder, env=_environment(), stdout=stream,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def __enter__(self) -> Cluster:
        try:
            self._start_all()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_all(self) -> None:
        scheduler_file = self.folder / "scheduler.json"
        self.scheduler = self._start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(scheduler_file)], "scheduler.log")
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert self.scheduler.poll() is None, (self.folder / "scheduler.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the scheduler did not start in 60 s"
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written whole, but give it a moment
        self.address = json.loads(scheduler_file.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:"), self.address
        for i in range(self.count):
            self.workers.append(self._start(
                ["worker", self.address, "--nthreads", "1", "--memory-limit", str(MEMORY_LIMIT), "--no-nanny",
                 "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}",
                 "--local-directory", str(self.folder / f"w{i}")], f"worker{i}.log"))
        with self.client() as client:
            client.wait_for_workers(self.count, timeout=90)
            #: each worker's address by name (w0, w1, ...)
            self.addresses = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}

    def client(self) -> distributed.Client:
        return distributed.Client(self.address, timeout=30, set_as_default=False)

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.folder.glob("*.log")))

    def __exit__(self, *exc: object) -> None:
        processes = [p for p in [*self.workers, self.scheduler] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Usage(threading.Thread):
    """Polls each process's open file descriptors and resident memory (/proc) until stopped."""

    def __init__(self, pids: list[int], interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval_s = interval_s
        self.fds = dict.fromkeys(pids, 0)
        self.rss = dict.fromkeys(pids, 0)
        self.samples = 0
        self.done = threading.Event()

    @staticmethod
    def measure(pid: int) -> tuple[int, int] | None:
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/status") as status:
                rss = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return None  # gone
        return fds, rss

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            for pid in self.pids:
                seen = self.measure(pid)
                if seen is not None:
                    self.fds[pid] = max(self.fds[pid], seen[0])
                    self.rss[pid] = max(self.rss[pid], seen[1])
            self.samples += 1

    def __enter__(self) -> Usage:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


def test_registered_stack_of_200_on_two_dask_workers_equals_the_serial_run(scene, serial, tmp_path):
    reference, inputs = scene
    output = tmp_path / "dask.tif"
    with Cluster(tmp_path) as cluster:
        pids = [w.pid for w in cluster.workers]
        before = {pid: Usage.measure(pid) for pid in pids}
        started = time.perf_counter()
        with Usage(pids) as usage:
            code, out, err = _finish(_stack(inputs, reference, output, "--dask-scheduler", cluster.address))
        elapsed = time.perf_counter() - started
        assert code == 0, err[-3000:] + cluster.log()
    summary = json.loads(out)
    np.testing.assert_array_equal(_pixels(output), serial[0])
    assert [i["registration"] for i in summary["inputs"]] == [i["registration"] for i in serial[1]["inputs"]]
    assert summary["totals"] == serial[1]["totals"]
    report = {pid: {"fds_at_start": before[pid][0], "fds_peak": usage.fds[pid],
                    "rss_at_start_mb": before[pid][1] >> 20, "rss_peak_mb": usage.rss[pid] >> 20} for pid in pids}
    print(f"dask run: {elapsed:.1f} s, {usage.samples} samples; per worker: {report}")
    assert usage.samples > 20
    for pid in pids:
        # open files: the worker's own (sockets, libraries) plus at most the inputs its one thread
        # keeps open (apply.blocks.handles_per_thread: 64 here), never one per input of the 200
        assert usage.fds[pid] - before[pid][0] <= handles_per_thread() + 16, report
        assert usage.fds[pid] < INPUTS, report
        # memory: a registration of a small input and a block of 200 small layers, far below the limit
        assert usage.rss[pid] - before[pid][1] < 400 << 20, report
        assert usage.rss[pid] < MEMORY_LIMIT // 2, report


def _completed_tasks(client: distributed.Client, since: float) -> list[dict]:
    return client.get_task_stream(start=since)


def _kill_when(cluster: Cluster, run: subprocess.Popen, done: int, victims: list[subprocess.Popen]) -> list[dict]:
    """SIGKILL ``victims`` once ``done`` tasks have completed on the cluster; the tasks seen by then."""
    with cluster.client() as client:
        since = time.time()
        _completed_tasks(client, since)  # the scheduler records the task stream from now on
        deadline = time.monotonic() + 240
        while True:
            tasks = _completed_tasks(client, since)
            if len(tasks) >= done:
                break
            assert run.poll() is None, f"the stack ended before {done} tasks completed: {run.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, f"only {len(tasks)} tasks completed in 240 s"
            time.sleep(0.05)
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
        return tasks


def _nothing_published(output: Path) -> None:
    assert not output.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == [], "left beside the output"


def test_a_worker_killed_mid_stack_is_replaced_or_reported(scene, serial, tmp_path):
    """One of the two workers SIGKILLed a quarter of the way through: Dask reruns its task on the
    other worker and the result equals the serial run, or the run stops with one clear line and
    leaves nothing at the output path."""
    reference, inputs = scene
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "dask.tif"
    with Cluster(tmp_path) as cluster:
        started = time.perf_counter()
        run = _stack(inputs, reference, output, "--dask-scheduler", cluster.address)
        try:
            seen = _kill_when(cluster, run, INPUTS // 4, cluster.workers[1:])
        finally:
            code, out, err = _finish(run)
        elapsed = time.perf_counter() - started
    by_killed = sum(1 for t in seen if t.get("worker") == cluster.addresses["w1"])
    print(f"killed w1 after {len(seen)} tasks ({by_killed} of them on it); exit {code} in {elapsed:.1f} s; "
          f"stderr: {err.strip()[-300:]}")
    if code == 0:
        np.testing.assert_array_equal(_pixels(output), serial[0])
        assert json.loads(out)["totals"] == serial[1]["totals"]
    else:
        assert code == 3, err[-3000:]
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert "Dask" in err, err
        _nothing_published(output)
    assert by_killed > 0, "the killed worker had run no task"


def test_every_worker_killed_stops_with_a_clear_error_and_publishes_nothing(scene, tmp_path):
    reference, inputs = scene
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "dask.tif"
    with Cluster(tmp_path) as cluster:
        started = time.perf_counter()
        run = _stack(inputs[:40], reference, output, "--dask-scheduler", cluster.address, "--dask-timeout", "3")
        try:
            _kill_when(cluster, run, 4, cluster.workers)
        finally:
            code, out, err = _finish(run, timeout=120)
        elapsed = time.perf_counter() - started
    print(f"every worker killed: exit {code} after {elapsed:.1f} s: {err.strip()}")
    assert code == 3, err[-3000:]
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "no Dask worker" in err, err
    assert cluster.address in err, err
    _nothing_published(output)


def test_the_scheduler_killed_mid_stack_stops_with_a_clear_error_and_publishes_nothing(scene, tmp_path):
    reference, inputs = scene
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "dask.tif"
    with Cluster(tmp_path) as cluster:
        run = _stack(inputs[:40], reference, output, "--dask-scheduler", cluster.address, "--dask-timeout", "3")
        try:
            _kill_when(cluster, run, 4, [cluster.scheduler])
        finally:
            code, out, err = _finish(run, timeout=120)
    print(f"scheduler killed: exit {code}: {err.strip()}")
    assert code == 3, err[-3000:]
    assert out == ""
    assert err.strip().splitlines() == [
        f"coreg: error: lost the Dask scheduler at '{cluster.address}' (it stopped, or the connection to it "
        f"broke); nothing was written"], err
    _nothing_published(output)


def test_an_unreachable_scheduler_is_one_clear_line(scene, tmp_path):
    reference, inputs = scene
    run = subprocess.run([sys.executable, "-m", "coreg_plugin", "stack", *inputs[:2], "--reference", str(reference),
                          "--output", str(tmp_path / "o.tif"), "--dask-scheduler", "tcp://127.0.0.1:9",
                          "--dask-timeout", "2"],
                         cwd=ROOT, env=_environment(), capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 3, run.stderr
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in run.stderr
    assert not (tmp_path / "o.tif").exists()


def test_without_distributed_the_option_names_the_package(scene, tmp_path):
    reference, inputs = scene
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from coreg_plugin.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", code, "stack", *inputs[:2], "--reference", str(reference),
                          "--output", str(tmp_path / "o.tif"), "--dask-scheduler", "tcp://127.0.0.1:9"],
                         cwd=ROOT, env=_environment(), capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        "coreg: error: --dask-scheduler needs the Python package 'distributed' (pip install distributed)"]
    assert not (tmp_path / "o.tif").exists()


def test_shutting_down_after_the_client_closed_keeps_the_runs_own_error():
    """When the scheduler is lost the client may close before the stack's executor shuts down with
    tasks pending; Dask then refuses to send their cancellation (ClosedClientError), which replaced
    the run's ClusterError (exit 1 instead of 3, seen in CI). The shutdown has nothing to cancel."""
    from coreg_plugin.cli import _DaskExecutor

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        client = distributed.Client(cluster)
        executor = _DaskExecutor(client, cluster.scheduler_address, 30)
        executor.submit(time.sleep, 3)
        client.close()
        executor.shutdown(wait=False)
