"""The algorithms' own definitions, for the documentation: loads the Coreg provider in headless QGIS.

    .venv-qgis/bin/python tools/docs_params.py OUT.json

Loads the plugin as QGIS does (the checkout linked as ``coreg`` into a plugins folder, ``classFactory``,
``initProcessing``) and writes, for every algorithm of the ``coreg`` provider, its id, name, help text and
every parameter and output as QGIS defines them (name, label, type, default, options, optional, advanced,
help) to ``OUT.json``. ``tools/docs_build.py`` turns that into the parameter tables of the algorithm pages,
so a table cannot say anything the dialog does not. The Markdown rendering (``help_markdown``,
``parameters_markdown``, ``outputs_markdown``) is plain Python and needs no QGIS.

Run it with Debian's Python (``.venv-qgis``) and ``QT_QPA_PLATFORM=offscreen`` (``make docs`` does).
"""

from __future__ import annotations

import html
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PROVIDER_ID = "coreg"

#: How the parameter types QGIS reports (``QgsProcessingParameterDefinition.type()``) read in a table.
TYPE_LABELS = {
    "raster": "raster layer",
    "multilayer": "raster layers (one or more)",
    "band": "band number (1 = first)",
    "enum": "choice",
    "boolean": "checkbox",
    "number": "number",
    "file": "file",
    "rasterDestination": "raster output",
    "sink": "vector output",
    "fileDestination": "file output",
    "folderDestination": "folder output",
}

#: How output types (``QgsProcessingOutputDefinition.type()``) read.
OUTPUT_TYPE_LABELS = {
    "outputRaster": "raster layer",
    "outputVector": "vector layer",
    "outputHtml": "HTML file",
    "outputFile": "file",
    "outputFolder": "folder",
    "outputNumber": "number",
    "outputString": "text",
}


# ---------------------------------------------------------------- collecting (QGIS)

