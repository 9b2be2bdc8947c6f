# Everything runs from a local virtual environment, created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

# A pip constraints file for the venv's installs (test-min: constraints/minimum.txt).
CONSTRAINTS ?=
# Python 3.12 for test-py312: python3.12 on PATH, else pyenv's newest 3.12.
PYTHON312 ?= $(shell for py in python3.12 "$$(pyenv prefix 3.12 2>/dev/null)/bin/python3.12"; do \
	"$$py" -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys.executable)' \
	2>/dev/null && break; done)

.PHONY: demo test test-min test-py312 test-all lint docs bench bench-trained clean data

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installed extras are recorded in a stamp per extra, so `make` reinstalls when setup.cfg (or the
# constraints file) changes.
$(VENV)/.installed-%: setup.cfg pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e '.[$*]'
	touch $@

# The embedded dataset: real Fashion-MNIST from Debian's dataset-fashion-mnist package.
data: $(FASHION_MNIST)

$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is missing: install the Debian package dataset-fashion-mnist" \
		     "(as root: apt-get update && apt-get install -y dataset-fashion-mnist)"; exit 1; \
	fi

# The main job: the cpu preset on Fashion-MNIST (both phases, evaluation, figures) into
# runs/fashion_mnist; running it again resumes, or re-evaluates a finished run.
demo: $(VENV)/.installed-fid data
	$(PY) examples/fashion_mnist.py --preset cpu --run-dir runs/fashion_mnist --resume

test: $(VENV)/.installed-test $(VENV)/.installed-fid data
	$(PY) -m pytest

# The same set-up and suite with the lowest versions that setup.cfg declares, in .venv-min.
test-min:
	$(MAKE) test VENV=.venv-min CONSTRAINTS=constraints/minimum.txt

# The same set-up and suite under Python 3.12 (the newest versions pip finds), in .venv-py312.
test-py312:
	@py='$(PYTHON312)'; if [ -z "$$py" ]; then \
		echo "test-py312: no Python 3.12 found: put python3.12 on PATH, install one with" \
		     "pyenv (pyenv install 3.12), or name one with PYTHON312=/path/to/python3.12" >&2; \
		exit 1; \
	fi; \
	echo "$(MAKE) test VENV=.venv-py312 PYTHON=$$py"; \
	$(MAKE) test VENV=.venv-py312 PYTHON="$$py"

test-all: $(VENV)/.installed-test $(VENV)/.installed-fid data
	$(PY) -m pytest -m ""

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: $(VENV)/.installed-docs
	rm -rf docs/api/generated
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# The timing benchmarks (minutes). The tables of trained models take hours: bench-trained.
bench: $(VENV)/.installed-bench $(VENV)/.installed-fid
	$(PY) benchmarks/bench_conv1x1.py
	$(PY) benchmarks/bench_glow_step.py
	$(PY) benchmarks/bench_normflows.py
	$(PY) benchmarks/bench_pyro_overhead.py
	$(PY) benchmarks/bench_peak.py
	$(PY) benchmarks/bench_importance.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_fid.py
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_allocator.py
	$(PY) benchmarks/bench_data_parallel.py
	$(PY) benchmarks/scaling_model.py

# The tables of trained models (docs/benchmarks.md, Tables 1-3 and the PixelCNN table); they
# resume where they stopped, so a stopped `make bench-trained` continues when run again.
bench-trained: $(VENV)/.installed-bench $(VENV)/.installed-fid data
	$(PY) benchmarks/bench_vs_glow.py --jobs 2 --paper-size
	$(PY) benchmarks/bench_ablations.py --jobs 2
	$(PY) benchmarks/bench_prior.py --jobs 2
	$(PY) benchmarks/bench_autoregressive.py --jobs 2

clean:
	rm -rf $(VENV) .venv-min .venv-py312 docs/_build .pytest_cache build *.egg-info
