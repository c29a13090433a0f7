"""ALS.recommend_frame, similar_items_frame and similar_users_frame: queries by original ids
as DataFrames (the tables that `gpu-als recommend` and `gpu-als similar` write), checked
against recommend() and similar_items() on factor rows."""

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, NotFittedError, from_dataframe

from .conftest import cudf_stand_in, random_interactions

pd = pytest.importorskip("pandas")


def frame_of(R, user_ids, item_ids):
    """The stored entries of ``R`` as (user, item, value) rows named by the ids."""
    coo = R.tocoo()
    return pd.DataFrame({"user": np.asarray(user_ids)[coo.row],
                         "item": np.asarray(item_ids)[coo.col], "value": coo.data})


@pytest.fixture(scope="module")
def clicks():
    """Interactions of 30 users (string ids) with 20 items (integer ids)."""
    R = random_interactions(30, 20, 0.25, seed=4)
    return frame_of(R, [f"u{u:02d}" for u in range(30)], np.arange(20) * 7)


def fitted(df, backend="cpu"):
    return ALS(factors=4, iterations=4, backend=backend, random_state=0,
               show_progress=False).fit(df)


def expected_rows(model, rows, matrix, N, **options):
    """(user id, item id, rank, score) of model.recommend on factor rows, -1s left out."""
    ids, scores = model.recommend(rows, matrix, N=N, **options)
    found = []
    for j, row in enumerate(rows if not options.get("recalculate_user") else range(len(ids))):
        for rank, (item, score) in enumerate(zip(ids[j], scores[j]), start=1):
            if item >= 0:
                found.append((row, model.item_ids_[item], rank, score))
    return found


def rows_of(frame):
    return list(frame.itertuples(index=False, name=None))


def test_known_users_get_what_recommend_gives_them(backend, clicks):
    model = fitted(clicks, backend)
    frame = model.recommend_frame(interactions=clicks, N=5)
    assert list(frame.columns) == ["user", "item", "rank", "score"]
    matrix, users, _ = from_dataframe(clicks, item_ids=model.item_ids_)
    rows = model.user_rows(users)
    want = [(model.user_ids_[r], item, rank, score)
            for r, item, rank, score in expected_rows(model, rows, matrix, 5)]
    got = rows_of(frame)
    assert [g[:3] for g in got] == [w[:3] for w in want] and len(got) == 30 * 5
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-6)
    # none of a user's own items is recommended
    liked = set(zip(clicks["user"], clicks["item"]))
    assert not any((user, item) in liked for user, item, _, _ in got)

    # liked items kept
    kept = model.recommend_frame(interactions=clicks, N=5, filter_already_liked_items=False)
    want = expected_rows(model, rows, matrix, 5, filter_already_liked_items=False)
    assert [g[1:3] for g in rows_of(kept)] == [w[1:3] for w in want]
    assert any((user, item) in liked for user, item, _, _ in rows_of(kept))


def test_new_users_are_folded_in_from_their_interactions(clicks):
    model = fitted(clicks)
    before = model.user_factors_.copy()
    new = frame_of(random_interactions(3, 20, 0.3, seed=9), ["n1", "n2", "n3"],
                   np.arange(20) * 7)
    both = pd.concat([clicks[clicks["user"] == "u05"], new])
    frame = model.recommend_frame(interactions=both, N=4)
    matrix, users, _ = from_dataframe(new, item_ids=model.item_ids_)
    folded = expected_rows(model, np.arange(3), matrix, 4, recalculate_user=True)
    want = [(users[j], item, rank, score) for j, item, rank, score in folded]
    got = [row for row in rows_of(frame) if row[0] != "u05"]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-5)
    assert [row[0] for row in rows_of(frame)][-4:] == ["u05"] * 4  # in the order of the ids
    np.testing.assert_array_equal(model.user_factors_, before)  # the model is unchanged
    assert len(model.user_ids_) == 30


def test_named_users_in_the_order_given_each_once_without_interactions(clicks):
    model = fitted(clicks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no interactions: no rows of unknown items
        frame = model.recommend_frame(["u07", "u02", "u07"], N=3)
    want = expected_rows(model, model.user_rows(["u07", "u02"]), None, 3,
                         filter_already_liked_items=False)
    assert [row[:3] for row in rows_of(frame)] == [
        (model.user_ids_[r], item, rank) for r, item, rank, _ in want]
    assert list(model.recommend_frame("u02", N=3)["item"]) == list(frame["item"][3:])
    # ids that do not sort together (None among text): each once all the same, the one
    # the model lacks warned of (np.unique, sorting them, raised a TypeError)
    with pytest.warns(UserWarning, match=r"no recommendations for 1 of the users: .* \(None\)"):
        mixed = model.recommend_frame(np.array(["u07", None, "u02", "u07"], object), N=3)
    pd.testing.assert_frame_equal(mixed, frame)
    every_item = model.recommend_frame("u02", N=50)  # nothing filtered: all 20 items
    assert sorted(every_item["item"]) == sorted(model.item_ids_)
    # no users named, no interactions: every user of the model, nothing filtered
    everyone = model.recommend_frame(N=2)
    assert list(everyone["user"]) == list(np.repeat(model.user_ids_, 2))


def test_no_users_or_interactions_without_rows_ask_for_no_recommendations(backend, clicks):
    """Interactions without rows filter nothing and fold nobody in: named users get what
    they get without them, and no users named are none asked for, answered by a frame
    without rows, as no users named are (and as similar_items_frame answers no items).
    Both raised, one "df has no rows: there is nothing to learn from", the other "none of
    the 0 users is in the model ... (e.g. )" (found by a sweep of pandas against polars)."""
    model = fitted(clicks, backend)
    none = clicks.head(0)
    pd.testing.assert_frame_equal(model.recommend_frame(["u07", "u02"], none, N=3),
                                  model.recommend_frame(["u07", "u02"], N=3))
    for frame in (model.recommend_frame(interactions=none), model.recommend_frame([]),
                  model.recommend_frame([], clicks), model.recommend_users_frame([]),
                  model.recommend_users_frame(interactions=none)):
        assert len(frame) == 0 and len(frame.columns) == 4
    assert list(model.recommend_frame([], clicks).columns) == ["user", "item", "rank", "score"]
    pd.testing.assert_frame_equal(  # an item named is ranked for as without interactions
        model.recommend_users_frame([model.item_ids_[0]], none, N=3),
        model.recommend_users_frame([model.item_ids_[0]], N=3))
    with pytest.raises(ValueError, match=r"^user 'zz' is not in the model and has no "
                                         r"interactions with its items to fold in$"):
        model.recommend_frame(["zz"], none)


def test_users_named_in_another_type_of_datetime_are_filtered_as_any_other(clicks):
    """Users named by pandas Timestamps (an object array) among interactions whose user
    column holds datetimes: their own items are left out, as for ids named as text. The
    lookup of the frame's users among the ones named used to find none of them."""
    days = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(30), "D")
    stamped = clicks.assign(user=clicks["user"].map(dict(zip(sorted(set(clicks["user"])),
                                                             days))))
    model = fitted(stamped)
    user = days[3]
    want = model.recommend_frame([user.isoformat()], stamped, N=5)
    for named in (user, user.to_pydatetime(), np.datetime64(user)):
        got = model.recommend_frame([named], stamped, N=5)
        pd.testing.assert_frame_equal(got, want)
        assert set(got["item"]).isdisjoint(stamped[stamped["user"] == user]["item"])


