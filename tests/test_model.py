"""The estimator's behaviour, on every backend."""

import datetime
import io
import re
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, AlternatingLeastSquares, from_dataframe
from gpu_als.backends import CPUBackend
from gpu_als.exceptions import NotFittedError

from .conftest import ProgressBars, backend_name, emulated_backend, random_interactions
from .reference import assert_dot_products_close, solve_rows_loop


def model_for(backend, **params):
    return ALS(**{"factors": 8, "iterations": 3, "backend": backend, "random_state": 0,
                  "show_progress": False, **params})


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.fixture(scope="module")
def R():
    return random_interactions(40, 30, 0.15, seed=1)


def checker_board(n):
    """implicit's fixture: even users like even items, odd users odd items; diagonal removed."""
    board = np.zeros((n, n))
    for i in range(n):
        board[i, i % 2::2] = 1
    return sp.csr_matrix(board - np.eye(n))


def test_checkerboard_top_item_is_the_withheld_one(real_backend):
    """User u's top recommendation is item u: the one liked by all similar users but not u."""
    user_items = checker_board(50)
    model = model_for(real_backend, factors=3, regularization=0.01, iterations=15).fit(user_items)
    for userid in range(50):
        ids, _ = model.recommend(userid, user_items[userid], N=1)
        assert list(ids) == [userid]
    ids, _ = model.recommend(np.arange(50), user_items, N=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(50))


def test_fit_returns_self_and_attributes(backend, R):
    model = model_for(backend)
    assert model.fit(R) is model
    assert model.user_factors_.shape == (40, 8) and model.item_factors_.shape == (30, 8)
    assert model.user_factors_.dtype == np.float32
    assert model.backend_ == backend_name(backend)
    assert len(model.loss_history_) == 3
    assert model.user_factors is model.user_factors_ and model.item_factors is model.item_factors_


def test_same_seed_same_model_and_refit_starts_fresh(real_backend, R):
    a = model_for(real_backend).fit(R)
    first = to_numpy(a.user_factors_).copy()
    a.fit(R)
    np.testing.assert_array_equal(to_numpy(a.user_factors_), first)
    b = model_for(real_backend, random_state=1).fit(R)
    assert not np.allclose(to_numpy(b.user_factors_), first)


def test_zero_iterations_keeps_the_random_start(real_backend, R):
    """Both sides start uniform in [0, 0.01), as in the implicit library."""
    model = model_for(real_backend, iterations=0).fit(R)
    assert model.loss_history_ == []
    for factors in (to_numpy(model.user_factors_), to_numpy(model.item_factors_)):
        assert factors.min() >= 0 and 0.009 < factors.max() < 0.01


def test_each_iteration_is_logged_at_info(R, caplog):
    """(Where no progress bar shows: a batch job's log, ``gpu-als train -v``.)"""
    with caplog.at_level("INFO", logger="gpu_als"):
        model = model_for("cpu", iterations=3).fit(R)
        model_for("cpu", iterations=1, calculate_training_loss=False).fit(R)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration")]
    assert len(lines) == 4
    for line, loss in zip(lines, model.loss_history_):
        assert re.fullmatch(rf"iteration \d: loss {loss:.6g}, [0-9.e+-]+ s so far", line)
    assert [line.split(":")[0] for line in lines] == [
        "iteration 1", "iteration 2", "iteration 3", "iteration 1"]
    assert re.fullmatch(r"iteration 1: [0-9.e+-]+ s so far", lines[3])  # no loss


@pytest.mark.parametrize("solver", ["cholesky", "cg", "pcg"])
def test_a_warm_start_continues_the_fit(real_backend, R, solver):
    """5 iterations, then 3 more from where they ended, are the 8-iteration fit: both
    sides' factors are carried over (CG starts each half-step from the current factors,
    so the user factors matter too); the loss goes on falling."""
    whole = model_for(real_backend, solver=solver, iterations=8).fit(R)
    model = model_for(real_backend, solver=solver, iterations=5, warm_start=True).fit(R)
    first = model.loss_history_
    model.set_params(iterations=3).fit(R)
    for continued, reference in ((model.user_factors_, whole.user_factors_),
                                 (model.item_factors_, whole.item_factors_)):
        np.testing.assert_allclose(to_numpy(continued), to_numpy(reference), rtol=1e-4,
                                   atol=1e-6)
    assert model.loss_history_[0] <= first[-1] * (1 + 1e-6)
    np.testing.assert_allclose(first + model.loss_history_, whole.loss_history_, rtol=1e-5)


def test_a_warm_start_of_a_dataframe_matches_rows_by_id():
    """Users and items the model knows start from their factors wherever their rows are
    now; new ones start random; a matrix must have the model's shape and a DataFrame
    needs a model with ids."""
    pd = pytest.importorskip("pandas")
    R = random_interactions(25, 12, 0.4, seed=3).tocoo()
    df = pd.DataFrame({"user": [f"u{r:02d}" for r in R.row], "item": R.col * 10,
                       "value": R.data})
    model = ALS(factors=3, iterations=3, backend="cpu", random_state=0,
                warm_start=True).fit(df)
    X, Y = model.user_factors_.copy(), model.item_factors_.copy()
    users, items = model.user_ids_, model.item_ids_
    # users u00-u04 and item 0 leave; a new user and a new item come
    later = pd.concat([df[(df.user > "u04") & (df.item > 0)],
                       pd.DataFrame({"user": ["new", "u07"], "item": [20, 999],
                                     "value": [1.0, 2.0]})])
    model.set_params(iterations=0).fit(later)
    assert "new" in model.user_ids_ and 999 in model.item_ids_
    for start, before, ids, before_ids in ((model.user_factors_, X, model.user_ids_, users),
                                           (model.item_factors_, Y, model.item_ids_, items)):
        for row, id_ in enumerate(ids):
            if id_ in ("new", 999):
                assert (0 <= start[row]).all() and (start[row] < 0.01).all()  # random
            else:
                np.testing.assert_array_equal(start[row], before[list(before_ids).index(id_)])
    assert len(model.user_ids_) == 21 and len(model.item_ids_) == 12
    # the same users and items again (the first of each at row 0 too): every one goes on
    again = ALS(factors=3, iterations=2, backend="cpu", warm_start=True).fit(later)
    X, Y = again.user_factors_.copy(), again.item_factors_.copy()
    again.set_params(iterations=0).fit(later.iloc[::-1])
    np.testing.assert_array_equal(again.user_factors_, X)
    np.testing.assert_array_equal(again.item_factors_, Y)

    matrix = from_dataframe(df)[0]
    with pytest.raises(ValueError, match="the model has 21 users and the matrix 25; a "
                                         "matrix's rows must be the model's"):
        model.fit(matrix)
    with pytest.raises(ValueError, match="the model has 21 users and the matrix 20"):
        model.fit(matrix[:20, :12])  # fewer rows: no more a match by position
    with pytest.raises(ValueError, match="the model's factors have 3 columns, not factors=4"):
        model.set_params(factors=4).fit(matrix[:21, :12])
    one = ALS.from_factors(model.user_factors_[:, :1], model.item_factors_[:, :1],
                           backend="cpu", warm_start=True, show_progress=False)
    with pytest.raises(ValueError, match="the model's factors have 1 column, not factors=4"):
        one.set_params(factors=4).fit(matrix[:21, :12])  # ("1 columns" before)
    model = ALS(factors=3, iterations=1, backend="cpu", warm_start=True).fit(matrix)
    with pytest.raises(ValueError, match="the model has no user ids to match the data's against"):
        model.fit(df)
    model.set_params(warm_start=False).fit(matrix, user_ids=np.arange(25) + 100,
                                           item_ids=np.arange(12))
    model.set_params(warm_start=True)
    with pytest.warns(UserWarning, match=r"none of the data's users is among the model's "
                                         r"\(25, e.g. 100\); all start random"):
        model.fit(df)  # its users are "u00".., not 100..


def test_a_warm_start_uses_factors_assigned_by_hand(R):
    """The implicit library's way of starting from given factors: assign them, then fit."""
    X = np.full((40, 8), 0.5, np.float32)
    Y = np.linspace(0, 1, 30 * 8, dtype=np.float32).reshape(30, 8)
    model = model_for("cpu", iterations=0, warm_start=True)
    model.fit(R)  # unfitted: a random start, as without warm_start
    np.testing.assert_array_equal(model.user_factors_,
                                  model_for("cpu", iterations=0).fit(R).user_factors_)
    model.user_factors, model.item_factors = X, Y
    model.fit(R)
    np.testing.assert_array_equal(model.user_factors_, X)
    np.testing.assert_array_equal(model.item_factors_, Y)
    fresh = model_for("cpu", iterations=0, warm_start=True)  # never fitted
    fresh.user_factors = X.astype(np.float64)
    with pytest.raises(NotFittedError, match="item_factors_ is not set"):
        fresh.fit(R)
    items_only = model_for("cpu", iterations=0, warm_start=True)  # the other half alone
    items_only.item_factors = Y
    with pytest.raises(NotFittedError, match="user_factors_ is not set"):
        items_only.fit(R)
    fresh.item_factors = Y
    np.testing.assert_array_equal(fresh.fit(R).user_factors_, X)
    fresh.user_factors = np.where(X > 0, np.nan, X)
    with pytest.raises(ValueError, match="user_factors .*finite"):
        fresh.fit(R)
    with pytest.raises(TypeError, match="warm_start must be True or False, got str"):
        model_for("cpu", warm_start="yes").fit(R)
    # show_progress="no" would be true: refused on the model and in fit alike
    with pytest.raises(TypeError, match="show_progress must be True or False, got str"):
        model_for("cpu", show_progress="no").fit(R)
    with pytest.raises(TypeError, match="show_progress must be True or False, got int"):
        model_for("cpu").fit(R, show_progress=0)


def test_defaults_are_the_documented_ones():
    """The defaults the docstring and README state (changing one changes every user's
    model)."""
    assert ALS().get_params() == {
        "factors": 64, "regularization": None, "alpha": 10.0, "iterations": 15,
        "feedback": "implicit", "scale_regularization": None, "confidence": "linear",
        "epsilon": 1.0, "solver": "cholesky",
        "cg_steps": 3, "dtype": np.float32, "backend": "auto", "random_state": None,
        "warm_start": False, "show_progress": True, "calculate_training_loss": True,
        "callback": None}


@pytest.mark.parametrize("feedback, value", [("implicit", 0.01), ("explicit", 0.1)])
def test_the_default_regularization_is_that_of_the_feedback(R, feedback, value):
    """``regularization=None`` fits as implicit's 0.01 for implicit feedback and Spark's
    0.1 for ratings (tests/test_movielens.py: RMSE 0.94 against 1.29 at 0.01); the model
    keeps None, as given, so that a change of feedback changes it too."""
    fitted = model_for("cpu", feedback=feedback).fit(R)
    assert fitted.regularization is None and "regularization" not in repr(fitted)
    same = model_for("cpu", feedback=feedback, regularization=value).fit(R)
    np.testing.assert_array_equal(fitted.user_factors_, same.user_factors_)
    np.testing.assert_array_equal(fitted.item_factors_, same.item_factors_)
    other = 0.1 if value == 0.01 else 0.01
    assert not np.array_equal(
        model_for("cpu", feedback=feedback, regularization=other).fit(R).user_factors_,
        fitted.user_factors_)
    assert fitted.recalculate_user(0, R[0]) == pytest.approx(
        same.recalculate_user(0, R[0]), rel=1e-6)  # a fold-in solves with it too


def test_without_the_loss_nan_after_a_single_iteration_is_an_error(R):
    with pytest.raises(FloatingPointError, match="after iteration 0 .checked at the end"):
        model_for(NaNSolver(), calculate_training_loss=False, iterations=1).fit(R)


def test_callback_gets_every_iteration(real_backend, R):
    calls = []
    model = model_for(real_backend, callback=lambda *a: calls.append(a)).fit(R)
    assert [c[0] for c in calls] == list(range(3))
    assert [c[2] for c in calls] == model.loss_history_
    assert all(later >= earlier for (_, earlier, _), (_, later, _) in zip(calls, calls[1:]))


def test_the_callback_sees_the_model_of_the_iterations_so_far(real_backend, R):
    """As with implicit, a callback can query the model mid-fit (e.g. its Recall@10 after
    each iteration): it is then the model of the iterations done, as a fit of that many."""
    seen, histories = [], []
    model = model_for(real_backend)

    def evaluate(iteration, seconds, loss):
        ids, _ = model.recommend(0, R[0], N=3, recalculate_user=True)  # kept Y^T Y renewed
        seen.append((to_numpy(model.user_factors_).copy(), list(model.loss_history_),
                     to_numpy(ids)))
        histories.append(model.loss_history_)  # the list itself: later ones do not grow it

    model.fit(R, callback=evaluate)
    assert [len(history) for history in histories] == [1, 2, 3]
    for iteration, (X, losses, ids) in enumerate(seen):
        shorter = model_for(real_backend, iterations=iteration + 1).fit(R)
        np.testing.assert_array_equal(X, to_numpy(shorter.user_factors_))
        # the GPU's loss adds its blocks' sums by atomicAdd, in no fixed order
        assert losses == pytest.approx(shorter.loss_history_, rel=1e-12)
        np.testing.assert_array_equal(ids, to_numpy(shorter.recommend(
            0, R[0], N=3, recalculate_user=True)[0]))
    assert len(model.loss_history_) == 3


def test_a_training_run_in_parts_counts_on(R):
    """gpu_als.tune runs a training a few iterations at a time: the iterations are numbered
    on, the seconds add up and the losses go on, as in one run of them all."""
    from gpu_als._training import Training

    training = Training(model_for("cpu"), R)
    calls = []
    for iterations in (2, 3):
        training.run(iterations, callback=lambda *args: calls.append(args))
    assert [call[0] for call in calls] == [0, 1, 2, 3, 4] and training.iterations_done == 5
    seconds = [call[1] for call in calls]
    assert seconds == sorted(seconds) and training.seconds == seconds[-1]
    whole = model_for("cpu", iterations=5).fit(R)
    assert training.loss_history == pytest.approx(whole.loss_history_, rel=1e-12)


@pytest.mark.parametrize("stop", [True, np.True_])
def test_a_callback_returning_true_stops_the_fit_there(real_backend, R, stop):
    """As XGBoost's callbacks: the model is that of the iterations done, as a fit of that
    many, and keeps whatever the callback made of it."""
    model = model_for(real_backend, iterations=6)
    model.fit(R, callback=lambda iteration, *_: stop if iteration == 2 else None)
    shorter = model_for(real_backend, iterations=3).fit(R)
    np.testing.assert_array_equal(to_numpy(model.user_factors_),
                                  to_numpy(shorter.user_factors_))
    assert model.loss_history_ == pytest.approx(shorter.loss_history_, rel=1e-12)  # atomics
    assert len(model.loss_history_) == 3

    kept = to_numpy(shorter.user_factors_)

    def replace_and_stop(iteration, seconds, loss):  # as EarlyStopping's restore_best
        model.user_factors = kept
        return True

    model.fit(R, callback=replace_and_stop)
    np.testing.assert_array_equal(to_numpy(model.user_factors), kept)
    assert len(model.loss_history_) == 1


@pytest.mark.parametrize("returned", [1, "stop", [True], np.array([True, True]), False])
def test_only_true_stops_a_fit(R, returned):
    """implicit ignores a callback's result: a callback that returns something by the way
    (``file.write``'s count, say) must not end the fit."""
    calls = []
    model = model_for("cpu", iterations=4)
    model.fit(R, callback=lambda *a: calls.append(a) or returned)
    assert len(calls) == 4 and len(model.loss_history_) == 4


@pytest.mark.parametrize("change", ["fit", "set_params", "partial_fit_users",
                                    "partial_fit_items", "fit_distributed"])
def test_a_callback_may_not_change_the_model_being_fitted(R, change):
    """A fit's callback changing its model: a nested fit finished, then the outer fit
    overwrote it; a partial fit's users were lost; new hyperparameters were saved with
    factors not fitted with them. Now a RuntimeError, and the model is that of before."""
    model = model_for("cpu", iterations=3).fit(R)
    before = model.user_factors_.copy(), model.get_params()
    changes = {
        "fit": lambda: model.fit(R),
        "set_params": lambda: model.set_params(regularization=1.0),
        "partial_fit_users": lambda: model.partial_fit_users([R.shape[0]], R[[0]]),
        "partial_fit_items": lambda: model.partial_fit_items([R.shape[1]], R[:, [0]].T),
        "fit_distributed": lambda: pytest.importorskip("gpu_als.distributed").fit_distributed(
            model, R, client=None)}
    with pytest.raises(RuntimeError, match=rf"^{change}\(\) while a fit of this model is in "
                                           rf"progress .* a callback may query the model, "
                                           rf"not change it"):
        model.fit(R, callback=lambda i, s, loss: changes[change]() if i == 1 else None)
    np.testing.assert_array_equal(model.user_factors_, before[0])
    assert model.get_params() == before[1] and not model.fit_in_progress
    if change != "fit_distributed":  # (which needs a cluster: test_distributed's)
        changes[change]()  # after the fit: fine


def test_a_change_from_another_thread_during_a_fit_is_refused_as_such(R):
    """A fit running in one thread, a change of the model asked in another: refused,
    saying so (it asked whether the change came from the fit's callback), while queries
    answer from the factors so far."""
    import threading

    started, release = threading.Event(), threading.Event()

    def wait_at_first_iteration(iteration, seconds, loss):
        if iteration == 0:
            started.set()
            release.wait(timeout=60)

    model = model_for("cpu", iterations=2).fit(R)
    fitting = threading.Thread(target=lambda: model.fit(R, callback=wait_at_first_iteration))
    fitting.start()
    try:
        assert started.wait(timeout=60) and model.fit_in_progress
        with pytest.raises(RuntimeError, match=r"^set_params\(\) while a fit of this model is "
                                               r"in progress in another thread: queries may "
                                               r"run meanwhile, not changes"):
            model.set_params(regularization=1.0)
        assert model.recommend(0, R[0], N=2)[0].shape == (2,)
    finally:
        release.set()
        fitting.join(timeout=60)
    assert not model.fit_in_progress and model.regularization != 1.0


@pytest.mark.parametrize("fitted_before", [False, True])
@pytest.mark.parametrize("failure", ["callback", "nan"])
def test_a_fit_failing_after_a_callback_leaves_the_model_as_it_was(R, fitted_before,
                                                                   failure):
    class LateNaN(CPUBackend):  # NaN from the third half-step on: iteration 1's items
        calls = 0

        def solve_rows(self, *args, out, **kwargs):
            super().solve_rows(*args, out=out, **kwargs)
            LateNaN.calls += 1
            if LateNaN.calls >= 4 and failure == "nan":
                out[0, 0] = np.nan
            return out

    def stop_at_1(iteration, seconds, loss):
        if iteration == 1 and failure == "callback":
            raise KeyboardInterrupt  # as Ctrl-C in a slow callback

    model = model_for(LateNaN())
    if fitted_before:
        model.set_params(backend="cpu").fit(R[:, :20])
        before = model.user_factors_.copy(), model.item_factors_.copy()
        model.set_params(backend=LateNaN())
    LateNaN.calls = 0
    with pytest.raises(KeyboardInterrupt if failure == "callback" else FloatingPointError):
        model.fit(R, callback=stop_at_1)
    if fitted_before:
        np.testing.assert_array_equal(model.user_factors_, before[0])
        np.testing.assert_array_equal(model.item_factors_, before[1])
        assert model.item_factors_.shape == (20, 8) and len(model.loss_history_) == 3
        model.recommend(0, R[0, :20], N=3)  # still a working model
    else:
        assert not hasattr(model, "user_factors_")
        with pytest.raises(NotFittedError):
            model.recommend(0, R[0], N=3)


