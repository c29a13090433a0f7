"""Fold-in, partial fits and the conjugate-gradient solver."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.backends import get_backend
from gpu_als.data import check_user_items, weighted_rows
from gpu_als.evaluation import PopularityRecommender, binarize, ranking_metrics, train_test_split

from .conftest import random_interactions
from .reference import solve_rows_loop
from .test_solver import assert_close, edge_case_matrix


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def model_for(backend, **params):
    return ALS(**{"factors": 4, "iterations": 2, "backend": backend, "random_state": 4,
                  "alpha": 3.0, "regularization": 0.05, "dtype": np.float64,
                  "show_progress": False, **params})


@pytest.fixture(scope="module")
def R():
    return random_interactions(25, 20, 0.2, seed=2, dtype=np.float64)


def test_recalculate_user_equals_the_last_user_half_step(backend, R):
    """The last user half-step solved against the item factors of one iteration earlier."""
    full = model_for(backend).fit(R)
    earlier = model_for(backend, iterations=1).fit(R)  # same start: the same first steps
    folded = earlier.recalculate_user(np.arange(25), R)
    np.testing.assert_allclose(to_numpy(folded), to_numpy(full.user_factors_), atol=1e-10)


def test_recalculate_item_equals_the_last_item_half_step(backend, R):
    model = model_for(backend).fit(R)
    folded = model.recalculate_item(np.arange(20), R.T.tocsr())
    np.testing.assert_allclose(to_numpy(folded), to_numpy(model.item_factors_), atol=1e-10)
    one = model.recalculate_item(4, R.T.tocsr()[4])
    np.testing.assert_allclose(to_numpy(one), to_numpy(model.item_factors_)[4], atol=1e-10)


def test_partial_fit_grows_and_updates(backend, R):
    model = model_for(backend).fit(R)
    before = to_numpy(model.user_factors_).copy()
    rows = random_interactions(2, 20, 0.3, seed=9, dtype=np.float64)
    model.partial_fit_users([3, 27], rows)
    X = to_numpy(model.user_factors_)
    assert X.shape == (28, 4)
    assert not X[25:27].any(), "users in the gap get zero factors"
    np.testing.assert_allclose(X[[3, 27]], to_numpy(model.recalculate_user([0, 1], rows)))
    np.testing.assert_array_equal(X[:3], before[:3])
    ids, _ = model.recommend(27, rows[1], N=5)
    assert len(ids) == 5
    item_rows = random_interactions(1, 28, 0.3, seed=10, dtype=np.float64)
    model.partial_fit_items([20], item_rows)
    assert model.item_factors_.shape == (21, 4)


def test_users_streamed_in_one_at_a_time_copy_the_factors_rarely(backend, R):
    """Each growing call used to copy every factor row (O(n) per new user); the factors
    now grow into spare rows, so 40 users added one per call copy them 8 times, not 40."""
    model = model_for(backend).fit(R)
    rows = random_interactions(40, 20, 0.3, seed=11, dtype=np.float64)
    copies, X = 0, model.user_factors_
    for j in range(40):
        model.partial_fit_users([25 + j], rows[j])
        if isinstance(X, np.ndarray) and not np.shares_memory(X, model.user_factors_):
            copies += 1
        X = model.user_factors_
        assert X.shape == (26 + j, 4)
    np.testing.assert_allclose(to_numpy(X[25:]), to_numpy(model.recalculate_user(
        np.arange(40), rows)), atol=1e-10)
    if isinstance(X, np.ndarray):
        assert copies == 8  # at 26 rows (+ 3 spare), 30 (+ 3), 34 (+ 4), 39, 44, 50, 57, 65
    model.partial_fit_users([70], rows[0])  # a gap: the rows between stay zero
    assert not to_numpy(model.user_factors_)[65:70].any()
    # the spare rows stay behind: a pickle and a saved file hold the 71 rows only
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(to_numpy(restored.user_factors_),
                                  to_numpy(model.user_factors_))
    assert "_spare_rows" not in restored.__dict__ or not restored._spare_rows
    refit = model.fit(R)
    assert not refit._spare_rows, "a refit drops the buffer"


def test_values_kept_from_the_factors_follow_every_change_of_them(backend, R):
    """Fold-in keeps Y^T Y and similar_items the norms between calls: a partial fit (in
    place or growing) and an assignment must renew them, so each answer equals that of
    a fresh model made of the same factors."""
    model = model_for(backend).fit(R)
    RT = R.T.tocsr()

    def fresh():
        return ALS.from_factors(to_numpy(model.user_factors_), to_numpy(model.item_factors_),
                                **{**model.get_params(), "backend": "cpu"})

    def assert_answers_as_fresh():
        new = fresh()
        user, item = R[5].copy(), RT[5].copy()  # widened to the items and users now
        user.resize(1, model.item_factors_.shape[0])
        item.resize(1, model.user_factors_.shape[0])
        np.testing.assert_allclose(to_numpy(model.recalculate_user(5, user)),
                                   new.recalculate_user(5, user), atol=1e-10)
        np.testing.assert_allclose(to_numpy(model.recalculate_item(5, item)),
                                   new.recalculate_item(5, item), atol=1e-10)
        for mine, theirs in ((model.similar_items(2, N=20), new.similar_items(2, N=20)),
                             (model.similar_users(2, N=25), new.similar_users(2, N=25))):
            np.testing.assert_array_equal(mine[0], theirs[0])
            np.testing.assert_allclose(mine[1], theirs[1], atol=1e-6)
        assert model.explain(5, user, 3)[0] == pytest.approx(new.explain(5, user, 3)[0],
                                                             abs=1e-10)

    assert_answers_as_fresh()
    model.partial_fit_items([3], (RT[[3]] * 25).tocsr())  # other confidences, factors
    assert_answers_as_fresh()  # items updated in place
    model.partial_fit_users([4], (R[[7]] * 25).tocsr())
    assert_answers_as_fresh()  # users updated in place
    model.partial_fit_items([22], RT[[1]])
    assert_answers_as_fresh()  # items grown
    # what the other side keeps survives a partial fit (streaming users in: Y^T Y is
    # computed once, not at every batch)
    kept = model._derived(model.item_factors_, "gram", lambda: pytest.fail("not kept"))
    if isinstance(kept, np.ndarray):  # shared by later calls: an edit in place would raise
        assert not kept.flags.writeable
    user = R[[2]].copy()
    user.resize(1, 23)
    model.partial_fit_users([30], user)
    assert model._derived(model.item_factors_, "gram", lambda: pytest.fail("lost")) is kept
    assert_answers_as_fresh()  # users grown
    model.item_factors = to_numpy(model.item_factors_)[::-1] * 2
    assert_answers_as_fresh()  # assigned


def test_partial_fit_keeps_the_id_map_unless_it_grows():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": ["a", "a", "b", "c"], "item": ["x", "y", "y", "z"]})
    model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
    row = sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 3))
    model.partial_fit_users([1], row)  # user "b" again
    assert list(model.user_ids_) == ["a", "b", "c"]
    model.partial_fit_items([0], sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 3)))
    assert list(model.item_ids_) == ["x", "y", "z"]
    model.partial_fit_users([3], row)  # a fourth row: no id to give it
    assert model.user_ids_ is None and list(model.item_ids_) == ["x", "y", "z"]
    model.partial_fit_items([3], sp.csr_matrix(([1.0], ([0], [3])), shape=(1, 4)))
    assert model.item_ids_ is None


def fit_with_ids(backend, user_ids, item_ids, R):
    return model_for(backend).fit(R, user_ids=user_ids, item_ids=item_ids)


def test_partial_fit_by_id_updates_known_and_appends_new(backend, R):
    """Known ids update their rows, new ones are appended in order: the same factors as
    the same solves named by row, and the id map grows with them."""
    users = np.array([f"u{j}" for j in range(25)], dtype=object)
    items = np.arange(100, 120)
    by_id = fit_with_ids(backend, users, items, R)
    by_row = fit_with_ids(backend, users, items, R)
    rows = random_interactions(3, 20, 0.3, seed=9, dtype=np.float64)
    by_id.partial_fit_users(user_items=rows, user_ids=["new1", "u0", "new2"])
    by_row.partial_fit_users([25, 0, 26], rows)  # row 0 too: a known id
    assert list(by_id.user_ids_) == [*users, "new1", "new2"]
    np.testing.assert_array_equal(to_numpy(by_id.user_factors_),
                                  to_numpy(by_row.user_factors_))
    ids, _ = by_id.recommend(26, rows[2], N=3)  # a grown row answers queries
    assert len(ids) == 3
    by_id.partial_fit_users(user_items=rows[[1]], user_ids=["new2"])  # now a known id
    assert len(by_id.user_ids_) == 27 and to_numpy(by_id.user_factors_).shape == (27, 4)
    np.testing.assert_allclose(to_numpy(by_id.user_factors_)[26],
                               to_numpy(by_id.recalculate_user(0, rows[1])))

    item_users = sp.hstack([R.T.tocsr()[[0, 1]], sp.csr_matrix((2, 2))]).tocsr()  # 27 users
    by_id.partial_fit_items(item_users=item_users, item_ids=[120, 101])
    assert by_id.item_ids_.dtype == items.dtype
    assert list(by_id.item_ids_) == [*items, 120]
    assert to_numpy(by_id.item_factors_).shape == (21, 4)


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_partial_fit_of_a_dataframe_alone_names_rows_by_id(backend, R, library):
    """``partial_fit_users(df)`` / ``partial_fit_items(df)``: the same factors and ids as
    the matrix of ``from_dataframe(df, item_ids=model.item_ids_, drop_unknown=True)``
    given by id; rows of items the model lacks are left out, and a user left with none
    is not fitted (a known one keeps its factors), each warned of with its count."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    from gpu_als import from_dataframe

    users = np.array([f"u{j}" for j in range(25)], dtype=object)
    items = np.arange(100, 120)
    by_frame = fit_with_ids(backend, users, items, R)
    by_matrix = fit_with_ids(backend, users, items, R)
    before = to_numpy(by_frame.user_factors_).copy()
    today = pd.DataFrame({"user": ["new1", "u3", "new1", "u3", "u7", "new2", "new1"],
                          "item": [101, 105, 119, 999, 998, 997, 101],
                          "value": [2.0, 1.0, 3.0, 4.0, 1.0, 1.0, 1.0]})
    given = today if library == "pandas" else frames.from_pandas(today)
    with pytest.warns(UserWarning) as caught:
        by_frame.partial_fit_users(given)
    assert [str(w.message) for w in caught] == [
        "3 of the rows of df name items the model lacks: left out",
        "2 user(s) of df name only items the model lacks: not fitted ('new2', 'u7')"]
    known = today[today["item"] < 120]
    matrix, ids, _ = from_dataframe(known, item_ids=items)
    by_matrix.partial_fit_users(user_items=matrix, user_ids=ids)  # new1 (2 rows), u3
    assert list(by_frame.user_ids_) == [*users, "new1"] == list(by_matrix.user_ids_)
    np.testing.assert_array_equal(to_numpy(by_frame.user_factors_),
                                  to_numpy(by_matrix.user_factors_))
    np.testing.assert_array_equal(to_numpy(by_frame.user_factors_)[7], before[7])  # u7 kept
    assert not np.array_equal(to_numpy(by_frame.user_factors_)[3], before[3])  # u3 updated

    news = pd.DataFrame({"user": ["u1", "u2", "new1"], "item": [500, 500, 501]})
    by_frame.partial_fit_items(news if library == "pandas" else frames.from_pandas(news))
    assert list(by_frame.item_ids_) == [*items, 500, 501]
    item_users = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [1, 2, 25])), shape=(2, 26))
    by_matrix.partial_fit_items(item_users=item_users, item_ids=[500, 501])
    np.testing.assert_array_equal(to_numpy(by_frame.item_factors_),
                                  to_numpy(by_matrix.item_factors_))