def test_fewer_items_than_n_give_fewer_rows_never_a_padding_id(clicks):
    """recommend pads with -1, which model.item_ids_[-1] would read as the last item."""
    model = fitted(clicks)
    user = clicks[clicks["user"] == "u03"]
    frame = model.recommend_frame(interactions=user, N=50)
    assert len(frame) == 20 - len(user)
    assert list(frame["rank"]) == list(range(1, 21 - len(user)))
    assert set(frame["item"]).isdisjoint(user["item"])
    assert set(frame["item"]) | set(user["item"]) == set(model.item_ids_)


def test_users_and_items_the_model_lacks_are_counted_in_warnings(clicks):
    model = fitted(clicks)
    odd = pd.DataFrame({"user": ["u01", "u01", "zed", "new"],
                        "item": [0, 999, 998, 7], "value": 1.0})
    with pytest.warns(UserWarning) as caught:
        frame = model.recommend_frame(["u01", "zed", "new", "ghost"], odd, N=2)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        "no recommendations for 2 of the users: not in the model and no interactions with "
        "its items to fold in ('zed', 'ghost')",
        "rows of interactions that name items the model lacks: 2 left out"]
    assert list(frame["user"]) == ["u01", "u01", "new", "new"]
    assert 0 not in set(frame["item"][:2]) and 7 not in set(frame["item"][2:])
    # a known user without rows in the interactions (the model's first, at row 0) is
    # recommended for from its factors, and is not among those skipped
    first = model.user_ids_[0]
    assert first not in set(odd["user"])
    with pytest.warns(UserWarning) as caught:
        frame = model.recommend_frame(["zed", first, "ghost"], odd, N=2)
    assert sorted(str(w.message) for w in caught)[0] == messages[0]
    ids, _ = model.recommend(0, N=2, filter_already_liked_items=False)
    assert list(frame["user"]) == [first] * 2
    assert list(frame["item"]) == list(model.item_ids_[ids])
    with pytest.raises(ValueError, match="none of the 2 users is in the model or has "
                                         "interactions with its items to fold in"):
        model.recommend_frame(["ghost", "zed"], odd[odd["user"] == "zed"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        model.recommend_frame(interactions=clicks, N=1)


def test_repeated_ratings_of_the_users_asked_for_are_warned_of(clicks):
    """For a model of ratings, interactions that repeat a (user, item) pair are summed (two
    ratings of 4 fold in as one of 8): warned of, counting the rows of the users asked
    for only; counts (implicit feedback) are summed rightly, without a word."""
    twice = pd.DataFrame({"user": ["u01", "u01", "u02", "u02"], "item": [0, 0, 7, 14],
                          "value": [4.0, 4.0, 3.0, 5.0]})
    ratings = ALS(factors=4, iterations=2, feedback="explicit", backend="cpu",
                  random_state=0, show_progress=False).fit(clicks)
    with pytest.warns(UserWarning, match=r"^1 of the 2 rows repeat a \(user, item\) pair"):
        ratings.recommend_frame(["u01"], twice, N=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ratings.recommend_frame(["u02"], twice, N=2)  # u01's pair is not asked for
        fitted(clicks).recommend_frame(["u01"], twice, N=2)


def test_interactions_of_other_table_libraries_are_read_through_to_pandas(clicks):
    """A pyarrow Table, and cuDF's DataFrame (a stand-in from a module named cudf, whose
    columns cannot be read as NumPy arrays), as fit(df) reads them."""
    pa = pytest.importorskip("pyarrow")
    model = fitted(clicks)
    expected = model.recommend_frame(interactions=clicks, N=3)

    for table in (pa.Table.from_pandas(clicks), cudf_stand_in(clicks)):
        pd.testing.assert_frame_equal(model.recommend_frame(interactions=table, N=3),
                                      expected)


def test_polars_interactions_give_a_polars_frame(clicks):
    """polars in, polars out: the rows the same pandas interactions give, new users folded
    in alike; the ids in their polars types."""
    pl = pytest.importorskip("polars")
    model = fitted(clicks)
    newcomer = pd.DataFrame({"user": ["new"] * 3, "item": [0, 7, 14], "value": 1.0})
    both = pd.concat([clicks, newcomer], ignore_index=True)
    expected = model.recommend_frame(["u03", "new", "u01"], both, N=3)
    got = model.recommend_frame(["u03", "new", "u01"], pl.from_pandas(both), N=3)
    assert isinstance(got, pl.DataFrame)
    assert got.columns == ["user", "item", "rank", "score"]
    assert (got["user"].dtype, got["item"].dtype, got["rank"].dtype) == (pl.String,
                                                                          pl.Int64, pl.Int64)
    assert got["user"].to_list() == expected["user"].tolist() == ["u03"] * 3 + ["new"] * 3 \
        + ["u01"] * 3
    assert got["item"].to_list() == expected["item"].tolist()
    np.testing.assert_array_equal(got["score"].to_numpy(), expected["score"].to_numpy())
    assert isinstance(model.recommend_frame(["u03"], N=3), pd.DataFrame)  # no frame given
    # every item filtered: no rows, but the columns typed as the ids (not polars' Object),
    # so that the frame concatenates with others
    everything = pl.DataFrame({"user": ["u03"] * 20, "item": np.arange(20) * 7})
    empty = model.recommend_frame(["u03"], everything, N=3)
    assert empty.shape == (0, 4)
    assert empty.schema == got.schema
    assert pl.concat([got, empty]).shape == got.shape


def test_a_model_without_ids_is_named_by_factor_rows(clicks):
    R = random_interactions(30, 20, 0.25, seed=4)
    model = ALS(factors=4, iterations=4, backend="cpu", random_state=0,
                show_progress=False).fit(R)
    frame = model.recommend_frame([4, 1], frame_of(R, np.arange(30), np.arange(20)), N=3)
    ids, scores = model.recommend([4, 1], R[[4, 1]], N=3)
    assert list(frame["user"]) == [4] * 3 + [1] * 3  # in the order given
    # ids typed as text (as on a command line) come back as the model has them
    assert list(model.recommend_frame(["4", "1"], N=3)["user"]) == [4] * 3 + [1] * 3
    np.testing.assert_array_equal(frame["item"], ids.ravel())
    np.testing.assert_allclose(frame["score"], scores.ravel(), rtol=1e-6)


def test_bad_arguments_are_refused(clicks):
    model = fitted(clicks)
    with pytest.raises(ValueError, match="N=0: must be >= 1"):
        model.recommend_frame(N=0)
    with pytest.raises(ValueError, match=r"users must be one id or 1-D, got shape \(1, 2\)"):
        model.recommend_frame([["u01", "u02"]])
    with pytest.raises(TypeError, match=r"users is a DataFrame: pass a table of \(user, item, "
                                        r"value\) rows as interactions="):
        model.recommend_frame(clicks)
    with pytest.raises(ValueError, match="column 'who'"):
        model.recommend_frame(interactions=clicks, user_col="who")
    matrix = from_dataframe(clicks).matrix
    with pytest.raises(TypeError, match="interactions must be a DataFrame of .user, item, "
                                        "value. rows, got csr_matrix; for a matrix"):
        model.recommend_frame(interactions=matrix)
    pl = pytest.importorskip("polars")
    with pytest.raises(TypeError, match=r"interactions is a polars LazyFrame, whose rows are "
                                        r"not there until it is evaluated: pass "
                                        r"interactions.collect\(\)"):
        model.recommend_frame(interactions=pl.from_pandas(clicks).lazy())
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        ALS().recommend_frame(N=1)


def test_allowlists_and_blocklists_of_item_ids(clicks):
    model = fitted(clicks)
    allowed = [0, 7, 14, 21, 28, 35, 42, 999]  # 999: not in the model, ignored
    frame = model.recommend_frame(interactions=clicks, N=3, items=allowed,
                                  filter_items=[14, 998])
    matrix, users, _ = from_dataframe(clicks, item_ids=model.item_ids_)
    rows = model.user_rows(users)
    want = expected_rows(model, rows, matrix, 3, items=[0, 1, 3, 4, 5, 6])  # rows: ids / 7
    assert [row[1:3] for row in rows_of(frame)] == [w[1:3] for w in want]
    assert set(frame["item"]) <= {0, 7, 21, 28, 35, 42}
    blocked = model.recommend_frame(interactions=clicks, N=3, filter_items=[0, 7])
    want = expected_rows(model, rows, matrix, 3, filter_items=[0, 1])
    assert [row[1:3] for row in rows_of(blocked)] == [w[1:3] for w in want]
    nothing = model.recommend_frame(interactions=clicks, filter_items=model.item_ids_)
    assert len(nothing) == 0 and list(nothing.columns) == ["user", "item", "rank", "score"]
    with pytest.raises(ValueError, match=r"the model has none of the 2 items to recommend "
                                         r"among \(e.g. 'a', 'b'\)"):
        model.recommend_frame(interactions=clicks, items=["a", "b"])
    with pytest.raises(ValueError, match=r"the model lacks item 'a', the only item to "
                                         r"recommend among"):
        model.recommend_frame(interactions=clicks, items=["a"])


def users_by_loop(model, item_factors, liked=frozenset(), N=5, users=None):
    """(item, user, rank, score) rows: for each item (an id and its factors), the users
    with the highest ``x_u . y_i`` (among ``users`` if given), those that ``liked`` pairs
    it with left out, by a loop over the users."""
    X = np.asarray(model.user_factors_, np.float64)
    found = []
    for item, y in item_factors:
        scores = X @ np.asarray(y, np.float64)
        ranked = [u for u in np.argsort(-scores, kind="stable")
                  if (model.user_ids_[u], item) not in liked
                  and (users is None or model.user_ids_[u] in users)][:N]
        found += [(item, model.user_ids_[u], rank, scores[u])
                  for rank, u in enumerate(ranked, start=1)]
    return found


def test_users_are_ranked_for_each_item_by_their_scores(backend, clicks):
    """recommend_users_frame: each item's best users by ``x_u . y_i`` (a loop over the
    users), its own users in the interactions left out unless asked; named items in the
    order given; an allowlist and a blocklist of users. The model is left as it was."""
    model = fitted(clicks, backend)
    before = model.to_cpu()
    Y = before.item_factors_
    liked = set(zip(clicks["user"], clicks["item"]))
    everyone = list(zip(model.item_ids_, Y))
    frame = model.recommend_users_frame(interactions=clicks, N=5)
    assert list(frame.columns) == ["item", "user", "rank", "score"]
    want = users_by_loop(model.to_cpu(), everyone, liked)
    got = rows_of(frame)
    assert [g[:3] for g in got] == [w[:3] for w in want] and len(got) == 20 * 5
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-5)
    assert not any((user, item) in liked for item, user, _, _ in got)
    kept = model.recommend_users_frame(interactions=clicks, N=5,
                                       filter_already_liked_users=False)
    assert [g[:3] for g in rows_of(kept)] == \
        [w[:3] for w in users_by_loop(model.to_cpu(), everyone)]
    # items named (each once, in this order), no interactions: every user ranked
    named = model.recommend_users_frame([14, 0, 14], N=3)
    assert [g[:3] for g in rows_of(named)] == [w[:3] for w in users_by_loop(
        model.to_cpu(), [everyone[2], everyone[0]], N=3)]
    allowed = {"u01", "u02", "u03", "u04", "u05"}
    chosen = model.recommend_users_frame([14], N=3, users=sorted(allowed) + ["nobody"],
                                         filter_users=["u02"])
    assert [g[:3] for g in rows_of(chosen)] == [w[:3] for w in users_by_loop(
        model.to_cpu(), [everyone[2]], N=3, users=allowed - {"u02"})]
    everyone_once = model.recommend_users_frame(N=1)
    assert list(everyone_once["item"]) == list(model.item_ids_)
    np.testing.assert_array_equal(model.to_cpu().user_factors_, before.user_factors_)
    np.testing.assert_array_equal(model.to_cpu().item_factors_, before.item_factors_)
    assert list(model.recommend_frame(["u03"], N=2).columns)[0] == "user"


def test_new_items_are_folded_in_to_rank_users_for(clicks):
    """An item the model lacks is folded in from its users (``recalculate_item``'s
    factors); rows of users the model lacks are left out, and items with nothing to fold
    in from are skipped, each warned of with its count."""
    model = fitted(clicks)
    new = pd.DataFrame({"user": ["u01", "u04", "u09", "u22", "stranger"],
                        "item": [999] * 4 + [0], "value": [3.0, 1.0, 2.0, 5.0, 1.0]})
    with pytest.warns(UserWarning, match="rows of interactions that name users the model "
                                         "lacks: 1 left out"):
        frame = model.recommend_users_frame(interactions=new, N=4)
    known = new[new["user"] != "stranger"]
    rows = model.user_rows(list(known["user"]))
    item_users = np.zeros((1, 30))
    item_users[0, rows[:4]] = known["value"][:4]
    y = model.recalculate_item(0, sp.csr_matrix(item_users))
    want = users_by_loop(model, [(0, model.item_factors_[0]), (999, y)],
                         liked=set(zip(known["user"], known["item"])), N=4)
    assert [g[:3] for g in rows_of(frame)] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in rows_of(frame)], [w[3] for w in want],
                               rtol=1e-5)
    with pytest.warns(UserWarning, match=r"no recommendations for 1 of the items: not in the "
                                         r"model and no interactions with its users to fold "
                                         r"in \(998\)"):
        model.recommend_users_frame([998, 7], N=2)
    with pytest.raises(ValueError, match="item 998 is not in the model and has no "
                                         "interactions with its users to fold in"):
        model.recommend_users_frame(998)