def _plain(value: Any) -> Any:
    """A QVariant-ish default as JSON (None, bool, number, string or list)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def describe_parameter(parameter: Any) -> dict[str, Any]:
    """One parameter definition as plain values."""
    from qgis.core import QgsProcessingParameterDefinition

    flags = int(parameter.flags())
    advanced = getattr(QgsProcessingParameterDefinition, "FlagAdvanced", None)
    optional = getattr(QgsProcessingParameterDefinition, "FlagOptional", None)
    hidden = getattr(QgsProcessingParameterDefinition, "FlagHidden", None)
    if advanced is None:  # QGIS 4: Qgis.ProcessingParameterFlag
        from qgis.core import Qgis

        advanced = Qgis.ProcessingParameterFlag.Advanced
        optional = Qgis.ProcessingParameterFlag.Optional
        hidden = Qgis.ProcessingParameterFlag.Hidden
    info: dict[str, Any] = {
        "name": parameter.name(),
        "label": parameter.description(),
        "type": parameter.type(),
        "default": _plain(parameter.defaultValue()),
        "help": parameter.help() or "",
        "optional": bool(flags & int(optional)),
        "advanced": bool(flags & int(advanced)),
        "hidden": bool(flags & int(hidden)),
    }
    if parameter.type() == "enum":
        info["options"] = list(parameter.options())
    if parameter.type() == "number":
        from qgis.core import QgsProcessingParameterNumber

        integer = getattr(QgsProcessingParameterNumber, "Integer", None)
        if integer is None:  # QGIS 4
            from qgis.core import Qgis

            integer = Qgis.ProcessingNumberParameterType.Integer
        info["integer"] = int(parameter.dataType()) == int(integer)
        minimum, maximum = parameter.minimum(), parameter.maximum()
        info["minimum"] = minimum if minimum > -1e300 else None
        info["maximum"] = maximum if maximum < 1e300 else None
    return info


def collect() -> list[dict[str, Any]]:
    """Every algorithm of the provider, loaded as QGIS loads the plugin (QGIS must be initialised)."""
    import importlib

    from qgis.core import QgsApplication

    from tools.qgis_env import link_plugin

    plugins = Path(tempfile.mkdtemp(prefix="coreg-docs-plugins-"))
    link_plugin(plugins)
    sys.path.insert(0, str(plugins))
    package = importlib.import_module("coreg")
    plugin = package.classFactory(None)
    plugin.initProcessing()
    provider = QgsApplication.processingRegistry().providerById(PROVIDER_ID)
    if provider is None:
        raise SystemExit(f"the {PROVIDER_ID} provider did not register")
    algorithms = []
    for algorithm in sorted(provider.algorithms(), key=lambda a: a.name()):
        algorithms.append({
            "id": algorithm.id(),
            "name": algorithm.name(),
            "display_name": algorithm.displayName(),
            "group": algorithm.group(),
            "help": algorithm.shortHelpString() or "",
            "help_url": algorithm.helpUrl() or "",
            "parameters": [describe_parameter(p) for p in algorithm.parameterDefinitions()],
            "outputs": [{"name": o.name(), "label": o.description(), "type": o.type()}
                        for o in algorithm.outputDefinitions()],
        })
    plugin.unload()
    return algorithms


# ---------------------------------------------------------------- rendering (no QGIS)

def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (HTML escaped, no pipes or line breaks)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def default_text(parameter: dict[str, Any]) -> str:
    """The default as the dialog shows it."""
    value = parameter["default"]
    if parameter["type"] == "enum" and isinstance(value, int) and 0 <= value < len(parameter.get("options", [])):
        return f"`{parameter['options'][value]}`"
    if parameter["type"] == "enum" and isinstance(value, str) and value.isdigit():
        return f"`{parameter['options'][int(value)]}`"
    if isinstance(value, bool):
        return "checked" if value else "unchecked"
    if value in (None, "", []):
        if parameter["type"] in ("sink", "fileDestination", "folderDestination", "rasterDestination"):
            return "not written" if parameter["optional"] else "temporary file"
        return "none" if parameter["optional"] else "required"
    if parameter["type"] == "number" and isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def type_text(parameter: dict[str, Any]) -> str:
    label = TYPE_LABELS.get(parameter["type"], parameter["type"])
    if parameter["type"] == "number":
        label = "whole number" if parameter.get("integer") else "number"
        bounds = [f"min {parameter['minimum']:g}" if parameter.get("minimum") is not None else "",
                  f"max {parameter['maximum']:g}" if parameter.get("maximum") is not None else ""]
        if any(bounds):
            label += f" ({', '.join(b for b in bounds if b)})"
    return label


def parameters_markdown(algorithm: dict[str, Any]) -> str:
    """The parameter table: id, label, type, default, meaning (with the choices of an enum)."""
    rows = ["| id | label in the dialog | type | default | meaning |", "|---|---|---|---|---|"]
    for parameter in algorithm["parameters"]:
        if parameter["hidden"]:
            continue
        meaning = _cell(parameter["help"])
        if parameter.get("options"):
            choices = ", ".join(f"`{i}` {_cell(option)}" for i, option in enumerate(parameter["options"]))
            meaning += f" Choices (qgis_process takes the number): {choices}."
        flags = [flag for flag, on in (("optional", parameter["optional"]), ("advanced", parameter["advanced"])) if on]
        label = _cell(parameter["label"]) + (f" <small>({', '.join(flags)})</small>" if flags else "")
        rows.append(f"| `{parameter['name']}` | {label} | {_cell(type_text(parameter))} | "
                    f"{default_text(parameter)} | {meaning} |")
    return "\n".join(rows) + "\n"


def outputs_markdown(algorithm: dict[str, Any]) -> str:
    """The outputs table: id, type, description (what a model or qgis_process --json gets back)."""
    rows = ["| id | type | description |", "|---|---|---|"]
    for output in algorithm["outputs"]:
        rows.append(f"| `{output['name']}` | {OUTPUT_TYPE_LABELS.get(output['type'], output['type'])} | "
                    f"{_cell(output['label'])} |")
    return "\n".join(rows) + "\n"


def help_markdown(algorithm: dict[str, Any]) -> str:
    """The help text of the dialog's right-hand panel, as a block quote of its paragraphs."""
    paragraphs = [" ".join(p.split()) for p in algorithm["help"].split("\n\n") if p.strip()]
    return "\n>\n".join(f"> {html.escape(p, quote=False)}" for p in paragraphs) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    from qgis.core import QgsApplication

    application = QgsApplication([], False)
    application.initQgis()
    try:
        algorithms = collect()
    finally:
        application.exitQgis()
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[1]).write_text(json.dumps(algorithms, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(algorithms)} algorithms, {sum(len(a['parameters']) for a in algorithms)} parameters -> {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