def test_partial_fit_of_a_dataframe_refuses_what_it_cannot_fit(R):
    pd = pytest.importorskip("pandas")
    users = np.array([f"u{j}" for j in range(25)], dtype=object)
    model = fit_with_ids("cpu", users, np.arange(20), R)
    before = model.user_factors_.copy()
    today = pd.DataFrame({"user": ["u1", "x"], "item": [3, 4]})
    for call in (lambda: model.partial_fit_users(today, user_ids=["u1", "x"]),
                 lambda: model.partial_fit_users(today, R[[0, 1]]),
                 lambda: model.partial_fit_users(user_items=today, user_ids=["u1", "x"])):
        with pytest.raises(TypeError, match=r"partial_fit_users\(\) takes a DataFrame alone "
                                            r"\(its users by id, in its column 'user'\), or "
                                            r"userids / user_ids with the matrix user_items"):
            call()
    with pytest.raises(ValueError, match="df has no rows of items the model has: no user to "
                                         "fit"):
        with pytest.warns(UserWarning, match="2 of the rows of df name items the model lacks"):
            model.partial_fit_users(today.assign(item=[50, 51]))
    with pytest.raises(ValueError, match="column 'item' not found"):
        model.partial_fit_users(today.rename(columns={"item": "sku"}))
    with pytest.raises(TypeError, match=r"user_ids are integers .* but the model's user_ids_ "
                                        r"are strings"):
        model.partial_fit_users(today.assign(user=[1, 2]))
    explicit = model_for("cpu", feedback="explicit", alpha=10.0).fit(
        R, user_ids=users, item_ids=np.arange(20))
    with pytest.raises(ValueError, match=r"partial_fit_users\(df\) with feedback='explicit' "
                                         r"reads the ratings in the column 'value'"):
        explicit.partial_fit_users(today)
    np.testing.assert_array_equal(model.user_factors_, before)
    assert list(model.user_ids_) == list(users)
    with pytest.raises(ValueError, match="the model has no user_ids_ to match ids against"):
        model_for("cpu").fit(R).partial_fit_users(today)


