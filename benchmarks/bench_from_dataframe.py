"""from_dataframe on a large frame: seconds to build the matrix and the id maps.

    python benchmarks/bench_from_dataframe.py [--rows 5000000] [--users 100000] [--items 20000]
        [--values float|decimal-objects|decimal-arrow|decimal-polars]
        [--ids str|object|category|polars|polars-categorical]

String user ids ("user17"), integer item ids, one value column; prints the seconds of
from_dataframe (the median of --repeats runs) and the matrix's shape. ``--values`` types
the values: float64, or DECIMAL(10, 2) as a database or a Parquet file gives it, in
pandas as Python Decimals (``decimal-objects``) or Arrow's decimal128, or in polars.
``--ids`` types the user ids: pandas' text dtype (``str``: pandas 3's default, in Arrow),
an object column of Python strings (pandas 2's default), pandas' ``category``, or a polars
frame's ``String`` or ``Categorical``.
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
    parser.add_argument("--values", default="float",
                        choices=["float", "decimal-objects", "decimal-arrow", "decimal-polars"])
    parser.add_argument("--ids", default="str", choices=["str", "object", "category", "polars",
                                                      "polars-categorical"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = np.array([f"user{i}" for i in range(args.users)], dtype=object)
    df = pd.DataFrame({"user": pd.Series(names[rng.integers(0, args.users, args.rows)],
                                         dtype=args.ids if args.ids in ("str", "category")
                                         else object),
                       "item": rng.integers(0, args.items, args.rows),
                       "value": rng.integers(1, 6, args.rows) / 2})
    df = typed_values(df, args.values)
    if args.ids.startswith("polars") and args.values != "decimal-polars":
        import polars as pl

        df = pl.from_pandas(df)
        if args.ids == "polars-categorical":
            df = df.with_columns(pl.col("user").cast(pl.Categorical))
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        matrix = from_dataframe(df).matrix
        seconds.append(time.perf_counter() - start)
    print(f"from_dataframe, {args.rows:,} rows, {args.ids} ids, {args.values} values: "
          f"{statistics.median(seconds):.2f} s "
          f"(median of {args.repeats}); matrix {matrix.shape[0]:,} x {matrix.shape[1]:,}, "
          f"{matrix.nnz:,} entries")


def typed_values(df: pd.DataFrame, values: str):
    """``df`` with its float values typed as ``values`` says (DECIMAL(10, 2) in a kind)."""
    if values == "float":
        return df
    import pyarrow as pa

    decimals = pa.array(df["value"]).cast(pa.decimal128(10, 2))
    if values == "decimal-polars":
        import polars as pl

        return pl.from_pandas(df.drop(columns="value")).with_columns(
            pl.from_arrow(decimals).alias("value"))
    if values == "decimal-arrow":
        return df.assign(value=pd.Series(decimals, dtype=pd.ArrowDtype(decimals.type)))
    return df.assign(value=decimals.to_pandas())  # Python Decimals in an object column


if __name__ == "__main__":
    main()
