"""ALS.explain: a score split over the user's items (Hu, Koren & Volinsky 2008, section 5)."""

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS

from .conftest import random_interactions, skip_or_fail
from .reference import nnls_rows_loop, row_system


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def interactions():
    R = random_interactions(40, 30, 0.2, seed=4, dtype=np.float64)
    R.data[::7] *= -1  # a few dislikes (implicit feedback: p = 0)
    return R


@pytest.fixture(scope="module")
def R():
    return interactions()


def fitted(backend, feedback="implicit", **params):
    R = interactions()
    if feedback == "explicit":
        R.data = np.abs(R.data) * 5
    confidence = {"alpha": 5.0} if feedback == "implicit" else {}  # (ratings have none)
    model = ALS(factors=6, iterations=3, regularization=0.1, feedback=feedback,
                backend=backend, dtype=np.float64, show_progress=False, random_state=0,
                **confidence, **params).fit(R)
    return model, R


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_contributions_sum_to_the_folded_in_score(backend, feedback):
    model, R = fitted(backend, feedback)
    user, item = 5, 11
    score, top, weights = model.explain(user, R, item, N=1000)
    x = to_numpy(model.recalculate_user(user, R[user]))
    y = to_numpy(model.item_factors_)[item]
    assert score == pytest.approx(float(x @ y), rel=1e-10)
    assert sum(c for _, c in top) == pytest.approx(score, rel=1e-10)
    liked = R[user].indices[R[user].data > 0] if feedback == "implicit" else R[user].indices
    assert sorted(i for i, _ in top) == sorted(liked)  # every liked item, nothing else
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)
    # the same from the user's row alone, and with the weights of the first call
    assert model.explain(999, R[user], item, N=1000) == (score, top, pytest.approx(weights))
    again, top_again, _ = model.explain(user, R[user], 3, user_weights=weights, N=2)
    fresh, fresh_top, _ = model.explain(user, R[user], 3, N=2)
    assert again == pytest.approx(fresh, rel=1e-12) and len(top_again) == 2
    assert [i for i, _ in top_again] == [i for i, _ in fresh_top]
    busy = sp.csr_matrix(np.ones((1, R.shape[1])))  # N's default, 10, for one liking 30
    assert model.explain(0, busy, item)[1] == model.explain(0, busy, item, N=1000)[1][:10]


def test_the_fitted_score_is_explained_for_a_training_row(backend):
    """After a user half-step the user's factors are exactly the fold-in of their row."""
    model, R = fitted(backend)
    model.partial_fit_users([8], R[8])  # x_8 solved against the final item factors
    score, _, _ = model.explain(8, R, 2)
    assert score == pytest.approx(float(model.predict([8], [2])[0]), rel=1e-10)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_a_nonnegative_models_score_is_split_over_its_free_factors(backend, feedback):
    """solver="nnls": the user's factors are the nonnegative solution (SciPy's ``nnls``
    here), whose free factors F (those above 0) solve A_FF x_F = b_F: item j contributes
    t_j y_iF^T A_FF^-1 y_jF, and the contributions sum to the score."""
    model, R = fitted(backend, feedback, solver="nnls")
    Y = to_numpy(model.item_factors_)
    user, item = 2, 11  # 4 free factors of 6 (implicit), 2 (explicit)
    row = R[user]
    conf = {"alpha": 5.0} if feedback == "implicit" else {"feedback": "explicit"}
    x = nnls_rows_loop(row, Y, 0.1, **conf)[0]
    free = x > 0
    assert 0 < free.sum() < 6  # some factors held at 0: else this is the test above
    A, _ = row_system(row, Y, Y.T @ Y, 0, 0.1, **conf)
    t = np.where(row.data > 0, 1 + 5 * row.data, 0) if feedback == "implicit" else row.data
    want = t * (Y[row.indices][:, free] @ np.linalg.solve(A[np.ix_(free, free)],
                                                          Y[item, free]))
    score, top, weights = model.explain(user, R, item, N=1000)
    assert score == pytest.approx(float(x @ Y[item]), rel=1e-8)
    liked = t != 0
    assert dict(top) == pytest.approx(dict(zip(row.indices[liked], want[liked])), rel=1e-8)
    assert not weights[~free].any() and not weights[:, ~free].any()
    np.testing.assert_allclose(weights[np.ix_(free, free)],
                               np.linalg.cholesky(A[np.ix_(free, free)]), rtol=1e-10)
    assert model.explain(user, row, 3, user_weights=weights, N=3)[:2] == \
        model.explain(user, row, 3, N=3)[:2]
    # the score of the fold-in, which solves the same problem by the fit's own solver
    folded = to_numpy(model.recalculate_user(user, row))
    assert score == pytest.approx(float(folded @ Y[item]), rel=1e-8)


