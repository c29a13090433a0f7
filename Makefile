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

.PHONY: venv test demo bench bench-quick gpu-check gpu-wheels lint clean

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

# The benchmark (gpu_als/benchmark.py): gpu_als vs implicit, CPU and GPU. Results go to
# benchmarks/results/bench-<device>-<commit>.json, charts to docs/bench/<device>/.
bench: venv
	$(BIN)/python benchmarks/bench_als.py --profile full --plots docs/bench

bench-quick: venv
	$(BIN)/python benchmarks/bench_als.py --profile quick --plots docs/bench

# On a GPU machine whose python3 has cupy, numpy, scipy and pytest (no venv, no network):
# GPU tests + the benchmark's quick profile -> benchmarks/results/gpu-check-<device>-
# <commit>.json (copied into $$OUT when set). COMMIT names the commit when .git is not
# there. Wheels in .whl/ (benchmarks/fetch_implicit_wheels.sh: implicit's GPU ALS and RMM)
# are installed into $(GPU_SITE) first.
GPU_PYTHON ?= python3
GPU_SITE ?= /tmp/gpu_als_site
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
gpu-check:
	@if ls .whl/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
			--upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=$(CURDIR):$(GPU_SITE) $(GPU_PYTHON) benchmarks/gpu_check.py --commit $(COMMIT)

gpu-wheels:
	benchmarks/fetch_implicit_wheels.sh .whl 3.12

lint: venv
	$(BIN)/ruff check gpu_als tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache
