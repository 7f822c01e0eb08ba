# Two commands a new user needs: `make run` (the dashboard) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint venv system-deps clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use (Chromium, PostgreSQL, Fashion-MNIST): installed when root, else named.
system-deps:
	@scripts/system_deps.sh

# Loopback only: on a laptop there is no login, so the dashboard must not be reachable from the network.
run: $(STAMP)
	$(PY) -m streamlit run app/main.py --server.address 127.0.0.1

# ruff (configured in pyproject.toml); the layering rules are a test (tests/test_layering.py)
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