def test_fit_takes_implicits_fit_arguments(R, capsys, monkeypatch):
    """implicit's ``fit(user_items, show_progress=True, callback=None)``: for one fit."""
    import gpu_als._training

    progress = ProgressBars()
    monkeypatch.setattr(gpu_als._training, "tqdm", progress)
    for own, given, shown in ((False, True, True), (True, False, False), (True, None, True),
                              (False, None, False)):
        model_for("cpu", iterations=1, show_progress=own).fit(R, show_progress=given)
        # tqdm's disable=None: a bar where the output is a terminal
        assert progress.bars[-1].disable is (None if shown else True), (own, given)
    calls = []
    model = model_for("cpu", callback=lambda *a: calls.append("constructor"))
    model.fit(R, show_progress=False, callback=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [0, 1, 2] and model.callback is not None
    model.fit(R)  # the estimator's own again
    assert calls[3:] == ["constructor"] * 3
    with pytest.raises(TypeError, match="callback must be callable"):
        model.fit(R, callback=3)

    def checkpoint(iteration, seconds, loss, path):
        calls.append(path)

    with pytest.raises(TypeError, match=r"^callback must take three arguments, .* "
                                        r"checkpoint\(iteration, seconds, loss, path\) "
                                        r"cannot \(missing a required argument: 'path'\)$"):
        model.fit(R, callback=checkpoint)
    assert calls[6:] == []  # before any iteration
    import functools

    model.fit(R, callback=functools.partial(checkpoint, path="p"))  # what it should be
    assert calls[6:] == ["p"] * 3


def test_recommend_batch_equals_single(real_backend, R):
    model = model_for(real_backend).fit(R)
    users = np.array([3, 0, 39, 3])
    ids, scores = model.recommend(users, R[users], N=6)
    assert ids.shape == scores.shape == (4, 6)
    for row, u in enumerate(users):
        single_ids, single_scores = model.recommend(u, R[u], N=6)
        np.testing.assert_array_equal(single_ids, ids[row])
        np.testing.assert_allclose(single_scores, scores[row], rtol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"


def test_recommend_scores_are_dot_products_and_filtering_works(backend, R):
    model = model_for(backend).fit(R)
    X, Y = to_numpy(model.user_factors_), to_numpy(model.item_factors_)
    u = 5
    liked = set(R[u].indices)
    ids, scores = model.recommend(u, R[u], N=40)  # more than the 30 items
    assert len(ids) == 30 - len(liked) and not liked & set(ids)
    assert_dot_products_close(scores, Y[ids], X[u])
    full = np.argsort(-(Y @ X[u]), kind="stable")
    np.testing.assert_array_equal(ids, [i for i in full if i not in liked])
    ids, _ = model.recommend(u, R[u], N=40, filter_already_liked_items=False)
    np.testing.assert_array_equal(ids, full)
    ids, _ = model.recommend(u, None, N=5, filter_already_liked_items=False, items=[7, 2, 29])
    assert sorted(ids) == [2, 7, 29]
    ids, _ = model.recommend(u, R[u], N=40, filter_items=[0, 1, 2])
    assert not {0, 1, 2} & set(ids)


@pytest.mark.parametrize("rows_per_block", [1, 1000])
def test_allow_and_block_lists_with_liked_items_equal_a_slow_loop(backend, rows_per_block,
                                                                  monkeypatch):
    """items= (candidates) and filter_items= (a blocklist applied to every user's scores),
    each given with repeats, unsorted and sorted, with or without the liked items left out, over one
    or several blocks of users; ties (integer factors) listed by id (those at the last place:
    any of them, as top_n documents); -1 padding."""
    rng = np.random.default_rng(4)
    X = rng.integers(-2, 3, (12, 3)).astype(np.float64)
    Y = rng.integers(-2, 3, (50, 3)).astype(np.float64)
    model = ALS.from_factors(X, Y, backend=backend, dtype=np.float64)
    monkeypatch.setattr(model._backend, "topk_block_elements", rows_per_block * 50)
    liked = random_interactions(12, 50, 0.3, seed=8)
    users = np.arange(12)
    allow = rng.choice(50, 30)  # repeats, unsorted
    block = rng.choice(50, 30)
    for lists in ({"items": allow}, {"filter_items": block}, {"items": np.sort(allow)},
                  {"filter_items": np.sort(block)},  # sorted, with the repeats
                  {"items": [40, 3]}, {"filter_items": [40, 3]}):
        for filter_liked in (True, False):
            ids, scores = model.recommend(users, liked, N=45, **lists,
                                          filter_already_liked_items=filter_liked)
            given = set(lists.get("items", lists.get("filter_items")))
            listed = given if "items" in lists else set(range(50)) - given
            width = min(45, len(listed))  # N is at most the listed items
            assert ids.shape == (12, width)
            for u in users:
                eligible = listed - set(liked[u].indices) if filter_liked else listed
                score = Y @ X[u]
                want = sorted(eligible, key=lambda i: (-score[i], i))[:width]
                got = list(ids[u, :len(want)])
                assert (ids[u, len(want):] == -1).all()
                np.testing.assert_array_equal(scores[u, :len(want)], score[want])
                assert len(set(got)) == len(got) and set(got) <= eligible
                assert got == sorted(got, key=lambda i: (-score[i], i))  # ties by id
                # which of the items tied at the last place come is not specified
                above = score[want[-1]] if want else np.inf
                assert {i for i in got if score[i] > above} == \
                    {i for i in want if score[i] > above}


def test_batch_results_are_padded_when_filtering_leaves_too_few(backend):
    R = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 1, 0]], np.float32))
    model = model_for(backend, factors=2).fit(R)
    ids, scores = model.recommend([0, 1], R[[0, 1]], N=3)
    assert list(ids[0]) == [3, -1, -1] and np.isneginf(scores[0, 1:]).all()
    assert sorted(ids[1]) == [0, 1, 2]
    # among given candidates too: the padding stays -1, not a candidate's id
    ids, scores = model.recommend([0, 2], R[[0, 2]], N=3, items=[1, 2, 3])
    assert list(ids[0]) == [3, -1, -1] and np.isneginf(scores[0, 1:]).all()
    assert sorted(ids[1][:2]) == [1, 3] and ids[1][2] == -1


def test_recalculate_user_is_the_exact_solve(backend, R):
    model = model_for(backend, regularization=0.05, alpha=4.0, dtype=np.float64).fit(R)
    new_rows = random_interactions(3, 30, 0.3, seed=5, dtype=np.float64)
    got = to_numpy(model.recalculate_user([100, 101, 102], new_rows))
    want = solve_rows_loop(new_rows, to_numpy(model.item_factors_), 0.05, alpha=4.0)
    np.testing.assert_allclose(got, want, atol=1e-9)
    single = to_numpy(model.recalculate_user(7, new_rows[1]))
    np.testing.assert_allclose(single, want[1], atol=1e-9)
    ids, _ = model.recommend([100, 101, 102], new_rows, N=4, recalculate_user=True)
    Y = to_numpy(model.item_factors_)
    for row in range(3):
        scores = Y @ want[row]
        scores[new_rows[row].indices] = -np.inf
        np.testing.assert_array_equal(ids[row], np.argsort(-scores, kind="stable")[:4])
    ids, _ = model.recommend([100, 101, 102], new_rows, N=4, recalculate_user=True,
                             filter_already_liked_items=False)  # liked items may come back
    for row in range(3):
        np.testing.assert_array_equal(ids[row], np.argsort(-(Y @ want[row]), kind="stable")[:4])


def test_transform_solves_each_row_as_recalculate_user_does(backend, R):
    """scikit-learn's transform / fit_transform: the users' factors of a matrix's rows."""
    model = model_for(backend, regularization=0.05, alpha=4.0, dtype=np.float64)
    assert model.fit_transform(R) is model.user_factors_
    new_rows = random_interactions(4, 30, 0.3, seed=5, dtype=np.float64).tolil()
    new_rows[2] = 0  # an empty row: no interactions, zero factors
    new_rows = new_rows.tocsr()
    want = solve_rows_loop(new_rows, to_numpy(model.item_factors_), 0.05, alpha=4.0)
    before = to_numpy(model.user_factors_).copy()
    got = to_numpy(model.transform(new_rows))
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert not got[2].any()
    np.testing.assert_array_equal(to_numpy(model.user_factors_), before)  # unchanged
    np.testing.assert_allclose(to_numpy(model.transform(R)),
                               to_numpy(model.recalculate_user(np.arange(R.shape[0]), R)),
                               atol=1e-12)
    with pytest.raises(ValueError, match="user_items has 20 columns, but the model has 30 "
                                         "items: one column per item"):
        model.transform(new_rows[:, :20])
    with pytest.raises(ValueError, match="user_items has 1 column, but the model has 30 "
                                         "items: one column per item"):  # ("1 columns")
        model.transform(new_rows[:, :1])
    with pytest.raises(NotFittedError):
        model_for(backend).transform(new_rows)


def test_a_row_of_a_sparse_array_is_one_users_row(backend, R):
    """Indexing a scipy sparse *array* (csr_array) with one int gives a 1-D array: the
    query methods take it as that user's (or item's) row, as the matrix's 2-D row."""
    A, RT = sp.csr_array(R), sp.csr_array(R.T.tocsr())
    try:
        assert A[3].ndim == 1
    except NotImplementedError:  # SciPy before 1.14 refuses to make 1-D sparse rows
        pytest.skip("this SciPy's sparse arrays have no 1-D rows")
    model = model_for(backend, dtype=np.float64).fit(R)
    for recalculate_user in (False, True):
        got, want = (model.recommend(3, rows, N=5, recalculate_user=recalculate_user)
                     for rows in (A[3], R[3]))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(model.recalculate_item(2, RT[2])),
                               to_numpy(model.recalculate_item(2, R.T.tocsr()[2])), rtol=1e-12)
    assert model.explain(3, A[3], 7)[0] == pytest.approx(model.explain(3, R[3], 7)[0])
    model.partial_fit_users([40], A[3])
    np.testing.assert_allclose(to_numpy(model.user_factors_)[40],
                               to_numpy(model.recalculate_user(3, R[3])), rtol=1e-12)
    with pytest.raises(ValueError, match="must be 2-D"):  # two ids need two rows
        model.recommend([3, 4], A[3])
    with pytest.raises(ValueError, match=r"has shape \(1, 29\), expected \(1, 30\)"):
        model.recommend(3, A[3][:29])


def test_cosines_are_at_most_one(backend):
    """A vector's cosine with itself rounds above 1 in float32 (1.0000001): reported as 1."""
    R = random_interactions(300, 120, 0.08, seed=3)
    model = ALS(factors=8, iterations=3, backend=backend, random_state=0,
                show_progress=False).fit(R)
    _, user_scores = model.similar_users(np.arange(300), N=3)
    _, item_scores = model.similar_items(np.arange(120), N=3)
    for scores in (user_scores, item_scores):
        assert scores.max() == 1.0 and (scores[:, 0] > 1 - 1e-6).all()


def test_similar_items_and_users_by_cosine(real_backend, R):
    model = model_for(real_backend).fit(R)
    Y = to_numpy(model.item_factors_).astype(np.float64)
    ids, scores = model.similar_items(4, N=5)
    assert ids[0] == 4 and scores[0] == pytest.approx(1.0, abs=1e-5)
    normed = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, normed[ids] @ normed[4], atol=1e-5)
    batch_ids, _ = model.similar_items([4, 9], N=5)
    np.testing.assert_array_equal(batch_ids[0], ids)
    ids, _ = model.similar_items(4, N=3, filter_items=[4])
    assert 4 not in ids
    ids, scores = model.similar_items(4, N=1)
    assert list(ids) == [4] and len(scores) == 1
    subset = [9, 3, 17, 4, 29]  # each candidate keeps its own norm
    ids, scores = model.similar_items(4, N=3, items=subset)
    cosines = normed[subset] @ normed[4]
    np.testing.assert_array_equal(ids, np.array(subset)[np.argsort(-cosines)[:3]])
    np.testing.assert_allclose(scores, np.sort(cosines)[::-1][:3], atol=1e-5)
    uids, _ = model.similar_users(2, N=3)
    assert uids[0] == 2
    # implicit's signature: the query's factors folded in from its users; the last
    # half-step solved the items against the final user factors, so this is item 4 again
    RT = R.T.tocsr()
    again, again_scores = model.similar_items(4, 5, True, RT[4])
    expected, expected_scores = model.similar_items(4, N=5)
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_allclose(again_scores, expected_scores, atol=1e-5)
    new_ids, _ = model.similar_items([100, 101], N=2, recalculate_item=True,
                                     item_users=RT[[4, 9]])
    np.testing.assert_array_equal(new_ids[:, 0], [4, 9])  # any ids: unseen items too
    with pytest.raises(ValueError, match="item_users is required"):
        model.similar_items(4, recalculate_item=True)


def test_a_zero_vector_has_cosine_zero(backend):
    model = ALS.from_factors(np.ones((2, 2)), [[3.0, 4.0], [0.0, 0.0], [-4.0, 3.0]],
                             backend=backend)
    ids, scores = model.similar_items(1, N=3)
    np.testing.assert_array_equal(ids, [0, 1, 2])  # all 0: ties go to the lower id
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0])
    ids, scores = model.similar_items(0, N=3)
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.0], atol=1e-7)


