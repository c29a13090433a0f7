"""The driver's memory in a distributed fit of a Parquet dataset: read by the driver
(pandas) and fitted, against read by the workers (a Dask DataFrame).

    python benchmarks/dask_frame_memory.py [--nnz 4000000] [--users N] [--items N]
                                           [--files 8] [--factors 16] [--workers 2]
                                           [--blocks-per-worker 1]

Writes a power-law dataset (columns user, item, value; ``--files`` Parquet files, each a
partition of the Dask DataFrame) to a temporary folder, then fits it each way in a fresh
driver process, the workers being processes of their own, and prints the driver's peak
resident memory during the read and fit above what it had before them (sampled every
5 ms), the seconds each took in all and before its first iteration (the read, and the
blocks built), the largest peak resident memory of a worker process (imports included),
and how far apart the two models' factors are.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("pandas", "dask")


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


class PeakMemory:
    """The highest :func:`rss_mb` while in the ``with`` block, sampled every 5 ms, above
    what it was on entering."""

    def __enter__(self):
        self.start, self.peak, self.done = rss_mb(), 0.0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.above = max(self.peak, rss_mb()) - self.start


def write_dataset(folder: Path, users: int, items: int, nnz: int, files: int = 8) -> None:
    import pandas as pd

    from gpu_als.datasets import make_power_law

    R = make_power_law(users, items, nnz, random_state=0, device="cpu").tocoo()
    frame = pd.DataFrame({"user": R.row, "item": R.col, "value": R.data})
    for part in range(files):
        frame.iloc[part::files].to_parquet(folder / f"part.{part}.parquet")


def fit_once(mode: str, folder: str, factors: int, workers: int, blocks_per_worker: int,
             out: str) -> None:
    """In a fresh process: fit the dataset read the ``mode`` way; save the item factors."""
    import dask
    import dask.dataframe as dd
    import pandas as pd
    from dask.distributed import Client, LocalCluster

    from gpu_als import ALS
    from gpu_als.distributed import WORKER_MALLOC, fit_distributed

    dask.config.set(WORKER_MALLOC)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        start, iterations = time.perf_counter(), []
        with PeakMemory() as memory:
            data = pd.read_parquet(folder) if mode == "pandas" else dd.read_parquet(folder)
            model = fit_distributed(
                ALS(factors=factors, iterations=2, random_state=0, backend="cpu",
                    show_progress=False, callback=lambda i, s, loss: iterations.append(s)),
                data, client, blocks_per_worker=blocks_per_worker)
        seconds = time.perf_counter() - start
        workers_mb = max(client.run(worker_peak_mb).values())
        np.save(out, model.item_factors_)
        print(json.dumps({"mode": mode, "driver_mb": memory.above, "seconds": seconds,
                          "setup": seconds - iterations[-1], "workers_mb": workers_mb}))


def worker_peak_mb() -> float:
    """This (worker) process's peak resident memory so far, in MB (Linux: ru_maxrss in
    KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnz", type=int, default=4_000_000)
    parser.add_argument("--users", type=int, help="default: nnz / 20")
    parser.add_argument("--items", type=int, help="default: nnz / 100")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--blocks-per-worker", type=int, default=1)
    parser.add_argument("--fit", choices=MODES, help=argparse.SUPPRESS)  # (the child)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit:
        fit_once(args.fit, args.folder, args.factors, args.workers, args.blocks_per_worker,
                 args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "events"
        folder.mkdir()
        users, items = args.users or args.nnz // 20, args.items or args.nnz // 100
        write_dataset(folder, users, items, args.nnz, args.files)
        rows, factors = {}, {}
        for mode in MODES:
            out = str(Path(tmp) / f"{mode}.npy")
            child = subprocess.run(
                [sys.executable, __file__, "--fit", mode, "--folder", str(folder), "--out",
                 out, "--factors", str(args.factors), "--workers", str(args.workers),
                 "--blocks-per-worker", str(args.blocks_per_worker)],
                check=True, capture_output=True, text=True)
            rows[mode] = json.loads(child.stdout.strip().splitlines()[-1])
            factors[mode] = np.load(out)
    print(f"{users:,} users x {items:,} items, {args.nnz:,} interactions in {args.files} "
          f"Parquet files, k = {args.factors}, "
          f"{args.workers} worker processes x {args.blocks_per_worker} blocks a side, "
          f"2 iterations")
    for mode, what in (("pandas", "read by the driver (pandas)"),
                       ("dask", "read by the workers (Dask DataFrame)")):
        print(f"  {what}: driver's peak memory +{rows[mode]['driver_mb']:.0f} MB, "
              f"{rows[mode]['seconds']:.1f} s ({rows[mode]['setup']:.1f} s before the first "
              f"iteration); the largest worker's peak memory {rows[mode]['workers_mb']:.0f} "
              f"MB")
    gap = float(np.abs(factors["pandas"] - factors["dask"]).max())
    print(f"  max |Y_pandas - Y_dask| = {gap:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
