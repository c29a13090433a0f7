"""A Dask DataFrame's interactions made into a distributed fit's row blocks on the
workers, so that the driver never reads them (see :func:`gpu_als.distributed.fit_distributed`).

The columns are those of ``fit(df)`` (``user``, ``item`` and optionally ``value``), read
as ``fit(df.compute())`` reads them, in four rounds of tasks:

1. each partition is checked and made a matrix of its own ids on its worker
   (:func:`gpu_als.data.from_dataframe`, with every check and message of ``fit(df)``);
   once all are read, they are grouped by the worker that holds them (a group per
   worker thread), each group's sorted distinct ids are merged on the workers, two
   groups at a time, and the driver receives the fit's ids (sorted as ``fit(df)`` sorts
   them);
2. each group's entries are renumbered to those ids, and their numbers per user and
   per item are summed on the workers likewise; the driver cuts each side into blocks
   of about equal numbers of entries;
3. each block gathers its pieces from every group, sums the repeated (user, item)
   pairs and weighs its entries (:func:`gpu_als.data.weighted_rows`), the user blocks
   first, then the item blocks (a worker holds one side's pieces at once);
4. each block's few totals (entries per row, the loss's constant, the largest value)
   come back to the driver.

Rounds 2 and 3 run a task per group, not per partition: a block's pieces are cut by
one task each (:func:`operator.getitem`), so that a DataFrame of P partitions cut into
B blocks a side makes 2 B tasks per worker thread, not 2 P B (tens of thousands for a
dataset of thousands of partitions, each costing the scheduler about a millisecond).

The driver holds the ids, two counts per user and item and each side's factors; the
workers hold the blocks. Dask forgets the partitions and pieces once the blocks are
built, so the blocks are the only copy of the data: after a worker is lost, every block
is built again from the DataFrame (:meth:`FrameBlocks.place`), which reads the
partitions again from their source.
"""

from __future__ import annotations

import logging
import operator
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from . import data
from ._ids import checked_data_ids
from ._training import check_fit_dimensions, largest_input, warn_idle_factors
from .backends import get_backend

SIDES = ("user", "item")

logger = logging.getLogger("gpu_als")


def is_dask_frame(value: Any) -> bool:
    """Whether ``value`` is a Dask DataFrame (without importing Dask): Dask's own, or
    dask-cuDF's, whose partitions (cuDF DataFrames) are read through ``to_pandas()``."""
    return data._library(value) in data.DASK_FRAME_LIBRARIES and \
        callable(getattr(value, "to_delayed", None)) and hasattr(type(value), "columns")


