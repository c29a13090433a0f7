"""Input checking and conversion: everything user-supplied passes through here once.

User input (a scipy.sparse matrix, or a pandas or polars DataFrame through
:func:`from_dataframe`)
becomes a checked CSR matrix, and then a :class:`WeightedRows`: the CSR structure plus the
two per-entry weights that every backend's solver needs. Nothing below this module sees
a DataFrame, user ids or raw ratings.

Notation (DESIGN.md section 1): ``r`` a stored value, ``p`` the preference, ``c`` the
confidence. For implicit feedback ``p = [r > 0]`` and ``c = 1 + alpha * |r|`` ("linear") or
``c = 1 + alpha * log(1 + |r| / epsilon)`` ("log"); a negative ``r`` is a dislike (``p = 0``).
"""

from __future__ import annotations

import decimal
import difflib
import functools
import importlib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

FEEDBACKS = ("implicit", "explicit")
CONFIDENCES = ("linear", "log")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------


def check_bool(name: str, value: Any) -> bool:
    """``value`` of option ``name`` as a bool; a ``TypeError`` for anything but True or
    False (``show_progress="no"`` would otherwise be true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {described(value)}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    if value > np.iinfo(np.int64).max:
        raise ValueError(f"{name}={value}: too large (at most 2**63 - 1)")
    return value


def check_float(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False,
                maximum: float | None = None) -> float:
    """Return ``value`` as a finite float >= ``minimum`` (> when ``strict``) and, when
    given, <= ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {described(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value}: must be finite")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name}={value}: must be {'>' if strict else '>='} {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value}: must be <= {maximum:g}")
    return value


def check_path(path: Any) -> str:
    """``path`` (a str, bytes or path-like) as a str, a leading ``~`` expanded to the home
    folder (as pandas does); anything else, an int's file descriptor included, is a
    ``TypeError``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or a path-like object, got "
                        f"{described(path)}")
    return os.path.expanduser(os.fsdecode(path))


def check_output_file(path: str, action: str, example: str) -> None:
    """Refuse, before writing, a ``path`` that is a folder (naming ``example``, a file name
    to give in it) or whose folder does not exist; ``action`` says what was to be done
    ("save the model")."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot {action} to {path}: it is a folder; give a file name "
                                f"such as {os.path.join(path, example)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot {action} to {path}: there is no folder {folder}")


def check_random_state(seed: Any, name: str = "random_state") -> Any:
    """``seed`` if it can seed ``numpy.random.default_rng``: None, an integer >= 0, or a
    ``Generator``, ``BitGenerator`` or ``SeedSequence``; else an error naming ``name``,
    rather than NumPy's ("expected non-negative integer", "SeedSequence expects int")."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if seed < 0:
            raise ValueError(f"{name}={seed}: must be >= 0")
    elif not (seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence,
                                                np.random.BitGenerator))):
        # (scikit-learn takes a legacy RandomState, which default_rng does not)
        hint = f": draw a seed from it, {name}=rs.randint(2**31)" \
            if isinstance(seed, np.random.RandomState) else ""
        raise TypeError(f"{name} must be None, an int or a numpy.random.Generator, got "
                        f"{described(seed)}{hint}")
    return seed


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, as a plain ``str`` (a NumPy string is one
    too, and named as one)."""
    if not isinstance(value, str) or value not in choices:  # (an array has no truth value)
        shown = repr(str(value)) if isinstance(value, str) else short_repr(value)
        raise ValueError(f"{name}={shown}: expected one of {', '.join(map(repr, choices))}")
    return str(value)


def _one_line_repr(value: Any) -> str | None:
    """``value``'s repr for a message, cut to 80 characters; None where it takes several
    lines (a DataFrame, a sparse matrix)."""
    shown = repr(value)
    if "\n" in shown:
        return None
    return shown if len(shown) <= 80 else f"{shown[:38]}...{shown[-39:]}"


def short_repr(value: Any) -> str:
    """``value``'s repr for a message, cut short, or its type's name where that repr takes
    several lines (``<DataFrame>``)."""
    shown = _one_line_repr(value)
    return f"<{type(value).__name__}>" if shown is None else shown


def described(value: Any) -> str:
    """What a message says it got: ``value``'s type, and its repr where that is one line
    (``float 2.5``, ``str 'zz'``; ``DataFrame`` alone), cut short."""
    shown = _one_line_repr(value)
    return type(value).__name__ + ("" if shown is None else f" {shown}")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 user"``, ``"2 users"``, ``"27,000 items"``; ``plural`` where it is not
    ``noun + "s"``."""
    return f"{n} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


def shown_value(value: Any) -> Any:
    """A hyperparameter's value as a table, a chart or a message shows it: a NumPy dtype
    or scalar type by its name (``float32``, not ``<class 'numpy.float32'>``), anything
    else as it is."""
    if isinstance(value, np.dtype) or (isinstance(value, type) and
                                       issubclass(value, np.generic)):
        return np.dtype(value).name
    return value


def check_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as float32 or float64; anything else refused, shown cut short."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as exc:  # (ValueError: a tuple of a negative shape)
        raise TypeError(f"dtype={short_repr(dtype)} is not a NumPy dtype; use float32 or "
                        f"float64") from exc
    if dt not in DTYPES:
        raise ValueError(f"dtype={dt.name}: expected float32 or float64")
    return dt


# --------------------------------------------------------------------------------------
# Interaction matrices
# --------------------------------------------------------------------------------------


#: The libraries whose DataFrames ``fit`` and :func:`from_dataframe` take.
DATAFRAME_LIBRARIES = ("pandas", "polars")
#: The libraries of Dask DataFrames (dask-cuDF's too): lazy, refused by ``fit``, read by
#: the workers of :func:`gpu_als.distributed.fit_distributed`.
DASK_FRAME_LIBRARIES = ("dask", "dask_expr", "dask_cudf")
#: Libraries whose tables are read through their ``to_pandas()``: cuDF's DataFrame (on
#: the GPU), Modin's, and pyarrow's Table; and Dask's DataFrame, refused as lazy.
OTHER_FRAME_LIBRARIES = ("cudf", "modin", "pyarrow", *DASK_FRAME_LIBRARIES)


def _library(value: Any) -> str:
    return type(value).__module__.split(".")[0]


def is_dataframe(value: Any) -> bool:
    """Whether ``value`` is a table :func:`from_dataframe` reads (or refuses with a reason):
    a pandas or polars DataFrame, and those of :data:`OTHER_FRAME_LIBRARIES` (without
    importing any of them)."""
    return (_library(value) in DATAFRAME_LIBRARIES + OTHER_FRAME_LIBRARIES
            and hasattr(type(value), "columns"))  # (not resolving a LazyFrame's schema)


def to_host(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a NumPy array (a CuPy array is copied from the device, which NumPy's
    ``asarray`` refuses to do implicitly)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a, dtype=dtype)


def _host_sparse(value: Any) -> Any:
    """A CuPy sparse matrix as the SciPy matrix it copies to; anything else as it is. (The
    checks and the confidences run on the host; the backend copies the result back.)"""
    if type(value).__module__.startswith("cupyx.scipy.sparse") and hasattr(value, "get"):
        return value.get()
    return value


def available_memory() -> int | None:
    """Bytes of host memory available to new allocations (Linux's ``MemAvailable``), or
    None where that is unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(nbytes: int, what: str, hint: str = "") -> None:
    """Raise ``MemoryError`` naming ``what`` if it needs more host memory than is
    available: a clear error instead of the kernel's out-of-memory killer."""
    def size(n: int) -> str:
        return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"

    available = available_memory()
    if available is not None and nbytes > available:
        raise MemoryError(f"{what} needs at least {size(nbytes)} of memory and "
                          f"{size(available)} is available{hint}")


def _not_sparse(user_items: Any, name: str) -> TypeError:
    """The error for a ``user_items`` that is not a sparse matrix: its type, named plainly,
    and how to turn what it is (a path, rows, a DataFrame, a dense array ...) into one."""
    module = type(user_items).__module__.split(".")[0]
    kind = "None" if user_items is None else type(user_items).__name__ \
        if module == "builtins" else f"{module}.{type(user_items).__name__}"
    hint = ""
    if isinstance(user_items, (str, os.PathLike)):
        hint = ("; for a file of (user, item, value) rows, read it into a DataFrame "
                "(fit(df) takes one), or train from the command line: gpu-als train "
                "FILE")
    elif isinstance(user_items, (list, tuple)):
        hint = ("; for dense rows use scipy.sparse.csr_matrix(rows); for (user, item, "
                "value) triples, a DataFrame of them (fit(df) takes one)")
    elif is_dataframe(user_items):
        hint = (
            "; for a DataFrame of (user, item, value) rows use "
            "gpu_als.data.from_dataframe(df), which also returns the id maps (with "
            "item_ids=model.item_ids_ to line its columns up with a fitted model)"
        )
    elif getattr(getattr(user_items, "index", None), "nlevels", 0) == 2:
        # counts.groupby(["user_id", "item_id"]).size(), say
        hint = ("; for a Series indexed by (user, item) pairs use its rows: "
                "s.rename_axis(['user', 'item']).rename('value').reset_index()")
    elif isinstance(user_items, np.ndarray) or hasattr(user_items, "__array__"):
        hint = "; convert a dense array with scipy.sparse.csr_matrix(array)"
    elif sp.issparse(getattr(user_items, "ratings", None)):  # load_movielens_100k()'s
        hint = "; pass its .ratings (or its own split's .u1_base and .u1_test)"
    return TypeError(f"{name} must be a scipy.sparse matrix or array, got {kind}{hint}")


def check_user_items(user_items: Any, dtype: Any = np.float32, *, name: str = "user_items",
                     copy: bool = True):
    """Check a users x items interaction matrix and return it as a new canonical CSR.

    Parameters
    ----------
    user_items : scipy.sparse matrix or array, shape (n_users, n_items)
        Any sparse format. Duplicate entries are summed. Values must be finite numbers. A
        CuPy sparse matrix (``cupyx.scipy.sparse``) is copied to the host first.
    dtype : float32 or float64
        dtype of the returned values.
    copy : bool, default True
        False: the result may share the input's arrays, or be the input itself when it is
        a canonical ``csr_matrix`` of ``dtype`` (for callers that only read it: a query's
        rows, checked then by NumPy rather than by SciPy's copy).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_users, n_items)
        A copy (unless ``copy=False``): sorted indices, no duplicates, values of
        ``dtype``. The input is never modified.

    Raises
    ------
    TypeError
        For a dense array, a DataFrame, or a non-numeric (or complex) dtype.
    ValueError
        For a matrix that is not 2-D, has no rows, columns or stored entries, has indices
        out of range, or holds NaN or infinite values or ones beyond ``dtype``'s range.
    """
    dtype = check_dtype(dtype)
    user_items = _host_sparse(user_items)
    if not sp.issparse(user_items):
        raise _not_sparse(user_items, name)
    if user_items.ndim != 2:
        raise ValueError(f"{name} must be 2-D (users x items), got {user_items.ndim}-D")
    n_rows, n_cols = user_items.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"{name} is empty: shape {user_items.shape}")
    value_dtype = user_items.dtype
    if value_dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {value_dtype}: expected real numbers (bool, int or float)"
        )
    # a finite value beyond dtype's range becomes inf here: named below, not warned of
    with np.errstate(over="ignore"):
        csr = None if copy else _shared_canonical_csr(user_items, dtype)
        if csr is None:
            try:
                csr = sp.csr_matrix(user_items, copy=True)  # never modify the caller's
                csr.check_format(full_check=True)
            except ValueError as exc:
                raise ValueError(f"{name} is not a valid sparse matrix: {exc}") from exc
            csr.sum_duplicates()  # also sorts indices
            csr = csr.astype(dtype, copy=False)
    if csr.nnz == 0:
        purpose = {"test": "evaluate", "validation": "evaluate", "X": "weight",
                   "ratings": "binarize"}.get(name, "learn from")
        raise ValueError(f"{name} has no stored entries: there is nothing to {purpose}")
    bad = ~np.isfinite(csr.data)
    if bad.any():
        where = np.flatnonzero(bad)[0]
        row = int(np.searchsorted(csr.indptr, where, side="right") - 1)
        at = f"the first at row {row}, column {int(csr.indices[where])}"
        if _all_finite(user_items):  # then the cast (or summing duplicates) overflowed
            raise ValueError(
                f"{name} holds {int(bad.sum())} value(s) beyond {dtype.name}'s range "
                f"(largest magnitude {np.finfo(dtype).max:.3g}), {at}: scale the values "
                f"down" + (" or use dtype=float64" if dtype != np.float64 else "")
            )
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s), {at}")
    return csr


