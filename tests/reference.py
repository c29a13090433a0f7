"""Slow, obvious references the backends are tested against."""

import numpy as np
import scipy.sparse as sp


def confidence(r, alpha, kind="linear", epsilon=1.0):
    magnitude = np.abs(r)
    if kind == "log":
        magnitude = np.log1p(magnitude / epsilon)
    return 1 + alpha * magnitude


def row_system(R, F, FtF, u, regularization, *, feedback="implicit", alpha=1.0,
               confidence_kind="linear", epsilon=1.0, scaled=False):
    """Row ``u``'s ridge system ``(A, b)`` of DESIGN.md section 1, formed densely; None for
    an empty row. ``R``: a float64 CSR matrix, ``F``: float64 factors, ``FtF``: ``F^T F``
    (as :func:`_float64_problem` gives them, once for every row). ``scaled``: implicit
    feedback's penalty times the row's number of positive entries (``scale_regularization``,
    Spark's count), and None, as for an empty row, where it has none (``b = 0``: the
    solution is 0)."""
    k = F.shape[1]
    cols = R.indices[R.indptr[u]:R.indptr[u + 1]]
    r = R.data[R.indptr[u]:R.indptr[u + 1]]
    if len(cols) == 0:
        return None
    Fu = F[cols]
    if feedback == "implicit":
        c = confidence(r, alpha, confidence_kind, epsilon)
        p = (r > 0).astype(np.float64)
        positive = int((r > 0).sum())
        if scaled and positive == 0:
            return None
        penalty = regularization * (positive if scaled else 1)
        return FtF + Fu.T @ ((c - 1)[:, None] * Fu) + penalty * np.eye(k), Fu.T @ (c * p)
    return Fu.T @ Fu + regularization * len(cols) * np.eye(k), Fu.T @ r


def _float64_problem(R, F):
    """``R`` as a float64 CSR matrix, ``F`` as float64 factors, and ``F^T F``."""
    R, F = sp.csr_matrix(R, dtype=np.float64), np.asarray(F, np.float64)
    return R, F, F.T @ F


def solve_rows_loop(R, F, regularization, **conf):
    """Every row's ridge system of DESIGN.md section 1, one np.linalg.solve per row (float64);
    ``conf``: feedback, alpha, confidence_kind, epsilon as :func:`row_system` takes them."""
    R, F, FtF = _float64_problem(R, F)
    out = np.zeros((R.shape[0], F.shape[1]))
    for u in range(R.shape[0]):
        system = row_system(R, F, FtF, u, regularization, **conf)
        if system is not None:
            out[u] = np.linalg.solve(*system)
    return out


def nnls_rows_loop(R, F, regularization, **conf):
    """Every row's ridge system of DESIGN.md section 1 solved with ``x >= 0``, one
    ``scipy.optimize.nnls`` (Lawson and Hanson) per row on its least-squares form: with
    ``A = L L^T``, ``x^T A x / 2 - b^T x = |L^T x - L^-1 b|^2 / 2 - const`` (float64)."""
    import scipy.linalg
    import scipy.optimize

    R, F, FtF = _float64_problem(R, F)
    out = np.zeros((R.shape[0], F.shape[1]))
    for u in range(R.shape[0]):
        system = row_system(R, F, FtF, u, regularization, **conf)
        if system is not None:
            L = np.linalg.cholesky(system[0])
            target = scipy.linalg.solve_triangular(L, system[1], lower=True)
            out[u] = scipy.optimize.nnls(L.T, target)[0]
    return out


def cg_rows_loop(R, F, X0, regularization, steps, **conf):
    """``steps`` textbook conjugate-gradient steps on every row's system from its row of
    ``X0`` (Hestenes and Stiefel, 1952; float64); an empty row's solution is 0."""
    return _pcg_rows(R, F, X0, regularization, steps, None, **conf)


