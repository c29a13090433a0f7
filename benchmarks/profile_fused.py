"""One ml20m-like fit for a kernel profiler: `ncu` (Nsight Compute) reads the counters of
the fused build + solve kernel (occupancy, shared-memory and issue throughput, warp
stalls), which say what bounds it on this card. Needs a GPU.

    ncu -k regex:fused_solve -c 2 --section Occupancy --section WarpStateStats \\
        python3 benchmarks/profile_fused.py --factors 128

`make gpu-check` runs it so (benchmarks/gpu_check.py, profile_kernels) where ncu is
installed, and keeps the counters in its result file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.benchmark import ALPHA, DATASETS, REGULARIZATION, SEED  # noqa: E402
from gpu_als.datasets import make_power_law  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml20m-like",
                        choices=[name for name, d in DATASETS.items() if d.synthetic])
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args(argv)
    shape = DATASETS[args.dataset]
    R = make_power_law(shape.users, shape.items, shape.nnz, random_state=SEED, device="gpu")
    ALS(factors=args.factors, iterations=args.iterations, alpha=ALPHA,
        regularization=REGULARIZATION, backend="gpu", show_progress=False,
        calculate_training_loss=False).fit(R)


if __name__ == "__main__":
    main()
