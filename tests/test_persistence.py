"""save / load / to_cpu: round trips and every kind of broken file."""

import datetime
import json
import os
import re
import uuid
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.exceptions import NotFittedError

from .conftest import backend_name, random_interactions


@pytest.fixture(scope="module")
def fitted():
    R = random_interactions(30, 20, 0.2, seed=0)
    return ALS(factors=5, iterations=3, backend="cpu", random_state=3, alpha=4.0,
               show_progress=False).fit(R), R


def test_round_trip_is_bit_identical(fitted, tmp_path):
    model, R = fitted
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = ALS.load(path, backend="cpu")
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    assert loaded.user_factors_.dtype == np.float32
    assert loaded.loss_history_ == model.loss_history_
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.recommend(2, R[2])[0], model.recommend(2, R[2])[0])


def test_a_path_under_the_home_folder_is_expanded(fitted, tmp_path, monkeypatch):
    """"~/model.npz", as pandas reads it, not a folder named "~" in the working folder."""
    model, _ = fitted
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert model.save("~/model") == str(tmp_path / "model.npz")
    assert not (tmp_path / "~").exists()
    np.testing.assert_array_equal(ALS.load("~/model.npz").user_factors_, model.user_factors_)


def test_a_model_saves_to_and_loads_from_file_objects(fitted, tmp_path):
    """As implicit's save/load: an open binary file or an io.BytesIO (a file of an fsspec
    filesystem alike), from where it is; the same model as through a path. A file object
    that cannot seek, or holds no archive, is a ValueError that names it, and one open in
    text mode a TypeError."""
    import io

    model, R = fitted
    buffer = io.BytesIO(b"header")  # written after, and read from, where the file is
    buffer.seek(0, io.SEEK_END)
    assert model.save(buffer) == "the BytesIO"
    buffer.seek(len(b"header"))
    with open(tmp_path / "model.npz", "wb") as file:
        assert model.save(file) == str(tmp_path / "model.npz")
    with open(tmp_path / "model.npz", "rb") as file:
        from_file = ALS.load(file, backend="cpu")
    for loaded in (ALS.load(buffer, backend="cpu"), from_file):
        np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
        np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
        assert loaded.get_params() == model.get_params()
    with pytest.raises(ValueError, match="the BytesIO is not a readable gpu-als model file "
                                         r"\(not an .npz archive\)"):
        ALS.load(io.BytesIO(b"not a zip"))

    class Pipe(io.RawIOBase):  # a stream that cannot go back
        def readable(self):
            return True

    with pytest.raises(ValueError, match="the Pipe: reading a gpu-als model file needs a "
                                         "file object that can seek"):
        ALS.load(Pipe())
    # a file opened in text mode: named (a good model file read so said it was no archive)
    named = re.escape(str(tmp_path / "model.npz"))
    with open(tmp_path / "model.npz") as text, \
            pytest.raises(TypeError, match=f"^{named} is open in text mode: model files are "
                                           f"binary \\(open it with 'rb'"):
        ALS.load(text)
    with pytest.raises(TypeError, match=r"^the StringIO is open in text mode: .* with 'wb'"):
        model.save(io.StringIO())
    # closed, or open the other way: named (they said "I/O operation on closed file" and
    # io.UnsupportedOperation's "write")
    with open(tmp_path / "model.npz", "rb") as file, \
            pytest.raises(ValueError, match=f"^{named} is not open for writing: open it "
                                            f"with 'wb'"):
        model.save(file)
    with open(tmp_path / "other.npz", "wb") as file, \
            pytest.raises(ValueError, match="is not open for reading: open it with 'rb'"):
        ALS.load(file)
    closed = io.BytesIO()
    closed.close()
    for call, mode in ((model.save, "wb"), (ALS.load, "rb")):
        with pytest.raises(ValueError, match=f"^the BytesIO is closed: open it with '{mode}'"):
            call(closed)


def test_hyperparameters_given_as_numpy_scalars_are_saved_as_numbers(fitted, tmp_path):
    """As from a grid held in an array: NumPy integers, floats and booleans (JSON knows
    none of them) come back as the same Python values; the seed is kept."""
    _, R = fitted
    given = {"factors": np.int64(4), "iterations": np.int32(2), "alpha": np.float32(4.0),
             "regularization": np.float64(0.05), "random_state": np.int64(7),
             "calculate_training_loss": np.bool_(True)}
    model = ALS(backend="cpu", show_progress=False, **given).fit(R)
    loaded = ALS.load(model.save(tmp_path / "numpy.npz"), backend="cpu")
    for name, value in given.items():
        assert getattr(loaded, name) == value and type(getattr(loaded, name)) is \
            type(value.item()), name
    np.testing.assert_array_equal(ALS(**loaded.get_params()).fit(R).user_factors_,
                                  model.user_factors_)  # the same seed


