# Every target sets up what it needs. `make test` and `make demo` work on a fresh machine
# with Python 3.10+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# MovieLens 100K for tests and the demo: the shared copy beside the checkout when present
# (the loader otherwise downloads it once into ~/.cache/gpu_als).
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
# On a GPU machine (no ../shared, no network): the copy `make gpu-carry` puts in .data/.
ifneq ($(wildcard $(SHARED_DATA)/ml-100k/u.data),)
export GPU_ALS_DATA ?= $(SHARED_DATA)
else ifneq ($(wildcard $(CURDIR)/.data/ml-100k/u.data),)
export GPU_ALS_DATA ?= $(CURDIR)/.data
endif

.PHONY: venv test test-oldest demo s3-check spark-check bench bench-quick gpu-site gpu-check gpu-bench gpu-wheels gpu-carry lint clean

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

# The suite on the oldest Python and dependencies pyproject.toml allows (the pins in
# .ci/oldest-constraints.txt), in a venv of its own: not part of `make test` (the set-up
# takes minutes); run it before relying on, or raising, a minimum.
OLDEST_PYTHON ?= python3.10
OLDEST_VENV   ?= .venv-oldest
test-oldest:
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c .ci/oldest-constraints.txt -e '.[dev]'
	$(OLDEST_VENV)/bin/python -m pytest -q -W ignore::DeprecationWarning

demo: $(BIN)/.demo
	$(BIN)/gpu-als demo

# The URLs against S3 as s3fs speaks it, on a local moto server (benchmarks/s3_check.py),
# in a venv of its own: s3fs pins its own fsspec, and neither it nor moto is a dependency.
S3_VENV ?= .venv-s3
s3-check:
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install --quiet -e '.[parquet,dist]' s3fs 'moto[server]'
	$(S3_VENV)/bin/python benchmarks/s3_check.py

# gpu-als's half-step against Spark MLlib's ALS, factor for factor (benchmarks/spark_parity.py),
# in a venv of its own: pyspark (450 MB, and Java 17 to run) is not a dependency; pyarrow
# spares Spark its fallbacks (without it, its Python workers also printed broken pipes).
SPARK_VENV ?= .venv-spark
spark-check:
	$(PYTHON) -m venv $(SPARK_VENV)
	$(SPARK_VENV)/bin/python -m pip install --quiet -e '.[parquet]' pyspark 'pandas<3'
	$(SPARK_VENV)/bin/python benchmarks/spark_parity.py \
		--output benchmarks/results/parity/spark-ml-100k-$$(git rev-parse --short HEAD).json

# The benchmark (gpu_als/benchmark.py): gpu_als vs implicit, CPU and GPU. Results go to
# benchmarks/results/bench-<device>-<commit>.json, charts to docs/bench/<device>/.
bench: venv
	$(BIN)/python benchmarks/bench_als.py --profile full --plots docs/bench

bench-quick: venv
	$(BIN)/python benchmarks/bench_als.py --profile quick --plots docs/bench

# On a GPU machine whose python3 has cupy, numpy, scipy and pytest (no venv, no network):
# GPU tests + the benchmark's quick profile -> benchmarks/results/gpu-check-<device>-
# <commit>.json (copied into $$OUT when set). COMMIT names the commit when .git is not
# there. Wheels in .whl/ (benchmarks/fetch_gpu_wheels.sh: implicit's GPU ALS, RMM, Dask)
# are installed into $(GPU_SITE) first. `make gpu-carry` prepares .whl/ and .data/ here;
# carry both to the GPU machine.
GPU_PYTHON ?= python3
GPU_SITE ?= /tmp/gpu_als_site
GPU_CHECK_ARGS ?=
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The carried wheels (.whl/, see gpu-carry), installed where PYTHONPATH finds them.
gpu-site:
	@if ls .whl/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
			--upgrade --target $(GPU_SITE) .whl/*.whl; fi

gpu-check: gpu-site
	PYTHONPATH=$(CURDIR):$(GPU_SITE) $(GPU_PYTHON) benchmarks/gpu_check.py --commit $(COMMIT) \
		$(GPU_CHECK_ARGS)

# The GPU table of the benchmark (every dataset, factors 64 and 128, gpu_als vs implicit on
# the GPU), on the same kind of machine; the JSON, rewritten after every fit, goes to $$OUT
# when set. Then: python benchmarks/plot_bench.py RESULT.json --markdown. Last,
# recommend() for all 138,000 ml20m-like users on the GPU, both libraries.
GPU_BENCH_ARGS ?= --factors 64 128
gpu-bench: gpu-site
	PYTHONPATH=$(CURDIR):$(GPU_SITE) GPU_ALS_COMMIT=$(COMMIT) $(GPU_PYTHON) -m gpu_als.benchmark \
		--profile full --implementations gpu_als-gpu-cholesky gpu_als-gpu-cg gpu_als-gpu-pcg \
		gpu_als-gpu-pcg2 implicit-gpu-cg gpu_als-gpu-cusolver \
		--output $(or $(OUT),benchmarks/results) $(GPU_BENCH_ARGS)
	PYTHONPATH=$(CURDIR):$(GPU_SITE) $(GPU_PYTHON) benchmarks/bench_recommend.py --backend gpu \
		--users 138000 | tee $(or $(OUT),benchmarks/results)/recommend-gpu-$(COMMIT).txt

gpu-wheels:
	benchmarks/fetch_gpu_wheels.sh .whl 3.12

# What a GPU machine without network needs, in git-ignored folders to carry there: the
# wheels above and MovieLens 100K (never committed: its license forbids redistribution).
gpu-carry: gpu-wheels
	@test -f $(SHARED_DATA)/ml-100k/u.data || \
		{ echo "MovieLens 100K not found in $(SHARED_DATA)/ml-100k"; exit 1; }
	mkdir -p .data/ml-100k
	cp $(addprefix $(SHARED_DATA)/ml-100k/,README u.data u.item u1.base u1.test) .data/ml-100k/

lint: venv
	$(BIN)/ruff check gpu_als tests benchmarks
	$(BIN)/mypy gpu_als

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(S3_VENV) $(SPARK_VENV) build dist .pytest_cache
