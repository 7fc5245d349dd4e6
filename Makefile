# Two commands set Grappe up on a fresh machine:
#   make up    – install into .venv and run the factory on http://127.0.0.1:8080
#   make test  – install what the tests need (PostgreSQL, Slurm, sshd, Ray) and run the suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: up test install install-test deps-system lint bench clean screenshots bench-load

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The factory with every engine it drives: PostgreSQL, SSH login nodes, Ray clusters,
# the quantum emulators, and the models served in-process.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres,ssh,ray,data,quantum,models,sim]'

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

up: install
	$(BIN)/grappe up --port $(PORT)

# Debian packages the tests run for real: PostgreSQL, Slurm (with munge), an SSH server
# for the login-node path, iproute2 for the isolated network namespace (needs root or sudo).
deps-system:
	deploy/dev/install-system-packages.sh

# The suite runs in a network namespace with only loopback (deploy/dev/isolated.sh),
# so the clusters it starts can reach nothing else.
test: deps-system install-test
	$(BIN)/ruff check src tests
	deploy/dev/isolated.sh $(BIN)/python -m pytest -q

# The console's browser tests alone (Debian's Chromium); screenshots land in bench/results/console/.
screenshots: deps-system install-test
	deploy/dev/isolated.sh $(BIN)/python -m pytest -q tests/test_console_browser.py tests/test_console_browser2.py

lint: install-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

# Trace replay inputs: the shared Philly trace on a site shaped like Philly's cluster
# (2,490 GPUs); FED=examples/federations/eu-ai-factories.yaml replays it on the EU federation.
TRACE ?= ../shared/traces/philly_2017.csv
FED   ?=
LOAD  ?= 0.9
# The synthetic shapes of bench/traces.py, replayed on a tenth of the Philly-like site
# (their 20,000 jobs do not load all of it).
SHAPES      ?= poisson_lognormal bursty_pareto uniform_wide
SHAPE_SCALE ?= 0.1

bench: install
	$(BIN)/python bench/core.py
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/sim.py --trace $(TRACE) --fed "$(FED)" --load $(LOAD)
	$(BIN)/python bench/traces.py
	for shape in $(SHAPES); do \
	  $(BIN)/python bench/sim.py --trace bench/results/traces/$$shape.csv --scale $(SHAPE_SCALE) \
	    --load $(LOAD) --out bench/results/sim-$$shape || exit 1; \
	done

# Load: JOBS submissions from CLIENTS clients to one `grappe up` on SQLite, then to two
# replicas on one PostgreSQL; every id checked (docs/reliability.md has the figures).
JOBS    ?= 10000
CLIENTS ?= 50

bench-load: install-test
	deploy/dev/isolated.sh $(BIN)/python bench/load.py --jobs $(JOBS) --clients $(CLIENTS)
