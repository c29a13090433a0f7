"""The same ALS on a Dask cluster: several processes, GPUs or machines.

    from dask.distributed import Client
    from gpu_als import ALS
    from gpu_als.distributed import fit_distributed

    client = Client("scheduler-address:8786")        # or LocalCluster / LocalCUDACluster
    model = fit_distributed(ALS(factors=128, backend="gpu"), user_items, client)
    # or a Dask DataFrame of columns user, item (and value), which the workers read
    model = fit_distributed(ALS(factors=128), dask.dataframe.read_parquet(path), client)

How a fit is spread (notation of DESIGN.md section 1):

* The rows of R (users) and of R^T (items) are cut into contiguous blocks of about equal
  numbers of entries, ``blocks_per_worker`` per worker, and put on the workers once
  (scattered from the driver, or built there from a Dask DataFrame: see below); they
  stay there for the whole fit, and each block's tasks run on the worker that holds it
  (none is stolen by an idle worker, which would copy the block over).
* Each half-step, the fixed side's factors are broadcast to every worker, each worker
  solves its blocks with its own backend (``model.backend``: the CPU, or the GPU of a
  ``dask-cuda`` worker) exactly as the single-process fit would (the CG solver from the
  block's current factors, which it is sent too), and returns its block of
  new factors with that block's partial Gram matrix; the driver assembles the factors and
  sums the partial Grams into ``X^T X`` / ``Y^T Y``. A backend receives each block once
  per fit: a GPU worker keeps its blocks on its device from the first half-step on.
* Broadcasting was chosen over Spark MLlib's in-link/out-link routing: it moves
  ``workers x n x k`` numbers per half-step instead of at most ``nnz`` factor rows, which
  is less whenever a worker's block touches most of the other side (the usual case with
  few workers and power-law data); ``bytes_moved_`` records what each iteration moved.
* A worker that dies mid-fit is survived: the half-step is retried (its tasks are pure),
  the blocks are placed again on the surviving or restarted workers, and the fit goes
  on with identical results; after ``max_retries`` failures in one half-step a
  ``RuntimeError`` says why. Dask is imported only here (``pip install gpu-als[dist]``).
* A matrix (or a pandas or polars DataFrame) is read by the driver, which keeps both
  orientations of it for the whole fit (about 24 bytes per interaction in float32 with
  32-bit indices, beside the caller's matrix), to scatter the blocks again after a
  worker failure: the data must fit in the driver's memory.
* A Dask DataFrame is read by the workers (:mod:`gpu_als._dask_frames`): each partition
  is checked as ``fit(df)`` checks a DataFrame, the driver merges the partitions'
  distinct ids and each side's entry counts, and each block is built on a worker from
  its pieces of every partition. The driver holds the ids, two counts per user and item
  and the factors, not the data; after a worker failure the blocks are built again from
  the DataFrame (Dask keeps no copy of the partitions a block came from).
* Each worker holds its blocks (its share of the 24 bytes), and a GPU worker its blocks
  and the two sides' factors on its device.

Worker processes: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``, with which glibc
returns memory after nearly every large free and maps every large NumPy temporary afresh
(benchmarks/dask_worker_malloc.py: a user half-step took 1.58 s in a worker against
0.80 s in the driver). ``dask.config.set(WORKER_MALLOC)`` before creating the cluster (or
those two environment variables on the workers) restores the speed. And arrays reach a
worker at any byte offset of Dask's message frames; :func:`_solve_block` aligns them, as
NumPy runs unaligned arrays through slow buffered copies.

The result is an ordinary fitted :class:`gpu_als.ALS` on its backend in this process (a
GPU model where the driver has a GPU, else a CPU one), equal to the single-process fit to
floating-point tolerance: the per-row solves are the same, only the Gram matrices are
summed in another order. The model's ``show_progress``, ``callback``,
``calculate_training_loss`` and ``warm_start`` act as in :meth:`ALS.fit` (the driver
always sums the loss from the workers' parts, which costs it little, to catch NaN factors
after each iteration; the setting decides whether it is kept in ``loss_history_`` and
passed to the callback).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import weakref
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import _dask_frames, data
from ._ids import checked_data_ids
from ._training import (
    asks_to_stop,
    check_definite_base,
    check_fit_shape,
    largest_input,
    log_iteration,
    raise_non_finite,
    warn_idle_factors,
    warn_idle_settings,
)
from .backends import get_backend, get_backend_or_cpu
from .backends.base import STARTED_SOLVERS
from .model import ALS, refuse_ids_with_frame

__all__ = ["fit_distributed", "WORKER_MALLOC"]


logger = logging.getLogger("gpu_als")

#: Dask configuration that gives worker processes glibc settings fit for large NumPy
#: temporaries (see the module docstring): ``dask.config.set(WORKER_MALLOC)``.
WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1 << 30,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 1 << 30,
}


def _split(rows: data.WeightedRows, n_blocks: int) -> list[tuple[int, int, data.WeightedRows]]:
    """Contiguous row blocks with about equal numbers of entries: (first, last, block)."""
    blocks = []
    for first, last in _dask_frames.block_bounds(rows.indptr, n_blocks):
        a, b = rows.indptr[first], rows.indptr[last]
        blocks.append((first, last, data.WeightedRows(
            rows.indptr[first:last + 1] - a, rows.indices[a:b], rows.weight[a:b],
            rows.target[a:b], rows.n_cols, 0.0)))
    return blocks


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself when its elements are aligned (and it is C-contiguous), else a copy."""
    return np.require(a, requirements=("C", "A"))


