"""Files named by URL (``s3://bucket/events/``, ``gs://...``, ``file:///data/...``: any
protocol of fsspec's whose package is installed), which the command line, :meth:`ALS.save
<gpu_als.ALS.save>`, :meth:`ALS.load <gpu_als.ALS.load>` and the result writers take where
they take a path. The filesystem's options (credentials, ``anon``, ``endpoint_url``) come
from fsspec's own configuration (e.g. the environment variable ``FSSPEC_S3``)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(file: Any) -> bool:
    """Whether ``file`` is a URL: a str that starts with a protocol and ``://``."""
    return isinstance(file, str) and _URL.match(file) is not None


def path_or_url(text: str) -> Path | str:
    """``text`` as a ``Path``, or kept as written where it is a URL (a ``Path`` would fold
    its ``//``)."""
    return text if is_url(text) else Path(text)


def suffix(file: Path | str) -> str:
    """The suffix of a path's or a URL's file name, in lower case."""
    return (PurePosixPath(file) if is_url(file) else Path(file)).suffix.lower()


def filesystem(url: str, doing: str = "reading", *, own: bool = False):
    """The fsspec filesystem of ``url``, and the path in it: the instance that fsspec
    shares, or with ``own`` one of this call's own (whose transaction is this caller's
    alone: fsspec keeps one per instance). A missing fsspec, a protocol that fsspec does
    not know or whose package is not installed are said with the URL and what was being
    done (``doing``: "reading", "writing")."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise RuntimeError(f"{doing} {url} needs fsspec: pip install fsspec, and its "
                           f"package for the protocol (e.g. s3fs, gcsfs)") from exc
    try:
        return url_to_fs(url, skip_instance_cache=True) if own else url_to_fs(url)
    except ImportError as exc:  # e.g. "Install s3fs to access S3"
        raise RuntimeError(f"{doing} {url}: {exc}") from exc
    except ValueError as exc:  # "Protocol not known: ..."
        raise ValueError(f"{url}: {exc}") from exc


def bucket_not_found(url: str) -> str | None:
    """The bucket of ``url`` where its filesystem has buckets (s3fs, gcsfs, adlfs: those
    with ``split_path``) and this process does not find it, which may also be that it is
    not allowed to look it up (a write-only credential); else None."""
    fs, where = filesystem(url, "writing")
    split_path = getattr(fs, "split_path", None)
    if split_path is None:
        return None
    bucket = split_path(where)[0]
    return None if fs.exists(bucket) else bucket


def read_text(file: str | Path, encoding: str = "utf-8") -> str:
    """The text of the file at a path or a URL."""
    if not is_url(file):
        return Path(file).read_text(encoding=encoding)
    fs, where = filesystem(str(file))
    if not fs.isfile(where):  # (as open's error: fsspec's names the path alone)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), file)
    with fs.open(where, "rb") as source:
        return source.read().decode(encoding)


@contextlib.contextmanager
def written(path: str | Path, mode: str = "w", **text: Any) -> Iterator[IO]:
    """A file to write at ``path`` (``mode`` "w" or "wb"; ``text``: ``open``'s
    ``newline=``, ``encoding=``). A URL's file appears when the block ends without an
    error, and not at all after one, through an fsspec transaction: a failed write leaves
    what was there before (an upload to object storage is committed at its end). The
    transaction is on a filesystem instance of this write's own, so that writes at once
    (threads, or one within another) do not end each other's."""
    if not is_url(path):
        with open(path, mode, **text) as file:
            yield file
        return
    fs, where = filesystem(str(path), "writing", own=True)
    if fs.isdir(where):
        raise IsADirectoryError(f"{path} is a folder: give a file name")
    try:
        with fs.transaction, fs.open(where, mode, **text) as file:
            yield file
    except OSError as exc:  # the filesystem's, said with the URL (s3fs: "The specified
        if str(path) in str(exc):  # bucket does not exist", and no more)
            raise
        try:
            named = type(exc)(f"cannot write {path}: {exc}")
        except TypeError:  # (a class that takes other arguments)
            named = OSError(f"cannot write {path}: {exc}")
        raise named from exc
