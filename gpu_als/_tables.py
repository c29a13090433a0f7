"""The command line's tables: interaction files read into a pandas DataFrame (CSV with
any delimiter, compressed or not, in any encoding, ids as the file writes them; Parquet
files and folders of them) and result tables written (CSV or Parquet)."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import io
import itertools
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import _urls
from ._urls import is_url, suffix
from .data import (
    column_like,
    counted,
    guess_id_columns,
    likely_value_column,
    numeric_columns,
    row_name,
    user_stacklevel,
    value_candidates,
    warn_unused_columns,
)

#: The first bytes of what standard input may bring, and the name its copy takes, so that
#: it is read as a file of that name is (compressed as its name says, or Parquet).
STDIN_KINDS = ((b"\x1f\x8b", "stdin.csv.gz"), (b"BZh", "stdin.csv.bz2"),
               (b"\xfd7zXZ\x00", "stdin.csv.xz"), (b"\x28\xb5\x2f\xfd", "stdin.csv.zst"),
               (b"PK\x03\x04", "stdin.csv.zip"), (b"PAR1", "stdin.parquet"))


def read_frame(args: argparse.Namespace):
    """The file named by ``args.file`` as a pandas DataFrame, its id columns checked.
    ``-`` reads standard input (CSV, compressed or not, or Parquet), and the CSV file of a
    URL is downloaded: each is copied to a temporary file first, since the file is read
    more than once (its delimiter, its ids' types), and named as given in the errors and
    warnings. A URL's Parquet is read where it is."""
    _check_columns_apart(args)
    if str(args.file) == "-":
        return _read_a_copy(args, "standard input", _copy_of_stdin)
    if is_url(args.file) and suffix(args.file) not in PARQUET:
        fs, where = _urls.filesystem(args.file)
        if not fs.isdir(where):  # (a folder: of Parquet files, read where it is)
            if not fs.isfile(where):
                raise ValueError(f"{args.file}: no such file")
            return _read_a_copy(args, args.file, functools.partial(_downloaded, args.file))
    return _read_frame(args)


#: The suffixes of a Parquet file (any other file is read as CSV).
PARQUET = (".parquet", ".pq")


def _read_a_copy(args: argparse.Namespace, name: str, copy: Callable[[Path], Path]):
    """:func:`_read_frame` of the file that ``copy`` writes into a temporary folder (and
    returns the path of), named ``name`` in the errors and warnings."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gpu-als-") as folder:
        path = copy(Path(folder))
        caught: list[warnings.WarningMessage] = []
        try:  # errors and warnings named as the user named the file
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = _read_frame(argparse.Namespace(**{**vars(args), "file": path}))
            df.attrs.pop("csv_file", None)  # (lines of a copy about to be deleted)
            return df
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace(str(path), name)) from None
        finally:
            for said in caught:
                warnings.warn_explicit(str(said.message).replace(str(path), name),
                                       said.category, said.filename, said.lineno)


def _copy_of_stdin(folder: Path) -> Path:
    """Standard input copied into ``folder``, named as a file of what its first bytes say
    it is (compressed as its name then says, or Parquet); an empty one is refused."""
    import shutil

    path = folder / "stdin"
    with open(path, "wb") as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy, 1 << 20)
    with open(path, "rb") as copied:
        head = copied.read(8)
    if not head:
        raise ValueError("standard input is empty: pipe the interactions in (e.g. "
                         "zcat data.csv.gz | gpu-als train -), or name their file")
    return path.rename(path.with_name(next(
        (name for magic, name in STDIN_KINDS if head.startswith(magic)), "stdin.csv")))


def _downloaded(url: str, folder: Path) -> Path:
    """The file of ``url`` copied into ``folder`` under its own name (which says whether
    it is compressed), with a progress bar on a terminal."""
    import shutil

    fs, where = _urls.filesystem(url)
    path = folder / PurePosixPath(where).name
    with fs.open(where, "rb") as source, open(path, "wb") as target, \
            tqdm.wrapattr(target, "write", total=fs.info(where).get("size"),  # (or None)
                          desc=f"downloading {url}", disable=None, leave=False) as bar:
        shutil.copyfileobj(source, bar, 1 << 20)
    return path


def counts_rows(args: argparse.Namespace) -> bool:
    """Whether the command counts each row as 1 where the file has no value column (and
    so warns of the columns it leaves out). Not explicit feedback, which refuses a file
    without ratings, nor ``predict``, whose value column is only copied through, nor
    with ``--event-weights``, which makes the values."""
    return getattr(args, "values_counted", True) and getattr(args, "feedback", None) != \
        "explicit" and getattr(args, "event_weights", None) is None


def event_weights(text: str) -> tuple[str, dict[str, float]]:
    """``--event-weights``' ``COLUMN=LABEL:WEIGHT,...`` as ``(COLUMN, {LABEL: WEIGHT})``
    (an argparse type: a malformed one is refused as the options are read)."""
    example = "e.g. event_type=view:1,cart:3,purchase:5"
    column, _, pairs = text.partition("=")
    if not column or not pairs:
        raise argparse.ArgumentTypeError(f"expected COLUMN=LABEL:WEIGHT,..., {example}; "
                                         f"got {text!r}")
    weights: dict[str, float] = {}
    for pair in pairs.split(","):
        label, _, weight = pair.rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = float("nan")
        if not label or not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{pair!r} is not LABEL:WEIGHT with a finite "
                                             f"number ({example})")
        if label in weights:
            raise argparse.ArgumentTypeError(f"label {label!r} is given twice")
        weights[label] = value
    return column, weights


def _read_frame(args: argparse.Namespace):
    """:func:`read_frame` of a file or folder."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise RuntimeError("reading files needs pandas: pip install gpu-als[pandas]") from exc
    if getattr(args, "event_weights", None) is not None and args.no_header:
        raise ValueError("--event-weights names a column, and --no-header leaves the file's "
                         "columns unnamed: give the file a header line")
    folder = _checked_path(args)
    parquet = folder or suffix(args.file) in PARQUET
    df = _read_parquet_file(pd, args, folder) if parquet else _read_csv_file(pd, args)
    _check_id_columns(args, [str(c) for c in df.columns], parquet)
    _check_other_columns(args, df.columns,
                         [str(c) for c in df.attrs.get("file_columns", df.columns)])
    if args.value_col != "value" and args.value_col not in df.columns and \
            getattr(args, "event_weights", None) is None:  # (the default: each row counts 1)
        raise _missing_value_column(df, args)
    if len(df) == 0:
        raise ValueError(f"{args.file} has no rows" if parquet else
                         f"{args.file} has a header line but no rows")
    if not parquet and not args.no_header:
        _refuse_repeated_header(df, args)
    if getattr(args, "event_weights", None) is not None:
        df = _weigh_events(df, args)
    kept = [*dict.fromkeys((args.user_col, args.item_col)), *_other_columns(args)]
    unused = [str(c) for c in df.columns if c not in kept]
    if args.value_col == "value" and "value" not in df.columns and unused and counts_rows(args):
        # every row counts 1: said here in the command line's words (from_dataframe would
        # name its value_col=), once, the other columns then left out
        candidates = value_candidates(unused, numeric_columns(df, tuple(kept)))
        if candidates:
            warn_unused_columns(unused, _value_col_remedy(candidates))
        names = df.attrs.get("file_columns", [str(c) for c in df.columns])
        df = df[kept]
        df.attrs["file_columns"] = names
    return df


def _checked_path(args: argparse.Namespace) -> bool:
    """Refuse an interaction file that is not there, or is a model (.npz), or a folder
    that is not the Parquet files of one table; returns whether it is a folder (Spark's
    and Dask's output: a folder of Parquet part files). A URL is looked up through its
    filesystem."""
    if is_url(args.file):
        filesystem, path = _urls.filesystem(args.file)
        folder, there = filesystem.isdir(path), filesystem.isfile(path)
        files = [PurePosixPath(file[len(path.rstrip("/")) + 1:])
                 for file in filesystem.find(path)] if folder else []
    else:
        folder, there = args.file.is_dir(), args.file.is_file()
        files = [file.relative_to(args.file) for file in sorted(args.file.rglob("*"))
                 if file.is_file()] if folder else []
    if folder:
        _check_parquet_folder(args.file, files)
    elif not there:
        raise ValueError(f"{args.file}: no such file")
    elif suffix(args.file) == ".npz":  # (a model given for the data)
        raise ValueError(f"{args.file} is an .npz file, as models are: give the "
                         f"interactions as a CSV or Parquet file")
    return folder


def _check_id_columns(args: argparse.Namespace, names: list[str], parquet: bool) -> None:
    """Refuse a file whose columns (``names``) lack ``--user-col``'s or ``--item-col``'s,
    with the options that would name them."""
    for column in (args.user_col, args.item_col):
        if column not in names:
            raise ValueError(f"{args.file} has no column {column!r}; its columns are "
                             f"{names}. {_missing_column_hint(names, parquet, args)}")


def _missing_value_column(df, args: argparse.Namespace) -> ValueError:
    """``--value-col`` naming a column that the file lacks, with the one likely meant: named
    alike ('Rating' for 'rating') or as values ('plays'), else one of numbers."""
    names = [str(c) for c in df.attrs.get("file_columns", df.columns)]
    unused = [name for name in names
              if name not in (args.user_col, args.item_col, *_other_columns(args))]
    candidates = value_candidates(unused, numeric_columns(df, (args.user_col, args.item_col)))
    meant = column_like(unused, "value_col", args.value_col, []) or (
        likely_value_column(candidates) if candidates else None)
    typed = _typed(meant) if meant else None
    third = " (with --no-header, the third)" if args.no_header else ""
    return ValueError(f"{args.file} has no column {args.value_col!r}{third} for --value-col; "
                      f"its columns are {names}"
                      + (f" (did you mean --value-col {typed}?)" if typed else ""))


def _check_columns_apart(args: argparse.Namespace) -> None:
    """Each column option names a column of its own, before the file is read: the ids',
    the values' (``--value-col``, ``value`` by default), ``--time-col``'s and the events'
    of ``--event-weights``. (With ``--no-header`` the names go to the columns by position,
    and two of one name made pandas' two-column selections, then an AttributeError.)"""
    weighted = getattr(args, "event_weights", None)
    named = [("--user-col", args.user_col), ("--item-col", args.item_col),
             ("--value-col", getattr(args, "value_col", None)),
             ("--event-weights", None if weighted is None else weighted[0]),
             ("--time-col", getattr(args, "time_col", None))]
    defaults = {"--user-col": "user", "--item-col": "item", "--value-col": "value"}
    first: dict[str, str] = {}
    for option, column in named:
        if column is None:
            continue
        if column in first:
            # the option left at its default last, and said to be: the other was typed
            pair = sorted((first[column], option), key=lambda o: defaults.get(o) == column)
            shown = [f"{o} (by default {column!r})" if defaults.get(o) == column else o
                     for o in pair]
            fix = "name the column of the times" if "--time-col" in pair else \
                "give each a column of its own"
            raise ValueError(f"{shown[0]} and {shown[1]} both name {column!r}: {fix}")
        first[column] = option


def _other_columns(args: argparse.Namespace) -> list[str]:
    """The columns a command reads besides the ids and the values: ``--time-col``'s
    (evaluate, tune, train) and ``--event-weights``'."""
    return list(_other_options(args).values())


def _check_other_columns(args: argparse.Namespace, columns, names: list[str]) -> None:
    """Refuse a file whose ``columns`` (those read) lack one of :func:`_other_columns`;
    ``names``: all of the file's, for the message."""
    for option, column in _other_options(args).items():
        if column not in columns:
            fourth = " (with --no-header, the fourth)" if args.no_header else ""
            raise ValueError(f"{args.file} has no column {column!r}{fourth} for {option}; "
                             f"its columns are {names}")


def _other_options(args: argparse.Namespace) -> dict[str, str]:
    """:func:`_other_columns` by the option that names each."""
    time_col = getattr(args, "time_col", None)
    weighted = getattr(args, "event_weights", None)
    return {option: column for option, column in (("--time-col", time_col), (
        "--event-weights", None if weighted is None else weighted[0])) if column is not None}


def _weigh_events(df, args: argparse.Namespace):
    """``--event-weights``: the value column made of the weights of the event column's
    labels (compared as text), the rows of weight 0 left out; a label without a weight is
    refused, with how many rows have it."""
    column, weights = args.event_weights
    if args.value_col in df.columns:
        raise _values_already(args)
    values = event_values(df[column], column, weights)
    kept = (values != 0).to_numpy()
    if not kept.any():
        raise _all_weighed_0(args)
    return df.assign(**{args.value_col: values})[kept]


def event_values(labels, column: str, weights: dict[str, float], where: str = ""):
    """The weights (float64) of an event column's ``labels`` (compared as text), as
    ``--event-weights COLUMN=LABEL:WEIGHT,...`` gives them; a label without a weight is
    refused with how many rows have it (``where``: words after that count, where the
    rows are not the whole file's)."""
    labels = labels.astype(str)
    values = labels.map(weights)
    unknown = labels[values.isna()].value_counts()
    if len(unknown):
        shown = ", ".join(f"{label!r} ({counted(n, 'row')}{where})"
                          for label, n in unknown.head(5).items())
        raise ValueError(f"--event-weights gives no weight to {len(unknown)} label(s) of "
                         f"column {column!r}: {shown}; give each a weight (0 leaves its rows "
                         f"out)")
    return values.astype(np.float64)


def _all_weighed_0(args: argparse.Namespace) -> ValueError:
    """``--event-weights`` that leaves no row of the file: every one's weight is 0."""
    return ValueError(f"--event-weights gives every row of {args.file} the weight 0: "
                      f"nothing is left to learn from")


def _values_already(args: argparse.Namespace) -> ValueError:
    """``--event-weights`` on a file that has a values' column (``--value-col``'s)."""
    return ValueError(f"{args.file} has a column {args.value_col!r} already: --event-weights "
                      f"makes the values from column {args.event_weights[0]!r} (leave one of "
                      f"them out, or name another values' column with --value-col)")


def _missing_column_hint(names: list[str], parquet: bool, args: argparse.Namespace) -> str:
    """What to do about a file without the id columns named, from its column ``names``:
    a CSV file's header line that holds values (no header line), or reads as one column
    (the wrong delimiter); else the options that name the columns."""
    if parquet:
        return _name_the_columns(names)
    if all(map(_reads_as_number, names)):
        return ("Its first line holds values, not column names: pass --no-header (the "
                "columns are then user, item and value, in that order)")
    inside = _delimiter_in(names[0]) if len(names) == 1 else None
    if inside is not None:
        return (f"Its header line reads as one column: {_delimiter_question(inside)}"
                + ("" if args.sep is None else " (or leave --sep out to have it detected)"))
    return _name_the_columns(names) + ", or pass --no-header for a file without a header line"


def _delimiter_in(text: str, other_than: str | None = None) -> str | None:
    """The first delimiter a CSV file commonly has (``::`` first, then , ; tab |) found in
    ``text``, a field that should have been split, other than ``other_than``."""
    return next((d for d in ("::", *",;\t|") if d != other_than and d in text), None)


def _delimiter_question(delimiter: str) -> str:
    """``is the delimiter ';'? Pass --sep ';'`` (a tab as ``--sep tab``)."""
    option = "tab" if delimiter == "\t" else shlex.quote(delimiter)
    return f"is the delimiter {delimiter!r}? Pass --sep {option}"


def _typed(name: Any) -> str | None:
    """A column's name as a shell reads it typed after an option (``'user id'``), or None
    where it holds a character that cannot be shown in a one-line message or typed as an
    argument (a tab, a line break, U+2028, NUL: a header line read with the wrong
    delimiter or encoding), so that no example is given."""
    name = str(name)
    return shlex.quote(name) if name.isprintable() else None


def _name_the_columns(names: list[str]) -> str:
    """The options that name the id columns, with the file's likeliest as the example
    (:func:`gpu_als.data.guess_id_columns`: userId and movieId of MovieLens' ratings.csv,
    whose first column is the time)."""
    guess = {wanted: _typed(name) for name, wanted in guess_id_columns(names).items()}
    example = (f" (e.g. --user-col {guess['user']} --item-col {guess['item']})"
               if guess and None not in guess.values() else "")
    return f"Name the id columns with --user-col and --item-col{example}"


def _refuse_repeated_header(df, args: argparse.Namespace) -> None:
    """Refuse a CSV file whose rows repeat its header line, as files joined with their
    header lines (``cat a.csv b.csv``) do: such a row would be a user named as the user
    column with an item named as the item column (or, with values, an error about text
    among them). A column of numbers holds no header: only text columns are compared."""
    repeated = None
    for column in dict.fromkeys((args.user_col, args.item_col)):
        if df[column].dtype.kind in "biufcmM":
            return
        named = (df[column] == column).to_numpy(dtype=bool, na_value=False)
        repeated = named if repeated is None else repeated & named
    if repeated is not None and repeated.any():
        where = np.flatnonzero(repeated)
        raise ValueError(f"{len(where)} row(s) repeat the header line, the first at "
                         f"{row_name(df, where[0])} (files joined with their header "
                         f"lines?): keep the first header line only")


def _value_col_remedy(candidates: list[str]) -> str:
    """How the command line names the values' column (one of ``candidates``, as
    :func:`gpu_als.data.value_candidates` finds them), for :func:`warn_unused_columns`."""
    typed = _typed(likely_value_column(candidates))
    return "name the values' column with --value-col" + \
        (f" (e.g. --value-col {typed})" if typed else "")


def _read_parquet_file(pd, args: argparse.Namespace, folder: bool):
    """A Parquet file, or a folder of them, through pyarrow. Only its user, item and
    value columns are read (an event log with five more columns of text: 11x faster, in a
    quarter of the memory), or the first two without a column 'value' (every row then
    counts 1; warned here, as ``from_dataframe`` would, with the columns not read), and
    ``df.attrs["file_columns"]`` lists them all; every column where a column named is
    missing (the errors list them). ``folder``: whether it is a folder."""
    _refuse_no_header(args)
    path, where = args.file, {}
    if is_url(args.file):  # through fsspec, as the footers are read (recent pandas, 3.1
        # here, has pyarrow's own S3 client read s3://, blind to fsspec's configuration)
        filesystem, path = _urls.filesystem(args.file)
        where = {"filesystem": filesystem}
    with _read_as_parquet(args, folder):
        dataset = _parquet_dataset(args, folder)
        names = dataset.schema.names
        ids = list(dict.fromkeys((args.user_col, args.item_col)))
        kept = [*ids, *_other_columns(args)]  # (--time-col's column)
        if not set(kept) <= set(names) or (args.value_col not in names
                                           and args.value_col != "value"):
            return pd.read_parquet(path, **where)
        counted = args.value_col not in names  # (the default column 'value' is missing)
        df = pd.read_parquet(path, columns=kept if counted else [*kept, args.value_col],
                             **where)
        df.attrs["file_columns"] = names
        if counted:
            _warn_unread_columns(dataset, kept, args)
        return df


def dask_frame(args: argparse.Namespace, feedback: str):
    """``train --read-on-workers``: the Parquet file or folder ``args.file`` as a Dask
    DataFrame of the columns that ``fit(df)`` reads (``user``, ``item``, and ``value``
    where the file has values or ``--event-weights`` makes them), which the cluster's
    workers read by its absolute path or its URL
    (:func:`gpu_als.distributed.fit_distributed`).
    Only the files' footers are read here, to refuse what :func:`read_frame` refuses
    before any worker starts, with its messages and warnings; ``--event-weights``' values
    are made on the workers, a partition at a time."""
    _check_columns_apart(args)
    if str(args.file) == "-":
        raise ValueError("--read-on-workers: the workers read the file by its path, and "
                         "standard input has none: name a Parquet file or folder, or leave "
                         "--read-on-workers out")
    folder = _checked_path(args)
    if not folder and suffix(args.file) not in PARQUET:
        raise ValueError(f"--read-on-workers reads Parquet, and {args.file} is read as CSV: "
                         f"write it as Parquet (one file, or a folder of them), or leave "
                         f"--read-on-workers out to read it in this process")
    _refuse_no_header(args)
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise RuntimeError(f"--read-on-workers needs Dask's DataFrames ({exc}): pip install "
                           f"'dask[dataframe]'") from exc
    with _read_as_parquet(args, folder):
        dataset = _parquet_dataset(args, folder)
        n_rows = dataset.count_rows()  # (from the footers)
    names = dataset.schema.names
    ids = [args.user_col, args.item_col]
    _check_id_columns(args, names, parquet=True)
    _check_other_columns(args, names, names)
    has_values = args.value_col in names
    if args.event_weights is not None:
        if has_values:
            raise _values_already(args)
        if not any(args.event_weights[1].values()):
            raise _all_weighed_0(args)
    elif not has_values:
        if args.value_col != "value":
            schema = dataset.schema.empty_table().to_pandas()
            schema.attrs["file_columns"] = names
            raise _missing_value_column(schema, args)
        if feedback == "explicit":
            raise no_ratings_column(args.file, args.value_col, names)
        _warn_unread_columns(dataset, ids, args)
    if n_rows == 0:
        raise ValueError(f"{args.file} has no rows")
    values = [args.value_col] if has_values else []
    ddf = dd.read_parquet(args.file if is_url(args.file) else str(args.file.resolve()),
                          columns=[*ids, *values, *_other_columns(args)])
    if args.event_weights is None:
        return fit_columns(ddf, args)
    import pandas as pd  # (which Dask's DataFrames need)

    weighed = (args.user_col, args.item_col, *args.event_weights)
    empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in ddf.dtypes.items()})
    return ddf.map_partitions(_weighed_partition, *weighed,
                              meta=_weighed_partition(empty, *weighed))


