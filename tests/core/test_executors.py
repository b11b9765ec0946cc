"""Issue 5: the stack and batch alignment on any concurrent.futures.Executor, a Dask cluster included."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import DATA
from coreg_plugin import align_many, coregister_stack
from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]
LANDSAT = DATA / "landsat-rgb"
INPUTS = [LANDSAT / f"rgb{i}.tif" for i in range(1, 5)] + [LANDSAT / "rgb1_fake_nir_epsg3857.tif"]


def read_all(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture
def worker_environment(monkeypatch):
    """Worker processes import coreg_plugin from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_stack_on_a_local_dask_cluster_equals_the_serial_run(tmp_path, worker_environment):
    distributed = pytest.importorskip("distributed")
    serial = coregister_stack(INPUTS, LANDSAT / "RGB.byte.tif", tmp_path / "serial.tif", mode="stack",
                              block_size=256).summary
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = coregister_stack(INPUTS, LANDSAT / "RGB.byte.tif", tmp_path / "dask.tif", mode="stack",
                                   block_size=256, executor=client.get_executor()).summary
    np.testing.assert_array_equal(read_all(tmp_path / "dask.tif"), read_all(tmp_path / "serial.tif"))
    assert [i["coverage"] for i in on_dask["inputs"]] == [i["coverage"] for i in serial["inputs"]]


def test_registered_stack_in_a_process_pool_equals_the_serial_run(tmp_path, write, worker_environment):
    truth = synthetic.realistic_scene(512, 512, seed=3) * 3000
    reference = write("reference.tif", truth)
    inputs = []
    for k, shift in enumerate([(1.4, -0.3), (-2.2, 0.8)]):
        h = np.eye(3)
        h[:2, 2] = shift
        inputs.append(write(f"in{k}.tif", synthetic.misregister(truth, h)))
    serial = coregister_stack(inputs, reference, tmp_path / "serial.tif", register=True, mode="stack").summary
    with ProcessPoolExecutor(2) as pool:
        pooled = coregister_stack(inputs, reference, tmp_path / "pool.tif", register=True, mode="stack",
                                  executor=pool).summary
    np.testing.assert_array_equal(read_all(tmp_path / "pool.tif"), read_all(tmp_path / "serial.tif"))
    assert [i["registration"] for i in pooled["inputs"]] == [i["registration"] for i in serial["inputs"]]


def test_align_many_on_dask_reports_each_pair(tmp_path, worker_environment):
    distributed = pytest.importorskip("distributed")
    pairs = []
    for k, shift in enumerate([(2.5, -1.0), (-0.75, 3.25)]):
        truth = synthetic.make_sample_pair(tmp_path / f"pair{k}", size=384, shift=shift, seed=k)
        pairs.append((truth["moving_image"], truth["fixed_image"], tmp_path / f"pair{k}" / "aligned.tif"))
    pairs.append((tmp_path / "missing.tif", pairs[0][1], tmp_path / "never.tif"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        results = align_many(pairs, executor=client.get_executor(), model="translation")
    np.testing.assert_allclose([[r["shift_px"]["x"], r["shift_px"]["y"]] for r in results[:2]],
                               [(2.5, -1.0), (-0.75, 3.25)], atol=0.05)
    assert "missing.tif' does not exist" in results[2]["error"]
    assert not (tmp_path / "never.tif").exists()
