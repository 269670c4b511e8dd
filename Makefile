# The two commands of the Quickstart: `make dev` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed
# The GraphiQL IDE's assets, served by the API itself (graphql_api/ide.py: pinned npm tarballs,
# sha512-checked, no Node needed).
IDE_STAMP := graphql_api/ide_assets/installed.json
# The Python suite runs in worker processes (pytest-xdist). Its tests mostly wait (on PostgreSQL,
# subprocesses, sockets), so more workers than cores pay off, and beside other load more runnable
# processes get more of the CPU: 6 was faster than 4 both quiet and loaded (README, Testing).
# Tests sharing an expensive fixture stay in one worker (tests/conftest.py).
# `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 6
PYTEST_ARGS ?= $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)

.PHONY: dev test test-python test-contracts install lint format demo-chain clean

$(PY_STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,embedded]'
	@touch $@

$(NODE_STAMP): contracts/package.json contracts/package-lock.json
	@command -v npm >/dev/null || { echo "Node 20 and npm are required for contracts/" >&2; exit 1; }
	cd contracts && npm ci --no-audit --no-fund
	@touch $@

$(IDE_STAMP): graphql_api/ide.py | $(PY_STAMP)
	$(BIN)/python -m graphql_api.ide
	@touch $@

install: $(PY_STAMP) $(NODE_STAMP) $(IDE_STAMP)

## Run the whole system on embedded defaults and print its URLs.
dev: install
	$(BIN)/recchain dev

## Run the entire test suite: the Clarity contracts on simnet beside the Python suite (the
## contracts' output is printed once both are done); fails if either fails.
test: install
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	$(MAKE) --no-print-directory test-contracts >"$$log" 2>&1 & contracts=$$!; \
	$(MAKE) --no-print-directory test-python; python=$$?; \
	wait $$contracts; status=$$?; \
	echo "--- contracts (simnet), run beside the Python suite ---"; cat "$$log"; \
	test $$python = 0 && test $$status = 0

test-contracts: $(NODE_STAMP)
	cd contracts && npm test

# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: the suite starts the `recchain`
# command a few hundred times, and each start would compile the project again.
test-python: $(PY_STAMP) $(IDE_STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest $(PYTEST_ARGS)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stacks infra db indexer graphql_api writers recchain
	$(BIN)/python -m ops.layers --check >/dev/null || $(BIN)/python -m ops.layers --check

format: $(PY_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Regenerate the bundled demo chain (tests/fixtures/demo) from the contracts.
demo-chain: $(NODE_STAMP)
	cd contracts && npm run record:demo

## Stop the embedded PostgreSQL (it keeps running between runs) and remove what the install made.
clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m recchain.cli dev --stop-db; fi
	rm -rf $(VENV) contracts/node_modules graphql_api/ide_assets .pytest_cache .mypy_cache .ruff_cache