def test_predict(real_backend, R):
    model = model_for(real_backend).fit(R)
    X, Y = to_numpy(model.user_factors_), to_numpy(model.item_factors_)
    got = model.predict([[0, 1], [2, 3]], [[4, 5], [6, 7]])
    assert got.shape == (2, 2)
    assert got[1, 0] == pytest.approx(float(X[2] @ Y[6]), rel=1e-5)
    with pytest.raises(ValueError, match=r"userids has shape \(2, 3\) but itemids has shape "
                                         r"\(3, 2\)"):  # as many, paired how?
        model.predict(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"userid must be a scalar or 1-D, got shape \(1, 2\)"):
        model.recommend([[0, 1]], N=2, filter_already_liked_items=False)


@pytest.mark.parametrize("elements", [1, 8, 10**6])  # a pair, 2 pairs (k = 4), all at once
def test_predict_in_blocks_equals_the_whole_product(real_backend, R, elements, monkeypatch):
    from gpu_als import model as model_module
    monkeypatch.setattr(model_module, "PREDICT_BLOCK_ELEMENTS", elements)
    model = model_for(real_backend).fit(R)
    X, Y = to_numpy(model.user_factors_), to_numpy(model.item_factors_)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, R.shape[0], 37), rng.integers(0, R.shape[1], 37)
    got = model.predict(users, items)
    assert got.shape == (37,) and got.dtype == X.dtype
    assert_dot_products_close(got, X[users], Y[items])
    assert model.predict([], []).shape == (0,)


def test_params_repr_and_alias():
    model = AlternatingLeastSquares(factors=16, backend="cpu")
    assert AlternatingLeastSquares is ALS
    assert model.get_params()["factors"] == 16
    assert repr(model) == "ALS(factors=16, backend='cpu')"
    # a default's value in another type is shown: 1 for True is not what the default is
    assert repr(ALS(alpha=10.0, calculate_training_loss=1)) == "ALS(calculate_training_loss=1)"
    model.set_params(alpha=2.0)
    assert model.alpha == 2.0
    with pytest.raises(ValueError, match=r"unknown parameter 'alhpa' \(did you mean 'alpha'\?\); "
                                         r"the parameters: factors, regularization"):
        model.set_params(alhpa=1)
    # implicit's own constructor arguments: refused, saying what gpu-als takes instead
    for name, value, instead in (("use_gpu", True, "backend='gpu' or backend='cpu'"),
                                 ("use_cg", False, "solver='cg'"),
                                 ("num_threads", 4, r"backend=gpu_als\.backends\.CPUBackend\("),
                                 ("use_native", True, "nothing to pass")):
        with pytest.raises(TypeError, match=f"{name!r} is the implicit library's argument; "
                                            f"in gpu-als: {instead}"):
            AlternatingLeastSquares(factors=8, **{name: value})
        with pytest.raises(ValueError, match=f"{name!r} is the implicit library's"):
            model.set_params(**{name: value})
    with pytest.raises(TypeError, match=r"unknown parameter 'factor' \(did you mean "
                                        r"'factors'\?\)"):
        ALS(factor=8)
    # the catch-all is no hyperparameter: cloning by get_params works as before
    assert ALS(**model.get_params()).get_params() == model.get_params()


def test_to_cpu_is_an_independent_cpu_model(real_backend, R):
    model = model_for(real_backend).fit(R)
    cpu = model.to_cpu()
    assert cpu.backend_ == "cpu" and cpu.get_params()["factors"] == 8
    assert isinstance(cpu.user_factors_, np.ndarray)
    np.testing.assert_array_equal(cpu.user_factors_, to_numpy(model.user_factors_))
    np.testing.assert_array_equal(cpu.recommend(1, R[1])[0], model.recommend(1, R[1])[0])
    assert cpu.loss_history_ == model.loss_history_ and len(cpu.loss_history_) == 3
    assert cpu.loss_history_ is not model.loss_history_


def test_to_cpu_keeps_the_ids(real_backend):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": ["a", "b", "b", "c"], "item": [30, 10, 20, 30]})
    model = ALS(factors=2, iterations=1, backend=real_backend).fit(df)
    cpu = model.to_cpu()
    assert list(cpu.user_ids_) == ["a", "b", "c"] and list(cpu.item_ids_) == [10, 20, 30]
    assert cpu.recommend_frame(["b"], N=1)["item"].tolist() == \
        model.recommend_frame(["b"], N=1)["item"].tolist()


class NaNSolver(CPUBackend):
    """A CPU backend whose every half-step leaves one NaN in the solved factors."""

    def solve_rows(self, *args, out, **kwargs):
        super().solve_rows(*args, out=out, **kwargs)
        out[3, 1] = np.nan
        return out


def test_nan_after_a_half_step_is_an_error_not_a_model(R):
    model = model_for(NaNSolver())
    with pytest.raises(FloatingPointError, match="user factors hold NaN .* user half-step of "
                                                 "iteration 0"):
        model.fit(R)
    assert not hasattr(model, "user_factors_")


def test_nan_in_the_item_half_step_is_attributed_to_it(R):
    class BrokenItems(CPUBackend):
        def solve_rows(self, rows, *args, out, **kwargs):
            super().solve_rows(rows, *args, out=out, **kwargs)
            if rows.n_rows == R.shape[1]:  # the item half-step
                out[0, 0] = np.inf
            return out

    with pytest.raises(FloatingPointError, match="item factors hold NaN or infinite values "
                                                 "after the item half-step of iteration 0"):
        model_for(BrokenItems()).fit(R)


def test_finite_factors_whose_loss_overflows_are_said_to_have_grown_too_large(R):
    """A diverging fit: factors of 1e30, finite, but their loss overflows; the error says
    so (it said they held NaN or infinite values)."""
    class Diverging(CPUBackend):
        def solve_rows(self, rows, *args, out, **kwargs):
            super().solve_rows(rows, *args, out=out, **kwargs)
            out[...] = 1e30
            return out

    with pytest.raises(FloatingPointError, match=r"the factors grew so large \(up to 1e\+30\) "
                                                 r"that the training loss overflowed after "
                                                 r"the item half-step of iteration 0"):
        model_for(Diverging()).fit(R)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # (NumPy's overflow warnings came
# first from the CPU backend's CG: an exception where warnings are errors, as here)
@pytest.mark.parametrize("feedback, scale", [("implicit", r"confidences up to 1e\+31"),
                                             ("explicit", r"ratings up to 1e\+30")])
@pytest.mark.parametrize("calculate_training_loss", [True, False])
def test_an_unstable_fit_names_the_size_of_its_input(backend, feedback, scale,
                                                     calculate_training_loss):
    """Values of 1e30 overflow float32 CG's products: the error gives the largest
    confidence (alpha x 1e30 + 1) or rating, and alpha only where it acts."""
    R = random_interactions(30, 20, 0.3, seed=3)
    R.data[:] = 1e30
    model = ALS(factors=4, iterations=2, solver="cg", feedback=feedback, backend=backend,
                calculate_training_loss=calculate_training_loss, show_progress=False)
    hyper = r"regularization=0.01, alpha=10.0" if feedback == "implicit" else \
        r"regularization=0.1"
    with pytest.raises(FloatingPointError, match=rf"; the input \({scale}\) or the "
                                                 rf"hyperparameters \({hyper}\) make the "
                                                 rf"problem numerically unstable in float32; "
                                                 rf"use dtype=float64 for double precision$"):
        model.fit(R)
    model.set_params(dtype=np.float64).fit(R)  # as the advice says, double precision fits


@pytest.mark.parametrize("woodbury_min_rows", [1, 2048])
def test_a_gpu_fit_of_explicit_rows_shorter_than_k_keeps_float32s_penalty(woodbury_min_rows):
    """Ratings of up to 400 with regularization 0.001 and items of one to three ratings,
    k = 4: such a row's k x k system ``F_u^T F_u + lambda n_u I`` is singular but for
    the penalty, which float32 loses beside factors that large. The emulated GPU's fused
    kernel failed there (NaN; until stop 82 the error named float32 and float64 as the
    way out) or, in a sweep's case, gave solutions half wrong, where the CPU solves such
    a row in its own n x n space. Now every explicit row of fewer than k entries takes
    the Woodbury path, however few (2,048 short rows are the default's least for the
    implicit ones): the GPU fits as the CPU does, in float32 and float64."""
    R = sp.random(6, 6, density=0.3, format="csr", random_state=13) * 400
    settings = dict(factors=4, regularization=0.001, feedback="explicit", iterations=5,
                    random_state=13, show_progress=False)
    for dtype, tolerance in ((np.float32, 1e-3), (np.float64, 1e-9)):
        cpu = ALS(backend="cpu", dtype=dtype, **settings).fit(R)
        gpu = ALS(backend=emulated_backend(woodbury_min_rows=woodbury_min_rows),
                  dtype=dtype, **settings).fit(R).to_cpu()
        for side in ("user_factors_", "item_factors_"):
            want = getattr(cpu, side)
            np.testing.assert_allclose(getattr(gpu, side), want, rtol=0,
                                       atol=tolerance * np.abs(want).max())
        np.testing.assert_allclose(gpu.loss_history_, cpu.loss_history_, rtol=tolerance)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("calculate_training_loss, says", [
    (True, r"the factors grew so large \(up to \d\.\d+e\+3\d\) that the training loss "
           r"overflowed after the item half-step of iteration 0"),
    (False, r"the factors grew so large \(rows of norm up to \d\.\d+e\+3\d\) that their scores "
            r"overflow float32 after iteration 2 \(checked at the end of fit; "
            r"calculate_training_loss=True finds the first bad half-step\)")])
def test_finite_factors_whose_scores_overflow_are_refused_with_or_without_the_loss(
        backend, calculate_training_loss, says):
    """Ratings of 1e37 beside 1 and 2 at one factor: the factors grow to about 1e35,
    finite, but their scores are not. Without the loss the fit ended there, and every query
    answered NumPy's overflow warnings (found by a sweep of extreme values). The GPU's
    float32 solves overflow to infinite factors first: refused as such."""
    R = sp.csr_matrix(np.array([[1e37, 1.0], [2.0, 1e37]], np.float32))
    model = ALS(factors=1, iterations=3, feedback="explicit", backend=backend,
                calculate_training_loss=calculate_training_loss, random_state=0,
                show_progress=False)
    if backend_name(backend) != "cpu":
        says = r".* factors hold NaN or infinite values after .*"
    with pytest.raises(FloatingPointError, match=rf"^{says}; the input \(ratings up to "
                                                 rf"1e\+37\) or the hyperparameters"):
        model.fit(R)
    assert not hasattr(model, "user_factors_")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_partial_fit_whose_rows_scores_would_overflow_leaves_the_model_as_it_was(backend):
    """A rating of 1e30 folds in a row of norm 2e29: its squared norm (cosine similarity)
    overflows float32, so similar_users scored every user 0 for it. Refused, the model
    unchanged; the same rating scaled down folds in."""
    R = random_interactions(15, 10, 0.4, seed=2)
    model = ALS(factors=2, iterations=2, feedback="explicit", backend=backend,
                show_progress=False, random_state=0).fit(R)
    before = to_numpy(model.user_factors_).copy()
    row = sp.csr_matrix(np.r_[1e30, np.zeros(9)][None].astype(np.float32))
    with pytest.raises(ValueError, match=r"^the new user factors have rows of norm up to "
                                         r"\d\.\d+e\+29: their dot products \(the scores\) "
                                         r"overflow float32; scale the values of user_items "
                                         r"down or use dtype=float64$"):
        model.partial_fit_users([15], row)
    np.testing.assert_array_equal(to_numpy(model.user_factors_), before)
    with pytest.raises(ValueError, match=r"^the new item factors .* of item_users down"):
        model.partial_fit_items([3], sp.csr_matrix(np.r_[1e30, np.zeros(14)][None]))
    model.partial_fit_users([15], row / 1e25)
    assert model.similar_users(15, N=2)[1][0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.filterwarnings("ignore:test shares")
def test_rows_that_only_filter_take_values_beyond_the_models_dtype(backend):
    """recommend's user_items filter the users' own items unless they are folded in: their
    values do not count, and float64 values of 1e45 were refused "beyond float32's range"
    by a model of float32 (its metrics' train too). Folded in, they are refused."""
    from gpu_als.evaluation import ranking_metrics

    R = random_interactions(20, 10, 0.4, seed=0)
    big = R.astype(np.float64)
    big.data[:] = 1e45
    model = ALS(factors=2, iterations=2, backend=backend, show_progress=False,
                random_state=0).fit(R)
    for rows in (np.arange(20), 3):
        np.testing.assert_array_equal(model.recommend(rows, big[rows], N=2)[0],
                                      model.recommend(rows, R[rows], N=2)[0])
    test = R[::-1].tocsr()
    assert ranking_metrics(model, big, test, K=2, show_progress=False) == \
        ranking_metrics(model, R, test, K=2, show_progress=False)
    with pytest.raises(ValueError, match="user_items holds 4 value.s. beyond float32's"):
        model.recommend(0, big[0], N=2, recalculate_user=True)


@pytest.mark.filterwarnings("ignore:user_items has no positive value")
def test_singular_systems_without_regularization_are_refused_alike_on_every_backend(backend):
    """Exact solves, implicit feedback, regularization 0, no positive value: the user
    half-step makes every user's factors 0, and each item's system, X^T C X, is then
    singular. The CPU backend said so; the GPU's Cholesky made NaN, which fit reported as
    "numerically unstable" (found by a fuzz of fit's arguments on the emulated GPU)."""
    R = random_interactions(12, 8, 0.3, seed=1) * -1  # (dislikes: preference 0 throughout)
    with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization \* I "
                                         r"is singular \(factors=3 with 12 fixed-side rows\); "
                                         r"use regularization > 0$"):
        ALS(factors=3, iterations=2, regularization=0.0, backend=backend, show_progress=False,
            random_state=0).fit(R)
    for solver, regularization in (("cg", 0.0), ("pcg", 0.0), ("cholesky", 0.01)):
        # (CG's steps need no definite base; PCG's, from the factors, leave them small
        # but not 0, so X^T X stays definite; a regularized base is definite)
        model = ALS(factors=3, iterations=2, regularization=regularization, solver=solver,
                    backend=backend, show_progress=False, random_state=0).fit(R)
        assert abs(model.loss_history_[-1]) < 1e-12


@pytest.mark.filterwarnings("ignore:factors=3 with 2 items")
@pytest.mark.parametrize("solver", ["cholesky", "pcg"])
def test_a_factor_space_that_collapses_without_regularization_is_refused_alike(backend,
                                                                               solver):
    """Regularization 0, three factors, and interactions with two of three items only: the
    users' factors lose a dimension in the first user half-step, and X^T X is singular at
    the item half-step. The exact solver factorizes it in every item's system, PCG as its
    preconditioner: the CPU said so for both, but the GPU's PCG made NaN, reported as
    "numerically unstable" (found by a sweep of PCG without regularization). CG, which
    factorizes nothing, trains."""
    R = sp.csr_matrix(np.c_[np.random.default_rng(0).integers(1, 4, (6, 2)), np.zeros(6)])
    model = ALS(factors=3, iterations=2, regularization=0.0, solver=solver, backend=backend,
                show_progress=False, random_state=0)
    with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization \* I "
                                         r"is singular \(factors=3 with 6 fixed-side rows\); "
                                         r"use regularization > 0$"):
        model.fit(R)
    assert not hasattr(model, "user_factors_")
    model.set_params(solver="cg", dtype=np.float64).fit(R)
    assert np.isfinite(to_numpy(model.item_factors_)).all()


@pytest.mark.filterwarnings("ignore:factors=2 with 1 user")
@pytest.mark.parametrize("feedback, scale", [("implicit", r"confidences up to 9.2e\+19"),
                                             ("explicit", r"ratings up to 9.2e\+18")])
def test_a_few_rows_too_large_to_factorize_name_the_size_of_the_input(feedback, scale):
    """Exact solves of a few rows (one at a time, by Cholesky) whose factors outgrow what
    float64 can factorize: as the batched solves (by LU), the row becomes NaN and the fit
    names the input's size. It said "row 0's system is not numerically positive definite
    ...; use a larger regularization" (found by a fuzz of DataFrames)."""
    R = sp.csr_matrix((np.full(3, 9.2e18), ([0, 0, 0], [0, 1, 2])), shape=(1, 3))
    with pytest.raises(FloatingPointError, match=rf"after the item half-step of iteration 0; "
                                                 rf"the input \({scale}\)"):
        ALS(factors=2, iterations=2, feedback=feedback, backend="cpu", show_progress=False,
            random_state=0).fit(R)


def test_without_the_loss_the_fit_is_the_same(backend, R):
    seen = []
    plain = model_for(backend).fit(R)
    quiet = model_for(backend, calculate_training_loss=False,
                      callback=lambda it, elapsed, loss: seen.append((it, loss))).fit(R)
    np.testing.assert_array_equal(to_numpy(quiet.user_factors_), to_numpy(plain.user_factors_))
    np.testing.assert_array_equal(to_numpy(quiet.item_factors_), to_numpy(plain.item_factors_))
    assert quiet.loss_history_ == [] and len(plain.loss_history_) == 3
    assert seen == [(0, None), (1, None), (2, None)]


def test_without_the_loss_nan_is_still_an_error(R):
    model = model_for(NaNSolver(), calculate_training_loss=False)
    with pytest.raises(FloatingPointError, match="after iteration 2 .checked at the end of fit"):
        model.fit(R)
    assert not hasattr(model, "user_factors_")
    with pytest.raises(TypeError, match="calculate_training_loss must be True or False"):
        model_for("cpu", calculate_training_loss="no").fit(R)


def test_confidence_overflow_is_reported():
    R = sp.csr_matrix(np.array([[3e38, 0], [0, 1]], np.float32))
    with pytest.raises(ValueError, match="confidences overflow float32: alpha=.* times the "
                                         "largest value 3e"):
        model_for("cpu", factors=1).fit(R)
    # log confidence: |r| / epsilon overflows float32 on the way, the confidence does not
    tiny = dict(factors=1, confidence="log", epsilon=1e-300)
    model = model_for("cpu", **tiny).fit(sp.csr_matrix(np.array([[5.0, 0], [0, 1]])))
    assert np.isfinite(model.user_factors_).all()
    with pytest.raises(ValueError, match=r"alpha=1e\+36 times log\(1 \+ 5 / epsilon=1e-300\)"):
        model_for("cpu", alpha=1e36, **tiny).fit(sp.csr_matrix(np.array([[5.0, 0], [0, 1]])))


def test_explicit_feedback_fits_ratings(real_backend):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((80, 3)), rng.standard_normal((50, 3))
    mask = rng.random((80, 50)) < 0.5
    R = sp.csr_matrix(np.where(mask, X @ Y.T, 0))
    model = model_for(real_backend, factors=3, feedback="explicit", regularization=1e-4,
                      iterations=30, dtype=np.float64).fit(R)
    coo = R.tocoo()
    err = model.predict(coo.row, coo.col) - coo.data
    assert np.sqrt(np.mean(err**2)) < 0.02 * np.sqrt(np.mean(coo.data**2))