def test_ids_streamed_in_one_at_a_time_grow_into_spare_rows(R):
    """As the factors do, the id array grows into spare rows: 40 new users added one per
    call by id copy the ids 8 times, not 40 (at a million ids a copy per call took 8.7
    ms); a longer string than the array holds widens it, and numbers keep their dtype."""
    users = np.array([f"u{j}" for j in range(25)], dtype=object)
    model = fit_with_ids("cpu", users, np.arange(20, dtype=np.int32), R)
    rows = random_interactions(40, 20, 0.3, seed=11, dtype=np.float64)
    copies, ids = 0, model.user_ids_
    for j in range(40):
        model.partial_fit_users(user_items=rows[j], user_ids=[f"n{j}"])
        copies += not np.shares_memory(ids, model.user_ids_)
        ids = model.user_ids_
    assert copies == 8  # as the factors' (test above)
    assert list(ids) == [*users, *(f"n{j}" for j in range(40))]
    np.testing.assert_array_equal(model.user_rows([f"n{j}" for j in range(40)]),
                                  np.arange(25, 65))
    np.testing.assert_allclose(model.user_factors_[25:], model.recalculate_user(
        np.arange(40), rows), atol=1e-10)
    restored = pickle.loads(pickle.dumps(model))
    assert list(restored.user_ids_) == list(ids)

    fixed = fit_with_ids("cpu", np.array([f"u{j}" for j in range(25)]), None, R)  # <U3
    fixed.partial_fit_users(user_items=rows[0], user_ids=["n0"])
    fixed.partial_fit_users(user_items=rows[1], user_ids=["a-longer-id"])
    assert fixed.user_ids_.dtype == "<U11"
    assert list(fixed.user_ids_[-3:]) == ["u24", "n0", "a-longer-id"]
    model.partial_fit_items(item_users=sp.csr_matrix((2, 65)), item_ids=[20, 21])
    assert model.item_ids_.dtype == np.int32 and list(model.item_ids_[-3:]) == [19, 20, 21]


@pytest.mark.filterwarnings("ignore:1 of the rows of df name items the model lacks")
def test_partial_fits_of_dataframes_on_both_sides_from_several_threads():
    """New users and new items folded in from DataFrames on several threads at once: a
    user's frame is coded against the item ids inside the lock, so that an item added
    meanwhile cannot leave it a column short (a ValueError of its width)."""
    pd = pytest.importorskip("pandas")
    import threading
    from concurrent.futures import ThreadPoolExecutor

    R = random_interactions(25, 20, 0.3, seed=3, dtype=np.float64)
    model = fit_with_ids("cpu", np.array([f"u{j}" for j in range(25)]), np.arange(20), R)
    start = threading.Barrier(8)

    def add(j):
        if j < 8:
            start.wait()
        if j % 2:
            model.partial_fit_items(pd.DataFrame({"user": ["u1", "u2", f"u{j % 25}"],
                                                  "item": [1000 + j] * 3}))
        else:
            model.partial_fit_users(pd.DataFrame({"user": [f"n{j}"] * 3,
                                                  "item": [j % 20, (j + 7) % 20, 1000 + j + 1]
                                                  }).iloc[:2 + (j > 40)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(80)))
    assert model.user_factors_.shape == (65, 4) and len(model.user_ids_) == 65
    assert model.item_factors_.shape == (60, 4) and len(model.item_ids_) == 60
    assert sorted(model.item_ids_[20:]) == [1000 + j for j in range(1, 80, 2)]


def test_queries_by_id_while_items_are_folded_in_on_another_thread():
    """recommend_frame, recommend_users_frame, predict_frame and similar_items_frame each
    answer from the model of one moment (ALS._snapshot), while partial fits on another
    thread add items: before, a query read the items' ids and factors at two moments and
    found them of different sizes (a ValueError of its matrix's width, in about one query
    of ten here)."""
    pd = pytest.importorskip("pandas")
    import threading

    R = random_interactions(300, 200, 0.05, seed=3, dtype=np.float64)
    model = fit_with_ids("cpu", np.array([f"u{j}" for j in range(300)]), np.arange(200), R)
    rows = pd.DataFrame({"user": ["u5"] * 3 + ["new"] * 2, "item": [1, 2, 3, 4, 5]})
    start, done = threading.Barrier(2), threading.Event()
    added = []

    def grow():
        start.wait()
        for j in range(2000):
            if done.is_set():
                break
            model.partial_fit_items(pd.DataFrame({"user": ["u1", "u2"], "item": [1000 + j] * 2}))
            added.append(j)

    grower = threading.Thread(target=grow)
    grower.start()
    start.wait()
    try:
        for _ in range(60):
            assert len(model.recommend_frame(interactions=rows, N=5)) == 10
            assert len(model.recommend_users_frame([1, 2], interactions=rows[:3], N=3)) == 6
            assert model.predict_frame(rows[:3])["score"].notna().all()
            assert len(model.similar_items_frame([1], N=2)) == 2
    finally:
        done.set()
        grower.join()
    assert len(added) > 20  # items were added while the queries ran
    assert len(model.item_ids_) == 200 + len(added) == model.item_factors_.shape[0]


