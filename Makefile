# Coreg: build and test plumbing.
#
#   make test       the docs, ruff, then every lane (default)
#   make lint       ruff check ., lint-imports (the core's layers; both in pyproject.toml) and the zip's flake8: zero findings
#   make test-core  the pure-Python core on the default python3 with the newest wheels
#   make test-core-py39  the core's tests on Python 3.9 (QGIS 3.22-3.28 on Windows)
#   make test-qgis  everything under tests/ on Debian's Python with QGIS 3.22 (headless)
#   make test-qgis-3.40, test-qgis-3.44  tests/qgis in Debian 13 / testing roots (tools/debian_root.sh)
#   make demo       synthetic pair -> qgis_process coreg:alignimagepair, summary vs truth
#   make bench      benchmark: wall time and peak memory against same-run baselines (build/bench)
#   make deps       Debian packages (only if missing) and the virtualenvs
#   make zip        build/coreg.zip as plugins.qgis.org expects, checked as it checks (Bandit, detect-secrets, flake8)
#   make deploy     link this checkout into the default QGIS profile's plugins folder as coreg
#   make docs       the documentation site (MkDocs, strict) in build/docs, with generated parameter tables
#   make screenshot the real QGIS desktop under Xvfb: dialog, report and tutorial screenshots in build/screenshots
#   make clean

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# mkdocs: Debian 12's 1.4.2 builds the documentation (make docs) with Debian's Python, beside QGIS.
# python3-tqdm: the command line's progress bar (optional: without it there is none), drawn in the QGIS lane's tests.
DEBIAN_PACKAGES := qgis python3-qgis python3-rasterio python3-skimage python3-venv python3-matplotlib \
	xvfb xauth mkdocs python3-tqdm
CORE_PYTHON     := python3
DEBIAN_PYTHON   := /usr/bin/python3
CORE_VENV       := .venv-core
QGIS_VENV       := .venv-qgis
# Python 3.9 (what QGIS 3.22 to 3.28 run on Windows): pyenv's, with the newest wheels that support it.
PY39_PYTHON     ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9) python3.9)
PY39_VENV       := .venv-py39
PY39_WHEELS     := numpy rasterio scikit-image scipy matplotlib pytest hypothesis dask distributed tqdm
# Every public entry point (CLI align and stack, the stack modes, the report, bad input, executors and
# align_many) but not the accuracy suites: 3.9 differs in the language, not in the numerics, which
# the other lanes cover on numpy 1.24 and 2.x.
PY39_TESTS      ?= tests/core/test_cli.py tests/core/test_stack.py tests/core/test_report.py \
	tests/core/test_bad_input.py tests/core/test_executors.py
# What plugins.qgis.org runs on an upload (make zip runs it too).
ZIP_CHECK_WHEELS := bandit detect-secrets flake8
# ruff pinned: a new release's new rules must not change what make test finds.
CORE_WHEELS     := numpy rasterio scikit-image scipy matplotlib pytest hypothesis dask distributed tqdm ruff==0.17.6 import-linter==2.17 \
	$(ZIP_CHECK_WHEELS)
QGIS_TEST_WHEELS := pytest pytest-qgis hypothesis $(ZIP_CHECK_WHEELS)
BUILD           := $(CURDIR)/build
PYTEST_ARGS     ?=
CORE_TESTS      ?= tests/core
QGIS_TESTS      ?= tests
# The Debian-root lanes run the QGIS tests; tests/core already runs on old (3.22 lane) and new wheels.
ROOT_TESTS      ?= tests/qgis

# Headless QGIS: see shared/docs/qgis-headless.md.
HEADLESS_ENV := QT_QPA_PLATFORM=offscreen \
	OPENBLAS_NUM_THREADS=1 \
	XDG_RUNTIME_DIR=$(BUILD)/xdg-runtime \
	XDG_CACHE_HOME=$(BUILD)/xdg/cache \
	XDG_DATA_HOME=$(BUILD)/xdg/data \
	XDG_CONFIG_HOME=$(BUILD)/xdg/config \
	QGIS_CUSTOM_CONFIG_PATH=$(BUILD)/qgis-profile