def test_from_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": ["b", "a", "b", "b"], "item": [10, 20, 20, 10],
                       "value": [1.0, 2.0, 3.0, 4.0]})
    matrix, users, items = from_dataframe(df)
    assert list(users) == ["a", "b"] and list(items) == [10, 20]
    np.testing.assert_array_equal(matrix.toarray(), [[0, 2], [5, 3]])
    counts, _, _ = from_dataframe(df.drop(columns="value"))
    np.testing.assert_array_equal(counts.toarray(), [[0, 1], [2, 1]])
    rated = df.rename(columns={"value": "rating"})  # values under another name: said so
    with pytest.warns(UserWarning, match=r"no column 'value': every row counts 1, and "
                                         r"column\(s\) \['rating'\] are not used"):
        counts, _, _ = from_dataframe(rated)
    np.testing.assert_array_equal(counts.toarray(), [[0, 1], [2, 1]])
    # fit(df) has no value_col: its warning says to rename the column instead
    with pytest.warns(UserWarning, match=r"^no column 'value': every row counts 1, and "
                                         r"column\(s\) \['rating'\] are not used; to train "
                                         r"on one, name it 'value', e\.g\. df\.rename\("
                                         r"columns=\{'rating': 'value'\}\)$") as caught:
        ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(rated)
    assert len(caught) == 1 and caught[0].filename == __file__
    logged = rated.assign(timestamp=881250949)[["user", "item", "timestamp", "rating"]]
    with pytest.warns(UserWarning, match=r"\['timestamp', 'rating'\] are not used; to train "
                                         r"on one, .* df\.rename\(columns=\{'rating': "):
        ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(logged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(from_dataframe(rated, value_col=None).matrix.toarray(),
                                      counts.toarray())
        np.testing.assert_array_equal(from_dataframe(rated, value_col="rating").matrix
                                      .toarray(), [[0, 2], [5, 3]])
    with pytest.raises(ValueError, match="column 'usr' not found"):
        from_dataframe(df, user_col="usr")
    for repeated in ("item", "value"):  # (df[name] is then a DataFrame, which had no dtype)
        with pytest.raises(ValueError, match=f"^the DataFrame has 2 columns named "
                                             f"'{repeated}': keep one, e.g. df.loc"):
            from_dataframe(pd.concat([df, df[[repeated]]], axis=1))
    with pytest.raises(TypeError, match="must be a pandas or polars DataFrame"):
        from_dataframe([1, 2])
    with pytest.raises(ValueError, match="column 'user' has 1 missing ids .* row 1"):
        from_dataframe(pd.DataFrame({"user": [1.0, np.nan], "item": [1, 2]}))
    with pytest.raises(ValueError, match="column 'item' has 1 missing ids"):
        from_dataframe(pd.DataFrame({"user": ["a", "b"], "item": ["x", None]}))
    with pytest.raises(TypeError, match="column 'user' mixes ids of types int, str"):
        from_dataframe(pd.DataFrame({"user": ["a", 1], "item": ["x", "y"]}))
    with pytest.raises(TypeError, match="column 'item' holds ids of type object that cannot "
                                        r"be sorted; convert it first, e.g. df\['item'\]"):
        from_dataframe(pd.DataFrame({"user": ["a", "b"], "item": [object(), object()]}))
    with pytest.raises(TypeError, match=r"column 'item' holds dict values \(e.g. \{1: 2\}\), "
                                        r"not one id per row"):
        from_dataframe(pd.DataFrame({"user": ["a", "b"], "item": [{1: 2}, {3: 4}]}))
    with pytest.raises(ValueError, match=r"'value' holds 2 missing, NaN .* first at row 0"):
        from_dataframe(df.assign(value=[np.nan, 1.0, np.inf, 2.0]))


def test_the_example_of_a_values_column_is_the_likeliest_one():
    """What the warnings of a frame without 'value' name as the example: the first column
    named as an amount or a rating that is not a time, else the first that is not a time,
    else the first."""
    from gpu_als.data import likely_value_column

    assert likely_value_column(["ts", "rating"]) == "rating"
    assert likely_value_column(["timestamp", "session", "Play_Count"]) == "Play_Count"
    assert likely_value_column(["event_ts", "date", "session"]) == "session"
    assert likely_value_column(["session", "clicks"]) == "clicks"
    assert likely_value_column(["time", "t"]) == "time"
    assert likely_value_column(["start_time", "stars"]) == "stars"  # ("star" in a time)
    assert likely_value_column(["counts_ts", "x"]) == "x"
    assert likely_value_column(["counts_ts", "ts"]) == "counts_ts"


def test_fit_on_a_dataframe_equals_the_matrix_fit_and_keeps_the_ids(tmp_path):
    pd = pytest.importorskip("pandas")
    R = random_interactions(25, 12, 0.3, seed=3).tocoo()
    df = pd.DataFrame({"user": [f"u{r:02d}" for r in R.row], "item": R.col * 10,
                       "value": R.data})
    params = dict(factors=3, iterations=3, backend="cpu", random_state=0, dtype=np.float64)
    model = ALS(**params).fit(df)
    matrix, users, items = from_dataframe(df, dtype=np.float64)
    reference = ALS(**params).fit(matrix)
    np.testing.assert_array_equal(model.user_factors_, reference.user_factors_)
    np.testing.assert_array_equal(model.item_factors_, reference.item_factors_)
    np.testing.assert_array_equal(model.user_ids_, users)
    np.testing.assert_array_equal(model.item_ids_, items)
    assert reference.user_ids_ is None  # a matrix has no ids
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(ALS.load(tmp_path / "m.npz", backend="cpu").item_ids_, items)

    # other column names: from_dataframe, then its matrix with its ids
    named = df.rename(columns={"user": "uid", "item": "sku", "value": "clicks"})
    matrix, users, items = from_dataframe(named, "uid", "sku", "clicks", dtype=np.float64)
    with_ids = ALS(**params).fit(matrix, user_ids=users, item_ids=items)
    np.testing.assert_array_equal(with_ids.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(with_ids.user_ids_, model.user_ids_)
    np.testing.assert_array_equal(with_ids.item_ids_, model.item_ids_)
    with pytest.raises(ValueError, match=r"item_ids has shape \(11,\), expected \(12,\)"):
        ALS(**params).fit(matrix, user_ids=users, item_ids=items[1:])
    with pytest.raises(TypeError, match="fit.df. takes its ids from the DataFrame's"):
        ALS(**params).fit(df, user_ids=users)
    assert ALS(**params).fit(matrix, user_ids=users).item_ids_ is None
    repeated = users.copy()
    repeated[-1] = repeated[0]  # a second row that user_rows(id) could never find
    with pytest.raises(ValueError, match=f"user_ids holds {repeated[0]!r} more than once"):
        ALS(**params).fit(matrix, user_ids=repeated)
    mixed = np.array([1, "1", *range(2, len(users))], dtype=object)  # 1 and "1": one id
    with pytest.raises(ValueError, match="user_ids holds '1' more than once"):
        ALS(**params).fit(matrix, user_ids=mixed)


def test_explicit_ratings_repeating_a_pair_are_summed_with_a_warning(tmp_path, capsys):
    """Summing a pair's rows is right for counts, but turns two ratings of 4 into an 8:
    fit(df), fit of a COO matrix, tune(df) and the command line say so for explicit
    feedback, and only then."""
    import warnings

    pd = pytest.importorskip("pandas")
    from gpu_als.cli import main
    from gpu_als.tune import tune

    df = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [7, 7, 7, 8, 8, 8],
                       "value": [4.0, 4.0, 3.0, 5.0, 1.0, 2.0]})
    params = dict(factors=2, iterations=2, backend="cpu", show_progress=False, random_state=0)
    message = (r"2 of the 6 rows repeat a \(user, item\) pair, and the ratings of a pair are "
               r"summed \(two ratings of 4 train as one of 8\); for feedback='explicit' keep "
               r"one rating per pair, e.g. with pandas df.drop_duplicates\(\['user', "
               r"'item'\], keep='last'\)")
    with pytest.warns(UserWarning, match=message) as caught:
        model = ALS(**params, feedback="explicit").fit(df)
    assert caught[0].filename == __file__  # the line that called fit
    assert model.predict([0], [0])[0] == pytest.approx(8, abs=1.5)  # the 8 it learnt
    with pytest.warns(UserWarning, match=message) as caught:
        result = tune(df, {"factors": [1, 2]}, metric="rmse", show_progress=False,
                      base_params={**params, "feedback": "explicit"})
    assert len(caught) == 1 and caught[0].filename == __file__  # tune's refit: no second
    assert list(result.model.user_ids_) == [1, 2, 3]
    # a sparse matrix of ratings with repeated entries (COO, as scipy sums them), alike
    coo = sp.coo_matrix((df["value"], (df["user"] - 1, df["item"] - 7)))
    with pytest.warns(UserWarning, match=r"^2 of the 6 stored entries of user_items repeat a "
                                         r"\(user, item\) pair, .* keep one rating per "
                                         r"pair$") as caught:
        from_matrix = ALS(**params, feedback="explicit").fit(coo)
    assert len(caught) == 1 and caught[0].filename == __file__
    np.testing.assert_array_equal(from_matrix.item_factors_, model.item_factors_)
    # ... and rows folded in, by every call that solves them
    row = sp.coo_matrix(([4.0, 4.0, 3.0], ([0, 0, 0], [0, 0, 1])), shape=(1, 2))
    column = sp.coo_matrix(([4.0, 4.0], ([0, 0], [2, 2])), shape=(1, 3))
    users = r"^1 of the 3 stored entries of user_items repeat a \(user, item\) pair"
    items = r"^1 of the 2 stored entries of item_users repeat a \(item, user\) pair"
    for fold_in, message in ((lambda: from_matrix.recalculate_user(0, row), users),
                             (lambda: from_matrix.transform(row), users),
                             (lambda: from_matrix.recommend(0, row, recalculate_user=True),
                              users),
                             (lambda: from_matrix.recalculate_item(1, column), items),
                             (lambda: from_matrix.partial_fit_items([1], column), items),
                             (lambda: from_matrix.partial_fit_users([3], row), users)):
        with pytest.warns(UserWarning, match=message) as caught:
            fold_in()
        assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ALS(**params).fit(df)  # implicit: counts, summed as they should be
        ALS(**params).fit(coo).recalculate_user(0, row)
        ALS(**params, feedback="explicit").fit(df.drop_duplicates(["user", "item"]))
        ALS(**params, feedback="explicit").fit(coo.tocsr())  # summed by the caller: fine
    file = tmp_path / "ratings.csv"
    df.rename(columns={"user": "uid"}).to_csv(file, index=False)
    assert main(["train", str(file), "--user-col", "uid", "--feedback", "explicit",
                 "--factors", "2", "--iterations", "1", "--backend", "cpu",
                 "--output", str(tmp_path / "m.npz")]) == 0
    assert "gpu-als train: warning: 2 of the 6 rows repeat a (uid, item) pair" in \
        capsys.readouterr().err
    # new users' rows, folded in: one rating of a pair repeated, and a row of an item the
    # model lacks (left out, so not counted)
    today = tmp_path / "today.csv"
    pd.DataFrame({"uid": [9, 9, 9, 3], "item": [7, 7, 99, 8],
                  "value": [5.0, 5.0, 1.0, 2.0]}).to_csv(today, index=False)
    for command in (["fold-in", str(tmp_path / "m.npz"), str(today), "--output",
                     str(tmp_path / "m2.npz")],
                    ["recommend", str(tmp_path / "m.npz"), str(today), "--users", "9"]):
        assert main([*command, "--user-col", "uid", "--backend", "cpu"]) == 0
        assert f"gpu-als {command[0]}: warning: 1 of the {3 if command[0] == 'fold-in' else 2}" \
               f" rows repeat a (uid, item) pair" in capsys.readouterr().err


def test_from_dataframe_against_given_id_maps():
    """New interactions lined up with a fitted model's ids: given order, unknown ids
    refused by default or left out, users without rows empty."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": ["b", "a", "x", "b"], "item": [10, 20, 20, 99],
                       "value": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=r"column 'user' holds an id that .*e\.g\. 'x'"):
        from_dataframe(df, user_ids=["a", "b"])
    with pytest.raises(ValueError, match="column 'item' holds an id that .* 99"):
        from_dataframe(df, user_ids=["a", "b", "x"], item_ids=[20, 10])
    # unknown ids each once, in the order of the rows, also where they do not sort together
    mixed = pd.DataFrame({"user": ["z", 7, "a", "z", 8, 9], "item": [10] * 6})
    with pytest.raises(ValueError, match=r"^column 'user' holds 4 ids that the given map "
                                         r"lacks \(e\.g\. 'z', 7, 8\); pass "
                                         r"drop_unknown=True"):
        from_dataframe(mixed, user_ids=["a"])
    matrix, users, items = from_dataframe(df, user_ids=["b", "a", "q"], item_ids=[20, 10],
                                          drop_unknown=True)
    assert list(users) == ["b", "a", "q"] and list(items) == [20, 10]
    np.testing.assert_array_equal(matrix.toarray(), [[0, 1], [2, 0], [0, 0]])
    with pytest.raises(ValueError, match="the id map for column 'user' holds 'a' more than "
                                         "once"):
        from_dataframe(df, user_ids=["a", "a"], drop_unknown=True)
    with pytest.raises(ValueError, match=r"the id map for column 'user' holds a missing id "
                                         r"\(None\) at position 1"):  # (a map of one id)
        from_dataframe(df, user_ids=["a", None], drop_unknown=True)
    with pytest.raises(ValueError, match=r"the id map for column 'item' must be 1-D, got "
                                         r"shape \(1, 2\)"):
        from_dataframe(df, item_ids=[[20, 10]], drop_unknown=True)


def test_text_ids_coded_in_arrow_come_out_as_through_python_strings(monkeypatch):
    """pandas' string dtypes and polars' String are coded by pandas in Arrow, without a
    Python string per row: the same ids (Python strings, in code point order) and the
    same matrix as an object column of Python strings gives; polars without pyarrow too."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    from gpu_als.data import _text_series

    names = ["b", "a", "Z", "é", "ß", "😀", "", "10", "9", "a b", "e\u0301", "\u00e9"]
    rng = np.random.default_rng(2)
    users = [names[j] for j in rng.integers(0, len(names), 60)]
    items = [names[j] + "!" for j in rng.integers(0, len(names), 60)]
    values = rng.integers(1, 5, 60).astype(np.float64)
    reference = from_dataframe(pd.DataFrame({"user": pd.Series(users, dtype=object),
                                             "item": pd.Series(items, dtype=object),
                                             "value": values}))
    assert list(reference.user_ids) == sorted(set(users))
    frames = {str(dtype): pd.DataFrame({"user": pd.Series(users, dtype=dtype),
                                        "item": pd.Series(items, dtype=dtype),
                                        "value": values})
              for dtype in ("string[python]", "string[pyarrow]", "str",
                            pd.ArrowDtype(pa.string()))}
    frames["polars"] = pl.DataFrame({"user": users, "item": items, "value": values})
    for name, frame in frames.items():
        arrow = frame["user"].dtype != object  # pandas < 3 reads "str" as object
        assert (_text_series(frame["user"]) is not None) == arrow, name  # coded in Arrow
        got = from_dataframe(frame)
        assert got.user_ids.dtype == object and got.item_ids.dtype == object, name
        assert list(got.user_ids) == list(reference.user_ids), name
        assert list(got.item_ids) == list(reference.item_ids), name
        assert all(type(i) is str for i in got.user_ids), name
        assert (got.matrix != reference.matrix).nnz == 0, name
    monkeypatch.setattr(pl.Series, "to_pandas", lambda *a, **k: (_ for _ in ()).throw(
        ImportError("pyarrow is not installed")))
    assert _text_series(frames["polars"]["user"]) is None
    got = from_dataframe(frames["polars"])
    assert list(got.user_ids) == list(reference.user_ids)
    assert (got.matrix != reference.matrix).nnz == 0


