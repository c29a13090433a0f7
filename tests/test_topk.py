"""Top-N selection (``backends.base.top_n``) against a full sort, on both of its NumPy
paths: the threshold path for catalogues of a few hundred items and more, and
``argpartition`` where ties make the threshold path's candidates too many."""

import numpy as np
import pytest

from gpu_als.backends import base
from gpu_als.backends.base import top_n


def full_sort(scores, k):
    """Each row's k best columns by a full sort: score descending, then column id."""
    n, m = scores.shape
    ids = np.full((n, k), -1, np.int64)
    best = np.full((n, k), -np.inf, scores.dtype)
    for r in range(n):
        order = np.lexsort((np.arange(m), -scores[r]))[:k]
        order = order[scores[r, order] > -np.inf]
        ids[r, :len(order)], best[r, :len(order)] = order, scores[r, order]
    return ids, best


def scores(n, m, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, m)).astype(dtype)


@pytest.mark.parametrize("k", [1, 10, 100, 250])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_path_equals_a_full_sort(k, dtype, monkeypatch):
    S = scores(23, 4 * base._threshold_chunks(k) + 37, seed=k, dtype=dtype)
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a: calls.append(1) or original(*a))
    ids, best = top_n(S.copy(), k)
    assert calls and best.dtype == dtype
    np.testing.assert_array_equal((ids, best), full_sort(S, k))


def test_exclusions_ties_and_short_rows(monkeypatch):
    S = np.round(scores(9, 1500, seed=1), 1)  # about 60 distinct values: many ties
    S[2] = np.minimum(S[2], 3.0)
    S[2, 1400:] = S[2, 0] = 5.0  # 101 columns tied for first place
    rows = np.r_[np.full(1497, 4), np.arange(9)]  # row 4 keeps 3 items; k = 10 pads it
    cols = np.r_[np.arange(3, 1500), np.full(9, 5)]  # column 5 excluded everywhere
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a: calls.append(original(*a)) or calls[-1])
    expected = full_sort(np.where(_mask(S.shape, rows, cols), -np.inf, S), 10)
    ids, best = top_n(S.copy(), 10, (rows, cols))
    assert calls[0] is not None  # the threshold path answered
    np.testing.assert_array_equal((ids, best), expected)
    assert list(ids[2]) == [0] + list(range(1400, 1409))  # ties: lowest ids, in order
    assert sorted(ids[4, :3]) == [0, 1, 2] and (ids[4, 3:] == -1).all()
    assert np.isneginf(best[4, 3:]).all()


def _mask(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_rows_of_equal_scores_fall_back_to_partitioning(monkeypatch):
    """Zero user factors give a row of equal scores: every item is a candidate, so the
    threshold path steps aside; which tied items come back is then unspecified."""
    S = scores(6, 2000, seed=2)
    S[:4] = 0.0
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a: calls.append(original(*a)) or calls[-1])
    ids, best = top_n(S.copy(), 10)
    assert calls == [None]
    expected_ids, expected_best = full_sort(S, 10)
    np.testing.assert_array_equal(best, expected_best)
    np.testing.assert_array_equal(ids[4:], expected_ids[4:])
    assert all(len(set(row)) == 10 for row in ids[:4]) and (ids >= 0).all()


def test_small_catalogues_and_k_at_least_m_use_partitioning():
    for m, k in ((100, 10), (600, 600), (600, 800)):
        S = scores(5, m, seed=m)
        kk = min(k, m)
        ids, best = top_n(S.copy(), kk)
        np.testing.assert_array_equal((ids, best), full_sort(S, kk))