def test_ranking_users_for_items_refuses_bad_arguments(clicks):
    model = fitted(clicks)
    with pytest.raises(ValueError, match="N=0: must be >= 1"):
        model.recommend_users_frame(N=0)
    with pytest.raises(TypeError, match="filter_already_liked_users must be True or False"):
        model.recommend_users_frame(filter_already_liked_users="yes")
    with pytest.raises(TypeError, match=r"items is a DataFrame: pass a table of \(item, user, "
                                        r"value\) rows as interactions="):
        model.recommend_users_frame(clicks)
    with pytest.raises(ValueError, match=r"items must be one id or 1-D"):
        model.recommend_users_frame([[0, 7]])
    with pytest.raises(ValueError, match=r"the model lacks user 'a', the only user to "
                                         r"recommend among"):
        model.recommend_users_frame(users=["a"])
    with pytest.raises(TypeError, match=r"^interactions must be a DataFrame of \(item, user, "
                                        r"value\) rows, got csr_matrix$"):
        model.recommend_users_frame(interactions=from_dataframe(clicks).matrix)
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        ALS().recommend_users_frame(N=1)
    pl = pytest.importorskip("polars")
    polars_frame = model.recommend_users_frame(interactions=pl.from_pandas(clicks), N=2)
    assert isinstance(polars_frame, pl.DataFrame)
    pandas_frame = model.recommend_users_frame(interactions=clicks, N=2)
    assert polars_frame["user"].to_list() == list(pandas_frame["user"])


