import contextlib
import io
import os
import zipfile

import numpy as np
import pytest

from gpu_als import ALS, datasets
from gpu_als.backends import gpu
from gpu_als.datasets import load_movielens_100k, make_power_law
from gpu_als.evaluation import train_test_split

from .conftest import needs_gpu
from .cupy_shaped import cupy_shaped_numpy


@pytest.mark.parametrize("device", ["cpu", "cupy-shaped", pytest.param("gpu", marks=needs_gpu)])
def test_power_law_shape_distinctness_and_skew(device, monkeypatch):
    """"cupy-shaped": the GPU's code path (CuPy's generator, no array repeats, no sort
    kinds, device arrays that reach the host only by copies) on NumPy."""
    if device == "cupy-shaped":
        cpu = make_power_law(2000, 500, 30_000, random_state=3, device="cpu")
        xp = cupy_shaped_numpy(device_arrays=True)
        monkeypatch.setattr(datasets, "_array_module", lambda device: xp)
        device = "gpu"
        assert (make_power_law(2000, 500, 30_000, random_state=3, device=device)
                != cpu).nnz > 0  # the device's own draws
    m = make_power_law(2000, 500, 30_000, random_state=3, device=device)
    assert m.shape == (2000, 500) and m.nnz == 30_000
    assert np.all(m.data == 1)
    assert m.has_sorted_indices
    for u in range(0, 2000, 97):  # indices sorted within each row
        row = m.indices[m.indptr[u]:m.indptr[u + 1]]
        assert np.all(np.diff(row) > 0)
    coo = m.tocoo()
    assert len(set(zip(coo.row.tolist(), coo.col.tolist()))) == 30_000  # distinct pairs
    activity = np.diff(m.indptr)
    assert activity.min() >= 1
    popularity = np.sort(np.bincount(m.indices, minlength=500))[::-1]
    # Zipf(1): the top item is far above the median item, the head reaches most users
    assert popularity[0] > 20 * np.median(popularity)
    assert popularity[0] > 0.5 * 2000
    again = make_power_law(2000, 500, 30_000, random_state=3, device=device)
    assert (again != m).nnz == 0
    other = make_power_law(2000, 500, 30_000, random_state=4, device=device)
    assert (other != m).nnz > 0


def test_power_law_defaults_are_zipf_1_and_lognormal_1():
    """The documented defaults (the benchmark's sets rely on them): user activity
    lognormal with sigma 1, summing exactly to nnz; item popularity Zipf with exponent 1."""
    m = make_power_law(5000, 3000, 200_000, random_state=0, device="cpu")
    log_activity = np.log(np.diff(m.indptr))
    assert np.diff(m.indptr).sum() == 200_000
    # counts ~ c * lognormal(0, 1), floored at 1: the log-spread is close to sigma
    assert 0.8 < log_activity.std() < 1.1
    # popularity against rank on log-log axes, below the saturated head: slope about -1
    # (-0.93 here; exponents 0.8 and 1.2 give -0.76 and -1.11)
    popularity = np.sort(np.bincount(m.indices, minlength=3000))[::-1]
    ranks = np.arange(1, 3001)
    slope = np.polyfit(np.log(ranks[20:1000]), np.log(popularity[20:1000]), 1)[0]
    assert -1.02 < slope < -0.85, slope


@pytest.mark.parametrize("module", ["numpy", "cupy-shaped"])
def test_repeat_matches_numpy(module):
    xp = np if module == "numpy" else cupy_shaped_numpy()
    counts = np.array([0, 3, 1, 0, 2])
    np.testing.assert_array_equal(datasets._repeat(xp, counts), np.repeat(np.arange(5), counts))
    assert len(datasets._repeat(xp, np.zeros(0, np.int64))) == 0


@pytest.mark.parametrize("module", ["numpy", "cupy-shaped"])
def test_merged_is_the_sorted_union(module):
    xp = np if module == "numpy" else cupy_shaped_numpy()
    a, b = np.array([2, 5, 9, 40]), np.array([0, 3, 41, 50])
    np.testing.assert_array_equal(datasets._merged(xp, a, b), [0, 2, 3, 5, 9, 40, 41, 50])
    np.testing.assert_array_equal(datasets._merged(xp, a[:0], b), b)
    np.testing.assert_array_equal(datasets._merged(xp, a, b[:0]), a)


@pytest.mark.parametrize("module", ["numpy", "cupy-shaped"])
def test_sorted_contains_finds_the_first_and_last_keys_too(module):
    xp = np if module == "numpy" else cupy_shaped_numpy()
    found = datasets._sorted_contains(xp, np.array([1, 3, 5]), np.array([5, 0, 3, 6, 4, 1]))
    assert found.tolist() == [True, False, True, False, False, True]
    empty = np.array([], np.int64)
    assert datasets._sorted_contains(xp, empty, np.array([2])).tolist() == [False]


@pytest.mark.parametrize("args, digest", [
    ((2000, 5000, 60_000, 1.0, 1.0, 0), "41fd3c5cfb022ece"),
    ((500, 50, 20_000, 1.5, 2.0, 1), "3395c83d2d69c81d"),  # users short of popular items
])
def test_a_seed_gives_the_same_matrix_across_releases(args, digest):
    """The benchmark's sets are named by their seed: the host generator must draw the same
    matrix in every release of gpu-als and of NumPy (these digests: NumPy 1.24 and 2.4,
    and the generator before it was made 2x faster)."""
    import hashlib

    n_users, n_items, nnz, exponent, sigma, seed = args
    m = make_power_law(n_users, n_items, nnz, item_exponent=exponent, activity_sigma=sigma,
                       random_state=seed, device="cpu")
    got = hashlib.sha256(m.indptr.astype(np.int64).tobytes()
                         + m.indices.astype(np.int64).tobytes()).hexdigest()[:16]
    assert got == digest


def test_power_law_device_argument():
    for device, shown in (("tpu", "'tpu'"), ("cuda", "'cuda'"), ("GPU", "'GPU'"),
                          (None, "None"), (np.array(["cpu", "gpu"]), "array")):
        # the names of ALS's backends only (an array was NumPy's "truth value" error)
        with pytest.raises(ValueError, match=f"device={shown}.*: expected one of 'auto', "
                                             f"'cpu', 'gpu'"):
            make_power_law(6, 5, 10, device=device)
    if gpu.unavailable_reason() is not None:
        with pytest.raises(ValueError, match="device='gpu' cannot run"):
            make_power_law(6, 5, 10, device="gpu")
        assert make_power_law(6, 5, 10, device="auto").nnz == 10  # falls back to the CPU


def test_power_law_full_and_bad_sizes():
    full = make_power_law(6, 5, 30)
    assert full.nnz == 30  # every pair
    assert full.indices.dtype == full.indptr.dtype == np.int32  # half of int64's memory
    with pytest.raises(ValueError, match=r"n_users=2147483648: at most 2\*\*31 - 1"):
        make_power_law(2**31, 1, 2**31)
    with pytest.raises(ValueError, match=r"nnz=31: at most n_users \* n_items = 30$"):
        make_power_law(6, 5, 31)
    with pytest.raises(ValueError, match="nnz=3: must be >= 6"):
        make_power_law(6, 5, 3)
    # the smallest: one user, one item; one pair more than one per user
    assert make_power_law(1, 1, 1).toarray().tolist() == [[1.0]]
    assert np.diff(make_power_law(6, 5, 7).indptr).tolist().count(2) == 1
    # the default seed is 0: the same matrix every call
    assert (make_power_law(40, 30, 200) != make_power_law(40, 30, 200, random_state=0)).nnz == 0


@pytest.mark.parametrize("sigma", [0.0, 50.0, 1e20, 1e308])
def test_power_law_any_activity_sigma(sigma):
    """The lognormal weights of a huge sigma overflow: the counts must still add up
    (they once spun forever), from at least 1 to at most n_items per user."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warnings
        m = make_power_law(500, 300, 20_000, activity_sigma=sigma, device="cpu")
    activity = np.diff(m.indptr)
    assert m.nnz == 20_000 and activity.min() >= 1 and activity.max() <= 300
    if sigma == 0:  # equal weights: equal counts, to one
        assert activity.max() - activity.min() <= 1
    else:
        assert activity.max() == 300  # the heaviest users are capped at every item
    # every pair: a huge sigma's heaviest user is capped at once and the others' weights
    # are 0 (underflow), so what is left goes evenly to the users with room (one slot each)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        full = make_power_law(4, 3, 12, activity_sigma=sigma, device="cpu")
    assert np.diff(full.indptr).tolist() == [3] * 4


def test_power_law_refuses_what_memory_cannot_hold(monkeypatch):
    monkeypatch.setattr("gpu_als.data.available_memory", lambda: 10 * 2**20)
    with pytest.raises(MemoryError, match=r"make_power_law\(1,000, 1,000,000, 100,000\) "
                                          r"needs at least 33 MiB of memory and 10 MiB"):
        make_power_law(1000, 10**6, 100_000, device="cpu")
    assert make_power_law(1000, 1000, 20_000, device="cpu").nnz == 20_000  # 2 MiB: fine


def test_movielens_files(movielens):
    assert movielens.ratings.shape == (943, 1682) and movielens.ratings.nnz == 100_000
    assert movielens.u1_base.nnz == 80_000 and movielens.u1_test.nnz == 20_000
    assert set(np.unique(movielens.ratings.data)) == {1, 2, 3, 4, 5}
    assert movielens.item_titles[0] == "Toy Story (1995)"
    # the dataset given where its matrix is wanted points at the matrix
    for call in (lambda: ALS().fit(movielens), lambda: train_test_split(movielens)):
        with pytest.raises(TypeError, match=r"^user_items must be a scipy.sparse matrix or "
                                            r"array, got gpu_als.MovieLens100K; pass its "
                                            r"\.ratings \(or its own split's \.u1_base and "
                                            r"\.u1_test\)$"):
            call()


def test_offline_without_copy_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"could not be downloaded .* Put the unzipped "
                                                r"ml-100k folder .* in .*gpu_als"):
        load_movielens_100k()
    with pytest.raises(FileNotFoundError, match="not found in"):
        load_movielens_100k(download=False)


@pytest.mark.parametrize("layout", ["the folder that holds ml-100k/", "ml-100k/ itself"])
def test_a_local_copy_is_found_in_either_layout(tmp_path, monkeypatch, movielens, layout):
    """(The folder of ``data_home`` and ``$GPU_ALS_DATA`` alike; found, never downloaded.)"""
    copy = tmp_path / "ml-100k"
    copy.mkdir()
    for name in ("u.data", "u1.base", "u1.test"):
        (copy / name).symlink_to(movielens.path / name)
    monkeypatch.setattr(datasets.urllib.request, "urlopen", None)
    home = tmp_path if layout.startswith("the folder") else copy
    assert load_movielens_100k(data_home=home).path == copy
    monkeypatch.setenv("HOME", str(home))
    assert load_movielens_100k(data_home="~").path == copy  # (a leading ~ expanded)
    monkeypatch.setenv(datasets.DATA_ENV, str(home))
    loaded = load_movielens_100k()
    assert loaded.path == copy and loaded.ratings.nnz == 100_000
    assert loaded.item_titles[0] == "item 0"  # without u.item: placeholder titles
    # a u.item with blank lines (as an edited copy may have): the titles it names
    (copy / "u.item").write_text("\n2|GoldenEye (1995)|01-Jan-1995||\n\n", encoding="latin-1")
    titles = load_movielens_100k().item_titles
    assert titles[1] == "GoldenEye (1995)" and titles[0] == "item 0" and len(titles) == 1682
    (copy / "u1.base").unlink()
    with pytest.raises(FileNotFoundError, match="u1.base is missing from the MovieLens"):
        load_movielens_100k()


def test_corrupted_copy_is_refused(tmp_path, movielens):
    copy = tmp_path / "ml-100k"
    copy.mkdir()
    for name in ("u.data", "u1.base", "u1.test"):
        (copy / name).write_bytes((movielens.path / name).read_bytes())
    with open(copy / "u1.test", "ab") as handle:
        handle.write(b"1\t1\t5\t0\n")
    with pytest.raises(ValueError, match="u1.test does not match the published"):
        load_movielens_100k(data_home=tmp_path)


def _serve(monkeypatch, payload: bytes):
    """Stand in for GroupLens: ``urlopen`` answers ``payload`` (the tests never download)."""
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        return contextlib.closing(io.BytesIO(payload))

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return calls


def _zip_of(folder, changed: dict[str, bytes] | None = None) -> bytes:
    """The GroupLens zip's layout (``ml-100k/<name>``) of the files in ``folder``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("u.data", "u1.base", "u1.test", "u.item", "README"):
            content = (changed or {}).get(name, (folder / name).read_bytes())
            archive.writestr(f"ml-100k/{name}", content)
    return buffer.getvalue()


def test_a_download_lands_in_the_cache_and_is_read_from_there_next_time(
        tmp_path, monkeypatch, movielens):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = _serve(monkeypatch, _zip_of(movielens.path))
    loaded = load_movielens_100k()
    assert calls == [datasets.ML100K_URL]
    assert loaded.path == tmp_path / "gpu_als" / "ml-100k"
    # and no temporary folder left behind
    assert sorted(p.name for p in (tmp_path / "gpu_als").iterdir()) == ["ml-100k"]
    assert (loaded.ratings != movielens.ratings).nnz == 0
    assert loaded.item_titles[0] == "Toy Story (1995)"
    assert load_movielens_100k().path == loaded.path and len(calls) == 1  # not again
    # a data_home of the caller's is where the download goes (made if need be)
    home = tmp_path / "shared" / "datasets"
    assert load_movielens_100k(data_home=home).path == loaded.path  # the cache's copy found
    (loaded.path / "u.data").unlink()
    assert load_movielens_100k(data_home=home).path == home / "ml-100k"
    assert len(calls) == 2 and load_movielens_100k(data_home=home).ratings.nnz == 100_000


@pytest.mark.parametrize("damage", ["checksum", "not a zip", "a file missing"])
def test_a_bad_download_writes_nothing(tmp_path, monkeypatch, movielens, damage):
    """Checked before anything is written: a bad download leaves no copy behind for the
    next call to find (and then refuse by its checksum)."""
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if damage == "checksum":
        payload = _zip_of(movielens.path, {"u1.test": b"1\t1\t5\t0\n"})
        expected = "u1.test in the download .* does not match the published"
    elif damage == "not a zip":
        payload, expected = b"<html>rate limited</html>", "is not the MovieLens 100K zip"
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("ml-100k/u.data", (movielens.path / "u.data").read_bytes())
        payload, expected = buffer.getvalue(), "is not the MovieLens 100K zip .*u1.base"
    _serve(monkeypatch, payload)
    with pytest.raises(ValueError, match=expected):
        load_movielens_100k()
    assert not (tmp_path / "gpu_als" / "ml-100k" / "u.data").exists()


def test_an_interrupted_download_leaves_no_copy_to_find(tmp_path, monkeypatch, movielens):
    """The files are put in place one by one, u.data (by which a copy is found) last: a
    download interrupted on the way is not taken for a copy by the next call."""
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _serve(monkeypatch, _zip_of(movielens.path))
    replace = datasets.os.replace
    placed = []

    def interrupted(source, target):
        if len(placed) == 4:
            raise KeyboardInterrupt
        placed.append(os.path.basename(target))
        replace(source, target)

    monkeypatch.setattr(datasets.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_movielens_100k()
    assert "u.data" not in placed and len(placed) == 4
    with pytest.raises(FileNotFoundError, match="not found in"):
        load_movielens_100k(download=False)
    assert sorted(p.name for p in (tmp_path / "gpu_als").iterdir()) == ["ml-100k"]


# ---- load_movielens: the larger releases, by stand-ins of their zips -------------------

def test_load_movielens_100k_is_u_data_as_a_frame(movielens):
    pd = pytest.importorskip("pandas")
    df = datasets.load_movielens("100k", data_home=movielens.path)
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert [str(t) for t in df.dtypes] == ["int32", "int32", "float32", "int64"]
    table = np.loadtxt(movielens.path / "u.data", dtype=np.int64, delimiter="\t")
    np.testing.assert_array_equal(df.to_numpy(np.int64), table)
    ratings = pd.DataFrame({"u": df["user"] - 1, "i": df["item"] - 1, "r": df["rating"]})
    assert (movielens.ratings[ratings["u"], ratings["i"]].A1 == ratings["r"]).all()


class _Response(io.BytesIO):
    """What ``urlopen`` answers: the payload, and its length as a header."""

    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


RATINGS = [(1, 1193, 5.0, 978300760), (1, 661, 3.5, 978302109), (2, 3068, 4.0, 978299000)]


def _release(monkeypatch, variant: str, rows=RATINGS, md5: str | None = None):
    """A stand-in of ``variant``'s zip (its layout, ``rows`` as its ratings), made the
    release that load_movielens expects (its MD5, or ``md5``; its count of ratings), and
    served in place of GroupLens: the zip's bytes and the URLs asked for."""
    import hashlib

    release = datasets.MOVIELENS[variant]
    if release.ratings.endswith(".dat"):
        text = "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in rows)
    else:
        text = "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},{r:g},{t}\n" for u, i, r, t in rows)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(release.ratings, text)
        archive.writestr(release.ratings.replace("ratings", "movies"), "1::Toy Story::x\n")
    payload = buffer.getvalue()
    monkeypatch.setitem(datasets.MOVIELENS, variant, datasets.MovieLensRelease(
        release.archive, release.ratings, md5 or hashlib.md5(payload).hexdigest(), 3))
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        return _Response(payload)

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return payload, calls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "gpu_als"


@pytest.mark.parametrize("variant", ["1m", "10m", "20m", "25m"])
def test_load_movielens_downloads_each_release_once_and_reads_its_ratings(cache, monkeypatch,
                                                                          variant):
    """The zip lands in the cache (nothing else left there) and is read from there next
    time; its ratings, ::-separated (1M, 10M) or a CSV with a header (20M, 25M), come as
    the DataFrame's rows, in the file's order."""
    pytest.importorskip("pandas")
    payload, calls = _release(monkeypatch, variant)
    archive = datasets.MOVIELENS[variant].archive
    df = datasets.load_movielens(variant)
    assert calls == [f"https://files.grouplens.org/datasets/movielens/{archive}"]
    assert sorted(p.name for p in cache.iterdir()) == [archive]
    assert (cache / archive).read_bytes() == payload
    assert list(df.itertuples(index=False, name=None)) == RATINGS
    assert [str(t) for t in df.dtypes] == ["int32", "int32", "float32", "int64"]
    assert datasets.load_movielens(variant).equals(df) and len(calls) == 1  # not again


def test_load_movielens_finds_a_zip_or_an_unzipped_folder_and_checks_them(
        cache, tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    payload, calls = _release(monkeypatch, "20m")
    home = tmp_path / "home"
    home.mkdir()
    (home / "ml-20m.zip").write_bytes(payload)
    assert len(datasets.load_movielens("20m", data_home=home)) == 3 and not calls
    monkeypatch.setenv(datasets.DATA_ENV, str(home))
    assert len(datasets.load_movielens("20m")) == 3 and not calls
    # a zip that is not the published one: refused, never read
    (home / "ml-20m.zip").write_bytes(payload + b"\0")
    with pytest.raises(ValueError, match=r"ml-20m.zip does not match the MD5 that GroupLens "
                                         r"publishes for it; delete it"):
        datasets.load_movielens("20m")
    # the unzipped folder (no MD5 to check): its count of ratings is
    (home / "ml-20m.zip").unlink()
    (home / "ml-20m").mkdir()
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        content = archive.read("ml-20m/ratings.csv")
    (home / "ml-20m" / "ratings.csv").write_bytes(content)
    assert len(datasets.load_movielens("20m")) == 3 and not calls
    (home / "ml-20m" / "ratings.csv").write_bytes(content + b"9,9,1,0\n")
    with pytest.raises(ValueError, match=r"ml-20m/ratings.csv holds 4 ratings where "
                                         r"MovieLens 20M has 3: a damaged or different copy"):
        datasets.load_movielens("20m")


def test_load_movielens_keeps_nothing_of_a_bad_or_failed_download(cache, monkeypatch):
    pytest.importorskip("pandas")
    _, calls = _release(monkeypatch, "1m", md5="0" * 32)
    with pytest.raises(ValueError, match=r"the download from https://files.grouplens.org/"
                                         r"datasets/movielens/ml-1m.zip does not match the "
                                         r"MD5 .* nothing was kept"):
        datasets.load_movielens("1m")
    assert list(cache.iterdir()) == []  # neither the zip nor its part

    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"ml-1m.zip is not available locally and "
                                                r"could not be downloaded .*unreachable"):
        datasets.load_movielens("1m")
    assert list(cache.iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"MovieLens 1M not found in .*gpu_als: put "
                                                r"ml-1m.zip \(or its unzipped ml-1m folder\)"):
        datasets.load_movielens("1m", download=False)
    for variant, shown in (("20M", "'20M'"), (20, "20"), (np.array(["1m", "20m"]),
                                                        r"array\(\['1m', '20m'\].*\)")):
        # (an array was NumPy's "truth value of an array" error)
        with pytest.raises(ValueError, match=f"variant={shown}: expected one of '100k', "
                                             f"'1m', '10m', '20m', '25m'"):
            datasets.load_movielens(variant)


def test_load_movielens_needs_pandas(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"load_movielens returns a pandas DataFrame: pip "
                                          r"install gpu-als\[pandas\]"):
        datasets.load_movielens("1m")
