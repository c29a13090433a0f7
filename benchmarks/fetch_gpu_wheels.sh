#!/usr/bin/env bash
# Download the wheels a GPU machine without network needs beyond cupy, numpy, scipy and
# pytest: nvtx (3 MB: the GPU tests then run with its ranges open, as a profiled fit
# does), Dask (dask[distributed] with its dependencies, 5 MB: the distributed GPU test) and
# what implicit's GPU ALS needs (the benchmark's comparison): implicit itself (its PyPI
# wheel carries the CUDA 13 extension), rmm-cu13, librmm-cu13 and rapids-logger (RMM,
# which implicit.gpu requires). cuBLAS and cuRAND are not fetched
# (hundreds of MB): the GPU machine's CUDA 13 wheels (nvidia-cublas, nvidia-curand) serve,
# and gpu_als.benchmark loads them before importing implicit.gpu.
#
# The RMM versions are pinned to the ones implicit 0.7.3's extension (_cuda.so) links
# against: checked with nm, every rmm:: symbol it needs is in librmm-cu13 26.2 and 26.4;
# 25.10, 25.12 and 26.6 lack two, and 26.8 and 26.10 put everything in a versioned namespace
# (rmm::_RMM_26_10), so there `import implicit.gpu` disables the GPU (undefined symbol).
# librmm 26.4 requires rapids-logger 0.2.
#
#   benchmarks/fetch_gpu_wheels.sh [FOLDER] [PYTHON_VERSION]   # default .whl 3.12
#
# Then, on the GPU machine (what `make gpu-check` does when FOLDER is .whl):
#   python3 -m pip install --no-index --no-deps --target /tmp/gpu_als_site .whl/*.whl
#   PYTHONPATH=/tmp/gpu_als_site:. python3 -m gpu_als.benchmark --profile quick
set -euo pipefail
folder=${1:-.whl}
python_version=${2:-3.12}
mkdir -p "$folder"
python3 -m pip download --no-deps --only-binary=:all: --dest "$folder" \
    --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    --extra-index-url https://pypi.nvidia.com \
    "implicit==0.7.3" "rmm-cu13==26.4.*" "librmm-cu13==26.4.*" "rapids-logger==0.2.*" \
    "nvtx>=0.2"
# Dask with its dependencies (all of them wheels: pure Python or small extensions).
python3 -m pip download --only-binary=:all: --dest "$folder" \
    --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    "dask[distributed]>=2024.1"
ls -l "$folder"
