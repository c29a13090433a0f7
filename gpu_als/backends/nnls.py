"""Nonnegative least squares for many small systems at once: the ``"nnls"`` solver.

With ``solver="nnls"`` every row's half-step is Spark MLlib's ``nonnegative=True``
problem: the factors ``x`` that minimize the row's share of the loss,
``f(x) = x^T A x / 2 - b^T x``, subject to ``x >= 0``, where ``A`` (k x k, symmetric
positive definite) and ``b`` are the row's system of the exact solver (DESIGN.md section
1). It is solved exactly, by block principal pivoting (Judice & Pires 1994; Kim & Park,
"Fast nonnegative matrix factorization", SIAM J. Sci. Comput. 2011, algorithm 2):

* the factors are split into a free set ``F`` and a set ``G`` held at 0; ``x_F`` solves
  ``A_FF x_F = b_F`` and ``y = A x - b`` is the gradient, 0 on ``F``;
* ``x`` is the solution when it and ``y`` are nonnegative (then ``x_j y_j = 0`` for
  every j: the KKT conditions of the convex problem, whose minimizer is unique);
* otherwise every infeasible variable (``x_j < 0`` on ``F``, ``y_j < 0`` on ``G``)
  changes sides at once, which usually ends in a few rounds; where that does not lower
  the number of infeasible variables for :data:`BACKUP_TRIES` rounds in a row, only the
  last of them changes sides (the backup rule that makes the method finite).

Each round solves every unfinished row's system restricted to its free set, in float64:
the rows grouped by the size of their free sets, a batched solve per group in that size
(:func:`_solve_free`). It is written once against the array module: NumPy on the CPU,
CuPy on the GPU, where a round reads two things on the host (each a wait for the device):
the groups' bounds and sizes, in one copy, and the rows left unfinished. A row still
unfinished after
:func:`max_rounds` rounds (rounding can make the exchanges cycle) is solved on the host by
SciPy's Lawson-Hanson ``nnls``, on the least-squares form of the same problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize

#: A variable is infeasible when it is below 0 by more than this share of its row's
#: scale (the largest ``|x_j|`` for ``x``; the largest of ``|b_j|`` and ``|(A x)_j|``
#: for ``y``): float64 rounding leaves ``x_j`` or ``y_j`` a little below 0 where the
#: exact value is 0, and such a variable may stay on either side (then it is set to 0).
TOLERANCE = 1e-9
#: Rounds in a row that may exchange every infeasible variable without lowering their
#: number before the backup rule exchanges one at a time (Kim & Park's ``p``).
BACKUP_TRIES = 3


def max_rounds(k: int) -> int:
    """Rounds of block principal pivoting before a row is handed to SciPy's ``nnls``:
    the usual few, then room for the backup rule to exchange its variables one at a time
    (each of them a few times)."""
    return 3 * k + 30


def nnls_rows(A: Any, b: Any, *, xp: Any, solve: Callable[[Any, Any], Any],
              to_numpy: Callable[[Any], np.ndarray], asarray: Callable[[Any], Any],
              start: Any = None, rounds: int | None = None) -> Any:
    """The solutions ``x`` (n x k, float64) of ``min x^T A_j x / 2 - b_j^T x`` subject
    to ``x >= 0``, one per row ``j``.

    Parameters
    ----------
    A : array, shape (n, k, k)
        Symmetric positive definite systems (both triangles filled).
    b : array, shape (n, k)
    xp : module
        The array module of ``A`` and ``b`` (numpy or cupy).
    solve : callable
        ``solve(M, c)``: the solutions of the batch ``M[j] z = c[j]`` (float64), NaN for
        a system it cannot solve.
    to_numpy, asarray : callable
        Copies to the host and back (for the rows left to SciPy).
    start : array, shape (n, k), optional
        A guess of the solutions (the factors now): the variables free at first are
        where it is positive, or in a row without any, all of them. Only the number of
        rounds depends on it.
    rounds : int, optional
        Rounds before SciPy takes the rows left (default :func:`max_rounds`).

    Returns
    -------
    array, shape (n, k), float64
        Nonnegative; NaN in a row whose system holds NaN or infinite values, or could
        not be solved.
    """
    A = A.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    n, k = b.shape
    x = xp.zeros((n, k), np.float64)
    # the unfinished rows: their index in the batch, systems, free sets, and the backup
    # rule's state (the fewest infeasible variables seen, the tries left)
    finite = xp.isfinite(A).all(axis=(1, 2)) & xp.isfinite(b).all(axis=1)
    x[~finite] = np.nan  # (a row of overflowed factors: NaN, which the fit reports)
    todo = xp.flatnonzero(finite)
    # the first free sets: where the start is positive (the previous iteration's
    # factors: few change sides from one iteration to the next); else every variable (the
    # first round then solves the unconstrained system)
    free = xp.ones((n, k), dtype=bool) if start is None else start > 0
    free[~free.any(axis=1)] = True
    if len(todo) < n:
        A, b, free = A[todo], b[todo], free[todo]
    fewest = xp.full(len(todo), k + 1, np.int64)
    tries = xp.full(len(todo), BACKUP_TRIES, np.int64)
    columns = xp.arange(k)
    for _ in range(max_rounds(k) if rounds is None else rounds):
        if len(todo) == 0:
            return x
        x_t, infeasible = _round(A, b, free, xp, solve, to_numpy)
        count = infeasible.sum(axis=1)
        done = count == 0
        # (within TOLERANCE below 0: 0; by where, not by the finished rows' index, which
        # would be one more read on the host)
        x[todo] = xp.where(done[:, None], xp.maximum(x_t, 0), x[todo])
        unfinished = xp.flatnonzero(~done)
        if len(unfinished) < len(todo):
            todo, A, b, free, fewest, tries, count, infeasible = (
                a[unfinished] for a in (todo, A, b, free, fewest, tries, count, infeasible))
        fewer = count < fewest
        fewest = xp.where(fewer, count, fewest)
        every = fewer | (tries >= 1)  # exchange every infeasible variable, or the last
        tries = xp.where(fewer, BACKUP_TRIES, xp.where(every, tries - 1, tries))
        last = k - 1 - xp.argmax(infeasible[:, ::-1].astype(np.int8), axis=1)
        free ^= xp.where(every[:, None], infeasible, columns[None, :] == last[:, None])
    if len(todo):
        x[todo] = asarray(_scipy_nnls(to_numpy(A), to_numpy(b)))
    return x


def _round(A, b, free, xp, solve, to_numpy):
    """One round for the unfinished rows: ``x`` on each row's free set
    (:func:`_solve_free`), and which variables are infeasible."""
    x = _solve_free(A, b, free, xp, solve, to_numpy)
    # (NumPy's einsum: 1.8x faster than its batched matmul for these matrix-vector products)
    Ax = np.einsum("jab,jb->ja", A, x) if xp is np else (A @ x[:, :, None])[:, :, 0]
    y = Ax - b
    x_scale = xp.abs(x).max(axis=1, keepdims=True)
    y_scale = xp.maximum(xp.abs(b).max(axis=1, keepdims=True),
                         xp.abs(Ax).max(axis=1, keepdims=True))
    infeasible = xp.where(free, x < -TOLERANCE * x_scale, y < -TOLERANCE * y_scale)
    return x, infeasible


def _solve_free(A, b, free, xp, solve, to_numpy):
    """Each row's ``A_FF x_F = b_F`` on its free set ``F`` (0 elsewhere). Most factors of
    a nonnegative fit are 0, so the systems are solved in the size of their free sets:
    the rows are grouped by that size (up to 8, 16, 32, ... variables), and each group's
    free variables are gathered first, a row's fewer padded with the identity: on
    MovieLens 100K's positives, a fit took 2.0-2.2x less time than with every row's
    system solved in k dimensions, its held variables replaced by the identity (k = 64
    and 128, two runs of each side by side, CPU backend). The groups are runs of the
    rows sorted by that size, whose bounds and largest sizes come to the host in one
    copy (``to_numpy``)."""
    n, k = b.shape
    sizes = free.sum(axis=1)
    # each row's free variables first, in order: a stable sort of "held at 0"
    order = xp.argsort((~free).astype(np.int8), axis=1) if xp is not np else \
        np.argsort(~free, axis=1, kind="stable")
    bounds = [0]  # group g: the rows of bounds[g] < size <= bounds[g + 1]
    while bounds[-1] < k:
        bounds.append(min(k, max(8, 2 * bounds[-1])))
    by_size = xp.argsort(sizes)
    sorted_sizes = sizes[by_size]
    # the groups' first rows in by_size (and the end), and each group's largest size
    edges = xp.searchsorted(sorted_sizes, xp.asarray(bounds, dtype=sizes.dtype),
                            side="right")
    largest = sorted_sizes[xp.maximum(edges[1:] - 1, 0)]
    groups = to_numpy(xp.concatenate((edges, largest)))
    edges, largest = groups[:len(bounds)], groups[len(bounds):]
    x = xp.zeros((n, k), np.float64)
    for g in range(len(bounds) - 1):
        if edges[g + 1] == edges[g]:
            continue
        group, m = by_size[edges[g]:edges[g + 1]], int(largest[g])
        rows, first = group[:, None], order[group, :m]
        used = xp.arange(m)[None, :] < sizes[group, None]  # a free variable, not padding
        # A[j][first][:, first] by flat positions (2.6x faster than by three index arrays
        # in NumPy)
        M = xp.take(A, (rows * k * k)[:, :, None] + first[:, :, None] * k + first[:, None, :])
        M = xp.where(used[:, :, None] & used[:, None, :], M, 0.0)
        diagonal = xp.arange(m)
        M[:, diagonal, diagonal] = xp.where(used, M[:, diagonal, diagonal], 1.0)
        z = solve(M, xp.where(used, b[rows, first], 0.0))
        x[rows, first] = xp.where(used, z, 0.0)  # (padding: a held variable's 0)
    return x


def _scipy_nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows by SciPy's ``nnls`` (Lawson & Hanson): with ``A = L L^T``, ``f(x)`` is
    ``|L^T x - L^-1 b|^2 / 2`` up to a constant. NaN for a row that is not positive
    definite."""
    x = np.full(b.shape, np.nan)
    for j in range(len(b)):
        try:
            L = np.linalg.cholesky(A[j])
        except np.linalg.LinAlgError:
            continue
        x[j] = scipy.optimize.nnls(L.T, scipy.linalg.solve_triangular(L, b[j], lower=True))[0]
    return x
