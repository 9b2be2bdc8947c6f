# Everything runs from a local virtual environment, created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: demo test test-all lint docs bench bench-trained clean data

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installed extras are recorded in a stamp per extra, so `make` reinstalls when setup.cfg changes.
$(VENV)/.installed-%: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[$*]'
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
	rm -rf $(VENV) docs/_build .pytest_cache build *.egg-info
