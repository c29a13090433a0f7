"""Queries by original ids, as tables: recommendations (:meth:`gpu_als.ALS.recommend_frame`,
``gpu-als recommend``), similar items or users (:meth:`gpu_als.ALS.similar_items_frame`,
``similar_users_frame``, ``gpu-als similar``), predictions for pairs
(:meth:`gpu_als.ALS.predict_frame`, ``gpu-als predict``), the factors themselves
(:meth:`gpu_als.ALS.item_factors_frame`, ``gpu-als export``) and scores split over a user's
items (:meth:`gpu_als.ALS.explain_frame`, ``gpu-als explain``); one implementation for
Python and the command line.

Users and items are named by a model's ids (``user_ids_``, ``item_ids_``; factor rows for
a model without ids). The users' interactions, a DataFrame of (user, item, value) rows,
give the items to leave out of their recommendations, and fold in the users the model
lacks: an exact solve against the item factors, no retraining.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import (
    _column,
    _eager_frame,
    check_bool,
    check_int,
    first_of_each,
    frame_positions,
    id_array,
    id_positions,
    is_dataframe,
    missing_at,
    pair_positions,
    short_repr,
    warn_summed_ratings,
)

#: Queries per call of ``recommend`` (and per step of the progress bar).
QUERY_BATCH = 10_000


def id_map(ids: Any, n: int) -> np.ndarray:
    """A model's ids for its ``n`` factor rows, or the row numbers if it has none."""
    return np.arange(n) if ids is None else np.asarray(ids)


def lookup(model: Any, side: str) -> Any:
    """How to find ids among the model's ``side`` ("user" or "item"): the lookup kept
    with the model (``ALS._id_index``, built once: hashing 27,000 ids anew took 16 ms a
    query), or the numbers of its factor rows where it has no ids."""
    if getattr(model, f"{side}_ids_") is None:
        return id_map(None, getattr(model, f"{side}_factors_").shape[0])
    return model._id_index(side)


def find(known: Any, ids: Any) -> np.ndarray:
    """The rows of ``ids`` in ``known`` (a :func:`lookup`), ``-1`` where absent, as
    :func:`gpu_als.data.id_positions` finds them."""
    if callable(getattr(known, "positions", None)):
        return known.positions(np.atleast_1d(np.asarray(ids)))
    return id_positions(known, ids)


def each_once(ids: Any, what: str) -> np.ndarray:
    """One id or a 1-D array-like of them (``what`` in the message where it is not), each
    once in the order given (:func:`gpu_als.data.first_of_each`)."""
    ids = np.atleast_1d(id_array(ids))
    if ids.ndim > 1:
        raise ValueError(f"{what} must be one id or 1-D, got shape {ids.shape}")
    return first_of_each(ids)


def examples(ids: np.ndarray) -> str:
    """The first three of ``ids`` for a message: ``'a', 'b', 'c', ...``."""
    return ", ".join(map(short_repr, ids[:3].tolist())) + (", ..." if len(ids) > 3 else "")


def ranked_table(header: list[str], queries: np.ndarray, top: np.ndarray, scores: np.ndarray,
                 results: np.ndarray) -> dict[str, np.ndarray]:
    """Columns ``header`` = (query, result, rank, score) of the rankings ``top`` (result
    rows, one row of them per query; ``-1``: nothing left at that rank, left out), the
    queries and results named by ``queries`` and ``results[top]``."""
    present = top >= 0
    return dict(zip(header, (np.repeat(queries, present.sum(axis=1)), results[top[present]],
                             np.cumsum(present, axis=1)[present], scores[present])))


def batches(n: int, desc: str, show_progress: bool | None = None) -> Iterator[slice]:
    """Slices of :data:`QUERY_BATCH` over ``range(n)``, with a progress bar on standard
    error (``show_progress`` None: where that is a terminal)."""
    from tqdm.auto import tqdm

    disable = None if show_progress is None else not show_progress
    with tqdm(total=n, desc=desc, unit="query", disable=disable, file=sys.stderr) as bar:
        for start in range(0, n, QUERY_BATCH):
            stop = min(start + QUERY_BATCH, n)
            yield slice(start, stop)
            bar.update(stop - start)