def test_queries_by_id_find_ids_through_the_models_kept_lookups(clicks, monkeypatch):
    """recommend_frame, recommend_users_frame, partial_fit_users(df), predict_frame and
    the similar_*_frame queries find ids through the lookups the model keeps (built
    once), not by hashing all its ids on each call (16 ms a call at 27,000 item ids); an
    item column of mixed types is still matched as text, as before."""
    from gpu_als import _id_queries, data

    model = fitted(clicks)
    one = clicks[clicks["user"] == "u05"]
    model.recommend_frame(interactions=one, N=3)  # builds the lookups
    hashed = []

    def counting(known, ids):
        hashed.append(len(np.asarray(known)))
        return id_positions(known, ids)

    id_positions = data.id_positions
    monkeypatch.setattr(data, "id_positions", counting)
    monkeypatch.setattr(_id_queries, "id_positions", counting)
    again = model.recommend_frame(interactions=one, N=3, items=[0, 7, 14, 21, 28])
    model.recommend_frame(["u05", "u06"], N=3)
    model.recommend_users_frame([7], interactions=one, N=3, users=["u01", "u05"])
    model.partial_fit_users(one.assign(user="new"))
    model.predict_frame(one)
    model.similar_items_frame([7], N=2)
    model.similar_users_frame(["u05"], N=2)
    assert max(hashed, default=0) < 20  # (the few ids of a query, among themselves)
    assert set(again["item"]) <= {0, 7, 14, 21, 28} - set(one["item"])
    mixed = pd.DataFrame({"user": ["u01", "u01"], "item": np.array([7, "14"], dtype=object)})
    shown = model.recommend_frame(interactions=mixed, N=20)
    assert not {7, 14} & set(shown["item"]) and len(shown) == 18  # both found, as text
    assert 20 in hashed  # the fallback for ids of several types


