# Two entry points, each doing all set-up on a fresh Debian machine (ffmpeg, venv, pinned packages) before it runs:
#   make demo         - the main job on the shipped keyword clips: fine-tune a small pruned AST, evaluate keep rates
#   make test         - the quick test tier (a few minutes)
# and for contributors:
#   make test-full    - the quick tier, then the rest: transformers' common tests, long trainings, compile/export
#                       matrices, the web export in Node, the explorer in Chromium (what .ci/run calls)
#   make test-latest  - the quick tier against the newest versions pyproject.toml's ranges allow (in .venv-latest)
#   make lock         - after test-latest and test-full pass with them: pin those newest versions in constraints.txt
#   make docs         - the docs site into site/ (mkdocs, --strict)
VENV ?= .venv
LATEST_VENV ?= .venv-latest
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The tested versions of every package: the package itself keeps ranges, `make` installs exactly these.
CONSTRAINTS := constraints.txt
TEST_EXTRAS := dev,export,docs,explorer
RUN := HF_HUB_OFFLINE=1 $(VENV)/bin/python
# A fresh HF_HOME per run: the tests never read or write the user's cache.
PYTEST = HF_HOME=$$(mktemp -d) HF_HUB_OFFLINE=1 $(1)/bin/python -m pytest -q

.PHONY: demo inference-demo test test-full test-latest lock docs setup ffmpeg

ffmpeg:
	@command -v ffmpeg >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends ffmpeg)

# torch==2.13.0 (CPU) first: pip finds it on local disk, and the package's torch<2.14 pin then installs nothing more.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | ffmpeg
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

# What the tests need on top: pytest, ONNX, the docs generator, the explorer (gradio, playwright).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e ".[$(TEST_EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# Run again, it trains again and replaces outputs/demo whole (written aside, moved in when complete).
demo: $(VENV)/.installed
	$(RUN) recipes/finetune.py --recipe demo --overwrite_output_dir

# Inference only (random weights): kept patches per layer, latency and a picture of the pruning stages.
inference-demo: $(VENV)/.installed
	$(RUN) recipes/inference_demo.py

test: $(VENV)/.installed-dev
	$(call PYTEST,$(VENV)) -m "not full"

# transformers' common model tests come from the sdist of the installed transformers (third_party/transformers_tests);
# Debian's Chromium drives the explorer's browser test (playwright never downloads a browser); transformers.js runs
# the web export in Node (onnxruntime-node's own install step would fetch CUDA binaries: skipped).
test-full: test
	$(RUN) scripts/fetch_transformers_tests.py
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium)
	command -v npm >/dev/null && ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tests/js --no-audit --no-fund --silent || true
	$(call PYTEST,$(VENV)) -m full

# Always upgrades: the point is to see an upstream release that breaks us before users do.
test-latest: | ffmpeg
	test -d $(LATEST_VENV) || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q torch==2.13.0
	$(LATEST_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[$(TEST_EXTRAS)]"
	@$(LATEST_VENV)/bin/python scripts/compare_versions.py $(CONSTRAINTS)
	$(call PYTEST,$(LATEST_VENV)) -m "not full"

lock:
	test -x $(LATEST_VENV)/bin/python || (echo "run make test-latest first" && exit 1)
	$(LATEST_VENV)/bin/python scripts/compare_versions.py $(CONSTRAINTS) --write

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