def test_categorical_ids_come_out_as_their_values_would():
    """A pandas categorical id column is coded from its categories: the ids and matrix of
    the same values in a plain column, whatever the categories' order, unused
    categories, ordered or not, text or numbers; mixed types refused alike."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    for values, categories in ((["b", "a", "é", "10", "9", "b"], ["é", "zz", "b", "9", "a", "10"]),
                               ([30, 10, 20, 10], [40, 30, 20, 10]),
                               (["x"], None)):
        items = rng.integers(0, 4, len(values))
        plain = from_dataframe(pd.DataFrame({"user": pd.Series(values, dtype=object),
                                             "item": items}))
        for ordered in (False, True):
            column = pd.Categorical(values, categories=categories, ordered=ordered)
            got = from_dataframe(pd.DataFrame({"user": column, "item": items}))
            assert list(got.user_ids) == list(plain.user_ids)
            assert (got.matrix != plain.matrix).nnz == 0
            # against an id map (a model's), by value
            lined_up = from_dataframe(pd.DataFrame({"user": column, "item": items}),
                                      user_ids=plain.user_ids[::-1])
            assert (lined_up.matrix != plain.matrix[::-1]).nnz == 0
    with pytest.raises(TypeError, match="column 'user' mixes ids of types int, str"):
        from_dataframe(pd.DataFrame({"user": pd.Categorical([1, "a"]), "item": [1, 2]}))
    with pytest.raises(ValueError, match="column 'user' has 1 missing ids"):
        from_dataframe(pd.DataFrame({"user": pd.Categorical(["a", None]), "item": [1, 2]}))


def test_ids_of_several_values_are_refused():
    """A tuple id (a composite key), a list or a set is not one id: lookups would read a
    list of them as a 2-D array and a model file would keep their text. Refused where ids
    come in: a frame's column, fit's, from_factors' and the partial fits' ids."""
    pd = pytest.importorskip("pandas")

    def objects(*values):
        array = np.empty(len(values), object)
        array[:] = values
        return array

    pairs = objects(("a", 1), ("b", 2))
    frame = pd.DataFrame({"user": pd.Series(list(pairs) + [("a", 1)], dtype=object),
                          "item": [1, 2, 3]})
    message = r"column 'user' holds tuple values \(e.g. \('a', 1\)\), not one id per row"
    with pytest.raises(TypeError, match=message):
        from_dataframe(frame)
    with pytest.raises(TypeError, match=message):
        ALS(factors=2, iterations=1, backend="cpu").fit(frame)
    for column in (objects([1], [2]), objects({1}, {2})):
        with pytest.raises(TypeError, match="column 'user' holds (list|set) values"):
            from_dataframe(pd.DataFrame({"user": column, "item": [1, 2]}))
    R = sp.csr_matrix(np.eye(2, dtype=np.float32))
    message = r"user_ids holds tuple ids \(e.g. \('a', 1\)\): an id is one value"
    with pytest.raises(TypeError, match=message):
        ALS(factors=2, iterations=1, backend="cpu").fit(R, user_ids=pairs)
    with pytest.raises(TypeError, match=message):
        ALS.from_factors(np.ones((2, 2)), np.ones((2, 2)), user_ids=pairs)
    with pytest.raises(TypeError, match=r"item_ids holds tuple ids \(e.g. \(1, 2\)\)"):
        ALS.from_factors(np.ones((2, 2)), np.ones((2, 2)), item_ids=objects(7, (1, 2)))
    model = ALS(factors=2, iterations=1, backend="cpu").fit(R, user_ids=["a", "b"])
    with pytest.raises(TypeError, match=message):
        model.partial_fit_users(user_items=R, user_ids=pairs)
    # a list of an id and a tuple: NumPy's "inhomogeneous shape" ValueError before
    with pytest.raises(TypeError, match=r"user_ids holds tuple ids \(e.g. \('c',\)\)"):
        model.partial_fit_users(user_items=R, user_ids=["c", ("c",)])
    with pytest.raises(TypeError, match=r"user_ids holds list ids \(e.g. \[1, 2\]\)"):
        ALS(factors=2, iterations=1, backend="cpu").fit(R, user_ids=["c", [1, 2]])
    assert list(model.user_ids_) == ["a", "b"]  # the model unchanged
    np.testing.assert_array_equal(model.user_rows(["b", ("a",)]), [1, -1])  # found: none


@pytest.mark.parametrize("missing, shown", [
    (None, "None"), (np.nan, "nan"), ("NA", "<NA>"), ("NaT", "NaT")])
def test_a_missing_id_is_refused_wherever_ids_come_in(missing, shown, monkeypatch):
    """As a DataFrame's id column is: no lookup finds NaN, NaT or None, yet fit, the
    partial fits, from_factors and save kept them as ids (None saved as "None")."""
    pd = pytest.importorskip("pandas")
    kind, missing = missing, {"NA": pd.NA, "NaT": pd.NaT}.get(missing, missing)
    R = sp.csr_matrix(np.eye(2, dtype=np.float32))
    ids = pd.Series(["a", missing], dtype=object)
    message = rf"user_ids holds a missing id \({shown}\) at position 1: each row needs an id"
    with pytest.raises(ValueError, match=message):
        ALS(factors=2, iterations=1, backend="cpu").fit(R, user_ids=ids)
    with pytest.raises(ValueError, match=message):
        ALS.from_factors(np.ones((2, 2)), np.ones((2, 2)), user_ids=ids)
    model = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(
        R, user_ids=["a", "b"], item_ids=[1.5, 2.5])
    with pytest.raises(ValueError, match=message.replace("position 1", "position 0")):
        model.partial_fit_users(user_items=R[:1], user_ids=[missing])
    with pytest.raises(ValueError, match=message.replace("user", "item")):
        model.partial_fit_items(item_users=R, item_ids=[3.5, missing])
    with pytest.raises(ValueError, match=message):
        model.save(io.BytesIO(), user_ids=ids)
    assert list(model.user_ids_) == ["a", "b"]  # the model unchanged
    assert list(model.item_ids_) == [1.5, 2.5]
    if kind is np.nan:  # and in arrays of numbers
        with pytest.raises(ValueError, match=r"item_ids holds a missing id \(nan\)"):
            model.partial_fit_items(item_users=R[:1], item_ids=np.array([np.nan]))
    if kind == "NaT":
        with pytest.raises(ValueError, match=r"item_ids holds a missing id \(NaT\)"):
            ALS.from_factors(np.ones((1, 2)), np.ones((1, 2)),
                             item_ids=np.array(["NaT"], "datetime64[D]"))
    if kind is None or kind is np.nan:  # found without pandas too (NA and NaT need it)
        monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` fails
        with pytest.raises(ValueError, match=message):
            ALS.from_factors(np.ones((2, 2)), np.ones((2, 2)),
                             user_ids=np.array(["a", missing], object))
        model.partial_fit_users(user_items=R[:1], user_ids=np.array(["c"], object))
        assert list(model.user_ids_) == ["a", "b", "c"]  # present ids are not missing,
        model.partial_fit_items(item_users=sp.csr_matrix((1, 3)), item_ids=np.array([4.5], object))
        assert list(model.item_ids_) == [1.5, 2.5, 4.5]  # a number (not NaN) included


def test_polars_frames_give_what_the_same_pandas_frames_give():
    """fit and from_dataframe on a polars DataFrame: the matrix, ids and factors of the
    same pandas frame; polars nulls and NaN ids refused, categorical ids read as strings."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    R = random_interactions(25, 12, 0.3, seed=4).tocoo()
    columns = {"user": [f"u{r:02d}" for r in R.row], "item": R.col * 10,
               "value": R.data.astype(np.float64)}
    pandas_df, polars_df = pd.DataFrame(columns), pl.DataFrame(columns)
    expected = from_dataframe(pandas_df)
    got = from_dataframe(polars_df)
    assert (got.matrix != expected.matrix).nnz == 0
    np.testing.assert_array_equal(got.user_ids, expected.user_ids)
    np.testing.assert_array_equal(got.item_ids, expected.item_ids)
    counts = from_dataframe(polars_df.drop("value")).matrix
    assert counts.sum() == len(polars_df)
    params = dict(factors=3, iterations=2, backend="cpu", random_state=0)
    model, reference = ALS(**params).fit(polars_df), ALS(**params).fit(pandas_df)
    np.testing.assert_array_equal(model.item_factors_, reference.item_factors_)
    np.testing.assert_array_equal(model.user_ids_, reference.user_ids_)
    lined_up = from_dataframe(pl.DataFrame({"user": ["u01", "zz"], "item": [10, 20]}),
                              user_ids=model.user_ids_, item_ids=model.item_ids_,
                              drop_unknown=True).matrix
    assert lined_up.shape == model.user_factors_.shape[:1] + model.item_factors_.shape[:1]
    assert lined_up.nnz == 1 and lined_up[1, 1] == 1
    categorical = pl.DataFrame({"user": pl.Series(["b", "a"], dtype=pl.Categorical),
                                "item": [1, 2]})
    assert list(from_dataframe(categorical).user_ids) == ["a", "b"]
    # Categorical and Enum (categories unused, in another order) give the String's coding
    text = pl.DataFrame({"user": ["b", "é", "a", "b", "10"], "item": [1, 2, 3, 4, 5]})
    plain = from_dataframe(text)
    for dtype in (pl.Categorical, pl.Enum(["zz", "é", "b", "10", "a"])):
        frame = text.with_columns(pl.col("user").cast(dtype))
        got = from_dataframe(frame)
        np.testing.assert_array_equal(got.user_ids, plain.user_ids)
        assert (got.matrix != plain.matrix).nnz == 0
        lined_up = from_dataframe(frame, user_ids=plain.user_ids[::-1])
        assert (lined_up.matrix != plain.matrix[::-1]).nnz == 0
    with pytest.raises(ValueError, match="column 'user' has 1 missing ids .* row 1"):
        from_dataframe(pl.DataFrame({"user": pl.Series(["a", None], dtype=pl.Categorical),
                                     "item": [1, 2]}))
    with pytest.raises(ValueError, match="column 'user' has 1 missing ids .* row 1"):
        from_dataframe(pl.DataFrame({"user": [1, None], "item": [1, 2]}))
    with pytest.raises(ValueError, match="column 'item' has 1 missing ids .* row 0"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": [float("nan"), 2.0]}))
    with pytest.raises(ValueError, match=r"'value' holds 1 missing, NaN .* first at row 1"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": [1, 2], "value": [1.0, None]}))
    with pytest.raises(TypeError, match="column 'value' has dtype object: expected numbers "
                                        r"\(row 1 holds '1,5'\)"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": [1, 2], "value": ["2", "1,5"]}))
    # several values in each row of an id column (NumPy reads them as a 2-D array)
    with pytest.raises(TypeError, match=r"column 'user' holds Struct\(.*\) values, not one "
                                        r"id per row; make an id of each"):
        from_dataframe(pl.DataFrame({"user": [{"a": 1}, {"a": 2}], "item": [1, 2]}))
    with pytest.raises(TypeError, match=r"column 'item' holds Array\(.*\) values, not one"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": pl.Series(
            [[1, 2], [3, 4]], dtype=pl.Array(pl.Int64, 2))}))
    # and of the values column (SciPy's "coordinates and data arrays must be 1-D")
    with pytest.raises(TypeError, match=r"^column 'value' holds Struct\(.*\) values, not one "
                                        r"number per row$"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": [1, 2],
                                     "value": [{"a": 1}, {"a": 2}]}))
    with pytest.raises(TypeError, match=r"^column 'value' holds Array\(Float64.*\) values"):
        from_dataframe(pl.DataFrame({"user": [1, 2], "item": [1, 2], "value": pl.Series(
            [[1.0, 2.0], [3.0, 4.0]], dtype=pl.Array(pl.Float64, 2))}))


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
def test_decimal_values_are_numbers(library):
    """Values typed DECIMAL (SQL exports, Parquet files, polars' Decimal) come as Python
    Decimals in an object column: they were refused as "dtype object". polars' Decimal
    and pandas' Arrow decimal128 (library "pyarrow") are converted by their library."""
    import decimal

    pd = pytest.importorskip("pandas")
    frames = pytest.importorskip(library)

    def frame(values, users=("a", "b", "a"), items=("x", "y", "y")):
        if library == "polars":  # (its constructor takes no decimals of other scales)
            return frames.DataFrame({"user": users, "item": items, "value": values}) \
                .with_columns(frames.col("value").cast(frames.Decimal(5, 2)))
        if library == "pyarrow":  # a Parquet file read with dtype_backend="pyarrow"
            values = frames.array([None if v != v else v for v in values]).cast(
                frames.decimal128(5, 2))
            return pd.DataFrame({"user": users, "item": items,
                                 "value": pd.Series(values, dtype=pd.ArrowDtype(values.type))})
        return pd.DataFrame({"user": users, "item": items,
                             "value": [None if v is None else decimal.Decimal(str(v))
                                       for v in values]})

    expected = from_dataframe(pd.DataFrame({"user": ["a", "b", "a"], "item": ["x", "y", "y"],
                                            "value": [1.5, 0.1, 3.25]}), dtype=np.float64)
    got = from_dataframe(frame([1.5, 0.1, 3.25]), dtype=np.float64)  # 0.1: not float32's
    assert got.matrix.dtype == np.float64 and (got.matrix != expected.matrix).nnz == 0
    bad = [[1.5, None]] + ([[float("nan"), 1]] if library == "pandas" else [])
    for values in bad:
        with pytest.raises(ValueError, match="'value' holds 1 missing, NaN or infinite"):
            from_dataframe(frame(values, (1, 2), (1, 2)))
    with pytest.raises(TypeError, match=r"dtype object: expected numbers \(row 1 holds"):
        from_dataframe(pd.DataFrame({"user": [1, 2], "item": [1, 2],
                                     "value": [decimal.Decimal(1), "x"]}))