def rows_against(df: Any, row_col: str, column_col: str, value_col: str | None,
                 column_ids: Any, row_ids: Any = None, feedback: str = "implicit",
                 name: str = "df", dtype: Any = np.float32):
    """The rows of ``df`` as a matrix whose columns are a model's ``column_ids`` (or
    their :func:`lookup`; rows of ``df`` naming a column the model lacks left out), the
    ids of its rows (``row_ids`` when given), and how many rows of ``df`` named an
    unknown column. For a model of
    ``feedback="explicit"``, the warning of ratings summed. ``name``: ``df`` in messages;
    ``dtype``: the model's, which the values must fit."""
    df = _eager_frame(df, name)  # a pyarrow Table, a cuDF DataFrame: read once, as pandas
    (R, ids, _), rows, columns = frame_positions(
        df, row_col, column_col, value_col, dtype=dtype, user_ids=row_ids,
        item_ids=column_ids, drop_unknown=True)
    used = columns >= 0
    unknown = int((~used).sum())
    if feedback == "explicit":
        used &= rows >= 0
        warn_summed_ratings(int(used.sum()), R, (row_col, column_col))
    return R, ids, unknown


@dataclass
class Recommendations:
    """What :func:`recommend_by_id` found."""

    #: Columns ``user``, ``item``, ``rank`` (1 = best), ``score`` (the names of
    #: ``sides``): a row per recommendation, each user's best first, the users in the
    #: order asked for.
    table: dict[str, np.ndarray]
    #: Items per user asked for (fewer where filtering left fewer).
    N: int
    #: Whether each user's items in the interactions were left out.
    filtered: bool
    #: Users recommended for with their fitted factors.
    n_known: int
    #: Users the model lacks, folded in from their interactions.
    n_folded_in: int
    #: Users the model lacks that have no interactions with its items: no recommendations.
    skipped: np.ndarray
    #: Rows of the interactions that name items the model lacks (left out).
    n_unknown_item_rows: int


def item_rows_eligible(item_ids: Any, items: Any = None, filter_items: Any = None,
                       item: str = "item") -> dict[str, np.ndarray]:
    """An allowlist and a blocklist of item ids as ``recommend``'s ``items`` or
    ``filter_items`` (rows; the blocklist alone stays one: scoring every item is cheaper
    than gathering the others' factors). Ids the model lacks are ignored, but an allowlist
    must name one it has. ``item_ids``: the model's, or their :func:`lookup`; ``item``:
    what the items are called in messages ("user" where users are ranked for items)."""
    def rows_of(ids: np.ndarray) -> np.ndarray:
        rows = find(item_ids, ids)
        return np.unique(rows[rows >= 0])

    blocked = None if filter_items is None else rows_of(np.atleast_1d(np.asarray(filter_items)))
    if items is None:
        return {} if blocked is None else {"filter_items": blocked}
    wanted = np.atleast_1d(np.asarray(items))
    allowed = rows_of(wanted)
    if len(allowed) == 0 and len(wanted):
        if len(wanted) == 1:
            raise ValueError(f"the model lacks {item} {examples(wanted)}, the only {item} to "
                             f"recommend among")
        raise ValueError(f"the model has none of the {len(wanted):,} {item}s to recommend among "
                         f"(e.g. {examples(wanted)})")
    return {"items": allowed if blocked is None else np.setdiff1d(allowed, blocked)}


