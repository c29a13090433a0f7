"""The splits of gpu_als.evaluation on a large event log: seconds of each.

    python benchmarks/bench_splits.py [--rows 10000000] [--users 138000] [--items 27000]

A pandas DataFrame of --rows (user, item, timestamp) rows: users and items drawn
uniformly, integer times (Unix seconds over about 30 years), seeded. Prints the seconds of
one call each (the machine is shared: read them side by side):

- ``temporal_split(df, test_fraction=0.2)``: each user's latest 20 %;
- ``temporal_split(df, K=1)``: each user's latest row;
- ``temporal_split(df, cutoff=...)``: the rows at or after the 80th percentile of the times;
- ``train_test_split(R, test_fraction=0.2)``: the random split of the same rows as a
  matrix (``from_dataframe``, timed apart), for comparison;
- ``train_test_split(df, test_fraction=0.2)``: the same split of the DataFrame, by its
  (user, item) pairs.

Its numbers are in the closing note of the stop that added ``temporal_split``.
"""

import argparse
import time

import numpy as np

from gpu_als import from_dataframe
from gpu_als.evaluation import temporal_split, train_test_split


def seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, args.users, args.rows),
                       "item": rng.integers(0, args.items, args.rows),
                       "timestamp": rng.integers(0, 10**9, args.rows)})
    cutoff = float(np.quantile(df["timestamp"], 0.8))
    matrix = []
    results = {
        "temporal_split, each user's latest 20 %": seconds(
            lambda: temporal_split(df, test_fraction=0.2)),
        "temporal_split, each user's latest row (K=1)": seconds(lambda: temporal_split(df, K=1)),
        "temporal_split at a cutoff": seconds(lambda: temporal_split(df, cutoff=cutoff)),
        "from_dataframe (for the matrix below)": seconds(
            lambda: matrix.append(from_dataframe(df, value_col=None).matrix)),
        "train_test_split of the matrix, 20 %": seconds(
            lambda: train_test_split(matrix[0], test_fraction=0.2)),
        "train_test_split of the DataFrame, 20 %": seconds(
            lambda: train_test_split(df, test_fraction=0.2)),
    }
    print(f"{args.rows:,} rows of {args.users:,} users x {args.items:,} items")
    for name, took in results.items():
        print(f"{name:<46} {took:7.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