class FrameBlocks:
    """A Dask DataFrame's fit data, its rows held in blocks by the cluster's workers.

    Attributes
    ----------
    bounds : dict
        Each side's ("user", "item") blocks' first and last rows.
    shape, user_ids, item_ids
        The fit's matrix's shape and ids, as ``fit(df.compute())`` has them.
    loss_constant, counts, largest
        What the driver needs of all rows: the loss's constant, each user's and item's
        number of entries (as :meth:`Backend.entry_counts` gives them), and the largest
        confidence (implicit feedback) or rating magnitude (explicit).
    """

    def __init__(self, client, df, p: dict[str, Any], n_blocks: int,
                 show_progress: bool = False):
        """Check the Dask DataFrame ``df`` as ``fit(df)`` checks a DataFrame, and build
        its user and item blocks (``n_blocks`` each, at most) on the workers of
        ``client``, for a fit of the hyperparameters ``p`` (``ALS._check_params``'s);
        ``show_progress``: a progress bar over the partitions read (on a terminal), and
        an INFO line after each step either way."""
        self.df, self.dtype = df, p["dtype"]
        self.value_col = data.check_fit_columns(df, p["feedback"])
        self.weighting = {key: p[key] for key in ("feedback", "alpha", "confidence",
                                                  "epsilon")}
        start = time.perf_counter()
        groups = self._read(client, show_progress)
        # merged on the workers, two groups at a time: the driver receives each id once,
        # not once per partition it appears in
        merged = _reduced(client, [client.submit(_ids_and_rows, *group, pure=False)
                                   for group in groups], _merged)
        user_ids, item_ids, n_rows = client.gather(merged)
        logger.info("read %s partitions on the workers: %s, %s x %s in %.2f s",
                    f"{sum(map(len, groups)):,}", data.counted(n_rows, "row"),
                    data.counted(len(user_ids), "user"), data.counted(len(item_ids), "item"),
                    time.perf_counter() - start)
        if n_rows == 0:
            raise ValueError("df has no rows: there is nothing to learn from")
        self.shape = (len(user_ids), len(item_ids))
        check_fit_dimensions(self.shape, p)
        warn_idle_factors(self.shape, p["factors"])
        self.user_ids, self.item_ids = checked_data_ids((user_ids, item_ids), self.shape)
        entries = self._entries(client, groups)
        del groups  # (the workers may drop each partition's rows once renumbered)
        # blocks cut by the entries of each group, before a pair repeated in two is
        # summed: near enough
        counts = client.gather(_reduced(
            client, [client.submit(_counts, e, self.shape, pure=False) for e in entries],
            _added))
        self.bounds = {side: _cuts(c, n_blocks) for side, c in zip(SIDES, counts)}
        self.futures = self._build(client, entries)
        self.fresh = True  # the blocks just built: place them as they are
        totals = {side: client.gather([client.submit(_totals, block, p, pure=False)
                                       for block in self.futures[side]]) for side in SIDES}
        users = totals["user"]
        if p["feedback"] == "explicit":
            data.warn_summed_ratings(n_rows, sum(t["entries"] for t in users))
        elif not any(t["positive"] for t in users):
            data.warn_no_positive_value("user_items")
        self.loss_constant = float(sum(t["loss_constant"] for t in users))
        self.counts = (_counted(totals["user"]), _counted(totals["item"]))
        self.largest = max(t["largest"] for t in users)
        logger.info("built %d user and %d item blocks of %s on the workers in %.2f s",
                    len(self.futures["user"]), len(self.futures["item"]),
                    data.counted(sum(t["entries"] for t in users), "interaction"),
                    time.perf_counter() - start)

    def _read(self, client, show_progress: bool = False) -> list[list]:
        """Each partition's rows read and checked on a worker (futures of
        :func:`_read_partition`), once every one has been, grouped by the worker that
        holds them (:func:`_by_worker`)."""
        reads = [client.submit(_read_partition, part, self.value_col, self.dtype,
                               pure=False)
                 for part in client.compute(self.df.to_delayed())]
        _wait_for_reads(client, reads, show_progress)
        return _by_worker(client, reads)

    def _entries(self, client, groups: list[list]) -> list:
        """Each group's entries (:meth:`_read`'s groups) renumbered to the fit's ids."""
        known = client.scatter([self.user_ids, self.item_ids], broadcast=True, hash=False)
        return [client.submit(_renumbered, *known, *group, pure=False) for group in groups]

    def _build(self, client, entries: list) -> dict[str, list]:
        """Each side's blocks, gathered on the workers from the groups' ``entries``, a
        side at a time: a worker holds the pieces of one side at once, beside the
        entries."""
        futures = {}
        for side in SIDES:
            futures[side] = _blocks(client, entries, side, self.bounds[side], self.shape,
                                    self.dtype, self.weighting)
            client.gather([client.submit(_n_rows, block, pure=False)
                           for block in futures[side]])  # (its pieces dropped)
        return futures

    def place(self, client) -> dict[str, list]:
        """Each block's future, once the block is in a worker's memory. After a worker was
        lost, every block is built again from the DataFrame: Dask keeps no copy of the
        partitions a lost block came from."""
        if not self.fresh:
            self.futures = self._build(client, self._entries(client, self._read(client)))
        self.fresh = False
        client.gather([client.submit(_n_rows, block, pure=False)
                       for blocks in self.futures.values() for block in blocks])
        return self.futures

    def release(self) -> None:
        """Let the workers drop the blocks: the fit is over."""
        self.futures.clear()


# ---- on the workers ---------------------------------------------------------------------


def _read_partition(part, value_col: str | None, dtype) -> tuple[Any, int]:
    """A partition's rows as ``fit(df)`` reads a DataFrame's (None: it has none), and
    their number. Its values are kept in float64, so that a (user, item) pair repeated
    in several partitions is summed in float64 and rounded to ``dtype`` once, as
    ``fit(df)`` sums it; a value (or a partition's sum) beyond ``dtype``'s range is
    refused with ``fit(df)``'s error."""
    if len(part) == 0:
        return None, 0
    interactions = data.from_dataframe(part, value_col=value_col, dtype=np.float64)
    if np.abs(interactions.matrix.data).max() > np.finfo(dtype).max:
        data.from_dataframe(part, value_col=value_col, dtype=dtype)  # raises its error
    return interactions, len(part)