def test_similar_items_by_id_leave_the_item_itself_out(backend, clicks):
    model = fitted(clicks, backend)
    frame = model.similar_items_frame([14, 7], N=4)
    assert list(frame.columns) == ["item", "similar_item", "rank", "score"]
    rows = model.item_rows([14, 7])
    ids, scores = model.similar_items(rows, N=5)
    want = []
    for j, row in enumerate(rows):
        others = [(model.item_ids_[i], s) for i, s in zip(ids[j], scores[j]) if i != row]
        want += [(model.item_ids_[row], item, rank, s)
                 for rank, (item, s) in enumerate(others[:4], start=1)]
    got = rows_of(frame)
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-5)
    # items named twice (7 as a number and as the text a command line gives): once each
    pd.testing.assert_frame_equal(
        model.similar_items_frame(np.array([14, 7, 14, "7"], object), N=4), frame)
    # every item by default; N above the other items: all 19 of them, never itself
    everything = model.similar_items_frame(N=100)
    assert len(everything) == 20 * 19
    assert not (everything["item"] == everything["similar_item"]).any()
    assert list(everything["rank"][:19]) == list(range(1, 20))
    # in similar_items' order, the item itself taken out (20 to sort: not insertion sort)
    ranked, _ = model.similar_items(np.arange(20), N=20)
    assert list(everything["similar_item"]) == [
        model.item_ids_[i] for row, found in enumerate(ranked) for i in found
        if i != row]


def test_queries_go_in_batches_counted_on_a_progress_bar(clicks, monkeypatch):
    """recommend_frame and the similar frames query QUERY_BATCH ids a call: the same
    rows as in one call, and a bar that counts every query once."""
    import tqdm.auto

    from gpu_als import _id_queries

    from .conftest import ProgressBars

    model = fitted(clicks)
    whole = [model.recommend_frame(interactions=clicks, N=3), model.similar_items_frame(N=2),
             model.similar_users_frame(N=2)]
    progress = ProgressBars()
    monkeypatch.setattr(tqdm.auto, "tqdm", progress)
    monkeypatch.setattr(_id_queries, "QUERY_BATCH", 7)
    batched = [model.recommend_frame(interactions=clicks, N=3),
               model.similar_items_frame(N=2), model.similar_users_frame(N=2)]
    for one, parts in zip(whole, batched):
        pd.testing.assert_frame_equal(parts, one)
    assert [(bar.total, bar.counted) for bar in progress.bars] == [
        (30, 30), (0, 0), (20, 20), (0, 0), (30, 30), (0, 0)]  # each: known, none folded in
    # a model made with show_progress=False shows no bar; with True, a bar where standard
    # error is a terminal (tqdm's disable=None)
    assert [bar.disable for bar in progress.bars] == [True] * 6
    progress.bars.clear()
    model.show_progress = True
    model.recommend_frame(interactions=clicks, N=3)
    model.similar_items_frame(N=2)
    assert [bar.disable for bar in progress.bars] == [None] * 4


def test_similar_frames_fold_in_what_the_model_lacks_from_interactions(backend, clicks):
    """similar_items_frame(items, N, interactions): an item the model lacks is folded in
    from its users there (similar_items' recalculate_item), a known one keeps its
    factors and leaves itself out; similar_users_frame alike (a loop of cosines against
    recalculate_user's factors). Rows naming what the model lacks are counted."""
    model = fitted(clicks, backend)
    cpu = model.to_cpu()
    new = pd.DataFrame({"user": ["u01", "u04", "u09", "stranger"], "item": [500] * 4,
                        "value": [2.0, 1.0, 3.0, 1.0]})
    with pytest.warns(UserWarning, match="rows of interactions that name users the model "
                                         "lacks: 1 left out"):
        frame = model.similar_items_frame([7, 500], N=4, interactions=new)
    assert list(frame["item"]) == [7] * 4 + [500] * 4
    known = model.similar_items_frame([7], N=4)
    assert [row[1:3] for row in rows_of(frame)[:4]] == [row[1:3] for row in rows_of(known)]
    item_users = sp.csr_matrix(([2.0, 1.0, 3.0], ([0, 0, 0], model.user_rows(
        ["u01", "u04", "u09"]))), shape=(1, 30))
    ids, scores = cpu.similar_items(0, N=4, recalculate_item=True, item_users=item_users)
    assert list(frame["similar_item"][4:]) == list(model.item_ids_[ids])
    np.testing.assert_allclose(frame["score"][4:], scores, rtol=1e-4, atol=1e-6)
    everyone = model.similar_items_frame(interactions=new[:3], N=2)  # its items: just 500
    assert list(everyone["item"]) == [500, 500]

    seen = clicks[clicks["user"] == "u03"].assign(user="newcomer")
    users = model.similar_users_frame(["newcomer"], N=3, interactions=seen)
    x = cpu.recalculate_user(0, from_dataframe(seen, item_ids=model.item_ids_).matrix)
    X = np.asarray(cpu.user_factors_, np.float64)
    cosines = X @ x / np.linalg.norm(X, axis=1) / np.linalg.norm(x)
    best = np.argsort(-cosines, kind="stable")[:3]
    assert list(users["similar_user"]) == list(model.user_ids_[best])
    np.testing.assert_allclose(users["score"], cosines[best], rtol=1e-4, atol=1e-6)

    pl = pytest.importorskip("polars")
    assert isinstance(model.similar_items_frame([500], N=2, interactions=pl.from_pandas(
        new[:3])), pl.DataFrame)
    with pytest.raises(ValueError, match=r"the model has no item 998 \(1 of the 2 given\) "
                                         r"and no interactions with its users to fold in"):
        model.similar_items_frame([500, 998], interactions=new[:3])
    with pytest.raises(TypeError, match="interactions must be a DataFrame of .user, item, "
                                        "value. rows, got csr_matrix"):
        model.similar_items_frame([7], interactions=item_users)


