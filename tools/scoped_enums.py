"""Find unscoped Qt and QGIS enum members (``QgsProcessing.TypeRaster``) that PyQt6 / QGIS 4 reject.

    /usr/bin/python3 tools/scoped_enums.py [file or folder ...]

PyQt6 (QGIS 4) only knows enum members through their enum: ``Qt.AlignmentFlag.AlignLeft``, not
``Qt.AlignLeft``. This walks the syntax tree of Python files and resolves every attribute access
``Owner.Member`` whose ``Owner`` comes from an import of ``qgis.*`` (``qgis.core``, ``qgis.PyQt.QtCore``
...) against the installed QGIS and PyQt. It reports the access when the member is an enum value
and ``Owner`` is not that value's own enum class, i.e. the value is reached unscoped. Accesses that do
not resolve on the installed release (a scoped name only a newer QGIS has) are not reported.
"""

from __future__ import annotations

import ast
import enum
import importlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("__init__.py", "processing_provider", "tools", "tests")
_UNRESOLVED = object()


@dataclass(frozen=True)
class Finding:
    """One unscoped enum member: where, what was written and the scoped spelling to use."""

    path: str
    line: int
    written: str
    scoped: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.written} -> {self.scoped}"


def is_enum_value(value: object) -> bool:
    """True for a member of a Python ``enum`` or of a sip (PyQt5) enum type."""
    return isinstance(value, enum.Enum) or type(type(value)).__name__ == "enumtype"


def _qgis_imports(tree: ast.AST) -> dict[str, object]:
    """Names bound by ``import qgis...`` / ``from qgis... import X`` anywhere in the module."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "qgis":
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for alias in node.names:
                value = getattr(module, alias.name, _UNRESOLVED)
                if value is _UNRESOLVED:
                    try:
                        value = importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        continue
                names[alias.asname or alias.name] = value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "qgis":
                    continue
                try:
                    module = importlib.import_module(alias.name)
                except ImportError:
                    continue
                if alias.asname:
                    names[alias.asname] = module
                else:
                    names["qgis"] = importlib.import_module("qgis")
    return names


def _resolve(node: ast.expr, names: dict[str, object]) -> object:
    if isinstance(node, ast.Name):
        return names.get(node.id, _UNRESOLVED)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if owner is _UNRESOLVED:
            return _UNRESOLVED
        try:
            return getattr(owner, node.attr)
        except Exception:  # noqa: BLE001 (any failure means: not resolvable on this release)
            return _UNRESOLVED
    return _UNRESOLVED


def _scoped_spelling(value: object, member: str) -> str:
    """``Enum.Member`` for an enum value written as ``Owner.member``."""
    name = value.name if isinstance(value, enum.Enum) else member
    return f"{type(value).__qualname__}.{name}"


def find_in_source(source: str, path: str = "<source>") -> list[Finding]:
    """The unscoped enum members in one module's source."""
    tree = ast.parse(source, filename=path)
    names = _qgis_imports(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        owner = _resolve(node.value, names)
        if owner is _UNRESOLVED or not isinstance(owner, type):
            continue
        value = _resolve(node, names)
        if value is _UNRESOLVED or not is_enum_value(value) or isinstance(value, owner):
            continue
        findings.append(Finding(path, node.lineno, ast.unparse(node), _scoped_spelling(value, node.attr)))
    return findings


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            yield path


def find_in_paths(paths: Iterable[Path]) -> list[Finding]:
    """The unscoped enum members in every Python file under ``paths``."""
    findings = []
    for path in python_files(paths):
        shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        findings.extend(find_in_source(path.read_text(encoding="utf-8"), str(shown)))
    return findings


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv[1:]] or [REPO_ROOT / p for p in DEFAULT_PATHS]
    findings = find_in_paths(paths)
    for finding in findings:
        print(finding)
    print(f"{len(findings)} unscoped enum member(s)", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