def _ids_and_rows(*group: tuple[Any, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """A group of partitions' (:func:`_read_partition`'s) distinct user and item ids,
    and their number of rows."""
    n_rows = sum(n for _, n in group)
    read = [interactions for interactions, _ in group if interactions is not None]
    if not read:
        return np.array([]), np.array([]), n_rows
    return (data.merged_ids([m.user_ids for m in read], "user"),
            data.merged_ids([m.item_ids for m in read], "item"), n_rows)


def _renumbered(user_ids, item_ids, *group: tuple[Any, int]) -> sp.coo_matrix:
    """A group of partitions' entries, in the rows and columns of the whole fit's ids
    (written into arrays made once for the group: the worker holds one copy of them)."""
    shape = (len(user_ids), len(item_ids))
    matrices = [(interactions, interactions.matrix.tocoo())
                for interactions, _ in group if interactions is not None]
    n = sum(m.nnz for _, m in matrices)
    index = np.int32 if max(shape) < 2**31 else np.int64
    rows, cols, values = np.empty(n, index), np.empty(n, index), np.empty(n, np.float64)
    end = 0
    for interactions, m in matrices:
        start, end = end, end + m.nnz
        rows[start:end] = data.id_positions(user_ids, interactions.user_ids)[m.row]
        cols[start:end] = data.id_positions(item_ids, interactions.item_ids)[m.col]
        values[start:end] = m.data
    return sp.coo_matrix((values, (rows, cols)), shape=shape)


def _counts(entries: sp.coo_matrix, shape) -> tuple[np.ndarray, np.ndarray]:
    """A group's entries per user and per item."""
    return (np.bincount(entries.row, minlength=shape[0]),
            np.bincount(entries.col, minlength=shape[1]))


def _added(a, b):
    """Two groups' :func:`_counts` summed."""
    return a[0] + b[0], a[1] + b[1]


def _merged(a, b):
    """Two groups' (or merged groups') :func:`_ids_and_rows` merged: the distinct
    ids of both, sorted as ``fit(df)`` sorts them, and their numbers of rows added."""
    return _union(a[0], b[0], "user"), _union(a[1], b[1], "item"), a[2] + b[2]


def _union(x: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    if len(x) == 0 or len(y) == 0:  # (an empty group's, of no dtype in particular)
        return y if len(x) == 0 else x
    return data.merged_ids([x, y], name)


def _pieces(entries: sp.coo_matrix, side: str, bounds: list[tuple[int, int]]) -> list:
    """A group's entries cut into the blocks of ``side``: for each, (row within the
    block, column, value)."""
    rows, cols = (entries.row, entries.col) if side == "user" else (entries.col, entries.row)
    order = np.argsort(rows, kind="stable")
    rows, cols, values = rows[order], cols[order], entries.data[order]
    ends = np.searchsorted(rows, [last for _, last in bounds])
    starts = np.concatenate([[0], ends[:-1]])
    return [(rows[a:b] - first, cols[a:b], values[a:b])
            for (first, _), a, b in zip(bounds, starts, ends)]


def _block(n_rows: int, n_cols: int, dtype, weighting: dict, *pieces) -> data.WeightedRows:
    """One block's weighted rows from its pieces of every group, repeated (row,
    column) pairs summed as ``fit(df)`` sums them."""
    rows, cols, values = (np.concatenate([piece[i] for piece in pieces]) for i in range(3))
    csr = sp.csr_matrix((values, (rows, cols)), shape=(n_rows, n_cols))  # (float64)
    csr.sum_duplicates()
    if np.abs(csr.data).max(initial=0) > np.finfo(dtype).max:
        raise ValueError(f"the values of a (user, item) pair repeated across the "
                         f"DataFrame's partitions sum beyond {np.dtype(dtype).name}'s range "
                         f"(largest magnitude {np.finfo(dtype).max:.3g}): scale the values "
                         f"down or use dtype=float64")
    return data.weighted_rows(csr.astype(dtype), **weighting)


def _counted(totals: list[dict[str, Any]]) -> np.ndarray:
    """Each row's count for a scaled penalty, from its side's blocks' :func:`_totals`
    (float64, as :meth:`gpu_als.backends.base.Backend.entry_counts` gives them)."""
    return np.concatenate([t["counts"] for t in totals]).astype(np.float64)


def _n_rows(block: data.WeightedRows) -> int:
    return block.n_rows


def _totals(block: data.WeightedRows, p: dict[str, Any]) -> dict[str, Any]:
    """What the driver needs of a block: its rows' counts for a scaled penalty (their
    entries, or with implicit feedback their positive ones); of a user block, also its
    share of the loss's constant, its largest confidence (implicit) or rating magnitude
    (explicit), and whether it has a positive value."""
    counts = get_backend("cpu").row_counts(block, positive=p["feedback"] == "implicit")
    return {"counts": counts, "loss_constant": block.loss_constant,
            "entries": len(block.indices), "positive": bool((block.target > 0).any()),
            "largest": largest_input(block, p) if len(block.indices) else 0.0}


# ---- on the driver ----------------------------------------------------------------------


def _reduced(client, futures: list, combine):
    """The future of the futures' results combined two by two on the workers
    (``combine(a, b)``)."""
    while len(futures) > 1:
        pairs = [client.submit(combine, a, b, pure=False)
                 for a, b in zip(futures[::2], futures[1::2])]
        futures = pairs + futures[len(pairs) * 2:]
    return futures[0]


def _by_worker(client, futures: list) -> list[list]:
    """The ``futures`` (in memory on the workers) in groups held by one worker each,
    as many per worker as it has threads: the tasks of a group find its data where
    they run."""
    holders, threads = client.who_has(futures), client.nthreads()
    held: dict[Any, list] = {}
    for future in futures:
        held.setdefault(next(iter(holders.get(future.key) or ()), None), []).append(future)
    groups = []
    for worker, on in held.items():
        n = min(len(on), threads.get(worker, 1))
        groups += [on[k::n] for k in range(n)]
    return groups


def _wait_for_reads(client, reads: list, show_progress: bool) -> None:
    """Wait until every one of the partitions' reads (futures) has ended, with a progress
    bar (on a terminal, with ``show_progress``); the first that fails raises its error
    then, not once the others are read."""
    from distributed import as_completed

    with tqdm(total=len(reads), desc="reading the Dask DataFrame", unit="partition",
              disable=None if show_progress else True) as progress:
        # (the client's loop: without it, as_completed looks for Dask's default client)
        for read in as_completed(reads, loop=client.loop):
            if read.status == "error":
                read.result()  # (raises its error)
            progress.update()


def _cuts(counts: np.ndarray, n_blocks: int) -> list[tuple[int, int]]:
    """Contiguous runs of rows with about equal numbers of entries (``counts``: each
    row's): each block's first and last row."""
    return block_bounds(np.concatenate([[0], np.cumsum(counts)]), n_blocks)


def block_bounds(indptr: np.ndarray, n_blocks: int) -> list[tuple[int, int]]:
    """Contiguous runs of the rows of ``indptr`` with about equal numbers of entries,
    at most ``n_blocks``: each one's first and last row. (Also the cut of a matrix's
    blocks, :func:`gpu_als.distributed._split`.)"""
    cuts = np.searchsorted(indptr, np.linspace(0, int(indptr[-1]), n_blocks + 1)[1:-1])
    bounds = np.unique(np.concatenate([[0], cuts, [len(indptr) - 1]]))
    return [(int(first), int(last)) for first, last in zip(bounds[:-1], bounds[1:])]


def _blocks(client, entries: list, side: str, bounds, shape, dtype, weighting) -> list:
    """The blocks of ``side`` on the workers, each gathered from its piece of every
    group's ``entries``."""
    n_cols = shape[1] if side == "user" else shape[0]
    pieces = [client.submit(_pieces, e, side, bounds, pure=False) for e in entries]
    return [client.submit(_block, last - first, n_cols, dtype, weighting,
                          *[client.submit(operator.getitem, p, b, pure=False) for p in pieces],
                          pure=False)
            for b, (first, last) in enumerate(bounds)]
