# Two commands do all set-up on a fresh machine:
#   make run    creates .venv, installs CloudAI and starts a local cluster
#   make test   creates .venv, installs CloudAI with test tools and runs every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cloudai up --workers $${WORKERS:-3}

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/cloudai bench $(BENCH_ARGS)

proto: $(STAMP)
	scripts/gen_proto.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