def check_rows_for(user_items: Any, n_rows: int, n_cols: int, dtype: Any, *, name: str,
                   columns: str = "item"):
    """Check a query-time matrix that must have ``n_rows`` rows and ``n_cols`` columns
    (one per ``columns``: "item", or "user" for an item_users matrix); one row may come as
    a 1-D sparse array (:func:`as_row_matrix`). The result may share the input's arrays
    (``copy=False``): the queries only read it."""
    if n_rows == 1:
        user_items = as_row_matrix(user_items)
    csr = check_user_items_allow_empty(user_items, dtype, name=name, copy=False)
    if csr.shape != (n_rows, n_cols):
        hint = ""
        if csr.shape[1] == n_cols and csr.shape[0] > n_rows:  # the whole matrix, probably
            ids = "userid" if columns == "item" else "itemid"
            hint = f"; to query a few rows of a whole matrix, pass {name}[{ids}]"
        raise ValueError(
            f"{name} has shape {csr.shape}, expected ({n_rows}, {n_cols}): one row per "
            f"requested id and one column per {columns} the model was fitted on{hint}"
        )
    return csr


def as_row_matrix(row: Any) -> Any:
    """A 1-D sparse array, which is what indexing a SciPy sparse *array* with one int gives
    (``R[u]`` of a ``csr_array``), as the 1 x n matrix of that row; anything else as it
    is."""
    if sp.issparse(row) and row.ndim == 1:  # (CuPy has no 1-D sparse arrays)
        return row.reshape((1, row.shape[0]))
    return row


def kept_dtype(user_items: Any) -> np.dtype:
    """The dtype to check ``user_items`` in where no model's dtype applies (a split, a
    threshold, a train matrix whose entries are filtered out): float64 for float64 values,
    which float32 would round (1 + 1e-12 to 1) or refuse (beyond 3.4e38), else float32."""
    return np.dtype(np.float64 if getattr(user_items, "dtype", None) == np.float64
                    else np.float32)


def check_user_items_allow_empty(user_items: Any, dtype: Any, *, name: str,
                                 copy: bool = True):
    """As :func:`check_user_items`, but a matrix without stored entries is fine."""
    user_items = _host_sparse(user_items)
    if sp.issparse(user_items) and user_items.ndim == 2 and user_items.nnz == 0:
        if user_items.dtype.kind not in "biuf":
            raise TypeError(f"{name} has dtype {user_items.dtype}: expected real numbers")
        return sp.csr_matrix(user_items.shape, dtype=check_dtype(dtype))
    return check_user_items(user_items, dtype, name=name, copy=copy)


def _all_finite(m: Any) -> bool:
    """Whether every stored value of the scipy.sparse matrix ``m`` is finite in its own
    dtype (only called on the way to an error)."""
    data = m.tocoo().data
    return data.dtype.kind != "f" or bool(np.isfinite(data).all())


def _shared_canonical_csr(m: Any, dtype: np.dtype) -> sp.csr_matrix | None:
    """``m`` as a CSR matrix of ``dtype`` sharing its index arrays (``m`` itself if it is
    a ``csr_matrix`` of ``dtype``), when it is a valid CSR matrix or array in canonical
    form already (each row's indices sorted and distinct, nothing stored past the last
    row), as SciPy makes them, checked by NumPy on its three arrays; None for anything
    else, which then takes SciPy's copy, full format check and ``sum_duplicates``. For
    one user's row, SciPy's way was most of a ``recommend`` call's own overhead (about
    60 us of 130)."""
    if m.format != "csr":
        return None
    indptr, indices, data = m.indptr, m.indices, m.data
    n_rows, n_cols = m.shape
    if not (indptr.dtype.kind == indices.dtype.kind == "i"
            and indptr.ndim == indices.ndim == data.ndim == 1
            and len(indptr) == n_rows + 1 and indptr[0] == 0
            and len(indices) == len(data) == indptr[-1]):
        return None
    if (np.diff(indptr) < 0).any():
        return None
    if len(indices):
        if indices.min() < 0 or indices.max() >= n_cols:
            return None
        descents = np.flatnonzero(np.diff(indices) <= 0) + 1
        # an index may fall (or repeat) only where a new row starts
        if len(descents) and not np.isin(descents, indptr[1:-1]).all():
            return None
    if type(m) is sp.csr_matrix and data.dtype == dtype:
        return m
    csr = sp.csr_matrix((data, indices, indptr), shape=m.shape, dtype=dtype)
    csr.has_canonical_format = True
    return csr