def test_a_nonnegative_user_whose_factors_are_all_0():
    """Only dislikes (implicit, p = 0): b_u = 0, every factor is held at 0 and so is
    every contribution; the all-0 user_weights are a valid input again."""
    model, _ = fitted("cpu", solver="nnls")
    row = sp.csr_matrix(([-1.0, -2.0], ([0, 0], [3, 4])), shape=(1, 30))
    score, top, weights = model.explain(0, row, 7)
    assert score == 0.0 and top == [] and not weights.any()
    assert model.explain(0, row, 7, user_weights=weights)[:2] == (0.0, [])


def test_user_weights_that_explain_does_not_return_are_refused():
    """A zero on the diagonal is a held factor of solver="nnls" only, and then its row
    and column are 0: else the weights did not come from explain."""
    R = interactions()
    for solver in ("cholesky", "nnls"):
        model = ALS(factors=3, iterations=1, backend="cpu", show_progress=False,
                    solver=solver).fit(R)
        weights = np.tril(np.ones((3, 3)))
        weights[1, 1] = 0
        with pytest.raises(ValueError, match=r"^user_weights is not a Cholesky factor that "
                                             r"explain returns: pass what explain returned"):
            model.explain(0, R, 1, user_weights=weights)


def test_same_answers_as_the_implicit_library():
    try:
        from implicit.cpu.als import AlternatingLeastSquares as Implicit
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        skip_or_fail(f"implicit (dev extras) is not installed: {exc}")
    R = random_interactions(40, 30, 0.2, seed=4, dtype=np.float64)
    R.data[:] = 1  # 0/1: implicit's alpha=a is our alpha=a - 1
    ours = ALS(factors=6, iterations=2, regularization=0.1, alpha=4.0, backend="cpu",
               show_progress=False, random_state=0).fit(R)
    with threadpool_limits(1, "blas"):
        theirs = Implicit(factors=6, regularization=0.1, alpha=5.0, random_state=0)
    theirs.user_factors = np.asarray(ours.user_factors_)
    theirs.item_factors = np.asarray(ours.item_factors_)
    for user, item in ((0, 3), (7, 20)):
        score, top, _ = ours.explain(user, R, item, N=4)
        their_score, their_top, _ = theirs.explain(user, R.astype(np.float32), item, N=4)
        assert score == pytest.approx(their_score, rel=1e-4)
        assert [i for i, _ in top] == [i for i, _ in their_top]
        np.testing.assert_allclose([c for _, c in top], [c for _, c in their_top], rtol=1e-4)


def test_item_factors_whose_gram_overflows_are_named_as_fold_ins_name_them():
    """Rows of norm 1.7e18 (their scores are finite in float32) whose Y^T Y, over 4,000
    items, is not: it said SciPy's "array must not contain infs or NaNs"."""
    X = np.ones((2, 3), np.float32)
    Y = np.full((4000, 3), 1e18, np.float32)
    model = ALS.from_factors(X, Y, backend="cpu")
    with pytest.raises(ValueError, match=r"^the fixed factors \(up to 1e\+18 in magnitude\) "
                                         r"are too large: their products overflow float32; "
                                         r"scale them down or use dtype=float64$"):
        model.explain(0, sp.csr_matrix(np.eye(1, 4000, dtype=np.float32)), 1)