def fit_columns(df, args: argparse.Namespace):
    """``df`` (pandas or Dask) of the file's columns as ``fit(df)`` reads it: the id
    columns and (where it has one) the values' column, named ``user``, ``item`` and
    ``value``."""
    names = {args.user_col: "user", args.item_col: "item", args.value_col: "value"}
    return df[[name for name in names if name in df.columns]].rename(columns=names)


def _weighed_partition(part, user_col: str, item_col: str, column: str,
                       weights: dict[str, float]):
    """``--event-weights`` on a worker: a partition of the event log as the columns
    ``user``, ``item`` and ``value`` (its labels' weights), its rows of weight 0 left
    out."""
    values = event_values(part[column], column, weights, " in the partition a worker read")
    return part[[user_col, item_col]].set_axis(["user", "item"], axis=1).assign(
        value=values)[(values != 0).to_numpy()]


def no_ratings_column(file: Any, value_col: str, columns) -> ValueError:
    """``--feedback explicit`` with a ``file`` whose ``columns`` lack the values'
    (``--value-col``)."""
    return ValueError(f"{file} has no column {value_col!r}: --feedback explicit learns "
                      f"ratings; name their column with --value-col (the columns are "
                      f"{[str(c) for c in columns]})")


def _refuse_no_header(args: argparse.Namespace) -> None:
    if args.no_header:
        raise ValueError(f"{args.file}: --no-header is for CSV files (Parquet names its "
                         f"columns)")


