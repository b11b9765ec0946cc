"""Done-means 4: bad input gets a clear message naming the file, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from conftest import ORIGIN, truth_image
from coreg_plugin import CancelledError, InputError, RegistrationError, align_image_pair
from coreg_plugin.cli import main
from coreg_plugin.common.affines import compose
from coreg_plugin.testing import synthetic


def bad_case(name, tmp_path, write, scene):
    """Return (moving, fixed, kwargs, error type, words the message must contain)."""
    fixed, moving = scene
    if name == "missing file":
        gone = tmp_path / "nope.tif"
        return gone, fixed, {}, InputError, [str(gone), "does not exist"]
    if name == "not a raster":
        text = tmp_path / "notes.tif"
        text.write_text("not a raster")
        return text, fixed, {}, InputError, [str(text), "not a raster"]
    if name == "no overlap":
        far = write("far.tif", truth_image("s2"), compose(ORIGIN, Affine.translation(50000, 0)))
        return far, fixed, {}, InputError, [str(far), "do not overlap"]
    if name == "band out of range":
        return moving, fixed, {"moving_band_index": 3}, InputError, [str(moving), "out of range", "1 band"]
    if name == "all nodata":
        empty = write("empty.tif", np.zeros((300, 300)), nodata=0)
        return empty, fixed, {}, InputError, [str(empty), "no valid pixels"]
    if name == "constant":
        flat = write("flat.tif", np.full((300, 300), 1234.0))
        return moving, flat, {}, RegistrationError, [str(flat), "constant", "no texture"]
    if name == "unrelated images":
        other = write("other.tif", synthetic.realistic_scene(768, 768, seed=99) * 3000)
        return other, fixed, {}, RegistrationError, [str(other), "no trustworthy registration"]
    if name == "unknown resampling":
        return moving, fixed, {"resampling": "sinc"}, InputError, ["unknown resampling", "sinc"]
    if name == "nodata outside dtype":
        return moving, fixed, {"output_nodata": -5}, InputError, ["output nodata", "uint16"]
    if name == "moving nodata outside dtype":
        return moving, fixed, {"moving_nodata": 70000}, InputError, [str(moving), "nodata", "uint16"]
    if name == "negative window":
        return moving, fixed, {"window_size": -64}, InputError, ["window size", "-64"]
    raise KeyError(name)


CASES = ["missing file", "not a raster", "no overlap", "band out of range", "all nodata", "constant",
         "unrelated images", "unknown resampling", "nodata outside dtype", "moving nodata outside dtype",
         "negative window"]


def leftovers(folder, before):
    return sorted(p.name for p in folder.iterdir() if p.name not in before)


@pytest.mark.parametrize("name", CASES)
def test_api_rejects_bad_input(tmp_path, write, scene, name):
    moving, fixed, kwargs, error, words = bad_case(name, tmp_path, write, scene)
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(error) as caught:
        align_image_pair(moving, fixed, tmp_path / "out.tif", **kwargs)
    for word in words:
        assert word in str(caught.value)
    assert leftovers(tmp_path, before) == []


@pytest.mark.parametrize("name", CASES)
def test_cli_rejects_bad_input(tmp_path, write, scene, name, capsys):
    moving, fixed, kwargs, error, words = bad_case(name, tmp_path, write, scene)
    before = {p.name for p in tmp_path.iterdir()}
    argv = ["align", "--moving-image", str(moving), "--fixed-image", str(fixed),
            "--output-image", str(tmp_path / "out.tif")]
    for key, value in kwargs.items():
        argv += [f"--{key.replace('_', '-')}", str(value)] if key != "resampling" else []
    if "resampling" in kwargs:
        with pytest.raises(SystemExit) as exit_info:  # argparse rejects the choice itself
            main(argv + ["--resampling", kwargs["resampling"]])
        assert exit_info.value.code == 2
    else:
        assert main(argv) == (2 if error is InputError else 1)
        captured = capsys.readouterr()
        assert captured.out == ""
        for word in words:
            assert word in captured.err
    assert leftovers(tmp_path, before) == []


def test_cancel_leaves_nothing(tmp_path, scene):
    fixed, moving = scene
    polls = []

    def cancelled():
        polls.append(1)
        return len(polls) > 20

    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(CancelledError, match="cancelled by the user"):
        align_image_pair(moving, fixed, tmp_path / "out.tif", is_cancelled=cancelled)
    assert len(polls) == 21  # stopped at the first true answer
    assert leftovers(tmp_path, before) == []


def test_failure_keeps_existing_output_intact(tmp_path, write, scene):
    fixed, moving = scene
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    flat = write("flat.tif", np.full((300, 300), 7.0))
    with pytest.raises(RegistrationError):
        align_image_pair(moving, flat, out)
    assert out.read_bytes() == b"precious"


def test_forced_low_quality_result_is_marked(tmp_path, write, scene):
    """A sound registration of a noisy image (quality just below 1: its tie points scatter) held to
    a gate of 1: refused, or written and marked untrusted when forced."""
    fixed, _ = scene
    truth = truth_image("s2")
    h = np.eye(3)
    h[:2, 2] = (1.5, -2.0)
    noise = np.random.default_rng(0).normal(0, 0.3 * truth.std(), truth.shape)
    moving = write("noisy.tif", synthetic.misregister(truth, h) + noise)
    with pytest.raises(RegistrationError, match="quality"):
        align_image_pair(moving, fixed, tmp_path / "refused.tif", min_quality=1.0)
    assert not (tmp_path / "refused.tif").exists()
    summary = align_image_pair(moving, fixed, tmp_path / "out.tif", min_quality=1.0, force=True).summary
    assert summary["quality"]["trusted"] is False
    assert any("LOW QUALITY" in note for note in summary["notes"])
    assert (tmp_path / "out.tif").exists()
    np.testing.assert_allclose([summary["shift_px"]["x"], summary["shift_px"]["y"]], (1.5, -2.0), atol=0.05)
