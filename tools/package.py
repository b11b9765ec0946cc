"""Build the installable plugin zip, as plugins.qgis.org and "Install from ZIP" expect.

One top-level folder named after the plugin (``coreg/``) holding only the runtime files:
``metadata.txt``, ``__init__.py``, ``LICENSE`` (if present), ``coreg_plugin/*.py``,
``processing_provider/*.py`` and ``icons/*.svg``. No tests, tools, Makefile, benchmark, build output,
virtualenvs or ``__pycache__``. Entries are sorted and dated 1980-01-01, so the zip is reproducible.

    python tools/package.py [build/coreg.zip]
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "coreg"
RUNTIME_PATTERNS = ("metadata.txt", "__init__.py", "LICENSE", "coreg_plugin/*.py", "processing_provider/*.py",
                    "icons/*.svg")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def runtime_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files the plugin needs at run time, relative to ``root``, sorted."""
    found = {path.relative_to(root) for pattern in RUNTIME_PATTERNS for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def build_zip(output: Path, root: Path = REPO_ROOT) -> Path:
    """Write the plugin zip at ``output``; return it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    files = runtime_files(root)
    if Path("metadata.txt") not in files or Path("__init__.py") not in files:
        raise SystemExit(f"{root} is not the plugin package (metadata.txt or __init__.py missing)")
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            info = zipfile.ZipInfo(f"{PLUGIN_NAME}/{relative.as_posix()}", FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / relative).read_bytes())
    return output


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "build" / f"{PLUGIN_NAME}.zip"
    build_zip(output)
    with zipfile.ZipFile(output) as archive:
        print(f"{output}: {len(archive.namelist())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
