"""Build the documentation site: Markdown from docs/ plus what is generated from the code, then MkDocs.

    .venv-qgis/bin/python tools/docs_build.py [--src build/docs-src] [--site build/docs]
                                             [--screenshots build/screenshots]

1. ``docs/`` (the hand-written pages, images and figures) is copied to ``--src``; pictures in
   ``--screenshots`` (what ``make screenshot`` took last, with ``tutorial-results.json``) replace the
   committed copies in ``docs/images/``.
2. What describes code is generated, never typed: the markers below, on a line of their own, are
   replaced in every page.

   - ``<!-- coreg:help NAME -->``, ``<!-- coreg:parameters NAME -->``, ``<!-- coreg:outputs NAME -->``:
     the algorithm's help text and its parameter and output tables, from the algorithms' own definitions
     (``tools/docs_params.py``, which loads the provider in headless QGIS);
   - ``<!-- coreg:cli COMMAND -->``: ``python -m coreg_plugin COMMAND --help`` (``main`` for the top level);
   - ``<!-- coreg:api -->``: the public names of ``coreg_plugin`` with their signatures and docstrings;
   - ``[[run.KEY]]`` or ``[[run.KEY:FORMAT]]`` (inline): a figure of the tutorial's desktop run
     (``tutorial-results.json``: what each algorithm returned in the run the screenshots come from).

   A marker left unknown stops the build.
3. ``mkdocs build --strict`` (``mkdocs.yml``; warnings are errors) writes the HTML into ``--site``.

Run it with Debian's Python (``.venv-qgis``, where Debian's mkdocs and QGIS are); ``make docs`` does.
"""

from __future__ import annotations

import argparse
import html
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
CLI_COMMANDS = ("main", "align", "apply", "stack")
BLOCK_MARKER = re.compile(r"^<!-- coreg:(\w+)(?: ([\w.]+))? -->$", re.MULTILINE)
RUN_VALUE = re.compile(r"\[\[([a-z_]\w*)\.([A-Za-z_]\w*)(?::([^\]]+))?\]\]")


class DocsError(SystemExit):
    """The documentation cannot be built; the message says why."""


# ---------------------------------------------------------------- generated pieces