@pytest.mark.parametrize("by", ["row", "id"])
def test_partial_fits_from_several_threads_lose_no_user(R, by):
    """A server folding in users per request from several threads: each partial fit
    grows the factors (and ids) that the previous one left. Unlocked, two growths at once
    each copied the old rows and one was lost (56 of 100 users kept, here)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    users = np.array([f"u{j}" for j in range(25)])
    model = fit_with_ids("cpu", users, None, R)
    rows = random_interactions(100, 20, 0.3, seed=12, dtype=np.float64)
    start = threading.Barrier(8)

    def add(j):
        if j < 8:
            start.wait()  # all threads at once
        if by == "row":
            model.partial_fit_users([25 + j], rows[j])
        else:
            model.partial_fit_users(user_items=rows[j], user_ids=[f"n{j}"])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(100)))
    assert model.user_factors_.shape == (125, 4)
    solved = model.recalculate_user(np.arange(100), rows)
    if by == "row":
        np.testing.assert_allclose(model.user_factors_[25:], solved, atol=1e-10)
    else:
        placed = model.user_rows([f"n{j}" for j in range(100)])
        assert sorted(placed) == list(range(25, 125))
        np.testing.assert_allclose(model.user_factors_[placed], solved, atol=1e-10)
    assert pickle.loads(pickle.dumps(model)).user_factors_.shape == (125, 4)  # no lock kept


@pytest.mark.parametrize("known, queries", [
    (np.array([7, 3, 9, 3]), [np.array([3, 9, 4]), np.array([3.0, 7.5]), np.array(["9", "x"])]),
    (np.array([0.5, 2.0]), [np.array([2, 0]), np.array([0.5])]),
    (np.array(["b", "a", "b"]), [np.array(["a", "b", "c"]), np.array([1])]),
    (np.array(["1", 2, 2.5], dtype=object), [np.array([1, 2]), np.array(["2.5", "3"])]),
])
def test_the_id_index_finds_what_id_positions_finds(known, queries):
    """Partial fits look ids up in a kept dict (gpu_als._ids.IdIndex), not by id_positions:
    the same rows (numbers match numbers, else strings; the first of repeated ids),
    also once extended."""
    from gpu_als._ids import IdIndex
    from gpu_als.data import id_positions
    index = IdIndex(known)
    for ids in queries:
        np.testing.assert_array_equal(index.positions(ids), id_positions(known, ids))
    grown = np.concatenate([known, known[:1]])  # a repeated id: the first row stays
    index.extend(grown)
    assert index.ids is grown
    for ids in queries:
        np.testing.assert_array_equal(index.positions(ids), id_positions(grown, ids))


def test_a_query_finds_only_the_ids_the_model_had_when_it_began():
    """A query by id reads the model's ids of one moment (gpu_als._ids.FrozenIds over the
    shared index): ids that a partial fit on another thread appends meanwhile, from the
    first one on, are not found (their factor rows are not in the query's snapshot)."""
    from gpu_als._ids import FrozenIds, IdIndex

    index = IdIndex(np.array(["a", "b", "c"]))
    frozen = FrozenIds(index, index.ids)
    index.extend(np.array(["a", "b", "c", "d", "e"]))
    np.testing.assert_array_equal(frozen.positions(np.array(["c", "d", "e", "a", "z"])),
                                  [2, -1, -1, 0, -1])
    np.testing.assert_array_equal(index.positions(np.array(["d", "e"])), [3, 4])


def test_user_rows_and_item_rows_map_ids_to_factor_rows(R):
    from gpu_als.data import id_positions
    from gpu_als.exceptions import NotFittedError
    users = np.array([f"u{j}" for j in range(25)])
    model = fit_with_ids("cpu", users, np.arange(100, 120), R)
    asked = np.array(["u7", "nobody", "u0", "u24"])
    np.testing.assert_array_equal(model.user_rows(asked), [7, -1, 0, 24])
    np.testing.assert_array_equal(model.user_rows(asked), id_positions(users, asked))
    assert model.user_rows("u3") == 3 and isinstance(model.user_rows("u3"), int)
    np.testing.assert_array_equal(model.item_rows([119, 100.0, 5]), [19, 0, -1])
    assert model.item_rows("101") == 1  # typed: compared as strings
    model.partial_fit_users(user_items=R[[0]], user_ids=["late"])
    assert model.user_rows("late") == 25
    with pytest.raises(ValueError, match=r"one id or 1-D, got shape \(1, 2\)"):
        model.user_rows([["u1", "u2"]])
    with pytest.raises(ValueError, match="no user_ids_ to match ids against"):
        model_for("cpu").fit(R).user_rows([0])
    with pytest.raises(NotFittedError):
        ALS().item_rows([0])


def test_the_id_index_follows_the_models_ids(R):
    users = np.array([f"u{j}" for j in range(25)])
    model = fit_with_ids("cpu", users, None, R)
    model.partial_fit_users(user_items=R[[0]], user_ids=["new"])
    assert model.__dict__["_id_indexes"]["user"].ids is model.user_ids_  # kept, extended
    model.user_ids_ = np.array([f"v{j}" for j in range(26)])  # renamed by hand
    model.partial_fit_users(user_items=R[[1, 2]], user_ids=["v3", "new"])
    assert list(model.user_ids_[-2:]) == ["v25", "new"]  # "new" is new again
    np.testing.assert_allclose(model.user_factors_[3], model.recalculate_user(0, R[[1]]))
    copy = pickle.loads(pickle.dumps(model))
    assert "_id_indexes" not in copy.__dict__
    copy.partial_fit_users(user_items=R[[2]], user_ids=["new"])
    assert len(copy.user_ids_) == 27
    np.testing.assert_allclose(copy.user_factors_[26], model.recalculate_user(0, R[[2]]))


def test_partial_fit_by_id_keeps_the_ids_through_save_and_load(tmp_path):
    pd = pytest.importorskip("pandas")
    from gpu_als.data import from_dataframe
    df = pd.DataFrame({"user": [7, 7, 9, 11], "item": ["x", "y", "y", "z"]})
    model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
    new = pd.DataFrame({"user": [12, 12, 9], "item": ["x", "z", "x"]})
    rows, users, _ = from_dataframe(new, item_ids=model.item_ids_)
    model.partial_fit_users(user_items=rows, user_ids=users)
    assert model.user_ids_.tolist() == [7, 9, 11, 12]
    assert model.user_ids_.dtype == np.int64
    loaded = ALS.load(model.save(tmp_path / "m.npz"))
    assert loaded.user_ids_.tolist() == [7, 9, 11, 12]
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    with pytest.raises(TypeError, match=r"user_ids are floats \(float64, e.g. 13.0\) but the "
                                        r"model's user_ids_ are integers \(int64, e.g. 7\): an "
                                        r"id is found only among ids of its kind$"):
        model.partial_fit_users(user_items=rows[:1], user_ids=[13.0])
    # float ids: appended in the model's float type, where they fit it
    floats = ALS.from_factors(np.ones((2, 2)), np.ones((3, 2)), backend="cpu",
                              user_ids=np.array([0.5, 1.5], np.float32))
    one = sp.csr_matrix(np.ones((1, 3)))
    floats.partial_fit_users(user_items=one, user_ids=[2.5])
    assert floats.user_ids_.dtype == np.float32 and floats.user_ids_.tolist() == [0.5, 1.5, 2.5]
    with pytest.raises(TypeError, match=r"user_ids \[0.1\] do not fit the model's user_ids_ "
                                        r"\(float32\): a model's ids are all of one type"):
        floats.partial_fit_users(user_items=one, user_ids=[0.1])


@pytest.mark.parametrize("call, error, message", [
    (dict(user_ids=["a", "a"]), ValueError, "user_ids holds duplicates"),
    (dict(user_ids=[]), ValueError, "user_ids is empty"),
    (dict(user_ids=[["a"]]), ValueError, r"user_ids must be 1-D, got shape \(1, 1\)"),
    (dict(user_ids=[1, 2]), TypeError,
     r"user_ids are integers \(int64, e.g. 1\) but the model's user_ids_ are strings"),
    (dict(user_ids=["a"], userids=[0]), ValueError, "give userids .* or user_ids .*not both"),
    (dict(), TypeError, r"needs userids \(factor rows\) or user_ids \(original ids\)"),
    (dict(user_ids=["a"], user_items=None), TypeError, "needs user_items"),
    (dict(userids=["u1"]), TypeError,
     "userids are factor rows, integers; to name users by their original ids, pass them as "
     "user_ids="),
    (dict(user_ids=["new", "u1"], user_items=sp.csr_matrix((2, 19))), ValueError, "19"),
])
def test_partial_fit_by_id_refusals_change_nothing(R, call, error, message):
    users = np.array([f"u{j}" for j in range(25)])
    model = fit_with_ids("cpu", users, None, R)
    before = model.user_factors_.copy()
    n = len(call.get("user_ids", [0]))
    call = {"user_items": sp.csr_matrix((max(n, 1), 20)), **call}
    with pytest.raises(error, match=message):
        model.partial_fit_users(**call)
    np.testing.assert_array_equal(model.user_factors_, before)
    assert list(model.user_ids_) == list(users)


def test_partial_fit_by_id_needs_a_model_with_ids(R):
    model = model_for("cpu").fit(R)
    with pytest.raises(ValueError, match="the model has no user_ids_ to match ids "
                                         "against .*: name its users by factor row"):
        model.partial_fit_users(user_items=R[[0]], user_ids=["a"])
    with pytest.raises(ValueError, match="no item_ids_ to match ids"):
        model.partial_fit_items(item_users=R.T.tocsr()[[0]], item_ids=[3])


def test_partial_fit_by_id_refuses_ids_that_do_not_fit_the_type(R):
    model = fit_with_ids("cpu", np.arange(25, dtype=np.int32), None, R)
    with pytest.raises(TypeError, match=r"user_ids \[4000000000\] do not fit the "
                                        r"model's user_ids_ \(int32\)"):
        model.partial_fit_users(user_items=R[[0, 1]], user_ids=[4_000_000_000, 3])
    with pytest.raises(TypeError, match=r"do not fit the model's user_ids_ \(int32\)"):
        model.partial_fit_users(user_items=R[[0]], user_ids=[10**20])  # no int64
    with pytest.raises(TypeError, match=r"user_ids are strings \(object, e.g. 'x'\) but the "
                                        r"model's user_ids_ are integers \(int32, e.g. "):
        model.partial_fit_users(user_items=R[[0]], user_ids=np.array(["x"], dtype=object))
    # text ids, as fit(df) keeps them (an object array), refuse numbers alike
    text = fit_with_ids("cpu", np.array([f"u{j}" for j in range(25)], dtype=object), None, R)
    with pytest.raises(TypeError, match=r"user_ids are integers \(int64, e.g. 7\) but the "
                                        r"model's user_ids_ are strings \(object, e.g. 'u0'\)"):
        text.partial_fit_users(user_items=R[[0]], user_ids=np.array([7]))
    assert len(text.user_ids_) == 25
    assert model.user_factors_.shape == (25, 4)


@pytest.mark.parametrize("ids, message", [
    ([1, 1], "holds duplicates"), ([-1, 2], "-1 is negative"), ([], "is empty"),
])
def test_partial_fit_rejects_bad_ids(R, ids, message):
    model = model_for("cpu").fit(R)
    with pytest.raises(ValueError, match=message):
        model.partial_fit_users(ids, sp.csr_matrix((len(ids), 20)))


def test_partial_fit_new_users_beat_popularity(movielens):
    """50 users unseen in training, folded in from 80 % of their positives."""
    positives = binarize(movielens.ratings, 4)
    new = np.arange(893, 943)
    known = positives[:893]
    model = ALS(factors=64, regularization=0.001, alpha=10, iterations=20, random_state=42,
                backend="cpu", show_progress=False).fit(known)
    train_new, test_new = train_test_split(positives[new], test_fraction=0.2, random_state=42)
    model.partial_fit_users(new, train_new)
    assert model.user_factors_.shape[0] == 943

    class NewUsers:  # recommend with the new users' rows, scored on their test items
        def recommend(self, userid, user_items, N, filter_already_liked_items):
            return model.recommend(new[userid], user_items, N=N)

    als = ranking_metrics(NewUsers(), train_new, test_new, K=10)
    popularity = PopularityRecommender().fit(sp.vstack([known, train_new]).tocsr())

    class PopularNew:
        def recommend(self, userid, user_items, N, filter_already_liked_items):
            return popularity.recommend(new[userid], user_items, N=N)

    pop = ranking_metrics(PopularNew(), train_new, test_new, K=10)
    print(f"folded-in users: ALS recall@10 {als['recall']:.4f}, popularity "
          f"{pop['recall']:.4f}")
    assert als["recall"] > pop["recall"], (als, pop)


@pytest.mark.parametrize("solver", ["cg", "pcg"])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_cg_with_enough_steps_reaches_the_exact_solution(backend, feedback, solver):
    b = get_backend(backend)
    R = edge_case_matrix(5, negative=feedback == "implicit")
    F = np.random.default_rng(3).random((R.shape[1], 5))
    rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback=feedback, alpha=2.0))
    Fb = b.asarray(F)
    out = b.asarray(np.random.default_rng(4).random((R.shape[0], 5)))  # a warm start
    b.solve_rows(rows, Fb, b.gram(Fb), regularization=0.1, feedback=feedback, out=out,
                 solver=solver, cg_steps=15)
    assert_close(to_numpy(out), solve_rows_loop(R, F, 0.1, feedback=feedback, alpha=2.0),
                 np.float64)


