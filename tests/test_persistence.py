"""save / load / to_cpu: round trips and every kind of broken file."""

import json
import os
import zipfile

import numpy as np
import pytest

from gpu_als import ALS

from .conftest import random_interactions


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
    np.testing.assert_array_equal(ALS.load(path, backend="cpu").user_factors_,
                                  other.user_factors_)
    model.save(tmp_path / "no_suffix")
    assert (tmp_path / "no_suffix.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "no_suffix.npz"]
    with pytest.raises(FileNotFoundError, match=r"there is no folder .*missing$"):
        model.save(tmp_path / "missing" / "model.npz")


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
    # numbers, booleans and datetimes keep their type; other objects become strings
    pairs = np.empty(20, dtype=object)
    pairs[:] = [(i, "x") for i in range(20)]
    for ids in (np.linspace(0.5, 10, 20), np.arange(20) % 2 == 0,
                np.datetime64("2026-01-01") + np.arange(20), np.arange(20, dtype=np.uint16),
                pairs):
        model.save(tmp_path / "m.npz", item_ids=ids)
        loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
        expected = np.array([str(i) for i in ids]) if ids.dtype == object else ids
        assert loaded.item_ids_.dtype == expected.dtype
        np.testing.assert_array_equal(loaded.item_ids_, expected)
    with pytest.raises(IsADirectoryError, match=r"it is a folder; give a file name such as"):
        model.save(tmp_path)


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


def test_not_a_model(tmp_path):
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
    with pytest.raises(FileNotFoundError):
        ALS.load(tmp_path / "missing.npz")


def test_wrong_version(saved, tmp_path):
    path = rewrite(saved, tmp_path / "v2.npz", version=np.array(2))
    with pytest.raises(ValueError, match="format version 2; this gpu-als reads version 1"):
        ALS.load(path)


@pytest.mark.parametrize("name, value, message", [
    ("user_factors", np.ones((30, 4), np.float32), r"user_factors has shape \(30, 4\)"),
    ("item_factors", np.ones((20, 5), np.float64), r"dtype float64, expected"),
    ("item_factors", np.full((20, 5), np.nan, np.float32), "NaN or infinite"),
    ("user_ids", np.arange(3), r"user_ids has shape \(3,\), expected \(30,\)"),
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


def test_pickled_object_is_refused(saved, tmp_path):
    path = tmp_path / "pickled.npz"
    with np.load(saved) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["user_ids"] = np.array([object()] * 30, dtype=object)
    np.savez(path, **arrays)  # np.savez pickles object arrays
    assert zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="refusing to load pickled objects"):
        ALS.load(path)
