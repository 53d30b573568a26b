# The front door. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.onecert-installed

.PHONY: setup test test-pg demo proto proto-check lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[gateway,sql,dev]'
	touch $(STAMP)

setup: $(STAMP)

## Run the whole test suite (PostgreSQL tests run when ONECERT_TEST_PG_URL is set).
test: setup
	$(PY) -m pytest

## Start a development federation on SQLite and run a citizen's lookup.
demo: setup
	$(PY) -m onecert.cli demo

## Regenerate the Python code for proto/onecert/v1.
proto: setup
	PYTHON=$(PY) scripts/gen_proto.sh

## Fail if the committed generated code differs from a fresh generation.
proto-check: proto
	@git diff --exit-code --stat -- proto || (echo "generated code is stale: run make proto and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- proto)" || (git status --short -- proto; echo "make proto created untracked files" >&2; exit 1)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo build *.egg-info
