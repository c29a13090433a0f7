"""Slow, obvious references the backends are tested against."""

import numpy as np
import scipy.sparse as sp


def confidence(r, alpha, kind="linear", epsilon=1.0):
    magnitude = np.abs(r)
    if kind == "log":
        magnitude = np.log1p(magnitude / epsilon)
    return 1 + alpha * magnitude


def solve_rows_loop(R, F, regularization, *, feedback="implicit", alpha=1.0,
                    confidence_kind="linear", epsilon=1.0):
    """Every row's ridge system of DESIGN.md section 1, one np.linalg.solve per row (float64)."""
    R = sp.csr_matrix(R, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    k = F.shape[1]
    out = np.zeros((R.shape[0], k))
    for u in range(R.shape[0]):
        cols = R.indices[R.indptr[u]:R.indptr[u + 1]]
        r = R.data[R.indptr[u]:R.indptr[u + 1]]
        if len(cols) == 0:
            continue
        Fu = F[cols]
        if feedback == "implicit":
            c = confidence(r, alpha, confidence_kind, epsilon)
            p = (r > 0).astype(np.float64)
            A = F.T @ F + Fu.T @ ((c - 1)[:, None] * Fu) + regularization * np.eye(k)
            b = Fu.T @ (c * p)
        else:
            A = Fu.T @ Fu + regularization * len(cols) * np.eye(k)
            b = Fu.T @ r
        out[u] = np.linalg.solve(A, b)
    return out


def loss_dense(R, X, Y, regularization, *, feedback="implicit", alpha=1.0):
    """The loss of DESIGN.md section 1 from a dense R (small inputs only)."""
    D = np.asarray(sp.csr_matrix(R).toarray(), dtype=np.float64)
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    S = X @ Y.T
    stored = sp.csr_matrix(R).toarray() != 0
    if feedback == "implicit":
        C = np.where(stored, confidence(D, alpha), 1.0)
        P = (D > 0).astype(np.float64)
        return float((C * (P - S) ** 2).sum() + regularization * ((X**2).sum() + (Y**2).sum()))
    n_u = stored.sum(axis=1)
    n_i = stored.sum(axis=0)
    return float((((D - S) ** 2) * stored).sum()
                 + regularization * (n_u @ (X**2).sum(1) + n_i @ (Y**2).sum(1)))
