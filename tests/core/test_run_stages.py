"""A run's stages: the GDAL environment it runs in, the time each stage takes (summary
``timings_s``), and cancellation answered inside every stage."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import rasterio

from conftest import ORIGIN, S2_REF, read_window
from coreg_plugin import CancelledError, align_image_pair
from coreg_plugin.testing import synthetic

STAGES = ("coarse", "tie_points", "model_fit", "output")


def gdal_cache_max_bytes() -> int:
    """GDAL's block cache limit really in force (GDALGetCacheMax64 of the GDAL rasterio loaded)."""
    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "libgdal" in line)
    gdal = ctypes.CDLL(path)
    gdal.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(gdal.GDALGetCacheMax64())


def test_gdal_block_cache_is_megabytes_during_a_run(tmp_path, scene, monkeypatch):
    """Align's block cache is GDAL_CACHE_BYTES (megabytes given as bytes), but for the tie points,
    which measure windows the coarse stage kept: they run with the small KEPT_RUN_CACHE_BYTES (the
    coarse stage's blocks given back), in the worker threads too, and the output stage has its
    cache again."""
    from coreg_plugin.common.options import GDAL_CACHE_BYTES
    from coreg_plugin.estimate import tiepoints

    fixed, moving = scene
    seen, in_tie_points = [], []
    measure_batch = tiepoints.TiePointMatcher.measure_batch

    def recording(self, *args, **kwargs):
        in_tie_points.append((gdal_cache_max_bytes(), self.kept[0] is not None))
        return measure_batch(self, *args, **kwargs)

    def progress(_: float) -> None:
        seen.append((gdal_cache_max_bytes(), int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))))

    monkeypatch.setattr(tiepoints.TiePointMatcher, "measure_batch", recording)
    align_image_pair(moving, fixed, tmp_path / "out.tif", progress=progress)
    assert seen
    assert in_tie_points
    assert all(kept for _, kept in in_tie_points), "the coarse stage kept no moving window of this scene"
    assert {cache for cache, _ in in_tie_points} == {tiepoints.KEPT_RUN_CACHE_BYTES}
    for really_set, configured in seen:
        assert really_set in (GDAL_CACHE_BYTES, tiepoints.KEPT_RUN_CACHE_BYTES), f"GDAL block cache {really_set} bytes"
        assert configured == really_set
    assert seen[0][0] == seen[-1][0] == GDAL_CACHE_BYTES  # the coarse stage and the output


def test_gdal_block_cache_is_megabytes_during_a_stack(tmp_path, scene):
    from coreg_plugin import coregister_stack

    fixed, moving = scene
    seen = []
    coregister_stack([moving], fixed, tmp_path / "merged.tif", progress=lambda _: seen.append(gdal_cache_max_bytes()))
    assert seen
    assert all(32 << 20 <= value <= 256 << 20 for value in seen), seen[:3]


def test_gdal_block_cache_is_megabytes_while_applying_a_correction(tmp_path, scene):
    """Apply Correction sets its block cache in bytes too: 64 (megabytes meant) gave GDAL a cache of
    64 bytes, every block decoded again for every output block that reads it."""
    from coreg_plugin import apply_correction

    fixed, moving = scene
    correction = tmp_path / "correction.json"
    align_image_pair(moving, fixed, tmp_path / "aligned.tif", correction_file=correction)
    seen = []
    apply_correction(correction, moving, tmp_path / "applied.tif",
                     progress=lambda _: seen.append(gdal_cache_max_bytes()))
    assert seen
    assert all(32 << 20 <= value <= 256 << 20 for value in seen), seen[:3]


def test_summary_reports_the_time_of_every_stage(tmp_path, scene):
    fixed, moving = scene
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif").summary
    timings = summary["timings_s"]
    assert tuple(timings) == STAGES
    assert all(seconds > 0 for seconds in timings.values()), timings
    assert sum(timings.values()) == pytest.approx(summary["elapsed_s"], rel=0.05, abs=0.05)


def test_stack_summary_reports_registering_and_output(tmp_path, scene):
    """A stack's ``timings_s``: registering the inputs (0 when not asked) and warping, merging and
    writing the output, which add up to about the whole run."""
    from coreg_plugin import coregister_stack

    fixed, moving = scene
    for register in (True, False):
        summary = coregister_stack([moving], fixed, tmp_path / f"merged_{register}.tif", register=register).summary
        timings = summary["timings_s"]
        assert tuple(timings) == ("registration", "output")
        assert (timings["registration"] > 0) == register, timings
        assert timings["output"] > 0
        assert sum(timings.values()) == pytest.approx(summary["elapsed_s"], rel=0.1, abs=0.05)


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory) -> tuple:
    """A 2048 px fixed image, its copy shifted by (0.4, -0.3) px, and every progress value (percent)
    a whole run on them reports, in order."""
    folder = tmp_path_factory.mktemp("large")
    truth = read_window(S2_REF, 0, 0, 2048)
    h = np.eye(3)
    h[:2, 2] = (0.4, -0.3)
    fixed, moving = folder / "fixed.tif", folder / "moving.tif"
    synthetic.write_raster(fixed, truth, ORIGIN)
    synthetic.write_raster(moving, synthetic.misregister(truth, h), ORIGIN)
    values: list[float] = []
    align_image_pair(moving, fixed, folder / "whole.tif", progress=values.append)
    return fixed, moving, values


@pytest.mark.parametrize(("stage", "low", "high"), [
    ("coarse", 0.0, 5.0), ("tie points", 5.0, 50.0), ("output", 50.0, 100.0)])
