# Two entry points, each doing all set-up on a fresh Debian machine (ffmpeg, venv, pip) before it runs:
#   make demo   - the main job on the shipped keyword clips: fine-tune a small pruned AST, evaluate keep rates 1.0 -> 0.4
#   make test   - the test suite (what .ci/run calls)
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN := HF_HUB_OFFLINE=1 $(VENV)/bin/python

.PHONY: demo inference-demo test setup
# transformers' common model tests come from the sdist of the installed transformers (third_party/transformers_tests).
setup: $(VENV)/.installed
	$(VENV)/bin/python scripts/fetch_transformers_tests.py

# torch==2.13.0 (CPU) first: pip finds it on local disk, and the package's torch<2.14 pin then installs nothing more.
$(VENV)/.installed: pyproject.toml
	command -v ffmpeg >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends ffmpeg)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(RUN) recipes/finetune.py --recipe demo

# Inference only (random weights): kept patches per layer, latency and a picture of the pruning stages.
inference-demo: setup
	$(RUN) recipes/inference_demo.py

test: setup
	HF_HOME=$$(mktemp -d) $(RUN) -m pytest -q
