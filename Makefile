# Two commands set Grappe up on a fresh machine:
#   make up    – install into .venv and run the factory on http://127.0.0.1:8080
#   make test  – install what the tests need (PostgreSQL included) and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: up test install install-test deps-system lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres]'

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

up: install
	$(BIN)/grappe up --port $(PORT)

# Debian's PostgreSQL server, for the store tests that run against it (needs root or sudo).
deps-system:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian's postgresql for the store tests"; \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

test: deps-system install-test
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

lint: install-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

bench: install
	$(BIN)/python bench/core.py
