"""from_dataframe on a large frame: seconds to build the matrix and the id maps.

    python benchmarks/bench_from_dataframe.py [--rows 5000000] [--users 100000] [--items 20000]

String user ids ("user17"), integer item ids, one value column; prints the seconds of
from_dataframe (the median of --repeats runs) and the matrix's shape.
"""

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from gpu_als.data import from_dataframe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = np.array([f"user{i}" for i in range(args.users)], dtype=object)
    df = pd.DataFrame({"user": names[rng.integers(0, args.users, args.rows)],
                       "item": rng.integers(0, args.items, args.rows),
                       "value": np.ones(args.rows)})
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        matrix = from_dataframe(df).matrix
        seconds.append(time.perf_counter() - start)
    print(f"from_dataframe, {args.rows:,} rows: {statistics.median(seconds):.2f} s "
          f"(median of {args.repeats}); matrix {matrix.shape[0]:,} x {matrix.shape[1]:,}, "
          f"{matrix.nnz:,} entries")


if __name__ == "__main__":
    main()
