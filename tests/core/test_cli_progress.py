"""Issue 28: on a terminal, a run shows a progress bar (tqdm) with its stage and the time left; the
JSON summary on stdout stays clean; --quiet, a stderr that is not a terminal or a missing tqdm show none."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from coreg_plugin.common import progress
from coreg_plugin.testing import synthetic

ROOT = Path(__file__).resolve().parents[2]
#: The bar shows from the start (by default it waits progress.BAR_DELAY_S, so short runs show none).
NO_DELAY = "import coreg_plugin.common.progress as p; p.BAR_DELAY_S = 0\n"
BAR = re.compile(r"\d+%\|")
TIME_LEFT = re.compile(r"\d\d:\d\d elapsed, \d\d:\d\d left")


def _cli(args: list[str], prelude: str = NO_DELAY, terminal: bool = True) -> tuple[int, str, str]:
    """``coreg_plugin.cli.main(args)`` in a child whose stderr is a 100 x 24 pseudo-terminal (or a
    pipe when not ``terminal``) and stdout a pipe: exit code, stdout, all that stderr showed."""
    code = f"import sys\n{prelude}from coreg_plugin.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    if not terminal:
        run = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, check=False, timeout=300)
        return run.returncode, run.stdout, run.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        run = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=follower, stdin=subprocess.DEVNULL, text=True, check=False, timeout=300)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    return run.returncode, run.stdout, shown.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    return synthetic.make_sample_pair(folder, size=384, shift=(1.5, -0.75), seed=28)


def test_align_on_a_terminal_shows_its_stages_and_the_time_left(pair, tmp_path):
    code, out, shown = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                             str(pair["fixed_image"]), "--output-image", str(tmp_path / "aligned.tif")])
    assert code == 0, shown
    assert json.loads(out)["shift_px"]  # stdout is the summary alone
    assert BAR.search(shown), shown
    for stage in ("align: coarse match", "align: tie points", "align: writing"):
        assert stage in shown, shown
    assert TIME_LEFT.search(shown), shown
    # the bar is taken off at the end: its line overwritten with blanks, the cursor back at its start
    assert shown.endswith("\r"), repr(shown[-300:])
    assert shown.split("\r")[-2].strip() == "", repr(shown[-300:])


def test_stack_on_a_terminal_names_registration_then_writing(tmp_path, write):
    truth = synthetic.realistic_scene(384, 384, seed=28) * 3000 + 400
    reference = write("reference.tif", truth)
    inputs = []
    for k, shift in enumerate([(1.25, -0.5), (-0.75, 1.0), (0.5, 0.25)]):
        h = np.eye(3)
        h[:2, 2] = shift
        inputs.append(str(write(f"in{k}.tif", synthetic.misregister(truth, h))))
    code, out, shown = _cli(["stack", *inputs, "--reference", str(reference), "--output", str(tmp_path / "s.tif"),
                             "--register"])
    assert code == 0, shown
    assert json.loads(out)["totals"]["used"] == 3
    registering, writing = shown.find("stack: registering 3 inputs"), shown.find("stack: warping and writing")
    assert 0 <= registering < writing, shown
    assert TIME_LEFT.search(shown), shown


def test_quiet_shows_no_bar_on_a_terminal(pair, tmp_path):
    code, out, shown = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                             str(pair["fixed_image"]), "--output-image", str(tmp_path / "aligned.tif"), "--quiet"])
    assert code == 0, shown
    assert json.loads(out)["shift_px"]
    assert shown == ""


def test_not_a_terminal_shows_no_bar(pair, tmp_path):
    code, out, err = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                           str(pair["fixed_image"]), "--output-image", str(tmp_path / "aligned.tif")], terminal=False)
    assert code == 0, err
    assert json.loads(out)["shift_px"]
    assert err == ""


def test_without_tqdm_there_is_no_bar_and_the_run_succeeds(pair, tmp_path):
    code, out, shown = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                             str(pair["fixed_image"]), "--output-image", str(tmp_path / "aligned.tif")],
                            prelude=NO_DELAY + "sys.modules['tqdm'] = None\n")
    assert code == 0, shown
    assert json.loads(out)["shift_px"]
    assert shown == ""


def test_log_lines_are_whole_lines_above_the_bar(pair, tmp_path):
    output = tmp_path / "aligned.tif"
    code, out, shown = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                             str(pair["fixed_image"]), "--output-image", str(output), "--log-to-console"])
    assert code == 0, shown
    assert json.loads(out)["shift_px"]
    # the terminal turns each "\n" into "\r\n"; a "\r" returns to the line's start, which is overwritten
    lines = [line.split("\r")[-1] for line in shown.replace("\r\n", "\n").split("\n")]
    assert any(line.startswith(f"coreg: wrote {output}") for line in lines), shown
    assert BAR.search(shown), shown


def test_a_short_run_shows_no_bar(pair, tmp_path):
    """The bar waits BAR_DELAY_S before it shows: a run done by then leaves the terminal untouched."""
    code, out, shown = _cli(["align", "--moving-image", str(pair["moving_image"]), "--fixed-image",
                             str(pair["fixed_image"]), "--output-image", str(tmp_path / "aligned.tif")],
                            prelude="import coreg_plugin.common.progress as p; p.BAR_DELAY_S = 60\n")
    assert code == 0, shown
    assert shown == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_follows_the_stages_of_the_percentages(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress, "BAR_DELAY_S", 0)
    screen = FakeTerminal()
    with progress.terminal_bar([(0, "one"), (30, "two"), (80, "three")], screen) as bar:
        assert bar is not None
        for percent in range(0, 101, 5):
            bar(percent)
            time.sleep(0.02)
    shown = screen.getvalue()
    assert shown.index("one: ") < shown.index("two: ") < shown.index("three: "), shown
    assert TIME_LEFT.search(shown), shown


def test_no_bar_on_a_stream_that_is_not_a_terminal_or_when_quiet():
    with progress.terminal_bar([(0, "one")], io.StringIO()) as bar:
        assert bar is None
    with progress.terminal_bar([(0, "one")], FakeTerminal(), enabled=False) as bar:
        assert bar is None


def test_a_new_stage_is_drawn_at_once_even_right_after_a_redraw():
    """tqdm redraws at most every 0.1 s and, after one long step, waits for as much progress again:
    a stage entered just after a redraw and finished quickly (a small output's writing) must still
    be drawn. A clock driven by the test makes it deterministic."""
    from tqdm import tqdm

    clock = {"now": 1000.0}

    class Clocked(tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._time = lambda: clock["now"]
            self.start_t = self.last_print_t = clock["now"]

    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    bar = progress.TerminalBar([(0, "align: coarse match"), (10, "align: tie points"), (90, "align: writing")],
                               stream, Clocked)
    for now, percent in [(1001.0, 5), (1001.5, 13), (1001.52, 95), (1001.54, 100)]:
        clock["now"] = now
        bar(percent)
    shown = stream.getvalue()
    bar.close()
    assert "align: tie points" in shown, shown
    assert "align: writing" in shown, shown
