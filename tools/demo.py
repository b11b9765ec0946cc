"""Demo: align the synthetic sample pair with ``qgis_process`` and compare the shift found with the truth.

Run with Debian's Python (``make demo``): it needs Debian's numpy/rasterio for the sample pair and
QGIS 3.22's ``qgis_process``. Everything is written under build/ (demo data, plugin link, profile).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from coreg_plugin.testing.synthetic import make_sample_pair  # noqa: E402
from tools.qgis_env import enable_plugin, headless_env, run_json  # noqa: E402


def main() -> int:
    build = REPO_ROOT / "build"
    scratch = build / "demo"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(build / "demo-qgis", ignore_errors=True)
    scratch.mkdir(parents=True)
    truth = make_sample_pair(str(scratch))
    moving, fixed, output = scratch / "moving.tif", scratch / "fixed.tif", scratch / "aligned.tif"
    print(f"Sample pair written to {scratch}")

    env = headless_env(build / "demo-qgis", plugins_dir=build / "plugins")
    enable_plugin(env)
    print(f"Plugin folder {env['QGIS_PLUGINPATH']}/coreg -> {REPO_ROOT}; profile {env['QGIS_CUSTOM_CONFIG_PATH']}")
    print("Running: qgis_process.bin --json run coreg:alignimagepair -- MOVING=... FIXED=... OUTPUT=...")
    code, payload, log = run_json(
        "coreg:alignimagepair", {"MOVING": moving, "FIXED": fixed, "OUTPUT": output}, env
    )
    if code != 0 or "results" not in payload:
        print(f"qgis_process failed (exit {code}):\n{log}", file=sys.stderr)
        return 1
    results = payload["results"]

    print("\nResults from qgis_process:")
    print(json.dumps(results, indent=2))
    print("\nTruth from make_sample_pair:")
    print(json.dumps(truth, indent=2, default=str))
    print(f"\n{'':10}{'reported':>12}{'true':>12}{'error':>12}")
    worst = 0.0
    for axis in ("x", "y"):
        reported, true = results[f"SHIFT_{axis.upper()}_PX"], truth["shift_px"][axis]
        worst = max(worst, abs(reported - true))
        print(f"shift {axis} px{reported:12.3f}{true:12.3f}{reported - true:12.3f}")
    for axis in ("x", "y"):
        if axis in truth.get("shift_m", {}):
            reported, true = results[f"SHIFT_{axis.upper()}_M"], truth["shift_m"][axis]
            print(f"shift {axis} m {reported:12.3f}{true:12.3f}{reported - true:12.3f}")
    print(f"\nModel {results['MODEL_USED']}, {results['TIE_POINTS_USED']:.0f} tie points, "
          f"RMSE {results['RMSE_PX']:.3f} px, quality {results['QUALITY']:.2f}; worst shift error {worst:.3f} px")
    print(f"Aligned image: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