def _parquet_dataset(args: argparse.Namespace, folder: bool):
    """The pyarrow dataset of the Parquet file or ``folder`` ``args.file`` (a URL's
    through its fsspec filesystem): its columns and files, no row read (a folder's
    partition keys, day=.../, as columns too); a folder whose files lack a column the
    command reads that others have is refused."""
    import pyarrow.dataset

    filesystem, path = _urls.filesystem(args.file) if is_url(args.file) else \
        (None, str(args.file))
    dataset = pyarrow.dataset.dataset(path, filesystem=filesystem, format="parquet",
                                      partitioning="hive")
    if folder:
        _check_parts_have(dataset, args.file, path, filesystem,
                          [args.user_col, args.item_col, *_other_columns(args),
                           args.value_col])
    return dataset


@contextlib.contextmanager
def _read_as_parquet(args: argparse.Namespace, folder: bool):
    """pyarrow's errors of reading ``args.file`` (a ``folder`` or not) said as the
    file's, a missing pyarrow as what to install."""
    try:
        yield
    except ImportError as exc:
        raise RuntimeError("reading Parquet needs pyarrow: pip install "
                           "gpu-als[parquet]") from exc
    except _PartsDiffer:
        raise
    except (OSError, ValueError, NotImplementedError) as exc:
        # pyarrow's ArrowInvalid is a ValueError, its ArrowNotImplementedError ("Unsupported
        # cast from ...") a NotImplementedError; a folder is read with the schema of one of
        # its files
        hint = " (do its files give a column different types?)" if folder else ""
        raise ValueError(f"{args.file} cannot be read as Parquet: {exc}{hint}") from exc


