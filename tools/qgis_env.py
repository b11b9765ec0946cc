"""Run Debian's QGIS 3.22 ``qgis_process`` headless with the Coreg plugin, from a throwaway profile.

Shared by ``tools/demo.py`` and the tests. See shared/docs/qgis-headless.md for why each step is
needed: ``qgis_process.bin`` rather than the wrapper, ``QGIS_PLUGINPATH`` pointing at a folder that
holds the plugin folder under the plugin's name, a fresh profile in which the plugin is enabled once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "coreg"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # the /usr/bin/qgis_process wrapper adds --noversioncheck and fails


def link_plugin(plugins_dir: Path, name: str = PLUGIN_NAME) -> Path:
    """Make ``plugins_dir/name`` a symlink to the repository root (the plugin package); return plugins_dir."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    link = plugins_dir / name
    if link.is_symlink() and link.resolve() != REPO_ROOT:
        link.unlink()
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return plugins_dir


def headless_env(
    workdir: Path, *, plugins_dir: Path | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a headless ``qgis_process`` with a fresh profile under workdir.

    The plugin is linked into ``plugins_dir`` (default ``workdir/plugins``) as ``coreg``.
    """
    workdir = Path(workdir).resolve()
    env = dict(os.environ if base is None else base)
    runtime = workdir / "xdg-runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    for variable, folder in (
        ("XDG_CACHE_HOME", "xdg/cache"),
        ("XDG_DATA_HOME", "xdg/data"),
        ("XDG_CONFIG_HOME", "xdg/config"),
        ("QGIS_CUSTOM_CONFIG_PATH", "qgis-profile"),
    ):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
        env[variable] = str(workdir / folder)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["QT_HASH_SEED"] = "0"
    env["QGIS_PLUGINPATH"] = str(link_plugin(Path(plugins_dir or workdir / "plugins").resolve()))
    return env


def qgis_process(args: list[str], env: Mapping[str, str], *, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``qgis_process.bin args...``; return the completed process (text output, not checked)."""
    return subprocess.run(
        [QGIS_PROCESS, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def enable_plugin(env: Mapping[str, str], name: str = PLUGIN_NAME) -> None:
    """Enable the plugin in the profile of ``env`` (needed once per profile)."""
    done = qgis_process(["plugins", "enable", name], env)
    if done.returncode != 0 or f"Enabled {name}" not in done.stdout:
        raise RuntimeError(
            f"qgis_process could not enable plugin {name} (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )


def run_json(algorithm: str, parameters: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, dict, str]:
    """``qgis_process.bin --json run algorithm -- K=V ...``: return (exit code, parsed JSON or {}, stderr).

    A list or tuple value is passed as the same ``K=V`` repeated once per item, which is how
    qgis_process takes a multiple-layer parameter.
    """
    args = ["--json", "run", algorithm, "--"]
    for key, value in parameters.items():
        args += [f"{key}={item}" for item in (value if isinstance(value, (list, tuple)) else [value])]
    done = qgis_process(args, env)
    start = done.stdout.find("{")
    try:
        payload = json.loads(done.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        payload = {}
    return done.returncode, payload, done.stdout + done.stderr