def test_similar_users_by_id(clicks):
    model = fitted(clicks)
    frame = model.similar_users_frame("u03", N=3)
    ids, scores = model.similar_users(model.user_rows("u03"), N=4)
    assert list(frame["user"]) == ["u03"] * 3
    assert list(frame["similar_user"]) == list(model.user_ids_[ids[1:]])
    np.testing.assert_allclose(frame["score"], scores[1:], rtol=1e-5)
    # N=1: the one most similar other user
    pd.testing.assert_frame_equal(model.similar_users_frame("u03", N=1), frame[:1])
    # ids typed as text come back as the model has them (a model without ids: its rows)
    R = random_interactions(30, 20, 0.25, seed=4)
    by_rows = ALS(factors=4, iterations=4, backend="cpu", random_state=0,
                  show_progress=False).fit(R)
    assert list(by_rows.similar_items_frame(["3"], N=2)["item"]) == [3, 3]


def test_factors_frames_give_each_ids_factor_row_as_a_copy(backend, clicks):
    """item_factors_frame / user_factors_frame: the factor row of each id, in the order
    asked (each once; text ids as the model has them), or all of them in the model's order;
    copies that the caller may change without changing the model."""
    model = fitted(clicks, backend)
    X, Y = model.to_cpu().user_factors_, model.to_cpu().item_factors_
    every = model.item_factors_frame()
    assert list(every.columns) == ["item", "factors"]
    assert list(every["item"]) == list(model.item_ids_)
    np.testing.assert_array_equal(np.stack(every["factors"]), Y)
    assert every["factors"][0].dtype == np.float32
    some = model.item_factors_frame(np.array([14, "7", 126, 14], object))
    assert list(some["item"]) == [14, 7, 126]  # (7 typed as text: the model's id 7)
    np.testing.assert_array_equal(np.stack(some["factors"]), Y[model.item_rows([14, 7, 126])])
    users = model.user_factors_frame("u03")
    assert list(users["user"]) == ["u03"] and list(users.columns) == ["user", "factors"]
    np.testing.assert_array_equal(users["factors"][0], X[model.user_rows("u03")])
    assert len(model.user_factors_frame([])) == 0
    for frame in (every, some, users):
        frame["factors"][0][:] = 123.0
    assert not (model.to_cpu().item_factors_ == 123.0).any()
    assert not (model.to_cpu().user_factors_ == 123.0).any()
    with pytest.raises(ValueError, match=r"the model has no item 999 \(1 of the 2 given\)"):
        model.item_factors_frame([7, 999])
    with pytest.raises(ValueError, match=r"users must be one id or 1-D, got shape \(1, 1\)"):
        model.user_factors_frame([["u01"]])
    # a model without ids: its factor rows are its ids; float64 factors stay float64
    R = random_interactions(30, 20, 0.25, seed=4)
    by_rows = ALS(factors=3, iterations=2, backend=backend, dtype=np.float64,
                  random_state=0, show_progress=False).fit(R)
    rows = by_rows.item_factors_frame(["3", 0])
    assert list(rows["item"]) == [3, 0] and rows["factors"][0].dtype == np.float64
    np.testing.assert_array_equal(np.stack(rows["factors"]),
                                  by_rows.to_cpu().item_factors_[[3, 0]])
    with pytest.raises(NotFittedError):
        ALS().item_factors_frame()


def test_without_pandas_the_frames_are_polars_and_without_both_an_import_error(
        clicks, monkeypatch):
    pl = pytest.importorskip("polars")
    model = fitted(clicks)
    expected = {"recommend": model.recommend_frame(["u03"], N=3),
                "users for items": model.recommend_users_frame([7, 14], N=3),
                "items": model.similar_items_frame([7, 14], N=2),
                "users": model.similar_users_frame("u03", N=2),
                "item factors": model.item_factors_frame([7, 14]),
                "explained": model.explain_frame("u03", clicks, [7, 14], N=2)}
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas: an ImportError
    got = {"recommend": model.recommend_frame(["u03"], N=3),
           "users for items": model.recommend_users_frame([7, 14], N=3),
           "items": model.similar_items_frame([7, 14], N=2),
           "users": model.similar_users_frame("u03", N=2),
           "item factors": model.item_factors_frame([7, 14]),
           "explained": model.explain_frame("u03", clicks, [7, 14], N=2)}
    for name, frame in got.items():
        assert isinstance(frame, pl.DataFrame), name
        assert frame.columns == list(expected[name].columns)
        for column in frame.columns:
            want = expected[name][column].to_numpy()
            np.testing.assert_array_equal(frame[column].to_numpy(),
                                          np.stack(want) if column == "factors" else want)
    assert got["item factors"].schema["factors"] == pl.Array(pl.Float32, 4)
    monkeypatch.setitem(sys.modules, "polars", None)
    for call, instead in ((lambda: model.recommend_frame(["u03"]), "recommend"),
                          (lambda: model.recommend_users_frame([7]), "predict"),
                          (lambda: model.similar_items_frame([7]), "similar_items"),
                          (lambda: model.similar_users_frame("u03"), "similar_users"),
                          (lambda: model.user_factors_frame(), "user_factors_"),
                          (lambda: model.explain_frame("u03", clicks, [7]), "explain")):
        with pytest.raises(ImportError, match=r"returns a DataFrame of pandas \(or polars\): "
                                              rf"pip install gpu-als\[pandas\] \(or use "
                                              rf"{instead}\)"):
            call()


