# Two commands for a fresh clone: `make run` and `make test`. Each creates .venv when missing
# and installs shardshape with every extra (`.[all,dev]`), again whenever pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shardshape-installed

.PHONY: run test test-slow test-all lint bench clean browser-deps prometheus-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	@touch $(STAMP)

# The demo: broker, topics, a worker planning with the example pools (or your own
# SHARDSHAPE_POOLS_CONFIG), the example service and its load; Ctrl-C stops it all.
run: $(STAMP)
	SHARDSHAPE_POOLS_CONFIG=$${SHARDSHAPE_POOLS_CONFIG:-examples/pools.toml} $(BIN)/shardshape demo

# The suite on a real broker, without the scenario tests marked slow (several minutes each
# at most; `make test-slow` runs those, CI runs both).
test: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest

# Debian's chromium for the dashboard's browser test (CI runs it; without it the test skips).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null

# Debian's Prometheus server and promtool for the monitoring tests (CI runs them; without them
# they skip, except under CI=true, where they fail).
prometheus-deps:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .shardshape build *.egg-info .pytest_cache
