"""Top-N selection (``backends.base.top_n``) against a full sort, on both of its paths:
the threshold path for catalogues of a few hundred items and more, and ``argpartition``
where ties make the threshold path's candidates too many; with NumPy, and with a NumPy
that offers only what CuPy offers (the GPU backend's array module)."""


import numpy as np
import pytest

from gpu_als.backends import base
from gpu_als.backends.base import top_n

from .cupy_shaped import cupy_shaped_numpy


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


def top_n_on(xp, S, k, exclude=None):
    """``top_n`` with its arrays in ``xp``'s memory (NumPy's, or the device arrays of the
    CuPy-shaped module: copied over as the GPU backend does), the results on the host."""
    if xp is np:
        return top_n(S, k, exclude)
    exclude = None if exclude is None else tuple(xp.asarray(a) for a in exclude)
    ids, best = top_n(xp.asarray(S), k, exclude, xp=xp)
    return xp.asnumpy(ids), xp.asnumpy(best)


def scores(n, m, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, m)).astype(dtype)


@pytest.mark.parametrize("k", [1, 10, 100, 250])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_path_equals_a_full_sort(k, dtype, monkeypatch):
    S = scores(23, 4 * base._threshold_chunks(k) + 37, seed=k, dtype=dtype)
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
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
                        lambda *a, **kw: calls.append(original(*a, **kw)) or calls[-1])
    expected = full_sort(np.where(_mask(S.shape, rows, cols), -np.inf, S), 10)
    ids, best = top_n(S.copy(), 10, (rows, cols))
    assert calls[0] is not None  # the threshold path answered
    np.testing.assert_array_equal((ids, best), expected)
    assert list(ids[2]) == [0] + list(range(1400, 1409))  # ties: lowest ids, in order
    assert sorted(ids[4, :3]) == [0, 1, 2] and (ids[4, 3:] == -1).all()
    assert np.isneginf(best[4, 3:]).all()


@pytest.mark.parametrize("module", ["numpy", "cupy-shaped"])
def test_one_row_at_a_time_as_the_batch(module, monkeypatch):
    """One query (a service's request) takes the threshold path's 1-D steps: the same
    ids, ties and padding as each row of the batch gives, with exclusions."""
    xp = np if module == "numpy" else cupy_shaped_numpy(device_arrays=True)
    S = np.round(scores(9, 1500, seed=1), 1)
    S[2, 1400:] = S[2, 0] = 5.0  # ties for first place
    excluded = {4: np.arange(3, 1500), 7: np.array([5, 17])}  # row 4 keeps 3 items
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a, **kw: calls.append(original(*a, **kw)) or calls[-1])
    for r in range(len(S)):
        cols = excluded.get(r, np.empty(0, np.int64))
        exclude = (np.zeros(len(cols), np.int64), cols) if len(cols) else None
        row = np.where(_mask((1, S.shape[1]), np.zeros(len(cols), int), cols), -np.inf,
                       S[r:r + 1])
        ids, best = top_n_on(xp, S[r:r + 1].copy(), 10, exclude)
        # the threshold path answered (row 4, mostly -inf, is partitioned instead)
        assert (calls[-1] is None) == (r == 4)
        np.testing.assert_array_equal((ids, best), full_sort(row, 10))
    assert (ids.shape, best.dtype) == ((1, 10), S.dtype)
    few = scores(1, 4 * base._threshold_chunks(10), seed=3)  # 5 eligible columns of 512
    cols = np.setdiff1d(np.arange(few.shape[1]), [7, 90, 91, 300, 511])
    ids, best = top_n_on(xp, few.copy(), 10, (np.zeros(len(cols), np.int64), cols))
    assert calls[-1] is not None  # answered, padded
    few[0, cols] = -np.inf
    np.testing.assert_array_equal((ids, best), full_sort(few, 10))
    assert sorted(ids[0, :5]) == [7, 90, 91, 300, 511] and (ids[0, 5:] == -1).all()


