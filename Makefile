# The single entry point: every target a person or CI needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
# checkov pins dozens of packages of its own: it lives in a separate environment.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
# The MLflow that bench-vs-mlflow compares with, pinned, in an environment of its own.
MLFLOW_VENV := .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed-stamp
GEN_ROOT := clients/python
# Processes the tests run in (pytest-xdist), each with a PostgreSQL and an S3 server of
# its own; 0 runs them in pytest's own process (for a debugger). A test file runs whole in
# one worker, in order, its module fixtures built once.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: help venv gen check-gen lint run test test-fast clean lock

help:
	@echo "make run        serve tracking, registry and artifacts on 127.0.0.1:50051 (embedded PostgreSQL)"
	@echo "make venv       install the server and the development tools (grpcurl, buf ...) into $(VENV)"
	@echo "make test       install everything into $(VENV) and run every check and test"
	@echo "make gen        regenerate the Python code of protos/ into $(GEN_ROOT)"
	@echo "make lint       ruff, mypy and buf lint"
	@echo "make image      build the container image (needs a Docker engine)"
	@echo "make bench-tracking | bench-registry | bench-artifacts | bench-trees | bench-auth | bench-filters | bench-search-scale   benchmarks"
	@echo "make bench-vs-mlflow   MLflow 3.17.2 and Cairn side by side (BENCH_ARGS='--runs 500' for less)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# `make run` needs only what serving needs: the server and the embedded PostgreSQL,
# not the development tools (they come with `make test`).
$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[server,embedded]'
	touch $@

$(CHECKOV_STAMP): deploy/checkov-constraints.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q -c deploy/checkov-constraints.txt checkov
	touch $@

$(MLFLOW_STAMP): bench/vs_mlflow/requirements.txt
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install -q -r bench/vs_mlflow/requirements.txt
	touch $@

gen: $(STAMP)
	$(BIN)/python tools/gen_protos.py --out $(GEN_ROOT)

# Fails when the committed generated code differs from what the protos produce.
check-gen: $(STAMP)
	$(BIN)/python tools/gen_protos.py --check $(GEN_ROOT)

lint: $(STAMP)
	$(BIN)/ruff check clients services tests tools bench
	$(BIN)/ruff format --check clients services tests tools bench
	$(BIN)/mypy clients/python/cairn tools/typecheck/cairn_server tools/typecheck/user_code.py \
		tools/gen_protos.py bench tests
	cd protos && ../$(BIN)/buf lint

# Console logs for people unless CAIRN_LOG_FORMAT says otherwise.
run: $(RUN_STAMP)
	CAIRN_LOG_FORMAT=$${CAIRN_LOG_FORMAT:-console} $(BIN)/cairn serve all

test: $(STAMP) $(CHECKOV_STAMP) check-gen lint
	$(PYTEST) $(PYTEST_ARGS)

# Tests only, without the generation and lint checks.
test-fast: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

lock: $(STAMP)
	{ echo "# Exact versions CI and 'make test' install; regenerate with 'make lock'."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(pip|setuptools|wheel)=='; } > constraints.txt

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(MLFLOW_VENV) .pytest_cache .mypy_cache .ruff_cache

# Builds the container image where a Docker engine runs (not on the CI machines).
.PHONY: image
image:
	docker build -t cairn:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

.PHONY: bench-tracking
bench-tracking: $(STAMP)
	$(BIN)/python -m bench.tracking

.PHONY: bench-registry
bench-registry: $(STAMP)
	$(BIN)/python -m bench.registry

.PHONY: bench-auth
bench-auth: $(STAMP)
	$(BIN)/python -m bench.auth

.PHONY: bench-artifacts
bench-artifacts: $(STAMP)
	$(BIN)/python -m bench.artifacts

.PHONY: bench-trees
bench-trees: $(STAMP)
	$(BIN)/python -m bench.trees

.PHONY: bench-filters
bench-filters: $(STAMP)
	$(BIN)/python -m bench.filters

.PHONY: bench-search-scale
bench-search-scale: $(STAMP)
	$(BIN)/python -m bench.search_scale

# MLflow first, then Cairn, each on a fresh PostgreSQL cluster; about 10 minutes.
.PHONY: bench-vs-mlflow
bench-vs-mlflow: $(STAMP) $(MLFLOW_STAMP)
	$(BIN)/python -m bench.vs_mlflow $(BENCH_ARGS)