def pcg_rows_loop(R, F, X0, regularization, steps, *, feedback="implicit", **conf):
    """``steps`` textbook preconditioned conjugate-gradient steps on every row's system from
    its row of ``X0``, the preconditioner ``M = F^T F + regularization * I`` applied by
    ``np.linalg.solve`` at every step (float64); with ``scaled=True`` in ``conf`` (the
    scaled penalty), each row's own ``M_u = F^T F + regularization * n_u * I``, ``n_u``
    its positive entries; an empty row's solution is 0. Explicit feedback: no
    preconditioner (the rows' shared part, ``regularization * n_u * I``, is a multiple of
    I, and a multiple of M changes no step), i.e. :func:`cg_rows_loop`."""
    M = None
    if feedback == "implicit":
        F64 = np.asarray(F, np.float64)
        FtF, eye = F64.T @ F64, np.eye(F64.shape[1])
        if conf.get("scaled"):
            positives = (sp.csr_matrix(R) > 0).sum(axis=1).A1
            M = lambda u: FtF + regularization * positives[u] * eye  # noqa: E731
        else:
            M = lambda u: FtF + regularization * eye  # noqa: E731
    return _pcg_rows(R, F, X0, regularization, steps, M, feedback=feedback, **conf)


def _pcg_rows(R, F, X0, regularization, steps, M, **conf):
    """The loop of both: ``z = M(u)^-1 r`` (``z = r`` without ``M``, where the steps are
    CG's)."""
    R, F, FtF = _float64_problem(R, F)
    out = np.zeros((R.shape[0], F.shape[1]))
    for u in range(R.shape[0]):
        system = row_system(R, F, FtF, u, regularization, **conf)
        if system is None:
            continue
        A, b = system
        Mu = None if M is None else M(u)
        x = np.array(X0[u], dtype=np.float64)
        r = b - A @ x
        z = r if Mu is None else np.linalg.solve(Mu, r)
        p = z.copy()
        for _ in range(steps):
            Ap = A @ p
            if p @ Ap == 0:  # r = 0: solved
                break
            step = (r @ z) / (p @ Ap)
            x += step * p
            r_next = r - step * Ap
            z_next = r_next if Mu is None else np.linalg.solve(Mu, r_next)
            p = z_next + (r_next @ z_next) / (r @ z) * p
            r, z = r_next, z_next
        out[u] = x
    return out


def loss_dense(R, X, Y, regularization, *, feedback="implicit", alpha=1.0, scaled=False):
    """The loss of DESIGN.md section 1 from a dense R (small inputs only); ``scaled``:
    implicit feedback's penalty weighted by each row's and column's positive entries (as
    explicit feedback's by their entries)."""
    D = np.asarray(sp.csr_matrix(R).toarray(), dtype=np.float64)
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    S = X @ Y.T
    stored = sp.csr_matrix(R).toarray() != 0
    if feedback == "implicit":
        C = np.where(stored, confidence(D, alpha), 1.0)
        P = (D > 0).astype(np.float64)
    counted = stored & (D > 0) if feedback == "implicit" else stored
    n_u = counted.sum(axis=1)
    n_i = counted.sum(axis=0)
    weighted = regularization * (n_u @ (X**2).sum(1) + n_i @ (Y**2).sum(1))
    if feedback == "implicit":
        plain = regularization * ((X**2).sum() + (Y**2).sum())
        return float((C * (P - S) ** 2).sum() + (weighted if scaled else plain))
    return float((((D - S) ** 2) * stored).sum() + weighted)


def assert_dot_products_close(got, U, V):
    """``got[i]`` is the dot product of rows ``U[i]`` and ``V[i]`` up to the rounding of a
    sum in ``got``'s dtype, whatever the order of the sum (a GPU's BLAS adds in another
    order than NumPy, so a relative tolerance fails on a product near 0): within
    ``(k + 1) eps sum_j |U_ij V_ij|`` of the float64 product, twice Higham's bound for a sum
    of k products of exact inputs."""
    got = np.asarray(got)
    U, V = np.broadcast_arrays(np.asarray(U, np.float64), np.asarray(V, np.float64))
    exact = (U * V).sum(axis=1)
    bound = (U.shape[1] + 1) * np.finfo(got.dtype).eps * (np.abs(U) * np.abs(V)).sum(axis=1)
    error = np.abs(got.astype(np.float64) - exact)
    assert got.shape == exact.shape and np.all(error <= bound), (
        f"dot products off by up to {error.max():.3g} (allowed {bound.max():.3g}) "
        f"at {np.flatnonzero(error > bound)[:10]}")
