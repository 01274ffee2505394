# Every target creates and reuses .venv, so one command does all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-full chaos screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segflow demo

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests benchmarks examples
	$(BIN)/ruff format --check service tests benchmarks examples
	$(BIN)/mypy

# The long chaos soak and a minute of webhooks at full rate on both databases (by hand; CI runs
# the short profile inside `make test`). Needs PostgreSQL (SEGFLOW_TEST_POSTGRES_DSN or the default).
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --profile long
	$(BIN)/python -m tests.chaos.load --seconds 60 --database sqlite
	$(BIN)/python -m tests.chaos.load --seconds 60 --database postgres

# The README's picture of the console, taken by the browser test that checks the overlay.
screenshot: $(STAMP)
	SEGFLOW_CONSOLE_SCREENSHOT=docs/console.png $(BIN)/pytest -q -p no:cacheprovider tests/browser -k overlay

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --full

clean:
	rm -rf $(VENV) .segflow