def _warn_unread_columns(dataset, kept: list[str], args: argparse.Namespace) -> None:
    """Every row of the Parquet ``dataset`` counts 1 (the default column 'value' is
    missing): the columns other than those ``kept`` are not read, warned of as
    ``from_dataframe`` warns where one of them holds numbers (values, likely)."""
    import pyarrow

    unused = [name for name in dataset.schema.names if name not in kept]
    numeric = {field.name for field in dataset.schema
               if pyarrow.types.is_integer(field.type) or pyarrow.types.is_floating(
                   field.type) or pyarrow.types.is_decimal(field.type)
               or pyarrow.types.is_boolean(field.type)}
    candidates = value_candidates(unused, numeric)
    if candidates and counts_rows(args):
        warn_unused_columns(unused, _value_col_remedy(candidates))


def _check_parquet_folder(folder: Path | str, files: list) -> None:
    """Refuse a folder that is not the Parquet files of one table (``files``: its files,
    as paths within it): one without .parquet files, or one with other files that
    pyarrow would read as part files too (it leaves out names starting with ``.`` or
    ``_``: Spark's ``_SUCCESS``, ``.crc`` checksums)."""
    if not any(file.name.endswith(".parquet") for file in files):
        raise ValueError(f"{folder} is a folder without .parquet files: give a CSV or "
                         f"Parquet file, or a folder of Parquet files")
    other = next((file for file in files
                  if not any(part.startswith((".", "_")) for part in file.parts)
                  and file.suffix.lower() not in PARQUET), None)
    if other is not None:
        raise ValueError(f"{folder} is read as the Parquet files of one table, but holds "
                         f"other files too (e.g. {other}): give a folder of Parquet files "
                         f"only, or one file")