def test_id_lookups_by_hashing_equal_numpys(monkeypatch):
    """With pandas, ids are coded and looked up by hashing (factorize, Index.get_indexer);
    without it, by NumPy's sort: the same codes, ids and positions either way."""
    import sys

    from gpu_als.data import _sorted_codes, id_positions

    columns = [np.array(["b", "a", "c", "a"], dtype=object), np.array(["b", "a", "b"]),
               np.array([3, 1, 2, 3]), np.array([3.5, 1.0, 3.5]), np.array([True, False]),
               np.array([2**62, -5, 7]), np.array(["é", "e", "z"], dtype=object),
               np.array([], dtype=object)]
    lookups = [(["b", "a", "c"], ["a", "z", "c", "b"]), ([5, 1, 3], [3.0, 1, 4]),
               (np.array([5, 1, 3]), ["3", "7"]), ([], ["a"]), (["a", "a", "b"], ["a", "b"]),
               ([1.5, 2.5], [2.5, 1.5, 3]), (np.array([b"\xff", b"a"]), [b"a", b"\xff"]),
               (np.array(["2026-01-01", "2026-01-02"], "datetime64[D]"),
                ["2026-01-02", "x", "2026-01-01T00:00"])]
    hashed = [_sorted_codes(c) for c in columns], [id_positions(*x) for x in lookups]
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` fails
    for (ids, codes), column in zip(hashed[0], columns):
        expected_ids, expected_codes = _sorted_codes(column)
        np.testing.assert_array_equal(ids, expected_ids)
        assert ids.dtype == expected_ids.dtype
        np.testing.assert_array_equal(codes, expected_codes.ravel())
    for got, lookup in zip(hashed[1], lookups):
        np.testing.assert_array_equal(got, id_positions(*lookup))


def test_id_positions():
    from gpu_als.data import id_positions

    np.testing.assert_array_equal(id_positions(["b", "a", "c"], ["a", "z", "c", "b"]),
                                  [1, -1, 2, 0])
    # numbers match numbers; a number and a string compare as strings (command lines)
    np.testing.assert_array_equal(id_positions([5, 1, 3], [3.0, 1, 4]), [2, 1, -1])
    np.testing.assert_array_equal(id_positions(np.array([5, 1, 3]), ["3", "7"]), [2, -1])
    np.testing.assert_array_equal(id_positions([], ["a"]), [-1])
    # bytes match their UTF-8 text, and bytes that are not UTF-8 only themselves
    np.testing.assert_array_equal(id_positions(np.array([b"\xff", b"a", b"\xc3\xa9"]),
                                               ["a", "\xff", "é", "ÿ"]), [1, -1, 2, -1])
    np.testing.assert_array_equal(id_positions(np.array([b"\xff", b"a"], dtype=object),
                                               np.array([b"a", b"\xff", b"b"])), [1, 0, -1])
    # datetimes match the same instants, written in any way numpy reads; a number is no
    # instant (numpy would read 5 as 1970-01-06, five days)
    days = np.array(["2026-01-01", "2026-01-02", "1970-01-06"], "datetime64[D]")
    np.testing.assert_array_equal(
        id_positions(days, [datetime.datetime(2026, 1, 2), "2026-01-01", "x", 5]),
        [1, 0, -1, -1])
    np.testing.assert_array_equal(id_positions(days, [datetime.datetime(2026, 1, 2), 5]),
                                  [1, -1])
    np.testing.assert_array_equal(id_positions(days, np.array([5, 2])), [-1, -1])
    # ... on either side: datetimes or ISO text named by a user, looked up in a datetime
    # column (recommend_frame's users in its interactions); spans alike
    for named in ([datetime.datetime(2026, 1, 2), "x", 5], np.array(["2026-01-02T00:00"])):
        np.testing.assert_array_equal(id_positions(named, days), [-1, 0, -1])
    np.testing.assert_array_equal(id_positions([datetime.timedelta(days=2)],
                                               np.array([1, 2, 3], "timedelta64[D]")),
                                  [-1, 0, -1])
    assert id_positions(["a"], []).shape == (0,)
    # repeated known ids (no hash index then): the first of them, also among more than
    # 16 (where an unstable sort reorders equal ids)
    known = np.random.default_rng(0).permutation(np.r_[np.arange(40), np.arange(40)])
    np.testing.assert_array_equal(id_positions(known, np.arange(41)),
                                  [list(known).index(i) for i in range(40)] + [-1])


def test_from_dataframe_takes_boolean_values_and_names_text_ones():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "value": [True, False]})
    np.testing.assert_array_equal(from_dataframe(df).matrix.toarray(), [[1, 0], [0, 0]])
    with pytest.raises(TypeError, match=r"column 'value' has dtype object: expected numbers "
                                        r"\(row 0 holds '1'\)$"):
        from_dataframe(df.assign(value=["1", "2"]))  # numbers as text: read, not guessed
    # the text that is no number is named, not a number before it that is not finite,
    # nor a missing one ('inf' above 'd' was named: pandas reads 'inf' as a number)
    for values, named in ((["inf", "d"], "row 1 holds 'd'"), ([None, "x"], "row 1 holds 'x'"),
                          (["nan", "1"], "row 0 holds 'nan'")):
        with pytest.raises(TypeError, match=rf"\({named}\)$"):
            from_dataframe(df.assign(value=pd.Series(values, dtype=object)))


def test_gpu_work_is_named_for_profilers(R, monkeypatch):
    """With the optional nvtx package, each half-step, the loss and each kernel phase of
    the GPU backend open an NVTX range (here a stand-in nvtx module records them)."""
    import contextlib
    import types

    opened = []
    fake = types.SimpleNamespace(annotate=lambda name, domain: (
        opened.append((name, domain)), contextlib.nullcontext())[1])
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    model_for(emulated_backend(), iterations=1).fit(R)
    names = {name for name, domain in opened if domain == "gpu_als"}
    assert {"gpu_als:user half-step", "gpu_als:item half-step", "gpu_als:training loss",
            "gpu_als:solve_rows", "gpu_als:shared", "gpu_als:loss"} <= names
    assert names & {"gpu_als:fused", "gpu_als:gram_build"}


def test_a_missing_nvtx_package_is_looked_for_once(monkeypatch):
    """Without nvtx, the GPU backend's ranges cost no import each: Python does not remember
    a failed import, and every retry searched sys.path again (tens of microseconds, four
    ranges or more per half-step)."""
    import builtins
    import importlib

    from gpu_als import data
    from gpu_als.backends import gpu

    attempts = []
    real_import = builtins.__import__

    def counting(name, *args, **kwargs):
        if name == "nvtx":
            attempts.append(name)
            raise ImportError("No module named 'nvtx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "nvtx", raising=False)
    monkeypatch.setattr(builtins, "__import__", counting)
    monkeypatch.setattr(importlib, "import_module", lambda name: counting(name))
    data._import_once.cache_clear()
    try:
        for _ in range(3):
            with gpu._nvtx_range("user half-step"):
                pass
    finally:
        data._import_once.cache_clear()
    assert attempts == ["nvtx"]
