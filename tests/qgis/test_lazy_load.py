"""Loading the plugin (classFactory + initProcessing) imports no numerics: they load when an algorithm runs.

Every QGIS start loads the plugin; importing numpy, rasterio, scipy, scikit-image, matplotlib or dask
then would add seconds to QGIS's start-up for users who never run Coreg.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NUMERICS = ("numpy", "rasterio", "scipy", "skimage", "matplotlib", "dask", "distributed")

LOAD = r'''
import json, sys, time
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
sys.path.insert(0, {plugins!r})
before = set(sys.modules)
start = time.perf_counter()
import coreg
plugin = coreg.classFactory(None)
plugin.initProcessing()
algorithms = [a.name() for a in plugin.provider.algorithms()]
elapsed = time.perf_counter() - start
loaded = sorted({{m.split(".")[0] for m in set(sys.modules) - before}})
{after}
print(json.dumps({{"algorithms": algorithms, "loaded": loaded, "count": len(set(sys.modules) - before),
                  "seconds": elapsed, "after_run": after_run}}))
'''

RUN = '''
import processing  # noqa
from processing.core.Processing import Processing
Processing.initialize()
params = {{"INPUTS": [{raster!r}], "REFERENCE": {raster!r}, "OUTPUT": {output!r}}}
processing.run("coreg:coregisterstack", params)
after_run = sorted({{m.split(".")[0] for m in sys.modules}})
'''


def load_in_subprocess(tmp_path: Path, *, run_after: bool) -> dict:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "coreg").symlink_to(REPO_ROOT, target_is_directory=True)
    raster = REPO_ROOT.parent / "shared" / "data" / "s2-inter1" / "ref_S2A_20160608_T33UUU.tif"
    after = RUN.format(raster=str(raster), output=str(tmp_path / "out.tif")) if run_after else "after_run = None"
    script = LOAD.format(plugins=str(plugins), after=after)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, ["/usr/share/qgis/python/plugins", os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_the_provider_imports_no_numerics(tmp_path: Path) -> None:
    result = load_in_subprocess(tmp_path, run_after=False)
    assert set(result["algorithms"]) >= {"alignimagepair", "coregisterstack"}
    assert not set(result["loaded"]) & set(NUMERICS), f"imported at load: {set(result['loaded']) & set(NUMERICS)}"


def test_the_numerics_load_when_an_algorithm_runs(tmp_path: Path) -> None:
    result = load_in_subprocess(tmp_path, run_after=True)
    assert {"numpy", "rasterio"} <= set(result["after_run"])
    assert (tmp_path / "out.tif").exists()
