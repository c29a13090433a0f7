"""The benchmark: gpu_als vs the implicit library, CPU and GPU (see gpu_als/benchmark.py).

    python benchmarks/bench_als.py --profile quick        # = gpu-als bench, make bench-quick
    python benchmarks/bench_als.py --profile full         # = make bench
    python benchmarks/bench_als.py --help

Writes benchmarks/results/bench-<device>-<commit>.json; benchmarks/plot_bench.py draws it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