def test_a_save_replaces_the_file_whole_or_not_at_all(fitted, tmp_path, monkeypatch):
    """Written beside the target and moved over it: a failed save leaves the old model and
    no stray file; a path without .npz gets it, as np.savez does."""
    model, R = fitted
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def fail(file, **arrays):  # np.savez that writes half a file, then fails
        if isinstance(file, (str, os.PathLike)):
            file = open(file, "wb")
        file.write(b"PK\x03\x04half a model")
        file.flush()
        raise OSError("disk full (test)")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
    other = ALS(factors=5, iterations=1, backend="cpu", random_state=9,
                show_progress=False).fit(R)
    other.save(path)  # over an existing file
    other_bytes = path.read_bytes()
    np.testing.assert_array_equal(ALS.load(path, backend="cpu").user_factors_,
                                  other.user_factors_)
    assert model.save(tmp_path / "no_suffix") == str(tmp_path / "no_suffix.npz")
    assert (tmp_path / "no_suffix.npz").is_file()
    for name in (tmp_path / "no_suffix", str(tmp_path / "no_suffix")):  # as it was saved
        np.testing.assert_array_equal(ALS.load(name, backend="cpu").user_factors_,
                                      model.user_factors_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "no_suffix.npz"]
    (tmp_path / "no_suffix").write_bytes(path.read_bytes())  # the name itself comes first
    np.testing.assert_array_equal(ALS.load(tmp_path / "no_suffix", backend="cpu")
                                  .user_factors_, other.user_factors_)
    (tmp_path / "no_suffix").unlink()
    with open(path, "rb") as reader:  # a server reading the old model as a save lands:
        model.save(path)  # its open file stays the old one, whole
        assert reader.read() == other_bytes
    np.testing.assert_array_equal(ALS.load(path, backend="cpu").user_factors_,
                                  model.user_factors_)
    with pytest.raises(FileNotFoundError, match=r"there is no folder .*missing$"):
        model.save(tmp_path / "missing" / "model.npz")


def test_a_model_saves_to_and_loads_from_a_url(fitted, tmp_path, monkeypatch):
    """A URL (fsspec's in-memory filesystem here, s3:// alike) as a path: ``.npz`` added
    and found as for a path; a failed save leaves the model that was there, whole (an
    fsspec transaction: a plain upload would have committed half a file); a folder, a
    missing file, a broken one and an unknown protocol are refused by the URL."""
    fsspec = pytest.importorskip("fsspec")
    model, R = fitted
    memory, root = fsspec.filesystem("memory"), f"/{uuid.uuid4().hex}"
    url = f"memory:/{root}/models/model"
    try:
        assert model.save(url) == f"{url}.npz"
        assert memory.ls(f"{root}/models", detail=False) == [f"{root}/models/model.npz"]
        for name in (url, f"{url}.npz"):
            loaded = ALS.load(name, backend="cpu")
            np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
            np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
            assert loaded.get_params() == model.get_params()
        before = memory.cat(f"{root}/models/model.npz")

        def fail(file, **arrays):  # np.savez that writes half a file, then fails
            file.write(b"PK\x03\x04half a model")
            raise OSError("quota exceeded (test)")

        with monkeypatch.context() as patch:
            patch.setattr(np, "savez", fail)
            with pytest.raises(OSError, match=f"^cannot write {url}.npz: quota exceeded"):
                model.save(url)  # (the filesystem's error, named: s3fs's names nothing)
            with pytest.raises(OSError, match="quota exceeded"):
                model.save(f"memory:/{root}/models/new.npz")
        assert memory.cat(f"{root}/models/model.npz") == before
        assert memory.ls(f"{root}/models", detail=False) == [f"{root}/models/model.npz"]
        with pytest.raises(IsADirectoryError, match=f"^cannot save the model to memory:/"
                                                    f"{root}/models: it is a folder; give a "
                                                    f"file name such as memory:/{root}/"
                                                    f"models/model.npz$"):
            model.save(f"memory:/{root}/models")
        with pytest.raises(FileNotFoundError, match=f"^no model file at memory:/{root}/"
                                                    f"models \\(a folder\\)$"):
            ALS.load(f"memory:/{root}/models")
        with pytest.raises(FileNotFoundError, match=f"^no model file at memory:/{root}/none$"):
            ALS.load(f"memory:/{root}/none")
        memory.pipe(f"{root}/models/broken.npz", before[:100])
        with pytest.raises(ValueError, match=f"^memory:/{root}/models/broken.npz is not a "
                                             f"readable gpu-als model file"):
            ALS.load(f"memory:/{root}/models/broken.npz")
    finally:
        memory.rm(root, recursive=True)
    with pytest.raises(ValueError, match="^nope://bucket/model.npz: Protocol not known"):
        ALS.load("nope://bucket/model.npz")
    # saves at once (two threads; here one within the other's write, where they would
    # share fsspec's one transaction per filesystem instance): each whole, or not at all
    other = ALS(factors=5, iterations=1, backend="cpu", random_state=9,
                show_progress=False).fit(R)
    savez = np.savez

    try:
        with monkeypatch.context() as patch:
            def save_the_other_first(file, **arrays):
                patch.setattr(np, "savez", savez)  # (for the other save, and this one's)
                other.save(f"memory:/{root}/inner.npz")
                savez(file, **arrays)

            patch.setattr(np, "savez", save_the_other_first)
            model.save(f"memory:/{root}/outer.npz")
        for name, saved in (("inner", other), ("outer", model)):
            np.testing.assert_array_equal(ALS.load(f"memory:/{root}/{name}.npz")
                                          .user_factors_, saved.user_factors_)

        with monkeypatch.context() as patch, pytest.raises(OSError, match="quota"):
            def save_the_other_then_fail(file, **arrays):
                patch.setattr(np, "savez", savez)
                other.save(f"memory:/{root}/inner2.npz")
                file.write(b"PK\x03\x04half a model")
                raise OSError("quota exceeded (test)")

            patch.setattr(np, "savez", save_the_other_then_fail)
            model.save(f"memory:/{root}/outer2.npz")
        assert sorted(memory.ls(root, detail=False)) == [
            f"{root}/{name}.npz" for name in ("inner", "inner2", "outer")]
    finally:
        memory.rm(root, recursive=True)
    # a local file by its file:// URL, saved whole or not at all as well
    assert model.save(f"file://{tmp_path}/model") == f"file://{tmp_path}/model.npz"
    np.testing.assert_array_equal(ALS.load(tmp_path / "model.npz").user_factors_,
                                  model.user_factors_)


