"""Build the installable plugin zip, as plugins.qgis.org and "Install from ZIP" expect.

One top-level folder named after the plugin (``coreg/``) holding only the runtime files:
``metadata.txt``, ``__init__.py``, ``LICENSE`` (the GNU GPL v2 text; plugins.qgis.org refuses a zip
without it), ``coreg_plugin/**/*.py``, ``processing_provider/*.py`` and ``icons/*.svg``; with ``--docs SITE``
also the built documentation site (``make docs``: build/docs) as ``docs/site/``, which each algorithm's
help URL opens offline (``make zip`` passes it). No tests, tools,
Makefile, benchmark, build output, virtualenvs or ``__pycache__``. Entries are sorted and dated
1980-01-01, so the zip is reproducible.

With ``--check`` the zip must also pass what plugins.qgis.org checks on upload: ``metadata.txt``,
``__init__.py`` and ``LICENSE`` present, Bandit and detect-secrets without findings, flake8 with the
project's line length, and no executable, hidden or compiled files. The checkers run from the Python
that runs this script (``make deps`` installs them into the core venv).

    python tools/package.py [--check] [--docs build/docs] [build/coreg.zip]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "coreg"
RUNTIME_PATTERNS = ("metadata.txt", "__init__.py", "LICENSE", "coreg_plugin/**/*.py", "processing_provider/*.py",
                    "icons/*.svg")
#: Files plugins.qgis.org requires in the plugin folder (LICENSE since June 2024).
REQUIRED_FILES = ("metadata.txt", "__init__.py", "LICENSE")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
#: Where the documentation site goes in the plugin folder (processing_provider/common.py DOCS_SITES).
DOCS_FOLDER = "docs/site"
MAX_LINE_LENGTH = 120  # pyproject.toml [tool.ruff] line-length
COMPILED_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib", ".exe", ".o", ".a", ".class", ".jar")


def runtime_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files the plugin needs at run time, relative to ``root``, sorted."""
    found = {path.relative_to(root) for pattern in RUNTIME_PATTERNS for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def build_zip(output: Path, root: Path = REPO_ROOT, docs_site: Path | None = None) -> Path:
    """Write the plugin zip at ``output`` (with the documentation site ``docs_site`` as docs/site); return it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    files = runtime_files(root)
    missing = [name for name in REQUIRED_FILES if Path(name) not in files]
    if missing:
        raise SystemExit(f"{root} is not a complete plugin package: {', '.join(missing)} missing")
    entries = [(relative.as_posix(), root / relative) for relative in files]
    if docs_site is not None:
        docs_site = Path(docs_site)
        if not (docs_site / "index.html").is_file():
            raise SystemExit(f"{docs_site} is not a built documentation site (no index.html): run make docs")
        entries += [(f"{DOCS_FOLDER}/{path.relative_to(docs_site).as_posix()}", path)
                    for path in sorted(docs_site.rglob("*")) if path.is_file()]
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo(f"{PLUGIN_NAME}/{name}", FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return output


def entry_problems(archive: zipfile.ZipFile) -> list[str]:
    """Executable, hidden or compiled entries of ``archive``, and required files it lacks
    (plugins.qgis.org refuses both)."""
    names = set(archive.namelist())
    problems = [f"{PLUGIN_NAME}/{name}: missing" for name in REQUIRED_FILES if f"{PLUGIN_NAME}/{name}" not in names]
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if any(part.startswith(".") for part in path.parts):
            problems.append(f"{info.filename}: hidden file or folder")
        if path.suffix.lower() in COMPILED_SUFFIXES or "__pycache__" in path.parts:
            problems.append(f"{info.filename}: compiled file")
        if not info.is_dir() and (info.external_attr >> 16) & 0o111:
            problems.append(f"{info.filename}: executable")
    return problems


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def checker_problems(folder: Path) -> list[str]:
    """Bandit, detect-secrets and flake8 findings for the extracted plugin in ``folder``."""
    python = sys.executable
    problems = []
    bandit = _run([python, "-m", "bandit", "-r", "-q", "-f", "json", PLUGIN_NAME], folder)
    try:
        report = json.loads(bandit.stdout)
        problems += [f"bandit: {r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_text']}"
                     for r in report["results"]]
        problems += [f"bandit: {e['filename']}: {e['reason']}" for e in report.get("errors", [])]
    except (json.JSONDecodeError, KeyError):
        problems.append(f"bandit did not run: {bandit.stderr.strip()[-500:]}")
    secrets = _run([python, "-m", "detect_secrets", "scan", "--all-files", PLUGIN_NAME], folder)
    try:
        found = json.loads(secrets.stdout)["results"]
        problems += [f"detect-secrets: {name}:{hit['line_number']}: {hit['type']}"
                     for name, hits in found.items() for hit in hits]
    except (json.JSONDecodeError, KeyError):
        problems.append(f"detect-secrets did not run: {secrets.stderr.strip()[-500:]}")
    flake8 = _run([python, "-m", "flake8", f"--max-line-length={MAX_LINE_LENGTH}", PLUGIN_NAME], folder)
    if flake8.returncode != 0:
        lines = flake8.stdout.strip().splitlines() or [f"flake8 did not run: {flake8.stderr.strip()[-500:]}"]
        problems += [f"flake8: {line}" for line in lines]
    return problems


def check_zip(path: Path) -> list[str]:
    """Everything in the zip at ``path`` that plugins.qgis.org would refuse; empty when it passes."""
    with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as folder:
        problems = entry_problems(archive)
        archive.extractall(folder)
        return problems + checker_problems(Path(folder))


def main(argv: list[str]) -> int:
    args = argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    docs_site = None
    if "--docs" in args:
        at = args.index("--docs")
        docs_site = Path(args[at + 1])
        del args[at:at + 2]
    output = Path(args[0]) if args else REPO_ROOT / "build" / f"{PLUGIN_NAME}.zip"
    build_zip(output, docs_site=docs_site)
    with zipfile.ZipFile(output) as archive:
        print(f"{output}: {len(archive.namelist())} files")
    if check:
        problems = check_zip(output)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{output}: {'FAILS' if problems else 'passes'} the plugins.qgis.org checks "
              f"(Bandit, detect-secrets, flake8, no executable/hidden/compiled files, metadata.txt, __init__.py "
              f"and LICENSE present)")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
