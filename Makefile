# The front door. Every target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.onecert-installed

.PHONY: setup test test-pg demo proto proto-check lint format clean bench bench-quick stress

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[gateway,sql,dev,portal]'
	touch $(STAMP)

setup: $(STAMP)

## Run the whole test suite (PostgreSQL tests run when ONECERT_TEST_PG_URL is set), its
## files spread over TEST_WORKERS processes (pytest-xdist; one per core by default, 0 for
## one process). Each file runs whole on one worker, so module fixtures start once.
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

## Start a development federation on SQLite and run a citizen's lookup.
demo: setup
	$(PY) -m onecert.cli demo

## Benchmark the gateway against the bare gRPC floor; table on stdout, JSON in bench/results/.
bench: setup
	$(PY) -m bench

## The same, every scenario small (under a minute).
bench-quick: setup
	$(PY) -m bench --quick

## Long reliability scenarios, loopback only (about 25 minutes on 2 cores): the gateway
## SIGKILLed under load on SQLite, on PostgreSQL, and as two replicas on a private
## PostgreSQL that is cut off and restarted, each run until at least 50 kills and 2,000
## acknowledged tickets; overload, a soak, then 20x longer fuzzing. Figures on stdout
## and in stress/results/latest.json (see docs/reliability.md).
STRESS_PG_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
stress: setup
	ONECERT_TEST_PG_URL="$${ONECERT_TEST_PG_URL:-$(STRESS_PG_URL)}" \
	ONECERT_CRASH_SECONDS="$${ONECERT_CRASH_SECONDS:-180}" \
	ONECERT_CRASH_KILLS="$${ONECERT_CRASH_KILLS:-50}" \
	ONECERT_CRASH_TICKETS="$${ONECERT_CRASH_TICKETS:-2000}" \
	ONECERT_CRASH_MAX_SECONDS="$${ONECERT_CRASH_MAX_SECONDS:-420}" \
	ONECERT_SOAK_SECONDS="$${ONECERT_SOAK_SECONDS:-180}" \
		$(PY) -m pytest stress -p no:cacheprovider
	ONECERT_FUZZ_SCALE=20 $(PY) -m pytest tests/hardening -k fuzz -p no:cacheprovider --timeout=900

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
