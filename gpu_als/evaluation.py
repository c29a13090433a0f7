"""Offline evaluation: per-user splits (at random, or by time with :func:`temporal_split`),
ranking metrics at K, and two baselines.

The protocol of DESIGN.md section 6: positives are ratings >= 4; for every user, 20 % of
their positives (seeded) go to the test set; models are trained on the rest and recommend
``K`` items per test user with the training positives filtered out.

Examples
--------
>>> from gpu_als import ALS
>>> from gpu_als.datasets import make_power_law
>>> from gpu_als.evaluation import PopularityRecommender, ranking_metrics, train_test_split
>>> R = make_power_law(300, 200, 6000, random_state=0, device="cpu")
>>> train, test = train_test_split(R, test_fraction=0.2, random_state=42)
>>> model = ALS(factors=16, iterations=5, backend="cpu", show_progress=False,
...             random_state=0).fit(train)
>>> metrics = ranking_metrics(model, train, test, K=10)
>>> sorted(metrics)
['map', 'ndcg', 'precision', 'recall', 'users']
>>> baseline = ranking_metrics(PopularityRecommender().fit(train), train, test, K=10)
>>> metrics["users"] == baseline["users"]
True
"""

from __future__ import annotations

import datetime
import logging
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, overload

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .backends.base import csr_pairs, query_result
from .data import (
    _check_columns,
    _check_frame,
    _column,
    _eager_frame,
    _id_column,
    _index_hint,
    _library,
    _positions,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_named_once,
    check_random_state,
    check_rows_for,
    check_user_items,
    check_user_items_allow_empty,
    counted,
    described,
    frame_interactions,
    frame_positions,
    is_dataframe,
    kept_dtype,
    missing_columns,
    row_name,
    short_repr,
    user_stacklevel,
)
from .exceptions import NotFittedError

__all__ = ["train_test_split", "leave_k_out_split", "temporal_split", "held_out_split", "binarize",
           "ranking_metrics", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "auc",
           "rmse", "personalization", "validation_score", "scorable_part", "metric_name",
           "EarlyStopping",
           "PopularityRecommender", "RandomRecommender", "AUC_BLOCK_SCORES", "COMPARE_LIMIT",
           "VALIDATION_METRICS", "LOWER_IS_BETTER"]


logger = logging.getLogger("gpu_als")


def binarize(ratings: Any, threshold: float = 4.0) -> sp.csr_matrix:
    """The entries with value ``>= threshold``, each set to 1 (float32 CSR)."""
    threshold = check_float("threshold", threshold, minimum=-np.inf)
    csr = check_user_items(ratings, kept_dtype(ratings), name="ratings")
    keep = csr.data >= threshold
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[keep]
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows, csr.indices[keep])), shape=csr.shape
    )


def train_test_split(
    user_items: Any, *implicit_args: Any, test_fraction: float = 0.2,
    random_state: int | None = 42, train_percentage: Any = None, user_col: str = "user",
    item_col: str = "item",
) -> tuple[Any, Any]:
    """Split each user's stored entries into train and test.

    A user with ``n >= 2`` entries gets ``max(1, round(test_fraction * n))`` of them, but
    at most ``n - 1``, chosen uniformly at random, in the test set: every user keeps at
    least one entry in train (a user with one entry keeps it there).
    ``test_fraction`` is a keyword (as scikit-learn's ``test_size``): the implicit
    library's ``train_test_split(ratings, 0.8)`` means 80 % *train*.

    A DataFrame is split by its (user, item) pairs, the entries of the matrix
    ``from_dataframe(df).matrix``: every row of a pair (a repeated play or purchase) goes
    to the same part, so that no test item is one the user has in train; with the same
    ``random_state``, the pairs in test are that matrix's test entries.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        A DataFrame (pandas or polars, or a table :func:`gpu_als.from_dataframe` reads)
        of one row per interaction, in the columns ``user_col`` and ``item_col``.
    test_fraction : float in (0, 1), default 0.2
    random_state : int or None, default 42
    *implicit_args, train_percentage
        implicit's spelling, refused with a ``TypeError`` that gives the
        ``test_fraction`` meant (its 0.8 is 0.2 here), rather than misread.
    user_col, item_col : str, default "user", "item"
        A DataFrame's id columns.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix, shape (n_users, n_items), or DataFrame
        Disjoint, and together the entries of ``user_items`` (float64 values stay
        float64, others become float32); for a DataFrame, its rows
        in their order (a pandas frame keeps its index), as a pandas DataFrame, or a
        polars one for polars ``df``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": ["a", "a", "a", "a", "b"], "item": [1, 2, 2, 3, 1]})
    >>> train, test = train_test_split(df, test_fraction=0.3, random_state=4)
    >>> test  # a's pair with item 2, both of its rows (b has one pair: kept in train)
      user  item
    1    a     2
    2    a     2
    """
    if implicit_args or train_percentage is not None:  # implicit's train_test_split call
        kept = implicit_args[0] if implicit_args else train_percentage
        hint = f" (test_fraction={1 - kept:g})" if isinstance(kept, (int, float)) \
            and 0 < kept < 1 else ""
        raise TypeError(
            f"train_test_split takes the share held out for testing as a keyword, "
            f"test_fraction=; the implicit library's train_test_split(ratings, "
            f"{kept!r}) keeps that share for training instead{hint}")
    if is_dataframe(user_items):
        return _split_frame(user_items, user_col, item_col, random_state,
                            lambda lengths: _test_counts(lengths, test_fraction, "entries"))
    csr = check_user_items(user_items, kept_dtype(user_items))
    return _split(csr, _test_counts(np.diff(csr.indptr), test_fraction, "entries"),
                  random_state)


def _test_counts(lengths: np.ndarray, test_fraction: float, what: str) -> np.ndarray:
    """How many of each user's ``lengths`` entries (or rows) go to test: none of one, else
    ``max(1, round(test_fraction * n))`` but at most ``n - 1``; warned of where that is
    none for every user (``what`` names the entries in the warning)."""
    test_fraction = check_float("test_fraction", test_fraction, strict=True)
    if test_fraction >= 1:
        raise ValueError(f"test_fraction={test_fraction}: must be < 1")
    n_test = np.where(lengths >= 2, np.clip(np.rint(test_fraction * lengths), 1, lengths - 1),
                      0).astype(np.int64)
    if not n_test.any():
        warnings.warn(f"no user has 2 or more {what}: all of them stay in train and the "
                      f"test set is empty", UserWarning, stacklevel=user_stacklevel())
    return n_test


