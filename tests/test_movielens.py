"""Quality on MovieLens 100K under the protocol of DESIGN.md section 6."""

import numpy as np
import pytest

from gpu_als import ALS
from gpu_als.evaluation import (
    PopularityRecommender,
    binarize,
    ranking_metrics,
    rmse,
    train_test_split,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split(movielens):
    return train_test_split(binarize(movielens.ratings, 4), test_fraction=0.2, random_state=42)


def test_implicit_recall_at_10(real_backend, split):
    """implicit 0.7.3 gets 0.197 (Cholesky) here, popularity 0.113; seeds spread ~0.004."""
    train, test = split
    model = ALS(factors=64, regularization=0.001, alpha=10, iterations=20, random_state=42,
                backend=real_backend, show_progress=False).fit(train)
    als = ranking_metrics(model, train, test, K=10)
    popularity = ranking_metrics(PopularityRecommender().fit(train), train, test, K=10)
    assert als["users"] == 942
    assert als["recall"] >= 0.185, als
    assert als["ndcg"] > als["recall"]  # ~11 test items per user (DESIGN.md section 6)
    assert als["recall"] > popularity["recall"] + 0.05, (als, popularity)
    assert all(b <= a for a, b in zip(model.loss_history_, model.loss_history_[1:]))


def test_explicit_rmse_on_u1_split(real_backend, movielens):
    """With the default regularization (0.1 for ratings; at implicit's 0.01 the RMSE is
    1.29)."""
    model = ALS(factors=32, iterations=15, feedback="explicit", random_state=42,
                backend=real_backend, show_progress=False).fit(movielens.u1_base)
    error = rmse(model, movielens.u1_test)
    test = movielens.u1_test.tocoo()
    by_hand = np.sqrt(np.mean((model.predict(test.row, test.col) - test.data) ** 2))
    assert error == pytest.approx(by_hand, rel=1e-6)
    assert error < 0.95, error
