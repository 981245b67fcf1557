# dfd: the two commands are `make demo VIDEO=...` and `make test`.
# Everything else here is what those two need; every step is reused on a second run.
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dfd-installed
# The repository `make models` builds: the one `dfd demo` and `dfd serve` will serve.
TARGET ?= $(or $(DFD_TRITON_TARGET),cpu)
VIDEO ?=
PYTEST_ARGS ?=

.PHONY: setup sysdeps venv models demo test lint typecheck clean

setup: sysdeps venv models

sysdeps:
	@bash scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Weights (checksum-checked), ONNX export and the Triton repository, skipped when current.
models: venv
	$(BIN)/dfd models build --target $(TARGET)

# KEEP=1: the stack stays up after the result, and the demo prints the result page's address.
demo: setup
	@test -n "$(VIDEO)" || { echo "usage: make demo VIDEO=<path or URL> [KEEP=1]"; exit 2; }
	$(BIN)/dfd demo $(if $(KEEP),--keep) "$(VIDEO)"

# The suite, then lint, the import contracts of the floors and types: CI runs exactly this.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf .dfd
