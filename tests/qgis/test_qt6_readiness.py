"""QGIS 4 (Qt6) readiness, checked on the installed QGIS 3.x: scoped enums, Qt imports, metadata.

No Qt6 QGIS can be installed here, so what PyQt6 would reject is found statically: the syntax tree
of the plugin, tools and tests is resolved against the installed QGIS and PyQt (tools/scoped_enums.py).
"""

from __future__ import annotations

import ast
import configparser
import enum
import warnings
from pathlib import Path

import pytest
from qgis.core import QgsField

from processing_provider import qgis_enums
from tools.scoped_enums import DEFAULT_PATHS, REPO_ROOT, find_in_paths, find_in_source, python_files

CHECKED = [REPO_ROOT / p for p in DEFAULT_PATHS]


def number(value: object) -> int:
    return value.value if isinstance(value, enum.Enum) else int(value)


def test_no_unscoped_qt_or_qgis_enum_members() -> None:
    findings = find_in_paths(CHECKED)
    assert not findings, "unscoped enum members (PyQt6 rejects them):\n" + "\n".join(map(str, findings))


@pytest.mark.parametrize(("source", "expected"), [
    ("from qgis.core import QgsProcessing\nx = QgsProcessing.TypeRaster\n", ["QgsProcessing.TypeRaster"]),
    ("from qgis.PyQt.QtCore import Qt\nx = Qt.AlignLeft | Qt.AlignmentFlag.AlignTop\n", ["Qt.AlignLeft"]),
    ("from qgis.PyQt.QtGui import QImage\nx = QImage.Format_ARGB32\ny = QImage.Format.Format_RGB32\n",
     ["QImage.Format_ARGB32"]),
    ("import qgis.core\nx = qgis.core.QgsWkbTypes.Point\n", ["qgis.core.QgsWkbTypes.Point"]),
    ("def f():\n    from qgis.core import QgsFeatureSink\n    return QgsFeatureSink.FastInsert\n",
     ["QgsFeatureSink.FastInsert"]),
    # not Qt/QGIS, or not an enum member: never reported
    ("import enum\nclass E(enum.Enum):\n    A = 1\nclass C:\n    A = E.A\nx = C.A\n", []),
    ("from qgis.core import QgsProcessing\nx = QgsProcessing.TEMPORARY_OUTPUT\n", []),
])
def test_the_checker_finds_unscoped_members(source: str, expected: list[str]) -> None:
    assert [f.written for f in find_in_source(source)] == expected


def test_the_shim_gives_the_same_numbers_as_the_old_names() -> None:
    """Each constant is the Qgis.* member (3.36+) or the old scoped member (3.22): same number."""
    assert number(qgis_enums.SOURCE_RASTER) == 3
    assert number(qgis_enums.SOURCE_VECTOR_POINT) == 0
    assert number(qgis_enums.NUMBER_INTEGER) == 0
    assert number(qgis_enums.NUMBER_DOUBLE) == 1
    assert number(qgis_enums.FLAG_ADVANCED) == 2
    assert number(qgis_enums.FLAG_OPTIONAL) == 8
    assert number(qgis_enums.WKB_POINT) == 1
    assert number(qgis_enums.GEOMETRY_POINT) == 0
    assert number(qgis_enums.SYMBOL_PROPERTY_SIZE) == 0
    assert number(qgis_enums.SYMBOL_PROPERTY_ANGLE) == 1
    with pytest.raises(AttributeError, match="neither"):
        qgis_enums.scoped("Qgis.NoSuchEnum.Member", "QgsProcessing.NoSuchEnum.Member")


def test_field_types_make_fields_without_deprecation_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fields = {t: QgsField("f", t) for t in (qgis_enums.FIELD_STRING, qgis_enums.FIELD_INT, qgis_enums.FIELD_DOUBLE)}
    assert [f.isNumeric() for f in fields.values()] == [False, True, True]
    # QVariant::String, Int, Double and QMetaType::QString, Int, Double share their numbers
    assert [number(f.type()) for f in fields.values()] == [10, 2, 6]


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_qt_only_through_qgis_pyqt_and_no_qtwebkit_or_exec_() -> None:
    problems = []
    for path in python_files(CHECKED):
        for name in imports(path):
            if name.split(".")[0] in ("PyQt5", "PyQt6", "sip") or "QtWebKit" in name:
                problems.append(f"{path.relative_to(REPO_ROOT)}: imports {name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        problems += [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: exec_()" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and node.attr == "exec_"]
    assert not problems, "\n".join(problems)


def test_metadata_declares_qt6_support() -> None:
    metadata = configparser.ConfigParser()
    metadata.read(REPO_ROOT / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["supportsQt6"] == "True"
    assert general["qgisMaximumVersion"] == "4.99"
    assert general["qgisMinimumVersion"] == "3.22"
