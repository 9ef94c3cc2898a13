# Two commands do all set-up on a fresh machine:
#   make run    creates .venv, installs CloudAI and starts a local cluster
#   make test   creates .venv, installs CloudAI with test tools and runs every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench proto clean dashboard

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The web dashboard (web/ -> src/cloudai/web/, served by the master at /): `pip install`
# builds it (setup.py); this rebuilds it when its sources change. `npm ci` installs the
# build tools the lock file pins. Without npm the master serves a line saying so.
WEB_BUILT   := src/cloudai/web/index.html
WEB_SOURCES := web/package.json web/package-lock.json web/index.html web/vite.config.ts \
               web/tsconfig.json $(wildcard web/src/*)

$(WEB_BUILT): $(WEB_SOURCES) | $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
		cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent; \
	else echo "npm not found: the web dashboard is not built (the master says so at /)"; fi

dashboard: $(WEB_BUILT)

run: $(STAMP) dashboard
	$(BIN)/cloudai up --workers $${WORKERS:-3}

# Gates, cheapest first; the first that fails stops the run. COVERAGE_FLOOR: the total
# coverage (src/cloudai, with the processes the integration tests start) below which the
# run fails.
COVERAGE_FLOOR ?= 84
# pytest-xdist processes: test files run two at a time (one file's tests in order, in one
# process). Integration tests mostly wait on the processes they start, so two files share
# the machine's two cores well; every test takes ephemeral ports, its own temporary
# directory, database, bus prefix and network namespace. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

test: $(STAMP) dashboard
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile \
		--cov=cloudai --cov-report=term-missing:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/cloudai bench $(BENCH_ARGS)

proto: $(STAMP)
	scripts/gen_proto.sh

clean:
	rm -rf $(VENV) build *.egg-info web/node_modules src/cloudai/web .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .coverage .coverage.*