class _PartsDiffer(ValueError):
    """The files of a Parquet folder disagree on a column the command reads."""


def _check_parts_have(dataset, folder: Path | str, path: str, filesystem,
                      wanted: list[str]) -> None:
    """Refuse a folder of Parquet files of which some lack a column of ``wanted`` that the
    others have: pyarrow reads the folder with one file's schema, and that column as
    missing in the others' rows (an error about missing values far from its cause). Only
    the files' footers are read; a partition key (day=.../) is in no file, and fine.
    ``path``: the folder's in ``filesystem`` (None: this machine's)."""
    import pyarrow.parquet

    columns = {file: set(pyarrow.parquet.read_schema(file, filesystem=filesystem).names)
               for file in dataset.files}
    for name in dict.fromkeys(wanted):
        lacking = [file for file, names in columns.items() if name not in names]
        if lacking and len(lacking) < len(columns):
            first = lacking[0]
            raise _PartsDiffer(
                f"{folder}: {len(lacking)} of its {len(columns)} Parquet files "
                f"{'lacks' if len(lacking) == 1 else 'lack'} the column {name!r} that the "
                f"others have (e.g. {os.path.relpath(first, path)}, with columns "
                f"{sorted(columns[first])}): give every file the same columns")


def _read_csv_file(pd, args: argparse.Namespace):
    """A CSV file (compressed or not) in ``--encoding`` (default: UTF-8, or UTF-16 by its
    byte order mark), its delimiter ``--sep`` or found, ids written with leading zeros
    read as text (:func:`_zero_padded`); without a header line, its first three columns
    named user, item and value."""
    encoding = args.encoding or _default_encoding(args.file)
    try:
        "".encode(encoding)
    except LookupError:
        raise ValueError(f"--encoding {encoding}: not an encoding Python knows "
                         f"(e.g. utf-8, latin-1, cp1252)") from None
    if args.encoding is not None:
        _check_byte_order_mark(args.file, encoding)
    # --sep '\t' as typed in a shell is a backslash and a t: a tab, alone (read by the C
    # parser; pandas would take the two characters for a regular expression, 40x slower)
    # or within a longer separator ('\t\t')
    try:
        sep = ("\t" if args.sep == "tab" else args.sep.replace("\\t", "\t")) \
            if args.sep is not None else sniff_delimiter(args.file, encoding)
    except UnicodeError as exc:  # (decoding errors are replaced there, not a missing mark)
        raise _not_text(args.file, encoding, exc) from exc
    if sep == "":
        raise ValueError("--sep is empty: name the delimiter, e.g. --sep ';' (or leave the "
                         "option out to have it detected)")
    decimal = getattr(args, "decimal", ".")
    if len(decimal) != 1 or decimal == sep:
        raise ValueError(f"--decimal {decimal!r}: one character, not the delimiter "
                         f"{sep!r} (e.g. --decimal , for 1,5)")
    header = None if args.no_header else "infer"
    # the id columns where they are (by position without a header line)
    ids = (0, 1) if args.no_header else (args.user_col, args.item_col)
    try:
        padded = _zero_padded(pd, args.file, sep, header, ids, encoding)
        with warnings.catch_warnings():  # mixed types: handled below
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            df = _read_csv(pd, args.file, sep, header, dtype={c: str for c in padded},
                           encoding=encoding, decimal=decimal)
    except UnicodeError as exc:  # (UTF-16 without its mark: a UnicodeError, not a Decode one)
        raise _not_text(args.file, encoding, exc) from exc
    except pd.errors.EmptyDataError as exc:  # ("No columns to parse from file")
        raise ValueError(f"{args.file} is empty: no header line and no rows") from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"{args.file} cannot be read as CSV: {exc}") from exc
    if args.no_header:
        if df.shape[1] < 2:
            raise ValueError(_one_column(args, df, sep))
        names = [args.user_col, args.item_col, args.value_col, *_other_columns(args)]
        df = df.rename(columns=dict(enumerate(names)))
        _warn_if_a_header(df, args)
    for column in (args.user_col, args.item_col):
        # pandas types a large file's columns a block of rows at a time: ids that are
        # numbers in one block and text in another come as both, which do not sort
        # together; as text, they are the file's
        if column in df.columns and df[column].dtype == object and \
                pd.api.types.infer_dtype(df[column], skipna=True).startswith("mixed"):
            df[column] = df[column].map(lambda v: v if v is None or v != v else str(v))
    _check_decimal_point(df, args, decimal)
    # where a message names a row, it names the file's line (gpu_als.data.row_name)
    df.attrs["csv_file"] = (str(args.file), encoding, not args.no_header)
    return df


