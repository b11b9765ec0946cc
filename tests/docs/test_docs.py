"""The documentation site: built with MkDocs (strict) from docs/ and the algorithms' own definitions.

Run by the host's QGIS lane (``make test-qgis`` runs everything under tests/), where Debian 12's MkDocs
is installed with QGIS by ``make deps``; not by the Debian-root lanes, which run tests/qgis only.
The site is built here into a temporary folder (``tools/docs_build.py``, as ``make docs`` runs it), so the
test stands alone and fails loudly when MkDocs is missing. Checked: every parameter and output that
``qgis_process help`` lists for each algorithm is on that algorithm's page; each algorithm has a help
text, and a help URL that opens its page in the plugin zip (offline); the tutorial shows at least three
real screenshots; README.md is a front page of at most 300 lines that links into the docs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from qgis.PyQt.QtGui import QImage

from tools.package import build_zip
from tools.qgis_env import enable_plugin, headless_env, qgis_process

REPO_ROOT = Path(__file__).resolve().parents[2]
ALGORITHMS = ("alignimagepair", "applycorrection", "coregisterstack")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from this checkout (no screenshots folder: the committed pictures)."""
    work = tmp_path_factory.mktemp("docs")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "docs_build.py"), "--src", str(work / "src"),
         "--site", str(work / "site"), "--screenshots", str(work / "no-screenshots")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"the docs did not build (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert (work / "site" / "index.html").is_file()
    return work / "site"


@pytest.fixture(scope="module")
def definitions(site: Path) -> dict[str, dict]:
    """The algorithms' definitions the build took from the provider (tools/docs_params.py)."""
    built = json.loads((site.parent / "src-work" / "algorithms.json").read_text(encoding="utf-8"))
    return {algorithm["name"]: algorithm for algorithm in built}


@pytest.fixture(scope="module")
def listed_names(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Per algorithm, every parameter and output name that ``qgis_process help coreg:<name>`` lists."""
    env = headless_env(tmp_path_factory.mktemp("qgis-process"))
    enable_plugin(env)
    names = {}
    for algorithm in ALGORITHMS:
        done = qgis_process(["help", f"coreg:{algorithm}"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        found = re.findall(r"^([A-Z][A-Z0-9_]*): ", done.stdout, flags=re.MULTILINE)
        assert len(found) >= 5, done.stdout
        names[algorithm] = sorted(set(found))
    return names


def test_every_parameter_qgis_process_lists_is_on_its_page(site: Path, listed_names: dict[str, list[str]]) -> None:
    for algorithm, names in listed_names.items():
        page = (site / "algorithms" / f"{algorithm}.html").read_text(encoding="utf-8")
        missing = [name for name in names if f"<code>{name}</code>" not in page]
        assert not missing, f"algorithms/{algorithm}.html does not name {missing}"
    # the Stack's MODEL, and each page's tables are there
    assert "<code>MODEL</code>" in (site / "algorithms" / "coregisterstack.html").read_text(encoding="utf-8")


def test_pages_hold_the_generated_help_cli_and_api(site: Path, definitions: dict[str, dict]) -> None:
    assert sorted(definitions) == sorted(ALGORITHMS)
    for name, algorithm in definitions.items():
        text = algorithm["help"]
        assert len(text) > 200, name
        page = (site / "algorithms" / f"{name}.html").read_text(encoding="utf-8")
        first_sentence = text.split("\n")[0].split(":")[0]
        assert first_sentence in page, name
    cli = (site / "cli.html").read_text(encoding="utf-8")
    for option in ("--moving-image", "--correction", "--reference", "--allow-large-output"):
        assert option in cli
    api = (site / "api.html").read_text(encoding="utf-8")
    import coreg_plugin

    for name in coreg_plugin.__all__:
        assert f"<code>{name}</code>" in api, name
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<!-- coreg:" not in text, page
        assert "[[align." not in text, page


def test_tutorial_shows_real_screenshots(site: Path, qgis_app) -> None:  # noqa: ANN001, ARG001
    tutorial = (site / "tutorial.html").read_text(encoding="utf-8")
    pictures = re.findall(r'<img[^>]+src="(images/tutorial-[^"]+\.png)"', tutorial)
    assert len(set(pictures)) >= 3, pictures
    for picture in set(pictures):
        image = QImage(str(site / picture))
        assert image.width() >= 800, picture
        assert image.height() >= 600, picture
        colours = {image.pixel(x, y) for x in range(0, image.width(), 13) for y in range(0, image.height(), 13)}
        assert len(colours) > 20, f"{picture} looks blank"
    # numbers quoted from the run the pictures come from
    assert "corrected" in tutorial


def test_each_dialog_help_url_opens_its_page_in_the_plugin_zip(site: Path, tmp_path: Path) -> None:
    archive = build_zip(tmp_path / "coreg.zip", docs_site=site)
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
        for algorithm in ALGORITHMS:
            assert f"coreg/docs/site/algorithms/{algorithm}.html" in names
        opened.extractall(tmp_path / "plugins")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from coreg.processing_provider.align_image_pair import AlignImagePairAlgorithm\n"
        "from coreg.processing_provider.apply_correction import ApplyCorrectionAlgorithm\n"
        "from coreg.processing_provider.coregister_stack import CoregisterStackAlgorithm\n"
        "for cls in (AlignImagePairAlgorithm, ApplyCorrectionAlgorithm, CoregisterStackAlgorithm):\n"
        "    algorithm = cls()\n"
        "    print(algorithm.name(), algorithm.helpUrl())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "plugins")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    urls = dict(line.split(" ", 1) for line in done.stdout.split("\n") if line.startswith(ALGORITHMS))
    assert sorted(urls) == sorted(ALGORITHMS), done.stdout
    plugin = (tmp_path / "plugins" / "coreg").resolve()
    for algorithm, url in urls.items():
        assert url.startswith("file://"), url
        path = Path(url[len("file://"):])
        assert path == plugin / "docs" / "site" / "algorithms" / f"{algorithm}.html"
        assert path.is_file()


def test_readme_is_a_front_page_linking_into_the_docs() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert "session" not in readme.lower()
    assert "## Status" not in readme
    for command in ("make demo", "make test", "make docs", ".ci/run"):
        assert command in readme, command
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO_ROOT / target).exists(), target
