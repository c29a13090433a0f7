"""Reweighting interaction counts before training: BM25 and TF-IDF.

Raw counts (plays, clicks) are dominated by a few heavy rows and popular columns; the
information-retrieval weightings damp both. The usual recipe for play counts (as in the
implicit library's Last.fm example):

    from gpu_als.weighting import bm25_weight

    weighted = bm25_weight(item_user_plays, K1=100, B=0.8)   # items as the documents
    model = ALS(factors=64).fit(weighted.T.tocsr())

The rows are the documents and the columns the terms, as in implicit's functions of the
same names, whose values these reproduce (tested against implicit 0.7.3): weight the
items x users matrix to damp heavy items and ubiquitous users, or the users x items
matrix for the other way round. Each returns a new CSR matrix; the input is unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from .data import check_float, check_user_items, user_stacklevel

__all__ = ["bm25_weight", "tfidf_weight"]


def _checked(X: Any) -> sp.csr_matrix:
    X = check_user_items(X, np.float64, name="X")
    if (X.data < 0).any():
        raise ValueError("X holds negative values: BM25 and TF-IDF weight counts")
    if not X.data.any():
        raise ValueError("X holds only zeros: nothing to weight")
    return X


def _idf(X: sp.csr_matrix) -> np.ndarray:
    """log(N / (1 + df)) per column: N rows, df the rows in which the column is stored;
    a warning names the columns stored in N - 1 or N rows, whose idf is 0 or negative."""
    df = np.bincount(X.indices, minlength=X.shape[1])
    idf = np.log(X.shape[0]) - np.log1p(df)
    if (everywhere := np.flatnonzero(df >= X.shape[0] - 1)).size:
        warnings.warn(f"{everywhere.size} column(s) of X (e.g. column {everywhere[0]}) are "
                      f"stored in all rows or all but one: their idf, log(N / (1 + df)), is "
                      f"0 or negative, and so are their weights, which ALS reads as no "
                      f"interaction or as a dislike (the implicit library's functions give "
                      f"the same values)", UserWarning, stacklevel=user_stacklevel())
    return idf


def _rows(X: sp.csr_matrix) -> np.ndarray:
    """The row of each stored entry."""
    return np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))


def bm25_weight(X: Any, K1: float = 100.0, B: float = 0.8) -> sp.csr_matrix:
    """Okapi BM25 weights of the stored entries of ``X`` (rows: documents, columns: terms).

    Entry ``x`` of row ``d`` and column ``t`` becomes
    ``x (K1 + 1) / (K1 ((1 - B) + B L_d / mean L) + x) * idf_t``, where ``L_d`` is the
    row's sum and ``idf_t = log(N) - log(1 + df_t)`` with ``N`` rows and ``df_t`` the rows
    that store column ``t``.

    Parameters
    ----------
    X : scipy.sparse matrix, shape (n_documents, n_terms)
        Non-negative counts; duplicate entries are summed.
    K1 : float, default 100
        Saturation: how fast repeated counts stop adding weight (larger: slower).
    B : float in [0, 1], default 0.8
        How much a row's total is normalised away (0: not at all).

    Returns
    -------
    scipy.sparse.csr_matrix of float64, the shape of ``X``
    """
    K1 = check_float("K1", K1)
    B = check_float("B", B)
    if B > 1:
        raise ValueError(f"B={B}: expected a value between 0 and 1")
    X = _checked(X)
    x = X.data
    with np.errstate(over="ignore", invalid="ignore"):  # (overflow: refused below)
        lengths = np.asarray(X.sum(axis=1)).ravel()
        length_norm = (1.0 - B) + B * lengths / lengths.mean()
        saturation = K1 * length_norm[_rows(X)] + x  # 0 only for a stored 0 with K1 = 0
        tf = np.divide(x * (K1 + 1.0), saturation, out=np.zeros_like(x),
                       where=saturation > 0)
    if not (np.isfinite(saturation).all() and np.isfinite(tf).all()):
        # (it warned of NumPy's overflow, and gave NaN, or 0 for a row whose sum overflowed)
        raise ValueError(f"X's BM25 weights overflow float64 (values up to {x.max():.3g}, "
                         f"K1={K1:g}): scale the counts down")
    X.data = tf * _idf(X)[X.indices]
    return X


def tfidf_weight(X: Any) -> sp.csr_matrix:
    """TF-IDF weights of the stored entries of ``X`` (rows: documents, columns: terms):
    ``sqrt(x) * idf_t``, with ``idf_t`` as in :func:`bm25_weight`.

    Parameters
    ----------
    X : scipy.sparse matrix, shape (n_documents, n_terms)
        Non-negative counts; duplicate entries are summed.

    Returns
    -------
    scipy.sparse.csr_matrix of float64, the shape of ``X``
    """
    X = _checked(X)
    X.data = np.sqrt(X.data) * _idf(X)[X.indices]
    return X
