# opencdp — `make run` starts the demo, `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
HOST ?= 127.0.0.1
PORT ?= 8000
CUSTOMERS ?= 5000

.PHONY: install run test lint format bench clean

$(BIN)/opencdp: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

install: $(BIN)/opencdp

run: install
	$(BIN)/opencdp init
	$(BIN)/opencdp demo load --if-empty --customers $(CUSTOMERS)
	$(BIN)/opencdp serve --dev-keys --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest -n 2

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done
	$(BIN)/pytest -m slow -q

clean:
	rm -rf data bench-data .pytest_cache .mypy_cache .ruff_cache