def _mask(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("module", ["numpy", "cupy-shaped"])
def test_rows_of_equal_scores_fall_back_to_partitioning(module, monkeypatch):
    """Zero user factors give a row of equal scores: every item is a candidate, so the
    threshold path steps aside; the tied items that come back are still the lowest ids
    (argpartition alone chose among them as the NumPy release did: NumPy 1.24 returned
    other items than 2.x for a zero user)."""
    xp = np if module == "numpy" else cupy_shaped_numpy(device_arrays=True)
    S = scores(6, 2000, seed=2)
    S[:4] = 0.0
    S[1, 1000:1003] = 1.0  # three above, the other seven of the top 10 tied
    calls = []
    original = base._top_n_above_threshold
    monkeypatch.setattr(base, "_top_n_above_threshold",
                        lambda *a, **kw: calls.append(original(*a, **kw)) or calls[-1])
    ids, best = top_n_on(xp, S.copy(), 10)
    assert calls == [None]
    np.testing.assert_array_equal((ids, best), full_sort(S, 10))
    assert list(ids[1]) == [1000, 1001, 1002, *range(7)]
    for r in range(4):  # one query at a time: the same
        np.testing.assert_array_equal(top_n_on(xp, S[r:r + 1].copy(), 10)[0], ids[r:r + 1])


def test_small_catalogues_and_k_at_least_m_use_partitioning():
    for n, m, k in ((5, 100, 10), (200, 100, 1), (200, 100, 2), (200, 60, 7), (5, 600, 600),
                    (5, 600, 800)):
        S = scores(n, m, seed=m + k)
        kk = min(k, m)
        ids, best = top_n(S.copy(), kk)
        np.testing.assert_array_equal((ids, best), full_sort(S, kk))


def test_a_catalogue_that_is_a_whole_number_of_chunks():
    """m = chunks * width exactly: no remainder chunk (its maximum would be of nothing)."""
    k = 5
    m = base._threshold_chunks(k) * 8
    S = scores(7, m, seed=9)
    np.testing.assert_array_equal(top_n(S.copy(), k), full_sort(S, k))


def test_nothing_eligible_gives_empty_results():
    """k = 0 (every candidate filtered out): one empty row per query, for a batch too."""
    from gpu_als.backends import CPUBackend

    ids, best = CPUBackend().topk(np.ones((3, 4), np.float32), np.ones((6, 4), np.float32), 0)
    assert ids.shape == best.shape == (3, 0) and ids.dtype == np.int64
    assert best.dtype == np.float32  # the scores' dtype of any other result


@pytest.mark.parametrize("cupy_shaped", [False, True])
def test_partitioning_lists_ties_by_id(cupy_shaped):
    """With ties, also at the k-th place, the list is a full sort's: by score, then id."""
    S = np.round(scores(40, 300, seed=3), 1)  # about 60 distinct values: many ties
    S[3, 7] = -np.inf  # excluded before
    xp = cupy_shaped_numpy(device_arrays=True) if cupy_shaped else np
    ids, best = top_n_on(xp, S.copy(), 20)
    np.testing.assert_array_equal((ids, best), full_sort(S, 20))
    tied = best[:, 1:] == best[:, :-1]
    assert tied.sum() > 100 and (best[:, -1] == best[:, -2]).sum() > 10


@pytest.mark.parametrize("m", [30, 3000])  # partitioned; the threshold path's candidates
def test_nan_scores_rank_last_and_are_not_returned(m):
    """Finite factors cannot give NaN scores unless their products overflow; then a NaN
    is ranked as an excluded item, never returned, and the call does not fail."""
    S = scores(3, m, seed=4)
    S[0, :m - 4] = np.nan  # fewer than k others
    S[1, ::2] = np.nan
    ids, best = top_n(S.copy(), 10)
    np.testing.assert_array_equal((ids, best),
                                  full_sort(np.where(np.isnan(S), -np.inf, S), 10))


@pytest.mark.parametrize("k", [1, 10, 100])
def test_the_cupy_path_equals_a_full_sort_without_sorting_rows(k):
    """Catalogues of a few hundred items and more take the threshold path with CuPy too:
    the same answer as a full sort, ties to the lowest id, with no full row sort."""
    xp = cupy_shaped_numpy(device_arrays=True)
    S = np.round(scores(31, 4 * base._threshold_chunks(k) + 5, seed=k), 2)  # ties too
    ids, best = top_n_on(xp, S.copy(), k)
    np.testing.assert_array_equal((ids, best), full_sort(S, k))
    assert xp.full_row_sorts == 0
    rows, cols = np.nonzero(np.random.default_rng(k).random(S.shape) < 0.3)
    ids, best = top_n_on(xp, S.copy(), k, (rows, cols))
    np.testing.assert_array_equal((ids, best), full_sort(
        np.where(_mask(S.shape, rows, cols), -np.inf, S), k))
    S[:] = 0.0  # equal scores throughout: too many candidates, the partitioning fallback
    _, best = top_n_on(xp, S.copy(), k)
    np.testing.assert_array_equal(best, full_sort(S, k)[1])
    assert xp.full_row_sorts == 1


def test_backend_topk_in_blocks_equals_a_full_sort(backend, monkeypatch):
    """``Backend.topk`` scores queries a block of rows at a time (on the CPU several
    blocks at once): the same items and scores in 8 blocks as in one, on every backend."""
    import scipy.sparse as sp

    from gpu_als.backends import get_backend

    engine = get_backend(backend) if isinstance(backend, str) else backend
    rng = np.random.default_rng(7)
    queries, targets = rng.standard_normal((50, 8)), rng.standard_normal((900, 8))
    exclude = sp.random(50, 900, density=0.05, format="csr", random_state=0)
    expected = full_sort(np.where(exclude.toarray() != 0, -np.inf, queries @ targets.T), 10)
    for rows_per_block in (None, 7):
        if rows_per_block:
            monkeypatch.setattr(engine, "topk_block_elements", rows_per_block * 900)
        ids, best = engine.topk(engine.asarray(queries), engine.asarray(targets), 10,
                                exclude=exclude)
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_allclose(best, expected[1], rtol=1e-12)
