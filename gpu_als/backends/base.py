"""The backend contract (DESIGN.md section 3), and what every backend shares.

``model.py`` drives the alternation; a backend supplies array primitives, each taking and
returning arrays of its own kind (NumPy for ``cpu``, CuPy for ``gpu``). What can be written
once against the array module ``xp`` (the Gram matrix, assembling the loss, top-N
selection) lives here; a backend implements only ``solve_rows`` and ``stored_loss``, and
overrides the array conversions where its arrays are not NumPy's.

Notation: ``rows`` is a :class:`gpu_als.data.WeightedRows` (the CSR of R for the user
half-step, of R^T for the item half-step), ``F`` the fixed side's factors (n_cols x k),
``FtF = F^T F`` (k x k), ``out`` the factors being solved for (n_rows x k).
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..data import WeightedRows, to_host

#: The solvers of :meth:`Backend.solve_rows` that take CG steps from the current factors
#: (a warm start) rather than solve.
ITERATIVE_SOLVERS = ("cg", "pcg")
#: The solvers of :meth:`Backend.solve_rows` that read the current factors in ``out``:
#: CG's steps start from them, and NNLS's first free sets are where they are positive.
STARTED_SOLVERS = (*ITERATIVE_SOLVERS, "nnls")


def regularized_gram(FtF: np.ndarray, regularization: float, n_fixed: int):
    """``B = F^T F + regularization * I`` (float64, on the host) and its lower Cholesky
    factor ``C`` (``B = C C^T``); a ValueError that says why when ``B`` is singular (the
    CPU backend's check of each implicit half-step, and the model's of every backend's
    with ``regularization=0``)."""
    k = FtF.shape[0]
    B = FtF + regularization * np.eye(k)
    try:
        return B, np.linalg.cholesky(B)
    except np.linalg.LinAlgError:
        # > 0 and still singular: tiny against the factors' scale (grown large)
        what, fix = ("singular", "use regularization > 0") if regularization == 0 else \
            ("numerically singular", "use a larger regularization")
        few = f" or factors <= {n_fixed}" if n_fixed < k else ""
        raise ValueError(
            f"regularization={regularization}: Y^T Y + regularization * I is {what} "
            f"(factors={k} with {n_fixed} fixed-side rows); {fix}{few}"
        ) from None



def rotated(F: Any, Q: Any) -> Any:
    """The rows of ``F`` in the basis ``Q`` (``F Q``, computed in float64), in ``F``'s
    dtype: NumPy or CuPy arrays (the scaled penalty's eigenbasis, and back by ``Q^T``)."""
    return (F.astype(np.float64) @ Q).astype(F.dtype, copy=False)


class PhaseTimer:
    """Seconds spent in each named phase of ``solve_rows`` (see :meth:`Backend.profile`).

    Phases: ``"shared"`` (the part common to every row: ``FtF + lambda I`` and, on the CPU,
    its whitening), ``"gram_build"`` (each row's weighted Gram matrix and right-hand side),
    ``"solve"`` (the factorizations and triangular solves), ``"fused"`` (the GPU kernel that
    does build and solve in one pass), ``"woodbury"`` (the GPU's short rows, solved in
    their own space), ``"cg"`` (conjugate-gradient steps) and ``"cg_long"`` (the GPU's CG
    steps on its long rows, spread over their segments).
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] += seconds


class Backend(ABC):
    """Array primitives for one kind of device."""

    #: Short name shown to users: "cpu" or "gpu".
    name: str = ""
    #: The array module: numpy, or cupy.
    xp: Any = np
    #: Largest number of factors the backend supports (None: no limit).
    max_factors: int | None = None
    #: Query rows x targets that :meth:`topk` scores at once (a block's scores stay in
    #: the CPU's caches; a GPU wants fewer, larger blocks).
    topk_block_elements: int = 1 << 22

    #: Set by :meth:`profile`; None when not profiling (the normal case: no overhead).
    timer: PhaseTimer | None = None

    @contextlib.contextmanager
    def profile(self) -> Iterator[PhaseTimer]:
        """Time the phases of the ``solve_rows`` calls made inside the block.

        For benchmarks: the GPU backend then waits for each phase's kernels to finish, so
        a profiled half-step is slower than a normal one. ::

            with backend.profile() as timer:
                backend.solve_rows(...)
            timer.seconds  # {"gram_build": ..., "solve": ..., ...}
        """
        self.timer = PhaseTimer()
        try:
            yield self.timer
        finally:
            self.timer = None

    def reusing_buffers(self):
        """A context manager within which :meth:`solve_rows` may keep its work arrays from
        one call to the next (the CPU backend does; ``fit`` runs its iterations inside
        one). Nothing on the GPU, whose memory pool already reuses blocks."""
        return contextlib.nullcontext()

    def range(self, name: str):
        """A context manager naming a stretch of work for profilers (NVTX on the GPU,
        with the optional ``nvtx`` package); nothing on the CPU."""
        return contextlib.nullcontext()

    def synchronize(self) -> None:  # noqa: B027 (a no-op unless the device is asynchronous)
        """Wait until the device has finished the work queued so far (no-op on the CPU)."""

    # ---- arrays ---------------------------------------------------------------------

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as this backend's array (no copy when it already is one)."""
        return to_host(a, dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array on the host."""
        return Backend.asarray(self, a)

    def put(self, rows: WeightedRows) -> WeightedRows:
        """``rows`` with its arrays moved to this backend (done once per fit)."""
        return rows.map_arrays(self.asarray)

    def all_finite(self, a: Any) -> bool:
        """Whether every element of ``a`` is finite."""
        return bool(self.xp.isfinite(a).all())

    # ---- numerics -------------------------------------------------------------------

    def gram(self, F: Any) -> Any:
        """``F^T F`` (k x k, float64), multiplied in F's dtype: its accuracy is F's anyway.
        Overflow gives infinities without a warning: the fit reports them (its loss check)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return (F.T @ F).astype(np.float64)

    @abstractmethod
    def solve_rows(
        self,
        rows: WeightedRows,
        F: Any,
        FtF: Any,
        *,
        regularization: float,
        feedback: str,
        out: Any,
        solver: str = "cholesky",
        cg_steps: int = 3,
        scale_regularization: bool = False,
    ) -> Any:
        """Solve every row's ridge system and write the new factors into ``out``.

        Implicit: ``(FtF + sum_i weight_i f_i f_i^T + regularization * I) x = sum_i target_i f_i``,
        or with ``scale_regularization`` ``regularization * n_u * I`` (``n_u``: the row's
        positive entries, as Spark counts them; a row without one gets the zero vector).
        Explicit (ALS-WR): ``(sum_i f_i f_i^T + regularization * n_u * I) x = sum_i r_i f_i``
        (``FtF`` unused; always scaled). A row without stored entries gets the zero vector.
        ``solver="cholesky"`` solves exactly; ``"cg"`` runs ``cg_steps`` conjugate-gradient
        steps from the current contents of ``out`` (a warm start); ``"pcg"`` as many steps
        of CG preconditioned by ``FtF + regularization * I`` (implicit; with
        ``scale_regularization`` each row's own ``FtF + regularization * n_u * I``;
        explicit feedback: CG's steps, its shared part being a multiple of I); ``"nnls"``
        solves exactly with ``x >= 0`` (:mod:`gpu_als.backends.nnls`), its first free sets
        where ``out`` is positive. Returns ``out``.
        """

    @abstractmethod
    def stored_loss(self, rows: WeightedRows, X: Any, Y: Any) -> float:
        """``sum over stored (u, i) of weight * s^2 - 2 * target * s`` with ``s = x_u . y_i``."""

    def _stored_loss_term(self, rows: WeightedRows, X: Any, Y: Any) -> Any:
        """:meth:`stored_loss` as :meth:`loss` adds it up: a float, or on a device a
        float64 scalar array, read with the other terms at once."""
        return self.stored_loss(rows, X, Y)

    def loss(
        self,
        rows: WeightedRows,
        X: Any,
        Y: Any,
        YtY: Any,
        *,
        regularization: float,
        feedback: str,
        scale_regularization: bool = False,
    ) -> float:
        """The training loss of DESIGN.md section 1, ``rows`` being the user rows of R.

        Implicit: ``sum_u x_u^T YtY x_u + stored terms + sum c p + lambda (|X|^2 + |Y|^2)``.
        Explicit: ``stored terms + sum r^2 + lambda (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)``,
        the penalty implicit feedback takes too with ``scale_regularization``.
        """
        with np.errstate(invalid="ignore", over="ignore"):  # fit reports non-finite losses
            return self._loss(rows, X, Y, YtY, regularization, feedback, scale_regularization)

    def _loss(self, rows, X, Y, YtY, regularization, feedback, scaled=False) -> float:
        implicit = feedback == "implicit"
        XtX = self.gram(X) if implicit else None
        counts = self.entry_counts(rows, positive=implicit) \
            if feedback == "explicit" or scaled else None
        return self.loss_from_parts(X, Y, XtX, YtY, self._stored_loss_term(rows, X, Y),
                                    rows.loss_constant, counts=counts,
                                    regularization=regularization, feedback=feedback)

    def entry_counts(self, rows: WeightedRows, *, positive: bool = False
                     ) -> tuple[Any, Any]:
        """The entries of each row and of each column of ``rows`` (float64), the weights
        of a scaled penalty: ``n_u`` and ``n_i``. ``positive``: only those with a
        positive target (implicit feedback's positive preferences, Spark's count);
        else every stored one (explicit feedback's ratings)."""
        xp = self.xp
        if not positive:
            return (xp.diff(rows.indptr).astype(np.float64),
                    xp.bincount(rows.indices, minlength=rows.n_cols).astype(np.float64))
        kept = (rows.target > 0).astype(np.float64)
        return (self.row_counts(rows, positive=True).astype(np.float64),
                xp.bincount(rows.indices, weights=kept, minlength=rows.n_cols))

    def row_counts(self, rows: WeightedRows, *, positive: bool = False) -> Any:
        """Each row's entries (int64), or with ``positive`` those with a positive target:
        the ``n_u`` of a row's scaled penalty (:meth:`entry_counts`)."""
        xp = self.xp
        indptr = rows.indptr.astype(np.int64)
        if not positive:
            return xp.diff(indptr)
        seen = xp.concatenate((xp.zeros(1, np.int64),
                               xp.cumsum((rows.target > 0).astype(np.int64))))
        return seen[indptr[1:]] - seen[indptr[:-1]]

    def loss_from_parts(self, X, Y, XtX, YtY, stored: Any, loss_constant: float, *,
                        regularization, feedback, counts=None) -> float:
        """:meth:`loss` from its stored-entry terms (``stored``: a float, or the
        backend's scalar array), the rows' ``loss_constant``, the two
        Gram matrices (implicit) or each row's and column's number of entries
        (``counts``, explicit: :meth:`entry_counts`), computed elsewhere (the distributed
        fit sums them over workers). With ``counts``, the penalty is scaled by them (ALS-WR:
        explicit feedback, and implicit with ``scale_regularization``). The terms on the
        backend's arrays are summed there (float64) and read once: on a GPU each read
        waits for the device."""
        xp = self.xp
        if counts is None:
            penalty = xp.trace(XtX) + xp.trace(YtY)
        else:
            user_counts, item_counts = counts
            penalty = user_counts @ (X * X).sum(axis=1).astype(np.float64) \
                + item_counts @ (Y * Y).sum(axis=1).astype(np.float64)
        on_device = regularization * penalty
        if feedback == "implicit":  # sum_u x_u^T YtY x_u = tr(XtX YtY)
            on_device = on_device + (XtX * YtY).sum()
        return loss_constant + float(on_device + stored)

    def topk(
        self,
        queries: Any,
        targets: Any,
        k: int,
        *,
        exclude: Any = None,
        candidates: Any = None,
        blocked: Any = None,
        target_scale: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best targets per query by dot product (times ``target_scale``).

        Parameters
        ----------
        queries : array, shape (n_queries, factors)
        targets : array, shape (n_targets, factors)
        k : int
            ``0 <= k <= n_targets`` (or ``len(candidates)``).
        exclude : scipy.sparse.csr_matrix, shape (n_queries, n_targets), optional
            Stored entries are never returned for that query.
        candidates : numpy.ndarray of int, optional
            Only these targets are considered (sorted, distinct).
        blocked : numpy.ndarray of int, optional
            These targets are never returned, for any query (not with ``candidates``).
        target_scale : array, shape (n_targets,), optional
            Each target's scores are multiplied by its factor (the inverse norms of the
            targets give cosines without a normalized copy of them).

        Returns
        -------
        ids : numpy.ndarray of int64, shape (n_queries, k)
            Target ids, best first; ``-1`` where fewer than ``k`` targets were eligible.
        scores : numpy.ndarray, shape (n_queries, k)
            Their (scaled) dot products; ``-inf`` where the id is ``-1``.
        """
        xp = self.xp
        if k == 0:  # nothing eligible (e.g. every candidate filtered out)
            return (np.empty((queries.shape[0], 0), np.int64),
                    np.empty((queries.shape[0], 0), queries.dtype))
        if candidates is not None:
            targets = targets[self.asarray(candidates)]
            if target_scale is not None:
                target_scale = target_scale[self.asarray(candidates)]
        if blocked is not None:
            blocked = self.asarray(blocked)
        n_queries, n_targets = queries.shape[0], targets.shape[0]
        ids = np.empty((n_queries, k), dtype=np.int64)
        scores = np.empty((n_queries, k), dtype=queries.dtype)
        step = max(1, self.topk_block_elements // max(1, n_targets))

        def block(a: int) -> None:
            b = min(a + step, n_queries)
            pairs = None
            if exclude is not None:
                rows, columns = csr_pairs(exclude, a, b)
                if candidates is not None:  # the excluded candidates, by their place
                    place = np.minimum(np.searchsorted(candidates, columns),
                                       len(candidates) - 1)
                    kept = candidates[place] == columns
                    rows, columns = rows[kept], place[kept]
                pairs = (self.asarray(rows), self.asarray(columns))
            block_scores = queries[a:b] @ targets.T
            if target_scale is not None:
                block_scores *= target_scale
            if blocked is not None:
                block_scores[:, blocked] = -np.inf
            top, top_scores = top_n(block_scores, k, pairs, xp=xp)
            ids[a:b], scores[a:b] = self.to_numpy(top), self.to_numpy(top_scores)

        self._each_block(block, range(0, n_queries, step))
        if candidates is not None:
            ids = np.where(ids >= 0, candidates[np.maximum(ids, 0)], -1)
        return ids, scores

    def map_in_order(self, work: Callable[[Any], Any], items: Iterable[Any],
                     threads: int | None = None) -> Iterator[Any]:
        """``work(item)`` for every item, yielded in order; a backend may compute several
        at once (the CPU backend on ``threads``, default all of its own), so ``work`` must
        be safe to run concurrently."""
        return map(work, items)

    def _each_block(self, work, starts) -> None:
        """``work(start)`` for every block of :meth:`topk`; a backend may run them in
        parallel (the blocks write disjoint rows)."""
        for start in starts:
            work(start)


def query_result(ids: np.ndarray, scores: np.ndarray, scalar: bool):
    """Top-N results as the query methods return them: 2-D for a batch of queries; for a
    single query, its row without the ``-1`` padding."""
    if not scalar:
        return ids, scores
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def csr_pairs(csr, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) indices of the stored entries of a CSR matrix's rows ``start`` to
    ``stop`` (default: all), rows counted from ``start`` (without scipy's slicing, which
    costs more than a single query's whole top-N)."""
    stop = csr.shape[0] if stop is None else stop
    indptr = csr.indptr[start:stop + 1]
    rows = np.repeat(np.arange(stop - start), np.diff(indptr))
    return rows, csr.indices[indptr[0]:indptr[-1]]


def top_n(scores: Any, k: int, exclude: tuple[Any, Any] | None = None, *, xp: Any = np):
    """The ``k`` highest-scoring columns of each row of ``scores``, best first.

    ``scores`` (n, m) is overwritten with ``-inf`` at the ``exclude = (rows, columns)``
    pairs, which are never returned; a row with fewer than ``k`` eligible columns is padded
    with id ``-1`` and score ``-inf``. Tied columns are listed by id, and of several tied
    at the k-th place the lowest ids are returned. ``xp`` is the array module of
    ``scores`` (numpy or cupy).
    """
    n, m = scores.shape
    if exclude is not None:
        scores[exclude[0], exclude[1]] = -np.inf
    if m >= 4 * _threshold_chunks(k):
        found = _top_n_above_threshold(scores, k, xp=xp)
        if found is not None:
            return found
    if k < m:
        # every column above the k-th score, then the lowest ids of those tied with it
        # (argpartition's choice among ties depends on the NumPy release): k per row,
        # in column order, so that the stable sort below breaks ties by column id
        kth = xp.take_along_axis(scores, xp.argpartition(-scores, k - 1, axis=1)[:, k - 1:k],
                                 axis=1)
        above = scores > kth
        tied = scores == kth
        keep = above | (tied & (xp.cumsum(tied, axis=1) <= k - above.sum(axis=1,
                                                                          keepdims=True)))
        flat = xp.flatnonzero(keep)
        if len(flat) != n * k:  # NaN scores (from factors whose products overflow) in a
            # row with fewer than k others: ranked last, as excluded items
            nan = xp.isnan(scores)
            assert bool(nan.any()), "k columns per row unless NaN"
            return top_n(xp.where(nan, -np.inf, scores), k, xp=xp)
        top = (flat % m).reshape(n, k)
    else:
        top = xp.broadcast_to(xp.arange(m), (n, m))
    top_scores = xp.take_along_axis(scores, top, axis=1)
    order = _stable_argsort(-top_scores, xp)
    top = xp.take_along_axis(top, order, axis=1)
    top_scores = xp.take_along_axis(top_scores, order, axis=1)
    eligible = top_scores > -np.inf
    return xp.where(eligible, top, -1), xp.where(eligible, top_scores, -np.inf)


def _threshold_chunks(k: int) -> int:
    return max(4 * k, 128)


def _top_n_above_threshold(scores: Any, k: int, *, xp: Any = np):
    """:func:`top_n` without partitioning every row (about 4x faster at k = 10 over
    27,000 items with NumPy; with CuPy, whose ``argpartition`` sorts every row, it sorts
    about 130 chunk maxima per row instead): cut each row into ``C >= k`` chunks; the k-th
    largest chunk maximum ``t`` is at most the row's k-th largest score (k chunks reach
    it), so the top k lie among the few scores ``>= t``, which are sorted exactly (ties
    by column id). Returns None when ties make those too many (e.g. rows of equal
    scores). Only calls that NumPy and CuPy share (no ``lexsort``, no sort ``kind``)."""
    n, m = scores.shape
    chunks = _threshold_chunks(k)
    width = m // chunks
    maxima = scores[:, :chunks * width].reshape(n, chunks, width).max(axis=2)
    if chunks * width < m:  # the last columns form one more chunk
        maxima = xp.concatenate([maxima, scores[:, chunks * width:].max(axis=1)[:, None]],
                                axis=1)
    t = xp.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    above = scores >= t[:, None]
    if int(xp.count_nonzero(above)) > n * 4 * chunks or bool(xp.isnan(t).any()):
        return None  # too many candidates; or NaN scores (the fallback ranks them last)
    ids = xp.full((n, k), -1, np.int64)
    top_scores = xp.full((n, k), -np.inf, scores.dtype)
    if n == 1:  # one query, as a service asks: the steps below in 1-D, 2-3x faster
        cols = xp.flatnonzero(above[0])
        values = scores[0, cols]
        order = _stable_argsort(-values, xp)[:k]  # by score descending, then column
        cols, values = cols[order], values[order]
        found = int(xp.count_nonzero(values > -np.inf))  # -inf (excluded) come last
        ids[0, :found], top_scores[0, :found] = cols[:found], values[:found]
        return ids, top_scores
    flat = xp.flatnonzero(above)  # by row, then column (2-D nonzero is 5x slower)
    rows, cols = flat // m, flat % m
    values = scores[rows, cols]
    # by row, then score descending, then column: two stable sorts keep the column order
    order = _stable_argsort(-values, xp)
    order = order[_stable_argsort(rows[order], xp)]
    rows, cols, values = rows[order], cols[order], values[order]
    rank = xp.arange(len(rows)) - xp.searchsorted(rows, xp.arange(n))[rows]
    keep = (rank < k) & (values > -np.inf)
    ids[rows[keep], rank[keep]] = cols[keep]
    top_scores[rows[keep], rank[keep]] = values[keep]
    return ids, top_scores


def _stable_argsort(a: Any, xp: Any):
    """``argsort`` along the last axis that keeps equal elements in order (CuPy's always
    does; older CuPy releases reject NumPy's ``kind``)."""
    return xp.argsort(a, axis=-1, kind="stable") if xp is np else xp.argsort(a, axis=-1)
