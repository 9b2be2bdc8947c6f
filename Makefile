# Everything runs from a local virtual environment, created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-all lint docs bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installed extras are recorded in a stamp per extra, so `make` reinstalls when setup.cfg changes.
$(VENV)/.installed-%: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

test: $(VENV)/.installed-test
	$(PY) -m pytest

test-all: $(VENV)/.installed-test
	$(PY) -m pytest -m ""

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/bench_conv1x1.py
	$(PY) benchmarks/bench_glow_step.py

clean:
	rm -rf $(VENV) docs/_build .pytest_cache build *.egg-info