def test_a_singular_shared_part_is_named_as_fold_ins_name_it():
    """Identical item rows of 5e18: Y^T Y + 0.01 I is singular in float64 (the 0.01 is
    lost in rounding). It said "the user's system is singular (no interactions and
    regularization 0?)", of a user with interactions and a model with regularization."""
    model = ALS.from_factors(np.ones((2, 3)), np.full((4, 3), 5e18), backend="cpu")
    row = sp.csr_matrix(np.eye(1, 4, dtype=np.float32))
    for call in (lambda: model.explain(0, row, 1), lambda: model.transform(row)):
        with pytest.raises(ValueError, match=r"^regularization=0.01: Y\^T Y \+ regularization "
                                             r"\* I is numerically singular \(factors=3 with 4 "
                                             r"fixed-side rows\); use a larger regularization$"):
            call()


def test_bad_arguments(R):
    model = ALS(factors=3, iterations=1, backend="cpu", show_progress=False).fit(R)
    with pytest.raises(ValueError, match="itemid 30 is out of range"):
        model.explain(0, R, 30)
    with pytest.raises(ValueError, match=r"expected \(1, 30\) or \(40, 30\)"):
        model.explain(0, R[:3], 1)
    with pytest.raises(ValueError, match="userid 40 is out of range"):
        model.explain(40, R, 1)
    with pytest.raises(ValueError, match=r"user_weights has shape \(2, 2\)"):
        model.explain(0, R, 1, user_weights=np.eye(2))
    with pytest.raises(ValueError, match=r"^user_weights holds NaN or infinite values: pass "
                                         r"what explain returned"):  # (SciPy's words before)
        model.explain(0, R, 1, user_weights=np.full((3, 3), np.nan))
    score, top, _ = model.explain(0, sp.csr_matrix((1, 30)), 1)  # no interactions
    assert score == 0.0 and top == []
    with pytest.raises(ValueError, match="N=0: must be >= 1"):
        model.explain(0, R, 1, N=0)
    with pytest.raises(ValueError, match="itemid must be a single id, got 2"):
        model.explain(0, R, [1, 2])
    with pytest.raises(ValueError, match="userid must be a single id, got 0"):
        model.explain([], R, 1)
    # regularization 0 and an item factor that no item uses: Y^T Y, and A_u, are singular
    Y = model.item_factors_.copy()
    Y[:, 1] = 0
    singular = ALS.from_factors(model.user_factors_, Y, regularization=0.0, backend="cpu")
    with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization \* I "
                                         r"is singular \(factors=3 with 30 fixed-side rows\); "
                                         r"use regularization > 0$"):
        singular.explain(0, R, 1)  # (it said "the user's system is singular (no
        # interactions and regularization 0?)", as below)
    explicit = ALS.from_factors(model.user_factors_, model.item_factors_, backend="cpu",
                                feedback="explicit")
    with pytest.raises(ValueError, match=r"^user_items holds no rating of the user: its "
                                         r"factors are 0 \(explicit feedback\), and no score "
                                         r"is there to explain$"):
        explicit.explain(0, sp.csr_matrix((1, 30)), 1)