def recommend_by_id(model: Any, users: Any = None, interactions: Any = None, N: int = 10, *,
                    filter_already_liked_items: bool = True, items: Any = None,
                    filter_items: Any = None, user_col: str = "user", item_col: str = "item",
                    value_col: str | None = "value", show_progress: bool | None = None,
                    sides: tuple[str, str] = ("user", "item")) -> Recommendations:
    """The top ``N`` items of each user, by the model's ids; see
    :meth:`gpu_als.ALS.recommend_frame` for the arguments. Raises ``ValueError`` when no
    user is left to recommend for. ``sides``: what the model's users and items are called
    in messages (``("item", "user")`` for a model transposed to rank users for items:
    :meth:`gpu_als.ALS.recommend_users_frame`)."""
    user, item = sides
    N = check_int("N", N, minimum=1)
    filter_already_liked_items = check_bool(f"filter_already_liked_{item}s",
                                            filter_already_liked_items)
    user_ids = id_map(model.user_ids_, model.user_factors_.shape[0])
    item_ids = id_map(model.item_ids_, model.item_factors_.shape[0])
    users_at, items_at = lookup(model, "user"), lookup(model, "item")
    eligible = item_rows_eligible(items_at, items, filter_items, item)
    named = None
    if is_dataframe(users):
        raise TypeError(f"{user}s is a {type(users).__name__}: pass a table of ({user}, "
                        f"{item}, value) rows as interactions= (its {user}s are then "
                        f"recommended for), or name the {user}s by their ids")
    if users is not None:
        named = each_once(users, f"{user}s")
    R = None
    if interactions is not None and not is_dataframe(interactions):
        hint = "; for a matrix whose rows are factor rows' interactions, use " \
            "recommend(rows, user_items)" if user == "user" else ""
        raise TypeError(f"interactions must be a DataFrame of ({user}, {item}, value) rows, "
                        f"got {type(interactions).__name__}{hint}")
    if interactions is not None:
        # the users' rows (every user of the interactions unless named), with the model's
        # item columns; rows of items the model lacks are left out
        R, wanted, unknown_items = rows_against(
            interactions, user_col, item_col, value_col, items_at, row_ids=named,
            feedback=model.feedback, name="interactions", dtype=model.dtype)
        has_rows = R.getnnz(axis=1) > 0
    else:
        wanted = user_ids if named is None else named
        has_rows = np.zeros(len(wanted), dtype=np.bool_)
        unknown_items = 0
    rows = find(users_at, wanted)
    known = np.flatnonzero(rows >= 0)
    fold_in = np.flatnonzero((rows < 0) & has_rows)
    skipped = wanted[(rows < 0) & ~has_rows]
    if len(known) + len(fold_in) == 0 and len(wanted):  # (none asked for: no rows, as
        if len(wanted) == 1:                            # similar_by_id answers none)
            raise ValueError(f"{user} {examples(skipped)} is not in the model and has no "
                             f"interactions with its {item}s to fold in")
        raise ValueError(f"none of the {len(wanted):,} {user}s is in the model or has "
                         f"interactions with its {item}s to fold in (e.g. {examples(skipped)})")
    filtered = R is not None and bool(filter_already_liked_items)
    N = min(N, len(item_ids))
    top = np.full((len(wanted), N), -1, np.int64)
    scores = np.zeros((len(wanted), N))
    for chosen, fold in ((known, False), (fold_in, True)):
        for part in batches(len(chosen), "fold-in" if fold else "recommend", show_progress):
            at = chosen[part]
            ids, s = model.recommend(
                np.arange(len(at)) if fold else rows[at],
                R[at] if R is not None else None, N=N, recalculate_user=fold,
                filter_already_liked_items=filtered, **eligible)
            top[at, :ids.shape[1]], scores[at, :ids.shape[1]] = ids, s
    # the users as the model has them ("5" typed on a command line: its id 5), unless some
    # are new to it (a column of one type)
    queries = user_ids[rows] if len(known) == len(wanted) else wanted
    table = ranked_table([user, item, "rank", "score"], queries, top, scores, item_ids)
    return Recommendations(table, N, filtered, len(known), len(fold_in), skipped,
                           unknown_items)


@dataclass
class Similarities:
    """What :func:`similar_by_id` found."""

    #: Columns ``<kind>``, ``similar_<kind>``, ``rank`` (1 = most similar) and ``score``
    #: (cosine of the factors): a row per pair, the queries in the order asked for.
    table: dict[str, np.ndarray]
    #: Queries the model lacks, folded in from their interactions.
    n_folded_in: int
    #: Rows of the interactions that name users (for items; items, for users) the model
    #: lacks: left out.
    n_unknown_rows: int