def test_cancel_is_answered_in_every_stage(tmp_path, large_scene, stage, low, high):
    """Cancel once progress first passes a value inside the stage: the run stops at the very next
    poll, no further progress is reported, and nothing is written."""
    fixed, moving, values = large_scene
    inside = [v for v in values if low < v < high]
    assert len(inside) >= 3, f"progress moves {len(inside)} times in the {stage} stage"
    target = inside[len(inside) // 2]
    seen: list[float] = []
    after_cancel: list[float] = []

    def progress(value: float) -> None:
        (after_cancel if seen and seen[-1] >= target else seen).append(value)

    with pytest.raises(CancelledError):
        align_image_pair(moving, fixed, tmp_path / "out.tif", progress=progress,
                         is_cancelled=lambda: bool(seen) and seen[-1] >= target)
    assert after_cancel == []
    assert low < seen[-1] < high
    assert not (tmp_path / "out.tif").exists()


def test_coarse_decimated_read_equals_the_warp(write, monkeypatch):
    """Where the coarse grid lies on the source's pixels, a decimated read replaces the warp: the
    same averages (GDAL rounds them to the uint16 data); never for masked data or other grids."""
    from coreg_plugin.common.progress import Progress
    from coreg_plugin.estimate import coarse
    from coreg_plugin.io.raster_source import RasterSource

    values = read_window(S2_REF, 0, 0, 2400)
    plain = write("plain.tif", values, dtype="uint16")
    masked = write("masked.tif", values, dtype="uint16", nodata=0)
    with RasterSource(plain, "moving") as source, RasterSource(masked, "fixed") as with_nodata:
        grid, factor = coarse.coarse_grid(source.grid, (10, 20, 2390, 2380))
        assert factor == 3
        assert coarse.decimation_window(source, 1, grid, factor) is not None
        assert coarse.decimation_window(with_nodata, 1, grid, factor) is None
        assert coarse.decimation_window(source, 1, grid.subgrid(0.5, 0, grid.width, grid.height), factor) is None
        decimated = coarse.read_both(((source, 1), (source, 1)), grid, factor, Progress())[0]
        monkeypatch.setattr(coarse, "decimation_window", lambda *args: None)
        warped = coarse.read_both(((source, 1), (source, 1)), grid, factor, Progress())[0]
    assert np.isfinite(warped).all()
    np.testing.assert_allclose(decimated, warped, atol=0.5)
    assert np.abs(decimated - warped).mean() < 0.3


def test_coarse_read_of_a_slow_raster_is_finished_by_both_threads(write, monkeypatch):
    """The thread done with its raster reads the other raster's strips from the bottom (a core is not
    left idle while a slower raster decodes); the coarse images and kept windows are those of one
    thread per raster."""
    import threading
    import time

    from coreg_plugin.common.progress import Progress
    from coreg_plugin.estimate import coarse
    from coreg_plugin.io.kept_windows import KeptWindows
    from coreg_plugin.io.raster_source import RasterSource

    values = read_window(S2_REF, 0, 0, 2400)
    slow, fast = write("slow.tif", values, dtype="uint16"), write("fast.tif", values[::-1], dtype="uint16")
    regions = np.array([[30, 40, 300, 500], [1000, 1500, 272, 272], [1900, 1950, 300, 300]])
    read_strip, seen = coarse._read_strip, []

    def slowed(read, own, grid, factor, row, height):  # noqa: ANN001, ANN202
        if read.source.path == str(slow):
            time.sleep(0.05)
        seen.append((threading.current_thread().name, read.source.path, row))
        return read_strip(read, own, grid, factor, row, height)

    def run() -> tuple[list[np.ndarray], list[KeptWindows]]:
        with RasterSource(slow, "moving") as a, RasterSource(fast, "fixed") as b:
            grid, factor = coarse.coarse_grid(a.grid, (0, 0, 2400, 2400))
            kept = [KeptWindows(regions, "uint16"), KeptWindows(regions, "uint16")]
            return coarse.read_both(((a, 1), (b, 1)), grid, factor, Progress(), tuple(kept)), kept

    alone, alone_kept = run()
    monkeypatch.setattr(coarse, "_read_strip", slowed)
    shared, shared_kept = run()
    for image, expected in zip(shared, alone):
        np.testing.assert_array_equal(image, expected)
    for kept, expected in zip(shared_kept, alone_kept):
        for c, r, w, h in regions:
            window = rasterio.windows.Window(c, r, w, h)
            assert kept.window(window) is not None
            np.testing.assert_array_equal(kept.window(window), expected.window(window))
    fast_thread = next(name for name, path, _ in seen if path == str(fast))
    helped = [row for name, path, row in seen if name == fast_thread and path == str(slow)]
    ends = sorted({row for _, path, row in seen if path == str(slow)})
    assert helped
    assert helped == sorted(helped, reverse=True)
    assert helped[0] == ends[-1]


def test_coarse_grid_of_a_whole_raster_is_read_decimated(write):
    """A raster whose side is no multiple of the reduction factor still gets the decimated read:
    the coarse grid leaves out the last partial coarse pixel instead of reaching past the edge
    (which sent whole Sentinel-2 tiles through the 4x slower warp), and keeps as many whole coarse
    pixels as FFTs handle fast: 799 = 17 x 47 -> 792 = 2^3 x 3^2 x 11 (the bench's 5490 px inputs: 914 -> 900)."""
    from coreg_plugin.estimate import coarse
    from coreg_plugin.io.raster_source import RasterSource

    path = write("odd.tif", read_window(S2_REF, 0, 0, 2400)[:2399, :2399], dtype="uint16")
    with RasterSource(path, "moving") as source:
        grid, factor = coarse.coarse_grid(source.grid, (0, 0, 2399, 2399))
        assert factor == 3
        assert (grid.width, grid.height) == (792, 792)
        assert coarse.decimation_window(source, 1, grid, factor) is not None
