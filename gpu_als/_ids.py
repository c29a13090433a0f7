"""The original ids of a model's factor rows (``user_ids_``, ``item_ids_``): checked,
looked up (numbers as numbers, anything else as text: :func:`gpu_als.data.id_positions`),
appended to by partial fits, and stored in model files."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import data


def checked_ids(ids: Any, n: int, name: str, *, distinct: bool = False
                ) -> np.ndarray | None:
    """``ids`` as a 1-D array of ``n`` original ids, or None; with ``distinct`` (ids given
    by the user, not read back from a model) each id once, as the lookups by id need."""
    if ids is None:
        return None
    ids = data.id_array(ids)
    if ids.shape != (n,):
        raise ValueError(f"{name} has shape {ids.shape}, expected ({n},): one id per factor "
                         f"row")
    _check_single(ids, name)
    if distinct:
        _check_present(ids, name)
        if (at := data.repeated_at(ids)) is not None:
            raise ValueError(f"{name} holds {data.shown_id(ids[at])!r} more than once: each "
                             f"factor row needs an id of its own (the lookups by id find "
                             f"only the first)")
    return ids


def _check_single(ids: np.ndarray, name: str) -> None:
    """Refuse ids that hold several values (a tuple of a composite key, a list): the
    lookups, and a model file, read each id as one value."""
    if (several := data.first_container(ids)) is not None:
        raise TypeError(f"{name} holds {type(several).__name__} ids (e.g. {several!r}): an "
                        f"id is one value (a number, a string, bytes, a datetime); make one "
                        f"of each, e.g. as text")


def _check_present(ids: np.ndarray, name: str) -> None:
    """Refuse a missing id (NaN, NaT, None): no lookup by id finds it, and as a model's
    id it names no user or item (a DataFrame's id column is refused alike)."""
    if (at := data.missing_at(ids)) is not None:
        raise ValueError(f"{name} holds a missing id ({ids[at]}) at position {at}: each "
                         f"row needs an id; drop it, or give it one")


class IdIndex:
    """The rows of original ids in a model's id array, as :func:`gpu_als.data.id_positions`
    finds them (numbers match numbers, anything else is compared as a string; the first
    of repeated ids), from a dict built once and extended as partial fits append ids:
    id_positions hashes every known id on each call (50 ms a call at 138,000 string ids,
    against 0.3 ms for the rest of a one-user partial fit)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.numeric = ids.dtype.kind in "iuf"
        keys = self._keys(ids)
        # reversed: a repeated id keeps its first row
        self.rows = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))

    def _keys(self, ids: np.ndarray) -> list:
        return ids.tolist() if self.numeric else \
            data.id_text(data.in_kind_of(ids, self.ids)).tolist()

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The row of each of ``ids``, ``-1`` where it is absent."""
        if self.numeric and ids.dtype.kind not in "iuf":  # compared as strings: rare
            return data.id_positions(self.ids, ids)
        get = self.rows.get
        return np.fromiter((get(key, -1) for key in self._keys(ids)), np.int64, len(ids))

    def extend(self, grown: np.ndarray) -> None:
        """Follow the model's ids to ``grown``: these ids and then new ones."""
        if len(grown) > len(self.ids):
            added = self._keys(grown[len(self.ids):])
            for row, key in enumerate(added, start=len(self.ids)):
                self.rows.setdefault(key, row)
        self.ids = grown


class FrozenIds:
    """A model's :class:`IdIndex` as it finds the model's ``ids`` of one moment: a query's
    (``ALS._snapshot``), while partial fits on other threads append ids to the index. Rows
    from ``len(ids)`` on, of ids appended since, are not found (``-1``)."""

    def __init__(self, index: IdIndex, ids: np.ndarray):
        self.index, self.ids = index, ids

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The row of each of ``ids`` among :attr:`ids`, ``-1`` where it is absent."""
        rows = self.index.positions(ids)
        rows[rows >= len(self.ids)] = -1
        return rows


def rows_of_ids(index: IdIndex, ids: Any, n: int, side: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """The factor rows of the original ``ids`` among the model's ``n`` rows' (in
    ``index``): a known id's row, ``n``, ``n + 1``, ... for the new ones in order; and the
    new ids."""
    name, attr, known = f"{side}_ids", f"{side}_ids_", index.ids
    ids = data.id_array(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
    if len(ids) == 0:
        raise ValueError(f"{name} is empty")
    _check_single(ids, name)
    _check_present(ids, name)
    mine, theirs = _family(known), _family(ids)
    if mine and theirs and mine != theirs:
        raise TypeError(f"{name} are {theirs} ({ids.dtype}, e.g. "
                        f"{data.short_repr(data.shown_id(ids[0]))}) but the model's {attr} are "
                        f"{mine} ({known.dtype}, e.g. "
                        f"{data.short_repr(data.shown_id(known[0]))}): an id is found only "
                        f"among ids of its kind")
    if data.repeated_at(ids) is not None:
        raise ValueError(f"{name} holds duplicates; give each id once")
    rows = index.positions(ids)
    new = rows < 0
    rows[new] = n + np.arange(int(new.sum()))
    return rows, ids[new]


_FAMILIES = {**dict.fromkeys("iu", "integers"), "f": "floats", "U": "strings", "S": "strings"}


def _family(ids: np.ndarray) -> str | None:
    """"integers", "floats" or "strings": the kind of ``ids`` (an object array's, as
    ``fit(df)`` makes of text ids, by its first id), or None for others (datetimes,
    booleans), which are not compared."""
    kind = ids.dtype.kind
    if kind == "O" and len(ids):
        kind = np.asarray(ids[:1].tolist()).dtype.kind
    return _FAMILIES.get(kind)


def ids_to_append(known: np.ndarray, new: np.ndarray, side: str) -> np.ndarray:
    """``new`` ids to append to a model's ``known`` ones of its ``side`` ("user" or
    "item"), in ``known``'s dtype where numbers are (a ``TypeError`` where they do not fit
    it)."""
    if known.dtype.kind in "iuf" and len(new):
        try:
            cast = new.astype(known.dtype)
            fits = np.array_equal(cast, new)
        except (ValueError, TypeError, OverflowError):  # "x" or 10**20 as an int64
            fits = False
        if not fits:
            raise TypeError(f"{side}_ids {new[:5].tolist()} do not fit the model's "
                            f"{side}_ids_ ({known.dtype}): a model's ids are all of one type")
        return cast
    return new


def checked_data_ids(ids: tuple[Any, Any], shape) -> tuple[Any, Any]:
    """``fit``'s ``(user_ids, item_ids)`` for a matrix of ``shape``, checked."""
    return (checked_ids(ids[0], shape[0], "user_ids", distinct=True),
            checked_ids(ids[1], shape[1], "item_ids", distinct=True))


def storable_ids(ids: np.ndarray) -> np.ndarray:
    """``ids`` as ``np.savez`` stores them without pickle, found alike by the lookups
    by id of the model loaded: numbers, booleans, strings, bytes, datetimes and
    durations as they are, an object array of bytes as bytes, other objects as their
    strings (:func:`gpu_als.data.id_text`)."""
    if ids.dtype.kind in "biufUSmM":
        return ids
    items = ids.ravel().tolist()
    if items and all(isinstance(i, bytes) and not i.endswith(b"\0") for i in items):
        return np.array(items, dtype="S").reshape(ids.shape)  # ("S" drops trailing NULs)
    return data.id_text(ids)