def held_out_split(user_items: Any, test_fraction: float, random_state: int | None,
                   purpose: str, where: str = "") -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """:func:`train_test_split` where the held-out part must not be empty (a validation
    set, the command line's test set): where no user has 2 or more entries, a
    ``ValueError`` that ``where`` starts ("--early-stopping: ") and ``purpose`` ends
    ("validation") rather than the split's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "no user has 2 or more entries")
        train, held_out = train_test_split(user_items, test_fraction=test_fraction,
                                           random_state=random_state)
    if held_out.nnz == 0:
        raise ValueError(f"{where}no user has 2 or more interactions, so there is nothing "
                         f"to hold out for {purpose}")
    return train, held_out


def leave_k_out_split(
    user_items: Any, K: int = 1, random_state: int | None = 42, *, user_col: str = "user",
    item_col: str = "item",
) -> tuple[Any, Any]:
    """Hold out ``K`` entries of each user who has more than ``K`` (leave-one-out with the
    default ``K = 1``, as implicit's ``leave_k_out_split``); the others stay in train.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        A DataFrame is split by its (user, item) pairs, as :func:`train_test_split` splits
        one.
    K : int >= 1, default 1
    random_state : int or None, default 42
    user_col, item_col : str, default "user", "item"
        A DataFrame's id columns.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix, shape (n_users, n_items), or DataFrame
        Disjoint, and together the entries of ``user_items`` (float64 values stay
        float64, as in :func:`train_test_split`); each user has ``K``
        entries (pairs) in test or none.
    """
    K = check_int("K", K, minimum=1)
    if is_dataframe(user_items):
        return _split_frame(user_items, user_col, item_col, random_state,
                            lambda lengths: _latest_counts(lengths, K, "entries"))
    csr = check_user_items(user_items, kept_dtype(user_items))
    return _split(csr, _latest_counts(np.diff(csr.indptr), K, "entries"), random_state)


def _latest_counts(lengths: np.ndarray, K: int, what: str) -> np.ndarray:
    """``K`` for each user of more than ``K`` entries (or rows), else 0; warned of where
    that is 0 for every user (``what`` names the entries in the warning)."""
    if not (lengths > K).any():
        warnings.warn(f"no user has more than K={K} {what} (the most: {lengths.max()}): "
                      f"all of them stay in train and the test set is empty", UserWarning,
                      stacklevel=user_stacklevel())
    return np.where(lengths > K, K, 0)


def temporal_split(
    df: Any, time_col: str = "timestamp", *, test_fraction: float | None = None,
    K: int | None = None, cutoff: Any = None, user_col: str = "user",
) -> tuple[Any, Any]:
    """Split a DataFrame of interactions by time: the later rows go to test.

    * By default, each user's latest ``test_fraction`` (0.2) of their rows: a user with
      ``n >= 2`` rows gets the last ``max(1, round(test_fraction * n))`` of them, but at
      most ``n - 1``, in test (as :func:`train_test_split` counts), so that a model is
      asked what each user did next rather than to fill in gaps at random.
    * With ``K``, each user's latest ``K`` rows, for the users with more than ``K`` (as
      :func:`leave_k_out_split` counts): ``K=1`` is the leave-last-one-out protocol of
      next-item evaluation.
    * With ``cutoff``, every row at or after that time goes to test and every row before
      it to train: no train row is later than a test row, as in production, where a
      model trained up to a day serves the days after it. ``df[time_col].quantile(0.8)``
      makes the latest 20 % of all rows the test set.

    Rows with the same time keep their order in ``df``: the later row counts as later.
    Each row is one interaction, so a (user, item) pair with rows on both sides of the
    split is in both parts (a repeat purchase or play); :func:`ranking_metrics` counts
    such test items as missed, with a warning, and
    ``from_dataframe(test, user_ids=..., item_ids=..., drop_unknown=True)`` makes the
    test matrix of the model's users and items (see the guide's example).

    Parameters
    ----------
    df : pandas or polars DataFrame (or a table :func:`gpu_als.from_dataframe` reads)
        One row per interaction.
    time_col : str, default "timestamp"
        When each interaction happened: numbers (e.g. Unix seconds, as MovieLens has
        them) or datetimes (a column with a time zone is compared in UTC).
    test_fraction : float in (0, 1), optional
        Each user's share of rows held out (0.2 when neither it, ``K`` nor ``cutoff`` is
        given).
    K : int >= 1, optional
        Each user's number of rows held out, instead.
    cutoff : number, datetime or date text, optional
        The first time in test (instead of ``test_fraction``): a number for a column of
        numbers; a datetime, ``numpy.datetime64`` or text such as ``"1998-03-01"`` for
        datetimes (without a time zone: UTC).
    user_col : str, default "user"
        The users' column (not read with ``cutoff``).

    Returns
    -------
    train, test : DataFrame
        ``df``'s rows in their order (a pandas frame keeps its index), a pandas DataFrame,
        or a polars one for polars ``df``; together all of ``df``'s rows.

    Raises
    ------
    ValueError
        For a missing column or time, more than one of ``test_fraction``, ``K`` and
        ``cutoff``, or a ``cutoff`` that leaves train or test empty.
    TypeError
        For a time column that holds neither numbers nor datetimes, or a ``cutoff`` of
        the other kind.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": ["a", "a", "a", "b", "b"], "item": [1, 2, 3, 1, 4],
    ...                    "timestamp": [30, 10, 20, 5, 6]})
    >>> train, test = temporal_split(df, test_fraction=0.3)
    >>> test  # a's latest (item 1, at 30) and b's (item 4, at 6)
      user  item  timestamp
    0    a     1         30
    4    b     4          6
    >>> train, test = temporal_split(df, K=2)  # b has no more than 2 rows: none held out
    >>> test["item"].tolist()
    [1, 3]
    >>> train, test = temporal_split(df, cutoff=20)
    >>> test["timestamp"].tolist()
    [30, 20]
    """
    given = [name for name, value in (("test_fraction", test_fraction), ("K", K),
                                      ("cutoff", cutoff)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of test_fraction (each user's latest share), K (each "
                         f"user's latest K rows) and cutoff (one time for all users), not "
                         f"{' and '.join(given)}")
    if K is not None:
        K = check_int("K", K, minimum=1)
    frame = _eager_frame(_check_frame(df))
    for name, value in (("time_col", time_col), ("user_col", user_col)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a column name (a str), got "
                            f"{type(value).__name__}")
    if cutoff is None and user_col == time_col:
        raise ValueError(f"user_col and time_col are both {time_col!r}: name the column of "
                         f"the users and the column of the times")
    check_named_once(frame, (time_col,) if cutoff is not None else (time_col, user_col))
    if cutoff is None and user_col not in frame.columns:
        raise missing_columns(frame, {"user_col": user_col})
    times = _times(frame, time_col)
    _check_rows(frame)
    if cutoff is not None:
        is_test = times >= _cutoff_like(cutoff, times)
        if is_test.all() or not is_test.any():
            raise ValueError(f"cutoff={cutoff!r} leaves the "
                             f"{'train' if is_test.all() else 'test'} part empty: column "
                             f"{time_col!r} runs from {times.min()} to {times.max()}")
    else:
        _, users = _positions(_id_column(frame, user_col), None, user_col, False)
        lengths = np.bincount(users)
        if K is None:
            n_test = _test_counts(lengths, 0.2 if test_fraction is None else test_fraction,
                                  "rows")
        else:
            n_test = _latest_counts(lengths, K, "rows")
        order = np.lexsort((times, users))  # stable: rows of one time keep their order
        ranked = users[order]
        from_end = np.cumsum(lengths)[ranked] - np.arange(len(order))  # 1 for the last
        is_test = np.empty(len(order), dtype=bool)
        is_test[order] = from_end <= n_test[ranked]
    return _rows(frame, ~is_test), _rows(frame, is_test)


def _times(df: Any, name: str) -> np.ndarray:
    """Column ``name`` of ``df`` as numbers or ``datetime64`` (UTC), refused where it is
    missing, holds anything else, or has a missing time."""
    if name not in df.columns:
        error = missing_columns(df, {"time_col": name})
        raise ValueError(f"{error}: name the column of the times with time_col=")
    column = df[name]
    missing = np.asarray(column.is_null() if hasattr(column, "is_null") else column.isna())
    times = _column(df, name)
    if not missing.any():
        if times.dtype.kind == "O":  # pandas' nullable numbers, say
            try:
                times = times.astype(np.float64)
            except (TypeError, ValueError):
                pass
        if times.dtype.kind not in "iufM":
            example = next(iter(times[:1].tolist()), None)
            raise TypeError(f"column {name!r} has dtype {column.dtype}: expected numbers or "
                            f"datetimes (e.g. {example!r}); convert it, e.g. with "
                            f"pandas.to_datetime(df[{name!r}])")
        if times.dtype.kind == "f":  # (polars: NaN is not null)
            missing = np.isnan(times)
    if (where := np.flatnonzero(missing)).size:
        raise ValueError(f"column {name!r} has {where.size} missing "
                         f"{'time' if where.size == 1 else 'times'}, the first at "
                         f"{row_name(df, where[0])}")
    return times


def _cutoff_like(cutoff: Any, times: np.ndarray) -> Any:
    """``cutoff`` as a value that compares with ``times``: a number for numbers, a
    ``datetime64`` (UTC) for datetimes. One value only: an array or a list is refused."""
    if sp.issparse(cutoff) or np.ndim(cutoff) != 0:
        raise TypeError(f"cutoff must be one time, got {described(cutoff)}")
    if times.dtype.kind == "M":
        if isinstance(cutoff, (numbers.Number, np.number)):
            raise TypeError(f"cutoff={short_repr(cutoff)} is a number, but the times are "
                            f"datetimes: give a datetime or text such as '2024-01-31'")
        if getattr(cutoff, "tzinfo", None) is not None:  # as the column: UTC, without a zone
            cutoff = cutoff.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        try:
            return np.datetime64(cutoff)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cutoff={short_repr(cutoff)} is not a time: {exc}") from None
    if isinstance(cutoff, (bool, np.bool_)) or not isinstance(cutoff, (numbers.Real, np.number)):
        raise TypeError(f"cutoff={short_repr(cutoff)}: the times are numbers, so give a "
                        f"number")
    if not np.isfinite(float(cutoff)):
        raise ValueError(f"cutoff must be a finite number, got {cutoff}")
    return cutoff


def _check_rows(frame: Any) -> None:
    """Refuse a DataFrame to split that has no rows (a split by time too, where NumPy's
    "zero-size array to reduction operation" came of it)."""
    if len(frame) == 0:
        raise ValueError("the DataFrame has no rows: there is nothing to split")


def _rows(df: Any, mask: np.ndarray) -> Any:
    """The rows of a pandas or polars DataFrame where ``mask`` is True, in order."""
    if _library(df) == "polars":
        return df.filter(mask)
    return df[mask]


def _split(csr: sp.csr_matrix, n_test: np.ndarray, random_state
           ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``n_test[u]`` entries of each row ``u``, chosen uniformly at random, to test."""
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    is_test = _drawn(rows, csr.indptr, n_test, random_state)

    def pick(mask):
        return sp.csr_matrix((csr.data[mask], (rows[mask], csr.indices[mask])), shape=csr.shape)

    return pick(~is_test), pick(is_test)


def _drawn(rows: np.ndarray, indptr: np.ndarray, n_test: np.ndarray, random_state
           ) -> np.ndarray:
    """Which entries go to test: ``n_test[u]`` of each row ``u``'s, chosen uniformly at
    random (``rows``: each entry's row, in CSR order; ``indptr``: where each row starts)."""
    rng = np.random.default_rng(check_random_state(random_state))
    # Rank each entry within its row by a random key; the lowest ranks go to test.
    order = np.lexsort((rng.random(len(rows)), rows))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - indptr[rows[order]]
    return rank < n_test[rows]