def similar_by_id(model: Any, kind: str, query: Any = None, N: int = 10, *,
                  interactions: Any = None, user_col: str = "user", item_col: str = "item",
                  value_col: str | None = "value",
                  show_progress: bool | None = None) -> Similarities:
    """The ``N`` items (``kind`` "item") or users most similar to each of ``query`` (the
    model's ids, each once; default: all of them, or all of ``interactions``), the query
    itself left out. A query the model lacks is folded in from its rows of
    ``interactions`` (an exact solve against the other side's factors); one without rows
    is refused."""
    N = check_int("N", N, minimum=1)
    other = "user" if kind == "item" else "item"
    ids = id_map(getattr(model, f"{kind}_ids_"), getattr(model, f"{kind}_factors_").shape[0])
    named = None if query is None else each_once(query, f"{kind}s")
    R, n_unknown_rows = None, 0
    if interactions is not None:
        if not is_dataframe(interactions):
            raise TypeError(f"interactions must be a DataFrame of (user, item, value) rows, "
                            f"got {type(interactions).__name__}")
        columns = {"user": user_col, "item": item_col}
        R, query, n_unknown_rows = rows_against(
            interactions, columns[kind], columns[other], value_col, lookup(model, other),
            row_ids=named, feedback=model.feedback, name="interactions", dtype=model.dtype)
        has_rows = R.getnnz(axis=1) > 0
    else:
        query = ids if named is None else named
        has_rows = np.zeros(len(query), dtype=np.bool_)
    positions = find(lookup(model, kind), query)
    lacking = (positions < 0) & ~has_rows
    if lacking.any():
        rows = f" and no interactions with its {other}s to fold in" if R is not None else ""
        raise ValueError(f"the model has no {kind} {examples(query[lacking])} "
                         f"({lacking.sum():,} of the {len(query):,} given){rows}")
    known, fold = np.flatnonzero(positions >= 0), np.flatnonzero(positions < 0)
    n_known, n_new = min(N, len(ids) - 1), min(N, len(ids))  # (a known one is left out)
    top = np.full((len(query), n_new if len(fold) else n_known), -1, np.int64)
    scores = np.zeros(top.shape)
    similar = model.similar_items if kind == "item" else model.similar_users
    for part in batches(len(known) if n_known > 0 else 0, f"similar {kind}s", show_progress):
        at = known[part]
        found, s = similar(positions[at], N=n_known + 1)
        # the query itself (normally first, with cosine 1) moves to the end and is cut
        order = np.argsort(found == positions[at, None], axis=1, kind="stable")[:, :n_known]
        top[at, :n_known] = np.take_along_axis(found, order, axis=1)
        scores[at, :n_known] = np.take_along_axis(s, order, axis=1)
    fixed, factors = getattr(model, f"{other}_factors_"), getattr(model, f"{kind}_factors_")
    for part in batches(len(fold), f"similar {kind}s (folded in)", show_progress):
        at = fold[part]
        assert R is not None  # (a query the model lacks has rows of interactions)
        folded = model._fold_in(R[at], fixed, len(at), f"{kind}_{other}s")
        top[at], scores[at] = model._similar(factors, np.arange(len(at)), n_new, None, None,
                                             kind, queries=folded)
    # the queries as the model has them ("5" typed on a command line: its id 5), unless
    # some are new to it (a column of one type)
    queries = ids[positions] if len(fold) == 0 else query
    return Similarities(ranked_table([kind, f"similar_{kind}", "rank", "score"], queries, top,
                                     scores, ids), len(fold), n_unknown_rows)