@pytest.mark.parametrize("solver", ["cg", "pcg"])
def test_cg_started_at_the_solution_stays_there(backend, solver):
    """Rows of dislikes only (implicit: every preference 0, so b = 0) started from x = 0,
    the exact solution: the residual is exactly zero, and CG must leave x at 0 instead of
    dividing 0 by 0 (alpha = r.r / p.Ap, beta = r'.r' / r.r)."""
    b = get_backend(backend)
    R = -abs(edge_case_matrix(5))
    F = np.random.default_rng(5).random((R.shape[1], 5))
    rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback="implicit",
                               alpha=2.0))
    Fb = b.asarray(F)
    out = b.asarray(np.zeros((R.shape[0], 5)))
    b.solve_rows(rows, Fb, b.gram(Fb), regularization=0.1, feedback="implicit", out=out,
                 solver=solver, cg_steps=3)
    np.testing.assert_array_equal(to_numpy(out), 0.0)


def test_cg_fit_is_close_to_cholesky_on_movielens(real_backend, movielens):
    """CG with 3 steps ends within 1 % of the exact solver's loss after 15 iterations;
    preconditioned CG with as many within 0.05 % (measured on the CPU: +0.50 % and
    +0.02 %), and its loss never rises."""
    train = binarize(movielens.ratings, 4)
    params = dict(factors=64, regularization=0.001, alpha=10, iterations=15, random_state=42,
                  backend=real_backend, show_progress=False)
    exact = ALS(**params).fit(train).loss_history_[-1]
    cg = ALS(solver="cg", cg_steps=3, **params).fit(train).loss_history_[-1]
    pcg_losses = ALS(solver="pcg", cg_steps=3, **params).fit(train).loss_history_
    pcg = pcg_losses[-1]
    print(f"final loss: Cholesky {exact:.2f}, CG(3) {cg:.2f} ({cg / exact - 1:+.3%}), "
          f"PCG(3) {pcg:.2f} ({pcg / exact - 1:+.3%})")
    assert exact <= pcg * (1 + 1e-6) and pcg * 1.002 < cg
    assert cg <= exact * 1.01
    assert pcg <= exact * 1.0005
    assert all(b <= a * (1 + 1e-6) for a, b in zip(pcg_losses, pcg_losses[1:]))


