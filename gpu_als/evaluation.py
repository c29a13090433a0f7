"""Offline evaluation: the per-user split, ranking metrics at K, and two baselines.

The protocol of DESIGN.md section 6: positives are ratings >= 4; for every user, 20 % of
their positives (seeded) go to the test set; models are trained on the rest and recommend
``K`` items per test user with the training positives filtered out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .backends.base import csr_pairs, top_n
from .data import check_float, check_int, check_rows_for, check_user_items


def binarize(ratings: Any, threshold: float = 4.0) -> sp.csr_matrix:
    """The entries with value ``>= threshold``, each set to 1 (float32 CSR)."""
    csr = check_user_items(ratings, np.float32, name="ratings")
    keep = csr.data >= threshold
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[keep]
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows, csr.indices[keep])), shape=csr.shape
    )


def train_test_split(
    user_items: Any, test_fraction: float = 0.2, random_state: int | None = 42
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split each user's stored entries into train and test.

    A user with ``n >= 2`` entries gets ``max(1, round(test_fraction * n))`` of them,
    chosen uniformly at random, in the test set; a user with one entry keeps it in train.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items)
    test_fraction : float in (0, 1), default 0.2
    random_state : int or None, default 42

    Returns
    -------
    train, test : scipy.sparse.csr_matrix, shape (n_users, n_items)
        Disjoint, and together the entries of ``user_items``.
    """
    test_fraction = check_float("test_fraction", test_fraction, strict=True)
    if test_fraction >= 1:
        raise ValueError(f"test_fraction={test_fraction}: must be < 1")
    csr = check_user_items(user_items, np.float32)
    rng = np.random.default_rng(random_state)
    lengths = np.diff(csr.indptr)
    rows = np.repeat(np.arange(csr.shape[0]), lengths)
    n_test = np.where(lengths >= 2, np.maximum(1, np.rint(test_fraction * lengths)), 0)
    # Rank each entry within its row by a random key; the lowest ranks go to test.
    order = np.lexsort((rng.random(csr.nnz), rows))
    rank = np.empty(csr.nnz, dtype=np.int64)
    rank[order] = np.arange(csr.nnz) - csr.indptr[rows[order]]
    is_test = rank < n_test[rows]

    def pick(mask):
        return sp.csr_matrix((csr.data[mask], (rows[mask], csr.indices[mask])), shape=csr.shape)

    return pick(~is_test), pick(is_test)


def ranking_metrics(
    model: Any, train: Any, test: Any, K: int = 10, batch_size: int = 2048
) -> dict[str, float]:
    """Precision, recall and NDCG at ``K``, averaged over the users with test items.

    For each such user ``u`` the model recommends ``K`` items with the items of
    ``train[u]`` filtered out; with ``hits`` the recommended items found in ``test[u]``:

    * ``precision = |hits| / K``
    * ``recall = |hits| / |test[u]|``
    * ``ndcg = DCG / IDCG`` with binary relevance, ``DCG = sum_{j in hits} 1 / log2(j + 2)``
      over 0-based ranks ``j``, and ``IDCG`` the DCG of ``min(|test[u]|, K)`` hits at the top.

    Parameters
    ----------
    model : fitted ALS, or any object with ALS's ``recommend`` (e.g. the baselines here)
    train, test : scipy.sparse matrix, shape (n_users, n_items)
    K : int, default 10
    batch_size : int
        Users recommended for at once.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``ndcg`` (floats) and ``users`` (how many were scored).
    """
    K = check_int("K", K, minimum=1)
    train = check_user_items(train, np.float32, name="train")
    test = check_rows_for(test, *train.shape, np.float32, name="test")
    n_items = train.shape[1]
    users = np.flatnonzero(np.diff(test.indptr))
    test_keys = np.repeat(np.arange(test.shape[0]), np.diff(test.indptr)) * n_items + test.indices
    discount = 1.0 / np.log2(np.arange(K) + 2)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    totals = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0}
    for a in range(0, len(users), batch_size):
        batch = users[a:a + batch_size]
        ids, _ = model.recommend(batch, train[batch], N=K, filter_already_liked_items=True)
        ids = np.asarray(ids).reshape(len(batch), -1)[:, :K]
        keys = batch[:, None] * n_items + ids
        pos = np.minimum(np.searchsorted(test_keys, keys), len(test_keys) - 1)
        hits = (test_keys[pos] == keys) & (ids >= 0)
        n_relevant = np.diff(test.indptr)[batch]
        n_hits = hits.sum(axis=1)
        totals["precision"] += float((n_hits / K).sum())
        totals["recall"] += float((n_hits / n_relevant).sum())
        dcg = hits.astype(np.float64) @ discount[: hits.shape[1]]
        totals["ndcg"] += float((dcg / ideal[np.minimum(n_relevant, K)]).sum())
    n = max(1, len(users))
    return {**{name: value / n for name, value in totals.items()}, "users": len(users)}


class _Baseline:
    """A recommender scored without factors; ``recommend`` follows :meth:`ALS.recommend`."""

    def fit(self, user_items: Any):
        csr = check_user_items(user_items, np.float32)
        self.item_counts_ = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
        self.n_items_ = csr.shape[1]
        return self

    def _scores(self, n_users: int) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, userid, user_items=None, N=10, filter_already_liked_items=True):
        if not hasattr(self, "n_items_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit first")
        ids = np.atleast_1d(np.asarray(userid))
        exclude = None
        if filter_already_liked_items:
            if user_items is None:
                raise ValueError("user_items is required with filter_already_liked_items=True")
            exclude = check_rows_for(user_items, len(ids), self.n_items_, np.float32,
                                     name="user_items")
        N = min(check_int("N", N, minimum=1), self.n_items_)
        pairs = None if exclude is None else csr_pairs(exclude)
        top, scores = top_n(self._scores(len(ids)), N, pairs)
        if np.ndim(userid) == 0:
            keep = top[0] >= 0
            return top[0][keep], scores[0][keep]
        return top, scores


class PopularityRecommender(_Baseline):
    """Recommends the items with the most training interactions (ties: lower id first)."""

    def _scores(self, n_users: int) -> np.ndarray:
        return np.tile(self.item_counts_, (n_users, 1))


class RandomRecommender(_Baseline):
    """Recommends items uniformly at random (seeded by ``random_state``)."""

    def __init__(self, random_state: int | None = 42):
        self.random_state = random_state
        self._rng = np.random.default_rng(random_state)

    def _scores(self, n_users: int) -> np.ndarray:
        return self._rng.random((n_users, self.n_items_))
