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

# Debian packages the tests run for real: PostgreSQL, Slurm (with munge), an SSH server
# for the login-node path, iproute2 for the isolated network namespace (needs root or sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
deps-system:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v slurmctld >/dev/null || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing="$$missing munge"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The suite runs in a network namespace with only loopback (deploy/dev/isolated.sh),
# so the clusters it starts can reach nothing else.
test: deps-system install-test
	$(BIN)/ruff check src tests
	deploy/dev/isolated.sh $(BIN)/python -m pytest -q

lint: install-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

bench: install
	$(BIN)/python bench/core.py