def factors_by_id(model: Any, kind: str, query: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``kind`` ("user" or "item") factors of ``query`` (the model's ids, each once, in
    the order given; default: every one, in the model's order): the ids as the model has
    them ("5" typed on a command line: its id 5) and their factor rows, copied to the host.
    An id the model lacks is refused."""
    ids = id_map(getattr(model, f"{kind}_ids_"), getattr(model, f"{kind}_factors_").shape[0])
    factors = getattr(model, f"{kind}_factors_")
    if query is None:
        positions = np.arange(len(ids))
    else:
        named = each_once(query, f"{kind}s")
        positions = find(lookup(model, kind), named)
        lacking = positions < 0
        if lacking.any():
            raise ValueError(f"the model has no {kind} {examples(named[lacking])} "
                             f"({lacking.sum():,} of the {len(named):,} given)")
    backend = model._backend
    rows = backend.to_numpy(factors if query is None else factors[backend.asarray(positions)])
    if isinstance(factors, np.ndarray) and np.shares_memory(rows, factors):
        rows = rows.copy()  # the rows handed out are the caller's to change, not the model's
    return ids[positions], rows


@dataclass
class Predictions:
    """What :func:`predict_by_id` found."""

    #: ``x_u . y_i`` of each pair, in the factors' dtype; NaN where the model lacks either.
    scores: np.ndarray
    #: Pairs the model lacks the user or the item of.
    n_unknown: int
    #: The users and the items the model lacks, each once, in order of appearance.
    unknown_users: np.ndarray
    unknown_items: np.ndarray

    def lacking(self) -> str:
        """``2 users, e.g. 'zoe', 'amy'; 1 item, e.g. 999`` for a message."""
        return "; ".join(f"{len(ids)} {side}{'s' if len(ids) > 1 else ''}, e.g. {examples(ids)}"
                         for side, ids in (("user", self.unknown_users),
                                           ("item", self.unknown_items)) if len(ids))


def predict_by_id(model: Any, df: Any, user_col: str = "user", item_col: str = "item"
                  ) -> Predictions:
    """``model.predict`` of each (user, item) row of ``df`` (an eager pandas or polars
    DataFrame), the pair named by the model's ids (factor rows for a model without ids)."""
    X = model.user_factors_
    rows, cols = pair_positions(df, user_col, item_col, lookup(model, "user"),
                                lookup(model, "item"))
    known = (rows >= 0) & (cols >= 0)
    scores = np.full(len(rows), np.nan, X.dtype)
    if known.any():
        scores[known] = model.predict(rows[known], cols[known])
    return Predictions(scores, int((~known).sum()),
                       each_once(_column(df, user_col)[rows < 0], user_col),
                       each_once(_column(df, item_col)[cols < 0], item_col))


def explain_by_id(model: Any, user: Any, interactions: Any, items: Any, N: int = 10, *,
                  user_col: str = "user", item_col: str = "item",
                  value_col: str | None = "value", name: str = "interactions"
                  ) -> tuple[dict[str, list], int, int]:
    """:meth:`gpu_als.ALS.explain` of each of ``items`` (the model's ids, each once, in the
    order given) for ``user``, from the user's rows of ``interactions`` (a DataFrame of
    (user, item, value) rows; the user need not be in the model): the columns ``user``,
    ``item``, ``score``, ``because_item`` and ``contribution``, up to ``N`` rows per item,
    largest contribution first; how many items, and how many of the user's interactions
    name items the model has. ``name``: ``interactions`` in messages."""
    N = check_int("N", N, minimum=1)
    named = id_array(user)
    if named.ndim != 0:
        raise ValueError(f"user must be one id, got {short_repr(user)}: explain_frame "
                         f"explains the scores of one user")
    if missing_at(named.reshape(1)) is not None:
        raise ValueError(f"user is a missing id ({user!r})")
    if not is_dataframe(interactions):
        raise TypeError(f"{name} must be a DataFrame of (user, item, value) rows, got "
                        f"{type(interactions).__name__}")
    item_ids = id_map(model.item_ids_, model.item_factors_.shape[0])
    items_at = lookup(model, "item")
    wanted = each_once(items, "items")
    positions = find(items_at, wanted)
    if (positions < 0).any():
        raise ValueError(f"the model has no item {examples(wanted[positions < 0])}")
    row, _, _ = rows_against(interactions, user_col, item_col, value_col, items_at,
                             row_ids=named.reshape(1), feedback=model.feedback, name=name,
                             dtype=model.dtype)
    if row.nnz == 0:
        raise ValueError(f"{name} has no interactions of user {user!r} with items the "
                         f"model has: nothing to explain")
    header = ("user", "item", "score", "because_item", "contribution")
    table: dict[str, list] = {column: [] for column in header}
    weights = None  # the user's factorization, reused for every item
    for position in positions.tolist():
        score, top, weights = model.explain(0, row, position, user_weights=weights, N=N)
        for other, contribution in top:
            for column, value in zip(header, (user, item_ids[position], score,
                                              item_ids[other], contribution)):
                table[column].append(value)
    return table, len(positions), int(row.nnz)