def test_solver_parameters_are_checked(R):
    with pytest.raises(ValueError, match="solver='lu': expected one of 'cholesky', 'cg'"):
        model_for("cpu", solver="lu").fit(R)
    with pytest.raises(ValueError, match="cg_steps=0: must be >= 1"):
        model_for("cpu", solver="cg", cg_steps=0).fit(R)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_cpu_cg_blocks_and_threads_do_not_change_results(feedback, monkeypatch):
    """The same CG steps whatever the blocks (one row each, or all of a length bucket) and
    whether the blocks run on one thread or several."""
    from gpu_als.backends import CPUBackend, cpu

    R = edge_case_matrix(6, negative=feedback == "implicit")
    F = np.random.default_rng(5).random((R.shape[1], 6))
    rows = weighted_rows(check_user_items(R, np.float64), feedback=feedback, alpha=2.0)
    results = []
    for backend, parallel_from in ((CPUBackend(), None), (CPUBackend(block_elements=6), None),
                                   (CPUBackend(num_threads=3, block_elements=6), 0)):
        if parallel_from is not None:
            monkeypatch.setattr(cpu, "CG_PARALLEL_ELEMENTS", parallel_from)
        out = np.random.default_rng(6).random((R.shape[0], 6))
        backend.solve_rows(rows, F, backend.gram(F), regularization=0.1, feedback=feedback,
                           out=out, solver="cg", cg_steps=3)
        results.append(out)
    np.testing.assert_allclose(results[1], results[0], atol=1e-12)
    np.testing.assert_allclose(results[2], results[0], atol=1e-12)


