"""Check that the QGIS test venv still uses Debian's numpy and rasterio (one GDAL, numpy 1.x ABI)."""

from __future__ import annotations

import sys

import numpy
import rasterio
import skimage


def main() -> int:
    problems = []
    if not numpy.__version__.startswith("1.24."):
        problems.append(f"numpy is {numpy.__version__} from {numpy.__file__}, expected Debian's 1.24")
    if rasterio.__version__ != "1.3.5":
        problems.append(f"rasterio is {rasterio.__version__} from {rasterio.__file__}, expected Debian's 1.3.5")
    for module in (numpy, rasterio, skimage):
        if not module.__file__.startswith("/usr/lib/python3/"):
            problems.append(f"{module.__name__} comes from {module.__file__}, not from Debian's /usr/lib/python3")
    if problems:
        print("QGIS lane is broken (pip pulled wheels over Debian's packages):", *problems, sep="\n  ")
        return 1
    print(f"QGIS lane: python {sys.version.split()[0]}, numpy {numpy.__version__}, "
          f"rasterio {rasterio.__version__}, skimage {skimage.__version__} (Debian)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