class Interactions(NamedTuple):
    """What :func:`from_dataframe` returns.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (n_users, n_items), float32
    user_ids : numpy.ndarray, shape (n_users,)
        ``user_ids[u]`` is the original id of matrix row ``u``.
    item_ids : numpy.ndarray, shape (n_items,)
        ``item_ids[i]`` is the original id of matrix column ``i``.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def frame_interactions(df: Any, feedback: str = "implicit", dtype: Any = np.float32,
                       dask_hint: str = "") -> Interactions:
    """What ``fit(df)`` trains on: the columns ``user``, ``item`` and (optionally)
    ``value`` of a DataFrame, through :func:`from_dataframe`; for explicit feedback, with
    :func:`warn_summed_ratings`' warning. ``dask_hint``: what the error that refuses a
    Dask DataFrame adds to "pass df.compute()".

    Raises
    ------
    ValueError
        When a column ``user`` or ``item`` is missing, or, for explicit feedback (ratings,
        which all-ones values cannot stand for), the column ``value``.
    """
    library = _library(df)  # (a cuDF frame's rename example is cuDF's)
    df = _eager_frame(df, dask_hint=dask_hint)
    value_col = check_fit_columns(df, feedback, library)
    interactions = from_dataframe(df, dtype=dtype, value_col=value_col)
    if feedback == "explicit":
        warn_summed_ratings(len(df), interactions.matrix)
    return interactions


def check_fit_columns(df: Any, feedback: str, library: str | None = None) -> str | None:
    """The value column that ``fit(df)`` reads (``"value"``, or None to count each row
    as 1), once the columns ``user`` and ``item`` (and, for explicit feedback, ``value``)
    are there, with a warning where another column may hold the values. Reads only the
    names and types of ``df``'s columns: also a lazy frame's (a Dask DataFrame's).
    ``library``: the one whose rename to suggest, if not ``df``'s own."""
    library = library or _library(df)
    missing = [c for c in ("user", "item") if c not in df.columns]
    if feedback == "explicit" and "value" not in df.columns:
        missing.append("value")
    if missing:
        needs = "'user', 'item' and optionally 'value'" if "value" not in missing else \
            "'user', 'item' and, for feedback='explicit', the ratings in 'value'"
        index_hint = _index_hint(df, missing)
        example = "" if index_hint else _rename_example(df, missing, library)
        # (from_dataframe reads no lazy frame: a Dask DataFrame's columns are renamed)
        other = "" if library in DASK_FRAME_LIBRARIES else \
            ", or use from_dataframe(df, user_col, item_col, value_col) and fit its " \
            "matrix with user_ids= and item_ids="
        rename = f". Rename them{example}{other}" if example or other or not index_hint \
            else ""
        raise ValueError(f"fit(df) reads the columns {needs}; this DataFrame has "
                         f"{list(df.columns)}{index_hint}{rename}")
    if "value" in df.columns:
        return "value"
    unused = [str(c) for c in df.columns if c not in ("user", "item")]
    # fit has no value_col: its warning says how to name the values' column instead
    if candidates := value_candidates(unused, numeric_columns(df, ("user", "item"))):
        example = likely_value_column(candidates)
        warn_unused_columns(unused, f"to train on one, name it 'value', e.g. "
                                    f"df.rename(columns={{{example!r}: 'value'}})")
    return None


def user_stacklevel() -> int:
    """The ``stacklevel`` at which ``warnings.warn``, called in the caller of this function,
    names the first line outside gpu_als: the user's call, however deep in the package
    the warning is raised (every warning of the package is given it)."""
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("gpu_als."):
        frame, level = frame.f_back, level + 1
    return level


def warn_summed_ratings(n_rows: int, matrix: sp.csr_matrix | int, columns: tuple[str, str]
                        = ("user", "item"), *, rows: str = "rows") -> None:
    """For explicit feedback: warn when the ``matrix`` that :func:`from_dataframe` made of
    ``n_rows`` rows (or its number of stored entries) has fewer entries, that is, when
    rows repeating a (user, item) pair were summed. Summing is right for counts (implicit
    feedback), but two ratings of 4 then train as one rating of 8. ``rows``: what the
    ``n_rows`` are ("rows" of a DataFrame, else the stored entries of a sparse matrix,
    which have no pandas remedy)."""
    repeated = n_rows - (int(matrix) if isinstance(matrix, (int, np.integer)) else matrix.nnz)
    if repeated > 0:
        user, item = columns
        remedy = (f", e.g. with pandas df.drop_duplicates([{user!r}, {item!r}], keep='last')"
                  if rows == "rows" else "")
        warnings.warn(
            f"{repeated:,} of the {n_rows:,} {rows} repeat a ({user}, {item}) pair, and the "
            f"ratings of a pair are summed (two ratings of 4 train as one of 8); for "
            f"feedback='explicit' keep one rating per pair{remedy}",
            UserWarning, stacklevel=user_stacklevel())


def _eager_frame(df: Any, name: str = "df", dask_hint: str = "") -> Any:
    """``df`` as a pandas or polars DataFrame: a table of :data:`OTHER_FRAME_LIBRARIES`
    through its ``to_pandas()`` (a cuDF one copied from the device); a lazy frame (a
    polars LazyFrame, a Dask DataFrame), which has no rows to read until it is collected
    or computed, refused with a ``TypeError`` that calls it ``name`` (and, for a Dask
    one, ends with ``dask_hint``)."""
    for method, hint in (("collect", ""), ("compute", dask_hint)):
        if callable(getattr(type(df), method, None)):
            raise TypeError(f"{name} is a {_library(df)} {type(df).__name__}, whose rows are "
                            f"not there until it is evaluated: pass {name}.{method}(){hint}")
    if _library(df) in OTHER_FRAME_LIBRARIES and callable(getattr(df, "to_pandas", None)):
        return df.to_pandas()
    return df


#: Words in the names of columns that usually hold user ids, and item ids.
_USER_WORDS = ("user", "customer", "client", "member", "account", "visitor", "person")
_ITEM_WORDS = ("item", "product", "movie", "sku", "song", "track", "artist", "book",
               "article", "video", "game", "offer", "doc", "page", "course")


def _named_as(name: str, kind: str) -> bool:
    """Whether a column's lower-case ``name`` says it holds ``kind`` ids ("user", "item")
    or, for ``kind="time"``, times, and for ``kind="value"`` amounts or ratings."""
    if kind == "time":
        return _is_time_name(name)
    if kind == "value":
        return _is_value_name(name)
    return any(word in name for word in {"user": _USER_WORDS, "item": _ITEM_WORDS}[kind])


def guess_id_columns(columns: list, wanted: tuple[str, ...] = ("user", "item")) -> dict:
    """Which of ``columns`` likely hold the ``wanted`` ids ("user", "item"):
    ``{'userId': 'user', 'movieId': 'item'}``, guessed from their names ('userId',
    'customer_id'; 'movieId', 'sku'), else the first left in their order that is not named
    as a time ('timestamp', 'day'); an empty dict where there are too few columns."""
    free, chosen = list(columns), {}
    for name in wanted:
        lower = [str(c).lower() for c in free]
        found = next((i for i, n in enumerate(lower) if _named_as(n, name)), None)
        if found is None:
            found = next((i for i, n in enumerate(lower) if not _is_time_name(n)), None)
        if found is None:
            return {}
        chosen[free.pop(found)] = name
    return chosen


def _rename_example(df: Any, missing: list[str], library: str = "pandas") -> str:
    """`` (e.g. fit(df.rename(columns={'userId': 'user', 'movieId': 'item'})))``: which of
    ``df``'s columns to rename to the ``missing`` names of ``fit(df)`` ('user', 'item',
    'value'): the ids' by :func:`guess_id_columns`, the values' by their name ('rating',
    'plays') or numbers, in the words of the frame's ``library`` (polars:
    ``df.rename({...})``); ``""`` where the frame has too few columns to guess from."""
    if not all(isinstance(c, (str, int, np.integer)) for c in df.columns):
        return ""  # (no example: a NaN or a MultiIndex's tuple would not run as written)
    free = [c for c in df.columns if c not in ("user", "item", "value")]
    ids = [name for name in ("user", "item") if name in missing]
    chosen = guess_id_columns(free, tuple(ids))
    if len(chosen) < len(ids):
        return ""
    free = [c for c in free if c not in chosen]
    if "value" in missing or ("value" not in df.columns and free):
        candidates = value_candidates(free, numeric_columns(df, ("user", "item")))
        if candidates:
            chosen[likely_value_column(candidates)] = "value"
        elif "value" in missing:
            return ""
    renamed = "{" + ", ".join(f"{name!r}: {wanted!r}" for name, wanted in chosen.items()) + "}"
    call = {"polars": f"df.rename({renamed})",
            "pyarrow": f"df.to_pandas().rename(columns={renamed})"}.get(
                library, f"df.rename(columns={renamed})")
    return f" (e.g. fit({call}))"


def _index_hint(df: Any, missing: list[str]) -> str:
    """``" ('user' is its index: pass df.reset_index())"`` when a missing column is the
    name of a pandas (or Dask) DataFrame's index; else ``""``."""
    index = getattr(df, "index", None)
    # (a Dask DataFrame's index has one name, and no names)
    named = getattr(index, "names", None) or [getattr(index, "name", None)]
    names = [n for n in named if n is not None and n in missing]
    return f" ({', '.join(map(repr, names))} {'is' if len(names) == 1 else 'are'} its " \
           f"index: pass df.reset_index())" if names else ""


def from_dataframe(
    df: Any,
    user_col: str = "user",
    item_col: str = "item",
    value_col: str | None = "value",
    *,
    dtype: Any = np.float32,
    user_ids: Any = None,
    item_ids: Any = None,
    drop_unknown: bool = False,
) -> Interactions:
    """Turn a DataFrame of (user, item, value) rows into a CSR matrix plus id maps.

    Parameters
    ----------
    df : pandas.DataFrame or polars.DataFrame
        One row per interaction. Users and items may be any hashable ids.
    user_col, item_col : str
        Column names of the user and item ids.
    value_col : str or None
        Column of the interaction values (counts, ratings). ``None``, or a missing column
        named by the default ``"value"``, counts every row as 1 (the latter with a
        ``UserWarning`` when one of ``df``'s other columns may hold the values: one of
        numbers not named as a time, or one named as a rating or amount; not an event
        log's event types, session ids or times).
        Repeated (user, item) pairs are summed.
    dtype : float32 or float64
    user_ids, item_ids : array-like, optional
        Id maps to build the matrix against instead of the DataFrame's own sorted ids, e.g.
        a fitted model's ``item_ids_`` so that columns line up with its item factors. Row
        ``u`` is then ``user_ids[u]`` (a user without rows in ``df`` gets an empty row).
    drop_unknown : bool, default False
        With a given map: leave out the rows whose id it lacks, instead of raising.

    Returns
    -------
    Interactions
        ``(matrix, user_ids, item_ids)``; ids are sorted unless given, and row ``u`` is
        ``user_ids[u]``.

    Raises
    ------
    ValueError
        For a missing or repeated column, an empty DataFrame, a missing id or value, or
        (without ``drop_unknown``) an id that a given map lacks.
    TypeError
        For values that are not numbers, and ids that are not single values (a polars
        ``Struct`` or ``Array`` column) or do not sort together (numbers and text).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": ["a", "b", "a"], "item": [10, 20, 20], "value": [1, 2, 3]})
    >>> m, users, items = from_dataframe(df)
    >>> m.toarray()
    array([[1., 3.],
           [0., 2.]], dtype=float32)
    """
    interactions, _, _ = frame_positions(df, user_col, item_col, value_col, dtype=dtype,
                                         user_ids=user_ids, item_ids=item_ids,
                                         drop_unknown=drop_unknown, suggest=True)
    return interactions


def _check_frame(df: Any, name: str = "df") -> Any:
    """``df`` itself where it is a table (a DataFrame, a pyarrow Table), else a TypeError."""
    if not hasattr(type(df), "columns") or not hasattr(df, "__getitem__"):
        raise TypeError(f"{name} must be a pandas or polars DataFrame (or a cuDF or Modin "
                        f"one, or a pyarrow Table), got {type(df).__name__}")
    return df


def _check_columns(df: Any, user_col: str, item_col: str, value_col: str | None, *,
                   suggest: bool = False) -> None:
    """The id columns (and ``value_col``, if not None) are distinct names, and each id
    column is one column of ``df``. ``suggest``: the caller's arguments are named
    ``user_col`` and ``item_col``, so a missing column's error may say ``did you mean
    user_col=...`` (not where the caller has no such argument, or swaps the two)."""
    for param, name in (("user_col", user_col), ("item_col", item_col),
                        ("value_col", value_col)):
        if not isinstance(name, Hashable):  # else "unhashable type: 'list'"
            raise TypeError(f"{param}={short_repr(name)} is not a column name: give the name "
                            f"of one column")
    if user_col == item_col:  # else a diagonal matrix of the column's ids
        raise ValueError(f"user_col and item_col are both {user_col!r}: name the column of "
                         f"the users and the column of the items")
    if value_col is not None and value_col in (user_col, item_col):
        side = "user" if value_col == user_col else "item"
        raise ValueError(f"value_col and {side}_col are both {value_col!r}: name the column "
                         f"of the values (or none, to count each row as 1)")
    missing = {param: col for param, col in (("user_col", user_col), ("item_col", item_col))
               if col not in df.columns}
    if missing:
        raise missing_columns(df, missing, suggest=suggest)
    check_named_once(df, (user_col, item_col, value_col))


def missing_columns(df: Any, missing: dict[str, Any], *, suggest: bool = True) -> ValueError:
    """The error for columns that ``df`` lacks (``missing``: the argument that named each,
    ``"user_col"``, ``"item_col"`` or ``"time_col"``, and the name), with the likely fix:
    ``df.reset_index()`` where they are the index, else (where ``suggest``) the columns
    that look meant (:func:`column_like`), e.g. ``(did you mean user_col='userId',
    item_col='movieId'?)``."""
    names = list(missing.values())
    said = f"column {names[0]!r}" if len(names) == 1 else \
        f"columns {' and '.join(map(repr, names))}"
    hint = _index_hint(df, names)
    if not hint and suggest:
        meant: dict[str, Any] = {}
        for param, name in missing.items():
            column = column_like(df.columns, param, name, taken=list(meant.values()))
            if column is not None:
                meant[param] = column
        if meant:
            hint = f" (did you mean {', '.join(f'{p}={c!r}' for p, c in meant.items())}?)"
    return ValueError(f"{said} not found; the DataFrame has {list(df.columns)}{hint}")


def column_like(columns: Any, param: str, name: Any, taken: list) -> Any:
    """The column of ``columns`` (not in ``taken``) that argument ``param`` likely meant by
    ``name``: a column named alike ('userId' for 'userid' or 'user'), else one whose name
    says it holds what ``param`` names (:func:`_named_as`); None where none is."""
    free = {str(c).lower(): c for c in columns if isinstance(c, str) and c not in taken}
    close = difflib.get_close_matches(str(name).lower(), list(free), n=1, cutoff=0.75)
    if close:
        return free[close[0]]
    kind = param.removesuffix("_col")  # user_col, item_col, time_col, value_col
    return next((c for lower, c in free.items() if _named_as(lower, kind)), None)


def check_named_once(df: Any, names: tuple) -> None:
    """Refuse a DataFrame with more than one column of any of ``names``: pandas allows
    repeated column names, and ``df[name]`` is then a DataFrame."""
    for name in names:
        if (count := list(df.columns).count(name)) > 1:
            raise ValueError(f"the DataFrame has {count} columns named {name!r}: keep one, "
                             f"e.g. df.loc[:, ~df.columns.duplicated()]")


def pair_positions(df: Any, user_col: str, item_col: str, user_ids: Any, item_ids: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The row in ``user_ids`` and in ``item_ids`` (a model's id maps) of each (user, item)
    row of ``df``, ``-1`` for an id the map lacks. ``df`` is an eager pandas or polars
    DataFrame; its id columns are checked as :func:`from_dataframe` checks them (a missing
    id is refused)."""
    _check_columns(df, user_col, item_col, None)
    _, rows = _positions(_id_column(df, user_col), user_ids, user_col, True)
    _, cols = _positions(_id_column(df, item_col), item_ids, item_col, True)
    return rows, cols


def frame_positions(df: Any, user_col: str, item_col: str, value_col: str | None, *,
                    dtype: Any = np.float32, user_ids: Any = None, item_ids: Any = None,
                    drop_unknown: bool = False, suggest: bool = False
                    ) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """:func:`from_dataframe`, and the row and column of each of ``df``'s rows in the
    matrix (``-1`` for an id a given map lacks), for a caller that counts those.
    ``suggest``: as :func:`_check_columns` has it."""
    df = _eager_frame(_check_frame(df))
    drop_unknown = check_bool("drop_unknown", drop_unknown)
    _check_columns(df, user_col, item_col, value_col, suggest=suggest)
    if len(df) == 0 and item_ids is None:  # (against a model's items: rows of none)
        raise ValueError("df has no rows: there is nothing to learn from")
    user_ids, rows = _positions(_id_column(df, user_col), user_ids, user_col, drop_unknown)
    item_ids, cols = _positions(_id_column(df, item_col), item_ids, item_col, drop_unknown)
    if value_col is None or (value_col == "value" and value_col not in df.columns):
        unused = [str(c) for c in df.columns if c not in (user_col, item_col)]
        if value_col is not None and value_candidates(
                unused, numeric_columns(df, (user_col, item_col))):
            warn_unused_columns(unused)
        values = np.ones(len(df))
    elif value_col not in df.columns:
        raise ValueError(f"column {value_col!r} not found; the DataFrame has {list(df.columns)}")
    else:
        values = _numbers(_value_column(df, value_col))
        if values.ndim != 1:  # (polars' Struct and Array columns; else SciPy's "must be 1-D")
            raise TypeError(f"column {value_col!r} holds {df[value_col].dtype} values, not "
                            f"one number per row")
        if values.dtype.kind not in "biuf":
            raise TypeError(f"column {value_col!r} has dtype {values.dtype}: expected "
                            f"numbers{_first_non_number(df, values)}")
        bad = np.flatnonzero(~np.isfinite(values.astype(np.float64)))
        if len(bad):
            raise ValueError(f"column {value_col!r} holds {len(bad)} missing, NaN or infinite "
                             f"value(s), the first at {row_name(df, bad[0])}")
        limit = np.finfo(check_dtype(dtype)).max
        big = np.flatnonzero(np.abs(values.astype(np.float64)) > limit)
        if len(big):
            raise ValueError(f"column {value_col!r} holds {len(big)} value(s) beyond "
                             f"{np.dtype(dtype).name}'s range (largest magnitude {limit:.3g}), "
                             f"the first at {row_name(df, big[0])}: scale the values down or "
                             f"use dtype=float64")
    known = (rows >= 0) & (cols >= 0)
    coo = sp.coo_matrix(
        (values[known].astype(np.float64), (rows[known], cols[known])),
        shape=(len(user_ids), len(item_ids)),
    )
    check = check_user_items_allow_empty if drop_unknown else check_user_items
    return Interactions(check(coo, dtype, name="df"), user_ids, item_ids), rows, cols


def warn_unused_columns(unused: list[str], remedy: str | None = None) -> None:
    """The warning of :func:`from_dataframe` where there is no column 'value' (so every
    row counts 1) but there are ``unused`` other columns, one of which may hold them (see
    :func:`value_candidates`); ``remedy``: how to name it, for a caller without
    ``value_col``."""
    remedy = remedy or "name the values' column with value_col=, or value_col=None to " \
        "count rows"
    warnings.warn(f"no column 'value': every row counts 1, and column(s) {unused} are not "
                  f"used; {remedy}", UserWarning, stacklevel=user_stacklevel())


#: Words in the names of columns that usually hold an interaction's amount or rating.
_VALUE_WORDS = ("rating", "count", "play", "click", "score", "weight", "quantity", "qty",
                "amount", "view", "listen", "purchase", "freq", "star")


def _is_time_name(name: str) -> bool:
    """'timestamp', 'date', 'ts', 'start_time', 'event_ts', 'day' ... (lower case)."""
    return name in ("t", "ts", "dt", "day", "hour", "week", "month", "year") or \
        name.endswith("_ts") or any(word in name for word in ("time", "date", "stamp"))


def _is_value_name(name: str) -> bool:
    """'rating', 'plays', 'click_count' ... and not a time (lower case)."""
    return any(word in name for word in _VALUE_WORDS) and not _is_time_name(name)


def likely_value_column(unused: list[str]) -> str:
    """Of the columns ``unused`` (at least one), the one to name in a warning's example as
    the values' column: the first whose name says amount or rating ('rating', 'plays',
    'click_count') and is not a time ('timestamp', 'date', 'ts', 'start_time'), else the
    first that is not a time, else the first."""
    names = [name.lower() for name in unused]
    for test in (_is_value_name, lambda n: not _is_time_name(n)):
        found = next((i for i, name in enumerate(names) if test(name)), None)
        if found is not None:
            return unused[found]
    return unused[0]


def value_candidates(unused: list[str], numeric: Any) -> list[str]:
    """Of the columns ``unused`` of a table without a column 'value', those that may be
    the values' column it lacks (so that counting each row as 1 is worth a warning that
    names them): one of ``numeric`` (those that hold numbers) not named as a time, or one
    named as an amount or rating, whatever it holds (a rating written '4,5' reads as
    text). An event log's other columns (an event type, a session id, a time) are not."""
    return [name for name in unused
            if (name in numeric and not _is_time_name(str(name).lower()))
            or _is_value_name(str(name).lower())]


def numeric_columns(df: Any, but: tuple) -> set[str]:
    """The names (as text) of the columns of a pandas or polars DataFrame, other than
    those of ``but``, that hold numbers (bool too)."""
    found = set()
    for name in df.columns:
        if name in but:
            continue
        dtype = df[name].dtype
        if hasattr(dtype, "is_numeric"):  # polars
            numeric = dtype.is_numeric() or dtype == _polars_boolean()
        else:
            numeric = getattr(dtype, "kind", "O") in "biuf"
        if numeric:
            found.add(str(name))
    return found


def _polars_boolean():
    import polars
    return polars.Boolean


def _is_number(value: Any) -> bool:
    """A real number (a decimal too) or None (a missing one) in an object column."""
    return isinstance(value, (numbers.Real, decimal.Decimal)) or value is None


def _numbers(values: np.ndarray) -> np.ndarray:
    """An object column of numbers as float64 (a missing one as NaN): decimals, as SQL
    databases, Parquet files and polars' Decimal type give them; anything else as it is."""
    if values.dtype.kind != "O" or not all(map(_is_number, values)):
        return values
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _first_non_number(df: Any, values: np.ndarray) -> str:
    """`` (row 3 holds '1,5')``: the first of ``df``'s ``values`` that does not read as a
    number (``'1,5'``), else the first that is not finite (``'nan'``), else the first
    text (``'2'``), if any. (A column of ``'inf'`` above ``'d'`` named the ``'inf'``,
    which pandas reads as a number.)"""
    def reads_as(value: Any) -> float | None:
        if value is None:  # missing: as NaN
            return math.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    for wrong in (lambda number: number is None, lambda number: not np.isfinite(number)):
        row = next((row for row, value in enumerate(values) if wrong(reads_as(value))), None)
        if row is not None:
            return f" ({row_name(df, row)} holds {values[row]!r})"
    text = next((row for row, value in enumerate(values) if isinstance(value, str)), None)
    return "" if text is None else f" ({row_name(df, text)} holds {values[text]!r})"


def row_name(df: Any, position: int) -> str:
    """How a message names ``df``'s row at ``position``: ``row 3``, counted from 0 as
    ``df.iloc`` counts, with its index label where a pandas index is not those positions
    (``row 3 (index 1207)``, as ``df.loc`` finds it, in a frame filtered or indexed by
    time); for a frame the command line read from a CSV file, that file's line instead
    (``line 5 of ratings.csv``), as an editor or ``sed -n 5p`` finds it."""
    source = getattr(df, "attrs", {}).get("csv_file")  # (polars' frames have no attrs)
    if source is not None:
        from ._tables import csv_line

        path, encoding, header = source
        line = csv_line(path, encoding, header, int(df.index[position]))
        if line is not None:
            return f"line {line} of {path}"
    if _library(df) == "pandas" and not df.index.equals(_pandas().RangeIndex(len(df))):
        return f"row {position} (index {shown_id(df.index[position])!r})"
    return f"row {position}"


def id_positions(known_ids: Any, ids: Any) -> np.ndarray:
    """The position of each of ``ids`` in ``known_ids``, ``-1`` where it is absent.

    Numbers match numbers (``5`` matches ``5.0``); datetimes and durations match the same
    instant or span, on either side (a ``pandas.Timestamp`` or an ISO 8601 string among
    ``datetime64`` ids, or a ``datetime64`` among Timestamps); otherwise ids are compared
    as strings, so ``"5"`` typed on a command line matches a saved integer id ``5``.

    Examples
    --------
    >>> id_positions(np.array(["b", "a", "c"]), ["a", "z", "c"])
    array([ 1, -1,  2])
    """
    known, ids = np.asarray(known_ids).ravel(), np.asarray(ids).ravel()
    if not (known.dtype.kind in "iuf" and ids.dtype.kind in "iuf"):
        if known.dtype.kind not in "mM":  # Timestamps named by a user, a datetime column
            known = in_kind_of(known, ids)
        known, ids = id_text(known), id_text(in_kind_of(ids, known))
    if len(known) == 0:
        return np.full(len(ids), -1, np.int64)
    pd = _pandas()
    if pd is not None:  # a hash lookup: 9x faster than the sorted search below on integers
        # text as Python strings: pandas 3's own string dtype refuses lone surrogates
        # (bytes that are not UTF-8), and hashes 138,000 ids 1.8x slower
        dtype = object if known.dtype.kind == "U" else None
        index = pd.Index(known, dtype=dtype)
        if index.is_unique:
            found = index.get_indexer(pd.Index(ids, dtype=dtype))
            return found.astype(np.int64, copy=False)
    order = np.argsort(known, kind="stable")  # the first of repeated known ids
    where = np.minimum(np.searchsorted(known, ids, sorter=order), len(known) - 1)
    return np.where(known[order[where]] == ids, order[where], -1).astype(np.int64)


def first_of_each(ids: np.ndarray) -> np.ndarray:
    """``ids`` each once, in their order: the first of those the lookups match alike
    (``np.unique`` would sort them, and refuse ids that do not compare, such as None and
    text)."""
    return ids[id_positions(ids, ids) == np.arange(len(ids))]


def id_text(ids: np.ndarray) -> np.ndarray:
    """Ids as the strings that the lookups by id compare: each id's ``str``, bytes
    decoded as UTF-8 (bytes that are not UTF-8 kept as lone surrogates, so ``b"\\xff"``
    matches only itself), datetimes in ISO 8601."""
    if ids.dtype.kind == "S":
        return np.char.decode(ids, "utf-8", "surrogateescape")
    try:
        return ids.astype(str)
    except (UnicodeDecodeError, ValueError):  # objects holding bytes (which astype
        # decodes as ASCII) or sequences (tuples)
        return np.array([i.decode("utf-8", "surrogateescape") if isinstance(i, bytes)
                         else str(i) for i in ids.ravel()]).reshape(ids.shape)


def in_kind_of(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``ids`` to look up among ``known`` ones that are datetimes or durations, in their
    dtype (a ``pandas.Timestamp``, a ``datetime`` or an ISO 8601 string matches the
    same instant; anything else matches nothing); other ids as they are."""
    if known.dtype.kind not in "mM" or ids.dtype == known.dtype or ids.dtype.kind not in "OUSmM":
        return ids
    with warnings.catch_warnings():  # "no explicit representation of timezones"
        warnings.simplefilter("ignore", UserWarning)
        if ids.dtype.kind != "O":
            try:
                return ids.astype(known.dtype)
            except (ValueError, TypeError, OverflowError):  # an id that is not an instant
                pass
        return np.array([_in_dtype(i, known.dtype) for i in ids.ravel()],
                        known.dtype).reshape(ids.shape)


def _in_dtype(value: Any, dtype: np.dtype) -> Any:
    """One id as a datetime or duration of ``dtype``; NaT (which no id is: it matches
    nothing) for a number, which numpy would read as a count of its units."""
    if isinstance(value, (np.datetime64, np.timedelta64)) or \
            not isinstance(value, (numbers.Number, np.bool_)):
        try:
            return np.array(value).astype(dtype)
        except (ValueError, TypeError, OverflowError):
            pass
    return np.array("NaT", dtype)


#: Values that hold several values: never one id (and, but for a tuple, not hashable).
_CONTAINERS = (tuple, list, dict, set, frozenset, np.ndarray)


def first_container(values: np.ndarray) -> Any:
    """The first element of ``values`` that holds several values (a tuple, list, dict,
    set or array), or None. Only an object array can hold one; where pandas is there,
    only one of mixed types is searched (its type inference says which, in C)."""
    if values.dtype.kind != "O" or values.size == 0:
        return None
    pd = _pandas()
    if pd is not None and pd.api.types.infer_dtype(values.ravel(), skipna=True) not in (
            "mixed", "mixed-integer"):
        return None
    return next((v for v in values.ravel() if isinstance(v, _CONTAINERS)), None)


def repeated_at(ids: np.ndarray) -> int | None:
    """The position of an id that ``ids`` holds earlier too, as the lookups by id match
    them (numbers as numbers, anything else as its string), or None."""
    if len(ids) < 2:
        return None
    try:
        # sorted, so distinct: from_dataframe's ids; but "a" < "a\0" while the lookups,
        # through NumPy's strings, which drop trailing NULs, find "a" for both
        if bool(np.all(ids[1:] > ids[:-1])) and not _ends_in_nul(ids):
            return None
    except TypeError:  # ids that do not compare (numbers and strings): look them up
        pass
    repeated = np.flatnonzero(id_positions(ids, ids) != np.arange(len(ids)))
    return int(repeated[0]) if len(repeated) else None


def shown_id(value: Any) -> Any:
    """An id for a message: a NumPy scalar as the Python value it holds (``'a'``, not
    ``np.str_('a')``)."""
    return value.item() if isinstance(value, np.generic) else value


def missing_at(ids: np.ndarray) -> int | None:
    """The position of the first missing id in ``ids`` (NaN, NaT, None, pandas' NA), or
    None: no lookup finds such an id, nor tells two of them apart."""
    kind = ids.dtype.kind
    if kind in "fc":
        missing = np.isnan(ids)
    elif kind in "mM":
        missing = np.isnat(ids)
    elif kind == "O":
        pd = _pandas()
        missing = np.asarray(pd.isna(ids), bool) if pd is not None else np.fromiter(
            (i is None or (isinstance(i, float) and i != i) for i in ids), bool, len(ids))
    else:
        return None
    where = np.flatnonzero(missing)
    return int(where[0]) if len(where) else None


def _ends_in_nul(ids: np.ndarray) -> bool:
    """Whether an id of a sortable object array is text or bytes ending in a NUL character
    (or, rarely, holds NUL, SOH in its middle: then True too). Text sorts with neither
    bytes nor numbers, so such an array holds text only, bytes only, or neither."""
    if ids.dtype != object:
        return False
    kinds: tuple[tuple[Any, Any], ...] = (("\0", "\1"), (b"\0", b"\1"))
    for nul, sep in kinds:
        try:  # one scan in C: 3x faster than a loop over the ids
            joined = sep.join(ids.tolist())
        except TypeError:
            continue
        return nul + sep in joined or joined.endswith(nul)
    return False


def optional_module(name: str):
    """The module ``name`` (an optional dependency), or None where it is not installed.
    Python does not remember a failed import, and each retry searches ``sys.path`` again
    (34 us on the 2-core development machine), so it is tried once; a module in
    ``sys.modules`` (None there: hidden, as the tests hide pandas) is taken as it is."""
    if name in sys.modules:
        return sys.modules[name]
    return _import_once(name)


@functools.cache
def _import_once(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _pandas():
    """The pandas module, or None where it is not installed."""
    return optional_module("pandas")


def _column(df: Any, name: str) -> np.ndarray:
    """Column ``name`` of a pandas or polars DataFrame as a NumPy array; datetimes with a
    time zone as UTC instants in ``datetime64``, as polars gives them (NumPy would hold
    pandas' as Timestamp objects, which a model file keeps as text only)."""
    column = df[name]
    if hasattr(column, "is_null"):  # polars
        return column.to_numpy()
    return id_array(column)


def id_array(ids: Any) -> np.ndarray:
    """Ids (or any values) as a NumPy array; pandas datetimes with a time zone (a Series or
    an index) as UTC instants in ``datetime64``, as polars gives them."""
    if getattr(getattr(ids, "dt", None), "tz", None) is not None:  # a Series
        return ids.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    if getattr(ids, "tz", None) is not None and hasattr(ids, "tz_convert"):  # an index
        return ids.tz_convert("UTC").tz_localize(None).to_numpy()
    try:
        return np.asarray(ids)
    except ValueError:  # a list holding tuples or lists among other ids ("inhomogeneous"):
        if not isinstance(ids, (list, tuple)):  # one object each, for the checks to name
            raise
        array = np.empty(len(ids), object)
        array[:] = [*ids]
        return array


def _value_column(df: Any, name: str) -> np.ndarray:
    """Column ``name`` as :func:`_column` gives it, a DECIMAL column (polars' ``Decimal``,
    pandas' Arrow ``decimal128``) in float64, converted by its library rather than by
    :func:`_numbers` from the Python ``Decimal`` objects that ``to_numpy()`` gives
    (``from_dataframe`` of 2M rows: 1.08 s against 2.93 s from polars, 0.81 s against
    2.42 s from Arrow; ``benchmarks/bench_from_dataframe.py --values ...``)."""
    column = df[name]
    dtype = column.dtype
    if hasattr(column, "is_null") and dtype.is_decimal():  # polars
        import polars
        return column.cast(polars.Float64).to_numpy()
    if str(getattr(dtype, "pyarrow_dtype", "")).startswith("decimal"):  # pandas (Arrow)
        import pyarrow  # (pandas' astype("float64") goes through Python objects)
        floats = pyarrow.array(column).cast(pyarrow.float64())
        if isinstance(floats, pyarrow.ChunkedArray):
            floats = floats.combine_chunks()
        return floats.to_numpy(zero_copy_only=False)  # a missing value: NaN
    return _column(df, name)


def _id_column(df: Any, name: str) -> Any:
    """An id column as a NumPy array, or a text column as a pandas Series that pandas codes
    without making a Python string of every row (see :func:`_text_series`); a missing id
    (NaN, None, a polars null) is refused, and so is a column of several values per row
    (polars' ``Struct`` and ``Array``)."""
    column = df[name]
    text = _text_series(column)
    if text is None:
        text = _categorical_series(column)  # coded from its categories (see _sorted_codes)
    values = _column(df, name) if text is None else None
    if values is not None and values.ndim != 1:
        raise TypeError(f"column {name!r} holds {column.dtype} values, not one id per row; "
                        f"make an id of each, e.g. as text")
    # (the first row alone: a column of tuples, as a composite key makes, holds one in every
    # row; one further down in a column of other ids cannot be sorted with them and is
    # refused as such by _positions, or matches no id of a model's map)
    if values is not None and (several := first_container(values[:1])) is not None:
        raise TypeError(f"column {name!r} holds {type(several).__name__} values (e.g. "
                        f"{several!r}), not one id per row; make an id of each, e.g. as text")
    if hasattr(column, "is_null"):  # polars: null and NaN are distinct
        missing = column.is_null().to_numpy()
        if values is not None and values.dtype.kind == "f":
            missing = missing | np.isnan(values)
    else:
        missing = np.asarray(column.isna())
    where = np.flatnonzero(missing)
    if len(where):
        raise ValueError(f"column {name!r} has {len(where)} missing ids (NaN or None), the "
                         f"first at {row_name(df, where[0])}")
    return values if text is None else text


def _text_series(column: Any) -> Any:
    """A pandas or polars text column as a pandas Series of a string dtype (pandas 3's
    default, Arrow's), which ``pandas.factorize`` codes in Arrow, without a NumPy array
    of Python strings (``from_dataframe`` of 5M rows: 0.69-0.76 s against 1.71-1.82 s
    from pandas 3, 0.84 s against 1.64-1.78 s from polars;
    ``benchmarks/bench_from_dataframe.py --ids str|polars``); None for any other column,
    and for polars without pyarrow."""
    pd = _pandas()
    if pd is None:
        return None
    if hasattr(column, "is_null"):  # polars
        import polars
        if column.dtype != polars.String:
            return None
        try:
            return column.to_pandas(use_pyarrow_extension_array=True)
        except ImportError:  # no pyarrow
            return None
    if not isinstance(column, pd.Series):
        return None
    dtype = column.dtype  # an extension dtype of text (not object, not categorical)
    if isinstance(dtype, (np.dtype, pd.CategoricalDtype)) or \
            not pd.api.types.is_string_dtype(dtype):
        return None
    return column


def _categorical_series(column: Any) -> Any:
    """A pandas categorical Series as it is, and a polars ``Categorical`` or ``Enum`` column
    as pandas' (through Arrow's dictionary: no Python string per row; 5M rows of 100,000
    ids in 0.78-0.81 s against 1.57-1.65 s through polars' strings,
    ``benchmarks/bench_from_dataframe.py --ids polars-categorical``); None for any other
    column, and for polars without pyarrow."""
    if _is_categorical(column):
        return column
    if not hasattr(column, "is_null") or _pandas() is None:  # not polars, or no pandas
        return None
    import polars
    kinds = tuple(getattr(polars, name) for name in ("Categorical", "Enum")
                  if hasattr(polars, name))
    if not isinstance(column.dtype, kinds) and column.dtype not in kinds:
        return None
    try:
        series = column.to_pandas()
    except ImportError:  # no pyarrow
        return None
    return series if _is_categorical(series) else None


def _is_categorical(column: Any) -> bool:
    """Whether ``column`` is a pandas Series of the category dtype (never without pandas)."""
    pd = _pandas()
    return pd is not None and isinstance(column, pd.Series) and \
        isinstance(column.dtype, pd.CategoricalDtype)


def _sorted_codes(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(column, return_inverse=True)``, by hashing (pandas' ``factorize``) where
    pandas is there: 5x faster on 5M string ids, 13x on integers, than NumPy's sort. An
    object column of anything but strings goes to NumPy, which refuses mixed types
    (``factorize`` would sort numbers before strings). ``column``: an array, a text Series
    of :func:`_text_series`, or a categorical Series (coded from its categories: 5M rows
    in 0.51-0.52 s against 1.63-1.65 s through their values,
    ``benchmarks/bench_from_dataframe.py --ids category``)."""
    pd = _pandas()
    if _is_categorical(column):  # from its codes: no value per row
        # (pandas' own factorize orders a categorical by its categories, not by value)
        codes = column.cat.codes.to_numpy()
        categories = np.asarray(column.cat.categories)
        used = np.flatnonzero(np.bincount(codes, minlength=len(categories)))
        ids, positions = _sorted_codes(categories[used])
        place = np.full(len(categories), -1, np.int64)
        place[used] = positions
        return ids, place[codes]
    mixed = pd is not None and isinstance(column, np.ndarray) and column.dtype.kind == "O" \
        and pd.api.types.infer_dtype(column, skipna=False) != "string"
    if pd is None or mixed:
        return np.unique(column, return_inverse=True)
    positions, ids = pd.factorize(column, sort=True)
    ids = np.asarray(ids)
    if ids.dtype.kind == "U" and not isinstance(column, np.ndarray):  # Arrow's text, in
        ids = ids.astype(object)  # pandas < 2: Python strings, as pandas' other text
    return ids, positions.astype(np.int64, copy=False)


def _positions(column: Any, id_map: Any, name: str, drop_unknown: bool):
    """``(ids, position of each entry of column in ids)``: the column's sorted unique
    ids, or ``id_map`` with ``-1`` for what it lacks (refused unless ``drop_unknown``).
    ``column`` as :func:`_id_column` gives it. ``id_map`` may also be a model's lookup
    of its ids (a :class:`gpu_als._ids.IdIndex`: ``ids`` checked when the model took
    them, and ``positions``), which finds the column's distinct ids without hashing
    every id of the model again (a model's 27,000 item ids took 16 ms a call)."""
    if callable(getattr(id_map, "positions", None)):
        try:
            distinct, codes = _sorted_codes(column)
        except TypeError:  # ids of several types, found one by one as id_positions does
            positions = id_positions(id_map.ids, np.asarray(column))
        else:
            positions = id_map.positions(np.asarray(distinct))[codes.ravel()]
        return _known_positions(id_map.ids, column, positions, name, drop_unknown)
    if id_map is None:
        try:
            ids, positions = _sorted_codes(column)
        except TypeError:  # e.g. numbers and strings in one object column
            types = sorted({type(value).__name__ for value in column})
            what = (f"mixes ids of types {', '.join(types)} that cannot be sorted together"
                    if len(types) > 1 else f"holds ids of type {types[0]} that cannot be sorted")
            raise TypeError(f"column {name!r} {what}; convert it first, e.g. "
                            f"df[{name!r}].astype(str)") from None
        return ids, positions.ravel()
    ids = id_array(id_map)
    where = f"the id map for column {name!r}"
    if ids.ndim != 1:
        raise ValueError(f"{where} must be 1-D, got shape {ids.shape}")
    if (at := missing_at(ids)) is not None:
        raise ValueError(f"{where} holds a missing id ({ids[at]}) at position {at}")
    if (at := repeated_at(ids)) is not None:
        raise ValueError(f"{where} holds {shown_id(ids[at])!r} more than once")
    column = np.asarray(column)
    return _known_positions(ids, column, id_positions(ids, column), name, drop_unknown)


def _known_positions(ids: np.ndarray, column: Any, positions: np.ndarray, name: str,
                     drop_unknown: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, positions)`` of :func:`_positions` with an id map, the ``column``'s ids
    the map lacks (``-1``) refused unless ``drop_unknown``."""
    if not drop_unknown and (positions < 0).any():
        missing = first_of_each(np.asarray(column)[positions < 0])
        what = "an id" if len(missing) == 1 else f"{len(missing)} ids"
        raise ValueError(f"column {name!r} holds {what} that the given map lacks "
                         f"(e.g. {', '.join(map(repr, missing[:3].tolist()))}); pass "
                         f"drop_unknown=True to leave their rows out")
    return ids, positions


# --------------------------------------------------------------------------------------
# What the solvers see
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedRows:
    """The rows of one half-step, in the form every backend's ``solve_rows`` consumes.

    For each row ``u`` (a user, or an item when transposed) and stored column ``i``:

    * ``weight[i]`` is the entry's extra weight in the row's Gram matrix: ``c - 1``
      (implicit) or ``1`` (explicit), so ``A_u = base + sum_i weight * y_i y_i^T``;
    * ``target[i]`` is its weight in the right-hand side: ``c * p`` (implicit) or ``r``
      (explicit), so ``b_u = sum_i target * y_i``.

    ``loss_constant`` is ``sum(c * p)`` (implicit) or ``sum(r^2)`` (explicit), the part of
    the loss that does not depend on the factors. The arrays are NumPy arrays here and
    the backend's own arrays after ``Backend.put``.
    """

    indptr: Any
    indices: Any
    weight: Any
    target: Any
    n_cols: int
    loss_constant: float

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def map_arrays(self, fn) -> WeightedRows:
        """A copy with ``fn`` applied to each array (how backends move it to a device)."""
        return WeightedRows(
            fn(self.indptr), fn(self.indices), fn(self.weight), fn(self.target),
            self.n_cols, self.loss_constant,
        )


class Prepared:
    """A checked interaction matrix whose two CSR structures are built once.

    ``fit`` prepares its input this way every time; :func:`gpu_als.tune.tune` prepares the
    training data once and hands the same object to every trial, so that checking,
    transposing and (per backend and confidence setting) moving the data to the device
    happen once for the whole search.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items)
    dtype : float32 or float64
    """

    def __init__(self, user_items: Any, dtype: Any = np.float32):
        #: the entries given, repeated (user, item) pairs counted: a COO matrix's, say
        self._stored = getattr(user_items, "nnz", None)
        self.csr = check_user_items(user_items, dtype)
        self.dtype = self.csr.dtype
        # R^T's structure, and where each of its entries sits in R's data (int32 positions
        # while they fit: 4 bytes per entry less while held, a whole search for tune)
        nnz = self.csr.nnz
        positions = np.arange(nnz, dtype=np.int32 if nnz <= np.iinfo(np.int32).max
                              else np.int64)
        position = sp.csr_matrix(
            (positions, self.csr.indices, self.csr.indptr), shape=self.csr.shape
        ).T.tocsr()
        self._t_indptr, self._t_indices = _same_index_dtype(position.indptr, position.indices)
        self._t_position = position.data
        self._rows: dict[tuple, tuple[WeightedRows, WeightedRows]] = {}
        self._device: dict[tuple, tuple[Any, tuple[WeightedRows, WeightedRows]]] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return self.csr.shape

    def rows(self, *, feedback: str, alpha: float = 1.0, confidence: str = "linear",
             epsilon: float = 1.0) -> tuple[WeightedRows, WeightedRows]:
        """The user rows (of R) and item rows (of R^T) for these confidence settings."""
        key = (feedback, alpha, confidence, epsilon)
        if key not in self._rows:
            if feedback == "explicit" and self._stored is not None:
                warn_summed_ratings(int(self._stored), self.csr,
                                    rows="stored entries of user_items")
            if feedback == "implicit" and not (self.csr.data > 0).any():
                warn_no_positive_value("user_items")
            users = weighted_rows(self.csr, feedback=feedback, alpha=alpha,
                                  confidence=confidence, epsilon=epsilon)
            items = WeightedRows(
                self._t_indptr, self._t_indices, users.weight[self._t_position],
                users.target[self._t_position], self.csr.shape[0], users.loss_constant,
            )
            self._rows[key] = (users, items)
        return self._rows[key]

    def on_backend(self, backend, **settings) -> tuple[WeightedRows, WeightedRows]:
        """:meth:`rows` moved to ``backend`` (cached per backend instance)."""
        key = (id(backend), *sorted(settings.items()))
        cached = self._device.get(key)
        if cached is None or cached[0] is not backend:
            users, items = self.rows(**settings)
            cached = (backend, (backend.put(users), backend.put(items)))
            self._device[key] = cached
        return cached[1]


def warn_no_positive_value(name: str) -> None:
    """The warning of a fit of implicit feedback whose input ``name`` has no value > 0."""
    warnings.warn(
        f"{name} has no positive value: implicit feedback learns the preference "
        f"p = [r > 0] of each entry, so nothing is learned (the factors go to 0, and every "
        f"score with them); give amounts > 0 (or ratings with feedback='explicit')",
        UserWarning, stacklevel=user_stacklevel())


def merged_ids(parts: list[np.ndarray], name: str) -> np.ndarray:
    """The sorted distinct ids of a column read in ``parts`` (each part's own distinct
    ids, as :func:`from_dataframe` gives them): the ids of the whole column, as
    :func:`from_dataframe` sorts them; ``name``: the column's, for its errors."""
    ids, _ = _positions(np.concatenate(parts), None, name, False)
    return ids


def _same_index_dtype(indptr, indices):
    """indptr and indices with one dtype (scipy may widen only one of them)."""
    if indptr.dtype != indices.dtype:
        dtype = np.promote_types(indptr.dtype, indices.dtype)
        return indptr.astype(dtype), indices.astype(dtype)
    return indptr, indices


def weighted_rows(
    csr: sp.csr_matrix,
    *,
    feedback: str,
    alpha: float = 1.0,
    confidence: str = "linear",
    epsilon: float = 1.0,
) -> WeightedRows:
    """Turn a checked CSR of raw values into :class:`WeightedRows` (DESIGN.md section 1).

    Implicit: ``p = [r > 0]``, ``c = 1 + alpha * f(|r|)`` with ``f`` linear or
    ``log(1 + x / epsilon)``; ``weight = c - 1``, ``target = c * p``.
    Explicit: ``weight = 1``, ``target = r``.
    """
    r = csr.data
    dtype = r.dtype
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        weight, target, constant = _weights(r, feedback, alpha, confidence, epsilon)
    if not (np.isfinite(weight).all() and np.isfinite(target).all() and np.isfinite(constant)):
        largest = float(np.abs(r).max())
        if feedback == "explicit":  # weight 1, target r: only the loss's constant (the
            # sum of the squares, in float64) can overflow
            raise ValueError(f"the squares of the ratings overflow float64 (the largest "
                             f"value is {largest:.3g}): scale the values down")
        scaled = f"log(1 + {largest:.3g} / epsilon={epsilon:.3g})" if confidence == "log" \
            else f"the largest value {largest:.3g}"
        hint = " or use dtype=float64" if dtype == np.float32 else ""
        raise ValueError(
            f"the confidences overflow {dtype}: alpha={alpha} times {scaled} is too large; "
            f"scale the values down{hint}"
        )
    indptr, indices = _same_index_dtype(csr.indptr, csr.indices)
    return WeightedRows(indptr, indices, weight, target, csr.shape[1], constant)


def _weights(r: np.ndarray, feedback: str, alpha: float, confidence: str, epsilon: float):
    """``(weight, target, loss_constant)`` of :class:`WeightedRows` for raw values ``r``."""
    if feedback == "implicit":
        magnitude = np.abs(r)
        if confidence == "log":  # in float64: |r| / epsilon may overflow float32
            magnitude = np.log1p(magnitude.astype(np.float64) / epsilon)
        weight = (alpha * magnitude).astype(r.dtype, copy=False)
        target = np.where(r > 0, 1 + weight, 0).astype(r.dtype, copy=False)
        return weight, target, float(target.sum(dtype=np.float64))
    return np.ones_like(r), r.copy(), float(np.square(r, dtype=np.float64).sum())
