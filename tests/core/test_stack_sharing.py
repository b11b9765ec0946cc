"""What a registered stack shares between its inputs: the reference's averaged reads (decoded once,
values exactly GDAL's) and the machine (two registrations side by side, results and log as one at a time)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from conftest import ORIGIN, S2_REF, read_window
from coreg_plugin import coregister_stack
from coreg_plugin.common.affines import compose
from coreg_plugin.estimate import coarse
from coreg_plugin.io import shared_reads
from coreg_plugin.io.raster_source import RasterSource
from coreg_plugin.workflows import stack


@pytest.fixture
def counted_reads(monkeypatch) -> list[tuple[str, Window, tuple[int, int]]]:
    """Every averaged read that reaches GDAL: (path, window, output shape)."""
    reads: list[tuple[str, Window, tuple[int, int]]] = []
    decimated = RasterSource._decimated

    def counting(self, band, window, out_shape, out_dtype):  # noqa: ANN001, ANN202
        reads.append((self.path, window, out_shape))
        return decimated(self, band, window, out_shape, out_dtype)

    monkeypatch.setattr(RasterSource, "_decimated", counting)
    return reads


@pytest.mark.parametrize(("factor", "col", "row"), [(3, 0, 0), (3, 301, 97), (5, 12, 40)])
def test_shared_copy_gives_gdal_averages_exactly_and_reads_once(counted_reads, factor, col, row):
    """Blocks of a shared copy (any lattice origin) equal GDAL's own decimated read of the same
    window, and a second handle on the raster is served without reading it again."""
    path = str(S2_REF)
    windows = [Window(col + factor * c, row + factor * r, factor * w, factor * h)
               for c, r, w, h in ((0, 0, 40, 30), (17, 9, 25, 50), (2, 60, 64, 8))]
    with RasterSource(path, "reference") as source:
        direct = [source.read_average(1, w, (int(w.height) // factor, int(w.width) // factor), np.float32)
                  for w in windows]
    counted_reads.clear()
    with shared_reads.sharing(path):
        for _ in range(2):
            with RasterSource(path, "reference") as source:
                shared = [source.read_average(1, w, (int(w.height) // factor, int(w.width) // factor), np.float32)
                          for w in windows]
            for a, b in zip(direct, shared):
                np.testing.assert_array_equal(a, b)
    rows_read = sorted(int(w.row_off) for _, w, _ in counted_reads)
    needed = set().union(*(range(int(w.row_off) // factor, (int(w.row_off) + int(w.height)) // factor)
                           for w in windows))
    band_rows = shared_reads.FILL_ROWS // factor
    bands = sorted({r // band_rows for r in needed})
    # each band of rows of the copy read once, over the raster's whole width, and only the bands needed
    assert rows_read == [row % factor + b * band_rows * factor for b in bands]
    assert all(int(w.width) // factor == shape[1] and shape[1] >= 1000 // factor for _, w, shape in counted_reads)
    assert not shared_reads._copies  # dropped with the last sharing


def test_two_readers_fill_a_copy_side_by_side(monkeypatch):
    """Two threads needing the same rows not yet read fill different bands of them at once (neither
    waits for the other to read everything) and each band is read once; both get GDAL's values."""
    path, factor = str(S2_REF), 2
    window = Window(0, 0, 2000, 2000)
    with RasterSource(path, "reference") as source:
        direct = source.read_average(1, window, (1000, 1000), np.float32)
    reads: list[tuple[int, int]] = []
    decimated = RasterSource._decimated

    def slow(self, band, window, out_shape, out_dtype):  # noqa: ANN001, ANN202
        reads.append((threading.get_ident(), int(window.row_off)))
        time.sleep(0.05)  # a slow decode: the other reader arrives while this band is being read
        return decimated(self, band, window, out_shape, out_dtype)

    monkeypatch.setattr(RasterSource, "_decimated", slow)
    results: list[np.ndarray] = []

    def read() -> None:
        with RasterSource(path, "reference") as source:
            results.append(source.read_average(1, window, (1000, 1000), np.float32))

    with shared_reads.sharing(path):
        threads = [threading.Thread(target=read) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for result in results:
        np.testing.assert_array_equal(result, direct)
    band_rows = shared_reads.FILL_ROWS // factor
    assert sorted(row for _, row in reads) == [b * band_rows * factor for b in range(-(-1000 // band_rows))]
    assert len({thread for thread, _ in reads}) == 2  # both readers filled bands


def test_reads_go_to_gdal_when_the_copy_would_not_fit_or_the_raster_is_not_shared(counted_reads, monkeypatch):
    path = str(S2_REF)
    window = Window(30, 30, 300, 300)
    with RasterSource(path, "reference") as source:
        source.read_average(1, window, (100, 100), np.float32)
        monkeypatch.setattr(shared_reads, "MAX_BYTES", 1000)
        with shared_reads.sharing(path):
            source.read_average(1, window, (100, 100), np.float32)
    assert [shape for _, _, shape in counted_reads] == [(100, 100), (100, 100)]


@pytest.fixture
def coarser_inputs(write) -> tuple[str, list[str], list[tuple[float, float]]]:
    """A 10 m reference and three 20 m inputs of it, each displaced by a known offset (m)."""
    truth = read_window(S2_REF, 0, 0, 2400).astype(float)
    reference = write("reference.tif", truth)
    half = truth.reshape(1200, 2, 1200, 2).mean(axis=(1, 3))
    offsets = [(7.0, -4.0), (-5.0, 9.0), (12.0, 3.0)]
    inputs = [write(f"in{i}.tif", half, compose(Affine.translation(dx, dy), ORIGIN, Affine.scale(2)))
              for i, (dx, dy) in enumerate(offsets)]
    return str(reference), [str(p) for p in inputs], offsets


def _corrections(summary: dict) -> list[tuple[float, float]]:
    return [(i["registration"]["shift_px"]["x"], i["registration"]["shift_px"]["y"]) for i in summary["inputs"]]


def test_registered_stack_averages_its_reference_once(coarser_inputs, counted_reads, monkeypatch, tmp_path):
    """Every registration reads the reference averaged (its coarse stage, and here its tie points):
    across the stack, each row of such an average is read from the file once; the corrections are
    the ones each input gets alone."""
    reference, inputs, offsets = coarser_inputs
    summary = coregister_stack(inputs, reference, tmp_path / "shared.tif", mode="stack", register=True).summary
    rows_read: dict[int, int] = {}
    for path, window, shape in counted_reads:
        if path == reference:
            factor = int(window.width) // shape[1]
            rows_read[factor] = rows_read.get(factor, 0) + shape[0]
    assert rows_read
    assert all(rows <= 2400 // factor for factor, rows in rows_read.items()), rows_read
    # each input's correction undoes its offset (20 m pixels: -dx / 20, +dy / 20)
    np.testing.assert_allclose(_corrections(summary), [(-dx / 20, dy / 20) for dx, dy in offsets], atol=0.03)

    monkeypatch.setattr(shared_reads, "MAX_BYTES", 0)
    alone = coregister_stack(inputs, reference, tmp_path / "alone.tif", mode="stack", register=True).summary
    assert _corrections(alone) == _corrections(summary)


def test_stack_on_one_grid_reads_its_references_coarse_image_once(write, monkeypatch, tmp_path):
    """Inputs on one grid (20 m crops of a 10 m reference, their content moved by known whole 10 m
    pixels) see the same coarse image of the reference: the first registration reads it, the others
    take it (as they take its prepared tie-point windows), and every correction is the one it gets
    when nothing is kept."""
    truth = read_window(S2_REF, 0, 0, 2400).astype(float)
    reference = str(write("reference.tif", truth))
    moves = [(1, 3), (4, 0), (3, 5)]
    inputs = [str(write(f"in{i}.tif", truth[dy:dy + 2380, dx:dx + 2380].reshape(1190, 2, 1190, 2).mean(axis=(1, 3)),
                        compose(ORIGIN, Affine.scale(2)))) for i, (dx, dy) in enumerate(moves)]
    reads: list[str] = []
    counted = coarse.read_both

    def counting(sources, *args):  # noqa: ANN001, ANN202
        reads.extend(source.path for source, _ in sources)
        return counted(sources, *args)

    monkeypatch.setattr(coarse, "read_both", counting)
    monkeypatch.setattr(stack, "REGISTRATIONS_AT_ONCE", 1)
    summary = coregister_stack(inputs, reference, tmp_path / "shared.tif", mode="stack", register=True).summary
    assert sorted(reads) == sorted([reference] + inputs)
    # content moved by (dx, dy) 10 m pixels is put back by (dx / 2, dy / 2) 20 m pixels
    np.testing.assert_allclose(_corrections(summary), [(dx / 2, dy / 2) for dx, dy in moves], atol=0.03)

    reads.clear()
    monkeypatch.setattr(shared_reads, "MAX_KEPT_BYTES", 0)  # nothing kept: each reads its own
    alone = coregister_stack(inputs, reference, tmp_path / "alone.tif", mode="stack", register=True).summary
    assert sorted(reads) == sorted([reference] * 3 + inputs)
    assert _corrections(alone) == _corrections(summary)


def test_registrations_side_by_side_equal_one_at_a_time(coarser_inputs, monkeypatch, tmp_path, caplog):
    """Two registrations at once give the corrections, progress bounds and log of one at a time:
    the log's records come from the calling thread, each input's lines together, in input order."""
    reference, inputs, _ = coarser_inputs
    runs = {}
    for at_once in (1, 2):
        monkeypatch.setattr(stack, "REGISTRATIONS_AT_ONCE", at_once)
        caplog.clear()
        seen: list[float] = []
        with caplog.at_level(logging.INFO, logger="coreg"):
            summary = coregister_stack(inputs, reference, tmp_path / f"out{at_once}.tif", mode="stack",
                                       register=True, progress=seen.append).summary
        records = [r for r in caplog.records if r.name == "coreg"]
        assert {r.thread for r in records} == {threading.get_ident()}
        assert seen == sorted(seen)
        assert seen[-1] == 100
        runs[at_once] = ([i["registration"] for i in summary["inputs"]],
                         [r.getMessage() for r in records if "coarse model" in r.getMessage()
                          or r.getMessage().startswith(("corrected", "iteration"))])
    assert runs[2] == runs[1]
    assert sum("coarse model" in m for m in runs[2][1]) == 3


def test_log_records_of_a_helper_thread_are_held_and_emitted_as_the_callers(caplog):
    from coreg_plugin.common import held_logs

    log = logging.getLogger("coreg")
    held = []

    def helper() -> None:
        with held_logs.holding() as records:
            log.warning("from the helper")
        held.extend(records)

    with caplog.at_level(logging.INFO, logger="coreg"):
        thread = threading.Thread(target=helper)
        thread.start()
        thread.join()
        assert not [r for r in caplog.records if r.getMessage() == "from the helper"]
        held_logs.emit(held)
    emitted = [r for r in caplog.records if r.getMessage() == "from the helper"]
    assert len(emitted) == 1
    assert emitted[0].thread == threading.get_ident()


def test_coarser_copy_is_made_from_the_expected_finer_one(counted_reads):
    """While the raster is shared, a 6 x 6 average on the lattice of an expected 2 x 2 copy is made from
    that copy (the raster decoded once, for the 2 x 2): GDAL's own 6 x 6 values, to the last bit on
    integer data, and every read that reaches GDAL is a 2 x 2 one."""
    path = str(S2_REF)
    windows = [Window(6 * c, 6 * r, 6 * w, 6 * h) for c, r, w, h in ((0, 0, 40, 30), (17, 9, 25, 50), (2, 60, 64, 8))]
    with RasterSource(path, "reference") as source:
        assert np.dtype(source.dtype).kind == "u"
        direct = [source.read_average(1, w, (int(w.height) // 6, int(w.width) // 6), np.float32) for w in windows]
        counted_reads.clear()
        with shared_reads.sharing(path):
            shared_reads.expect(path, 1, 2, (source.dataset.height, source.dataset.width), np.float32)
            derived = [source.read_average(1, w, (int(w.height) // 6, int(w.width) // 6), np.float32)
                       for w in windows]
    for a, b in zip(direct, derived):
        np.testing.assert_array_equal(a, b)
    assert counted_reads
    assert {int(window.width) // shape[1] for _, window, shape in counted_reads} == {2}


def test_registered_stack_decodes_its_reference_once_for_coarse_stage_and_tie_points(
    coarser_inputs, counted_reads, monkeypatch, tmp_path,
):
    """With coarse pixels of 6 x 6 reference pixels (a coarse stage of at most 200 px here, as a
    5490 px input's is at most 1024) and tie points on the 2 x 2 average, every averaged read of the
    reference that reaches GDAL is a 2 x 2 one: the registrations make that copy first and the
    coarse stage's 6 x 6 from it; the corrections still undo the known offsets."""
    reference, inputs, offsets = coarser_inputs
    whole_side = coarse.coarse_grid
    monkeypatch.setattr(coarse, "coarse_grid", lambda grid, box: whole_side(grid, box, max_side=200))
    summary = coregister_stack(inputs, reference, tmp_path / "shared.tif", mode="stack", register=True).summary
    factors = {int(window.width) // shape[1] for path, window, shape in counted_reads if path == reference}
    assert factors == {2}
    np.testing.assert_allclose(_corrections(summary), [(-dx / 20, dy / 20) for dx, dy in offsets], atol=0.03)