def algorithm_definitions(workdir: Path) -> dict[str, dict[str, Any]]:
    """The algorithms' definitions by name, from ``tools/docs_params.py`` in a headless QGIS process."""
    from tools.qgis_env import headless_env

    target = workdir / "algorithms.json"
    env = headless_env(workdir / "qgis")
    env.pop("QGIS_PLUGINPATH", None)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "docs_params.py"), str(target)], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not target.exists():
        raise DocsError(f"tools/docs_params.py failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {algorithm["name"]: algorithm for algorithm in json.loads(target.read_text(encoding="utf-8"))}


def cli_help(command: str) -> str:
    """``python -m coreg_plugin [command] --help`` at 100 columns."""
    args = [sys.executable, "-m", "coreg_plugin", *([] if command == "main" else [command]), "--help"]
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise DocsError(f"{' '.join(args[1:])} failed (exit {done.returncode}):\n{done.stderr}")
    return f"```text\n{done.stdout.rstrip()}\n```\n"


def _markdown_docstring(text: str) -> str:
    """A reST-flavoured docstring as Markdown: ``code`` and :role:`name` become `code`."""
    text = re.sub(r":(?:func|class|mod|meth|attr|data|exc):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return html.escape(text, quote=False).replace("&gt;", ">") if "<" in text else text


def _annotation(annotation: Any) -> str:
    """An annotation as written in the source (postponed annotations are strings already)."""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _signature(name: str, value: Any) -> str:
    """``name(...)`` one parameter a line, with the ``*`` before keyword-only ones, as in the source."""
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return name
    lines, star_done = [], False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            star_done = True
        if parameter.kind is parameter.KEYWORD_ONLY and not star_done:
            lines.append("    *,")
            star_done = True
        text = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "") + parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            default = parameter.default
            shown = "<factory>" if repr(default).startswith("<") else repr(default)
            text += f" = {shown}" if parameter.annotation is not parameter.empty else f"={shown}"
        lines.append(f"    {text},")
    returns = signature.return_annotation
    result = f" -> {_annotation(returns)}" if returns is not inspect.Signature.empty else ""
    if not lines:
        return f"{name}(){result}"
    return f"{name}(\n" + "\n".join(lines) + f"\n){result}"


def api_markdown() -> str:
    """Every public name of ``coreg_plugin`` (its ``__all__``), grouped: functions, results, errors, names."""
    import coreg_plugin

    sections: dict[str, list[str]] = {"Functions": [], "Results and corrections": [], "Errors": [],
                                      "Names shared with the CLI and the QGIS provider": []}
    for name in coreg_plugin.__all__:
        value = getattr(coreg_plugin, name)
        doc = _markdown_docstring(inspect.getdoc(value) or "")
        if isinstance(value, (tuple, list)):
            items = ", ".join(f"`{item}`" for item in value)
            sections["Names shared with the CLI and the QGIS provider"].append(f"### `{name}`\n\n{items}\n")
        elif inspect.isclass(value) and issubclass(value, BaseException):
            bases = ", ".join(f"`{base.__name__}`" for base in value.__bases__)
            sections["Errors"].append(f"### `{name}`\n\nA subclass of {bases}.\n\n{doc}\n")
        elif inspect.isclass(value):
            members = []
            for member, attribute in sorted(vars(value).items()):
                if member.startswith("_") or not (inspect.isfunction(attribute) or isinstance(attribute, property)):
                    continue
                function = attribute.fget if isinstance(attribute, property) else attribute
                kind = "property" if isinstance(attribute, property) else "method"
                first = (inspect.getdoc(function) or "").split("\n\n")[0]
                members.append(f"- `{member}` ({kind}): {_markdown_docstring(' '.join(first.split()))}")
            body = f"```python\n{_signature(name, value).removesuffix(' -> None')}\n```\n\n{doc}\n"
            if members:
                body += "\n" + "\n".join(members) + "\n"
            sections["Results and corrections"].append(f"### `{name}`\n\n{body}")
        else:
            sections["Functions"].append(f"### `{name}`\n\n```python\n{_signature(name, value)}\n```\n\n{doc}\n")
    out = []
    for title, entries in sections.items():
        if entries:
            out.append(f"## {title}\n\n" + "\n".join(entries))
    return "\n".join(out)


# ---------------------------------------------------------------- assembling

def copy_sources(src: Path, screenshots: Path | None) -> list[str]:
    """Copy docs/ to ``src``; pictures in ``screenshots`` replace the committed ones. Return the names replaced."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(DOCS, src)
    replaced = []
    if screenshots is not None and screenshots.is_dir():
        images = src / "images"
        for picture in sorted(screenshots.glob("*.png")) + sorted(screenshots.glob("tutorial-results.json")):
            if (images / picture.name).exists():
                shutil.copy2(picture, images / picture.name)
                replaced.append(picture.name)
    return replaced


def fill(text: str, page: str, algorithms: dict[str, dict[str, Any]], run: dict[str, Any],
         cache: dict[str, str]) -> str:
    """Replace the markers of one page."""
    from tools.docs_params import help_markdown, outputs_markdown, parameters_markdown

    renderers = {"help": help_markdown, "parameters": parameters_markdown, "outputs": outputs_markdown}

    def block(match: re.Match) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind in renderers:
            if argument not in algorithms:
                raise DocsError(f"{page}: no algorithm named {argument!r} (known: {', '.join(algorithms)})")
            return renderers[kind](algorithms[argument]).rstrip("\n")
        if kind == "cli":
            if argument not in CLI_COMMANDS:
                raise DocsError(f"{page}: no CLI command {argument!r}")
            return cache.setdefault(f"cli {argument}", cli_help(argument)).rstrip("\n")
        if kind == "api":
            return cache.setdefault("api", api_markdown()).rstrip("\n")
        raise DocsError(f"{page}: unknown marker {match.group(0)}")

    def value(match: re.Match) -> str:
        step, key, spec = match.groups()
        try:
            found = run[step][key]
        except KeyError:
            raise DocsError(f"{page}: {match.group(0)}: the tutorial run has no {step}.{key} "
                            "(docs/images/tutorial-results.json; make screenshot takes it again)") from None
        return format(found, spec) if spec else str(found)

    text = BLOCK_MARKER.sub(block, text)
    text = RUN_VALUE.sub(value, text)
    leftover = re.search(r"<!-- coreg:[^>]*-->|\[\[[a-z_]\w*\.[A-Za-z_]", text)
    if leftover:
        raise DocsError(f"{page}: marker not understood: {leftover.group(0)!r}")
    return text


def generate(src: Path, workdir: Path) -> int:
    """Fill every page's markers in ``src``; return the number of pages changed."""
    pages = sorted(src.rglob("*.md"))
    needs_qgis = any(re.search(r"<!-- coreg:(help|parameters|outputs) ", p.read_text(encoding="utf-8")) for p in pages)
    algorithms = algorithm_definitions(workdir) if needs_qgis else {}
    results = src / "images" / "tutorial-results.json"
    run = json.loads(results.read_text(encoding="utf-8")) if results.exists() else {}
    cache: dict[str, str] = {}
    changed = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        filled = fill(text, str(page.relative_to(src)), algorithms, run, cache)
        if filled != text:
            page.write_text(filled, encoding="utf-8")
            changed += 1
    return changed


def build_site(src: Path, site: Path) -> None:
    """``mkdocs build --strict`` with ``mkdocs.yml``, from ``src`` into ``site``."""
    try:
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
        from mkdocs.exceptions import Abort, ConfigurationError
    except ImportError as error:
        raise DocsError(f"MkDocs is missing ({error}): make deps installs Debian's mkdocs package") from None
    import logging

    handler = logging.StreamHandler()  # MkDocs's warnings, printed (strict mode counts them: any one fails)
    handler.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("mkdocs").addHandler(handler)
    try:
        config = load_config(config_file=str(REPO_ROOT / "mkdocs.yml"), docs_dir=str(src), site_dir=str(site),
                             strict=True)
        build(config)
    except (Abort, ConfigurationError) as error:
        raise DocsError(f"mkdocs build --strict failed: {error}") from None
    finally:
        logging.getLogger("mkdocs").removeHandler(handler)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=REPO_ROOT / "build" / "docs-src")
    parser.add_argument("--site", type=Path, default=REPO_ROOT / "build" / "docs")
    parser.add_argument("--screenshots", type=Path, default=REPO_ROOT / "build" / "screenshots")
    args = parser.parse_args(argv[1:])
    src, site = args.src.resolve(), args.site.resolve()
    replaced = copy_sources(src, args.screenshots.resolve())
    workdir = src.parent / f"{src.name}-work"
    workdir.mkdir(parents=True, exist_ok=True)
    changed = generate(src, workdir)
    if site.exists():
        shutil.rmtree(site)
    build_site(src, site)
    pages = len(list(site.rglob("*.html")))
    print(f"docs: {changed} pages generated into {src}; "
          f"{len(replaced)} pictures from {args.screenshots} ({', '.join(replaced) or 'none: committed copies'}); "
          f"{pages} HTML pages in {site}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main(sys.argv))