def _split_frame(df: Any, user_col: str, item_col: str, random_state,
                 counts: Callable[[np.ndarray], np.ndarray]) -> tuple[Any, Any]:
    """:func:`train_test_split` and :func:`leave_k_out_split` of a DataFrame: its (user,
    item) pairs in the order of ``from_dataframe(df).matrix``'s entries (ids sorted), of
    which ``counts(pairs per user)`` of each user's go to test, drawn as :func:`_split`
    draws that matrix's; every row goes where its pair goes."""
    frame = _eager_frame(df)
    _check_columns(frame, user_col, item_col, None, suggest=True)  # as from_dataframe does
    _check_rows(frame)
    _, users = _positions(_id_column(frame, user_col), None, user_col, False)
    item_ids, items = _positions(_id_column(frame, item_col), None, item_col, False)
    pairs, pair_of_row = np.unique(users.astype(np.int64) * len(item_ids) + items,
                                   return_inverse=True)
    pair_users = pairs // len(item_ids)
    lengths = np.bincount(pair_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    is_test = _drawn(pair_users, indptr, counts(lengths), random_state)[pair_of_row.ravel()]
    return _rows(frame, ~is_test), _rows(frame, is_test)


def _for_test_batches(train, test, batch_size, show_progress, desc, work, backend=None,
                      part="test"):
    """``work(train, test, users)`` for each batch of the users that have test items
    (``train`` and ``test`` checked; ``part`` names ``test`` in errors), yielded in order
    and counted on a progress bar (on a terminal, with ``show_progress``); a ``backend``'s
    threads compute several batches at once (:meth:`Backend.map_in_order`)."""
    check_bool("show_progress", show_progress)
    train = _checked_train(train)
    test = check_user_items_allow_empty(test, kept_dtype(test), name=part)
    if test.shape != train.shape:
        raise ValueError(f"{part} has shape {test.shape} and train {train.shape}: they must "
                         f"have the same users and items (the two parts of one split)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    users = np.flatnonzero(np.diff(test.indptr))
    if len(users) == 0:
        raise ValueError(f"{part} has no stored entries: there is no user to evaluate")
    batches = [users[a:a + batch_size] for a in range(0, len(users), batch_size)]
    each = map if backend is None else backend.map_in_order
    with tqdm(total=len(users), desc=desc, unit="user",
              disable=None if show_progress else True) as progress:
        for batch, result in zip(batches, each(lambda b: work(train, test, b), batches)):
            progress.update(len(batch))
            yield result


def _checked_train(train) -> sp.csr_matrix:
    """``train`` checked as a users x items matrix; without stored entries is fine (users
    new to a model trained elsewhere: nothing to filter out of their rankings)."""
    train = check_user_items_allow_empty(train, kept_dtype(train), name="train")
    if 0 in train.shape:
        raise ValueError(f"train is empty: shape {train.shape}")
    return train


def _check_model_for(model, train, name: str = "train") -> None:
    """A model of this module must know the users and the items of ``train`` (whose own
    checks come with the batches; ``name`` names it in the error)."""
    from .model import ALS

    fitted_als = isinstance(model, ALS) and hasattr(model, "user_factors_")
    if fitted_als:
        model._check_fitted()  # factors assigned by hand (even as lists) are checked first
    shape = getattr(train, "shape", None)
    if shape is None or len(shape) != 2 or is_dataframe(train):  # (the matrix check says
        return  # what to do with a DataFrame, whose shape is not users x items)
    if fitted_als:
        known = (model.user_factors_.shape[0], model.item_factors_.shape[0])
    elif isinstance(model, _Baseline) and hasattr(model, "n_items_"):
        known = (shape[0], model.n_items_)
    else:
        return
    if shape[0] > known[0] or shape[1] != known[1]:
        raise ValueError(f"{name} has shape {shape}, but the {type(model).__name__} was fitted "
                         f"on {known[0]} users x {known[1]} items: evaluate it on the {name} "
                         f"part of the split whose train part it was fitted on")


def _model_rows(model, table, name: str = "train", *, rated: bool = False):
    """``table`` (``train``, ``test``: ``name``) for a model of this module: a matrix as it
    is; a DataFrame of (user, item[, value]) rows, as ``fit(df)`` reads them, as the
    matrix of the model's ids (a model fitted on a DataFrame, or given ids), its rows of
    users or items the model lacks left out, with a warning that counts them. ``rated``:
    the values are needed (:func:`rmse`'s), so a DataFrame without them is refused."""
    if not is_dataframe(table):
        return table
    if isinstance(model, _Baseline) and not hasattr(model, "n_items_"):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet: call fit first")
    if callable(getattr(model, "_check_fitted", None)):  # an ALS
        model._check_fitted()
    user_ids, item_ids = getattr(model, "user_ids_", None), getattr(model, "item_ids_", None)
    if user_ids is None or item_ids is None:
        raise TypeError(f"{name} is a DataFrame, but the {type(model).__name__} has no ids to "
                        f"find its rows by: fit the model on a DataFrame (or with user_ids= "
                        f"and item_ids=), or pass {name} as a matrix, e.g. "
                        f"gpu_als.from_dataframe({name}).matrix")
    df = _eager_frame(table, name)
    if rated and "value" not in df.columns:
        raise ValueError(f"{name} is a DataFrame without a column 'value': rmse compares the "
                         f"predicted ratings with the ones there")
    (matrix, _, _), rows, columns = frame_positions(  # (values in the model's dtype)
        df, "user", "item", "value" if "value" in df.columns else None,
        dtype=getattr(model, "dtype", np.float32), user_ids=user_ids, item_ids=item_ids,
        drop_unknown=True)
    if (unknown := int(((rows < 0) | (columns < 0)).sum())):
        warnings.warn(f"{unknown:,} of the {len(df):,} rows of {name} name users or items the "
                      f"{type(model).__name__} lacks: left out", UserWarning,
                      stacklevel=user_stacklevel())
    return matrix


def _ranked_hits(model, train, test, N, batch_size, show_progress=True, part="test"):
    """Per batch of test users: the users, whether each of their top ``N`` is a test item
    (``hits``, shape (users, N)), their numbers of test and of train items, and how many
    of their test entries are in train too."""
    _check_recommender(model)
    _check_model_for(model, train)
    train, test = _model_rows(model, train), _model_rows(model, test, part)

    def hits_of(train, test, batch):
        n_items = train.shape[1]
        ids, _ = model.recommend(batch, train[batch], N=N, filter_already_liked_items=True)
        ids = np.asarray(ids).reshape(len(batch), -1)[:, :N]
        tested, trained = test[batch], train[batch]
        keys, test_keys = np.arange(len(batch))[:, None] * n_items + ids, _pair_keys(tested)
        hits = ~_not_in(keys, test_keys) & (ids >= 0)
        shared = len(test_keys) - int(_not_in(test_keys, _pair_keys(trained)).sum())
        return batch, hits, np.diff(tested.indptr), np.diff(trained.indptr), shared

    return _for_test_batches(train, test, batch_size, show_progress, "ranking", hits_of,
                             part=part)


def _check_recommender(model) -> None:
    """A ``TypeError`` for a ``model`` without ``recommend`` (named before its other
    arguments, whose errors would name the model's type as if it were one)."""
    if not callable(getattr(model, "recommend", None)):
        raise TypeError(f"model must have a recommend method (a fitted ALS, or a baseline "
                        f"of this module), got {type(model).__name__}")


@overload
def ranking_metrics(model: Any, train: Any, test: Any, K: int = 10, batch_size: int = 2048,
                    show_progress: bool = True) -> dict[str, float]: ...


@overload
def ranking_metrics(model: Any, train: Any, test: Any, K: Sequence[int],
                    batch_size: int = 2048, show_progress: bool = True
                    ) -> dict[int, dict[str, float]]: ...


def ranking_metrics(model: Any, train: Any, test: Any, K: Any = 10, batch_size: int = 2048,
                    show_progress: bool = True) -> Any:
    """Precision, recall, NDCG and MAP at ``K``, averaged over the users with test items.

    For each such user ``u`` the model recommends ``K`` items with the items of
    ``train[u]`` filtered out; ``hit_j`` says whether the item at 0-based rank ``j`` is in
    ``test[u]``, and ``m = min(|test[u]|, K)``:

    * ``precision = sum_j hit_j / K``
    * ``recall = sum_j hit_j / |test[u]|`` (as in the reference document)
    * ``ndcg = DCG / IDCG`` with ``DCG = sum_j hit_j / log2(j + 2)`` and ``IDCG`` the DCG of
      ``m`` hits at the top (binary relevance)
    * ``map = (1 / m) sum_j hit_j * precision@(j + 1)`` (average precision at K)

    ``train`` and ``test`` are meant to be the two disjoint parts of a split: a test item
    also in ``train[u]`` is filtered out of the recommendations yet counts in
    ``|test[u]|`` (as in the implicit library's ``ranking_metrics_at_k``), with a warning
    that counts such items.

    Parameters
    ----------
    model : fitted ALS, or any object with ALS's ``recommend`` (e.g. the baselines here);
        the recommendations are computed on the model's backend.
    train, test : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        DataFrames of (user, item[, value]) rows (as :meth:`ALS.fit` reads them) for a
        model with ids (fitted on a DataFrame, as the baselines here can be too): their
        rows are found by the model's ids, and a test row of a user or item it lacks is
        left out, with a warning that counts them.
    K : int or sequence of int, default 10
        The cut-off. Several (``K=[5, 10, 20]``, each once) are scored from one ranking of
        the largest: each one's top K are the first K of it (ties broken by item id, as
        ``recommend`` breaks them), so the metrics equal those of one call per K, at the
        cost of one.
    batch_size : int
        Users recommended for at once.
    show_progress : bool, default True
        Show a progress bar over the test users (only on a terminal).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``ndcg``, ``map`` (floats) and ``users`` (how many were
        scored); for several K, such a dict for each, keyed by K in the order given.

    Examples
    --------
    >>> from gpu_als.datasets import make_power_law
    >>> R = make_power_law(200, 100, 3000, random_state=0)
    >>> train, test = train_test_split(R, test_fraction=0.2, random_state=0)
    >>> model = PopularityRecommender().fit(train)
    >>> at = ranking_metrics(model, train, test, K=[5, 20], show_progress=False)
    >>> list(at), at[20]["recall"] > at[5]["recall"]
    ([5, 20], True)
    """
    if isinstance(K, Iterable) and not isinstance(K, (str, bytes)):
        return _ranking_metrics_at(model, train, test, _cutoffs(K), batch_size, show_progress)
    return _ranking_metrics(model, train, test, K, batch_size, show_progress)


def _cutoffs(K: Iterable[Any]) -> list[int]:
    """Several cut-offs, each an int >= 1, each once in the order given; none is refused."""
    cutoffs = list(dict.fromkeys(check_int("K", k, minimum=1) for k in K))
    if not cutoffs:
        raise ValueError("K is empty: give a cut-off, or several (K=[5, 10, 20])")
    return cutoffs


def _ranking_metrics(model: Any, train: Any, test: Any, K: int, batch_size: int = 2048,
                     show_progress: bool = True, part: str = "test") -> dict[str, float]:
    """:func:`ranking_metrics` at one ``K``, whose warnings call ``test`` ``part``
    (``"validation"`` for :func:`validation_score`)."""
    K = check_int("K", K, minimum=1)
    return _ranking_metrics_at(model, train, test, [K], batch_size, show_progress, part)[K]


def _ranking_metrics_at(model: Any, train: Any, test: Any, cutoffs: list[int],
                        batch_size: int = 2048, show_progress: bool = True,
                        part: str = "test") -> dict[int, dict[str, float]]:
    """The metrics at each of ``cutoffs`` (ints >= 1, each once), from one ranking of the
    largest."""
    totals = {K: {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0} for K in cutoffs}
    n_users = n_shared = 0
    for batch, hits, n_relevant, _, shared in _ranked_hits(model, train, test, max(cutoffs),
                                                           batch_size, show_progress, part):
        n_users += len(batch)
        n_shared += shared
        hits = hits.astype(np.float64)
        for K in cutoffs:
            _add_ranking_sums(totals[K], hits[:, :K], n_relevant, K)
    _warn_shared(n_shared, "left out of the recommendations as the users' own, and count "
                           "as missed", part)
    # n_users >= 1: a test without users is refused by _for_test_batches
    return {K: {**{name: value / n_users for name, value in sums.items()}, "users": n_users}
            for K, sums in totals.items()}


def _add_ranking_sums(totals: dict[str, float], hits: np.ndarray, n_relevant: np.ndarray,
                      K: int) -> None:
    """Add a batch of users' metrics at ``K`` to ``totals``: ``hits`` (float, users x at
    most K) says which of each one's top K are test items, ``n_relevant`` counts them."""
    n_hits = hits.sum(axis=1)
    m = np.minimum(n_relevant, min(K, int(n_relevant.max())))  # (K of any size)
    # the ranks that count: at most the items, however large K is
    discount = 1.0 / np.log2(np.arange(max(hits.shape[1], int(m.max()))) + 2)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    totals["precision"] += float((n_hits / K).sum())
    totals["recall"] += float((n_hits / n_relevant).sum())
    totals["ndcg"] += float((hits @ discount[:hits.shape[1]] / ideal[m]).sum())
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    totals["map"] += float(((hits * precision_at).sum(axis=1) / m).sum())


def _warn_shared(n_shared: int, fate: str, part: str = "test") -> None:
    """Warn, where ``n_shared`` entries of ``part`` (test) are in train too, of what became
    of them."""
    if n_shared:
        warnings.warn(f"{part} shares {counted(n_shared, 'entry', 'entries')} with train: "
                      f"those items are {fate} "
                      f"(train and {part} are meant to be the disjoint parts of a split)",
                      stacklevel=user_stacklevel())


def _one_k(model: Any, train: Any, test: Any, K: Any, show_progress: bool) -> dict[str, float]:
    """:func:`ranking_metrics` at one ``K`` (a list is refused: ranking_metrics takes
    several), for the functions of one metric."""
    if isinstance(K, (list, tuple, range, np.ndarray)) and np.ndim(K) == 1 and len(K) and \
            all(isinstance(k, numbers.Integral) for k in K):
        raise TypeError(f"K must be an integer, got {described(K)}: for several cut-offs, "
                        f"ranking_metrics(..., K={short_repr([int(k) for k in K])}) scores "
                        f"them all")
    return _ranking_metrics(model, train, test, K, show_progress=show_progress)


def precision_at_k(model: Any, train: Any, test: Any, K: int = 10,
                   show_progress: bool = True) -> float:
    """Mean precision at ``K`` (see :func:`ranking_metrics`)."""
    return _one_k(model, train, test, K, show_progress)["precision"]


def recall_at_k(model: Any, train: Any, test: Any, K: int = 10,
                show_progress: bool = True) -> float:
    """Mean recall at ``K``: hits / number of test items (see :func:`ranking_metrics`)."""
    return _one_k(model, train, test, K, show_progress)["recall"]


def ndcg_at_k(model: Any, train: Any, test: Any, K: int = 10,
              show_progress: bool = True) -> float:
    """Mean NDCG at ``K`` with binary relevance (see :func:`ranking_metrics`)."""
    return _one_k(model, train, test, K, show_progress)["ndcg"]


def map_at_k(model: Any, train: Any, test: Any, K: int = 10,
             show_progress: bool = True) -> float:
    """Mean average precision at ``K`` (see :func:`ranking_metrics`)."""
    return _one_k(model, train, test, K, show_progress)["map"]


def rmse(model: Any, test: Any) -> float:
    """Root mean squared error of ``model.predict`` on the stored entries of ``test``.

    For explicit feedback (ratings): a model of implicit feedback predicts preferences
    (about 0 or 1), not ratings, and gets a ``UserWarning``. A ``test`` of other items than
    the model's, or of more users, raises a ``ValueError``.

    Parameters
    ----------
    model : fitted ALS
    test : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        The held-out ratings; a DataFrame of (user, item, value) rows for a model with
        ids, as :func:`ranking_metrics` takes it.

    Returns
    -------
    float
    """
    return _rmse(model, test)


def _rmse(model: Any, test: Any, part: str = "test") -> float:
    """:func:`rmse`, whose errors and warning call ``test`` ``part`` (``"validation"``
    for :func:`validation_score`)."""
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"model must have a predict method (a fitted ALS), got "
                        f"{type(model).__name__}")
    _check_model_for(model, test, part)
    test = _model_rows(model, test, part, rated=True)
    coo = check_user_items(test, np.float64, name=part).tocoo()
    if getattr(model, "feedback", None) == "implicit":
        warnings.warn(f"rmse of a model fitted with feedback='implicit': it predicts "
                      f"preferences (about 0 or 1), not the ratings in {part}; fit with "
                      f"feedback='explicit' to predict ratings", UserWarning,
                      stacklevel=user_stacklevel())
    errors = model.predict(coo.row, coo.col).astype(np.float64) - coo.data
    return float(np.sqrt(np.mean(errors ** 2)))


#: Most scores (users x items) that :func:`auc` holds per batch: 128 MiB in float32, and
#: the batches of a CPU backend's threads each hold theirs.
AUC_BLOCK_SCORES = 1 << 25


def auc(model: Any, train: Any, test: Any, batch_size: int = 512,
        show_progress: bool = True) -> float:
    """Mean ROC AUC over the users with test items.

    For user ``u`` the candidates are all items not in ``train[u]``; the AUC is the share of
    (test item, other candidate) pairs in which the model ranks the test item higher
    (0.5 is random, 1 is perfect), ranked as ``recommend`` ranks them (ties: the lower id
    first). A test item that is also in ``train[u]`` is no candidate and is left out (with
    a warning, as :func:`ranking_metrics` gives); a user with no test item among the
    candidates, or no other candidate, is not counted (NaN, with a warning, when no user is
    left: the AUC is then undefined).

    It needs where every test item falls among all of its user's candidates: ALS places
    them from each user's scores, the popularity baseline from its global order and the
    random one by drawing their places; any other model is asked to ``recommend`` every
    item, a full ranking per user (slower). ``batch_size`` and ``show_progress`` as in
    :func:`ranking_metrics`; a batch has fewer users when its users x items scores would
    exceed :data:`AUC_BLOCK_SCORES` values. ``train`` and ``test`` may be DataFrames, as
    :func:`ranking_metrics` takes them.
    """
    _check_recommender(model)
    _check_model_for(model, train)
    train, test = _model_rows(model, train), _model_rows(model, test, "test")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    shape = getattr(train, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] > 0:
        batch_size = min(batch_size, max(1, AUC_BLOCK_SCORES // int(shape[1])))
    if isinstance(model, RandomRecommender) and hasattr(model, "n_items_"):
        parts = _below_at_random(model, train, test, batch_size, show_progress)
    elif isinstance(model, PopularityRecommender) and hasattr(model, "n_items_"):
        parts = _below_by_popularity(model, train, test, batch_size, show_progress)
    elif (scoring := _item_scores(model)) is not None:
        scores_of, backend = scoring
        parts = _below_from_scores(scores_of, backend, train, test, batch_size,
                                   show_progress)
    else:
        parts = _below_from_rankings(model, train, test, batch_size, show_progress)
    total, n_users, n_shared = 0.0, 0, 0
    for below, n_relevant, n_candidates, shared in parts:
        # below: per user, the candidates ranked below each test item that is a candidate
        # (n_relevant of them), summed; the test items among them are the
        # n_relevant * (n_relevant - 1) / 2 test-test pairs.
        pairs_won = below - n_relevant * (n_relevant - 1) / 2
        n_negative = n_candidates - n_relevant
        valid = (n_relevant > 0) & (n_negative > 0)
        total += float((pairs_won[valid] / (n_relevant[valid] * n_negative[valid])).sum())
        n_users += int(valid.sum())
        n_shared += shared
    _warn_shared(n_shared, "the users' own, no candidates, and are left out of the AUC")
    if not n_users:
        warnings.warn("the AUC is undefined (NaN): no user has a test item among its "
                      "candidates (the items not in its train row) and another candidate "
                      "to rank it against", stacklevel=user_stacklevel())
        return float("nan")
    return total / n_users


def _below_from_rankings(model, train, test, batch_size, show_progress):
    """Per batch: for each user, the candidates ranked below its test items (summed),
    from ``recommend`` with every item; its numbers of test items among the candidates
    (those in the full ranking) and of candidates; and how many test entries of the batch
    are in train too (no candidates)."""
    n_items = _checked_train(train).shape[1]
    for _, hits, _, n_train, shared in _ranked_hits(model, train, test, n_items, batch_size,
                                                    show_progress):
        n_candidates = n_items - n_train
        positions = np.arange(hits.shape[1])
        below = np.where(hits, n_candidates[:, None] - 1 - positions, 0).sum(axis=1)
        yield below, hits.sum(axis=1), n_candidates, shared


def scorable_part(train: sp.csr_matrix, held_out: sp.csr_matrix
                  ) -> tuple[sp.csr_matrix, int, int]:
    """The entries of ``held_out`` (a sparse matrix of ``train``'s shape) that a model
    fitted on ``train`` can be scored on, how many were left out as entries of a user or
    item without entries in ``train`` (a factor it never learned), and how many as
    entries ``train`` has too (an item the user's own, filtered out of a ranking)."""
    held_out = check_user_items_allow_empty(held_out, kept_dtype(held_out), name="held_out",
                                            copy=False)
    train = check_user_items_allow_empty(train, kept_dtype(train), name="train", copy=False)
    if train.shape != held_out.shape:
        raise ValueError(f"held_out has shape {held_out.shape} and train {train.shape}: "
                         f"they must be two parts of one matrix")
    rows, columns = csr_pairs(held_out)
    known = (np.diff(train.indptr) > 0)[rows] & \
        (np.bincount(train.indices, minlength=train.shape[1]) > 0)[columns]
    shared = ~_not_in(_pair_keys(held_out), _pair_keys(train))
    keep = known & ~shared
    if keep.all():
        return held_out, 0, 0
    kept = sp.csr_matrix((held_out.data[keep], (rows[keep], columns[keep])),
                         shape=held_out.shape)
    return kept, int((~known).sum()), int((known & shared).sum())


def _pair_keys(csr) -> np.ndarray:
    """``row * n_columns + column`` of each stored entry of a canonical CSR: sorted."""
    rows, columns = csr_pairs(csr)
    return rows * csr.shape[1] + columns


def _not_in(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are not among ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.ones(len(keys), bool)
    found = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[found] != keys


def _below_by_popularity(model, train, test, batch_size, show_progress):
    """As :func:`_below_from_rankings` for a :class:`PopularityRecommender`, without ranking
    every item: every user's ranking is the global order less the user's items, so a test
    item's place is its place in that order less the user's items ahead of it."""
    rank = model._place_of()

    def below_of(train, test, batch):
        liked, tested = train[batch], test[batch]
        n_items = train.shape[1]
        n_candidates = n_items - np.diff(liked.indptr)
        liked_rows, liked_items = csr_pairs(liked)
        liked_keys = np.sort(liked_rows * n_items + rank[liked_items])
        rows, items = csr_pairs(tested)
        keys = rows * n_items + rank[items]
        # the user's items ahead of the test item in the global order
        ahead = np.searchsorted(liked_keys, keys) - np.searchsorted(liked_keys, rows * n_items)
        candidate = _not_in(keys, liked_keys)  # a test item also in train is no candidate
        place = rank[items] - ahead
        below = np.bincount(rows[candidate], minlength=len(batch),
                            weights=(n_candidates[rows] - 1 - place)[candidate])
        return (below, np.bincount(rows[candidate], minlength=len(batch)), n_candidates,
                int((~candidate).sum()))

    return _for_test_batches(train, test, batch_size, show_progress, "AUC", below_of)


def _below_at_random(model, train, test, batch_size, show_progress):
    """As :func:`_below_from_rankings` for a :class:`RandomRecommender`, without ranking
    every item: in a uniformly random order of a user's ``n`` candidates, its ``t`` test
    items (those not in train) take a uniformly random ``t``-subset of the ``n`` places."""
    def below_of(train, test, batch):
        liked, tested = train[batch], test[batch]
        n_candidates = train.shape[1] - np.diff(liked.indptr)
        candidate = _not_in(_pair_keys(tested), _pair_keys(liked))
        n_tests = np.bincount(csr_pairs(tested)[0][candidate], minlength=len(batch))
        places = _random_distinct(model._rng, n_candidates, n_tests)  # flat, by user
        rows = np.repeat(np.arange(len(batch)), n_tests)
        below = np.bincount(rows, weights=n_candidates[rows] - 1 - places,
                            minlength=len(batch))
        return below, n_tests, n_candidates, int((~candidate).sum())

    # one batch at a time: the seeded model draws its batches in order
    return _for_test_batches(train, test, batch_size, show_progress, "AUC", below_of)


def _item_scores(model):
    """For this module's own models: a function giving every item's score for a batch of
    users (a new array of the model's backend, (users, items)), whose order is the order
    of ``recommend``, and that backend, on whose threads batches may be scored at once;
    None for any other model."""
    from .model import ALS

    if isinstance(model, ALS) and hasattr(model, "user_factors_"):
        backend = model._backend  # factors checked by _check_model_for
        return (lambda users: model.user_factors_[backend.asarray(users)]
                @ model.item_factors_.T), backend
    return None


#: A user with at most this many test items has them placed by counting the candidates
#: scored higher (two comparisons of the row per item); one with more by sorting the row
#: once. Measured (ALS, k = 64, 30,000 users with 8 test items on average, median 5; two
#: runs, seconds for the AUC): 20,000 items 2.2-2.4 s with 4, 2.3-2.5 with 8, 2.8-2.9 with
#: 16; 50,000 items 6.0-7.0, 6.5-7.2 and 8.0-8.6 (NumPy 2's vectorized sort).
COMPARE_LIMIT = 4


def _below_from_scores(scores_of, backend, train, test, batch_size, show_progress):
    """As :func:`_below_from_rankings`, from the scores: a test item's place among its
    user's candidates is the number of candidates scored higher, plus those scored the same
    with a lower id (``recommend``'s order). Counted by comparing the row with the item's
    score, or for a user with many test items (``COMPARE_LIMIT``) found in the sorted row;
    on ``backend``, where the scores are (a GPU's: only the counts come to the host).
    """

    def below_of(train, test, batch):
        # most test items first (the mean over users does not depend on their order): the
        # users whose k-th test item is compared are then the leading rows of the scores
        batch = batch[np.argsort(-np.diff(test.indptr)[batch], kind="stable")]
        scores = scores_of(batch)  # a new array of the factors' float dtype
        liked, tested = train[batch], test[batch]
        # not candidates: never compare as >= or ==
        scores[tuple(backend.asarray(a) for a in csr_pairs(liked))] = np.nan
        n_candidates = train.shape[1] - np.diff(liked.indptr)
        rows, items = csr_pairs(tested)
        # NaN: the item is also in train, not a candidate
        values = scores[backend.asarray(rows), backend.asarray(items)]
        higher, tied = _count_higher(backend, scores, tested, values, n_candidates)
        higher += _tied_before(backend, scores, rows, items, values, tied > 0)
        valid = ~np.isnan(backend.to_numpy(values))
        below = np.bincount(rows[valid], minlength=len(batch),
                            weights=(n_candidates[rows] - 1 - higher)[valid])
        return (below, np.bincount(rows[valid], minlength=len(batch)), n_candidates,
                int((~valid).sum()))

    return _for_test_batches(train, test, batch_size, show_progress, "AUC", below_of,
                             backend)


def _tied_before(backend, scores, rows, items, values, tied):
    """Per test entry (at ``rows`` and ``items`` of ``scores``, of score ``values``): how
    many candidates of a lower id score the same, which ``recommend`` ranks first; counted
    only for the entries that are ``tied`` (a NumPy mask), 0 for the others. On the host,
    from each entry's row up to its item; on a GPU, a bounded block of entries' whole rows
    at a time (a slice per entry took a launch and a wait each; on the host the slices
    were faster: 40,000 tied entries among 5,000 items, 0.31-0.34 s against 0.38-0.41 s
    for the whole AUC)."""
    xp = backend.xp
    counts = np.zeros(len(rows), np.int64)
    at = np.flatnonzero(tied)
    if xp is np:
        for j in at:
            counts[j] = np.count_nonzero(scores[rows[j], :items[j]] == values[j])
        return counts
    ids = xp.arange(scores.shape[1])
    step = max(1, AUC_BLOCK_SCORES // max(1, scores.shape[1]))
    for first in range(0, len(at), step):
        these = at[first:first + step]
        entries = backend.asarray(these)
        same = scores[backend.asarray(rows[these])] == values[entries][:, None]
        same &= ids < backend.asarray(items[these])[:, None]
        counts[these] = backend.to_numpy(xp.count_nonzero(same, axis=1))
    return counts


def _count_higher(backend, scores, tested, values, n_candidates):
    """For each stored entry of ``tested`` (rows: those of ``scores``, where NaN marks a
    non-candidate, ordered by their number of test items, most first) whose score is
    ``values`` (``scores`` and ``values`` arrays of ``backend``): how many candidates
    score higher, and how many others score the same (NumPy arrays; counted on the
    backend, and copied to the host once)."""
    xp = backend.xp
    n_tests = np.diff(tested.indptr)
    assert not (np.diff(n_tests) > 0).any(), "rows with the most test items come first"
    higher = xp.zeros(tested.nnz, np.int64)
    at_least = xp.zeros(tested.nnz, np.int64)  # with the entry itself
    sorted_rows = np.count_nonzero(n_tests > COMPARE_LIMIT)  # the leading rows
    if sorted_rows:  # their test items found in their sorted rows, all at once
        lead = slice(0, int(tested.indptr[sorted_rows]))
        ordered = xp.sort(scores[:sorted_rows], axis=1)  # the NaN (no candidates) last
        rows = backend.asarray(np.repeat(np.arange(sorted_rows), n_tests[:sorted_rows]))
        ends = backend.asarray(n_candidates[:sorted_rows])[rows]
        for counts, right in ((higher, True), (at_least, False)):
            counts[lead] = ends - _sorted_position(xp, ordered, rows, ends, values[lead],
                                                   right)
    # every other row's s-th test item at once: those rows are scores[sorted_rows:stop]
    count = _counter(xp, len(scores) - sorted_rows, scores.shape[1])
    for s in range(int(n_tests[sorted_rows:].max(initial=0))):
        stop = sorted_rows + np.count_nonzero(n_tests[sorted_rows:] > s)
        entries = backend.asarray(tested.indptr[sorted_rows:stop] + s)
        these, threshold = scores[sorted_rows:stop], values[entries][:, None]
        higher[entries] = count(xp.greater, these, threshold)
        at_least[entries] = count(xp.greater_equal, these, threshold)
    return backend.to_numpy(higher), backend.to_numpy(at_least - higher - 1)


def _sorted_position(xp, ordered, rows, ends, values, right: bool):
    """Per entry, ``searchsorted(ordered[row][:end], value, side)`` (``"right"`` or
    ``"left"``) of its ``rows``, ``ends`` and ``values``: a binary search of every entry
    at once, in steps over all of them (on a GPU: a few launches per step, and no wait,
    where a search per row took a launch and a copy to the host each)."""
    low = xp.zeros(len(rows), dtype=ends.dtype)
    high = ends.copy()
    last = ordered.shape[1] - 1
    for _ in range(int(ends.max()).bit_length()):  # each step halves every range
        middle = (low + high) // 2
        probe = ordered[rows, xp.minimum(middle, last)]
        below = (probe <= values if right else probe < values) & (middle < high)
        low = xp.where(below, middle + 1, low)
        high = xp.where(below, high, middle)
    return low


def _counter(xp, n_rows: int, n_items: int):
    """``count(compare, these, threshold)``: per row of ``these`` (at most ``n_rows`` x
    ``n_items``), how many of its values ``compare`` finds true against the row's
    threshold. On the host the comparisons go into the leading columns of one mask whose
    rows are whole 8-byte words, whose set bits NumPy 2's ``bitwise_count`` counts (3.1x
    faster than summing the bytes, itself 1.7x faster than ``np.count_nonzero(mask,
    axis=1)``); a GPU sums the comparisons."""
    if xp is not np:
        return lambda compare, these, threshold: compare(these, threshold).sum(axis=1)
    mask = np.zeros((n_rows, -(-n_items // 8) * 8), bool)  # the padding stays 0

    def count(compare, these, threshold):
        rows = mask[:len(these)]
        compare(these, threshold, out=rows[:, :n_items])
        if hasattr(np, "bitwise_count"):
            return np.bitwise_count(rows.view(np.uint64)).sum(axis=1, dtype=np.int64)
        return rows.view(np.uint8).sum(axis=1, dtype=np.int64)

    return count


#: The validation metrics of :class:`EarlyStopping` and :func:`gpu_als.tune.tune`: a ranking
#: metric at K of :func:`ranking_metrics` (higher is better) or, for ratings, :func:`rmse`.
VALIDATION_METRICS = ("recall", "ndcg", "precision", "map", "rmse")
#: Those of VALIDATION_METRICS for which lower is better.
LOWER_IS_BETTER = ("rmse",)


def metric_name(metric: str, K: int) -> str:
    """A validation metric as messages name it: ``"recall@10"``, ``"rmse"``."""
    return metric if metric in LOWER_IS_BETTER else f"{metric}@{K}"


def validation_score(model: Any, train: Any, validation: Any, metric: str,
                     K: int = 10) -> float:
    """One of :data:`VALIDATION_METRICS` for ``model`` on ``validation``: the ranking
    metric at ``K`` (recommending with ``train``'s items filtered out) or the RMSE."""
    if check_choice("metric", metric, VALIDATION_METRICS) == "rmse":
        return _rmse(model, validation, "validation")
    return _ranking_metrics(model, train, validation, K, show_progress=False,
                            part="validation")[metric]


class EarlyStopping:
    """A ``fit`` callback that stops training once a validation metric stops improving.

    After each iteration it scores the model so far on ``validation``
    (:func:`validation_score`). When ``patience`` iterations in a row have not beaten the
    best score by more than ``min_delta``, it stops the fit; with ``restore_best`` the model
    then gets back the factors (and ``loss_history_``) of its best iteration, as it does
    when the fit runs out of iterations after a better one. It costs one evaluation per
    iteration, and with ``restore_best`` a copy of the factors at each new best.

    Parameters
    ----------
    model : ALS
        The model whose fit it watches: pass it to that model's ``fit(callback=...)`` or
        set it as its ``callback`` (also for :func:`gpu_als.distributed.fit_distributed`).
    train : scipy.sparse matrix, shape (n_users, n_items), DataFrame, or None
        What the model is fitted on; its items are filtered out of the recommendations
        (may be None for ``metric="rmse"``).
    validation : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        Held-out interactions, e.g. from :func:`train_test_split` of the training data
        (not of the test set you report). For a model fitted on a DataFrame, ``train``
        and ``validation`` may be DataFrames of the same columns (``user``, ``item`` and,
        for ``metric="rmse"``, ``value``), e.g. from :func:`temporal_split`: at the first
        iteration of each fit their rows are found by the model's ids, as the metrics
        find them, and a row of a user or item the model lacks is left out with a
        warning that counts them. For a ranking metric that counts only some entries as
        relevant (ratings of 4 and up), pass those alone: ``binarize(validation, 4)``
        (of a DataFrame, its rows with values of 4 and up), as ``gpu-als train
        --early-stopping --min-value 4`` does.
    metric : {"recall", "ndcg", "precision", "map", "rmse"}, default "recall"
        A ranking metric at ``K``, higher is better; or, for ``feedback="explicit"``,
        the RMSE of the predicted ratings, lower is better.
    K : int, default 10
    patience : int, default 3
        Iterations without improvement before stopping.
    min_delta : float, default 0.0
        How much a score must beat the best by to count as an improvement.
    restore_best : bool, default True
        End the fit with the best iteration's model rather than the last one.
    max_users : int, optional
        Score a random sample of this many validation users (drawn once, here) instead of
        all of them, so that an evaluation costs the same on any size of data. Of a
        DataFrame, the sample is drawn among its distinct users and keeps all their rows.
    random_state : int or None, default 42
        Seed of that sample.

    Attributes
    ----------
    scores : list of float
        The metric after each iteration of the latest fit (a new fit starts a new list).
    best_iteration : int or None
        The best iteration, numbered from 0 as the callback's ``iteration``: a fit of
        ``best_iteration + 1`` iterations from the same start gives the same model.
    best_score : float or None
    stopped_iteration : int or None
        The iteration after which the fit was stopped; None when it ran all its iterations.
    validation : scipy.sparse matrix or DataFrame
        What it scores on: ``validation``, or with ``max_users`` its sampled users' rows
        (of a matrix, the others emptied).

    Examples
    --------
    >>> from gpu_als import ALS
    >>> from gpu_als.datasets import make_power_law
    >>> from gpu_als.evaluation import EarlyStopping, train_test_split
    >>> R = make_power_law(300, 200, 6000, random_state=0, device="cpu")
    >>> train, validation = train_test_split(R, test_fraction=0.2, random_state=42)
    >>> model = ALS(factors=16, iterations=30, backend="cpu", show_progress=False,
    ...             random_state=0)
    >>> stop = EarlyStopping(model, train, validation, metric="ndcg", patience=2)
    >>> model = model.fit(train, callback=stop)
    >>> len(stop.scores) <= 30 and stop.best_score == max(stop.scores)
    True
    """

    def __init__(self, model: Any, train: Any, validation: Any, *, metric: str = "recall",
                 K: int = 10, patience: int = 3, min_delta: float = 0.0,
                 restore_best: bool = True, max_users: int | None = None,
                 random_state: int | None = 42):
        from .model import ALS

        if not isinstance(model, ALS):
            raise TypeError(f"model must be a gpu_als.ALS, got {type(model).__name__}")
        if check_choice("metric", metric, VALIDATION_METRICS) == "rmse" and \
                model.feedback != "explicit":
            raise ValueError("metric='rmse' scores predicted ratings: it needs a model with "
                             "feedback='explicit'; use a ranking metric for implicit feedback")
        if train is None and metric != "rmse":
            raise ValueError(f"metric={metric!r} needs train: its items are filtered out of "
                             f"the recommendations")
        check_bool("restore_best", restore_best)
        check_random_state(random_state)
        if is_dataframe(validation):
            validation = _interaction_frame(validation, "validation", rated=metric == "rmse")
        else:
            shape = getattr(validation, "shape", None)
            if shape is None or len(shape) != 2:
                raise TypeError(f"validation must be a users x items sparse matrix or a "
                                f"DataFrame, got {type(validation).__name__}")
            if train is not None and not is_dataframe(train):
                if len(getattr(train, "shape", ())) != 2:
                    raise TypeError(f"train must be a users x items sparse matrix, a "
                                    f"DataFrame or None, got {type(train).__name__}")
                if train.shape != shape:
                    raise ValueError(f"train has shape {train.shape} but validation has "
                                     f"shape {shape}: pass the two parts of one split")
        if is_dataframe(train):
            train = _interaction_frame(train, "train")
        if max_users is not None:
            sample = _sample_frame_users if is_dataframe(validation) else _sample_users
            validation = sample(validation, check_int("max_users", max_users, minimum=1),
                                random_state)
        self.model, self.train, self.validation = model, train, validation
        self.metric = metric
        self.K = check_int("K", K, minimum=1)
        self.patience = check_int("patience", patience, minimum=1)
        self.min_delta = check_float("min_delta", min_delta)
        self.restore_best = bool(restore_best)
        self._start()

    def _start(self) -> None:
        self.scores: list[float] = []
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.stopped_iteration: int | None = None
        self._best_model: tuple[Any, Any, list[float]] | None = None
        self._parts: tuple[Any, Any] | None = None  # train and validation, as matrices

    def __repr__(self) -> str:
        return (f"EarlyStopping(metric={self.metric!r}, K={self.K}, "
                f"patience={self.patience}, best_score={self.best_score!r}, "
                f"best_iteration={self.best_iteration!r})")

    def __call__(self, iteration: int, seconds: float, loss: float | None) -> bool:
        """Score the model of iterations 0..``iteration``; True (stop the fit) once
        ``patience`` iterations have passed without improvement, or when the best model has
        been put back."""
        model = self.model
        if not model.fit_in_progress:  # another model's fit, whose model it would not see
            raise ValueError(
                "EarlyStopping was called outside a fit of the model it watches: pass it to "
                "the fit of the model it was made with (stop = EarlyStopping(model, ...); "
                "model.fit(train, callback=stop))")
        if iteration == 0:  # a new fit
            self._start()
        if self._parts is None:  # DataFrames: by the ids of the model of this fit
            self._parts = (_model_rows(model, self.train),
                           _model_rows(model, self.validation, "validation",
                                       rated=self.metric == "rmse"))
        score = validation_score(model, *self._parts, self.metric, self.K)
        self.scores.append(score)
        sign = -1.0 if self.metric in LOWER_IS_BETTER else 1.0
        if self.best_score is None or sign * (score - self.best_score) > self.min_delta:
            self.best_iteration, self.best_score = iteration, score
            if self.restore_best:
                self._best_model = (model.user_factors_.copy(), model.item_factors_.copy(),
                                    list(model.loss_history_))
        best_iteration, best_score = self.best_iteration, self.best_score
        assert best_iteration is not None and best_score is not None  # set just above
        # counted from 1, as the fit's own lines (best_iteration counts from 0, as callbacks)
        logger.info("iteration %d: %s %.5g on the validation part (best %.5g, after "
                    "iteration %d)", iteration + 1, metric_name(self.metric, self.K), score,
                    best_score, best_iteration + 1)
        out_of_patience = iteration - best_iteration >= self.patience
        last = iteration == model.iterations - 1
        if out_of_patience and not last:
            self.stopped_iteration = iteration
        if (out_of_patience or last) and self.restore_best and best_iteration != iteration:
            assert self._best_model is not None
            user_factors, item_factors, loss_history = self._best_model
            model.user_factors_, model.item_factors_ = user_factors, item_factors
            model.loss_history_ = list(loss_history)
            model._remember_factors()  # copies of the model's own arrays: checked already
            return True  # the fit must not hand its last factors to the model after this
        return out_of_patience


def _interaction_frame(df: Any, name: str, *, rated: bool = False) -> Any:
    """``df`` (``EarlyStopping``'s ``name``) as a pandas or polars DataFrame, refused now
    rather than at the first iteration where it lacks the columns ``user`` and ``item``
    (and, when ``rated``, ``value``)."""
    df = _eager_frame(df, name)
    needed = ("user", "item", "value") if rated else ("user", "item")
    if missing := [c for c in needed if c not in df.columns]:
        raise ValueError(f"{name} is a DataFrame without the column(s) {missing}: it needs "
                         f"{list(needed)}, as fit(df) reads them; it has "
                         f"{list(df.columns)}{_index_hint(df, missing)}")
    if len(df) == 0:
        raise ValueError(f"{name} is a DataFrame without rows")
    return df


def _sample_frame_users(df: Any, n: int, random_state: int | None):
    """The rows of ``n`` of ``df``'s distinct users, drawn at random; ``df`` itself where it
    has no more than ``n`` users."""
    ids, positions = _positions(_id_column(df, "user"), None, "user", False)
    if len(ids) <= n:
        return df
    rng = np.random.default_rng(check_random_state(random_state))
    keep = np.zeros(len(ids), bool)
    keep[rng.choice(len(ids), n, replace=False)] = True
    return _rows(df, keep[positions])


def _sample_users(matrix: Any, n: int, random_state: int | None):
    """``matrix`` (CSR) with the rows of ``n`` of its non-empty rows drawn at random, the
    others emptied; ``matrix`` itself where it has no more than ``n`` non-empty rows."""
    csr = sp.csr_matrix(matrix)
    lengths = np.diff(csr.indptr)
    users = np.flatnonzero(lengths)
    if len(users) <= n:
        return matrix
    keep = np.zeros(csr.shape[0], bool)
    rng = np.random.default_rng(check_random_state(random_state))
    keep[rng.choice(users, n, replace=False)] = True
    entries = np.repeat(keep, lengths)
    indptr = np.concatenate([[0], np.cumsum(np.where(keep, lengths, 0))])
    return sp.csr_matrix((csr.data[entries], csr.indices[entries], indptr), shape=csr.shape)


def personalization(recommended_ids: Any, n_items: int) -> dict[str, float]:
    """How different users' recommendation lists are (the reference document's check).

    Parameters
    ----------
    recommended_ids : array of int, shape (n_users, N)
        Each user's recommended items (``-1`` padding is ignored).
    n_items : int

    Returns
    -------
    dict
        ``personalization``: 1 minus the mean overlap ``|A & B| / N`` of two different users'
        lists (0: everyone gets the same list, 1: no two lists share an item; NaN for a
        single user; an item repeated in a list counts once); ``coverage``: the share of
        all items recommended to at least one user. Computed from each item's count of
        lists, in O(n_users N log N) time and O(n_users N) memory.
    """
    if callable(getattr(recommended_ids, "recommend", None)):  # as the other metrics take
        raise TypeError(
            f"personalization takes the recommended item ids, not a model "
            f"({type(recommended_ids).__name__}): pass model.recommend(users, "
            f"user_items[users], N=10)[0] and the number of items")
    try:
        ids = np.asarray(recommended_ids)
    except ValueError:  # (lists of several lengths)
        raise ValueError("recommended_ids must be 2-D (users x N), a list per user of one "
                         "length: pad shorter lists with -1") from None
    n_items = check_int("n_items", n_items, minimum=1)
    if ids.ndim != 2:
        raise ValueError(f"recommended_ids must be 2-D (users x N), got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"recommended_ids must hold integer item ids, got {ids.dtype}")
    if ids.size and ids.max() >= n_items:
        raise ValueError(f"recommended_ids holds item {ids.max()}, but there are "
                         f"n_items={n_items} (ids 0..{n_items - 1})")
    if ids.size and ids.min() < -1:  # (-1 is recommend's padding; other negatives, a bug)
        raise ValueError(f"recommended_ids holds item {ids.min()}: item ids are 0.."
                         f"{n_items - 1}, and -1 pads a list of fewer items")
    n_users, N = ids.shape
    if n_users == 0 or N == 0:
        raise ValueError(f"recommended_ids has shape {ids.shape}: no recommendations to "
                         f"compare")
    if n_users == 1:
        warnings.warn("the personalization of one user's list is undefined (NaN): it "
                      "compares the lists of pairs of users", stacklevel=user_stacklevel())
    # M (users x items) is 1 where a list holds an item (a repeat in a list counts once,
    # as |A & B| of sets). The overlaps of all pairs of different lists, sum_{u != v}
    # (M M^T)_uv, without the n_users x n_users matrix: every entry of M M^T summed, less
    # its diagonal (each list's size); counted over the items recommended, not n_items.
    rows = np.sort(ids, axis=1)
    first = np.ones(rows.shape, bool)  # an item's first place in its (sorted) list
    first[:, 1:] = rows[:, 1:] != rows[:, :-1]
    held = rows[first & (rows >= 0)]
    counts = np.unique(held, return_counts=True)[1].astype(np.float64)  # lists per item
    off_diagonal = float(counts @ counts) - len(held)
    pairs = n_users * (n_users - 1)
    return {"personalization": 1.0 - off_diagonal / pairs / N if pairs else float("nan"),
            "coverage": len(counts) / n_items}


class _Baseline:
    """A recommender scored without factors; ``recommend`` follows :meth:`ALS.recommend`."""

    def fit(self, user_items: Any):
        """Learn from ``user_items`` (scipy.sparse, users x items, or a DataFrame of
        (user, item[, value]) rows, as :meth:`ALS.fit` reads them, whose ids it keeps as
        ``user_ids_`` and ``item_ids_``); returns ``self``."""
        self.user_ids_ = self.item_ids_ = None
        if is_dataframe(user_items):
            user_items, self.user_ids_, self.item_ids_ = frame_interactions(  # (any value:
                user_items, dtype=np.float64)  # only which pairs are stored counts)
        csr = check_user_items(user_items, kept_dtype(user_items))
        self.item_counts_ = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
        self.n_items_ = csr.shape[1]
        return self

    def recommend(self, userid, user_items=None, N=10, filter_already_liked_items=True):
        """The top ``N`` items for one user or a batch, as :meth:`ALS.recommend` returns
        them: ``(ids, scores)``, 1-D for one user, else 2-D padded with -1 and -inf.
        ``user_items`` holds the users' rows (one per id), whose items are left out
        unless ``filter_already_liked_items`` is false."""
        if not hasattr(self, "n_items_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit "
                                 f"first")
        ids = np.atleast_1d(np.asarray(userid))
        exclude = None
        if filter_already_liked_items:
            if user_items is None:
                raise ValueError("user_items is required with filter_already_liked_items=True")
            exclude = check_rows_for(user_items, len(ids), self.n_items_,
                                     kept_dtype(user_items), name="user_items")
        N = min(check_int("N", N, minimum=1), self.n_items_)
        top, scores = self._top_n(len(ids), N, exclude)
        return query_result(top, scores, np.ndim(userid) == 0)

    def _top_n(self, n_users: int, N: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` best items for ``n_users`` users, ``exclude`` (CSR or None) left out:
        ids and scores, shape (n_users, N), padded with -1 and -inf."""
        raise NotImplementedError


class PopularityRecommender(_Baseline):
    """Recommends the items with the most training interactions (ties: lower id first)."""

    def fit(self, user_items: Any):
        """Count each item's users in ``user_items`` (as :meth:`_Baseline.fit` takes it)."""
        super().fit(user_items)
        self.order_ = np.argsort(-self.item_counts_, kind="stable")  # counts down, ids up
        return self

    def _place_of(self) -> np.ndarray:
        """Each item's place in ``order_``."""
        place = np.empty(self.n_items_, np.int64)
        place[self.order_] = np.arange(self.n_items_)
        return place

    def _top_n(self, n_users: int, N: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        """Every user's list is the global order less the user's own items. A user whose
        own items sit at places ``e_0 < e_1 < ...`` of the order has ``g_m = e_m - m``
        other items before ``e_m``, so the user's ``i``-th item is at place
        ``i + #{m : g_m <= i}``: found by binary search, in O(nnz + n_users N) memory
        whatever the users' lengths (no users x catalogue tile)."""
        n_items = self.n_items_
        places = np.arange(N)[None, :].repeat(n_users, axis=0)  # i: the rank asked for
        if exclude is not None and exclude.nnz:
            place_of = self._place_of()
            rows, items = csr_pairs(exclude)
            stride = n_items + 1
            keys = np.sort(rows * stride + place_of[items])  # by user, then place
            within = np.arange(len(keys)) - exclude.indptr[rows]  # m (indices are unique)
            before = keys - within  # user * stride + g_m: still sorted (g_m <= n_items)
            users = np.arange(n_users)[:, None] * stride
            places += (np.searchsorted(before, users + places, side="right")
                       - np.searchsorted(before, users, side="left"))
        found = places < n_items
        ids = np.where(found, self.order_[np.minimum(places, n_items - 1)], -1)
        return ids, np.where(found, self.item_counts_[np.maximum(ids, 0)], -np.inf)


class RandomRecommender(_Baseline):
    """Recommends items uniformly at random (seeded by ``random_state``).

    Each list is a uniformly random ordering of the user's candidates, cut at ``N``, drawn
    without scoring every item (:func:`_random_distinct`); its scores are ``N, N - 1, ...``
    (the order of the list: a random model has no scores)."""

    def __init__(self, random_state: int | None = 42):
        self.random_state = random_state
        self._rng = np.random.default_rng(check_random_state(random_state))

    def _top_n(self, n_users: int, N: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        n_items = self.n_items_
        lengths = np.zeros(n_users, np.int64) if exclude is None else np.diff(exclude.indptr)
        keys = None if exclude is None else _pair_keys(exclude)
        counts = np.minimum(N, n_items - lengths)
        drawn = _random_distinct(self._rng, np.full(n_users, n_items), counts, keys, lengths)
        ids = _padded(drawn, counts, N)
        return ids, np.where(ids >= 0, N - np.arange(N, dtype=np.float64), -np.inf)


def _random_distinct(rng, sizes, counts, excluded=None, n_excluded=None) -> np.ndarray:
    """For each row ``r``: ``counts[r]`` distinct values of ``range(sizes[r])``, none of
    them excluded, in random order, each uniform among those not yet taken (the start of a
    uniformly random ordering); returned flat, row 0's values first (``counts.sum()`` in
    all; :func:`_padded` lays them out in rows). ``excluded``: sorted keys
    ``r * sizes.max() + value`` (``n_excluded[r]`` of them in row ``r``); ``counts[r]``
    must not exceed the values left.

    Values are drawn with replacement, ``2 counts[r] + 32`` for row ``r`` (memory in
    proportion to the values asked for, however unequal the rows), and repeats or
    excluded ones skipped, which gives exactly that distribution; a row where over half
    its values are taken or excluded, or that runs out of draws, instead takes the start
    of a shuffle of its values.
    """
    n_rows = len(sizes)
    counts = np.asarray(counts, np.int64)
    width = max(1, int(sizes.max(initial=1)))
    n_excluded = np.zeros(n_rows, np.int64) if n_excluded is None else n_excluded
    draws = np.where(counts > 0, 2 * counts + 32, 0)
    row = np.repeat(np.arange(n_rows), draws)
    values = rng.integers(0, np.maximum(sizes, 1)[row])
    keys = row * width + values
    order = np.argsort(keys, kind="stable")
    fresh = np.ones(keys.size, bool)  # the first draw of its value in its row
    fresh[order[1:]] = keys[order[1:]] != keys[order[:-1]]
    if excluded is not None:
        fresh &= _not_in(keys, excluded)
    fresh_so_far = np.cumsum(fresh)
    fresh_before_row = np.concatenate([[0], fresh_so_far])[np.cumsum(draws) - draws]
    place = fresh_so_far - 1 - fresh_before_row[row]  # of a fresh draw, in its row
    keep = fresh & (place < counts[row])
    first = np.cumsum(counts) - counts  # each row's start in the result
    out = np.empty(int(counts.sum()), np.int64)
    out[first[row[keep]] + place[keep]] = values[keep]
    found = np.bincount(row[keep], minlength=n_rows)
    short = (counts > 0) & ((found < counts) | (2 * (counts + n_excluded) > sizes))
    for r in np.flatnonzero(short):
        own = np.arange(sizes[r])
        if excluded is not None and n_excluded[r]:
            lo, hi = np.searchsorted(excluded, [r * width, (r + 1) * width])
            own = np.setdiff1d(own, excluded[lo:hi] - r * width, assume_unique=True)
        out[first[r]:first[r] + counts[r]] = rng.permutation(own)[:counts[r]]
    return out


def _padded(flat: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """Values given row after row (``counts[r]`` for row ``r``, at most ``width``) as a
    ``(len(counts), width)`` array, each row padded with ``-1``."""
    rows = np.repeat(np.arange(len(counts)), counts)
    out = np.full((len(counts), width), -1, flat.dtype)
    out[rows, np.arange(len(flat)) - (np.cumsum(counts) - counts)[rows]] = flat
    return out
