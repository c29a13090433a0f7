"""Original ids on a large model: one-user partial fits by row and by id, and id lookups.

    python benchmarks/bench_ids.py [--users 138000] [--factors 64] [--calls 50]

A CPU model of --users x 2,000 items with string ids ("user17", "item5"), factors drawn
at random. Prints the median milliseconds per call (and the first call, which builds what
later calls reuse) of:

- ``partial_fit_users([row], ...)``: one new user a call, by factor row;
- ``partial_fit_users(user_ids=[id], ...)``: one new user a call, by original id;
- ``partial_fit_users(df)``: one new user a call, from a DataFrame of its 2 rows;
- ``model.user_rows([id])``: one known id to its row (the kept lookup);
- ``gpu_als.data.id_positions(model.user_ids_, [id])``: the same without it;
- ``recommend_frame([id])``: a known user's top 10, nothing filtered;
- ``recommend_frame(interactions=df)``: a known user's top 10, its 20 rows filtered;
- ``predict_frame(df)``: the scores of those 20 pairs.

Its numbers are in the docstrings of ``partial_fit_users`` and ``user_rows`` and in the
docs/guide.md ("DataFrames and your own ids").
"""

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.data import id_positions

ITEMS = 2_000


def timed(calls: int, work) -> tuple[float, float]:
    """Milliseconds of ``work(j)`` for j in range(calls): (first call, median of all)."""
    seconds = []
    for j in range(calls):
        start = time.perf_counter()
        work(j)
        seconds.append(time.perf_counter() - start)
    return seconds[0] * 1e3, statistics.median(seconds) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.random((args.users, args.factors), dtype=np.float32)
    Y = rng.random((ITEMS, args.factors), dtype=np.float32)
    names = np.array([f"user{i}" for i in range(args.users)], dtype=object)
    items = np.array([f"item{i}" for i in range(ITEMS)], dtype=object)
    row = sp.csr_matrix(([1.0, 2.0], ([0, 0], [3, 7])), shape=(1, ITEMS))

    def model(ids=None) -> ALS:
        return ALS.from_factors(X, Y, user_ids=ids, item_ids=None if ids is None else items,
                                backend="cpu")

    by_row, by_id, by_frame, lookup = model(), model(names), model(names), model(names)
    known = [f"user{(j * 7919) % args.users}" for j in range(args.calls)]
    seen = [pd.DataFrame({"user": [user] * 20, "item": items[rng.integers(0, ITEMS, 20)]})
            for user in known]
    results = {
        "partial_fit_users by row": timed(
            args.calls, lambda j: by_row.partial_fit_users([args.users + j], row)),
        "partial_fit_users by id": timed(
            args.calls, lambda j: by_id.partial_fit_users(user_items=row,
                                                          user_ids=[f"new{j}"])),
        "partial_fit_users(df)": timed(
            args.calls, lambda j: by_frame.partial_fit_users(pd.DataFrame(
                {"user": [f"new{j}"] * 2, "item": ["item3", "item7"]}))),
        "user_rows": timed(args.calls, lambda j: lookup.user_rows([known[j]])),
        "id_positions": timed(args.calls,
                              lambda j: id_positions(lookup.user_ids_, [known[j]])),
        "recommend_frame([id])": timed(args.calls,
                                       lambda j: lookup.recommend_frame([known[j]])),
        "recommend_frame(df)": timed(args.calls,
                                     lambda j: lookup.recommend_frame(interactions=seen[j])),
        "predict_frame(df)": timed(args.calls, lambda j: lookup.predict_frame(seen[j])),
    }
    print(f"{args.users:,} users with string ids x {ITEMS:,} items, factors "
          f"{args.factors}, {args.calls} calls each, CPU")
    print(f"{'call':<26} {'first ms':>9} {'median ms':>10}")
    for name, (first, median) in results.items():
        print(f"{name:<26} {first:9.3f} {median:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
