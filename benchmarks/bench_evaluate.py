"""What offline evaluation costs: seconds of ranking_metrics (at K = 10) and auc for ALS and
the two baselines, on a power-law data set split as `gpu-als evaluate` splits it.

    python benchmarks/bench_evaluate.py [--users 100000] [--items 20000] [--nnz 2000000]
    python benchmarks/bench_evaluate.py --K 5 10 20   # ALS at several K: one call, and one per K

The data: gpu_als.datasets.make_power_law (seed 0), 20 % of each user's interactions held
out (seed 42); ALS: factors 16, 2 iterations, CPU backend. Prints each model's seconds and
values, so that two checkouts can be compared side by side (PYTHONPATH=...).
"""

import argparse
import time

from gpu_als import ALS
from gpu_als.datasets import make_power_law
from gpu_als.evaluation import (
    PopularityRecommender,
    RandomRecommender,
    auc,
    ranking_metrics,
    train_test_split,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=2_000_000)
    parser.add_argument("--K", type=int, nargs="+", default=None,
                        help="time ALS's metrics at these cut-offs, in one call and in one "
                             "call per K, instead")
    args = parser.parse_args(argv)
    R = make_power_law(args.users, args.items, args.nnz, random_state=0, device="cpu")
    train, test = train_test_split(R, test_fraction=0.2, random_state=42)
    als = ALS(factors=16, iterations=2, backend="cpu", random_state=0,
              show_progress=False).fit(train)
    print(f"{R.shape[0]:,} users x {R.shape[1]:,} items, {train.nnz:,} train / "
          f"{test.nnz:,} test interactions")
    if args.K is not None:
        several_k(als, train, test, args.K)
        return 0
    for name, model in (("Random", RandomRecommender(42).fit(train)),
                        ("Popularity", PopularityRecommender().fit(train)), ("ALS", als)):
        started = time.perf_counter()
        recall = ranking_metrics(model, train, test, K=10, show_progress=False)["recall"]
        ranked = time.perf_counter()
        value = auc(model, train, test, show_progress=False)
        done = time.perf_counter()
        print(f"{name:<11} ranking {ranked - started:6.2f} s (Recall@10 {recall:.4f})   "
              f"auc {done - ranked:6.2f} s (AUC {value:.6f})", flush=True)
    return 0


def several_k(als, train, test, cutoffs: list[int]) -> None:
    """ALS's ranking metrics at ``cutoffs``: one call (one ranking of the largest K), then
    one call per K; the recalls of the two, which must agree."""
    started = time.perf_counter()
    together = ranking_metrics(als, train, test, K=cutoffs, show_progress=False)
    once = time.perf_counter()
    apart = {K: ranking_metrics(als, train, test, K=K, show_progress=False)
             for K in cutoffs}
    done = time.perf_counter()
    recalls = ", ".join(f"@{K} {together[K]['recall']:.4f}" for K in together)
    print(f"K = {cutoffs}: one call {once - started:6.2f} s, a call per K "
          f"{done - once:6.2f} s (Recall {recalls}; the same apart: "
          f"{all(together[K] == apart[K] for K in together)})")


if __name__ == "__main__":
    raise SystemExit(main())
