"""Hyperparameter search on MovieLens 100K under the protocol of DESIGN.md section 6.

Searches on a validation split of the training positives only, then scores the best
configuration on the test split beside the reference document's settings (factors=64,
regularization=0.001, alpha=10, iterations=20).

    python benchmarks/tune_movielens.py [--no-halving] [--backend cpu] [--plot docs/tune.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.datasets import load_movielens_100k  # noqa: E402
from gpu_als.evaluation import binarize, ranking_metrics, train_test_split  # noqa: E402
from gpu_als.tune import tune  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-halving", action="store_true")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)

    train, test = train_test_split(binarize(load_movielens_100k().ratings, 4), test_fraction=0.2,
                                   random_state=42)
    start = time.perf_counter()
    result = tune(train, base_params={"backend": args.backend}, halving=not args.no_halving,
                  random_state=42, show_progress=False)
    wall = time.perf_counter() - start
    finished = sum(t["finished"] for t in result.trials)
    print(f"{len(result.trials)} configurations ({finished} trained to 20 iterations) "
          f"in {wall:.1f} s on '{result.model.backend_}'")
    print(f"best on validation: {result.best_params}, {result.metric} "
          f"{result.best_score:.4f}")
    reference = ALS(factors=64, regularization=0.001, alpha=10, iterations=20,
                    random_state=42, backend=args.backend, show_progress=False).fit(train)
    for name, model in (("best found", result.model), ("reference settings", reference)):
        m = ranking_metrics(model, train, test, K=10)
        print(f"test, {name:<18}: Recall@10 {m['recall']:.4f}  NDCG@10 {m['ndcg']:.4f}")
    if args.plot:
        from gpu_als.plots import plot_tuning

        print(f"plot: {plot_tuning(result, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