.PHONY: test lint test-core test-core-py39 test-qgis test-qgis-3.40 test-qgis-3.44 qgis-lane deps debian-packages demo bench clean help zip deploy screenshot docs

test: docs lint test-core test-core-py39 test-qgis test-qgis-3.40 test-qgis-3.44

# flake8 as plugins.qgis.org runs it on the zip's Python (tools/package.py): it checks blank lines (E3) ruff does not.
lint: $(CORE_VENV)/.stamp
	$(CORE_VENV)/bin/ruff check .
	$(CORE_VENV)/bin/lint-imports
	$(CORE_VENV)/bin/flake8 --max-line-length=120 __init__.py coreg_plugin processing_provider

help:
	@sed -n '2,16p' Makefile | sed 's/^# \{0,1\}//'

deps: debian-packages $(CORE_VENV)/.stamp $(QGIS_VENV)/.stamp $(PY39_VENV)/.stamp

debian-packages:
	@if ! dpkg-query -W -f='$${Status}\n' $(DEBIAN_PACKAGES) 2>/dev/null | grep -v '^install ok installed$$' | grep -q . \
	   && [ "$$(dpkg-query -W -f='$${Status}\n' $(DEBIAN_PACKAGES) 2>/dev/null | wc -l)" -eq $(words $(DEBIAN_PACKAGES)) ]; then \
	  echo "Debian packages present: $(DEBIAN_PACKAGES)"; \
	else \
	  echo "Installing Debian packages: $(DEBIAN_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update; \
	  apt-get install -y --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

$(CORE_VENV)/.stamp: Makefile | debian-packages
	rm -rf $(CORE_VENV)
	$(CORE_PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CORE_VENV)/bin/python -m pip install --quiet --upgrade $(CORE_WHEELS)
	$(CORE_VENV)/bin/python -c "import numpy, rasterio, skimage, scipy; print('core lane: python', __import__('sys').version.split()[0], 'numpy', numpy.__version__, 'rasterio', rasterio.__version__, 'skimage', skimage.__version__)"
	touch $@

