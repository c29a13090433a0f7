#!/usr/bin/env bash
# Download the wheels that implicit's GPU ALS needs, for a GPU machine without network:
# implicit itself (its PyPI wheel carries the CUDA 13 extension), rmm-cu13, librmm-cu13
# and rapids-logger (RMM, which implicit.gpu requires). cuBLAS and cuRAND are not fetched
# (hundreds of MB): the GPU machine's CUDA 13 wheels (nvidia-cublas, nvidia-curand) serve,
# and gpu_als.benchmark loads them before importing implicit.gpu.
#
#   benchmarks/fetch_implicit_wheels.sh [FOLDER] [PYTHON_VERSION]   # default .whl 3.12
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
    "implicit==0.7.3" "rmm-cu13==26.10.*" "librmm-cu13==26.10.*" "rapids-logger==0.3.*"
ls -l "$folder"
