"""Retraining after new interactions: from the previous model (warm start) or from scratch.

MovieLens 100K positives (ratings >= 4), the DESIGN.md section 6 split. "Before": 85 % of
each user's training entries, fitted for 15 iterations. "Now": all of the training
entries, fitted for n iterations either from the model of before
(``ALS(warm_start=True)``) or from random factors; the table gives the training loss and
Recall@10 of each beside a 15-iteration fit from scratch.

    python benchmarks/warm_start.py [--backend cpu] [--solver cholesky|cg]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.datasets import load_movielens_100k  # noqa: E402
from gpu_als.evaluation import binarize, ranking_metrics, train_test_split  # noqa: E402

ITERATIONS = 15


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--solver", default="cholesky", choices=["cholesky", "cg"])
    args = parser.parse_args(argv)

    train, test = train_test_split(binarize(load_movielens_100k().ratings, 4),
                                   test_fraction=0.2, random_state=42)
    before, _ = train_test_split(train, test_fraction=0.15, random_state=1)
    params = dict(factors=64, regularization=0.01, alpha=10.0, backend=args.backend,
                  solver=args.solver, random_state=0, show_progress=False)

    def scores(model: ALS) -> str:
        recall = ranking_metrics(model, train, test, K=10, show_progress=False)["recall"]
        return f"{model.loss_history_[-1]:>10,.0f} {recall:>10.4f}"

    print(f"{before.nnz:,} interactions before, {train.nnz:,} now; {args.solver}, "
          f"factors 64, on '{args.backend}'")
    print(f"{'iterations':>10} {'warm: loss':>12} {'Recall@10':>10} {'cold: loss':>12} "
          f"{'Recall@10':>10}")
    previous = ALS(**{**params, "iterations": ITERATIONS}).fit(before)
    for n in (1, 2, 3, 5):
        warm = copy.deepcopy(previous).set_params(warm_start=True, iterations=n).fit(train)
        cold = ALS(**{**params, "iterations": n}).fit(train)
        print(f"{n:>10} {scores(warm):>23} {scores(cold):>23}")
    cold = ALS(**{**params, "iterations": ITERATIONS}).fit(train)
    print(f"{ITERATIONS:>10} {'':>23} {scores(cold):>23}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
