"""Milliseconds and minor page faults per iteration of CPU fits on MovieLens 100K.

A temporary allocated afresh for every block is mapped, faulted in and unmapped by glibc
each time; this shows whether the CPU backend's work arrays are reused (a few hundred
faults per iteration) or not (over 10,000). To compare two commits side by side, run it
alternately from each checkout:

    PYTHONPATH=/path/to/checkout python benchmarks/cpu_page_faults.py --solver cg --factors 32
"""

import argparse
import resource
import time

from gpu_als import ALS
from gpu_als.backends import CPUBackend
from gpu_als.datasets import load_movielens_100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", choices=["cholesky", "cg"], default="cg")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    ratings = load_movielens_100k().ratings

    def fit(iterations):
        ALS(factors=args.factors, iterations=iterations, solver=args.solver,
            backend=CPUBackend(num_threads=args.threads), random_state=0,
            show_progress=False, calculate_training_loss=False).fit(ratings)

    fit(2)  # warm-up: imports, thread pools, the allocator's first growth
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fit(args.iterations)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(f"{args.solver} k={args.factors}: {seconds / args.iterations * 1e3:.1f} ms and "
          f"{faults / args.iterations:,.0f} minor page faults per iteration")


if __name__ == "__main__":
    main()