def test_two_users_whole_matrix_is_the_users_row(R):
    """With two users, a 2-row user_items is the whole matrix (the user's row taken)."""
    two = R[:2]
    model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(two)
    for user in (0, 1):
        whole = model.explain(user, two, 4)
        alone = model.explain(user, two[user], 4)
        assert whole[0] == alone[0] and whole[1] == alone[1]


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_explain_frame_names_explain_by_ids(backend, library):
    """ALS.explain_frame (gpu-als explain from Python): explain of each item named by id,
    from the user's rows of a DataFrame, the user in the model or not; a polars frame
    gives a polars result."""
    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)
    R = interactions().tocoo()
    df = pd.DataFrame({"user": [f"u{r}" for r in R.row], "item": R.col * 10,
                       "value": np.abs(R.data)})
    model = ALS(factors=6, iterations=3, regularization=0.1, alpha=5.0, backend=backend,
                dtype=np.float64, show_progress=False, random_state=0).fit(df)
    table = df if library == "pandas" else frames.from_pandas(df)
    why = model.explain_frame("u3", table, [70, 20], N=3)
    assert isinstance(why, frames.DataFrame)
    got = why.to_pandas() if library == "polars" else why
    assert list(got.columns) == ["user", "item", "score", "because_item", "contribution"]
    from gpu_als import from_dataframe

    row = model.user_rows("u3")
    own = from_dataframe(df, user_ids=model.user_ids_, item_ids=model.item_ids_).matrix
    want = []
    for item in (70, 20):
        score, top, _ = model.explain(row, own, int(model.item_rows(item)), N=3)
        want += [("u3", item, score, int(model.item_ids_[j]), c) for j, c in top]
    assert [(u, int(i), b) for u, i, _, b, _ in got.itertuples(index=False)] == \
        [(u, i, b) for u, i, _, b, _ in want]
    np.testing.assert_allclose(got[["score", "contribution"]].to_numpy(),
                               [(s, c) for _, _, s, _, c in want], rtol=1e-9)
    # a user the model lacks, explained from its rows alone (as a fold-in solves it)
    new = pd.DataFrame({"user": ["zz"] * 3, "item": [0, 10, 999], "value": [1.0, 2.0, 3.0]})
    new = new if library == "pandas" else frames.from_pandas(new)
    alone = model.explain_frame("zz", new, [20], N=5)
    alone = alone.to_pandas() if library == "polars" else alone
    assert sorted(alone["because_item"]) == [0, 10]  # item 999: not the model's, left out
    assert alone["contribution"].sum() == pytest.approx(alone["score"].iloc[0], abs=1e-9)
    first = model.explain_frame("u3", table, [model.item_ids_[0]], N=1)  # row 0, one row
    assert len(first) == 1 and int(first["item"][0]) == int(model.item_ids_[0]) == 0
    with pytest.raises(ValueError, match=r"^the model has no item 5$"):
        model.explain_frame("u3", table, [20, 5])
    # a model without ids: users and items are factor rows
    plain = ALS.from_factors(model.user_factors_, model.item_factors_, alpha=5.0,
                             regularization=0.1, dtype=np.float64, backend=backend)
    by_rows = pd.DataFrame({"user": own[row].indices * 0 + 3, "item": own[row].indices,
                            "value": own[row].data})
    rows_frame = plain.explain_frame(3, by_rows, [7, 2], N=3)
    assert list(rows_frame["item"]) == [7] * 3 + [2] * 3
    np.testing.assert_allclose(rows_frame["contribution"], got["contribution"], rtol=1e-9)
    with pytest.raises(ValueError, match=r"^interactions has no interactions of user 'nobody' "
                                         r"with items the model has: nothing to explain$"):
        model.explain_frame("nobody", table, [20])
    # one user, named: not "the id map for column 'user' must be 1-D" or "holds a missing id"
    with pytest.raises(ValueError, match=r"^user must be one id, got \['u3', 'u4'\]: "
                                         r"explain_frame explains the scores of one user$"):
        model.explain_frame(["u3", "u4"], table, [20])
    with pytest.raises(ValueError, match=r"^user is a missing id \(None\)$"):
        model.explain_frame(None, table, [20])
    with pytest.raises(TypeError, match=r"^interactions must be a DataFrame of \(user, item, "
                                        r"value\) rows, got ndarray$"):  # (it said "df")
        model.explain_frame("u3", df.to_numpy(), [20])