def test_a_folder_that_refuses_the_file_is_named_in_the_error(fitted, tmp_path, monkeypatch):
    """(A read-only folder; root, who runs CI, may write to any, hence the stand-in.) The
    error names the file asked for, not the temporary file beside it, and leaves nothing."""
    from gpu_als import _files

    def refuse(name, mode):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(_files, "open", refuse, raising=False)
    path = tmp_path / "model.npz"
    expected = f"cannot save the model to {re.escape(str(path))}: Permission denied$"
    with pytest.raises(PermissionError, match=expected):
        fitted[0].save(path)
    assert list(tmp_path.iterdir()) == []


def test_factors_from_elsewhere_land_on_the_cpu_where_their_backend_cannot_run(
        monkeypatch, caplog):
    """(A GPU model unpickled, or fitted by GPU workers, where there is no GPU.)"""
    from gpu_als.backends import get_backend_or_cpu, gpu

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no CUDA device here")
    with caplog.at_level("WARNING", logger="gpu_als"):
        assert get_backend_or_cpu("gpu", "a gpu model").name == "cpu"
    assert "a gpu model on the CPU backend: backend='gpu' cannot run: no CUDA device " \
        "here" in caplog.text
    assert get_backend_or_cpu("cpu", "a cpu model").name == "cpu"


def test_pickle_round_trip(backend, caplog):
    """joblib / multiprocessing: the factors travel as NumPy arrays and land on the same
    kind of backend where it runs here, else on the CPU with a warning (the emulated GPU
    model in CI)."""
    import pickle

    from gpu_als.backends import gpu

    R = random_interactions(30, 20, 0.2, seed=0)
    model = ALS(factors=5, iterations=2, backend=backend, random_state=3,
                show_progress=False).fit(R)
    with caplog.at_level("WARNING", logger="gpu_als"):
        loaded = pickle.loads(pickle.dumps(model))
    expected = "cpu" if model.backend_ == "cpu" or gpu.unavailable_reason() else "gpu"
    assert loaded.backend_ == expected and isinstance(loaded.backend, str)
    assert ("on the CPU backend" in caplog.text) == (expected != model.backend_)
    to_host = model._backend.to_numpy
    np.testing.assert_array_equal(loaded._backend.to_numpy(loaded.user_factors_),
                                  to_host(model.user_factors_))
    assert loaded.loss_history_ == model.loss_history_
    np.testing.assert_array_equal(loaded.recommend(2, R[2], N=4)[0],
                                  model.recommend(2, R[2], N=4)[0])
    unfitted = pickle.loads(pickle.dumps(ALS(factors=3)))
    assert unfitted.get_params() == ALS(factors=3).get_params()


def test_model_from_another_backend_loads_here(backend, fitted, tmp_path):
    """Saved from the CPU, loaded on each backend, saved there, loaded on the CPU again."""
    model, _ = fitted
    model.save(tmp_path / "a.npz")
    there = ALS.load(tmp_path / "a.npz", backend=backend)
    there.save(tmp_path / "b.npz")
    back = ALS.load(tmp_path / "b.npz", backend="cpu")
    np.testing.assert_array_equal(back.item_factors_, model.item_factors_)


