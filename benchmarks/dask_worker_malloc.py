"""The same NumPy work in the driver and in a Dask worker, under Dask's default malloc
settings and with gpu_als.distributed.WORKER_MALLOC (Dask's nanny sets
MALLOC_TRIM_THRESHOLD_=65536: glibc then gives memory back after nearly every large free
and stops adapting its mmap threshold, so NumPy temporaries keep faulting pages in).

    python benchmarks/dask_worker_malloc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def work() -> str:
    """One user half-step and one loss of the 100k x 20k x 2M power-law set, k = 64."""
    import time

    import numpy as np

    from gpu_als import data
    from gpu_als.backends import get_backend
    from gpu_als.datasets import make_power_law

    users, _ = data.Prepared(make_power_law(100_000, 20_000, 2_000_000, random_state=0)).rows(
        feedback="implicit", alpha=10.0)
    rng = np.random.default_rng(0)
    X = rng.random((100_000, 64), dtype=np.float32) * 0.01
    Y = rng.random((20_000, 64), dtype=np.float32) * 0.01
    backend = get_backend("cpu")
    start = time.perf_counter()
    backend.stored_loss(users, X, Y)
    loss = time.perf_counter() - start
    backend.solve_rows(users, Y, backend.gram(Y), regularization=0.01, feedback="implicit",
                       out=X)
    return f"loss {loss:.2f} s, user half-step {time.perf_counter() - start - loss:.2f} s"


def main() -> int:
    import dask
    from dask.distributed import Client, LocalCluster

    from gpu_als.distributed import WORKER_MALLOC

    print(f"driver:                              {work()}")
    key = "distributed.nanny.pre-spawn-environ."
    for label, settings in (
        ("worker, Dask's defaults:            ", {}),
        ("worker, MALLOC_MMAP_THRESHOLD_=2**30:", {key + "MALLOC_MMAP_THRESHOLD_": 1 << 30}),
        ("worker, both thresholds 2**30:      ", WORKER_MALLOC),
    ):
        with dask.config.set(settings), \
                LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as c, \
                Client(c) as client:
            print(f"{label} {client.submit(work, pure=False).result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