#: On a worker: each scattered block's rows as its backend holds them (aligned, on the
#: GPU for the GPU backend), made at the block's first half-step and dropped when Dask
#: releases the block. Keys: (id(block), backend name).
_PUT_BLOCKS: dict[tuple[int, str], data.WeightedRows] = {}


def _put_once(block: data.WeightedRows, backend) -> data.WeightedRows:
    """``backend.put`` of a worker's block, once for the whole fit rather than at every
    half-step: a GPU worker would otherwise copy its CSR blocks to the device each time."""
    key = (id(block), backend.name)
    if key not in _PUT_BLOCKS:
        # Arrays deserialized by Dask can start at any byte of a message frame; NumPy
        # handles an unaligned array through slow buffered copies (the item half-step took
        # 1.1-1.2 s in a worker against 0.65 s in the driver), so align them first.
        _PUT_BLOCKS[key] = backend.put(block.map_arrays(_aligned))
        weakref.finalize(block, _PUT_BLOCKS.pop, key, None)
    return _PUT_BLOCKS[key]


def _solve_block(block: data.WeightedRows, fixed: np.ndarray, fixed_gram, params: dict,
                 start: np.ndarray | None = None):
    """On a worker: one block's half-step; ``start``: the block's current factors, from
    which the CG and NNLS solvers start (as in the single-process fit; None for the exact
    solver).

    Returns its new factors, their partial Gram matrix and the block's stored-entry loss
    terms (:meth:`Backend.stored_loss` with the new factors), all on the host.
    """
    backend = get_backend(params["backend"])
    fixed = _aligned(fixed)  # see _put_once
    F = backend.asarray(fixed)
    rows = _put_once(block, backend)
    # a copy: an in-process worker may be handed the driver's own array
    start = np.zeros((block.n_rows, fixed.shape[1]), fixed.dtype) if start is None \
        else np.array(start, fixed.dtype)
    out = backend.asarray(start)
    gram = None if fixed_gram is None else backend.asarray(fixed_gram)
    backend.solve_rows(rows, F, gram, regularization=params["regularization"],
                       feedback=params["feedback"], out=out, solver=params["solver"],
                       cg_steps=params["cg_steps"],
                       scale_regularization=params["scale_regularization"])
    return backend.to_numpy(out), backend.to_numpy(backend.gram(out)), \
        backend.stored_loss(rows, out, F)