def test_ids_are_saved_with_the_model(fitted, tmp_path):
    model, _ = fitted
    users = np.array([f"user-{i}" for i in range(30)], dtype=object)
    model.save(tmp_path / "m.npz", user_ids=users, item_ids=np.arange(100, 120))
    loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
    assert list(loaded.user_ids_) == list(users)
    np.testing.assert_array_equal(loaded.item_ids_, np.arange(100, 120))
    with pytest.raises(ValueError, match=r"user_ids has shape \(3,\), expected \(30,\)"):
        model.save(tmp_path / "bad.npz", user_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="item_ids holds 0 more than once"):  # as fit says
        model.save(tmp_path / "bad.npz", item_ids=np.arange(20) % 10)
    # numbers, booleans and datetimes keep their type; other objects (UUIDs) become strings
    pairs = np.empty(20, dtype=object)
    pairs[:] = [uuid.UUID(int=i) for i in range(20)]
    two_items = ALS.from_factors(model.user_factors_, model.item_factors_[:2])
    for ids in (np.linspace(0.5, 10, 20), np.array([True, False]),
                np.datetime64("2026-01-01") + np.arange(20), np.arange(20, dtype=np.uint16),
                pairs):
        (two_items if len(ids) == 2 else model).save(tmp_path / "m.npz", item_ids=ids)
        loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
        expected = np.array([str(i) for i in ids]) if ids.dtype == object else ids
        assert loaded.item_ids_.dtype == expected.dtype
        np.testing.assert_array_equal(loaded.item_ids_, expected)
    pairs[:] = [(i, "x") for i in range(20)]  # a composite key: not one id (nor saved as text)
    with pytest.raises(TypeError, match=r"item_ids holds tuple ids \(e.g. \(0, 'x'\)\)"):
        model.save(tmp_path / "pairs.npz", item_ids=pairs)
    assert not (tmp_path / "pairs.npz").exists()
    with pytest.raises(IsADirectoryError, match=r"it is a folder; give a file name such as"):
        model.save(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or a path-like object, got int"):
        model.save(1)
    assert model.save(bytes(tmp_path / "b")) == str(tmp_path / "b.npz")


def test_bytes_and_time_ids_are_found_after_a_load(fitted, tmp_path):
    """Ids of bytes (an HDF5 file's strings, a Parquet binary column), datetimes and
    durations are saved as they are: the model loaded finds them by the same ids (bytes
    were saved as their repr, b'a' as "b'a'", which no lookup found)."""
    pd = pytest.importorskip("pandas")
    model, _ = fitted
    names = [f"u{i}".encode() for i in range(29)] + [b"\xff\xfe"]  # the last: not UTF-8
    in_objects = np.empty(30, dtype=object)
    in_objects[:] = names
    stamps = np.datetime64("2026-01-01T00:00", "s") + np.arange(30) * 3600
    for ids, query in ((np.array(names), [b"\xff\xfe", b"u3", b"u3", b"zz"]),
                       (in_objects, [b"\xff\xfe", b"u3", b"u3", b"zz"]),
                       (stamps, [pd.Timestamp("2026-01-01 03:00"), "2026-01-01T01:00",
                                 datetime.datetime(2026, 1, 2, 5), "not a time"]),
                       (stamps - stamps[0], [np.timedelta64(3, "h"), pd.Timedelta(hours=1),
                                             np.timedelta64(29 * 3600, "s"), "x"])):
        model.save(tmp_path / "m.npz", user_ids=ids)
        loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
        assert loaded.user_ids_.tolist() == list(ids)
        for m in (ALS.from_factors(model.user_factors_, model.item_factors_, user_ids=ids),
                  loaded):
            np.testing.assert_array_equal(m.user_rows(query), [29, 3, 3, -1]
                                          if ids.dtype.kind in "SO" else [3, 1, 29, -1])
            assert m.user_rows("u3") == (3 if ids.dtype.kind in "SO" else -1)  # text typed
    # b"u1" and b"u1\0" are one id to the lookups (NumPy's strings drop trailing NULs), in
    # sorted order or not: refused, as given to fit, and not saved as two rows of one id
    for order in (slice(None), slice(None, None, -1)):
        nul = np.empty(4, dtype=object)
        nul[:] = [b"u0", b"u1", b"u1\0", b"u2"]
        nul = nul[order]
        with pytest.raises(ValueError, match=r"user_ids holds b'u1\\x00' more than once|"
                                             r"user_ids holds b'u1' more than once"):
            model.save(tmp_path / "nul.npz", user_ids=np.concatenate([nul, in_objects[4:]]))
        with pytest.raises(ValueError, match="more than once"):
            ALS.from_factors(model.user_factors_[:4], model.item_factors_, user_ids=nul)
    for last in ([b"u0", b"u1", b"u2", b"u2\0"], ["u0", "u1", "u2", "u2\0"]):  # text too
        nul = np.empty(4, dtype=object)
        nul[:] = last
        with pytest.raises(ValueError, match="more than once"):
            ALS.from_factors(model.user_factors_[:4], model.item_factors_, user_ids=nul)
    assert not (tmp_path / "nul.npz").exists()


def test_datetimes_with_a_time_zone_are_ids_as_utc_instants(tmp_path):
    """pandas' time-zone-aware datetimes as ids are the UTC instants, as polars gives them:
    found by the same instant in any zone or as an ISO 8601 string, before and after a
    load (they were Timestamp objects, saved as text, and an ISO string with an offset
    matched nothing)."""
    pd = pytest.importorskip("pandas")
    instants = pd.to_datetime(["2026-01-01T00:00", "2026-01-02T00:00", "2026-01-03T00:00"],
                              utc=True)
    df = pd.DataFrame({"user": instants[[0, 1, 2, 0, 1]].tz_convert("Asia/Tokyo"),
                       "item": [1, 2, 3, 2, 3]})
    model = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(df)
    assert model.user_ids_.dtype.kind == "M"
    np.testing.assert_array_equal(model.user_ids_, instants.tz_localize(None).to_numpy())
    model.save(tmp_path / "m.npz")
    queries = [instants[1], instants[2].tz_convert("America/New_York"),
               "2026-01-01T09:00:00+09:00", datetime.datetime(2026, 1, 2),
               datetime.datetime(2026, 1, 3, tzinfo=datetime.timezone.utc), "2026-01-04"]
    for m in (model, ALS.load(tmp_path / "m.npz")):
        np.testing.assert_array_equal(m.user_rows(queries), [1, 2, 0, 1, 2, -1])
    again = model.recommend_frame(interactions=df.iloc[:1], N=1)  # the frame's ids match
    assert list(again["user"]) == [instants[0].tz_localize(None)]
    # given as an index to fit or a partial fit alike
    R = sp.csr_matrix(np.eye(3, dtype=np.float32))
    by_index = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(
        R, user_ids=instants.tz_convert("Asia/Tokyo"))
    np.testing.assert_array_equal(by_index.user_ids_, model.user_ids_)
    by_index.partial_fit_users(user_items=R[:1], user_ids=pd.DatetimeIndex(
        ["2026-01-04T09:00"]).tz_localize("Asia/Tokyo"))
    assert by_index.user_rows("2026-01-04T00:00") == 3


def test_to_cpu_copies(fitted):
    model, _ = fitted
    copy = model.to_cpu()
    copy.user_factors_[0, 0] += 1
    assert copy.user_factors_[0, 0] != model.user_factors_[0, 0]


def rewrite(path, target, **changes):
    """Copy a saved model with some arrays replaced (or removed when None)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    np.savez(target, **arrays)
    return target


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "model.npz"
    fitted[0].save(path)
    return path


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable gpu-als model file"):
        ALS.load(cut)


def test_corrupted_file(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    for i in range(200, len(data) - 200, 7):
        data[i] ^= 0x5A
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable gpu-als model file|is not a gpu-als"):
        ALS.load(bad)


def test_not_a_model(saved, tmp_path, monkeypatch):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match=r"is not a gpu-als model file \(missing: format, "
                                         r"item_factors, loss_history, params, user_factors, "
                                         r"version\)"):
        ALS.load(tmp_path / "other.npz")
    fields = {name: np.array(0) for name in ("version", "params", "user_factors",
                                             "item_factors", "loss_history")}
    np.savez(tmp_path / "tagged.npz", format=np.array("another format"), **fields)
    with pytest.raises(ValueError, match=r"not a gpu-als model file \(missing: the format "
                                         r"tag\)"):
        ALS.load(tmp_path / "tagged.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable gpu-als model file"):
        ALS.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz$"):
        ALS.load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="no model file at .*missing$"):
        ALS.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no model file at .* \(a folder\)$"):
        ALS.load(tmp_path)

    def vanished(*args, **kwargs):  # the file removed between the checks and the read
        raise FileNotFoundError(2, "No such file or directory")

    with monkeypatch.context() as patched:
        patched.setattr(np, "load", vanished)
        with pytest.raises(FileNotFoundError, match="No such file"):  # not "not readable"
            ALS.load(tmp_path / "tagged.npz")
    for path in (0, None, 2.5):  # 0 would be a file descriptor to os and open()
        with pytest.raises(TypeError, match=f"path must be a str or a path-like object, "
                                             f"got {type(path).__name__} {path}"):
            ALS.load(path)
    loaded = ALS.load(str(saved).encode())  # bytes are a path
    np.testing.assert_array_equal(loaded.item_factors_, ALS.load(saved).item_factors_)


@pytest.mark.parametrize("version, newer", [(0, False), (2, True)])
def test_wrong_version(saved, tmp_path, version, newer):
    path = rewrite(saved, tmp_path / "v.npz", version=np.array(version))
    upgrade = "; a newer gpu-als wrote it: upgrade to read it" if newer else ""
    with pytest.raises(ValueError, match=f"format version {version}; this gpu-als reads "
                                         f"version 1{upgrade}$"):
        ALS.load(path)
    for odd in (np.array("1"), np.array([1, 1])):  # Python's TypeError or ValueError before
        path = rewrite(saved, tmp_path / "v.npz", version=odd)
        with pytest.raises(ValueError, match=r"its format version is not an integer \(an array "
                                             r"of shape " + re.escape(str(odd.shape))):
            ALS.load(path)


@pytest.mark.parametrize("name, value, message", [
    ("user_factors", np.ones((30, 4), np.float32), r"user_factors has shape \(30, 4\)"),
    ("item_factors", np.ones((20, 5), np.float64), r"dtype float64, expected"),
    ("item_factors", np.full((20, 5), np.nan, np.float32), "NaN or infinite"),
    ("user_ids", np.arange(3), r"user_ids has shape \(3,\), expected \(30,\)"),
    ("loss_history", np.ones((2, 2)), r"loss_history has shape \(2, 2\) and dtype float64, "
                                      r"expected a 1-D array of numbers"),
    ("loss_history", np.array(["x"]), r"loss_history has shape \(1,\) and dtype <U1"),
])
def test_wrong_arrays(saved, tmp_path, name, value, message):
    path = rewrite(saved, tmp_path / "bad.npz", **{name: value})
    with pytest.raises(ValueError, match=message):
        ALS.load(path)


def test_bad_hyperparameters_in_file(saved, tmp_path):
    with np.load(saved) as archive:
        params = json.loads(str(archive["params"]))
    params["factors"] = -2
    path = rewrite(saved, tmp_path / "p.npz", params=np.array(json.dumps(params)))
    with pytest.raises(ValueError, match="invalid hyperparameters: factors=-2"):
        ALS.load(path)
    params["factors"] = 4
    params["dtype"] = {"a": 1}  # NumPy's TypeError: "object of type 'int' has no len()"
    path = rewrite(saved, tmp_path / "p.npz", params=np.array(json.dumps(params)))
    with pytest.raises(ValueError, match=r"invalid hyperparameters: dtype=\{'a': 1\} is not "
                                         r"a NumPy dtype"):
        ALS.load(path)


@pytest.mark.parametrize("stored, says", [
    (np.array("[4, 0.01]"), r"its hyperparameters are an array in JSON, expected one JSON "
                            r"object naming them"),
    (np.array('{"factors": 4'), r"its hyperparameters are not valid JSON \(Expecting"),
    (np.array([['{"factors": 4}']]), r"its hyperparameters are an array of shape \(1, 1\) "
                                     r"and dtype <U14"),
    (np.array(b'{"factors": 4}'), r"its hyperparameters are an array of shape \(\) and "
                                  r"dtype \|S14"),
])
def test_malformed_hyperparameters_in_file(saved, tmp_path, stored, says):
    path = rewrite(saved, tmp_path / "p.npz", params=stored)
    with pytest.raises(ValueError, match=f"p.npz: {says}"):
        ALS.load(path)


def test_file_without_dtype_loads_as_float32(saved, tmp_path):
    """Hyperparameters left out take their defaults (KeyError for dtype before)."""
    with np.load(saved) as archive:
        params = json.loads(str(archive["params"]))
        factors = archive["user_factors"]
    del params["dtype"]
    path = rewrite(saved, tmp_path / "p.npz", params=np.array(json.dumps(params)))
    assert factors.dtype == np.float32
    loaded = ALS.load(path)
    assert loaded.dtype is np.float32
    np.testing.assert_array_equal(loaded.user_factors_, factors)


def test_pickled_object_is_refused(saved, tmp_path):
    path = tmp_path / "pickled.npz"
    with np.load(saved) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["user_ids"] = np.array([object()] * 30, dtype=object)
    np.savez(path, **arrays)  # np.savez pickles object arrays
    assert zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="refusing to load pickled objects"):
        ALS.load(path)


# ---- models made of given factors: from_factors, assignment, set_params after fit ------

def test_a_model_from_factors_answers_from_them(backend, fitted, tmp_path):
    """Queries use the given factors; fold-in uses them and the given hyperparameters, so a
    model rebuilt from a fitted one's factors and parameters answers as it does."""
    model, R = fitted
    X, Y = model.user_factors_, model.item_factors_
    rebuilt = ALS.from_factors(X.astype(np.float64), Y.tolist(), user_ids=np.arange(30) + 100,
                               **{**model.get_params(), "backend": backend})
    assert rebuilt.factors == 5 and rebuilt.loss_history_ == []
    to_host = rebuilt._backend.to_numpy
    assert to_host(rebuilt.user_factors_).dtype == np.float32  # the model's dtype
    np.testing.assert_array_equal(to_host(rebuilt.item_factors_), Y)
    np.testing.assert_array_equal(rebuilt.user_ids_, np.arange(30) + 100)
    ids, scores = rebuilt.recommend(np.arange(30), R, N=4)
    np.testing.assert_array_equal(ids, model.recommend(np.arange(30), R, N=4)[0])
    np.testing.assert_allclose(to_host(rebuilt.recalculate_user(3, R[3])),
                               model.recalculate_user(3, R[3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rebuilt.similar_items(2, N=5)[0],
                                  model.similar_items(2, N=5)[0])
    rebuilt.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
    np.testing.assert_array_equal(loaded.user_factors_, X)
    # factors from elsewhere: k comes from the arrays, dtype from the estimator's default
    small = ALS.from_factors(np.eye(3, 2), [[1, 0], [0, 1], [3, 4]], backend=backend,
                             dtype=np.float64)
    assert small.factors == 2 and small._backend.to_numpy(small.item_factors_).dtype == \
        np.float64
    ids, scores = small.similar_items(0, N=3)
    np.testing.assert_array_equal(ids, [0, 2, 1])
    np.testing.assert_allclose(scores, [1.0, 0.6, 0.0], atol=1e-12)


@pytest.mark.parametrize("X, Y, params, error, message", [
    (np.ones((3, 2)), np.ones((4, 3)), {}, ValueError,
     "user_factors has 2 columns but item_factors has 3"),
    (np.ones((3, 1)), np.ones((4, 3)), {}, ValueError,  # ("1 columns" before)
     "user_factors has 1 column but item_factors has 3"),
    (np.ones(3), np.ones((4, 3)), {}, ValueError, r"user_factors has shape \(3,\)"),
    (np.ones((3, 2)), np.ones((0, 2)), {}, ValueError, r"item_factors has shape \(0, 2\)"),
    (np.ones((3, 2)), np.full((4, 2), np.inf), {}, ValueError,
     "item_factors holds NaN or infinite"),
    # finite, but infinite in the model's float32 (a model of infinite factors before)
    (np.full((3, 2), -1e39), np.ones((4, 2)), {}, ValueError,
     r"^user_factors holds values up to 1e\+39 in magnitude, beyond what float32 holds: "
     r"scale them down or use dtype=float64$"),
    # values float32 holds, but rows whose dot products (scores, squared norms) it does
    # not: queries answered NumPy's overflow warnings, similar_items scored every item 0
    (np.ones((3, 2)), np.full((4, 2), 1.5e19), {}, ValueError,
     r"^item_factors has rows of norm up to 2.12e\+19: their dot products \(the scores\) "
     r"overflow float32; scale them down or use dtype=float64$"),
    (np.full((3, 2), 1e160), np.ones((4, 2)), {"dtype": np.float64}, ValueError,
     r"^user_factors has rows of norm up to 1.41e\+160: their dot products \(the scores\) "
     r"overflow float64; scale them down$"),
    (np.array([["a", "b"]]), np.ones((4, 2)), {}, TypeError, "user_factors has dtype <U1"),
    (np.ones((3, 0)), np.ones((4, 0)), {}, ValueError,
     r"user_factors has shape \(3, 0\), expected \(n, factors\) with n >= 1 and factors >= 1"),
    ([[1.0, 2.0], [3.0]], np.ones((4, 2)), {}, TypeError,
     "user_factors is not an array of numbers"),
    (np.ones((3, 2)), np.ones((4, 2)), {"factors": 3}, ValueError,
     "factors=3, but the factor arrays have 2 columns"),
    (np.ones((3, 2)), np.ones((4, 2)), {"user_ids": ["a"]}, ValueError,
     r"user_ids has shape \(1,\), expected \(3,\)"),
    (np.ones((3, 2)), np.ones((4, 2)), {"user_ids": [["a"], ["b"], ["c"]]}, ValueError,
     r"user_ids has shape \(3, 1\), expected \(3,\)"),
    (np.ones((3, 2)), np.ones((4, 2)), {"item_ids": [7, 3, 9, 3]}, ValueError,
     "item_ids holds 3 more than once: each factor row needs an id of its own"),
    # sorted, but the lookups (NumPy's strings drop trailing NULs) find "a" for "a\0"
    (np.ones((3, 2)), np.ones((4, 2)), {"user_ids": np.array(["a", "a\0", "b"], object)},
     ValueError, r"user_ids holds 'a\\x00' more than once"),
    (np.ones((3, 2)), np.ones((4, 2)), {"alpha": -1}, ValueError, "alpha=-1"),
])
def test_from_factors_refuses_bad_factors(X, Y, params, error, message):
    with pytest.raises(error, match=message):
        ALS.from_factors(X, Y, backend="cpu", **params)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_factors_as_large_as_their_dtype_allows_answer_every_query(backend):
    """Rows of norm just below the square root of float32's largest value (1.84e19): the
    largest the check lets through; every query answers without NumPy's warnings, with
    finite scores (cosine similarity 1 for an item with itself)."""
    X = np.full((3, 4), 9e18 / 2, np.float32)  # norms 9e18
    Y = np.vstack([np.full((1, 4), 9e18 / 2), np.eye(4)[:3]]).astype(np.float32)
    model = ALS.from_factors(X, Y, backend=backend)
    R = sp.csr_matrix((3, 4), dtype=np.float32)
    _, scores = model.recommend(np.arange(3), R, N=4)
    assert np.isfinite(scores).all() and scores[0, 0] == pytest.approx(8.1e37, rel=1e-5)
    ids, scores = model.similar_items(0, N=4)
    assert ids[0] == 0 and scores[0] == pytest.approx(1.0, rel=1e-5)
    assert np.isfinite(model.predict([0, 1], [0, 1])).all()


def test_the_largest_norm_is_found_without_overflow_in_both_dtypes():
    """Rows whose largest value is below the square root of the dtype's largest but
    whose norm is not (1.5e19 twice in float32: 2.12e19 against 1.84e19): found by the
    exact norms, which the quick bound by the largest value alone would miss."""
    from gpu_als._training import largest_norm, overflowing_norm
    from gpu_als.backends import CPUBackend

    cpu = CPUBackend(num_threads=1)
    ones = np.ones((3, 2), np.float32)
    for band, norm in ((np.float32(1.5e19), 2.1213e19), (np.float32(1e19), None)):
        F = np.vstack([ones, [[band, band]]]).astype(np.float32)
        assert largest_norm(F) == pytest.approx(float(band) * np.sqrt(2), rel=1e-6)
        found = overflowing_norm(cpu, F, ones)
        assert found == (None if norm is None else pytest.approx(norm, rel=1e-4))
        assert overflowing_norm(cpu, ones, F) == found  # either side
    wide = np.array([[3e200, 4e200], [1.0, 1.0]])  # its squares overflow float64
    assert largest_norm(wide) == pytest.approx(5e200) and largest_norm(-wide) == \
        pytest.approx(5e200)
    assert overflowing_norm(cpu, wide, wide[1:]) == pytest.approx(5e200)


def test_factors_assigned_by_hand_are_checked_and_put_on_the_backend(backend, fitted):
    """implicit's way, ``model.user_factors = X``: checked at the next query, in the
    model's dtype, on its backend; a one-sided or broken assignment says what is wrong."""
    model, R = fitted
    X = model.user_factors_.astype(np.float64)
    Y = model.item_factors_.astype(np.float64)
    fresh = ALS(factors=5, backend=backend)
    fresh.user_factors = X
    with pytest.raises(NotFittedError, match="item_factors_ is not set"):
        fresh.recommend(0, R[0])
    fresh.item_factors = Y
    ids, _ = fresh.recommend(np.arange(30), R, N=4)
    np.testing.assert_array_equal(ids, model.recommend(np.arange(30), R, N=4)[0])
    assert fresh.backend_ == backend_name(backend) and fresh.loss_history_ == []
    on_backend = fresh.user_factors_
    assert fresh._backend.to_numpy(on_backend).dtype == np.float32
    fresh.recommend(0, R[0])
    assert fresh.user_factors_ is on_backend  # checked once per assignment
    # a fitted model's factors replaced: more users, and then a NaN
    grown = np.vstack([X, X[:2] * 2])
    fresh.user_factors_ = grown
    np.testing.assert_array_equal(fresh.recommend(31, R[1], N=4)[0],
                                  fresh.recommend(1, R[1], N=4)[0])
    bad = grown.copy()
    bad[4, 1] = np.nan
    fresh.user_factors = bad
    with pytest.raises(ValueError, match="user_factors holds NaN or infinite values"):
        fresh.recommend(0, R[0])
    bad[4, 1] = 1e39  # finite, but not in the model's float32
    fresh.user_factors = bad
    with pytest.raises(ValueError, match="user_factors holds values up to 1e\\+39 in "
                                         "magnitude, beyond what float32 holds"):
        fresh.recommend(0, R[0])
    bad[4, 1] = 1e20  # in float32, but its row's products are not
    fresh.user_factors = bad
    with pytest.raises(ValueError, match="user_factors has rows of norm up to 1e\\+20"):
        fresh.recommend(0, R[0])
    with pytest.raises(NotFittedError, match="call fit.* or build a model from factors"):
        ALS().recommend(0, R[0])
    # pickled between the assignment and its first query (joblib): checked there
    import pickle

    assigned = ALS(factors=5, backend="cpu")  # (a Backend instance pickles as its name)
    assigned.user_factors, assigned.item_factors = X, Y
    travelled = pickle.loads(pickle.dumps(assigned))
    np.testing.assert_array_equal(travelled.recommend(np.arange(30), R, N=4)[0],
                                  model.recommend(np.arange(30), R, N=4)[0])
    # evaluated straight after an assignment of lists
    from gpu_als.evaluation import ranking_metrics, train_test_split

    listed = ALS(factors=5, backend="cpu")
    listed.user_factors, listed.item_factors = X.tolist(), Y.tolist()
    train, test = train_test_split(R, test_fraction=0.3, random_state=0)
    metrics = ranking_metrics(listed, train, test, K=3, show_progress=False)
    assert metrics["recall"] > 0
    assert metrics == ranking_metrics(model, train, test, K=3, show_progress=False)


def test_a_fitted_model_keeps_its_factors_and_pickles_none_of_its_kept_values(backend):
    """fit hands its arrays over as checked (no copy at the first query); the pickled
    state has the factors alone, as NumPy arrays, not the values kept from them on the
    device (a GPU model must unpickle where there is no CuPy)."""
    import pickle

    R = random_interactions(30, 20, 0.2, seed=0)
    model = ALS(factors=3, iterations=1, backend=backend, show_progress=False).fit(R)
    X = model.user_factors_
    model.recalculate_user(0, R[0])
    model.similar_items(0)
    assert model.user_factors_ is X
    state = model.__getstate__()
    assert {name for name in state if name.startswith("_")} == set()
    assert isinstance(state["user_factors_"], np.ndarray)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.similar_items(0)[0], model.similar_items(0)[0])


def test_partial_fit_keeps_its_factors_as_checked(fitted):
    """A partial fit's grown factors are the model's own: not copied again at the next
    query."""
    model, R = fitted
    copy = model.to_cpu()
    copy.partial_fit_users([35], R[[1]])
    grown = copy.user_factors_
    copy.recommend(35, R[1])
    assert copy.user_factors_ is grown


def test_set_params_after_fit_changes_the_next_fit_only(fitted, tmp_path):
    """Queries, fold-in and the saved file keep the fitted factors' k and dtype (the saved
    file used to claim the new k, and then failed to load)."""
    model, R = fitted
    copy = model.to_cpu().set_params(factors=16, dtype=np.float64)
    x = copy.recalculate_user(3, R[3])
    assert x.shape == (5,) and x.dtype == np.float32
    np.testing.assert_allclose(x, model.recalculate_user(3, R[3]))
    assert copy.explain(3, R, 4)[0] == pytest.approx(model.explain(3, R, 4)[0])
    copy.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
    assert loaded.factors == 5 and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)


DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("name, with_ids", [("model-2026-11-28-aa1d24c.npz", False),
                                            ("model-with-ids-2026-12-02-6f3387e.npz", True)])
def test_files_of_earlier_versions_load(name, with_ids, tmp_path):
    """Model files that earlier versions wrote (tests/data/README.md says how) load, with
    the settings added since at their defaults, and are the model this version fits from
    the same data and seed; it answers queries, trains on from there, and saves again."""
    pd = pytest.importorskip("pandas") if with_ids else None
    R = sp.random(20, 15, density=0.3, format="csr", random_state=0, dtype=np.float32)
    old = ALS.load(os.path.join(DATA, name), backend="cpu")
    assert (old.factors, old.iterations, old.random_state, old.dtype) == (3, 2, 0, np.float32)
    assert (old.solver, old.cg_steps, old.warm_start) == ("cholesky", 3, False)
    settings = dict(factors=3, iterations=2, backend="cpu", random_state=0,
                    show_progress=False)
    if with_ids:
        entries = R.tocoo()
        data = pd.DataFrame({"user": [f"u{u}" for u in entries.row],
                             "item": entries.col * 10, "value": entries.data})
        assert list(old.user_ids_) == sorted(f"u{u}" for u in range(20))
        assert list(old.item_ids_) == list(range(0, 150, 10))
    else:
        data = R
        assert old.user_ids_ is None and old.item_ids_ is None
    new = ALS(**settings).fit(data)
    for got, want in ((old.user_factors_, new.user_factors_),
                      (old.item_factors_, new.item_factors_)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(old.loss_history_, new.loss_history_, rtol=1e-5)
    ids, _ = old.recommend(0, R[0], N=3)
    np.testing.assert_array_equal(ids, new.recommend(0, R[0], N=3)[0])
    old.set_params(warm_start=True, iterations=1, show_progress=False).fit(data)
    assert old.loss_history_[-1] < new.loss_history_[-1]
    again = ALS.load(old.save(tmp_path / "again.npz"), backend="cpu")
    np.testing.assert_array_equal(again.user_factors_, old.user_factors_)
