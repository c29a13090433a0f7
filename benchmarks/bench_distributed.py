"""Distributed ALS on a local Dask cluster: seconds and bytes moved per iteration against
the number of workers, beside the single-process fit of the same model.

    python benchmarks/bench_distributed.py [--workers 1 2] [--nnz 2000000] [--factors 64]

On one machine the workers share its cores, so this measures the overhead of distributing
(scheduling, broadcasting the factors), not a speed-up; several machines or GPUs
(LocalCUDACluster) are where the workers add compute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.datasets import make_power_law  # noqa: E402
from gpu_als.distributed import fit_distributed  # noqa: E402


def routed_bytes(R, workers: int, factors: int, itemsize: int = 4) -> int:
    """What Spark MLlib's in/out-link routing would move per iteration: each worker gets
    only the fixed-side factor rows its blocks touch, and sends back its own block."""
    from gpu_als.data import Prepared
    from gpu_als.distributed import _split

    users, items = Prepared(R).rows(feedback="implicit")
    total = 0
    for side in (users, items):
        for _, _, block in _split(side, workers):
            total += len(np.unique(block.indices)) * factors * itemsize  # rows sent in
        total += side.n_rows * factors * itemsize  # the new factors come back
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nnz", type=int, default=2_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args(argv)
    import dask
    from dask.distributed import Client, LocalCluster

    from gpu_als.distributed import WORKER_MALLOC

    dask.config.set(WORKER_MALLOC)  # see gpu_als.distributed: Dask's malloc defaults are slow

    n_users, n_items = args.nnz // 20, args.nnz // 100
    R = make_power_law(n_users, n_items, args.nnz, random_state=0)
    params = dict(factors=args.factors, iterations=args.iterations, backend="cpu",
                  random_state=0, show_progress=False)

    def per_iteration(stamps):
        return float(np.median(np.diff(stamps)[1:]))

    stamps = [0.0]
    single = ALS(**params, callback=lambda i, t, loss: stamps.append(t)).fit(R)
    print(f"{n_users} x {n_items}, {R.nnz} interactions, k={args.factors}")
    print(f"single process: {per_iteration(stamps):.2f} s/iteration")
    for workers in args.workers:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            stamps = [0.0]
            model = fit_distributed(
                ALS(**params, callback=lambda i, t, loss, s=stamps: s.append(t)), R, client)
            gap = float(np.abs(model.item_factors_ - single.item_factors_).max())
            print(f"{workers} worker(s): {per_iteration(stamps):.2f} s/iteration, "
                  f"{model.bytes_moved_[-1] / 1e6:.1f} MB moved per iteration by "
                  f"broadcast ({routed_bytes(R, workers, args.factors) / 1e6:.1f} MB with "
                  f"in/out-link routing), max |Y - Y_single| {gap:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