def _one_column(args: argparse.Namespace, df, sep: str) -> str:
    """Why a file read with --no-header has no item column: its lines read as one field,
    with what to pass where its first line holds another delimiter."""
    inside = _delimiter_in(str(df.iloc[0, 0]) if len(df) else "", other_than=sep)
    hint = f": {_delimiter_question(inside)}" if inside else \
        " (give the file a user and an item column, in that order)"
    return (f"{args.file}: its lines read as one column with the delimiter {sep!r}, and "
            f"--no-header takes the first for the user ids and the second for the item "
            f"ids{hint}")


def _check_decimal_point(df, args: argparse.Namespace, decimal: str) -> None:
    """Refuse values written with a decimal comma (``4,5``, as Excel writes them in much of
    Europe) read with ``--decimal .``, which leaves them text: say to pass --decimal ,."""
    column = args.value_col
    if decimal != "." or column not in df.columns or df[column].dtype.kind in "biuf":
        return
    sample = df[column].dropna().astype(str).head(1000)
    if len(sample) and sample.str.fullmatch(r"\s*[-+]?[0-9]*,[0-9]+\s*").any():
        example = sample[sample.str.contains(",")].iloc[0]
        raise ValueError(f"{args.file}: column {column!r} holds numbers written with a "
                         f"decimal comma (e.g. {example!r}): pass --decimal ,")


#: UTF-16's byte order marks (little- and big-endian), with which a file of Excel's
#: "Unicode text" starts; a UTF-8 file cannot (neither byte is UTF-8).
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def _default_encoding(path: Path) -> str:
    """The encoding of a CSV file read without ``--encoding``: UTF-16 where its first
    bytes are UTF-16's byte order mark, else UTF-8."""
    with _open_binary(path) as raw:
        return "utf-16" if raw.read(2) in UTF16_MARKS else "utf-8"


def _check_byte_order_mark(path: Path, encoding: str) -> None:
    """Refuse an ``--encoding`` other than the one a file's byte order mark says (UTF-16's
    or UTF-8's): read with latin-1, UTF-16's columns were named ``'ÿþu\x00s\x00e\x00r\x00'``,
    and the message suggested ``--user-col`` that."""
    with _open_binary(path) as raw:
        head = raw.read(3)
    name = codecs.lookup(encoding).name
    for marks, unicode in ((UTF16_MARKS, "utf-16"), ((b"\xef\xbb\xbf",), "utf-8")):
        if head.startswith(marks) and not name.startswith(unicode):
            raise ValueError(f"{path} starts with the byte order mark of {unicode.upper()}, "
                             f"which --encoding {encoding} reads as characters: leave "
                             f"--encoding out (the mark says the encoding)")


def _not_text(path: Path, encoding: str, exc: UnicodeError) -> ValueError:
    return ValueError(f"{path} is not {encoding} text ({exc}): "
                      f"{_not_text_hint(path, encoding)}")


def _not_text_hint(path: Path, encoding: str) -> str:
    """What to do about a file that is not text in the ``encoding`` asked for, from its
    first bytes."""
    with _open_binary(path) as raw:
        head = raw.read(4096)
    if head[:2] in UTF16_MARKS:  # (with --encoding other than utf-16)
        return "name its encoding with --encoding, e.g. --encoding utf-16"
    if b"\x00" in head:
        return "it holds NUL bytes, as binary files do: is it a CSV file?"
    if codecs.lookup(encoding).name != "utf-8" and _reads_as_utf8(head):
        return "its first bytes read as UTF-8: leave --encoding out"
    return "name its encoding with --encoding, e.g. --encoding latin-1"