class _MatrixBlocks:
    """The row blocks of a matrix this process holds, scattered to the workers (again,
    after a worker was lost) by :meth:`place`; and what the driver needs of all rows (as
    :class:`gpu_als._dask_frames.FrameBlocks` has it)."""

    def __init__(self, users: data.WeightedRows, items: data.WeightedRows,
                 ids: tuple[Any, Any], n_blocks: int, p: dict[str, Any]):
        """``users``, ``items``: the fit's rows; ``ids``: the users' and items' ids;
        ``n_blocks``: blocks per side, at most; ``p``: the model's hyperparameters."""
        self.blocks = {"user": _split(users, n_blocks), "item": _split(items, n_blocks)}
        self.bounds = {side: [(first, last) for first, last, _ in blocks]
                       for side, blocks in self.blocks.items()}
        self.shape = (users.n_rows, items.n_rows)
        self.user_ids, self.item_ids = ids
        self.loss_constant = users.loss_constant
        # (the scaled penalty's counts: implicit feedback counts positive entries)
        self.counts = get_backend("cpu").entry_counts(users,
                                                      positive=p["feedback"] == "implicit")
        self.largest = largest_input(users, p)

    def place(self, client) -> dict[str, list]:
        """Each block's future, the block on a worker. Only the client's own methods:
        Dask's module functions (``distributed.wait``) use the default client, which the
        caller's client need not be (``gpu-als train --scheduler``'s is not); and the
        blocks are on the workers when ``scatter`` returns."""
        return {side: client.scatter([block for _, _, block in blocks], hash=False)
                for side, blocks in self.blocks.items()}

    def release(self) -> None:
        """Nothing to do: the blocks are this process's (the workers' copies go with their
        futures)."""


class _ClusterBlocks:
    """Both sides' row blocks, held by the cluster's workers for a whole fit, and the
    half-step that solves them there, retried after a worker is lost."""

    def __init__(self, client, source, params: dict[str, Any], max_retries: int,
                 worker_timeout: float):
        """``source``: the blocks, a :class:`_MatrixBlocks` or a Dask DataFrame's
        :class:`gpu_als._dask_frames.FrameBlocks` (``bounds``: each side's blocks' first
        and last rows; ``place(client)``: their futures, the blocks on workers);
        ``params``: what :func:`_solve_block` needs; ``worker_timeout``: how long to wait
        for a worker after losing all of them."""
        self.client, self.source, self.params = client, source, params
        self.max_retries, self.worker_timeout = max_retries, worker_timeout
        self.placed: dict[str, list] = {}   # each block's future
        self.holders: dict[str, list] = {}  # the worker(s) holding each placed block
        self.place()

    def place(self) -> None:
        """Put every block on the workers (again, after a worker was lost), and note which
        worker holds each."""
        self.placed = self.source.place(self.client)
        for side, futures in self.placed.items():
            who_has = self.client.who_has(futures)
            self.holders[side] = [list(who_has[block.key]) for block in futures]

    def close(self) -> None:
        """Let the workers drop the blocks (whatever still refers to this object)."""
        self.placed.clear()
        self.holders.clear()
        self.source.release()

    def half_step(self, side: str, fixed: np.ndarray, fixed_gram, current: np.ndarray):
        """New factors of ``side`` (``current``: its factors now, the CG solver's start),
        their Gram matrix (summed over blocks) and the stored loss terms (the same entries
        whichever side they are counted from). A lost worker: the blocks are placed
        again and the half-step retried, ``max_retries`` times."""
        return _retried(lambda: self._solve(side, fixed, fixed_gram, current), self.client,
                        "a half-step", "placing the blocks on the workers again",
                        self.max_retries, self.worker_timeout, then=self.place)

    def _solve(self, side: str, fixed: np.ndarray, fixed_gram, current: np.ndarray):
        client = self.client
        # CG starts from them, and NNLS's free sets (as in the single-process fit)
        send_current = self.params["solver"] in STARTED_SOLVERS
        fixed_future = client.scatter(fixed, broadcast=True, hash=False)
        futures = [client.submit(_solve_block, block, fixed_future, fixed_gram, self.params,
                                 current[first:last] if send_current else None,
                                 workers=workers, allow_other_workers=False, pure=False)
                   for block, workers, (first, last)
                   in zip(self.placed[side], self.holders[side], self.source.bounds[side])]
        results = self._gather(futures, self.holders[side])
        factors = np.concatenate([r[0] for r in results]).astype(current.dtype, copy=False)
        return factors, sum(r[1] for r in results), float(sum(r[2] for r in results))

    def _gather(self, futures: list, holders: list[list[str]]) -> list:
        """``client.gather(futures)``, each pinned to the worker(s) of ``holders``; a
        ``ConnectionError`` (a lost worker, retried) once every holder of one of them has
        left the cluster: its task would wait for that worker for ever. (A block that Dask
        cannot compute again, one scattered from this process or one built from results
        it has since forgotten, as a Dask DataFrame's blocks are, is lost with its worker,
        which fails the block's tasks; one that it can compute again does not fail them.)"""
        pending = threading.Semaphore(0)
        for future in futures:
            future.add_done_callback(lambda _: pending.release())
        for _ in futures:
            while not pending.acquire(timeout=_POLL_SECONDS):
                alive = set(self.client.nthreads())
                stuck = [who for future, who in zip(futures, holders)
                         if who and not future.done() and not alive.intersection(who)]
                if stuck:
                    raise ConnectionError(f"worker {stuck[0][0]} left the cluster holding "
                                          f"a block")
        return self.client.gather(futures)