# Debian's interpreter with Debian's numpy/rasterio/skimage/qgis; pip adds only test tools.
$(QGIS_VENV)/.stamp: Makefile | debian-packages
	rm -rf $(QGIS_VENV)
	$(DEBIAN_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip install --quiet $(QGIS_TEST_WHEELS)
	$(QGIS_VENV)/bin/python tools/check_qgis_lane.py
	touch $@

test-core: $(CORE_VENV)/.stamp
	OPENBLAS_NUM_THREADS=1 $(CORE_VENV)/bin/python -m pytest -W ignore::pytest.PytestConfigWarning $(CORE_TESTS) $(PYTEST_ARGS)

$(PY39_VENV)/.stamp: Makefile
	rm -rf $(PY39_VENV)
	$(PY39_PYTHON) -m venv $(PY39_VENV)
	$(PY39_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PY39_VENV)/bin/python -m pip install --quiet --upgrade $(PY39_WHEELS)
	$(PY39_VENV)/bin/python -c "import numpy, rasterio, skimage, scipy; print('python 3.9 lane: python', __import__('sys').version.split()[0], 'numpy', numpy.__version__, 'rasterio', rasterio.__version__, 'skimage', skimage.__version__)"
	touch $@

test-core-py39: $(PY39_VENV)/.stamp
	OPENBLAS_NUM_THREADS=1 $(PY39_VENV)/bin/python -m pytest -p no:cacheprovider -W ignore::pytest.PytestConfigWarning $(PY39_TESTS) $(PYTEST_ARGS)

test-qgis: $(QGIS_VENV)/.stamp
	@$(MAKE) --no-print-directory qgis-lane QGIS_PYTHON=$(QGIS_VENV)/bin/python

# Newer QGIS releases in Debian roots (tools/debian_root.sh: built once under /var/cache/coreg-roots,
# a few minutes and about 2.5 GB each), the checkout bind-mounted at /work/coreg.
test-qgis-3.40:
	tools/debian_root.sh run trixie make -C /work/coreg --no-print-directory qgis-lane \
	  QGIS_PYTHON=/opt/coreg-venv/bin/python BUILD=/work/coreg/build/qgis-3.40 \
	  QGIS_TESTS="$(ROOT_TESTS)" PYTEST_ARGS="$(PYTEST_ARGS)"

test-qgis-3.44:
	tools/debian_root.sh run forky make -C /work/coreg --no-print-directory qgis-lane \
	  QGIS_PYTHON=/opt/coreg-venv/bin/python BUILD=/work/coreg/build/qgis-3.44 \
	  QGIS_TESTS="$(ROOT_TESTS)" PYTEST_ARGS="$(PYTEST_ARGS)"

# The QGIS lane with QGIS_PYTHON (the host's .venv-qgis, or a Debian root's venv), headless.
qgis-lane:
	@rm -rf $(BUILD)/xdg-runtime $(BUILD)/qgis-profile
	@mkdir -p $(BUILD)/xdg-runtime $(BUILD)/xdg/cache $(BUILD)/xdg/data $(BUILD)/xdg/config $(BUILD)/qgis-profile
	@chmod 700 $(BUILD)/xdg-runtime
	$(HEADLESS_ENV) $(QGIS_PYTHON) -m pytest $(QGIS_TESTS) $(PYTEST_ARGS)

bench: $(CORE_VENV)/.stamp
	$(CORE_VENV)/bin/python bench/run.py

demo: debian-packages
	$(DEBIAN_PYTHON) tools/demo.py

PLUGIN_ZIP     := $(BUILD)/coreg.zip
QGIS_PLUGINS   ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins

# The Python whose bandit, detect-secrets and flake8 check the zip (the QGIS-lane tests pass their own).
ZIP_PYTHON     ?= $(CORE_VENV)/bin/python

# The site's folder does not follow BUILD: the Debian-root lanes (BUILD=build/qgis-3.x, no MkDocs there)
# package the site make test built first on the host.
DOCS_SITE    := $(CURDIR)/build/docs
DOCS_SOURCES := mkdocs.yml tools/docs_build.py tools/docs_params.py $(shell find docs -type f) \
	$(shell find coreg_plugin processing_provider -name '*.py')
DOCS_BUILD    = $(HEADLESS_ENV) $(DEBIAN_PYTHON) tools/docs_build.py --src $(CURDIR)/build/docs-src \
	--site $(DOCS_SITE) --screenshots $(CURDIR)/build/screenshots

zip: $(DOCS_SITE)/index.html $(if $(filter $(CORE_VENV)/bin/python,$(ZIP_PYTHON)),$(CORE_VENV)/.stamp)
	$(ZIP_PYTHON) tools/package.py --check --docs $(DOCS_SITE) $(PLUGIN_ZIP)

# A symlink, so edits show up after a plugin reload; refuses to replace anything that is not one.
deploy:
	@mkdir -p "$(QGIS_PLUGINS)"
	@if [ -e "$(QGIS_PLUGINS)/coreg" ] && [ ! -L "$(QGIS_PLUGINS)/coreg" ]; then \
	  echo "$(QGIS_PLUGINS)/coreg exists and is not a link: remove it first" >&2; exit 1; fi
	ln -sfn "$(CURDIR)" "$(QGIS_PLUGINS)/coreg"
	@echo "Linked $(QGIS_PLUGINS)/coreg -> $(CURDIR); enable Coreg in Plugins > Manage and Install Plugins"

screenshot: debian-packages
	$(DEBIAN_PYTHON) tools/screenshots.py --tutorial $(BUILD)/screenshots

# docs/ plus what is generated from the code (parameter tables from the provider in headless QGIS, --help,
# docstrings) into build/docs-src, then mkdocs build --strict into build/docs (tools/docs_build.py).
# Pictures in build/screenshots (make screenshot) replace the committed copies in docs/images/.
docs: debian-packages
	@mkdir -p $(BUILD)
	$(DOCS_BUILD)

# What make zip ships: built again only when a page, the code it documents or the generator changed.
$(DOCS_SITE)/index.html: $(DOCS_SOURCES)
	@mkdir -p $(BUILD)
	$(DOCS_BUILD)

clean:
	rm -rf build .pytest_cache .qgis-settings $(CORE_VENV) $(QGIS_VENV) $(PY39_VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
