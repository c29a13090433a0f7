"""NumPy/SciPy reference backend: vectorized, no Python loop per row.

How a half-step is solved (rows ``u``, fixed factors ``Y``, ``k`` factors). Each row's
system is ``A_u x_u = b_u`` with ``A_u = B + W_u^T W_u``, where ``W_u`` stacks
``sqrt(weight_ui) * y_i`` over the row's ``L`` stored entries and ``B = YtY + lambda I``
(implicit) or ``lambda * n_u * I`` (explicit, ALS-WR).

* Implicit: with the Cholesky factor ``B = C C^T`` and the whitened factors
  ``Yw = Y C^-T`` (one GEMM per half-step), ``x_u = C^-T h_u`` where
  ``(I + Z_u^T Z_u) h_u = g_u``, ``Z_u = sqrt(weight) * Yw[N(u)]`` and
  ``g_u = sum target_ui * Yw_i``. The shared part of every row's system is whitened
  away once, so the per-row work depends only on the row's own entries.
* Explicit: ``(mu_u I + Z_u^T Z_u) h_u = Z_u^T r_u`` with ``mu_u = lambda n_u``, ``x_u = h_u``.
* Implicit with a scaled penalty (``B_u = YtY + lambda n_u I``, which no one factor
  whitens for every row): in the eigenbasis ``YtY = Q diag(e) Q^T`` each row whitens its
  own gathered factors by ``(e + lambda n_u)^-1/2`` (:func:`eigenbasis`), and solves the
  same ``(I + Z_u^T Z_u) h_u = g_u``.
* Nonnegative factors (``solver="nnls"``): each row's ``k x k`` system formed, unwhitened,
  in float64, and solved with ``x >= 0`` by :mod:`gpu_als.backends.nnls`.

A short row (``L < k``) is solved in the ``L``-dimensional space through the push-through
identity ``(mu I + Z^T Z)^-1 Z^T = Z^T (mu I + Z Z^T)^-1``, costing ``O(L^2 k)`` instead of
``O(L k^2 + k^3)``: the right-hand side is ``Z^T q`` with ``q = target / sqrt(weight)``
(implicit) or ``r`` (explicit). Where an entry has a target but no weight (alpha = 0) the
Woodbury form ``(I + Z^T Z)^-1 = I - Z^T (I + Z Z^T)^-1 Z`` is used instead; it subtracts
nearly equal vectors, and in float32 was 5 to 100 times less accurate
(benchmarks/woodbury_accuracy.py). A long row forms its ``k x k`` system and solves it.
All of these are exact.
Rows are bucketed by length (padding within 20 %), gathered into ``(rows, L, k)`` blocks of
bounded size, and the blocks are shared among threads (NumPy's batched ``matmul`` and
``linalg.solve`` release the GIL; BLAS is held to one thread meanwhile so the two levels of
threading do not fight).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.linalg
from threadpoolctl import ThreadpoolController

from ..data import WeightedRows, check_int
from .base import ITERATIVE_SOLVERS, Backend, PhaseTimer, regularized_gram, rotated
from .nnls import nnls_rows

#: Elements (rows x padded length x factors) in one gathered block: 4 MiB of float32,
#: which keeps a block in cache on a typical core (chosen on the power-law CPU benchmark).
BLOCK_ELEMENTS = 1 << 20
#: Rows in a bucket are padded to at most this factor times the shortest row's length.
BUCKET_GROWTH = 1.2
#: Elements below which a block takes in the next bucket's rows (see row_blocks): such a
#: block's few dozen NumPy calls take longer than its arithmetic. Padding costs the CG
#: solver less than the exact one (no k x k or L x L system per row), so it merges more.
#: Measured on MovieLens 100K (side by side, ms per iteration against no merging): CG
#: 1.14-1.49x at k = 32..128 with 2^18 (1.02-1.21x with 2^16); exact 1.01-1.09x at
#: k <= 64 with 2^16, 0.65-0.98x with 2^18 and more.
MIN_BLOCK_ELEMENTS = 1 << 16
CG_MIN_BLOCK_ELEMENTS = 1 << 18
#: A half-step of fewer entries x factors runs on one thread: its many small NumPy calls
#: per block lose time to the GIL on more. Measured on MovieLens 100K (all ratings), 2-core
#: machine, ms per iteration on one thread vs two: CG k = 64 27 vs 40-49; Cholesky k = 32
#: 30 vs 42-48, k = 64 77-82 vs 80-89 (even), k = 256 602-628 vs 429-431.
CG_PARALLEL_ELEMENTS = 16 * BLOCK_ELEMENTS
#: A CG half-step on several threads gathers blocks of at most this many elements (16 MiB
#: of float32): as each step streams them from memory anyway, fewer blocks mean fewer of
#: the small NumPy calls that the threads take turns at the GIL for. Measured (ms per
#: iteration, against 2^20): a quarter of ml20m-like (2.5M entries) 250-257 against
#: 315-330 at k = 32, 443-451 against 550-558 at 64, 862-905 against 1056-1107 at 128
#: (2^23 the same, 2^21 and 2^24 between); ml20m-like 2.01-2.19 against 2.33-2.58 s at
#: k = 64, 3.65-3.66 against 4.32-4.39 s at 128.
CG_BLOCK_ELEMENTS = 1 << 22
#: Such a one-thread CG half-step gathers blocks of at most this many elements (1 MiB of
#: float32), merging those under CG_SERIAL_MIN_BLOCK_ELEMENTS: each step streams a block
#: twice, from cache where it fits. Measured on MovieLens 100K's positives (`gpu-als bench
#: --datasets ml-100k`, ms per iteration, two runs each, against blocks of 2^20 merged
#: below 2^18): k = 64 12.1-13.5 vs 14.4-15.4, k = 128 22.1-24.1 vs 27.1-28.3, k = 256
#: 59.0-60.5 vs 68.6-69.3 (docs/cpu-backend.md).
#: On two threads the smaller blocks lose (1.5M entries, k = 64: 581 against 368 ms):
#: each block's NumPy calls wait for the GIL.
CG_SERIAL_BLOCK_ELEMENTS = 1 << 18
CG_SERIAL_MIN_BLOCK_ELEMENTS = 1 << 17
#: stored_loss gathers the factors of at most this many elements' worth of entries at a
#: time (256 KiB of float32 per side: both stay in cache for the dot products). Measured
#: (one-off, median of 3, against chunks of 2^20): ML-100K positives 3.8 against 7.1 ms at
#: k = 128; 1.5M power-law entries 39 against 47 ms at k = 32, 112 against 154 at 128,
#: 201 against 302 at 256 (2^15 and 2^17 fell between).
LOSS_CHUNK_ELEMENTS = 1 << 16
#: ... and where it runs on several threads (above CG_PARALLEL_ELEMENTS): fewer, larger
#: chunks, whose NumPy calls wait less for the GIL.
LOSS_PARALLEL_CHUNK_ELEMENTS = 1 << 20
CHOLESKY_PARALLEL_ELEMENTS = 4 * BLOCK_ELEMENTS
#: A half-step whose entries are fewer than 1 / FEW_ENTRIES of the fixed side's rows (a
#: fold-in of a few users) whitens only the fixed rows that its entries use.
FEW_ENTRIES = 4
#: A solve of at most this many rows (a fold-in, as a service asks: one user) forms and
#: factorizes each row's k x k system on its own, without whitening or blocks: one user
#: with about 50 entries against 27,000 items at k = 64 took 300-360 us and takes
#: 105-155 us (the backend's solve alone).
EACH_ROW_LIMIT = 4


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The process's BLAS and OpenMP pools, found once (a scan of the loaded libraries,
    about 1 ms, that ``threadpool_limits`` would repeat at every half-step)."""
    return ThreadpoolController()


