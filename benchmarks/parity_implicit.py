"""gpu_als against the implicit library on MovieLens 100K: the same objective, the same seed.

implicit treats a stored value as the confidence itself (c = value), gpu_als uses
c = 1 + alpha * r; on binary positives, implicit fed R * 10 solves the objective of
ALS(alpha=9). Both draw their initial factors the same way from the same seed, so the two
exact (Cholesky) solvers should agree to float32 rounding, and so should Recall@10 and
NDCG@10 under the protocol of DESIGN.md section 6.

    python benchmarks/parity_implicit.py        # needs implicit (pip install gpu-als[bench])
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.datasets import load_movielens_100k  # noqa: E402
from gpu_als.evaluation import binarize, ranking_metrics, train_test_split  # noqa: E402


class ImplicitModel:
    """implicit's model behind ALS's recommend signature."""

    def __init__(self, model):
        self.model = model

    def recommend(self, userid, user_items, N, filter_already_liked_items):
        return self.model.recommend(userid, user_items, N=N,
                                    filter_already_liked_items=filter_already_liked_items)


def main() -> int:
    from implicit.cpu.als import AlternatingLeastSquares

    train, test = train_test_split(binarize(load_movielens_100k().ratings, 4), test_fraction=0.2,
                                   random_state=42)
    print(f"{'seed':>4} {'gpu_als R@10':>13} {'implicit R@10':>14} {'gpu_als NDCG':>13} "
          f"{'implicit NDCG':>14} {'max |dY|':>9}")
    for seed in (42, 1, 2):
        ours = ALS(factors=64, regularization=0.001, alpha=9.0, iterations=20,
                   random_state=seed, backend="cpu", show_progress=False).fit(train)
        with threadpool_limits(1, "blas"):
            theirs = AlternatingLeastSquares(factors=64, regularization=0.001, iterations=20,
                                             use_cg=False, random_state=seed)  # Cholesky
            theirs.fit((train * 10).tocsr(), show_progress=False)
        a = ranking_metrics(ours, train, test, K=10)
        b = ranking_metrics(ImplicitModel(theirs), train, test, K=10)
        gap = float(np.abs(ours.item_factors_ - theirs.item_factors).max())
        print(f"{seed:>4} {a['recall']:>13.4f} {b['recall']:>14.4f} {a['ndcg']:>13.4f} "
              f"{b['ndcg']:>14.4f} {gap:>9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