def _retried(attempt, client, what: str, again: str, max_retries: int,
             worker_timeout: float, then=None):
    """``attempt()``, tried again after it fails as a lost worker makes work fail (at most
    ``max_retries`` times, each logged as ``again``, ``then()`` called first), once the
    cluster has a worker (:func:`_running_workers`); then a ``RuntimeError`` that says
    ``what`` failed. An exception raised by the work itself is not retried."""
    from concurrent.futures import CancelledError  # FutureCancelledError's base

    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    worker_lost = (CancelledError, CommClosedError, KilledWorker, OSError, TimeoutError)
    # OSErrors of the work itself: a file of a Dask DataFrame that cannot be read
    own = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    for trial in range(max_retries + 1):
        try:
            return attempt()
        except own:
            raise
        except worker_lost as exc:
            if trial == max_retries:
                raise RuntimeError(f"distributed ALS: {what} failed {max_retries + 1} times, "
                                   f"last with {type(exc).__name__}: {exc}") from exc
            # The exception's traceback holds frames that hold futures (the work's, and
            # through them the placed blocks): logged as text and its frames cleared, so
            # that whatever keeps it (Dask's state of the failed futures, a log handler)
            # does not keep blocks on the workers.
            logger.warning("distributed ALS: %s: %s; %s and retrying", type(exc).__name__,
                           str(exc), again)
            traceback.clear_frames(exc.__traceback__)
            _running_workers(client, worker_timeout)
            if then is not None:
                then()
    raise AssertionError("unreachable")  # pragma: no cover


#: How often, in seconds, a half-step that has not ended checks its blocks' workers.
_POLL_SECONDS = 1.0