def test_similar_frames_refuse_ids_the_model_lacks(clicks):
    model = fitted(clicks)
    with pytest.raises(ValueError, match=r"the model has no item 999 \(1 of the 2 given\)"):
        model.similar_items_frame([7, 999])
    first = model.item_ids_[0]  # row 0: known, however its row is written
    with pytest.raises(ValueError, match=r"the model has no item 999 \(1 of the 2 given\)"):
        model.similar_items_frame([first, 999])
    with pytest.raises(ValueError, match=r"no item 'a', 'b', 'c' \(3 of the 3 given\)"):
        model.similar_items_frame(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"no item 'a', 'b', 'c', \.\.\. \(4 of the 4"):
        model.similar_items_frame(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"users must be one id or 1-D, got shape \(1, 1\)"):
        model.similar_users_frame([["u01"]])
    with pytest.raises(ValueError, match="N=0: must be >= 1"):
        model.similar_users_frame(N=0)


# ---- predict_frame ----------------------------------------------------------------------

def test_predict_frame_scores_each_pair_as_predict_does(backend, clicks):
    """Every pair's score is predict() of its factor rows; the frame's other columns, its
    row order and its index are kept."""
    model = fitted(clicks, backend)
    pairs = clicks.sample(frac=1.0, random_state=0).set_index(np.arange(len(clicks)) * 3)
    pairs["note"] = "kept"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every pair known: no warning
        scored = model.predict_frame(pairs)
    assert list(scored.columns) == ["user", "item", "value", "note", "score"]
    pd.testing.assert_frame_equal(scored.drop(columns="score"), pairs)
    want = model.predict(model.user_rows(pairs["user"]), model.item_rows(pairs["item"]))
    assert scored["score"].dtype == np.float32
    np.testing.assert_array_equal(scored["score"].to_numpy(), want)
    assert "score" not in pairs.columns  # a new frame, not the caller's changed


def test_predict_frame_of_ratings_gives_the_rmse_of_evaluation(clicks):
    """An explicit model's predict_frame on held-out ratings: its RMSE is rmse()'s."""
    from gpu_als.evaluation import rmse

    ratings = clicks.assign(value=(clicks["value"] * 7) % 5 + 1)
    train = ratings.iloc[::2]
    test = pd.concat([ratings.iloc[1::2], pd.DataFrame({"user": ["new"], "item": [7],
                                                        "value": [3.0]})])
    model = ALS(factors=3, iterations=5, feedback="explicit", backend="cpu", random_state=0,
                show_progress=False).fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # test pairs the model lacks
        scored = model.predict_frame(test).dropna(subset=["score"])
    assert 0 < len(scored) < len(test)
    matrix, _, _ = from_dataframe(scored, user_ids=model.user_ids_, item_ids=model.item_ids_)
    by_frame = float(np.sqrt(((scored["score"] - scored["value"]) ** 2).mean()))
    assert by_frame == pytest.approx(rmse(model, matrix), rel=1e-6)


def test_predict_frame_gives_nan_for_pairs_the_model_lacks_and_counts_them(clicks):
    model = fitted(clicks)
    pairs = pd.DataFrame({"user": ["u01", "zoe", "u02", "amy", model.user_ids_[0]],
                          "item": [7, 7, 999, 14, model.item_ids_[0]]})  # row 0 is known
    with pytest.warns(UserWarning, match=r"3 of the 5 pairs name users or items the model "
                                         r"lacks \(2 users, e.g. 'zoe', 'amy'; 1 item, e.g. "
                                         r"999\): their score is NaN"):
        scored = model.predict_frame(pairs)
    assert list(np.isnan(scored["score"])) == [False, True, True, True, False]
    assert scored["score"][0] == model.predict(model.user_rows("u01"), model.item_rows(7))
    with pytest.warns(UserWarning, match=r"1 of the 1 pairs names a user or item the model "
                                         r"lacks \(1 item, e\.g\. 999\): their rating is NaN"):
        model.predict_frame(pairs.iloc[[2]], score_col="rating")


