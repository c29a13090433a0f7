"""Model files: ``.npz`` archives, read without pickle and written atomically, at a path
or a URL (``s3://bucket/model.npz``: any protocol of fsspec's), or through a binary file
object (``io.BytesIO``, an fsspec file) as the implicit library's ``save`` and ``load``
take them. Used by :meth:`gpu_als.ALS.save`, :meth:`gpu_als.ALS.load` and
:func:`gpu_als.from_implicit`."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from typing import Any

import numpy as np

from . import _urls, data
from ._urls import is_url


def is_file_object(path: Any) -> bool:
    """Whether ``path`` is an open file: anything with ``read``, as NumPy's ``savez`` and
    ``load`` tell them from paths (a file opened for writing has one too)."""
    return callable(getattr(path, "read", None))


def check_binary(file: Any, mode: str) -> None:
    """Refuse, by name, a file object opened in text mode (``open(name)``,
    ``io.StringIO``: a TypeError, as NumPy reads and writes bytes), one that is closed, or
    one not open for what ``mode`` does (a ValueError). ``mode``: the one to open it with
    (``"rb"``, ``"wb"``)."""
    if isinstance(file, io.TextIOBase):
        raise TypeError(f"{file_name(file)} is open in text mode: model files are binary "
                        f"(open it with {mode!r}, or use io.BytesIO)")
    if getattr(file, "closed", False) is True:
        raise ValueError(f"{file_name(file)} is closed: open it with {mode!r}")
    writing = "w" in mode
    able = getattr(file, "writable" if writing else "readable", None)
    if callable(able) and able() is False:
        raise ValueError(f"{file_name(file)} is not open for "
                         f"{'writing' if writing else 'reading'}: open it with {mode!r}")


def file_name(path: Any) -> str:
    """How messages name ``path``: the path, or a file object's name (its class's if it
    has none)."""
    if is_file_object(path):
        return str(getattr(path, "name", f"the {type(path).__name__}"))
    return data.check_path(path)


def read_archive(path, kind: str, skip_pickled: tuple[str, ...] = ()
                 ) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``path`` (or at ``path + ".npz"``, the name
    ``save`` and ``np.savez`` give a path without that suffix), or of a binary file
    object from where it is, pickles refused (those of the arrays named in
    ``skip_pickled`` left out); ``kind`` names the file expected ("gpu-als model") in
    the errors.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        For a file that is not an ``.npz`` archive, is truncated or corrupted, or holds
        pickled objects.
    """
    if is_url(path):
        fs, where = _urls.filesystem(path)
        if not fs.isfile(where) and not where.endswith(".npz") and fs.isfile(where + ".npz"):
            path, where = path + ".npz", where + ".npz"
        if not fs.isfile(where):
            what = " (a folder)" if fs.isdir(where) else ""
            raise FileNotFoundError(f"no model file at {path}{what}")
        with fs.open(where, "rb") as file:  # (read in ranges as NumPy seeks, not at once)
            return _read_archive(file, path, kind, skip_pickled)
    if is_file_object(path):
        check_binary(path, "rb")
        return _read_archive(path, file_name(path), kind, skip_pickled)
    path = data.check_path(path)
    if not os.path.isfile(path) and not path.endswith(".npz") and os.path.isfile(path + ".npz"):
        path += ".npz"
    if not os.path.isfile(path):
        what = " (a folder)" if os.path.isdir(path) else ""
        raise FileNotFoundError(f"no model file at {path}{what}")
    return _read_archive(path, path, kind, skip_pickled)


def _read_archive(source, name: str, kind: str, skip_pickled: tuple[str, ...]
                  ) -> dict[str, np.ndarray]:
    """:func:`read_archive` of the ``.npz`` archive ``source`` (a file's path, or a binary
    file object from where it is), named ``name`` in the errors."""
    if is_file_object(source):
        try:
            start = source.tell()
            archive_ok = zipfile.is_zipfile(source)  # (which moves to the end)
            source.seek(start)
        except (AttributeError, OSError) as exc:  # io.UnsupportedOperation is an OSError
            raise ValueError(f"{name}: reading a {kind} file needs a file object that "
                             f"can seek ({type(exc).__name__}: {exc})") from None
    else:
        archive_ok = zipfile.is_zipfile(source)
    if not archive_ok:
        raise ValueError(f"{name} is not a readable {kind} file (not an .npz archive)")
    arrays, key = {}, None
    try:
        with np.load(source, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc) or key not in skip_pickled:
                        raise
        return arrays
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{name}: refusing to load pickled objects (in {key!r}: "
                             f"{exc})") from None
        raise ValueError(f"{name} is not a readable {kind} file: {exc}") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError, zlib.error, ...
        raise ValueError(f"{name} is not a readable {kind} file (truncated or corrupted?): "
                         f"{type(exc).__name__}: {exc}") from None


def write_atomically(path, arrays: dict[str, Any]) -> str:
    """``np.savez(path, **arrays)``, through a temporary file in the same folder that then
    replaces ``path``: a reader (a server reloading the model) sees the old file or the new
    one, never half of one, and a failed save leaves the old file as it was. Returns the
    file's name (``path``, ``.npz`` added if missing). A URL's file is uploaded whole or
    not at all (an fsspec transaction). A file object is written as it is, where it is,
    and named as :func:`file_name` names it."""
    if is_file_object(path):
        check_binary(path, "wb")
        np.savez(path, **arrays)
        return file_name(path)
    if is_url(path):  # written whole or not at all, by an fsspec transaction
        fs, where = _urls.filesystem(path, "writing")
        if fs.isdir(where):
            raise IsADirectoryError(f"cannot save the model to {path}: it is a folder; give "
                                    f"a file name such as {path.rstrip('/')}/model.npz")
        final = path if path.endswith(".npz") else path + ".npz"
        with _urls.written(final, "wb") as file:
            np.savez(file, **arrays)
        return final
    final = data.check_path(path)
    # checked here, else the errors would name the temporary file
    data.check_output_file(final, "save the model", "model.npz")
    if not final.endswith(".npz"):  # as np.savez names it
        final += ".npz"
    temporary = f"{final}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        file = open(temporary, "xb")
    except OSError as error:  # a read-only folder, say: name the file asked for
        raise type(error)(error.errno, f"cannot save the model to {final}: "
                                       f"{error.strerror}") from error
    try:
        with file:
            np.savez(file, **arrays)
        os.replace(temporary, final)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return final
