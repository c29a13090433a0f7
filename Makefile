# Every target sets up what it needs. `make test` and `make demo` work on a fresh machine
# with Python 3.10+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# MovieLens 100K for tests and the demo: the shared copy beside the checkout when present
# (the loader otherwise downloads it once into ~/.cache/gpu_als).
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/ml-100k/u.data),)
export GPU_ALS_DATA ?= $(SHARED_DATA)
endif

.PHONY: venv test demo bench gpu-check lint clean

# The demo needs the package and matplotlib; the tests need the dev extras on top.
$(BIN)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[plot]'
	touch $@

$(BIN)/.installed: $(BIN)/.demo
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

demo: $(BIN)/.demo
	$(BIN)/gpu-als demo

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_cpu.py

# On a GPU machine whose python3 has cupy, numpy, scipy and pytest (no venv, no network):
# GPU tests + a short benchmark -> benchmarks/results/gpu-check-<device>-<commit>.json
# (copied into $$OUT when set). COMMIT names the commit when .git is not there.
GPU_PYTHON ?= python3
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) benchmarks/gpu_check.py --commit $(COMMIT)

lint: venv
	$(BIN)/ruff check gpu_als tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache
