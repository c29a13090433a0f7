"""The split, the metrics (against a hand-computed example and a slow loop), the baselines."""

import itertools
import re

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, NotFittedError, from_dataframe
from gpu_als.evaluation import (
    EarlyStopping,
    PopularityRecommender,
    RandomRecommender,
    auc,
    binarize,
    leave_k_out_split,
    map_at_k,
    ndcg_at_k,
    personalization,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
    scorable_part,
    temporal_split,
    train_test_split,
    validation_score,
)

from .conftest import ProgressBars, needs_gpu, random_interactions


def test_split_is_per_user_disjoint_and_seeded():
    R = random_interactions(200, 100, 0.1, seed=0).tolil()
    R[7] = 0
    R[7, 3] = 1  # a user with one entry keeps it in train
    R = R.tocsr()
    train, test = train_test_split(R, test_fraction=0.2, random_state=42)
    assert (train + test != R).nnz == 0
    assert train.multiply(test).nnz == 0
    n = np.diff(R.indptr)
    expected = np.where(n >= 2, np.maximum(1, np.rint(0.2 * n)), 0)
    np.testing.assert_array_equal(np.diff(test.indptr), expected)
    assert test[7].nnz == 0
    again, _ = train_test_split(R, test_fraction=0.2, random_state=42)
    assert (again != train).nnz == 0
    other, _ = train_test_split(R, test_fraction=0.2, random_state=1)
    assert (other != train).nnz > 0
    for implicit_call in (lambda: train_test_split(R, 0.8),  # implicit's: the train share
                          lambda: train_test_split(R, train_percentage=0.8)):
        with pytest.raises(TypeError, match=r"takes the share held out for testing as a "
                                            r"keyword, test_fraction=; the implicit library's "
                                            r"train_test_split\(ratings, 0.8\) keeps that "
                                            r"share for training instead \(test_fraction=0.2\)"):
            implicit_call()
    for kept in (80, 1, 0, 1.0):  # no test_fraction=-79, =0 or =1: none is a split
        with pytest.raises(TypeError, match=rf"train_test_split\(ratings, {kept}\) keeps "
                                            rf"that share for training instead$"):
            train_test_split(R, kept)


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_a_dataframe_is_split_by_its_pairs_as_its_matrix_is(library):
    """train_test_split and leave_k_out_split of a DataFrame: the rows of each (user,
    item) pair on one side, the pairs in test those of its matrix's split with the same
    seed, the rows in their order, a pandas frame's index kept."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    from gpu_als.data import from_dataframe

    rng = np.random.default_rng(0)
    users = rng.choice([f"u{i}" for i in range(60)], 900)
    items = rng.integers(0, 40, 900) * 3  # ids that are not positions
    df = pd.DataFrame({"user": users, "item": items, "value": rng.integers(1, 5, 900)},
                      index=np.arange(900) * 2)  # (repeated pairs among them)
    matrix = from_dataframe(df).matrix
    given = frames.DataFrame(df) if library == "polars" else df
    for split, kwargs in ((train_test_split, {"test_fraction": 0.3, "random_state": 5}),
                          (leave_k_out_split, {"K": 2, "random_state": 6})):
        train, test = split(given, **kwargs)
        assert type(train) is type(given) and type(test) is type(given)
        if library == "polars":
            train, test = train.to_pandas(), test.to_pandas()
        else:  # the index kept, the rows in their order
            assert train.index.is_monotonic_increasing and test.index.is_monotonic_increasing
            assert sorted([*train.index, *test.index]) == list(df.index)
        assert len(train) + len(test) == len(df)
        pairs = {(u, i) for u, i in zip(test["user"], test["item"])}
        assert not pairs & {(u, i) for u, i in zip(train["user"], train["item"])}
        _, matrix_test = split(matrix, **kwargs)
        coded = from_dataframe(df)
        entries = matrix_test.tocoo()  # (stored zeros too, as pairs of the frame)
        assert pairs == set(zip(coded.user_ids[entries.row], coded.item_ids[entries.col]))
    assert test.groupby("user")[["item"]].nunique()["item"].eq(2).all()  # K = 2 pairs


def test_a_dataframe_split_names_what_it_cannot_split():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"customer": [1, 1, 2], "sku": [3, 4, 3]})
    with pytest.raises(ValueError, match=r"^columns 'user' and 'item' not found; the "
                                         r"DataFrame has \['customer', 'sku'\] \(did you "
                                         r"mean user_col='customer', item_col='sku'\?\)$"):
        train_test_split(df)
    train, test = leave_k_out_split(df, user_col="customer", item_col="sku", random_state=0)
    assert len(test) == 1 and test["customer"].tolist() == [1]
    with pytest.raises(ValueError, match="user_col and item_col are both 'sku'"):
        train_test_split(df, user_col="sku", item_col="sku")
    with pytest.raises(ValueError, match="the DataFrame has no rows: there is nothing to "
                                         "split"):
        train_test_split(df.iloc[:0], user_col="customer", item_col="sku")


@pytest.mark.parametrize("test_fraction", [0.5, 0.8, 0.95])
def test_a_large_test_fraction_leaves_every_user_an_entry_in_train(test_fraction):
    """Before, round(0.8 * 2) = 2 held out both entries of a user with two, and at 0.95
    every user of up to 10 entries lost all of them to test."""
    R = random_interactions(300, 80, 0.05, seed=2)
    train, test = train_test_split(R, test_fraction=test_fraction)
    n = np.diff(R.indptr)
    expected = np.where(n >= 2, np.clip(np.rint(test_fraction * n), 1, n - 1), 0)
    np.testing.assert_array_equal(np.diff(test.indptr), expected)
    assert (np.diff(train.indptr)[n >= 1] >= 1).all()
    assert ((n == 2) & (expected == 1)).any() and (expected == n - 1).any()
    with pytest.warns(UserWarning, match="no user has 2 or more entries: all of them stay "
                                         "in train and the test set is empty"):
        train, test = train_test_split(sp.eye(5, format="csr"), test_fraction=test_fraction)
    assert test.nnz == 0 and train.nnz == 5


def _latest_by_loop(users, times, test_fraction=None, K=None):
    """The rows :func:`temporal_split` holds out, one user at a time: the user's rows
    sorted by time (ties in row order), the last ``max(1, round(f * n))``, at most
    ``n - 1`` (or the last ``K`` of a user with more than ``K``)."""
    held = np.zeros(len(users), dtype=bool)
    for user in set(users):
        rows = [r for r in range(len(users)) if users[r] == user]
        rows.sort(key=lambda r: (times[r], r))
        n = len(rows)
        if K is not None:
            k = K if n > K else 0
        else:
            k = 0 if n < 2 else min(max(1, int(np.rint(test_fraction * n))), n - 1)
        held[rows[n - k:]] = True
    return held


@pytest.mark.parametrize("library", ["pandas", "polars"])
@pytest.mark.parametrize("held", [{}, {"test_fraction": 0.1}, {"test_fraction": 0.35},
                                  {"test_fraction": 0.9},  # (n - 1 at most)
                                  {"K": 1}, {"K": 7}])
def test_temporal_split_holds_out_each_users_latest_rows(library, held):
    """Each user's latest rows go to test, as a loop over the users picks them, with
    times that tie (the later row counts as later); the parts keep the frame's rows, in
    order, with their index and every column."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    n = 400
    users = rng.choice([f"u{i}" for i in range(40)], n,
                       p=np.r_[0.3, np.full(39, 0.7 / 39)]).astype(object)
    users[5] = "solo"  # one row: kept in train
    times = rng.integers(0, 30, n)  # many ties within a user
    df = pd.DataFrame({"user": users, "item": rng.integers(0, 50, n), "timestamp": times,
                       "row": np.arange(n)}, index=np.arange(n) * 7 + 100)
    if library == "polars":
        df = pytest.importorskip("polars").from_pandas(df)
    train, test = temporal_split(df, "timestamp", **held)
    assert type(train) is type(df) and type(test) is type(df)
    held = _latest_by_loop(users, times, **(held or {"test_fraction": 0.2}))
    assert 0 < held.sum() < n
    np.testing.assert_array_equal(np.asarray(test["row"]), np.flatnonzero(held))
    np.testing.assert_array_equal(np.asarray(train["row"]), np.flatnonzero(~held))
    assert list(train.columns) == list(test.columns) == ["user", "item", "timestamp", "row"]
    if library == "pandas":
        np.testing.assert_array_equal(test.index, df.index[held])
    counts = pd.Series(users).value_counts()
    assert counts["solo"] == 1 and "solo" in set(train["user"]) - set(test["user"])


def test_temporal_split_of_a_user_with_one_time_keeps_the_frames_order():
    """Rows at the same time: the last rows of the frame are the latest."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": ["a"] * 5, "item": [5, 4, 3, 2, 1], "timestamp": [7] * 5})
    train, test = temporal_split(df, test_fraction=0.4)
    assert list(test["item"]) == [2, 1] and list(train["item"]) == [5, 4, 3]


def test_temporal_split_at_a_cutoff():
    """``cutoff``: every row at or after it is in test, for numbers, for datetimes with and
    without a time zone (compared in UTC) and for polars datetimes."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 10 * 86400, 300)
    df = pd.DataFrame({"u": rng.integers(0, 20, 300), "i": rng.integers(0, 30, 300),
                       "t": seconds})
    train, test = temporal_split(df, "t", cutoff=5 * 86400)
    pd.testing.assert_frame_equal(test, df[df["t"] >= 5 * 86400])
    pd.testing.assert_frame_equal(train, df[df["t"] < 5 * 86400])
    dated = df.assign(t=pd.to_datetime(seconds, unit="s"))
    expected = dated["t"] >= pd.Timestamp("1970-01-06")
    for cutoff in ("1970-01-06", np.datetime64("1970-01-06T00:00"),
                   pd.Timestamp("1970-01-06"), pd.Timestamp("1970-01-06").to_pydatetime()):
        pd.testing.assert_frame_equal(temporal_split(dated, "t", cutoff=cutoff)[1],
                                      dated[expected])
    # the same instants in another zone: compared in UTC, with a naive cutoff as UTC
    zoned = dated.assign(t=dated["t"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"))
    for cutoff in ("1970-01-06", pd.Timestamp("1970-01-06 09:00", tz="Asia/Tokyo")):
        pd.testing.assert_frame_equal(temporal_split(zoned, "t", cutoff=cutoff)[1],
                                      zoned[expected.to_numpy()])
    pl = pytest.importorskip("polars")
    train, test = temporal_split(pl.from_pandas(dated), "t",
                                 cutoff=pd.Timestamp("1970-01-06").to_pydatetime())
    np.testing.assert_array_equal(test["i"].to_numpy(), dated["i"][expected].to_numpy())
    assert len(train) + len(test) == len(df)


def test_temporal_split_refuses_what_it_cannot_split():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 3], "timestamp": [5, 6, 7, 8]})
    cases = [
        ({"test_fraction": 0.2, "cutoff": 6}, ValueError, "give one of test_fraction .*, K "
                                                          ".* and cutoff .*, not test_fraction "
                                                          "and cutoff"),
        ({"test_fraction": 0.2, "K": 1}, ValueError, "not test_fraction and K"),
        ({"K": 0}, ValueError, "K=0: must be >= 1"),
        ({"K": 1.5}, TypeError, "K must be an integer"),
        ({"cutoff": 9}, ValueError, r"cutoff=9 leaves the test part empty: column "
                                    r"'timestamp' runs from 5 to 8"),
        ({"cutoff": 5}, ValueError, "cutoff=5 leaves the train part empty"),
        ({"cutoff": "1998-03-01"}, TypeError, "the times are numbers, so give a number"),
        ({"cutoff": True}, TypeError, "the times are numbers"),
        ({"cutoff": float("nan")}, ValueError, "cutoff must be a finite number"),
        # several times: refused as such (an array's repr of many lines was the message)
        ({"cutoff": np.zeros((9, 9))}, TypeError, r"^cutoff must be one time, got ndarray$"),
        ({"cutoff": [6]}, TypeError, r"^cutoff must be one time, got list \[6\]$"),
        ({"cutoff": sp.csr_matrix((2, 2))}, TypeError, "^cutoff must be one time, got "
                                                       "csr_matrix$"),
        ({"time_col": "when"}, ValueError, r"column 'when' not found; the DataFrame has "
                                           r"\['user', 'item', 'timestamp'\]"),
        ({"time_col": "user"}, ValueError, "user_col and time_col are both 'user'"),
        ({"user_col": "who"}, ValueError, "column 'who' not found"),
        ({"time_col": 3}, TypeError, "time_col must be a column name"),
        ({"test_fraction": 1}, ValueError, "test_fraction=1.0: must be < 1"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            temporal_split(df, **kwargs)
    # a frame without rows, as train_test_split says it (NumPy's "zero-size array to
    # reduction operation minimum" with cutoff, "maximum" with K; by default, two empty
    # parts and a warning that no user had two rows)
    for kwargs in ({}, {"K": 1}, {"cutoff": 6}):
        with pytest.raises(ValueError, match=r"^the DataFrame has no rows: there is nothing "
                                             r"to split$"):
            temporal_split(df.head(0), **kwargs)
    with pytest.raises(ValueError, match="column 'who' not found"):  # a column first
        temporal_split(df.head(0), user_col="who")
    with pytest.raises(ValueError, match="column 'timestamp' has 1 missing time, the first at "
                                         "row 1"):
        temporal_split(df.assign(timestamp=[5, None, 7, 8]))
    with pytest.raises(ValueError, match="has 2 missing times"):
        temporal_split(df.assign(timestamp=pd.array([5, None, None, 8], dtype="Int64")))
    pl = pytest.importorskip("polars")  # NaN is not null there: missing all the same
    with pytest.raises(ValueError, match="column 'timestamp' has 1 missing time, the first at "
                                         "row 2"):
        temporal_split(pl.from_pandas(df).with_columns(pl.Series("timestamp",
                                                                 [5.0, 6.0, np.nan, 8.0])))
    with pytest.raises(TypeError, match=r"column 'timestamp' has dtype .*: expected numbers "
                                        r"or datetimes \(e.g. '1998-03-01'\); convert it"):
        temporal_split(df.assign(timestamp=["1998-03-01"] * 4))
    dated = df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="D"))
    with pytest.raises(TypeError, match="cutoff=6 is a number, but the times are datetimes"):
        temporal_split(dated, cutoff=6)
    with pytest.raises(ValueError, match="cutoff='soon' is not a time"):
        temporal_split(dated, cutoff="soon")
    with pytest.raises(TypeError, match=r"^cutoff must be one time, got list \['2024"):
        temporal_split(dated, cutoff=["2024-01-01", "2024-02-01"])
    with pytest.raises(TypeError, match="must be a pandas or polars DataFrame"):
        temporal_split(np.zeros((4, 3)))
    for twice in (["user", "item", "timestamp", "timestamp"], ["user", "user", "item",
                                                               "timestamp"]):
        name = twice[1] if twice[0] == twice[1] else twice[3]
        with pytest.raises(ValueError, match=f"the DataFrame has 2 columns named '{name}'"):
            temporal_split(pd.DataFrame([[1, 2, 3, 4], [1, 3, 4, 5]], columns=twice))
    # nullable integers without a missing one are numbers
    train, test = temporal_split(df.assign(timestamp=pd.array([6, 5, 8, 7], dtype="Int64")))
    assert list(test["item"]) == [1, 1]
    with pytest.warns(UserWarning, match="no user has 2 or more rows: all of them stay in "
                                         "train and the test set is empty"):
        train, test = temporal_split(df.iloc[[0, 2]])
    assert len(train) == 2 and len(test) == 0
    with pytest.warns(UserWarning, match=r"no user has more than K=2 rows \(the most: 2\): "
                                         r"all of them stay in train"):
        train, test = temporal_split(df, K=2)
    assert len(train) == 4 and len(test) == 0


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_metrics_of_a_model_fitted_on_a_dataframe_take_dataframes(library):
    """A model fitted on a DataFrame (ALS or a baseline) is scored on DataFrames of the
    same columns as on the matrices of its ids, a test row of a user or item it lacks left
    out with a warning that counts them; rmse needs the values."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    from gpu_als import from_dataframe

    R = random_interactions(60, 40, 0.2, seed=4).tocoo()
    df = pd.DataFrame({"user": [f"u{r}" for r in R.row], "item": R.col + 1000,
                       "value": np.ceil(R.data * 5)})
    held = np.random.default_rng(0).random(len(df)) < 0.25
    train_df, test_df = df[~held], pd.concat([df[held], pd.DataFrame(
        {"user": ["new"], "item": [1000], "value": [3.0]})])  # a user no model has
    if library == "polars":
        train_df, test_df = frames.from_pandas(train_df), frames.from_pandas(test_df)
    train, users, items = from_dataframe(train_df)
    test, _, _ = from_dataframe(test_df, user_ids=users, item_ids=items, drop_unknown=True)
    unknown = int((~(np.isin(np.asarray(test_df["user"]), users)
                     & np.isin(np.asarray(test_df["item"]), items))).sum())
    assert unknown >= 1  # the new user at least
    for feedback in ("implicit", "explicit"):
        als = ALS(factors=3, iterations=3, feedback=feedback, backend="cpu",
                  show_progress=False, random_state=0).fit(train_df)
        models = [als, PopularityRecommender().fit(train_df), RandomRecommender(1).fit(train_df)]
        for model in models if feedback == "implicit" else models[:1]:
            name = type(model).__name__
            np.testing.assert_array_equal(model.item_ids_, items)

            def anew(model=model):  # the random model draws anew from its seed
                return RandomRecommender(1).fit(train_df) \
                    if isinstance(model, RandomRecommender) else model

            with pytest.warns(UserWarning, match=f"{unknown} of the {len(test_df)} rows of test "
                                                 f"name users or items the {name} lacks: left "
                                                 f"out"):
                by_frame = ranking_metrics(anew(), train_df, test_df, K=5, show_progress=False)
            assert by_frame == ranking_metrics(anew(), train, test, K=5, show_progress=False)
            with pytest.warns(UserWarning, match="rows of test name users or items"):
                assert auc(anew(), train_df, test_df) == pytest.approx(auc(anew(), train, test))
        if feedback == "explicit":
            with pytest.warns(UserWarning, match="rows of test name users or items"):
                assert rmse(als, test_df) == pytest.approx(rmse(als, test))
            with pytest.raises(ValueError, match="test is a DataFrame without a column "
                                                 "'value'"):
                rmse(als, test_df[["user", "item"]])
    half = ALS.from_factors(als.user_factors_, als.item_factors_, user_ids=users,
                            backend="cpu")  # user ids, but items by row
    with pytest.raises(TypeError, match="train is a DataFrame, but the ALS has no ids"):
        ranking_metrics(half, train_df, test_df)


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_a_train_dataframe_without_rows_filters_nothing_as_an_empty_matrix(library):
    """Train is what the rankings leave out: without rows, nothing, as a matrix without
    entries is taken; a test without rows has no user to evaluate. As DataFrames both
    raised "df has no rows: there is nothing to learn from" (found by a sweep of pandas
    against polars)."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    R = random_interactions(30, 20, 0.3, seed=5).tocoo()
    df = pd.DataFrame({"user": R.row + 100, "item": [f"i{c}" for c in R.col]})
    df = df if library == "pandas" else frames.from_pandas(df)
    model = ALS(factors=3, iterations=3, backend="cpu", show_progress=False,
                random_state=0).fit(df)
    nothing = sp.csr_matrix(R.shape, dtype=np.float32)
    test = from_dataframe(df, user_ids=model.user_ids_, item_ids=model.item_ids_).matrix
    by_frame = ranking_metrics(model, df.head(0), df, K=5, show_progress=False)
    assert by_frame == ranking_metrics(model, nothing, test, K=5, show_progress=False)
    assert by_frame["users"] == 30 and by_frame["recall"] > 0
    assert auc(model, df.head(0), df) == pytest.approx(auc(model, nothing, test))
    with pytest.raises(ValueError, match="^test has no stored entries: there is no user to "
                                         "evaluate"):
        ranking_metrics(model, df, df.head(0))


def test_scorable_part_keeps_what_a_model_of_train_can_be_asked_about():
    """Against a loop over the entries: a held-out entry stays where train has its user
    and its item but not the pair; the others are counted, new users or items first."""
    train = random_interactions(50, 40, 0.1, seed=11).tolil()
    train[3, :] = 0
    train[:, 5] = 0
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    some_of_train = train.multiply(np.r_[np.ones(20), np.zeros(20)])  # pairs of both
    held_out = (random_interactions(50, 40, 0.1, seed=12) + some_of_train).tocsr()
    held_out.sum_duplicates()
    kept, new, shared = scorable_part(train, held_out)
    rows, columns = held_out.nonzero()
    users, items = train.getnnz(axis=1) > 0, train.getnnz(axis=0) > 0
    expected = np.zeros(held_out.shape)
    n_new = n_shared = 0
    for r, c in zip(rows, columns):
        if not (users[r] and items[c]):
            n_new += 1
        elif train[r, c] != 0:
            n_shared += 1
        else:
            expected[r, c] = held_out[r, c]
    assert (new, shared) == (n_new, n_shared) and n_new > 0 and n_shared > 0
    np.testing.assert_array_equal(kept.toarray(), expected)
    assert kept.has_canonical_format
    again = scorable_part(train, kept)  # nothing to leave out: as given
    assert again[0] is kept and again[1:] == (0, 0)


@pytest.mark.parametrize("parts, error, match", [
    (lambda R: ("train.csv", R), TypeError,
     r"^train must be a scipy.sparse matrix or array, got str"),
    (lambda R: (R, None), TypeError,
     r"^held_out must be a scipy.sparse matrix or array, got None"),
    (lambda R: (R, R.T), ValueError,
     r"^held_out has shape \(20, 30\) and train \(30, 20\): they must be two parts of one "
     r"matrix$"),
    (lambda R: (R[:10], R), ValueError, r"held_out has shape \(30, 20\) and train \(10, 20\)"),
    (lambda R: (R, R * np.nan), ValueError, r"^held_out holds 120 NaN or infinite value\(s\)"),
], ids=["train-a-file-name", "held_out-None", "transposed", "fewer-users", "nan"])
def test_scorable_part_refuses_what_is_not_two_parts_of_a_matrix(parts, error, match):
    # (an IndexError or AttributeError before)
    with pytest.raises(error, match=match):
        scorable_part(*parts(random_interactions(30, 20, 0.2, seed=1)))


@pytest.mark.slow
def test_temporal_split_on_movielens(movielens):
    """MovieLens 100K's positives, each user's latest 20 % held out: every test row is at
    or after its user's train rows, and ALS ranks them well above popularity (0.124
    against 0.068 when measured; 0.19 against 0.11 for the random split of DESIGN.md
    section 6: what comes next is harder to guess than what was left out)."""
    pd = pytest.importorskip("pandas")
    from gpu_als import from_dataframe

    df = pd.read_csv(movielens.path / "u.data", sep="\t",
                     names=["user", "item", "rating", "timestamp"])
    positives = df[df["rating"] >= 4]
    train_df, test_df = temporal_split(positives, test_fraction=0.2)
    last_train = train_df.groupby("user")["timestamp"].max()
    assert (test_df["timestamp"].to_numpy() >= last_train[test_df["user"]].to_numpy()).all()
    assert len(test_df) == 11079
    train, users, items = from_dataframe(train_df, value_col=None)
    test, _, _ = from_dataframe(test_df, value_col=None, user_ids=users, item_ids=items,
                                drop_unknown=True)
    assert test.nnz == 11079 - 140  # 140 rows of items first rated in the test part
    model = ALS(factors=64, regularization=0.001, alpha=10, iterations=20, random_state=42,
                backend="cpu", show_progress=False).fit(train)
    als = ranking_metrics(model, train, test, K=10, show_progress=False)
    popular = ranking_metrics(PopularityRecommender().fit(train), train, test, K=10,
                              show_progress=False)
    assert als["users"] == 942
    assert als["recall"] > 0.11 and popular["recall"] < 0.08, (als, popular)


@pytest.mark.parametrize("K", [1, 3])
def test_leave_k_out_holds_out_k_of_each_user_with_more(K):
    R = random_interactions(300, 80, 0.05, seed=2)
    train, test = leave_k_out_split(R, K=K, random_state=5)
    assert (train + test != R).nnz == 0 and train.multiply(test).nnz == 0
    n = np.diff(R.indptr)
    np.testing.assert_array_equal(np.diff(test.indptr), np.where(n > K, K, 0))
    assert (n <= K).any() and (n > K).any()  # both kinds of user are in the data
    # uniform: over many seeds every entry of a user lands in test about equally often
    row = int(np.flatnonzero(n == n.max())[0])
    counts = np.zeros(R.shape[1])
    for seed in range(400):
        counts += leave_k_out_split(R[row], K=K, random_state=seed)[1].toarray()[0] != 0
    held = counts[R[row].indices]
    expected = 400 * K / n[row]
    assert np.all(np.abs(held - expected) < 5 * np.sqrt(expected)), (held, expected)
    with pytest.raises(ValueError, match="K"):
        leave_k_out_split(R, K=0)
    for too_many in (n.max(), 500):  # (a user with exactly K entries keeps them all)
        with pytest.warns(UserWarning, match=f"no user has more than K={too_many} entries "
                                             f"\\(the most: {n.max()}\\): all of them "
                                             f"stay in train and the test set is empty"):
            train, test = leave_k_out_split(R, K=int(too_many))
        assert test.nnz == 0 and (train != R).nnz == 0


def test_binarize():
    R = sp.csr_matrix(np.array([[5, 3, 4], [1, 0, 4.5]]))
    np.testing.assert_array_equal(binarize(R, 4).toarray(), [[1, 0, 1], [0, 0, 1]])


@pytest.mark.filterwarnings("ignore:rmse of a model fitted with feedback='implicit'")
def test_float64_values_stay_float64_through_splits_and_metrics():
    """Values that float32 rounds (1 + 1e-12 to 1) or cannot hold (1e45): the splits
    returned float32 (rounded), binarize compared in float32, and the metrics, the
    baselines and held_out_split's check refused train "beyond float32's range ... or use
    dtype=float64" for a model of float64. float32 input stays float32."""
    R = random_interactions(20, 12, 0.4, seed=5, dtype=np.float64)
    R.data[::2] = 1 + 1e-12
    R.data[1::2] = 1e45
    for split in (train_test_split(R, test_fraction=0.3), leave_k_out_split(R)):
        assert all(part.dtype == np.float64 for part in split)
        assert sorted(np.unique(np.concatenate([part.data for part in split]))) == \
            [1 + 1e-12, 1e45]
    assert train_test_split(random_interactions(20, 12, 0.4, seed=5))[0].dtype == np.float32
    assert binarize(R, threshold=1 + 1e-12).nnz == R.nnz
    assert binarize(R, threshold=1 + 3e-12).nnz == R.nnz // 2
    train, test = train_test_split(R, test_fraction=0.3)
    model = ALS(factors=2, iterations=2, dtype=np.float64, backend="cpu",  # (fitted on
                show_progress=False, random_state=0).fit(train > 0)  # 1 and 1e45: singular)
    assert 0 <= ranking_metrics(model, train, test, K=3, show_progress=False)["ndcg"] <= 1
    assert 0 <= auc(model, train, test) <= 1 and np.isfinite(rmse(model, test))
    assert scorable_part(train, test)[0].nnz == test.nnz
    for baseline in (PopularityRecommender(), RandomRecommender(0)):
        assert baseline.fit(train).recommend(0, train[0], N=2)[0].shape == (2,)


def without(test, train):
    """``test`` less the entries that ``train`` has too: random parts made disjoint, as a
    split's are (metrics warn of shared ones)."""
    test = (test - test.multiply(train != 0)).tocsr()
    test.eliminate_zeros()
    return test


class Fixed:
    """Recommends a fixed list per user."""

    def __init__(self, lists):
        self.lists = lists

    def recommend(self, userid, user_items, N, filter_already_liked_items):
        return np.array([self.lists[u][:N] for u in userid]), None


def test_metrics_by_hand():
    train = sp.lil_matrix((3, 6))
    test = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0],  # two relevant
                                   [0, 0, 0, 0, 0, 0],  # no test items: not scored
                                   [0, 0, 0, 0, 0, 1]], np.float32))
    train[0, 5] = 1
    train = train.tocsr()
    lists = {0: [2, 0, 3, 1], 2: [5, 1, 2, 3]}
    m = ranking_metrics(Fixed(lists), train, test, K=4)
    assert m["users"] == 2
    # user 0: hits at ranks 1 and 3; user 2: hit at rank 0
    assert m["precision"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["recall"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    dcg0 = 1 / np.log2(3) + 1 / np.log2(5)
    idcg0 = 1 + 1 / np.log2(3)
    assert m["ndcg"] == pytest.approx((dcg0 / idcg0 + 1.0) / 2)
    # AP: user 0: (1/2)(1/2 + 2/4); user 2: 1
    assert m["map"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1.0) / 2)
    only_2 = sp.csr_matrix(([1.0], ([2], [5])), shape=(3, 6))  # user 2's test item alone
    assert ranking_metrics(Fixed(lists), train, only_2, K=4) == {  # that user's numbers
        "precision": 1 / 4, "recall": 1.0, "ndcg": 1.0, "map": 1.0, "users": 1}
    # K = 1, the first item alone: user 0's misses, user 2's hits
    assert ranking_metrics(Fixed(lists), train, test, K=1) == {
        "precision": 0.5, "recall": 0.5, "ndcg": 0.5, "map": 0.5, "users": 2}


def test_auc_by_hand():
    train = sp.lil_matrix((4, 6))
    train[0, 5] = 1
    train[2, 1] = 1
    train[3, :4] = 1
    test = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 0],
                                   [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], np.float32))

    class Full:
        def recommend(self, userid, user_items, N, filter_already_liked_items):
            rankings = {0: [2, 3, 0, 1, 4, -1], 1: [0, 1, 2, 3, 4, 5],
                        2: [0, 2, 3, 4, 5, -1], 3: [5, 4, -1, -1, -1, -1]}
            return np.array([rankings[u][:N] for u in userid]), None

    # user 0: candidates 0-4, test {0, 2} (5 is in train: no candidate): 2 beats 3,1,4
    # and 0 beats 1,4 -> 5 of 6 pairs
    # user 1: candidates 0-5, test {3}: beats 4, 5 -> 2 of 5 pairs
    # user 2: its one test item is in train: no pair, not counted
    # user 3: every candidate is a test item: no pair, not counted
    with pytest.warns(UserWarning, match=r"^test shares 2 entries with train: those items "
                                         r"are the users' own, no candidates, and are left "
                                         r"out of the AUC") as caught:
        assert auc(Full(), train.tocsr(), test) == pytest.approx((5 / 6 + 2 / 5) / 2)
    assert len(caught) == 1 and caught[0].filename == __file__
    # no user left (users 2 and 3 alone): undefined, not 0, and said so
    only_2_and_3 = test.tolil()
    only_2_and_3[:2] = 0
    with pytest.warns(UserWarning) as caught:
        assert np.isnan(auc(Full(), train.tocsr(), only_2_and_3.tocsr()))
    assert [str(w.message)[:33] for w in caught] == [
        "test shares 1 entry with train: t", "the AUC is undefined (NaN): no us"]
    assert all(w.filename == __file__ for w in caught)


def test_a_train_part_without_entries_ranks_every_item():
    """Users new to a model trained elsewhere (cold start): nothing is filtered, every item
    is a candidate. (An empty train part was refused with 'nothing to learn from'.)"""
    from gpu_als import ALS

    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((9, 3))
    model = ALS.from_factors(X, Y, backend="cpu", dtype=np.float64)
    empty = sp.csr_matrix((6, 9))
    test = random_interactions(6, 9, 0.3, seed=4)
    order = np.argsort(-(X @ Y.T), axis=1, kind="stable")
    recall, pairs_won = [], []
    for u in np.flatnonzero(np.diff(test.indptr)):
        relevant = np.isin(order[u], test[u].indices)
        recall.append(relevant[:3].sum() / relevant.sum())
        # each test item beats the non-test items ranked below it
        below = (~relevant)[::-1].cumsum()[::-1]
        pairs_won.append(below[relevant].sum() / (relevant.sum() * (~relevant).sum()))
    assert ranking_metrics(model, empty, test, K=3)["recall"] == pytest.approx(np.mean(recall))
    assert auc(model, empty, test) == pytest.approx(np.mean(pairs_won))
    popularity = PopularityRecommender().fit(test)
    assert auc(popularity, empty, test) > 0.5  # its own test items are the popular ones


@pytest.mark.parametrize("K", [7, 30, 10**12])  # K beyond the items: a MemoryError before
def test_metrics_against_a_slow_loop(K):
    rng = np.random.default_rng(0)
    train = random_interactions(50, 30, 0.1, seed=1)
    test = random_interactions(50, 30, 0.15, seed=2)
    lists = {u: list(rng.permutation(30)) for u in range(50)}
    shared = train.multiply(test).nnz  # (random parts, not a split: warned of)
    assert shared > 0
    for batch_size in (2048, 7):  # counted over every batch
        with pytest.warns(UserWarning, match=f"^test shares {shared:,} entries with train: "
                                             f"those items are left out of the "
                                             f"recommendations"):
            got = ranking_metrics(Fixed(lists), train, test, K=K, batch_size=batch_size)
    with pytest.warns(UserWarning, match="^test shares") as caught:
        precision_at_k(Fixed(lists), train, test, K=K)  # through ranking_metrics:
    assert caught[0].filename == __file__  # the warning names this line all the same
    rec, nd, pr, ap = [], [], [], []
    for u in range(50):
        relevant = set(test[u].indices)
        if not relevant:
            continue
        top = lists[u][:K]
        hits = [i in relevant for i in top]
        pr.append(sum(hits) / K)
        rec.append(sum(hits) / len(relevant))
        dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
        nd.append(dcg / sum(1 / np.log2(j + 2) for j in range(min(len(relevant), K))))
        ap.append(sum(hits[j] * sum(hits[:j + 1]) / (j + 1) for j in range(len(hits)))
                  / min(len(relevant), K))
    assert got["recall"] == pytest.approx(np.mean(rec))
    assert got["ndcg"] == pytest.approx(np.mean(nd))
    assert got["precision"] == pytest.approx(np.mean(pr))
    assert got["map"] == pytest.approx(np.mean(ap))


def test_metrics_at_several_k_are_those_of_a_call_at_each(backend, monkeypatch):
    """K=[...]: each K once, in the order given, its metrics those of a call at that K
    (ALS's, and the popularity baseline's, whose ties are broken by item id), from one
    ranking of the largest K: a recommend per batch of users, not per K."""
    train = random_interactions(80, 40, 0.15, seed=3)
    test = without(random_interactions(80, 40, 0.05, seed=4), train)
    model = ALS(factors=4, iterations=3, backend=backend, random_state=0,
                show_progress=False).fit(train)
    popular = PopularityRecommender().fit(train)
    for recommender in (model, popular):
        at = ranking_metrics(recommender, train, test, K=[10, 1, 3, 10, 100],
                             batch_size=32)
        assert list(at) == [10, 1, 3, 100]
        for K, metrics in at.items():
            assert metrics == ranking_metrics(recommender, train, test, K=K, batch_size=32)
    assert at[1]["recall"] < at[3]["recall"] < at[10]["recall"] < at[100]["recall"]
    asked = []
    recommend = popular.recommend
    monkeypatch.setattr(popular, "recommend", lambda *a, N, **k: (
        asked.append(N), recommend(*a, N=N, **k))[1])
    ranking_metrics(popular, train, test, K=(5, 20, 2), batch_size=32)
    n_batches = -(-int((np.diff(test.indptr) > 0).sum()) // 32)
    assert n_batches > 1 and asked == [20] * n_batches  # each batch of users ranked once
    assert list(ranking_metrics(popular, train, test, K=np.arange(1, 3))) == [1, 2]
    for K, error in (([], r"K is empty: give a cut-off, or several \(K=\[5, 10, 20\]\)"),
                     ([5, 0], "K=0: must be >= 1"), ((5, "7"), "K must be an integer, got "
                                                            "str '7'")):
        with pytest.raises(ValueError if "must be an integer" not in error else TypeError,
                           match=error):
            ranking_metrics(popular, train, test, K=K)
    # the functions of one metric take one K, and say which function takes several
    three = ranking_metrics(popular, train, test, K=3)
    for metric, key in ((precision_at_k, "precision"), (recall_at_k, "recall"),
                        (ndcg_at_k, "ndcg"), (map_at_k, "map")):
        with pytest.raises(TypeError, match=r"K must be an integer, got list \[5, 10\]: for "
                                            r"several cut-offs, ranking_metrics\(\.\.\., "
                                            r"K=\[5, 10\]\) scores them all"):
            metric(popular, train, test, K=[5, 10])
        assert metric(popular, train, test, K=3) == three[key]
    # no such hint where K holds no cut-offs (it gave "K=['a']" of a dict)
    for K, got in (({"a": 1}, r"dict \{'a': 1\}"), ([], r"list \[\]"), (train, "csr_matrix"),
                   (np.array([[5]]), r"ndarray array\(\[\[5\]\]\)")):
        with pytest.raises(TypeError, match=rf"^K must be an integer, got {got}$"):
            precision_at_k(popular, train, test, K=K)


def test_validation_score_and_auc_name_what_is_wrong():
    """validation_score's errors name its validation set (they said "test"), and auc
    refuses a model without recommend before reading train and test by its ids (it said
    "test is a DataFrame, but the csr_matrix has no ids")."""
    pd = pytest.importorskip("pandas")
    R = random_interactions(30, 20, 0.2, seed=1)
    popular = PopularityRecommender().fit(R)
    explicit = ALS(factors=2, iterations=1, feedback="explicit", backend="cpu",
                   show_progress=False).fit(R)
    for model, train, validation, metric, match in (
            (popular, R, R.T, "recall", r"^validation has shape \(20, 30\) and train "
                                        r"\(30, 20\): they must have the same users"),
            (popular, R, sp.csr_matrix(R.shape), "ndcg", r"^validation has no stored entries"),
            (explicit, None, R.T, "rmse", r"^validation has shape \(20, 30\), but the ALS was "
                                          r"fitted on 30 users x 20 items: evaluate it on the "
                                          r"validation part"),
            (explicit, None, "v.csv", "rmse", r"^validation must be a scipy.sparse matrix")):
        with pytest.raises((ValueError, TypeError), match=match):
            validation_score(model, train, validation, metric)
    with pytest.warns(UserWarning, match=r"not the ratings in validation"):
        validation_score(ALS.from_factors(explicit.user_factors_, explicit.item_factors_,
                                          backend="cpu"), None, R, "rmse")
    frame = pd.DataFrame({"user": [0, 1], "item": [2, 3]})
    with pytest.raises(TypeError, match=r"^model must have a recommend method \(a fitted "
                                        r"ALS, or a baseline of this module\), got csr_matrix"):
        auc(R, frame, frame)


def test_metric_functions_and_auc_on_a_model():
    from gpu_als import ALS

    train = random_interactions(80, 40, 0.15, seed=3)
    test = random_interactions(80, 40, 0.05, seed=4)
    test = without(test, train)
    model = ALS(factors=4, iterations=3, backend="cpu", random_state=0,
                show_progress=False).fit(train)
    m = ranking_metrics(model, train, test, K=5)
    assert precision_at_k(model, train, test, 5) == m["precision"]
    assert recall_at_k(model, train, test, 5) == m["recall"]
    assert ndcg_at_k(model, train, test, 5) == m["ndcg"]
    assert map_at_k(model, train, test, 5) == m["map"]
    # AUC by brute force over every (test item, other candidate) pair
    X, Y = model.user_factors_, model.item_factors_
    per_user = []
    for u in range(80):
        positives = set(test[u].indices)
        if not positives:
            continue
        scores = Y @ X[u]
        candidates = [i for i in range(40) if i not in set(train[u].indices)]
        negatives = [i for i in candidates if i not in positives]
        won = sum(scores[p] > scores[n] for p in positives for n in negatives)
        per_user.append(won / (len(positives) * len(negatives)))
    assert auc(model, train, test) == pytest.approx(np.mean(per_user))


def test_metrics_count_the_test_users_on_a_progress_bar(monkeypatch):
    """A progress bar over the test users (shown on a terminal) unless show_progress is
    False; every batch size gives the same metrics, and a batch size below 1 is refused."""
    from gpu_als import evaluation

    progress = ProgressBars()
    bars = progress.bars
    monkeypatch.setattr(evaluation, "tqdm", progress)
    train = random_interactions(50, 30, 0.2, seed=1)
    test = without(random_interactions(50, 30, 0.05, seed=2), train)
    model = PopularityRecommender().fit(train)
    users = int((np.diff(test.indptr) > 0).sum())
    whole = ranking_metrics(model, train, test, K=5)
    assert (bars[-1].total, bars[-1].counted, bars[-1].disable) == (users, users, None)
    assert ranking_metrics(model, train, test, K=5, batch_size=7) == pytest.approx(whole)
    assert bars[-1].counted == users
    recall_at_k(model, train, test, 5, show_progress=False)
    auc(model, train, test, show_progress=False)
    assert [bar.disable for bar in bars[-2:]] == [True, True]
    for bad in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            ranking_metrics(model, train, test, batch_size=bad)


def test_bad_arguments_of_the_evaluation_functions_are_named():
    train = random_interactions(20, 10, 0.3, seed=1)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        binarize(train, threshold="4")
    with pytest.raises(ValueError, match="threshold=nan: must be finite"):
        binarize(train, threshold=float("nan"))
    with pytest.raises(TypeError, match="model must have a recommend method.*got object"):
        ranking_metrics(object(), train, train)
    fitted = PopularityRecommender().fit(train)
    for metric in (ranking_metrics, auc):  # "no" would be true: a bar after all
        with pytest.raises(TypeError, match="show_progress must be True or False, got str"):
            metric(fitted, train, train, show_progress="no")
    with pytest.raises(ValueError, match=r"must be 2-D \(users x N\), got shape \(3,\)"):
        personalization(np.array([0, 1, 2]), 5)
    with pytest.raises(ValueError, match=r"holds item 9, but there are n_items=5"):
        personalization(np.array([[0, 9]]), 5)
    with pytest.raises(ValueError, match=r"holds item 5, .* \(ids 0\.\.4\)"):
        personalization(np.array([[0, 5]]), 5)
    fitted = PopularityRecommender().fit(train)
    for not_a_matrix in ("train.csv", [[0, 1]], np.zeros((2, 2, 2))):
        with pytest.raises(TypeError, match="train must be a scipy.sparse matrix"):
            ranking_metrics(fitted, not_a_matrix, train)
    with pytest.raises(TypeError, match="integer item ids"):
        personalization(np.array([[0.0, 1.0]]), 5)
    with pytest.raises(ValueError, match="no recommendations"):
        personalization(np.empty((3, 0), np.int64), 5)
    # a model, as the other metrics take one (before: "n_items must be an integer")
    with pytest.raises(TypeError, match=r"personalization takes the recommended item ids, "
                                        r"not a model \(PopularityRecommender\): pass "
                                        r"model.recommend\(users, user_items\[users\], "
                                        r"N=10\)\[0\] and the number of items"):
        personalization(fitted, train)


@pytest.mark.parametrize("seed, error, says", [
    (-1, ValueError, r"random_state=-1: must be >= 0"),  # NumPy: "expected non-negative"
    (1.5, TypeError, r"random_state must be None, an int or a numpy.random.Generator, got "
                     r"float 1.5"),  # NumPy: "SeedSequence expects int or sequence of ints"
    (True, TypeError, r"got bool True"),  # NumPy: seeded with 1
])
def test_every_seed_is_checked_as_the_models_is(seed, error, says):
    from gpu_als.datasets import make_power_law
    from gpu_als.tune import search_space

    train = random_interactions(20, 10, 0.3, seed=1)
    model = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(train)
    for draw in (lambda: train_test_split(train, random_state=seed),
                 lambda: leave_k_out_split(train, random_state=seed),
                 lambda: RandomRecommender(random_state=seed),
                 lambda: EarlyStopping(model, train, train, max_users=2, random_state=seed),
                 lambda: EarlyStopping(model, train, train, random_state=seed),
                 lambda: make_power_law(20, 10, 40, random_state=seed, device="cpu"),
                 lambda: search_space({"factors": [2, 4]}, n_samples=1, random_state=seed)):
        with pytest.raises(error, match=says):
            draw()


def test_auc_batches_hold_a_bounded_number_of_scores(monkeypatch):
    """Users x items per batch stay under AUC_BLOCK_SCORES (a batch of 512 users of a
    million items would hold 2 GB of scores); the AUC does not change."""
    from gpu_als import evaluation

    train = random_interactions(40, 30, 0.2, seed=1)
    test = without(random_interactions(40, 30, 0.1, seed=2), train)
    model = PopularityRecommender().fit(train)
    asked = []

    class Recording:  # placed through recommend: one call per batch
        def recommend(self, userid, user_items=None, N=10, **kwargs):
            asked.append(len(userid))
            return model.recommend(userid, user_items, N, **kwargs)

    whole = auc(Recording(), train, test)
    assert max(asked) > 3
    monkeypatch.setattr(evaluation, "AUC_BLOCK_SCORES", 3 * 30 + 29)
    asked.clear()
    assert auc(Recording(), train, test) == pytest.approx(whole, abs=1e-12)
    assert max(asked) == 3
    monkeypatch.setattr(evaluation, "AUC_BLOCK_SCORES", 10)  # fewer than one user's
    asked.clear()
    assert auc(Recording(), train, test) == pytest.approx(whole, abs=1e-12)
    assert set(asked) == {1}
    for batch_size in (1, 2):
        assert auc(model, train, test, batch_size=batch_size) == pytest.approx(whole,
                                                                               abs=1e-12)
    with pytest.raises(TypeError, match="train must be a scipy.sparse matrix"):
        auc(Recording(), "train.csv", test)
    with pytest.raises(ValueError, match=r"train is empty: shape \(40, 0\)"):
        auc(Recording(), sp.csr_matrix((40, 0)), sp.csr_matrix((40, 0)))


@pytest.mark.parametrize("compare_limit", [0, 4, 10**6])  # sorted rows, both, comparisons
@pytest.mark.parametrize("kind", ["als", "als on the emulated GPU", "popularity",
                                  pytest.param("als on the GPU", marks=needs_gpu)])
def test_auc_from_scores_equals_auc_from_rankings(kind, compare_limit, monkeypatch):
    """This module's models are placed from their scores (comparisons, or the sorted row
    for users with many test items; a GPU model's on the GPU, with CuPy's sort and the
    binary search of _sorted_position); any other model through a full recommend: the
    same AUC, with ties (cold items' zero factors, equal counts)."""
    from gpu_als import ALS, evaluation

    from .conftest import emulated_backend

    monkeypatch.setattr(evaluation, "COMPARE_LIMIT", compare_limit)

    train = random_interactions(120, 60, 0.12, seed=5).tolil()
    train[:, 50:] = 0  # cold items: zero factors, all tied
    train = train.tocsr()
    train.eliminate_zeros()
    test = random_interactions(120, 60, 0.08, seed=6)
    test = without(test, train)

    def make():
        if kind.startswith("als"):
            backend = {"als": "cpu", "als on the GPU": "gpu"}.get(kind) or emulated_backend()
            return ALS(factors=4, iterations=2, backend=backend, random_state=0,
                       show_progress=False).fit(train)
        return PopularityRecommender().fit(train)

    class RankingsOnly:  # a model known only by its recommend (factors of its own, as
        def __init__(self, model):  # implicit's models have, are not this module's)
            self.recommend = model.recommend
            self.user_factors_ = np.zeros((3, 2))

    for batch_size in (512, 7):
        fast = auc(make(), train, test, batch_size=batch_size)
        assert fast == pytest.approx(auc(RankingsOnly(make()), train, test,
                                         batch_size=batch_size), abs=1e-12)
    assert 0.3 < fast < 1.0
    some_train = train.copy()
    some_train.data[some_train.indices >= 20] = 0
    overlapping = (test + some_train).tocsr()  # test items in train are no candidates
    shared = overlapping.astype(bool).multiply(train.astype(bool)).nnz
    assert shared > 0
    for model in (make(), RankingsOnly(make())):
        with pytest.warns(UserWarning, match=f"^test shares {shared:,} entries with train: "):
            assert auc(model, train, overlapping) == pytest.approx(fast, abs=1e-12)
    if kind == "als":  # batches on 1 or 4 threads at once: the same sums in the same order
        model = make()
        for threads in (1, 4):
            model._backend.num_threads = threads
            assert auc(model, train, test, batch_size=7) == fast
    if kind.startswith("als on the"):  # the scores stay on the GPU: only counts come
        model, copied = make(), []     # back, one number per test entry or fewer
        to_numpy = model._backend.to_numpy
        monkeypatch.setattr(model._backend, "to_numpy",
                            lambda a: copied.append(a.size) or to_numpy(a))
        assert auc(model, train, test) == pytest.approx(fast, abs=1e-12)  # one batch
        assert copied and max(copied) <= test.nnz < test.shape[0] * test.shape[1]
        # the counts wait for the device once per batch, not once per user or test item
        # the scores of the test entries, two counts of each, and the ties' counts (here
        # among the cold items) of the entries tied
        assert len(copied) == 4 and copied[2] < test.nnz
        # blocks of 5 users' scores, and of 5 tied entries' rows
        monkeypatch.setattr(evaluation, "AUC_BLOCK_SCORES", 5 * train.shape[1])
        assert auc(make(), train, test) == pytest.approx(fast, abs=1e-12)


def test_sorted_position_is_searchsorted_of_each_rows_candidates():
    """_sorted_position: every entry's searchsorted in its row's first ``end`` values (the
    candidates, NaN after them), both sides, values tied with some or none, ends from 0 to
    the whole row."""
    from gpu_als.evaluation import _sorted_position

    rng = np.random.default_rng(0)
    for n_items in (1, 2, 7, 64, 100):
        ends = rng.integers(0, n_items + 1, 30)
        ordered = np.full((30, n_items), np.nan)
        for row, end in enumerate(ends):
            ordered[row, :end] = np.sort(rng.integers(0, 5, end).astype(float))
        rows = rng.integers(0, 30, 200)
        values = rng.integers(-1, 7, 200).astype(float)
        for right in (True, False):
            got = _sorted_position(np, ordered, rows, ends[rows], values, right)
            want = [np.searchsorted(ordered[r, :ends[r]], v, "right" if right else "left")
                    for r, v in zip(rows, values)]
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compare_limit", [0, 10**6])  # sorted rows, comparisons
def test_auc_breaks_a_single_tie_by_the_item_id(compare_limit, monkeypatch):
    """Two items of the same factors: each test entry of one ties with exactly one other
    candidate, and the lower id ranks first, as in a full recommend."""
    from gpu_als import evaluation

    monkeypatch.setattr(evaluation, "COMPARE_LIMIT", compare_limit)
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((12, 3))
    Y[7] = Y[3]
    model = ALS.from_factors(rng.standard_normal((30, 3)), Y, backend="cpu")
    train = random_interactions(30, 12, 0.2, seed=1).tolil()
    train[:, [3, 7]] = 0
    train = train.tocsr()
    train.eliminate_zeros()
    test = sp.lil_matrix((30, 12))
    test[:, 7] = 1  # each user's test items: 7, and 3 for the even users
    test[::2, 3] = 1
    test = without(sp.csr_matrix(test) + random_interactions(30, 12, 0.1, seed=2), train)

    class RankingsOnly:  # placed by a full recommend, which breaks ties by id
        recommend = model.recommend
        user_factors_ = np.zeros((3, 2))

    assert auc(model, train, test) == pytest.approx(auc(RankingsOnly(), train, test),
                                                    abs=1e-12)


@pytest.mark.parametrize("size, count, excluded", [
    (5, 2, ()),      # drawn with replacement, repeats skipped
    (9, 2, (3, 7)),  # ... and excluded values skipped
    (4, 3, ()),      # most values taken: a shuffle instead
    (6, 2, (0, 1)),
])
def test_random_distinct_draws_every_ordered_choice_equally_often(size, count, excluded):
    from scipy.stats import chisquare

    from gpu_als.evaluation import _random_distinct

    class Shuffles:  # counts the rows that fall back to a shuffle
        def __init__(self):
            self.rng, self.shuffled = np.random.default_rng(1), 0

        def integers(self, *args, **kwargs):
            return self.rng.integers(*args, **kwargs)

        def permutation(self, values):
            self.shuffled += 1
            return self.rng.permutation(values)

    n_rows = 24_000
    keys = np.array([r * size + v for r in range(n_rows) for v in excluded], np.int64)
    rng = Shuffles()
    drawn = _random_distinct(rng, np.full(n_rows, size), np.full(n_rows, count),
                             keys if len(keys) else None, np.full(n_rows, len(excluded)))
    dense = 2 * (count + len(excluded)) > size
    assert rng.shuffled == (n_rows if dense else 0), "sparse rows are drawn, not shuffled"
    assert drawn.shape == (n_rows * count,)
    drawn = drawn.reshape(n_rows, count)
    assert not np.isin(drawn, excluded).any()
    assert all(len(set(row)) == count for row in drawn[:500])
    left = [v for v in range(size) if v not in excluded]
    cells = {choice: i for i, choice in enumerate(itertools.permutations(left, count))}
    observed = np.bincount([cells[tuple(row)] for row in drawn], minlength=len(cells))
    assert chisquare(observed).pvalue > 1e-4


def test_random_distinct_keeps_each_row_to_its_own_values():
    """Rows of different sizes, counts and exclusions, drawn together: each row gets its
    own count of distinct values of its own range, none excluded, whether drawn or
    shuffled (a value landing in another row's place would show here: the rows' ranges
    differ, and the last row's is the smallest)."""
    from gpu_als.evaluation import _random_distinct

    rng = np.random.default_rng(7)
    n_rows = 400
    sizes = rng.integers(40, 5_000, n_rows)
    sizes[-1] = 30  # the last row: the smallest range, drawn (2 * (10 + 0) <= 30)
    counts = np.minimum(rng.integers(0, 25, n_rows), sizes // 3)
    counts[0], counts[-1] = 20, 10
    excluded = [np.sort(rng.choice(s, rng.integers(0, 5), replace=False)) for s in sizes]
    excluded[-1] = np.empty(0, np.int64)
    n_excluded = np.array([len(e) for e in excluded])
    dense = np.flatnonzero(2 * (counts + n_excluded) > sizes)
    width = int(sizes.max())
    keys = np.concatenate([r * width + e for r, e in enumerate(excluded)]).astype(np.int64)
    drawn = _random_distinct(np.random.default_rng(0), sizes, counts, keys, n_excluded)
    assert drawn.shape == (counts.sum(),)
    starts = np.cumsum(counts) - counts
    for r in range(n_rows):
        row = drawn[starts[r]:starts[r] + counts[r]]
        assert len(set(row.tolist())) == counts[r], r
        assert ((row >= 0) & (row < sizes[r])).all(), (r, sizes[r], row)
        assert not np.isin(row, excluded[r]).any(), r
    assert len(dense) < n_rows // 4, "most rows are drawn, not shuffled"


def test_random_recommendations_and_their_auc(monkeypatch):
    """Random lists: distinct candidates, the user's items never, as many as there are;
    the AUC places a user's test items at random among its candidates (0.5 on average),
    counted as the rankings would count them."""
    from gpu_als import evaluation

    train = random_interactions(300, 40, 0.3, seed=3)
    test = random_interactions(300, 40, 0.1, seed=4)
    test = without(test, train)
    model = RandomRecommender(5).fit(train)
    ids, scores = model.recommend(np.arange(300), train, N=30)
    for u in range(300):
        mine = set(train[u].indices)
        got = [i for i in ids[u] if i >= 0]
        assert len(got) == len(set(got)) == min(30, 40 - len(mine))
        assert not mine & set(got) and (ids[u, len(got):] == -1).all()
        np.testing.assert_array_equal(scores[u, :len(got)], 30 - np.arange(len(got)))
    values = [auc(RandomRecommender(seed).fit(train), train, test, show_progress=False)
              for seed in range(20)]
    assert abs(np.mean(values) - 0.5) < 0.01 and np.std(values) > 0.001
    # test items also in train are left out: with the same test users, the same draws
    tested = sp.diags((np.diff(test.indptr) > 0).astype(np.float32))
    overlapping = (test + tested @ train).tocsr()
    assert overlapping.nnz > test.nnz
    shared = overlapping.nnz - test.nnz
    with pytest.warns(UserWarning, match=f"^test shares {shared:,} entries with train: "):
        assert auc(RandomRecommender(0).fit(train), train, overlapping,
                   show_progress=False) == values[0]
    # the places drawn become the AUC: test items first gives 1, last gives 0, right after
    # one other candidate (n - t - 1) / (n - t), n the user's candidates and t its tests
    n = 40 - np.diff(train.indptr)
    t = np.diff(test.indptr)
    tested_users = t > 0
    after_one = np.mean(((n - t - 1) / (n - t))[tested_users])
    draw = evaluation._random_distinct
    for first, expected in ((0, 1.0), (None, 0.0), (1, after_one)):
        def fake(rng, sizes, counts, *args, first=first):
            places = draw(rng, sizes, counts)
            assert places.shape == (counts.sum(),)
            return np.concatenate([first + np.arange(t) if first is not None
                                   else n - 1 - np.arange(t) for n, t in zip(sizes, counts)])
        monkeypatch.setattr(evaluation, "_random_distinct", fake)
        assert auc(model, train, test, show_progress=False) == pytest.approx(expected)


def test_popularity_and_random_baselines():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]], np.float32))
    pop = PopularityRecommender().fit(train)
    ids, scores = pop.recommend([0, 2], train[[0, 2]], N=2)
    np.testing.assert_array_equal(ids, [[2, 3], [1, 2]])  # counts 3,1,1,0; ties by id
    ids, _ = RandomRecommender(0).fit(train).recommend(2, train[2], N=3)
    assert sorted(ids) == [1, 2, 3]
    for model in (pop, RandomRecommender(0).fit(train)):  # N above the items: all of them
        ids, scores = model.recommend([0], train[[0]], N=10)
        assert ids.shape == scores.shape == (1, 4) and sorted(ids[0]) == [-1, -1, 2, 3]


@pytest.mark.parametrize("seed", range(6))
def test_popularity_lists_are_the_global_order_less_the_users_items(seed):
    """A slow loop as reference: the most popular items the user has not got, ties to the
    lower id (also at the N-th place, with many tied counts), -1 padding when too few."""
    rng = np.random.default_rng(seed)
    train = random_interactions(int(rng.integers(5, 60)), int(rng.integers(3, 300)),
                                float(rng.uniform(0.02, 0.6)), seed=seed)
    pop = PopularityRecommender().fit(train)
    counts = np.bincount(train.indices, minlength=train.shape[1])
    order = sorted(range(train.shape[1]), key=lambda i: (-counts[i], i))
    users = np.arange(train.shape[0])
    unliked = [[i for i in order if i not in set(train.indices[train.indptr[u]:
                                                               train.indptr[u + 1]])]
               for u in users]
    for N in (1, 3, 10, train.shape[1]):
        ids, scores = pop.recommend(users, train, N=N)
        for u in users:
            want = unliked[u][:N] + [-1] * (min(N, train.shape[1]) - len(unliked[u][:N]))
            np.testing.assert_array_equal(ids[u], want)
            np.testing.assert_array_equal(scores[u], [counts[i] if i >= 0 else -np.inf
                                                      for i in want])
    ids, _ = pop.recommend(0, None, N=3, filter_already_liked_items=False)
    np.testing.assert_array_equal(ids, order[:3])


def test_popularity_lists_of_users_whose_own_item_is_the_last_place():
    """A user whose only item is the least popular one: its g = n_items - 1, the largest
    a key can hold before it would reach the next user's (whose list must not change)."""
    train = sp.csr_matrix(np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], np.float32))
    pop = PopularityRecommender().fit(train)  # order 0, 1, 2
    liked = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 0], [0, 0, 1]], np.float32))
    ids, _ = pop.recommend([0, 1, 2], liked, N=3)
    np.testing.assert_array_equal(ids, [[0, 1, -1], [0, 1, 2], [0, 1, -1]])


def test_random_auc_takes_no_memory_for_a_heavy_test_user():
    """One user with 20,000 test items in a batch of 512: the places are drawn in
    proportion to each user's tests, not as a users x (2 x 20,000) tile of draws (which
    took 900 MB and 4 s here); the AUC stays 0.5 on average."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n_users, n_items = 512, 100_000
    heavy = rng.choice(n_items, 20_000, replace=False)
    users = np.concatenate([np.zeros(20_000, int), np.arange(1, n_users)])
    tested = sp.csr_matrix((np.ones(len(users), np.float32),
                            (users, np.concatenate([heavy, rng.integers(0, n_items,
                                                                        n_users - 1)]))),
                           shape=(n_users, n_items))
    train = sp.csr_matrix((np.ones(n_users, np.float32), (np.arange(n_users),
                                                          np.full(n_users, n_items - 1))),
                          shape=(n_users, n_items))
    tested = (tested - tested.multiply(train)).tocsr()
    tested.eliminate_zeros()
    model = RandomRecommender(0).fit(train)
    tracemalloc.start()
    try:
        value = auc(model, train, tested, show_progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6
    assert value == pytest.approx(0.5, abs=0.02)


def test_popularity_lists_take_no_memory_for_a_heavy_user():
    """One user with 60,000 of 100,000 items in a batch of 2,049: the lists come from a
    binary search over the users' own items, not from a users x (N + 60,000) tile (which
    took 3 GB and 5 s here)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n_items = 100_000
    heavy = np.sort(rng.choice(n_items, 60_000, replace=False))
    users = np.concatenate([np.zeros(60_000, int), rng.integers(1, 2049, 200_000)])
    items = np.concatenate([heavy, rng.integers(0, n_items, 200_000)])
    train = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)),
                          shape=(2049, n_items))
    train.data[:] = 1
    pop = PopularityRecommender().fit(train)
    tracemalloc.start()
    try:
        ids, _ = pop.recommend(np.arange(train.shape[0]), train, N=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60e6
    liked = set(heavy)
    np.testing.assert_array_equal(ids[0], [i for i in pop.order_[:60_010]
                                           if i not in liked][:10])


def test_personalization():
    same = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    assert personalization(same, 10) == {"personalization": 0.0, "coverage": 0.3}
    apart = np.array([[0, 1, 2], [3, 4, 5]])
    assert personalization(apart, 6)["personalization"] == 1.0
    half = np.array([[0, 1], [0, 2]])  # one shared item of two
    assert personalization(half, 3)["personalization"] == pytest.approx(0.5)
    # one item: every list is that item
    assert personalization(np.zeros((2, 1), int), 1) == {"personalization": 0.0,
                                                         "coverage": 1.0}
    with pytest.warns(UserWarning, match=r"^the personalization of one user's list is "
                                         r"undefined \(NaN\): it compares the lists of pairs "
                                         r"of users$"):  # (a NaN said nothing of why)
        assert np.isnan(personalization(np.array([[0, 1]]), 3)["personalization"])  # no pair
    with pytest.raises(ValueError, match=r"^recommended_ids holds item -5: item ids are "
                                         r"0..2, and -1 pads a list of fewer items$"):
        personalization(np.array([[0, -5], [1, 2]]), 3)  # (taken as padding before)
    with pytest.raises(ValueError, match=r"^recommended_ids holds item 3, but there are "
                                         r"n_items=3 \(ids 0..2\)$"):
        personalization(np.array([[0, 3], [1, 2]]), 3)
    # against every pair by hand, with -1 padding
    ids = np.random.default_rng(0).integers(-1, 12, (30, 5))
    lists = [set(row[row >= 0]) for row in ids]
    ids = np.array([sorted(li) + [-1] * (5 - len(li)) for li in lists])  # distinct items
    overlaps = [len(a & b) / 5 for i, a in enumerate(lists) for j, b in enumerate(lists)
                if i != j]
    got = personalization(ids, 12)
    assert got["personalization"] == pytest.approx(1 - np.mean(overlaps))
    assert got["coverage"] == len(set().union(*lists)) / 12
    # 300,000 users: linear in the lists (the users x users overlap matrix was 720 GB)
    many = np.random.default_rng(1).integers(0, 50_000, (300_000, 10))
    assert 0.99 < personalization(many, 50_000)["personalization"] <= 1.0
    # and in the items recommended, not in n_items (MemoryError: 7.28 TiB before)
    assert personalization(half, 10**12) == {"personalization": 0.5, "coverage": 3e-12}
    assert personalization(np.full((2, 3), -1), 4) == {"personalization": 1.0,
                                                       "coverage": 0.0}  # nothing shared
    # an item repeated in a list counts once, as in |A & B| of sets: both lists are {0, 1}
    # (the repeats counted as 2 x 1 + 1 x 2 = 4 shared items of 3 before: -0.33)
    repeated = personalization(np.array([[0, 0, 1], [1, 0, 1]]), 5)
    assert repeated["personalization"] == pytest.approx(1 - 2 / 3)
    # lists of several lengths (NumPy's "inhomogeneous shape" before)
    with pytest.raises(ValueError, match=r"^recommended_ids must be 2-D \(users x N\), a "
                                         r"list per user of one length: pad shorter lists "
                                         r"with -1$"):
        personalization([[1, 2], [3]], 5)


def test_evaluating_on_matrices_that_do_not_match_the_model_is_refused():
    from gpu_als import ALS

    train = random_interactions(30, 20, 0.2, seed=1)
    test = without(random_interactions(30, 20, 0.1, seed=2), train)
    model = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(train[:10])
    popularity = PopularityRecommender().fit(train[:, :15])
    for metric in (ranking_metrics, auc):
        with pytest.raises(ValueError, match=r"train has shape \(30, 20\), but the ALS was "
                                             r"fitted on 10 users x 20 items"):
            metric(model, train, test)
        with pytest.raises(ValueError, match=r"train has shape \(30, 20\), but the "
                                             r"PopularityRecommender was fitted on 30 users x "
                                             r"15 items"):
            metric(popularity, train, test)
        with pytest.raises(ValueError, match=r"test has shape \(30, 19\) and train \(30, 20\)"):
            metric(PopularityRecommender().fit(train), train, test[:, :19])
        with pytest.raises(ValueError, match="test has no stored entries: there is no user"):
            metric(PopularityRecommender().fit(train), train, sp.csr_matrix(train.shape))
    pd = pytest.importorskip("pandas")
    coo = train.tocoo()  # its (user, item, value) rows: a shape that is not users x items
    rows = pd.DataFrame({"user": coo.row, "item": coo.col, "value": coo.data})
    for metric in (ranking_metrics, auc):  # (a model fitted on a matrix has no ids)
        with pytest.raises(TypeError, match=r"train is a DataFrame, but the ALS has no ids to "
                                            r"find its rows by: fit the model on a DataFrame "
                                            r".*gpu_als.from_dataframe\(train\).matrix"):
            metric(model, rows, test)
    with pytest.raises(ValueError, match="test_fraction=1.0: must be < 1"):
        train_test_split(train, test_fraction=1.0)
    for unfitted in (PopularityRecommender(), RandomRecommender()):  # as an ALS's error
        with pytest.raises(NotFittedError, match=rf"^this {type(unfitted).__name__} is not "
                                                 rf"fitted yet: call fit first$"):
            unfitted.recommend(0, train[0])
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            ranking_metrics(unfitted, train, test)
        for metric in (ranking_metrics, auc):  # also of DataFrames, whose ids need a fit
            with pytest.raises(NotFittedError, match=rf"^this {type(unfitted).__name__} is "
                                                     rf"not fitted yet: call fit first$"):
                metric(unfitted, rows, rows)
    with pytest.raises(ValueError, match="user_items is required with "
                                         "filter_already_liked_items=True"):
        popularity.recommend(0)
    # a model that has more users than train (added by partial_fit_users) is fine
    more = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(train)
    more.partial_fit_users([35], train[[0]])
    assert ranking_metrics(more, train, test, show_progress=False)["users"] > 0


def test_a_model_on_any_backend_is_evaluated_as_its_cpu_copy(backend):
    """ranking_metrics and auc of a model on the GPU backend (its scores computed there and
    copied to the host batch by batch) equal those of the same factors on the CPU."""
    from gpu_als import ALS

    train = random_interactions(90, 50, 0.15, seed=8)
    test = random_interactions(90, 50, 0.08, seed=9)
    test = without(test, train)
    model = ALS(factors=6, iterations=2, backend=backend, random_state=0,
                show_progress=False).fit(train)
    on_cpu = model.to_cpu()
    assert ranking_metrics(model, train, test, K=5) == pytest.approx(
        ranking_metrics(on_cpu, train, test, K=5))
    assert auc(model, train, test, batch_size=16) == pytest.approx(
        auc(on_cpu, train, test, batch_size=16), abs=1e-12)


def test_rmse_is_that_of_predict_on_the_test_entries():
    from gpu_als import ALS

    X, Y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [3.0, 0.0]])
    test = sp.csr_matrix(([2.0, 5.0, 3.0], ([0, 1, 1], [0, 0, 1])), shape=(2, 2))
    # predictions x_u . y_i: (0, 0) 1, (1, 0) 2, (1, 1) 0; errors -1, -3, -3
    explicit = ALS.from_factors(X, Y, feedback="explicit", backend="cpu")
    assert rmse(explicit, test) == pytest.approx(np.sqrt(19 / 3))
    with pytest.warns(UserWarning, match="feedback='implicit': it predicts preferences"):
        assert rmse(ALS.from_factors(X, Y, backend="cpu"), test) == pytest.approx(
            np.sqrt(19 / 3))
    close = ALS.from_factors(np.ones((1, 1)), np.full((1, 1), 1 + 1e-9),
                             feedback="explicit", backend="cpu", dtype="float64")
    assert rmse(close, sp.csr_matrix(np.ones((1, 1)))) == pytest.approx(1e-9, rel=1e-6)
    for shape in ((2, 3), (3, 2), (2, 1)):  # "itemids 2 is out of range" before, or none
        with pytest.raises(ValueError, match=rf"^test has shape {re.escape(str(shape))}, but "
                                             rf"the ALS was fitted on 2 users x 2 items: "
                                             rf"evaluate it on the test part of the split"):
            rmse(explicit, sp.csr_matrix(([1.0], ([0], [0])), shape=shape))
    with pytest.raises(TypeError, match="model must have a predict method .*got csr_matrix"):
        rmse(test, test)  # the arguments swapped
    with pytest.raises(ValueError, match="test has no stored entries: there is nothing to "
                                         "evaluate$"):
        rmse(explicit, sp.csr_matrix((2, 2)))


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def assert_same_model(model, shorter, backend):
    """``model`` is ``shorter`` (exactly on the CPU; the GPU's atomic sums vary a little)."""
    for a, b in ((model.user_factors_, shorter.user_factors_),
                 (model.item_factors_, shorter.item_factors_)):
        if backend == "cpu":
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
        else:
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-6)
    assert model.loss_history_ == pytest.approx(shorter.loss_history_, rel=1e-5)


@pytest.mark.slow
def test_early_stopping_stops_once_recall_stops_improving_and_keeps_the_best(
        real_backend, movielens):
    """ML-100K at k = 128 with little regularization: Recall@10 on the validation part peaks
    after about 7 iterations of 15, then falls. The fit stops ``patience`` iterations after
    the peak and ends with the peak's model: a fit of that many iterations."""
    from gpu_als import ALS

    train, validation = train_test_split(binarize(movielens.ratings, 4), test_fraction=0.2,
                                         random_state=42)
    params = dict(factors=128, regularization=0.001, alpha=10, random_state=42,
                  backend=real_backend, show_progress=False)
    model = ALS(iterations=15, **params)
    stop = EarlyStopping(model, train, validation, patience=2)
    model.fit(train, callback=stop)
    scores = stop.scores
    assert stop.stopped_iteration is not None and len(scores) == stop.stopped_iteration + 1 < 15
    assert stop.best_score == max(scores) and stop.best_iteration == scores.index(max(scores))
    assert stop.stopped_iteration - stop.best_iteration == 2
    assert all(score <= stop.best_score for score in scores[stop.best_iteration:])
    assert scores[stop.best_iteration] > scores[0] + 0.05  # it did learn before stopping
    assert ranking_metrics(model, train, validation)["recall"] == stop.best_score
    assert_same_model(model, ALS(iterations=stop.best_iteration + 1, **params).fit(train),
                      real_backend)


@pytest.mark.slow
@pytest.mark.parametrize("iterations, restore_best, kept", [
    (12, True, 1), (12, False, 3), (2, True, 1), (2, False, 2)])
def test_early_stopping_on_rmse_restores_the_best_or_keeps_the_last(
        movielens, iterations, restore_best, kept):
    """Explicit feedback with weak regularization overfits at once: the test RMSE is best
    after the first iteration (1.015, then 1.37). With patience 2 a fit of 12 iterations
    stops after the third; one of 2 runs out first, and ``restore_best`` still goes back."""
    from gpu_als import ALS

    params = dict(factors=32, regularization=0.01, feedback="explicit", random_state=42,
                  backend="cpu", show_progress=False)
    model = ALS(iterations=iterations, **params)
    stop = EarlyStopping(model, None, movielens.u1_test, metric="rmse", patience=2,
                         restore_best=restore_best)
    model.fit(movielens.u1_base, callback=stop)
    assert stop.best_iteration == 0 and stop.best_score == min(stop.scores)
    assert stop.stopped_iteration == (2 if iterations == 12 else None)
    assert len(stop.scores) == min(iterations, 3) and len(model.loss_history_) == kept
    assert rmse(model, movielens.u1_test) == stop.scores[kept - 1]
    assert_same_model(model, ALS(iterations=kept, **params).fit(movielens.u1_base), "cpu")

    model.set_params(iterations=1).fit(movielens.u1_base, callback=stop)  # a new fit
    assert len(stop.scores) == 1 and stop.stopped_iteration is None


def test_early_stopping_with_min_delta_needs_that_much_improvement(caplog):
    from gpu_als import ALS

    R = random_interactions(80, 40, 0.2, seed=2)
    train, validation = train_test_split(R, test_fraction=0.3, random_state=0)
    model = ALS(factors=4, iterations=10, backend="cpu", random_state=0, show_progress=False)
    stop = EarlyStopping(model, train, validation, metric="ndcg", K=5, patience=3,
                         min_delta=1.0)  # nothing beats the first iteration by 1
    with caplog.at_level("INFO", logger="gpu_als"):
        model.fit(train, callback=stop)
    assert stop.best_iteration == 0 and stop.stopped_iteration == 3 and len(stop.scores) == 4
    # its lines count the iterations from 1, as the fit's own (best_iteration: from 0)
    lines = [r.getMessage() for r in caplog.records if "validation" in r.getMessage()]
    assert lines == [f"iteration {i + 1}: ndcg@5 {score:.5g} on the validation part (best "
                     f"{stop.scores[0]:.5g}, after iteration 1)"
                     for i, score in enumerate(stop.scores)]
    assert ranking_metrics(model, train, validation, K=5)["ndcg"] == stop.scores[0]
    assert "best_iteration=0" in repr(stop)


@pytest.mark.parametrize("iterations, stopped", [(6, 2), (3, None)])
def test_early_stopping_a_score_equal_to_the_best_is_no_improvement(
        monkeypatch, iterations, stopped):
    """A flat score: the first iteration stays the best, and the fit stops after
    ``patience`` more; when that is its last iteration it was not stopped."""
    from gpu_als import ALS, evaluation

    monkeypatch.setattr(evaluation, "validation_score", lambda *args: 0.25)
    R = random_interactions(40, 30, 0.2, seed=2)
    model = ALS(factors=2, iterations=iterations, backend="cpu", random_state=0,
                show_progress=False)
    stop = EarlyStopping(model, R, R, patience=2)
    model.fit(R, callback=stop)
    assert (stop.best_iteration, stop.stopped_iteration) == (0, stopped)
    assert stop.scores == [0.25] * 3 and len(model.loss_history_) == 1


def test_early_stopping_can_score_a_fixed_sample_of_the_validation_users():
    """``max_users``: the scores are those of the sampled users' rows (drawn once, seeded),
    the same sample at every iteration; with no more users than that, all of them."""
    from gpu_als import ALS

    R = random_interactions(200, 60, 0.15, seed=3)
    train, validation = train_test_split(R, test_fraction=0.3, random_state=0)
    model = ALS(factors=4, iterations=4, backend="cpu", random_state=0, show_progress=False)
    stop = EarlyStopping(model, train, validation, max_users=50, patience=10)
    sample = stop.validation
    rows = np.flatnonzero(np.diff(sample.indptr))
    assert len(rows) == 50 and sample.shape == validation.shape
    for u in rows[:10]:  # a sampled user's row is the whole of its validation row
        np.testing.assert_array_equal(sample[u].toarray(), validation[u].toarray())
    other = EarlyStopping(model, train, validation, max_users=50, random_state=1).validation
    assert set(np.flatnonzero(np.diff(other.indptr))) != set(rows)  # another seed
    model.fit(train, callback=stop)  # ends with the best iteration's model
    assert stop.best_score == ranking_metrics(model, train, sample)["recall"]
    assert ranking_metrics(model, train, sample)["users"] == 50
    assert EarlyStopping(model, train, validation, max_users=10**6).validation is validation


def test_early_stopping_calls_its_held_out_part_validation_in_warnings():
    """Validation entries that train has too are warned of as the validation part's (the
    metrics' own warning calls it test)."""
    R = random_interactions(80, 40, 0.2, seed=2)
    train, validation = train_test_split(R, test_fraction=0.3, random_state=0)
    some = sp.csr_matrix(train.multiply(np.r_[np.ones(10), np.zeros(70)][:, None]))
    some.eliminate_zeros()
    overlapping = (validation + some).tocsr()
    model = ALS(factors=4, iterations=2, backend="cpu", random_state=0, show_progress=False)
    stop = EarlyStopping(model, train, overlapping, patience=5)
    with pytest.warns(UserWarning, match=rf"^validation shares {some.nnz} entries with train: "
                                         rf"those items are left out .* \(train and "
                                         rf"validation are meant to be the disjoint parts"):
        model.fit(train, callback=stop)
    with pytest.warns(UserWarning, match=rf"^test shares {some.nnz} entries with train"):
        ranking_metrics(model, train, overlapping, show_progress=False)


def _frames_of(R, library, seed=0):
    """``R`` as a DataFrame of (user, item, value) rows with text user ids and offset item
    ids, split at random into train and validation rows; validation also names a user
    that train lacks."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    R = R.tocoo()
    df = pd.DataFrame({"user": [f"u{r}" for r in R.row], "item": R.col + 1000,
                       "value": np.ceil(R.data * 5)})
    held = np.random.default_rng(seed).random(len(df)) < 0.25
    train_df, validation_df = df[~held], pd.concat([df[held], pd.DataFrame(
        {"user": ["new"], "item": [1000], "value": [3.0]})])
    if library == "polars":
        return frames.from_pandas(train_df), frames.from_pandas(validation_df)
    return train_df, validation_df


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_early_stopping_takes_dataframes_for_a_model_fitted_on_one(library):
    """Scores on DataFrames are those on the matrices of the model's ids (a validation
    row of a user the model lacks left out, warned of at each fit); a second fit on other
    data finds the rows by that fit's ids; ``max_users`` draws among the frame's users."""
    from gpu_als import from_dataframe

    train_df, validation_df = _frames_of(random_interactions(90, 50, 0.15, seed=5), library)
    train, users, items = from_dataframe(train_df)
    validation, _, _ = from_dataframe(validation_df, user_ids=users, item_ids=items,
                                      drop_unknown=True)
    unknown = len(validation_df) - validation.nnz
    assert unknown >= 1  # the new user at least
    params = dict(factors=4, iterations=6, backend="cpu", random_state=0, show_progress=False)
    by_matrix = EarlyStopping(ALS(**params), train, validation, patience=2)
    by_matrix.model.fit(train, callback=by_matrix)
    model = ALS(**params)
    stop = EarlyStopping(model, train_df, validation_df, patience=2)
    with pytest.warns(UserWarning, match=rf"^{unknown} of the {len(validation_df)} rows of "
                                         rf"validation name users or items the ALS lacks"):
        model.fit(train_df, callback=stop)
    assert stop.scores == by_matrix.scores and len(stop.scores) >= 3
    assert stop.best_iteration == by_matrix.best_iteration
    np.testing.assert_array_equal(model.user_factors_, by_matrix.model.user_factors_)
    unvalued = EarlyStopping(ALS(**params), train_df, validation_df[["user", "item"]],
                             patience=2)  # a ranking metric needs no values
    with pytest.warns(UserWarning, match="rows of validation name users or items"):
        unvalued.model.fit(train_df, callback=unvalued)
    assert unvalued.scores == by_matrix.scores

    # another fit, on fewer users: its rows and columns are not the first fit's
    other_df, other_validation_df = _frames_of(random_interactions(70, 45, 0.2, seed=6),
                                               library, seed=1)
    other, users, items = from_dataframe(other_df)
    other_validation, _, _ = from_dataframe(other_validation_df, user_ids=users,
                                            item_ids=items, drop_unknown=True)
    again = EarlyStopping(model, other_df, other_validation_df, patience=2)
    with pytest.warns(UserWarning, match="rows of validation name users or items"):
        model.fit(other_df, callback=again)
    assert again.scores[0] == ranking_metrics(
        ALS(**{**params, "iterations": 1}).fit(other), other, other_validation,
        show_progress=False)["recall"]
    with pytest.warns(UserWarning) as fit_warnings:
        model.fit(other_df, callback=stop)  # the first frames, by the new fit's ids
    first = ALS(**{**params, "iterations": 1}).fit(other_df)
    with pytest.warns(UserWarning) as metric_warnings:
        assert stop.scores[0] == ranking_metrics(first, train_df, validation_df,
                                                 show_progress=False)["recall"]
    assert [re.sub(" rows of (train|validation|test)", "", str(w.message))
            for w in fit_warnings] == [re.sub(" rows of (train|validation|test)", "",
                                              str(w.message)) for w in metric_warnings]
    assert [str(w.message).split(" name")[0].split("rows of ")[1]
            for w in fit_warnings] == ["train", "validation"]

    sample = EarlyStopping(model, train_df, validation_df, max_users=20).validation
    sampled = np.asarray(sample["user"])
    assert len(set(sampled)) == 20
    everyone = np.asarray(validation_df["user"])
    assert len(sampled) == int(np.isin(everyone, sampled).sum())  # all their rows
    redrawn = EarlyStopping(model, train_df, validation_df, max_users=20).validation
    assert list(np.asarray(redrawn["user"])) == list(sampled)  # seeded
    other_seed = EarlyStopping(model, train_df, validation_df, max_users=20,
                               random_state=1).validation
    assert set(np.asarray(other_seed["user"])) != set(sampled)
    n_users = len(set(everyone))
    for max_users in (n_users, 1000):
        assert EarlyStopping(model, train_df, validation_df, max_users=max_users).validation \
            is validation_df
    assert len(set(EarlyStopping(model, train_df, validation_df, max_users=n_users - 1)
                   .validation["user"])) == n_users - 1


def test_early_stopping_refuses_dataframes_it_cannot_score():
    """Columns missing are refused when it is made; a model fitted on a matrix, which
    has no ids to find the rows by, at the first iteration, and the model stays unfitted."""
    train_df, validation_df = _frames_of(random_interactions(40, 30, 0.2, seed=2), "pandas")
    model = ALS(factors=2, iterations=3, backend="cpu", show_progress=False)
    with pytest.raises(ValueError, match=r"validation is a DataFrame without the column\(s\) "
                                         r"\['item'\]: it needs \['user', 'item'\]"):
        EarlyStopping(model, train_df, validation_df.rename(columns={"item": "movie"}))
    with pytest.raises(ValueError, match=r"train is a DataFrame without the column\(s\) "
                                         r"\['user'\].*\('user' is its index"):
        EarlyStopping(model, train_df.set_index("user"), validation_df)
    explicit = ALS(factors=2, feedback="explicit", backend="cpu", show_progress=False)
    with pytest.raises(ValueError, match=r"the column\(s\) \['value'\]: it needs \['user', "
                                         r"'item', 'value'\]"):
        EarlyStopping(explicit, None, validation_df[["user", "item"]], metric="rmse")
    with pytest.raises(ValueError, match="validation is a DataFrame without rows"):
        EarlyStopping(model, train_df, validation_df[:0])
    pl = pytest.importorskip("polars")
    with pytest.raises(TypeError, match="validation is a polars LazyFrame"):
        EarlyStopping(model, train_df, pl.from_pandas(validation_df).lazy())
    from gpu_als import from_dataframe

    matrix = from_dataframe(train_df).matrix
    stop = EarlyStopping(model, matrix, validation_df)
    with pytest.raises(TypeError, match="validation is a DataFrame, but the ALS has no ids"):
        model.fit(matrix, callback=stop)
    assert not hasattr(model, "user_factors_")


@pytest.mark.parametrize("watched", ["unfitted", "fitted"])
def test_early_stopping_given_to_another_models_fit_is_refused(watched):
    """Made with one model and passed to another's fit, it would score a model that does
    not change (a fitted one: stopping the fit after ``patience`` iterations, silently).
    It refuses at the first iteration, and the fitted model is left as it was."""
    from gpu_als import ALS

    R = random_interactions(80, 40, 0.2, seed=2)
    train, validation = train_test_split(R, test_fraction=0.3, random_state=0)
    params = dict(factors=4, iterations=6, backend="cpu", random_state=0, show_progress=False)
    other = ALS(**params)
    if watched == "fitted":
        other.fit(train)
    stop = EarlyStopping(other, train, validation, patience=2)
    model = ALS(**params)
    with pytest.raises(ValueError, match=r"EarlyStopping was called outside a fit of the "
                                         r"model it watches: pass it to the fit of the "
                                         r"model it was made with"):
        model.fit(train, callback=stop)
    assert not hasattr(model, "user_factors_") and stop.scores == []
    assert not model.fit_in_progress and not other.fit_in_progress
    with pytest.raises(ValueError, match="outside a fit"):
        stop(0, 0.0, None)  # by hand, too


def test_fit_in_progress_is_true_only_while_the_model_fits():
    """(What a callback checks; a copy taken in a callback, a checkpoint, is not fitting.)"""
    import pickle

    from gpu_als import ALS

    model = ALS(factors=4, iterations=2, backend="cpu", show_progress=False)
    seen = []

    def callback(iteration, seconds, loss):
        seen.append((model.fit_in_progress, pickle.loads(pickle.dumps(model)).fit_in_progress))

    assert not model.fit_in_progress
    model.fit(random_interactions(30, 20, 0.2, seed=0), callback=callback)
    assert seen == [(True, False)] * 2 and not model.fit_in_progress

    def failing(iteration, seconds, loss):
        raise KeyError("stop")

    with pytest.raises(KeyError):
        model.fit(random_interactions(30, 20, 0.2, seed=1), callback=failing)
    assert not model.fit_in_progress


@pytest.mark.parametrize("change, error, match", [
    ({"model": "ALS"}, TypeError, r"model must be a gpu_als.ALS, got str"),
    ({"max_users": 0}, ValueError, r"max_users=0: must be >= 1"),
    ({"metric": "auc"}, ValueError, r"metric='auc': expected one of 'recall', 'ndcg'"),
    ({"metric": "rmse"}, ValueError, r"metric='rmse' .* needs a model with feedback='explicit'"),
    ({"train": None}, ValueError, r"metric='recall' needs train"),
    ({"validation": [[1, 0]]}, TypeError, r"validation must be a users x items sparse matrix "
                                          r"or a DataFrame, got list"),
    ({"train": sp.csr_matrix((3, 5))}, ValueError,
     r"train has shape \(3, 5\) but validation has shape \(4, 5\)"),
    ({"train": [[1, 0]]}, TypeError,  # (it said "train has shape None")
     r"^train must be a users x items sparse matrix, a DataFrame or None, got list$"),
    ({"metric": np.array(["recall", "ndcg"])}, ValueError,  # (NumPy's "truth value of an
     r"^metric=array\(\['recall', 'ndcg'\], dtype='<U6'\): expected one of"),  # array")
    ({"patience": 0}, ValueError, r"patience=0: must be >= 1"),
    ({"K": 2.5}, TypeError, r"K must be an integer"),
    ({"K": 0}, ValueError, r"K=0: must be >= 1"),
    ({"min_delta": -0.1}, ValueError, r"min_delta=-0.1: must be >= 0"),
    ({"restore_best": "yes"}, TypeError, r"restore_best must be True or False, got str"),
])
def test_early_stopping_refuses_bad_arguments(change, error, match):
    from gpu_als import ALS

    arguments = {"model": ALS(), "train": sp.csr_matrix((4, 5)),
                 "validation": sp.csr_matrix((4, 5)), **change}
    with pytest.raises(error, match=match):
        EarlyStopping(arguments.pop("model"), arguments.pop("train"),
                      arguments.pop("validation"), **arguments)


def test_early_stopping_takes_each_setting_at_its_floor():
    from gpu_als import ALS

    stopper = EarlyStopping(ALS(), sp.csr_matrix((4, 5)), sp.csr_matrix((4, 5)), K=1,
                            patience=1, min_delta=0.0, max_users=1)
    assert (stopper.K, stopper.patience, stopper.min_delta) == (1, 1, 0.0)