class _SingleThreadedBLAS:
    """BLAS and OpenMP held to one thread while any thread of the process is inside.

    The limits are process-wide: when calls overlap (a server answering ``recommend`` on
    several threads), each saving and restoring them on its own would restore the
    single-thread limit that another call had set, and leave it for good. So the first
    to enter sets it and the last to leave restores what was there before.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._limiter: Any = None

    def __enter__(self):
        with self._lock:
            if self._inside == 0:
                self._limiter = _thread_pools().limit(limits=1)
            self._inside += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


_single_threaded_blas = _SingleThreadedBLAS()

#: ``array(name, shape, dtype)``: a work array of that shape, contents undefined.
WorkArray = Callable[[str, tuple[int, ...], Any], np.ndarray]


class _Scratch:
    """Work arrays lent to one block at a time and kept for the next.

    glibc maps a fresh multi-MB allocation from the kernel and unmaps it when freed, so a
    temporary allocated anew for every block is faulted in page by page every time: on
    ML-100K that was half of the CG solver's time (12,000 page faults per iteration at
    k = 32). Blocks borrow a set of arrays here instead, and give it back; at most one set
    per thread is ever made.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._free: list[dict[str, np.ndarray]] = []

    @contextlib.contextmanager
    def borrow(self) -> Iterator[WorkArray]:
        with self._lock:
            arrays = self._free.pop() if self._free else {}

        def array(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            dtype = np.dtype(dtype)
            nbytes = math.prod(shape) * dtype.itemsize
            raw = arrays.get(name)
            if raw is None or raw.nbytes < nbytes:
                raw = arrays[name] = np.empty(nbytes, np.uint8)
            return raw[:nbytes].view(dtype).reshape(shape)

        try:
            yield array
        finally:
            with self._lock:
                self._free.append(arrays)


#: The scratch of the innermost ``CPUBackend.reusing_buffers()`` in this context (a fit).
_fit_scratch: contextvars.ContextVar[_Scratch | None] = contextvars.ContextVar(
    "gpu_als_cpu_scratch", default=None)


def _current_scratch() -> _Scratch:
    """The fit's scratch, or one for this call only (outside ``reusing_buffers``)."""
    return _fit_scratch.get() or _Scratch()


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def row_blocks(lengths: np.ndarray, factors: int, block_elements: int = BLOCK_ELEMENTS,
               min_elements: int = MIN_BLOCK_ELEMENTS) -> Iterator[tuple[np.ndarray, int]]:
    """Group the non-empty rows into blocks of similar length.

    Yields ``(row_ids, padded_length)``: every row in ``row_ids`` has at most
    ``padded_length`` entries, and no block mixes rows shorter than ``factors`` with longer
    ones, so each block takes a single solve path. Rows are bucketed by length (within a
    factor BUCKET_GROWTH of each other; exactly equal below 16 entries), and a bucket is cut
    so that ``len(row_ids) * padded_length * factors`` stays within ``block_elements``
    (unless a single row is larger). A block of fewer than ``min_elements`` elements, whose
    NumPy calls would cost more than its arithmetic, takes in the next bucket's rows
    (padded to their length) when that adds at most ``min_elements`` elements of padding
    (so a block has at most ``block_elements + 2 * min_elements``).
    """
    pending = None  # a small block, waiting to take in the next one
    for ids, padded in _length_buckets(lengths, factors, block_elements):
        if pending is not None:
            rows, short = pending
            if (short < factors) == (padded < factors) and \
                    len(rows) * (padded - short) * factors <= min_elements:
                ids = np.concatenate([rows, ids])
            else:
                yield pending
            pending = None
        if len(ids) * padded * factors < min_elements:
            pending = ids, padded
        else:
            yield ids, padded
    if pending is not None:
        yield pending


def _length_buckets(lengths: np.ndarray, factors: int, block_elements: int
                    ) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`row_blocks` before small blocks are merged: the buckets of similar length,
    cut to ``block_elements``."""
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    start = int(np.searchsorted(sorted_lengths, 1))
    n = len(sorted_lengths)
    while start < n:
        shortest = int(sorted_lengths[start])
        longest = shortest if shortest < 16 else int(shortest * BUCKET_GROWTH)
        if shortest < factors:
            longest = min(longest, factors - 1)
        stop = int(np.searchsorted(sorted_lengths, longest, side="right"))
        padded = int(sorted_lengths[stop - 1])
        per_block = max(1, block_elements // (padded * factors))
        for first in range(start, stop, per_block):
            yield order[first:min(stop, first + per_block)], padded
        start = stop


def _implicit_base(FtF: np.ndarray, regularization: float, out: np.ndarray
                   ) -> np.ndarray | None:
    """The part every implicit row's system shares, ``FtF + regularization I``; or None,
    with every row of ``out`` NaN, where ``FtF`` is not finite (propagated, as the GPU
    kernels do: the fit reports it, as _solve_exact leaves it)."""
    if not np.isfinite(FtF).all():
        out[...] = np.nan
        return None
    return FtF + regularization * np.eye(FtF.shape[0])


def _lengths_and_counts(rows: WeightedRows, counts: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's entries, as the solvers schedule them, and each row's count for its
    penalty: its entries, or ``counts`` (a scaled penalty's positive entries), where a
    row without a positive entry gets 0 entries: its right-hand side is 0, and so is its
    solution, which the solvers give it as they give an empty row (with no penalty, its
    system may be singular)."""
    lengths = np.diff(rows.indptr)
    if counts is None:
        return lengths, lengths
    return np.where(counts > 0, lengths, 0), counts


def eigenbasis(FtF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``FtF = Q diag(e) Q^T``: ``(e, Q)`` (``e`` clipped at 0), for the exact systems of
    the scaled penalty, ``F^T F + lambda n_u I + sum w f f^T``, which share no part to
    whiten by. In the basis ``Q`` the part ``diag(e) + lambda n_u I`` is diagonal, so each
    row whitens its own gathered rows by ``(e + lambda n_u)^-1/2`` (in
    :meth:`CPUBackend._solve_exact`): the system is then ``I + sum w h h^T``, as the
    plain penalty's, and a row's component along an eigenvector is at most the square
    root of its eigenvalue, so float32 rounding stays small against the penalty. Formed
    from the rows as they are, a half-step of tiny factors 20 in size against confidences
    of 700 was 100 % off in float32 (test_solver's
    ``test_unwhitened_systems_keep_a_small_regularization_in_float32``)."""
    e, Q = np.linalg.eigh(FtF)
    return np.maximum(e, 0.0), Q


def formed_blocks(lengths: np.ndarray, factors: int, block_elements: int = BLOCK_ELEMENTS
                ) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`row_blocks` for :meth:`CPUBackend._solve_formed`, whose every row forms a
    ``k x k`` system: blocks cut further so that their systems hold at most
    ``block_elements`` elements too (a block of one-entry rows, bounded by rows x 1 x k
    elements, would otherwise form ``rows x k x k``: 537 MB of float64 at k = 64 for a
    block of 2^20 elements)."""
    per_block = max(1, block_elements // (factors * factors))
    for ids, padded in row_blocks(lengths, factors, block_elements, MIN_BLOCK_ELEMENTS):
        for first in range(0, len(ids), per_block):
            yield ids[first:first + per_block], padded


def solve_batch(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve the batch of SPD systems ``A[j] x[j] = b[j]``, in float64.

    OpenBLAS's batched LU through NumPy is 2-3x faster in float64 than in float32 at these
    sizes (measured, one thread: n = 30, 12.7 vs 22.3 us per system; n = 60, 37 vs 90 us),
    and releases the GIL, so blocks solve in parallel. (A loop of LAPACK ``dposv`` calls is
    faster per system at n = 64 but holds the GIL; it lost on the power-law benchmark.)
    """
    A64, b64 = A.astype(np.float64), b.astype(np.float64)
    try:
        x = np.linalg.solve(A64, b64[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # an exactly singular system (from overflowed factors):
        x = np.full(b64.shape, np.nan)  # NaN for it, as the GPU kernels give, which the
        for j in range(len(A64)):       # fit reports; the others solved
            with contextlib.suppress(np.linalg.LinAlgError):
                x[j] = np.linalg.solve(A64[j], b64[j])
    return x.astype(A.dtype, copy=False)


def _gathered(block: tuple[np.ndarray, int], rows: WeightedRows, indices: np.ndarray,
              F: np.ndarray, array: WorkArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (non-empty) rows ``block = (ids, L)`` laid out ``L`` entries each: their
    positions in the entry arrays (rows, L), their fixed factors ``F[indices[pos]]``
    (rows, L, k; into the work array "gathered") and where they are padding (rows, L).

    A padding entry repeats its row's last entry, and the caller gives it weight and
    target 0 (:func:`_entries`), so that it adds exact zeros; it reads only factors its
    row reads, so a non-finite one stays in its own rows. (Padding used to point at a zero
    row appended to copies of the entry arrays and of ``F``, made at every half-step:
    72 ms per half-step of 10M entries.)"""
    ids, L = block
    first = rows.indptr[ids]
    lengths = (rows.indptr[ids + 1] - first)[:, None]
    steps = np.arange(L)
    pos = first[:, None] + np.minimum(steps, lengths - 1)
    # the indices were checked, so "clip" changes none (and, unlike "raise", does not
    # buffer the output); np.take: 1.7x faster than fancy indexing for this gather
    # (300 x 60 rows of 64)
    gathered = np.take(F, np.take(indices, pos), axis=0, mode="clip",
                       out=array("gathered", (len(ids), L, F.shape[1]), F.dtype))
    return pos, gathered, steps >= lengths


def _entries(values: np.ndarray, pos: np.ndarray, padding: np.ndarray, dtype,
             transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``values`` (an entry array) at ``pos`` in ``dtype``, after ``transform``, and 0
    where ``padding``."""
    taken = np.take(values, pos)
    if transform is not None:
        taken = transform(taken)
    taken = taken.astype(dtype, copy=False)
    taken[padding] = 0
    return taken


def _cg_block(block: tuple[np.ndarray, int], rows: WeightedRows, F, base,
              diag: tuple[float, float], counts: np.ndarray, x, steps, array: WorkArray,
              whiten: tuple[np.ndarray, float] | None = None):
    """CG on the rows ``block = (ids, L)`` (each with at most ``L`` entries) from ``x``,
    never forming a k x k matrix per row. Their entries' fixed factors are gathered once,
    padded to ``L``, into ``Fg`` (rows, L, k), and serve every step as two batched
    matrix-vector products (the last step, one; each a pass over ``Fg`` from memory):
    ``A p = p base + Fg^T (w * (Fg p))`` (implicit CG; plus ``diag``'s term below where
    it is not 0, for a scaled penalty) or, with
    ``base`` None and ``diag = (constant, scale)``, ``A p = (constant + scale n_u) p +
    Fg^T (w * (Fg p))`` (explicit: ``(0, lambda)``; preconditioned CG on whitened factors:
    ``(1, 0)``), as kernels/cg.cu's cg_solve, ``n_u`` being the rows' ``counts``.
    Padding entries (see :func:`_gathered`) have weight and target 0. ``array`` gives the
    work arrays (see _Scratch).

    ``whiten = (e, lambda)``: preconditioned CG with a scaled penalty, ``F`` and ``x`` in
    the eigenbasis of ``F^T F`` (whose eigenvalues are ``e``), where each row's shared
    part ``diag(e) + lambda n_u I`` is diagonal: the steps are taken on ``h = x / d``,
    ``d = (e + lambda n_u)^-1/2``, whose system is ``I + d Fg^T W Fg d`` (``diag = (1,
    0)``), and ``d h`` is returned."""
    ids, _ = block
    pos, Fg, padding = _gathered(block, rows, rows.indices, F, array)
    w = _entries(rows.weight, pos, padding, F.dtype)
    scale = (diag[0] + diag[1] * counts).astype(F.dtype)  # the diagonal without base
    d = None
    if whiten is not None:  # (every row here has counts > 0: d is finite)
        e, penalty = whiten
        d = (1.0 / np.sqrt(e + penalty * counts[:, None])).astype(F.dtype)
        x = x / d

    def whitened(P):  # d P, the factors' coordinates of P
        return P if d is None else P * d

    def shared(P):
        if base is None:
            S = scale[:, None] * P
        else:
            S = P @ base
            if diag != (0.0, 0.0):  # (implicit rows with a scaled penalty)
                S += scale[:, None] * P
        return S.astype(P.dtype, copy=False)

    def A(P):
        dots = np.matmul(Fg, whitened(P)[:, :, None])[:, :, 0]  # (rows, L)
        dots *= w
        return whitened(np.matmul(dots[:, None, :], Fg)[:, 0, :]) + shared(P)

    # r = Fg^T t - A x, as Fg^T (t - w * (Fg x)) - shared(x): two passes over Fg, not three
    residual = np.matmul(Fg, whitened(x)[:, :, None])[:, :, 0]
    residual *= w
    np.subtract(_entries(rows.target, pos, padding, F.dtype), residual, out=residual)
    r = whitened(np.matmul(residual[:, None, :], Fg)[:, 0, :]) - shared(x)
    p = r.copy()
    rs = np.einsum("ij,ij->i", r, r)
    for step in range(steps):
        last = step == steps - 1
        if last:  # p.Ap from Fg p alone, one pass over Fg: A p would serve only a next step
            dots = np.matmul(Fg, whitened(p)[:, :, None])[:, :, 0]
            pAp = np.einsum("ij,ij->i", dots * w, dots) + np.einsum("ij,ij->i", p, shared(p))
        else:
            Ap = A(p)
            pAp = np.einsum("ij,ij->i", p, Ap)
        alpha = np.divide(rs, pAp, out=np.zeros_like(rs), where=pAp > 0)
        x += alpha[:, None] * p
        if last:  # no next direction to make
            break
        r -= alpha[:, None] * Ap
        rs_new = np.einsum("ij,ij->i", r, r)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 0)
        p = r + beta[:, None] * p
        rs = rs_new
    return whitened(x)


class CPUBackend(Backend):
    """The NumPy reference backend.

    Parameters
    ----------
    num_threads : int, optional
        Threads that solve row blocks in parallel; default: the CPUs this process may use.
    block_elements : int, optional
        Size bound of one gathered block of rows (see :func:`row_blocks`) and of one chunk
        of the loss's entries, in elements (rows x padded length x factors), for every
        path; default: each path's own (``BLOCK_ELEMENTS`` for the exact solver,
        ``CG_BLOCK_ELEMENTS`` and ``CG_SERIAL_BLOCK_ELEMENTS`` for CG on several threads
        and on one, ``LOSS_PARALLEL_CHUNK_ELEMENTS`` and ``LOSS_CHUNK_ELEMENTS`` for the
        loss likewise).
    """

    name = "cpu"

    def __init__(self, num_threads: int | None = None, block_elements: int | None = None):
        self.num_threads = _default_threads() if num_threads is None \
            else check_int("num_threads", num_threads, minimum=1)
        self.block_elements = None if block_elements is None \
            else check_int("block_elements", block_elements, minimum=1)

    def _elements(self, default: int) -> int:
        """A path's block (or chunk) size: its ``default``, or the ``block_elements``
        given."""
        return default if self.block_elements is None else self.block_elements

    def __repr__(self) -> str:
        extra = "" if self.block_elements is None else f", block_elements={self.block_elements}"
        return f"CPUBackend(num_threads={self.num_threads}{extra})"

    @contextlib.contextmanager
    def reusing_buffers(self) -> Iterator[None]:
        """Within the block, :meth:`solve_rows` keeps its largest work arrays (a few per
        thread, each about a block's elements) from one call to the next, instead of
        allocating them per call (see _Scratch). ``fit`` runs its iterations in one."""
        if _fit_scratch.get() is not None:  # nested: the outer block's arrays serve
            yield
            return
        token = _fit_scratch.set(_Scratch())
        try:
            yield
        finally:
            _fit_scratch.reset(token)

    # ---- numerics -------------------------------------------------------------------

    def solve_rows(self, rows: WeightedRows, F, FtF, *, regularization, feedback, out,
                   solver="cholesky", cg_steps=3, scale_regularization=False):
        # Factors or confidences large enough to overflow give non-finite factors without
        # NumPy's warnings ("overflow encountered in multiply", or an exception where
        # warnings are errors): the fit reports them after the half-step, naming the
        # input's scale (_training.raise_non_finite), as gram and loss do.
        scaled = feedback == "implicit" and scale_regularization
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._solve_rows(rows, F, FtF, regularization, feedback, out, solver,
                                    cg_steps, scaled)

    def _solve_rows(self, rows, F, FtF, regularization, feedback, out, solver, cg_steps,
                    scaled):
        """``scaled``: implicit rows whose penalty is scaled by their positive entries
        (their shared part is then ``FtF`` alone, and each adds ``regularization * n_u *
        I``; ``counts``, below, holds each row's ``n_u``, and a row without a positive
        entry, whose right-hand side is 0, gets the solution 0)."""
        counts = self.row_counts(rows, positive=True) if scaled else None
        if solver in ITERATIVE_SOLVERS:
            if solver == "pcg" and regularization == 0:  # (the plain one: as below)
                counts = None
            return self._solve_cg(rows, F, FtF, regularization, feedback, out, cg_steps,
                                  preconditioned=solver == "pcg" and feedback == "implicit",
                                  counts=counts)
        if solver == "nnls":  # (the whitening would not keep x >= 0)
            return self._solve_formed(rows, F, FtF, regularization, feedback, out, counts)
        if regularization == 0:  # (a penalty of 0 scales to 0: the plain one)
            counts = None
        # A fold-in takes its own paths: up to EACH_ROW_LIMIT rows, each row's system on
        # its own; entries few against the fixed rows (FEW_ENTRIES), whitening only the
        # fixed rows they use, O(nnz k^2) rather than O(n_fixed k^2). Both run on one BLAS
        # thread: threads of SciPy's own BLAS (its factorizations and triangular solves)
        # would otherwise spin after them and slow NumPy's next matrix product 20-fold on
        # a small machine.
        if rows.n_rows <= EACH_ROW_LIMIT:
            with _single_threaded_blas:
                return self._solve_each_row(rows, F, FtF, regularization, feedback, out,
                                            counts)
        if len(rows.indices) * FEW_ENTRIES < F.shape[0]:
            with _single_threaded_blas:
                return self._solve_exact(rows, F, FtF, regularization, feedback, out,
                                         few=True, counts=counts)
        return self._solve_exact(rows, F, FtF, regularization, feedback, out, few=False,
                                 counts=counts)

    def _solve_each_row(self, rows, F, FtF, regularization, feedback, out, counts):
        """:meth:`solve_rows` of a few rows: each row's k x k system formed and factorized
        on its own, in float64 (no per-call overhead of the batched paths); a long row's
        entries are gathered :data:`BLOCK_ELEMENTS` at a time."""
        started = time.perf_counter()
        k = F.shape[1]
        implicit = feedback == "implicit"
        scaled = counts is not None
        per_entry = regularization if scaled or not implicit else 0.0
        if implicit:
            # Not factorized here (a third of the time of one user's solve): the row's
            # system is at least B (confidences >= 1), so it fails to factorize only if B
            # is singular, and regularized_gram then says so.
            B = _implicit_base(FtF, 0.0 if scaled else regularization, out)
            if B is None:
                return out
        step = max(1, self._elements(BLOCK_ELEMENTS) // k)
        for u in range(rows.n_rows):
            first, end = int(rows.indptr[u]), int(rows.indptr[u + 1])
            n = end - first if counts is None else int(counts[u])
            if n == 0:  # no entry (or, scaled, no positive one): b = 0
                out[u] = 0
                continue
            A = B.copy() if implicit else np.zeros((k, k))
            A[np.diag_indices(k)] += per_entry * n
            b = np.zeros(k)
            for start in range(first, end, step):
                entries = slice(start, min(start + step, end))
                Fu = F[rows.indices[entries]].astype(np.float64)
                A += Fu.T @ (Fu * rows.weight[entries, None])
                b += Fu.T @ rows.target[entries]
            try:
                factor = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                if implicit and not scaled:
                    regularized_gram(FtF, regularization, F.shape[0])  # raises if B is
                # by LU, as the batched path solves: NaN where singular (factors grown
                # too large, say), which fit reports naming the input's scale
                out[u] = solve_batch(A[None], b[None, :])[0]
                continue
            out[u] = scipy.linalg.cho_solve(factor, b, check_finite=False)
        if self.timer:
            self.timer.add("solve", time.perf_counter() - started)
        return out

    def _solve_formed(self, rows, F, FtF, regularization, feedback, out, counts):
        """:meth:`solve_rows` with ``x >= 0`` (``solver="nnls"``): each block's k x k
        systems formed from its gathered factor rows, without the exact solver's
        whitening, which would not keep ``x >= 0``, and solved by
        :func:`gpu_als.backends.nnls.nnls_rows`. ``counts``: each row's positive entries,
        for implicit rows whose penalty is scaled by them (None: the plain penalty).

        Formed in float64: in float32, a row whose products lost a regularization that is
        tiny against its confidences (the factors nearly rank-deficient) had an
        indefinite system, and NaN or a wrong solution (found by a fuzz of tiny fits). A
        fit of MovieLens 100K took 15-25 % longer for it (docs/cpu-backend.md)."""
        started = time.perf_counter()
        k = F.shape[1]
        implicit = feedback == "implicit"
        scaled = counts is not None
        if implicit:
            base = _implicit_base(FtF, 0.0 if scaled else regularization, out)
            if base is None:
                return out
        per_entry = regularization if scaled or not implicit else 0.0
        lengths, counts = _lengths_and_counts(rows, counts)
        out[lengths == 0] = 0  # the solution of an empty row (explicit: A = 0)
        diagonal = np.arange(k)
        scratch = _current_scratch()

        def solve_block(block: tuple[np.ndarray, int]) -> None:
            ids, _ = block
            with scratch.borrow() as array:
                pos, Fg, padding = _gathered(block, rows, rows.indices, F, array)
                Fg = Fg.astype(np.float64)
                w = _entries(rows.weight, pos, padding, np.float64)
                b = (_entries(rows.target, pos, padding, np.float64)[:, None, :] @ Fg)[:, 0, :]
                A = Fg.transpose(0, 2, 1) @ (Fg * w[:, :, None])
            if implicit:
                A += base
            if per_entry:
                A[:, diagonal, diagonal] += (per_entry * counts[ids])[:, None]
            out[ids] = nnls_rows(A, b, xp=np, solve=solve_batch, to_numpy=np.asarray,
                                 asarray=np.asarray, start=out[ids])

        threads = None if len(rows.indices) * k > CHOLESKY_PARALLEL_ELEMENTS else 1
        self._run_parallel(solve_block, formed_blocks(lengths, k, self._elements(BLOCK_ELEMENTS)),
                           threads)
        if self.timer:
            self.timer.add("nnls", time.perf_counter() - started)
        return out

    def _solve_exact(self, rows, F, FtF, regularization, feedback, out, *, few,
                     counts=None):
        """:meth:`solve_rows` by exact solves; ``few``: whiten only the fixed rows that
        the entries use, by triangular solves (a fold-in), rather than all of them.
        ``counts`` (implicit rows whose penalty is scaled by their positive entries, each
        row's count): in the eigenbasis of ``FtF``, each row whitened by its own diagonal
        (:func:`eigenbasis`)."""
        k = F.shape[1]
        dtype = F.dtype
        scaled = counts is not None
        lengths, counts = _lengths_and_counts(rows, counts)
        timer = self.timer
        started = time.perf_counter()
        if feedback == "implicit":
            if not np.isfinite(FtF).all():  # propagate, as the GPU kernels do; fit reports it
                out[...] = np.nan
                return out
            if scaled:
                e, Q = eigenbasis(FtF)
            else:
                _, C = regularized_gram(FtF, regularization, F.shape[0])
            mu = np.ones(rows.n_rows, dtype)
        else:
            mu = (regularization * lengths).astype(dtype)
        if few:
            used, indices = np.unique(rows.indices, return_inverse=True)
            F_used = F[used]
        else:
            F_used, indices = F, rows.indices
        if feedback != "implicit":
            Yw = F_used
        elif scaled:  # Q^T y_i, the row's whitening by its diagonal below
            Yw = rotated(F_used, Q)
        elif few:  # C^-1 y_i by a triangular solve: no k x k inverse for a fold-in
            C = C.astype(dtype)
            Yw = scipy.linalg.solve_triangular(C, F_used.T, lower=True, check_finite=False).T
        else:  # by C^-1: a matrix product is 2x faster than the solve for many rows
            C_inv = np.linalg.inv(C).astype(dtype)
            Yw = F_used @ C_inv.T
        implicit = feedback == "implicit"
        H = np.empty_like(out) if implicit else out  # whitened solutions h_u
        H[lengths == 0] = 0
        thread_seconds = PhaseTimer() if timer else None  # per block, summed over threads

        def solve(A, b):
            if thread_seconds is None:
                return solve_batch(A, b)
            mark = time.perf_counter()
            x = solve_batch(A, b)
            thread_seconds.add("solve", time.perf_counter() - mark)
            return x

        scratch = _current_scratch()

        def solve_block(block: tuple[np.ndarray, int]) -> None:
            mark = time.perf_counter()
            with scratch.borrow() as array:
                _build_and_solve(block, array)
            if thread_seconds is not None:
                thread_seconds.add("block", time.perf_counter() - mark)

        def _build_and_solve(block: tuple[np.ndarray, int], array: WorkArray) -> None:
            ids, L = block
            steps = np.arange(L)
            pos, Yg, padding = _gathered(block, rows, indices, Yw, array)  # Yg: (rows, L, k)
            if scaled:  # each row's D_u^-1/2, D_u = diag(e) + lambda n_u I
                d = ((e[None, :] + regularization * counts[ids][:, None]) ** -0.5
                     ).astype(dtype)
                Yg *= d[:, None, :]
            sw = _entries(rows.weight, pos, padding, dtype, np.sqrt)  # (rows, L)
            t = _entries(rows.target, pos, padding, dtype)
            m = mu[ids]
            # an entry with a target but no weight (alpha = 0) rules out the push-through
            # form below for its block
            unweighted = implicit and L < k and bool(((t != 0) & (sw == 0)).any())
            if L >= k or unweighted:
                g = (t[:, None, :] @ Yg)[:, 0, :]  # right-hand sides, (rows, k)
            if L < k:
                # Small (L x L) system  S = mu I + Z Z^T  with Z = sw * Yg.
                S = Yg @ Yg.transpose(0, 2, 1)
                S *= sw[:, :, None]
                S *= sw[:, None, :]
                S[:, steps, steps] += m[:, None]
                if unweighted:  # h = (g - Z^T S^-1 Z g) / mu, mu = 1
                    Zg = sw * (Yg @ g[:, :, None])[:, :, 0]
                    s = solve(S, Zg)
                    h = g - ((sw * s)[:, None, :] @ Yg)[:, 0, :]
                else:  # push-through: g = Z^T q, h = Z^T S^-1 q; explicit: q = r, sw = 1
                    q = np.divide(t, sw, out=np.zeros_like(t), where=sw > 0) if implicit else t
                    s = solve(S, q)
                    h = ((sw * s)[:, None, :] @ Yg)[:, 0, :]
            else:
                Yg *= sw[:, :, None]  # Z = sw * Yg in place (g is taken): M = Z^T Z, with
                M = Yg.transpose(0, 2, 1) @ Yg  # no (rows, L, k) temporary
                diag = np.arange(k)
                M[:, diag, diag] += m[:, None]
                h = solve(M, g)
            H[ids] = h * d if scaled else h  # (scaled: z = D_u^-1/2 h)

        rows_started = time.perf_counter()
        threads = None if len(rows.indices) * k > CHOLESKY_PARALLEL_ELEMENTS else 1
        self._run_parallel(solve_block, row_blocks(lengths, k, self._elements(BLOCK_ELEMENTS),
                                                   MIN_BLOCK_ELEMENTS), threads)
        rows_ended = time.perf_counter()
        if scaled:  # x_u = Q z_u
            np.matmul(H, Q.T.astype(dtype), out=out)
        elif implicit and few:  # x_u = C^-T h_u
            out[...] = scipy.linalg.solve_triangular(C, H.T, lower=True, trans="T",
                                                     check_finite=False).T
        elif implicit:
            np.matmul(H, C_inv, out=out)  # x_u = C^-T h_u, as rows
        if timer and thread_seconds is not None:
            # The blocks' thread-seconds, split between build and solve, scaled to the wall
            # time of the parallel section; "shared": the whitening before and after it.
            wall = rows_ended - rows_started
            block, solving = thread_seconds.seconds["block"], thread_seconds.seconds["solve"]
            timer.add("gram_build", wall * (block - solving) / max(block, 1e-12))
            timer.add("solve", wall * solving / max(block, 1e-12))
            timer.add("shared", time.perf_counter() - started - wall)
        return out

    def _each_block(self, work, starts) -> None:
        starts = list(starts)
        if len(starts) == 1:  # one block: its matrix product may use every BLAS thread
            work(starts[0])
        else:
            self._run_parallel(work, starts)

    def _run_parallel(self, work, items, threads: int | None = None) -> None:
        """``work(item)`` for every item, on ``threads`` (default ``num_threads``)."""
        for _ in self.map_in_order(work, items, threads):
            pass

    def map_in_order(self, work: Callable[[Any], Any], items,
                     threads: int | None = None) -> Iterator[Any]:
        """``work(item)`` for every item, yielded in order, computed on ``threads``
        (default ``num_threads``) at most ``2 * threads`` items ahead of the caller.

        The work is made of batched NumPy calls that release the GIL; BLAS is held to one
        thread meanwhile, so that the two levels of threading do not fight. Each item runs
        under the caller's NumPy error handling (``np.errstate``). The first exception is
        raised and the items not started are dropped.
        """
        threads = threads or self.num_threads
        state = np.geterr()  # the caller's; a thread would start from NumPy's defaults

        def run(item):
            with np.errstate(**state):
                return work(item)

        with _single_threaded_blas:
            if threads == 1:
                yield from map(work, items)
                return
            with ThreadPoolExecutor(threads) as pool:
                ahead: collections.deque = collections.deque()
                try:
                    for item in items:
                        ahead.append(pool.submit(run, item))
                        if len(ahead) >= 2 * threads:
                            yield ahead.popleft().result()
                    while ahead:
                        yield ahead.popleft().result()
                finally:
                    # the newest first, so that a thread freed meanwhile cannot skip a
                    # cancelled item and start the next one
                    for future in reversed(ahead):
                        future.cancel()

    def _solve_cg(self, rows, F, FtF, regularization, feedback, out, steps,
                  preconditioned=False, counts=None):
        """``steps`` conjugate-gradient steps per row from ``out`` (Takacs et al. 2011).

        Rows go in blocks of similar length (:func:`row_blocks`), whose fixed factors
        ``F[N(u)]`` are gathered once and serve every step (:func:`_cg_block`).
        ``preconditioned`` (implicit feedback): the steps are taken on the whitened system
        ``(I + Z_u^T W_u Z_u) h = Z_u^T t_u`` with ``Z = F C^-T`` (``F^T F + lambda I =
        C C^T``), from ``h = C^T x`` and back by ``x = C^-T h``: CG preconditioned by the
        shared part, with no k x k product per step (see the ``"pcg"`` solver).
        ``counts``: implicit rows whose penalty is scaled by their positive entries, the
        shared part ``F^T F`` and each row's ``regularization * counts[u] * I``; a row
        without one gets the solution 0, as an empty row. Preconditioned, the rows share
        no part to whiten by: the steps are taken in the eigenbasis of ``F^T F``, where
        each row's ``F^T F + regularization * counts[u] * I`` is diagonal, every row
        whitened by its own (``whiten`` of :func:`_cg_block`).
        """
        implicit = feedback == "implicit"
        started = time.perf_counter()
        k = F.shape[1]
        dtype = F.dtype
        rotation = whiten = None
        if preconditioned and not np.isfinite(FtF).all():  # as _solve_exact
            out[...] = np.nan
            return out
        if preconditioned and counts is not None:
            e, rotation = eigenbasis(FtF)
            F = rotated(F, rotation)
            out[...] = rotated(out, rotation)
            base, diag, whiten = None, (1.0, 0.0), (e, regularization)
        elif preconditioned:
            _, C = regularized_gram(FtF, regularization, F.shape[0])
            # factorized in float64, applied in the factors' dtype (a float64 product of
            # float32 rows took 2.4x as long: 138,000 x 128 rows, 70 against 30 ms)
            C_inv = np.linalg.inv(C).astype(dtype)
            C = C.astype(dtype)
            F = F @ C_inv.T  # rows C^-1 f_i
            out[...] = out @ C  # h = C^T x, as rows
            base, diag = None, (1.0, 0.0)
        elif counts is not None:
            base, diag = FtF.astype(dtype), (0.0, regularization)
        elif implicit:
            base, diag = (FtF + regularization * np.eye(k)).astype(dtype), (0.0, 0.0)
        else:
            base, diag = None, (0.0, regularization)
        if self.timer:
            self.timer.add("shared", time.perf_counter() - started)
            started = time.perf_counter()
        scratch = _current_scratch()

        lengths, counts = _lengths_and_counts(rows, counts)

        def solve_block(block):
            with scratch.borrow() as array:
                out[block[0]] = _cg_block(block, rows, F, base, diag, counts[block[0]],
                                          out[block[0]], steps, array, whiten)

        if len(rows.indices) * k > CG_PARALLEL_ELEMENTS:
            threads, block, merged = None, CG_BLOCK_ELEMENTS, CG_MIN_BLOCK_ELEMENTS
        else:
            threads, block, merged = 1, CG_SERIAL_BLOCK_ELEMENTS, CG_SERIAL_MIN_BLOCK_ELEMENTS
        self._run_parallel(solve_block, row_blocks(lengths, k, self._elements(block), merged),
                           threads)
        out[lengths == 0] = 0  # the exact solution of an empty row
        if self.timer:
            self.timer.add("cg", time.perf_counter() - started)
        if preconditioned:
            started = time.perf_counter()
            if rotation is not None:
                out[...] = rotated(out, rotation.T)
            else:
                out[...] = out @ C_inv  # x = C^-T h, as rows
            if self.timer:
                self.timer.add("shared", time.perf_counter() - started)
        return out

    def stored_loss(self, rows: WeightedRows, X, Y) -> float:
        """The stored entries' terms, a chunk of entries at a time: their rows of ``X`` and
        ``Y`` gathered, ``s_ui = x_u . y_i`` in the factors' dtype, the sums in float64
        (the chunks' added in order). A large half-step's chunks run on every thread."""
        row_of = np.repeat(np.arange(rows.n_rows), np.diff(rows.indptr))
        nnz, k = len(rows.indices), X.shape[1]
        parallel = nnz * k > CG_PARALLEL_ELEMENTS
        step = max(1, self._elements(LOSS_PARALLEL_CHUNK_ELEMENTS if parallel else
                                     LOSS_CHUNK_ELEMENTS) // k)

        def chunk_loss(a: int) -> float:
            b = min(a + step, nnz)
            Xs = np.take(X, row_of[a:b], axis=0)
            Ys = np.take(Y, rows.indices[a:b], axis=0)
            s = np.einsum("ij,ij->i", Xs, Ys).astype(np.float64)
            w = rows.weight[a:b].astype(np.float64)
            t = rows.target[a:b].astype(np.float64)
            return float(np.dot(w * s - 2 * t, s))

        chunks = range(0, nnz, step)
        return sum(self.map_in_order(chunk_loss, chunks, None if parallel else 1), 0.0)