@pytest.mark.parametrize("k", [40, 100])
def test_gpu_cg_steps_match_the_cpu_cg_steps(k):
    """The same 3 CG steps from the same start on both backends (k > 32: the GPU kernel's
    per-entry dot products span several lane passes)."""
    from gpu_als.backends import CPUBackend

    from .conftest import emulated_backend

    R = edge_case_matrix(k)
    F = np.random.default_rng(7).random((R.shape[1], k)) * 0.3
    start = np.random.default_rng(8).random((R.shape[0], k))
    results = []
    for b in (CPUBackend(), emulated_backend()):
        rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback="implicit",
                                   alpha=2.0))
        Fb, out = b.asarray(F), b.asarray(start.copy())
        b.solve_rows(rows, Fb, b.gram(Fb), regularization=0.1, feedback="implicit", out=out,
                     solver="cg", cg_steps=3)
        results.append(to_numpy(out))
    np.testing.assert_allclose(results[1], results[0], rtol=0, atol=1e-9)


def test_a_fold_in_matrix_of_the_wrong_width_names_what_its_columns_are():
    R = random_interactions(12, 9, 0.4, seed=2)
    model = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(R)
    with pytest.raises(ValueError, match=r"user_items has shape \(1, 8\), expected \(1, 9\): "
                                         r".*one column per item"):
        model.partial_fit_users([0], sp.csr_matrix((1, 8)))
    with pytest.raises(ValueError, match=r"item_users has shape \(1, 9\), expected \(1, 12\): "
                                         r".*one column per user"):
        model.partial_fit_items([0], sp.csr_matrix((1, 9)))
