"""Fixtures for the QGIS lane: load the plugin the way QGIS does and register its provider.

QGIS puts the folder that holds the plugin folder on ``sys.path``, imports the plugin by the folder's
name and calls ``classFactory(iface)``; ``initProcessing()`` then adds the provider. Doing the same
here exercises the real import path (``coreg.processing_provider`` -> ``coreg.coreg_plugin``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
ALGORITHM = "coreg:alignimagepair"


@pytest.fixture(scope="session")
def coreg_package(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The plugin package imported as QGIS imports it: ``coreg`` from a plugins folder."""
    plugins = tmp_path_factory.mktemp("qgis-plugins")
    (plugins / "coreg").symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(plugins))
    return importlib.import_module("coreg")


@pytest.fixture(scope="session")
def coreg_plugin_instance(qgis_processing: None, qgis_iface, coreg_package):  # noqa: ANN001, ANN201, ARG001
    """The plugin object with its provider registered (a reference is kept for the session)."""
    plugin = coreg_package.classFactory(qgis_iface)
    plugin.initProcessing()
    yield plugin
    plugin.unload()


@pytest.fixture(scope="session")
def coreg_provider(coreg_plugin_instance):  # noqa: ANN001, ANN201
    return coreg_plugin_instance.provider


@pytest.fixture(scope="session")
def sample_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The synthetic pair with a known shift: (folder with fixed.tif and moving.tif, truth)."""
    from coreg_plugin.testing.synthetic import make_sample_pair

    folder = tmp_path_factory.mktemp("sample-pair")
    truth = make_sample_pair(str(folder))
    return folder, truth


@pytest.fixture(scope="session")
def real_pair() -> tuple[Path, Path]:
    """Sentinel-2 pair from shared/data: (moving, fixed)."""
    folder = DATA_DIR / "s2-inter1"
    moving, fixed = folder / "tgt_S2A_20160529_T33UUU.tif", folder / "ref_S2A_20160608_T33UUU.tif"
    if not (moving.exists() and fixed.exists()):
        pytest.fail(f"test data missing: {folder} (shared/data must sit beside the repository)")
    return moving, fixed
