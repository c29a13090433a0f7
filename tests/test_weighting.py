"""BM25 and TF-IDF weighting against the implicit library's functions of the same names."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als.weighting import bm25_weight, tfidf_weight

from .conftest import skip_or_fail


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    X = sp.random(120, 80, density=0.1, format="coo", random_state=1)
    X.data = np.ceil(rng.pareto(1.2, X.nnz) * 3)  # heavy-tailed play counts, >= 1
    return X


@pytest.fixture(scope="module")
def implicit_nn():
    try:
        from implicit import nearest_neighbours
    except ImportError as exc:
        skip_or_fail(f"implicit is not installed: {exc}")
    return nearest_neighbours


@pytest.mark.parametrize("K1, B", [(100, 0.8), (1.2, 0.75), (5, 0.0), (5, 1.0)])
def test_bm25_equals_implicits(counts, implicit_nn, K1, B):
    ours = bm25_weight(counts, K1=K1, B=B)
    theirs = implicit_nn.bm25_weight(counts, K1=K1, B=B).tocsr()
    assert isinstance(ours, sp.csr_matrix) and ours.shape == counts.shape
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-12)


def test_tfidf_equals_implicits(counts, implicit_nn):
    ours = tfidf_weight(counts.tocsc())
    np.testing.assert_allclose(ours.toarray(),
                               implicit_nn.tfidf_weight(counts).toarray(), rtol=1e-12)


def test_bm25_by_hand_and_the_input_is_left_alone():
    X = sp.csr_matrix(np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0],
                                [0.0, 0.0, 4.0]]))
    before = X.copy()
    W = bm25_weight(X, K1=2.0, B=0.5)
    idf = np.log(4) - np.log1p(np.array([1.0, 1.0, 2.0]))  # column 2 in two rows
    norm = 0.5 + 0.5 * np.array([4.0, 2.0, 0.0, 4.0]) / 2.5  # row sums, their mean 2.5
    expected = np.zeros((4, 3))
    for row, col in ((0, 0), (0, 2), (1, 1), (3, 2)):
        x = X[row, col]
        expected[row, col] = x * 3 / (2 * norm[row] + x) * idf[col]
    assert (expected != 0).sum() == 4
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-12)
    assert (X != before).nnz == 0


def test_k1_zero_counts_presence_only():
    """Every stored value > 0, a fraction too, weighs its column's idf; a stored 0 (whose
    saturation K1 * norm + x is then 0) stays 0."""
    X = sp.csr_matrix(([2.0, 0.0, 5.0, 0.5], ([0, 0, 1, 2], [0, 1, 1, 0])), shape=(4, 2))
    W = bm25_weight(X, K1=0.0, B=0.5)
    idf = np.log(4) - np.log1p(np.array([2.0, 2.0]))
    assert (idf != 0).all()
    np.testing.assert_allclose(W.toarray(), [[idf[0], 0.0], [0.0, idf[1]], [idf[0], 0.0],
                                             [0.0, 0.0]])


def test_bad_input_is_refused():
    X = sp.csr_matrix(np.array([[1.0, -0.5]]))  # any value below 0
    with pytest.raises(ValueError, match="negative values"):
        bm25_weight(X)
    with pytest.raises(ValueError, match="only zeros"):
        tfidf_weight(sp.csr_matrix(([0.0], ([0], [0])), shape=(2, 2)))
    with pytest.raises(ValueError, match="B=1.5"):
        bm25_weight(sp.eye(3, format="csr"), B=1.5)
    with pytest.raises(ValueError, match="K1=-1.0: must be >= 0"):
        bm25_weight(sp.eye(3, format="csr"), K1=-1)
    with pytest.raises(TypeError, match="K1 must be a real number, got str '2'"):
        bm25_weight(sp.eye(3, format="csr"), K1="2")
    with pytest.raises(TypeError):
        bm25_weight(np.ones((3, 3)))


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("value, K1, shown", [(1e308, 100.0, "values up to 1e+308, K1=100"),
                                              (1e300, 1e10, "values up to 1e+300, K1=1e+10")])
def test_bm25_weights_that_overflow_are_refused(value, K1, shown):
    """A row whose sum overflows (it gave weights of 0) or a product x (K1 + 1) that does
    (NaN): refused, without NumPy's overflow warnings. Just below, the weights are right."""
    def X(v):
        return sp.csr_matrix(np.array([[v, v, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0],
                                       [1.0, 0, 0, 0]]))

    with pytest.raises(ValueError, match=re.escape(f"X's BM25 weights overflow float64 "
                                                   f"({shown}): scale the counts down")):
        bm25_weight(X(value), K1=K1)
    big, small = bm25_weight(X(1e300)), bm25_weight(X(1e30))
    np.testing.assert_allclose(big.data, small.data, rtol=1e-12)  # (K1 saturates at once)
    assert np.isfinite(big.data).all() and big.data.min() > 0


def test_columns_in_almost_every_row_are_warned_of(implicit_nn):
    """A column stored in all N rows gets idf log(N / (N + 1)) < 0, in N - 1 rows 0: its
    weights then read as dislikes or as nothing to ALS. The values stay implicit's; the
    warning names how many columns and one of them."""
    X = sp.csr_matrix(np.array([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 3.0, 2.0],
                                [0.0, 4.0, 5.0, 1.0]]))  # columns 1 and 3 in all, 2 in two
    for weight in (bm25_weight, tfidf_weight):
        with pytest.warns(UserWarning, match=r"^3 column\(s\) of X \(e.g. column 1\) are stored "
                                             r"in all rows or all but one") as caught:
            ours = weight(X)
        assert len(caught) == 1 and caught[0].filename == __file__
        theirs = getattr(implicit_nn, weight.__name__)(X)
        np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-12)
        assert (ours[:, 1].data < 0).all() and (ours[:, 3].data < 0).all()
        assert np.abs(ours[:, 2].data).max() < 1e-12  # (log 3 - log 3)
    spread = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))  # df 1 of 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (tfidf_weight(spread).data > 0).all()