def _reads_as_utf8(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-8 (but for a character cut at the end)."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _reads_as_number(text: str) -> bool:
    """Whether a field's text is a number, as pandas would read it (``"196"``, ``"4.5"``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _warn_if_a_header(df, args: argparse.Namespace, rows: int = 100) -> None:
    """With --no-header: warn when the first line looks like column names (ids that are
    not numbers, above ids that all are), which would train as a user and an item."""
    if len(df) < 2:
        return
    first = [str(df[c].iloc[0]) for c in (args.user_col, args.item_col)]
    later = [str(v) for c in (args.user_col, args.item_col) for v in df[c].iloc[1:rows]]
    if not any(map(_reads_as_number, first)) and all(map(_reads_as_number, later)):
        warnings.warn(f"the first line of {args.file} looks like column names "
                      f"({', '.join(first)}), and is read as an interaction of user "
                      f"{first[0]!r} with item {first[1]!r}: without --no-header it names "
                      f"the columns (--user-col, --item-col)", UserWarning,
                      stacklevel=user_stacklevel())


#: Rows of a CSV file read to find ids written with leading zeros (:func:`_zero_padded`).
ID_SAMPLE_ROWS = 10_000


def _zero_padded(pd, path: Path, sep: str, header, columns, encoding: str = "utf-8") -> list:
    """Those of the id ``columns`` that hold numbers written with leading zeros (``007``)
    in the file's first :data:`ID_SAMPLE_ROWS` rows, to be read as text: pandas would
    read them as integers, so that ``007`` became the id 7 (written back as ``7``, and not
    found by ``--users 007``), and ``007`` and ``7`` one id."""
    sample = _read_csv(pd, path, sep, header, dtype=str, nrows=ID_SAMPLE_ROWS,
                       encoding=encoding)
    return [column for column in columns if column in sample.columns
            and sample[column].dropna().str.match("0[0-9]").any()]


def _read_csv(pd, path: Path, sep: str, header, *, dtype=None, nrows: int | None = None,
              encoding: str = "utf-8", decimal: str = "."):
    """``pd.read_csv`` with pandas' fast C parser where it can serve: it takes one
    character (or ``\\s+``); for a longer separator pandas falls back to its Python parser,
    40x slower (a million MovieLens rows: 4.9 s against 0.12 s here). A character repeated
    (MovieLens' ``::``) is read as that one character, the empty fields between the
    separator's characters then dropped: where those are not all empty (a lone ``:`` in a
    field), the Python parser reads the file instead. ``dtype``: one type, or a dict of
    columns by name (or position, without a header line), as the file has them.

    ``sep`` is literal: pandas takes a separator of several characters for a regular
    expression (``|;`` would split at every character, ``+-`` raise), so it is escaped
    here; ``\\s+`` (any whitespace) is the one regular expression kept."""
    width = len(sep)
    long = width > 1 and sep != r"\s+"  # what pandas' C parser does not take
    # only an empty field is missing: pandas' default also takes NA, null, None, N/A, ...
    # for missing, which are ids too (Namibia's country code, a user named null); no
    # column is the index: a delimiter at the end of every line would make pandas take the
    # first column for one, and shift the others (user <- item, item <- value); and the
    # spaces after a delimiter ("user, item") are not part of the names and ids
    options = {"header": header, "dtype": dtype, "nrows": nrows, "encoding": encoding,
               "decimal": decimal,
               "keep_default_na": False, "na_values": [""], "index_col": False,
               "skipinitialspace": True}
    if long and sep == sep[0] * width and sep[0] not in '\\"':
        fast = options
        if header is None and isinstance(dtype, dict):  # field p is column p * width there
            fast = {**options, "dtype": {p * width: t for p, t in dtype.items()}}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            try:
                df = pd.read_csv(path, sep=sep[0], **fast)
            except pd.errors.ParserError:  # rows of different widths: a lone character
                df = None
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            df = None  # rows wider than the header, cut: the Python parser says so itself
        if df is not None and df.shape[1] % width == 1 \
                and df.iloc[:, [c for c in range(df.shape[1]) if c % width]].isna().all().all():
            df = df.iloc[:, ::width]
            if header is None:  # the fields in order: 0, 1, 2, ...
                df.columns = range(df.shape[1])
            return df
    return pd.read_csv(path, sep=re.escape(sep) if long else sep,
                       engine="python" if long else "c", **options)


@contextlib.contextmanager
def _open_binary(path: Path):
    """``path``'s bytes, decompressed where its name ends as pandas' ``compression="infer"``
    knows (.gz, .bz2, .xz, .zst, and the one file of a .zip, .tar, .tar.gz, .tar.bz2 or
    .tar.xz), so that the delimiter is looked for in the lines pandas will read."""
    import bz2
    import gzip
    import lzma
    import tarfile
    import zipfile

    def only_member(names: list[str]) -> None:  # as pandas reads archives
        if len(names) != 1:
            listed = f": {', '.join(names[:3])}{', ...' * (len(names) > 3)}" if names else ""
            raise ValueError(f"{path}: an archive read as CSV must hold one file, as pandas "
                             f"reads it; this one holds {len(names)}{listed}")

    name = path.name.lower()
    with contextlib.ExitStack() as stack:
        if name.endswith((".tar", ".tar.gz", ".tar.bz2", ".tar.xz")):
            archive = stack.enter_context(tarfile.open(path))
            only_member(archive.getnames())
            stream = archive.extractfile(archive.getmembers()[0])
        elif name.endswith(".zip"):
            zipped = stack.enter_context(zipfile.ZipFile(path))
            only_member(zipped.namelist())
            stream = zipped.open(zipped.namelist()[0])
        elif name.endswith(".zst"):
            try:
                import zstandard
            except ImportError as exc:
                raise ImportError("reading .zst files needs the zstandard package (pip "
                                  "install zstandard), as pandas does") from exc
            stream = zstandard.open(path, "rb")
        else:
            openers: dict[str, Callable[..., Any]] = {
                ".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
            opener = openers.get(path.suffix.lower(), open)
            stream = opener(path, "rb")
        if stream is None:  # a tar archive's one member is a folder or a link
            raise ValueError(f"{path}: the archive's one member is not a file")
        yield stack.enter_context(stream)


def csv_line(path: str, encoding: str, header: bool, row: int) -> int | None:
    """The line of the CSV file at ``path`` (counted from 1) that holds its data row
    ``row`` (counted from 0, as pandas numbers the rows it reads), skipping blank lines
    and a header line as pandas does; None where the file is gone or shorter. A quoted
    field that spans lines is not followed: the line is then an estimate."""
    wanted = row + 1 if header else row
    try:
        with _open_binary(Path(path)) as raw:
            text = io.TextIOWrapper(raw, encoding=encoding, errors="replace")
            filled = (number for number, line in enumerate(text, 1) if line.strip())
            return next(itertools.islice(filled, wanted, None), None)
    except (OSError, ValueError):
        return None


def sniff_delimiter(path: Path, encoding: str = "utf-8", lines: int = 20) -> str:
    """The delimiter of a CSV file, from its first ``lines`` lines (``csv.Sniffer``, as
    pandas' ``sep=None`` does; but then pandas reads with its Python parser, 19x slower on 2M
    rows than the C parser used here with the sniffed delimiter). ``::`` where every line
    has it (MovieLens 1M and 10M's ``ratings.dat``), which the Sniffer, being for
    one-character delimiters, does not find. A semicolon, not a comma, where every line
    has as many semicolons and every comma is within a number (``a;x;1,5``, as Excel
    writes CSV in much of Europe, without a header line to tell). A comma if unclear."""
    import csv

    with _open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
        sample = "".join(itertools.islice(text, lines))
    rows = [line for line in sample.splitlines() if line.strip()]
    if rows and all("::" in line for line in rows):
        return "::"
    try:
        found = csv.Sniffer().sniff(sample, delimiters=",;\t| ").delimiter
    except csv.Error:
        return ","
    if found == "," and len({row.count(";") for row in rows}) == 1 and ";" in rows[0] \
            and not any(re.search(r"[^0-9],|,[^0-9]|^,|,$", row) for row in rows):
        return ";"  # every comma within a number (1,5): decimal commas, as Excel writes
    return found


def write_table(path: str, columns: dict[str, Any], scores: tuple[str, ...]) -> int:
    """Columns of equal length as CSV (``-``: standard output; the columns named in
    ``scores`` to 6 significant digits), or as Parquet where ``path`` ends in ``.parquet``
    (the ids in their types, the scores unrounded), at a path or a URL (written whole or
    not at all). Returns the number of rows written."""
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    if path.lower().endswith(".parquet"):
        return _write_parquet(path, arrays)
    return _write_csv(path, arrays, {name: "%.6g" for name in scores})


def write_factors(path: str, kind: str, ids: np.ndarray, factors: np.ndarray) -> int:
    """Factor rows by id (``kind`` "user" or "item"): as CSV, columns ``kind``,
    ``factor_0`` ... ``factor_<k-1>``, each value to the digits that read back as the same
    float (9 significant for float32, 17 for float64); as Parquet (``path`` ending in
    ``.parquet``), columns ``kind`` and ``factors``, a fixed-size list per row (Spark
    MLlib's layout, with the length that vector databases ask of a vector column).
    Returns the number of rows written."""
    if path.lower().endswith(".parquet"):
        try:
            import pandas as pd
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError("writing Parquet needs pandas and pyarrow: pip install "
                               "gpu-als[parquet]") from exc
        table = pa.Table.from_pandas(pd.DataFrame({kind: ids}), preserve_index=False)
        vectors = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(factors).reshape(-1)), factors.shape[1])
        with _urls.written(path, "wb") as file:
            pq.write_table(table.append_column("factors", vectors), file)
        return len(ids)
    names = [f"factor_{j}" for j in range(factors.shape[1])]
    exact = "%.9g" if factors.dtype.itemsize <= 4 else "%.17g"
    return _write_csv(path, {kind: ids, **dict(zip(names, factors.T))},
                      dict.fromkeys(names, exact))


def _write_parquet(path: str, columns: dict[str, Any]) -> int:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401 (pandas' engine: missing, said before a file is opened)

        frame = pd.DataFrame(columns)
        with _urls.written(path, "wb") as file:
            frame.to_parquet(file, index=False)
    except ImportError as exc:
        raise RuntimeError("writing Parquet needs pandas and pyarrow: pip install "
                           "gpu-als[parquet]") from exc
    return len(frame)


def _write_csv(path: str, arrays: dict[str, np.ndarray], formats: dict[str, str],
               cells: int = 1 << 19) -> int:
    """``arrays`` as CSV columns, those named in ``formats`` as numbers in their
    %-format, the others as their values print; about ``cells`` values at a time, so that
    the text of a large table is never all in memory (the factors of 138,000 users at
    k = 64 took 750 MB at once), with a progress bar (on a terminal) where that takes
    more than one."""
    import csv

    rows = len(next(iter(arrays.values())))
    chunk = max(1, cells // len(arrays))
    with contextlib.nullcontext(sys.stdout) if path == "-" else \
            _urls.written(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(list(arrays))
        with tqdm(total=rows, desc=f"writing {'CSV' if path == '-' else path}", unit="row",
                  disable=None if rows > chunk else True, leave=False) as bar:
            for start in range(0, rows, chunk):
                texts = [[formats[name] % value for value in a[start:start + chunk].tolist()]
                         if name in formats else a[start:start + chunk].tolist()
                         for name, a in arrays.items()]  # (2x np.char.mod's speed)
                writer.writerows(zip(*texts))
                bar.update(len(texts[0]))
    return rows