def test_predict_frame_of_other_tables_and_of_a_model_without_ids(clicks):
    """polars in, polars out; a pyarrow Table and cuDF's DataFrame (a stand-in) as pandas;
    a model fitted on a matrix is named by factor rows (ids typed as text too)."""
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    model = fitted(clicks)
    expected = model.predict_frame(clicks)
    got = model.predict_frame(pl.from_pandas(clicks))
    assert isinstance(got, pl.DataFrame) and got.columns == list(expected.columns)
    np.testing.assert_array_equal(got["score"].to_numpy(), expected["score"].to_numpy())
    for table in (pa.Table.from_pandas(clicks), cudf_stand_in(clicks)):
        pd.testing.assert_frame_equal(model.predict_frame(table), expected)
    empty = model.predict_frame(clicks.iloc[:0])
    assert list(empty.columns) == list(expected.columns) and len(empty) == 0

    R = random_interactions(30, 20, 0.25, seed=4)
    by_row = ALS(factors=4, iterations=2, backend="cpu", random_state=0,
                 show_progress=False).fit(R)
    with pytest.warns(UserWarning, match=r"1 of the 3 pairs .*\(1 user, e\.g\. 30\)"):
        scored = by_row.predict_frame(pd.DataFrame({"user": [4, 29, 30], "item": [1, 19, 2]}))
    np.testing.assert_array_equal(scored["score"][:2], by_row.predict([4, 29], [1, 19]))
    as_text = by_row.predict_frame(pd.DataFrame({"user": ["4"], "item": ["1"]}))
    assert as_text["score"][0] == scored["score"][0]


def test_predict_frame_refuses_bad_arguments(clicks):
    model = fitted(clicks)
    with pytest.raises(ValueError, match="pairs already has a column 'value': name the "
                                         "scores' column with score_col="):
        model.predict_frame(clicks, score_col="value")
    with pytest.raises(TypeError, match="score_col must be a str, got int"):
        model.predict_frame(clicks, score_col=1)
    with pytest.raises(ValueError, match=r"column 'who' not found; the DataFrame has "
                                         r"\['user', 'item', 'value'\]"):
        model.predict_frame(clicks, user_col="who")
    with pytest.raises(ValueError, match="user_col and item_col are both 'user'"):
        model.predict_frame(clicks, item_col="user")
    with pytest.raises(ValueError, match="column 'user' has 1 missing ids"):
        model.predict_frame(pd.DataFrame({"user": [None, "u01"], "item": [7, 7]}))
    with pytest.raises(TypeError, match="pairs must be a pandas or polars DataFrame .*got "
                                        "ndarray"):
        model.predict_frame(clicks.to_numpy())
    pl = pytest.importorskip("polars")
    with pytest.raises(TypeError, match=r"pairs is a polars LazyFrame, whose rows are not "
                                        r"there until it is evaluated: pass pairs.collect\(\)"):
        model.predict_frame(pl.from_pandas(clicks).lazy())
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        ALS().predict_frame(clicks)


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_counting_rows_is_warned_of_only_where_a_column_may_hold_the_values(library):
    """A table without a column 'value' counts each row as 1. That is warned of where one
    of its other columns may hold the values (numbers not named as a time, or a column
    named as a rating or amount, whatever it holds), with that column as the example; an
    event log's event type, session id and times are not such columns."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    event_log = pd.DataFrame({"user": [1, 1, 2], "item": [5, 6, 5],
                              "event_type": ["view", "cart", "view"],
                              "session": ["a", "a", "b"], "ts": pd.to_datetime([1, 2, 3], unit="D"),
                              "timestamp": [10, 20, 30], "day": [1, 1, 2]})

    def said(df, call):
        df = frames.from_pandas(df) if library == "polars" else df
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(df)
        return [str(w.message) for w in caught if "every row counts 1" in str(w.message)]

    def fit(df):
        return ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(df)

    for call in (from_dataframe, fit):
        assert said(event_log, call) == []
    assert said(event_log.assign(flag=[True, False, True]), from_dataframe) != []  # bools
    for extra, example in (({"price": 2.5}, "price"),
                           ({"rating": "4,5"}, "rating")):  # text, but named as the values
        message = said(event_log.assign(**extra), fit)
        assert len(message) == 1, message
        assert f"e.g. df.rename(columns={{{example!r}: 'value'}})" in message[0]


def test_frames_of_a_float64_model_take_values_beyond_float32(backend):
    """A model of float64 fitted on values of 1e45: the frames given to its queries, its
    partial fits and the metrics were read in float32, and refused "beyond float32's
    range ... or use dtype=float64". A model of float32 still refuses them, by name."""
    from gpu_als.evaluation import (
        PopularityRecommender,
        RandomRecommender,
        ranking_metrics,
        rmse,
    )

    R = random_interactions(30, 12, 0.4, seed=4, dtype=np.float64)
    R.data[:] = 1e45
    df = frame_of(R, np.arange(30), np.arange(12))
    # confidences of 1 + 10 (alpha 1e-44): with 1 + 1e45, a row shorter than k makes a
    # k x k system that no float64 Cholesky factorizes (the GPU's fused kernel takes such
    # rows where there are few); the CPU backend solves them in their own space
    model = ALS(factors=2, iterations=2, alpha=1e-44, dtype=np.float64, backend=backend,
                show_progress=False, random_state=0).fit(df)
    new = df[df["user"] < 5].assign(user=lambda d: d["user"] + 100)
    assert set(model.recommend_frame(interactions=new, N=2)["user"]) == set(new["user"])
    assert len(model.recommend_users_frame([0], interactions=df, N=2)) == 2
    assert model.similar_users_frame(interactions=new, N=2)["user"].nunique() == \
        new["user"].nunique()
    model.partial_fit_users(new)
    assert len(model.user_ids_) == 30 + new["user"].nunique()
    assert ranking_metrics(model, df.iloc[20:], df.iloc[:20], K=2,
                           show_progress=False)["users"] > 0
    with pytest.warns(UserWarning, match="rmse of a model fitted with feedback='implicit'"):
        assert np.isfinite(rmse(model, df))
    for baseline in (PopularityRecommender(), RandomRecommender(0)):  # (values unused)
        assert baseline.fit(df).recommend(np.arange(30), None, N=2,
                                          filter_already_liked_items=False)[0].shape == (30, 2)
    narrow = ALS(factors=2, iterations=2, backend="cpu", show_progress=False)
    with pytest.raises(ValueError, match=r"column 'value' holds \d+ value\(s\) beyond "
                                         r"float32's range .* or use dtype=float64$"):
        narrow.fit(df)
