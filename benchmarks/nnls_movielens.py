"""Nonnegative factors (``solver="nnls"``) against the exact solver on MovieLens 100K.

The u1 split's ratings of 4 and 5 as positives; each factor count is fitted by both
solvers side by side (same seed, 15 iterations, CPU backend unless ``--backend``), and
the table gives milliseconds per iteration, the final training loss, Precision@10 and
NDCG@10 on u1.test, and the share of factors that are 0. Prints a Markdown table (the
one in docs/guide.md, "Nonnegative factors").

    python benchmarks/nnls_movielens.py [--factors 32 64 128] [--backend cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gpu_als import ALS
from gpu_als.datasets import load_movielens_100k
from gpu_als.evaluation import ranking_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args(argv)
    movielens = load_movielens_100k()
    train = (movielens.u1_base >= 4).astype(np.float32)
    test = (movielens.u1_test >= 4).astype(np.float32)
    print("| k | solver | ms per iteration | training loss | P@10 | NDCG@10 | factors at 0 "
          "(users, items) |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for k in args.factors:
        for solver in ("cholesky", "nnls"):
            model = ALS(factors=k, iterations=args.iterations, solver=solver,
                        backend=args.backend, show_progress=False, random_state=0)
            started = time.perf_counter()
            model.fit(train)
            seconds = (time.perf_counter() - started) / args.iterations
            metrics = ranking_metrics(model, train, test, K=10)
            model = model.to_cpu()
            zeros = [float((factors == 0).mean())
                     for factors in (model.user_factors_, model.item_factors_)]
            print(f"| {k} | {solver} | {seconds * 1e3:.0f} | {model.loss_history_[-1]:,.0f} | "
                  f"{metrics['precision']:.4f} | {metrics['ndcg']:.4f} | "
                  f"{zeros[0]:.0%}, {zeros[1]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
