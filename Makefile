# Two commands for a fresh clone: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shardshape-installed

.PHONY: run test test-fast lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The example pools let the worker plan from the start; set SHARDSHAPE_POOLS_CONFIG to your own.
run: $(STAMP)
	SHARDSHAPE_POOLS_CONFIG=$${SHARDSHAPE_POOLS_CONFIG:-examples/pools.toml} $(BIN)/shardshape run

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .shardshape build *.egg-info .pytest_cache
