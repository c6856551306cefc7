# orbiter-sync developer tasks. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-cluster lint format demo bench redis-server clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall when the package metadata changes.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The tests start private redis-server processes; install the binary when it is missing.
redis-server:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { \
		echo "redis-server or redis-cli not found: installing them with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; \
	}

lint: install
	$(BIN)/ruff check orbiter_sync cli tests examples benchmarks
	$(BIN)/ruff format --check orbiter_sync cli tests examples benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format orbiter_sync cli tests examples benchmarks
	$(BIN)/ruff check --fix orbiter_sync cli tests examples benchmarks

test: install redis-server
	$(BIN)/ruff check orbiter_sync cli tests examples benchmarks
	$(BIN)/ruff format --check orbiter_sync cli tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/pytest
	@echo "== the worker behaviour tests again, on the gevent pool =="
	ORBITER_TEST_POOL=gevent $(BIN)/pytest tests/test_worker.py tests/test_hostile_worker.py tests/test_examples.py \
		tests/test_hot_path.py tests/test_llm.py tests/test_llm_runs.py tests/test_queues.py \
		tests/test_metrics_worker.py

# The Redis Cluster pass that is too slow for `make test` (which runs tests/test_cluster.py on
# threads): masters failed over under running workers, and the cluster tests on gevent.
test-cluster: install redis-server
	$(BIN)/pytest -m cluster
	ORBITER_TEST_POOL=gevent $(BIN)/pytest tests/test_cluster.py

# Two workers on a private redis-server, streaming the example agents' runs.
demo: install redis-server
	$(BIN)/orbiter-sync demo

# orbiter-sync beside Celery, RQ and Dramatiq on a private redis-server (benchmarks/peers);
# the markdown tables go to stdout. Options: make bench BENCH_ARGS="--quick --only orbiter-sync".
bench: $(BIN)/python redis-server
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