def _check_client(client, what: str) -> None:
    """Refuse a ``client`` that is not a ``dask.distributed.Client``, or Dask missing;
    ``what``: the function that needs it, as the messages name it."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ImportError(f"{what} needs Dask ({exc}): pip install gpu-als[dist]") from exc
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client, got "
                        f"{type(client).__name__}")


def _running_workers(client, timeout: float, what: str = "fit_distributed") -> int:
    """The number of the cluster's workers, after waiting up to ``timeout`` seconds for a
    first one (an adaptive cluster that is still scaling up has none); ``what``: the
    function that needs them, as the messages name it."""
    from distributed import TimeoutError as DaskTimeoutError

    if client.status != "running":
        raise ValueError(f"the Dask client is {client.status}: {what} needs a running "
                         f"Client")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (DaskTimeoutError, TimeoutError):
        raise RuntimeError(
            f"distributed ALS: the cluster has no worker (waited {timeout:g} s for one); "
            f"start some, e.g. LocalCluster(n_workers=2), or scale the cluster up") from None
    return len(client.nthreads())  # every worker (scheduler_info may list only some)


def fit_distributed(model: ALS, user_items: Any, client, *, user_ids: Any = None,
                    item_ids: Any = None, blocks_per_worker: int = 1,
                    max_retries: int = 3, worker_timeout: float = 60.0) -> ALS:
    """Fit ``model`` on the Dask cluster of ``client``; returns the fitted ``model``.

    Parameters
    ----------
    model : ALS
        Its hyperparameters are used as they are; ``backend`` names the backend each
        worker uses ("cpu", "gpu", or "auto", resolved on the worker).
    user_items : scipy.sparse matrix, shape (n_users, n_items), DataFrame or Dask DataFrame
        As for :meth:`ALS.fit` (a DataFrame's ids end up in ``user_ids_`` / ``item_ids_``).
        A Dask DataFrame (columns ``user``, ``item`` and optionally ``value``, as for
        ``fit(df)``) is read by the workers, partition by partition, with the values
        and warnings of ``fit(df.compute())`` (a pair repeated across partitions summed
        in float64, then rounded to ``dtype``) and its errors, but that an error names a
        value's row in its partition, and its index.
    client : dask.distributed.Client
    user_ids, item_ids : array-like, optional
        The ids of a matrix's rows and columns, as for :meth:`ALS.fit`.
    blocks_per_worker : int, default 1
        Row blocks per worker and side.
    max_retries : int, default 3
        Attempts of a half-step (or of reading a Dask DataFrame, from the start) after
        a worker failure before giving up.
    worker_timeout : float, default 60
        Seconds to wait for a worker when the cluster has none (at the start, or after
        losing every worker mid-fit), before giving up with a ``RuntimeError``.

    Returns
    -------
    ALS
        ``model``, fitted, its factors on its backend in this process (a GPU model where
        this process has a GPU, as after ``fit``; else a CPU model); also
        ``model.bytes_moved_``: bytes sent between the driver and the workers in each
        iteration.

    Raises
    ------
    RuntimeError
        When a half-step (or the read of a Dask DataFrame) keeps failing, or no worker
        joins the cluster within ``worker_timeout`` seconds.
    ValueError
        When ``client`` is closed; or, as :meth:`ALS.fit` refuses it, when the arguments
        are wrong, or the fixed side's Gram matrix of a half-step is singular (implicit
        feedback with ``regularization=0``, by the exact solver or PCG).
    """
    if not isinstance(model, ALS):
        raise TypeError(f"model must be a gpu_als.ALS, got {type(model).__name__}")
    model._refuse_while_fitting("fit_distributed()")
    _check_client(client, "fit_distributed")
    p = model._check_params()
    warn_idle_settings(p, ALS._param_defaults())
    if not isinstance(model.backend, str):
        raise TypeError("fit_distributed needs a backend name ('cpu', 'gpu' or 'auto') that "
                        "each worker resolves, not a Backend instance")
    data.check_int("blocks_per_worker", blocks_per_worker, minimum=1)
    data.check_int("max_retries", max_retries, minimum=0)
    worker_timeout = data.check_float("worker_timeout", worker_timeout, strict=True)
    if _dask_frames.is_dask_frame(user_items):  # read and blocked by the workers
        refuse_ids_with_frame(user_ids, item_ids)
        n_workers = _running_workers(client, worker_timeout)
        source: Any = _retried(
            lambda: _dask_frames.FrameBlocks(client, user_items, p,
                                             n_workers * blocks_per_worker,
                                             show_progress=bool(model.show_progress)),
            client, "reading the Dask DataFrame", "reading it again", max_retries,
            worker_timeout)
    else:
        user_items, ids = model._fit_input(user_items, user_ids, item_ids)
        check_fit_shape(user_items, p)  # before Prepared allocates
        prepared = data.Prepared(user_items, p["dtype"])
        warn_idle_factors(prepared.shape, p["factors"])
        ids = checked_data_ids(ids, prepared.shape)
        users, items = prepared.rows(feedback=p["feedback"], alpha=p["alpha"],
                                     confidence=p["confidence"], epsilon=p["epsilon"])
        n_workers = _running_workers(client, worker_timeout)
        source = _MatrixBlocks(users, items, ids, n_workers * blocks_per_worker, p)
    user_ids, item_ids = source.user_ids, source.item_ids
    params = {key: p[key] for key in ("regularization", "feedback", "solver", "cg_steps",
                                      "scale_regularization")}
    scaled = p["scale_regularization"]  # (always with explicit feedback)
    params["backend"] = model.backend
    implicit = p["feedback"] == "implicit"
    cpu = get_backend("cpu")
    # where the fitted model goes: the model's backend here (a GPU model where this
    # process has a GPU), or the CPU (GPU workers driven from a machine without one)
    home = get_backend_or_cpu(model.backend, f"the distributed {model.backend} model")
    X, Y = model._initial_factors(cpu, source.shape, p["factors"], p["dtype"],
                                  (user_ids, item_ids))
    send_current = p["solver"] in STARTED_SOLVERS  # CG and NNLS start from the factors
    YtY = cpu.gram(Y)
    loss_history, moved = [], []
    stopped = False
    progress = tqdm(range(p["iterations"]), desc=f"ALS (distributed, {n_workers} workers)",
                    unit="it", disable=None if model.show_progress else True)
    with model._fitting(), progress, \
            contextlib.closing(_ClusterBlocks(client, source, params, max_retries,
                                                worker_timeout)) as cluster:
        def half_step(side: str, fixed: np.ndarray, fixed_gram, current: np.ndarray):
            check_definite_base(p, fixed_gram, fixed.shape[0], cpu)  # as fit, on the driver
            return cluster.half_step(side, fixed, fixed_gram if implicit else None, current)

        start = time.perf_counter()  # the blocks placed
        for iteration in progress:
            bases = {"user": (YtY, Y.shape[0])}  # (kept for raise_non_finite)
            X, XtX, _ = half_step("user", Y, YtY, X)
            bases["item"] = (XtX, X.shape[0])
            Y, YtY, stored = half_step("item", X, XtX, Y)
            loss = cpu.loss_from_parts(X, Y, XtX, YtY, stored, source.loss_constant,
                                       counts=source.counts if scaled else None,
                                       feedback=p["feedback"],
                                       regularization=p["regularization"])
            if not np.isfinite(loss):  # the first iteration with NaN or infinite factors
                raise_non_finite(cpu, X, Y, iteration, {**p, "calculate_training_loss": True},
                                 source.largest, bases)
            progress.set_postfix(loss=f"{loss:.5g}")
            kept = loss if p["calculate_training_loss"] else None  # else only checked
            if kept is not None:
                loss_history.append(kept)
            log_iteration(iteration + 1, kept, time.perf_counter() - start)
            # Y then X broadcast to every worker, and each side's new factors coming back
            # (with CG, also each side's current factors going out, a block to each worker)
            moved.append(int((n_workers + 1 + send_current) * (X.nbytes + Y.nbytes)))
            if model.callback is not None:  # which may query the model so far, as in fit
                model._set_fitted(home, X, Y, loss_history, user_ids, item_ids)
                if asks_to_stop(model.callback(iteration, time.perf_counter() - start, kept)):
                    stopped = True
                    break
    if not stopped:  # else the model is as the callback that stopped the fit left it
        model._set_fitted(home, X, Y, loss_history, user_ids, item_ids)
    model.bytes_moved_ = moved  # type: ignore[attr-defined]  # only distributed fits
    return model
