"""gpu_als.tune: the search, halving, determinism, the outputs."""

import itertools
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, from_dataframe
from gpu_als.backends import CPUBackend
from gpu_als.evaluation import binarize, ranking_metrics, train_test_split
from gpu_als.tune import search_space, tune

from .conftest import ProgressBars, random_interactions


class Counting(CPUBackend):
    """The CPU backend, counting the matrices handed to it."""

    puts = 0

    def put(self, rows):
        self.puts += 1
        return super().put(rows)


GRID = {"factors": [2, 8], "regularization": [0.01, 1.0], "alpha": [1.0, 20.0]}


@pytest.fixture(scope="module")
def R():
    return random_interactions(120, 60, 0.12, seed=5)


def run(R, **kwargs):
    return tune(R, GRID, base_params={"iterations": 6, "backend": "cpu"}, random_state=3,
                show_progress=False, **kwargs)


def test_exhaustive_search_scores_every_trial_like_a_fresh_fit(R):
    result = run(R, halving=False)
    assert len(result.trials) == 8 and all(t["finished"] for t in result.trials)
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    for trial in result.trials[:3]:
        params = {name: trial[name] for name in GRID}
        model = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                    **params).fit(fit_part)
        assert trial["score"] == pytest.approx(
            ranking_metrics(model, fit_part, validation, K=10)["recall"])
    best = max(result.trials, key=lambda t: t["score"])
    assert result.best_params == {name: best[name] for name in GRID}
    assert result.best_score == best["score"]
    assert result.model.user_factors_.shape == (120, result.best_params["factors"])
    assert result.model.get_params()["backend"] == "cpu"


def test_a_dtype_searched_over_trains_each_trial_in_its_own(R):
    """The data is prepared once in the base dtype; a trial of another dtype gets its own
    copy, and scores as a fresh fit in that dtype does."""
    result = tune(R, {"dtype": ["float32", "float64"]}, halving=False, random_state=3,
                  base_params={"iterations": 4, "backend": "cpu", "factors": 4},
                  show_progress=False)
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    for trial in result.trials:
        model = ALS(factors=4, iterations=4, backend="cpu", random_state=3,
                    show_progress=False, dtype=trial["dtype"]).fit(fit_part)
        assert trial["score"] == ranking_metrics(model, fit_part, validation)["recall"]
    assert result.model.user_factors_.dtype == result.best_params["dtype"]


def test_halving_keeps_the_best_third_and_their_results_are_exact(R):
    exhaustive = run(R, halving=False)
    halved = run(R, halving=True, min_iterations=2, reduction_factor=3)
    # rung 2: 8 trials -> keep 3; rung 6 (= iterations): 3 finish
    assert sum(t["finished"] for t in halved.trials) == 3
    assert sorted(t["iterations_trained"] for t in halved.trials) == [2] * 5 + [6] * 3
    by_params = {tuple(t[n] for n in GRID): t for t in exhaustive.trials}
    for trial in halved.trials:
        if trial["finished"]:  # continuing a trial equals fitting it in one go
            same = by_params[tuple(trial[n] for n in GRID)]
            assert trial["score"] == pytest.approx(same["score"])
    # the three that went on were the best three at rung 2
    at_rung_2 = tune(R, GRID, base_params={"iterations": 2, "backend": "cpu"}, random_state=3,
                     show_progress=False, halving=False).trials
    best_three = sorted(at_rung_2, key=lambda t: -t["score"])[:3]
    assert {tuple(t[n] for n in GRID) for t in best_three} == \
        {tuple(t[n] for n in GRID) for t in halved.trials if t["finished"]}


def test_a_dataframe_is_searched_like_its_matrix_and_the_model_keeps_its_ids(R):
    pd = pytest.importorskip("pandas")
    coo = R.tocoo()
    df = pd.DataFrame({"user": coo.row + 1000, "item": [f"i{c:03d}" for c in coo.col],
                       "value": coo.data})
    from_frame, from_matrix = run(df, n_samples=3), run(R, n_samples=3)
    assert [t["score"] for t in from_frame.trials] == [t["score"] for t in from_matrix.trials]
    np.testing.assert_array_equal(from_frame.model.item_factors_,
                                  from_matrix.model.item_factors_)
    assert from_frame.model.user_ids_[0] == 1000 and from_frame.model.item_ids_[0] == "i000"
    assert from_matrix.model.user_ids_ is None
    counts = df.drop(columns="value")  # every row counts 1: fine for implicit feedback
    assert len(run(counts, n_samples=1).trials) == 1
    with pytest.raises(ValueError, match="for feedback='explicit', the ratings in 'value'"):
        tune(counts, {"factors": [2], "feedback": ["implicit", "explicit"]},
             base_params={"backend": "cpu"}, show_progress=False)


def test_a_given_validation_scores_the_trials_and_joins_the_refit(R):
    """``validation=``: each trial fits on ``user_items`` and scores on the validation
    entries it can be asked about (a user or item it has never seen, and a pair it has
    too, left out and counted); the best refits on both parts together."""
    fit_part, validation = train_test_split(R, test_fraction=0.3, random_state=8)
    fit_part = fit_part.tolil()
    fit_part[5, :] = 0  # a user seen only in validation
    fit_part[:, 7] = 0  # and an item
    fit_part = fit_part.tocsr()
    fit_part.eliminate_zeros()
    validation = validation.tolil()
    validation[6, R[6].indices[0]] = 1.0  # a pair of both parts
    validation = validation.tocsr()
    unseen = validation[5].nnz + validation[:, 7].nnz - (validation[5, 7] != 0)
    assert unseen >= 2 and fit_part[6, R[6].indices[0]] != 0
    scored = validation.tolil()
    scored[5, :] = 0
    scored[:, 7] = 0
    scored[6, R[6].indices[0]] = 0
    scored = scored.tocsr()
    scored.eliminate_zeros()
    with pytest.warns(UserWarning, match=f"of the {validation.nnz} entries of validation, "
                                         f"{unseen} of users or items without interactions in "
                                         f"user_items and 1 that user_items has too are left "
                                         f"out of the scoring"):
        result = run(fit_part, halving=False, validation=validation)
    for trial in result.trials[:3]:
        params = {name: trial[name] for name in GRID}
        model = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                    **params).fit(fit_part)
        assert trial["score"] == pytest.approx(
            ranking_metrics(model, fit_part, scored, K=10)["recall"])
    refit = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                **result.best_params).fit(fit_part + validation)
    np.testing.assert_allclose(result.model.item_factors_, refit.item_factors_, rtol=1e-5)
    with pytest.raises(ValueError, match=r"validation has shape \(10, 60\), user_items "
                                         r"\(120, 60\): give the two parts of one split"):
        run(fit_part, validation=validation[:10])
    with pytest.raises(ValueError, match="validation has no entries to score trials on "
                                         r"\(1 that user_items has too\)"):
        run(fit_part, validation=sp.csr_matrix((np.ones(1), ([6], [R[6].indices[0]])),
                                               shape=R.shape))


@pytest.mark.filterwarnings("ignore:factors=3 with")
def test_a_given_validation_of_float64_values_beyond_float32_trains_in_float64():
    """The two parts were checked in float32 whatever the trials' dtype: values of 1e45
    were "beyond float32's range ... or use dtype=float64" with dtype=float64 given, as
    base_params. Trials of float32 refuse them, as fit does."""
    R = random_interactions(40, 20, 0.3, seed=1, dtype=np.float64)
    R.data[:] = 1e45
    fit_part, validation = train_test_split(R, test_fraction=0.2)
    base = {"dtype": np.float64, "alpha": 1.0, "iterations": 2}
    result = tune(fit_part, {"factors": [2, 3]}, validation=validation, base_params=base,
                  show_progress=False, refit=False)
    assert 0 < result.best_score <= 1
    with pytest.raises(ValueError, match=r"user_items holds \d+ value\(s\) beyond float32's "
                                         r"range .* or use dtype=float64$"):
        tune(fit_part, {"factors": [2, 3]}, validation=validation, show_progress=False,
             base_params={**base, "dtype": np.float32})


@pytest.mark.filterwarnings("ignore:trial 2 of 4")  # (as trial 1's, below)
def test_a_grid_over_dtype_prepares_the_data_once_per_dtype_in_that_dtype(monkeypatch,
                                                                          tmp_path):
    """Trials of float64 beside float32 ones: each prepared its own copy of the data from
    the float32 one (its values rounded, or refused "beyond float32's range" before any
    trial, float64's included). Now once per dtype, in it: values of 1e45 fail the
    float32 trials alone."""
    from gpu_als import data

    made = []
    real = data.Prepared.__init__

    def counted(self, user_items, dtype=np.float32):
        made.append(np.dtype(dtype))
        real(self, user_items, dtype)

    monkeypatch.setattr(data.Prepared, "__init__", counted)
    R = random_interactions(40, 20, 0.3, seed=1, dtype=np.float64)
    grid = {"dtype": [np.float32, np.float64], "factors": [2, 3]}
    base = {"alpha": 1.0, "iterations": 2}
    result = tune(R, grid, base_params=base, show_progress=False, refit=False)
    assert sorted(map(str, made)) == ["float32", "float64"]
    assert all(np.isfinite(t["score"]) for t in result.trials)
    R.data[:] = 1e45
    with pytest.warns(UserWarning, match=r"trial 1 of 4 \(dtype='float32', factors=2\) "
                                         r"failed before training: ValueError: user_items "
                                         r"holds \d+ value\(s\) beyond float32's"):
        result = tune(R, grid, base_params=base, show_progress=False, refit=False)
    assert [np.isfinite(t["score"]) for t in result.trials] == [False, False, True, True]
    assert result.best_params["dtype"] is np.float64
    # the trials' table names the dtypes (it wrote "<class 'numpy.float64'>")
    lines = result.to_csv(tmp_path / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("dtype,factors,score") and lines[1].startswith("float64,")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["float32"] * 2 + ["float64"] * 2


def test_min_value_scores_the_trials_on_the_strong_validation_entries_only(R):
    """``min_value``: a trial's ranking counts only the validation entries of at least
    that value as relevant; the weaker ones stay out of the trials' fits (ranked as
    misses), and the refit trains on every entry."""
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    strong = binarize(validation, 3)
    assert 0 < strong.nnz < validation.nnz
    result = run(R, halving=False, min_value=3)
    for trial in result.trials[:3]:
        model = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                    **{name: trial[name] for name in GRID}).fit(fit_part)
        assert trial["score"] == pytest.approx(
            ranking_metrics(model, fit_part, strong, K=10)["recall"])
        assert trial["score"] != pytest.approx(
            ranking_metrics(model, fit_part, validation, K=10)["recall"])
    refit = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                **result.best_params).fit(R)
    np.testing.assert_allclose(result.model.item_factors_, refit.item_factors_, rtol=1e-5)
    # a validation given: the same scores as that validation's strong entries alone
    given = run(fit_part, halving=False, validation=validation, min_value=3)
    alone = run(fit_part, halving=False, validation=strong)
    assert [t["score"] for t in given.trials] == [t["score"] for t in alone.trials]
    with pytest.raises(ValueError, match=r"^no validation entry has a value >= "
                                         r"min_value=5: nothing to score trials on$"):
        run(R, min_value=5)
    with pytest.raises(ValueError, match="min_value chooses the validation entries a ranking "
                                         "metric counts as relevant; metric='rmse' scores "
                                         "every rating"):
        tune(R, {"factors": [2]}, metric="rmse", min_value=3,
             base_params={"feedback": "explicit"}, show_progress=False)
    with pytest.raises(ValueError, match="min_value=nan: must be finite"):
        run(R, min_value=float("nan"))


def test_max_users_scores_every_trial_on_one_sample_of_the_validation_users(R):
    """``max_users``: the trials are scored on the validation rows of that many users,
    drawn once (seeded by ``random_state``), after ``min_value`` has chosen the entries;
    the refit trains on every entry."""
    from gpu_als.evaluation import _sample_users

    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    for min_value, relevant in ((None, validation), (3, binarize(validation, 3))):
        sample = _sample_users(relevant, 15, 3)
        assert (np.diff(sample.indptr) > 0).sum() == 15 < (np.diff(relevant.indptr) > 0).sum()
        result = run(R, halving=False, max_users=15, min_value=min_value)
        for trial in result.trials[:3]:
            model = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                        **{name: trial[name] for name in GRID}).fit(fit_part)
            assert trial["score"] == pytest.approx(
                ranking_metrics(model, fit_part, sample, K=10)["recall"])
        refit = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
                    **result.best_params).fit(R)
        np.testing.assert_allclose(result.model.item_factors_, refit.item_factors_,
                                   rtol=1e-5)
    everyone = run(R, halving=False, max_users=10**6)  # more than there are: all of them
    assert [t["score"] for t in everyone.trials] == \
        [t["score"] for t in run(R, halving=False).trials]
    with pytest.raises(ValueError, match="max_users=0: must be >= 1"):
        run(R, max_users=0)


def test_ratings_of_a_pair_in_both_given_parts_are_warned_of_as_summed(R):
    """Explicit feedback: a (user, item) rated in both parts is summed in the refit (two
    ratings of 4 as one of 8), warned of as ``fit`` warns of repeated pairs; counts
    (implicit feedback) sum without a word."""
    fit_part, validation = train_test_split(R, test_fraction=0.3, random_state=8)
    validation = validation.tolil()
    validation[6, R[6].indices[0]] = 1.0  # a pair of both parts
    validation = validation.tocsr()
    grid, base = {"factors": [2]}, {"iterations": 2, "backend": "cpu", "feedback": "explicit"}
    with pytest.warns(UserWarning) as caught:
        tune(fit_part, grid, metric="rmse", validation=validation, base_params=base,
             show_progress=False)
    said = [str(w.message) for w in caught]
    assert any(f"1 of the {fit_part.nnz + validation.nnz:,} entries of user_items and "
               f"validation repeat a (user, item) pair, and the ratings of a pair are summed"
               in message for message in said), said
    with pytest.warns(UserWarning) as caught:
        tune(fit_part, grid, validation=validation, show_progress=False,
             base_params={**base, "feedback": "implicit"})
    assert not any("are summed" in str(w.message) for w in caught)


def test_a_given_validation_frame_joins_the_ids_of_both_parts(R):
    """DataFrames: the model refitted on both parts has the ids of either, in order, and
    its trials score as on the matrices of those ids."""
    pd = pytest.importorskip("pandas")
    coo = R.tocoo()
    df = pd.DataFrame({"user": coo.row + 1000, "item": [f"i{c:03d}" for c in coo.col],
                       "value": coo.data})
    later = (coo.row % 7 == 0) & (coo.col % 2 == 0)
    fit_df, held_df = df[~later & (df["user"] != 1007)], df[later]
    assert 1007 in set(held_df["user"])  # a user of validation alone
    with pytest.warns(UserWarning, match="of users or items without interactions"):
        result = run(fit_df, halving=False, validation=held_df)
    _, users, items = from_dataframe(pd.concat([fit_df, held_df]))
    assert result.model.user_ids_.tolist() == users.tolist() == sorted(set(df["user"]))
    assert result.model.item_ids_.tolist() == items.tolist()
    fit_part, held_out = (from_dataframe(part, user_ids=users, item_ids=items).matrix
                          for part in (fit_df, held_df))
    with pytest.warns(UserWarning, match="of users or items without interactions"):
        matrix_result = run(fit_part, halving=False, validation=held_out)
    assert [t["score"] for t in result.trials] == [t["score"] for t in matrix_result.trials]
    np.testing.assert_array_equal(result.model.item_factors_,
                                  matrix_result.model.item_factors_)
    with pytest.raises(TypeError, match="user_items is a DataFrame but validation is a "
                                        "matrix: give the two parts of one split alike"):
        run(fit_df, validation=R)
    with pytest.raises(ValueError, match="user_items has a column 'value' but validation "
                                         "has not"):
        run(fit_df, validation=held_df.drop(columns="value"))
    # without rows: said of validation, as of a matrix without entries (it was fit(df)'s
    # "df has no rows: there is nothing to learn from")
    with pytest.raises(ValueError, match="^validation has no rows to score trials on$"):
        run(fit_df, validation=held_df.head(0))


def test_deterministic_and_random_sampling(R):
    a, b = run(R, n_samples=4), run(R, n_samples=4)
    assert [t["score"] for t in a.trials] == [t["score"] for t in b.trials]
    assert len(a.trials) == 4
    grid = [tuple(t[name] for name in GRID) for t in run(R, halving=False).trials]
    sampled = [tuple(t[name] for name in GRID) for t in a.trials]
    assert sorted(sampled, key=grid.index) == sampled  # in the grid's order
    np.testing.assert_array_equal(a.model.item_factors_, b.model.item_factors_)
    samples = {tuple(tuple(t[name] for name in GRID) for t in
                     tune(R, GRID, n_samples=4, halving=False, random_state=seed,
                          base_params={"iterations": 1, "backend": "cpu"},
                          show_progress=False).trials)
               for seed in range(4)}
    assert len(samples) > 1  # the seed draws the sample
    assert len(run(R, n_samples=100).trials) == 8  # more than the grid: all of it
    # the default seed is 0, as documented: the sample, the split and the fits
    drawn = search_space(GRID, n_samples=3)[2]
    assert drawn == search_space(GRID, n_samples=3, random_state=0)[2]
    assert drawn != search_space(GRID, n_samples=3, random_state=1)[2]
    default, zero = (tune(R, GRID, n_samples=2, halving=False, show_progress=False,
                          base_params={"iterations": 1, "backend": "cpu"}, **seed)
                     for seed in ({}, {"random_state": 0}))
    assert [t["score"] for t in default.trials] == [t["score"] for t in zero.trials]
    np.testing.assert_array_equal(default.model.item_factors_, zero.model.item_factors_)


def test_a_sample_of_a_huge_grid_is_drawn_without_listing_the_grid(monkeypatch):
    """A fine random-search grid (10**12 configurations here) is drawn from directly: the
    search listed every configuration first (a hang, then out of memory). The draw is the
    one of the grid's list, in the order of itertools.product."""
    from gpu_als import tune as tune_module

    huge = {"regularization": np.logspace(-4, 1, 10_000), "alpha": np.linspace(1, 100, 10_000),
            "factors": range(1, 10_001)}
    _, _, drawn = search_space(huge, n_samples=5, random_state=3)
    chosen = np.random.default_rng(3).choice(10**12, 5, replace=False)
    values = {name: list(v) for name, v in huge.items()}
    expected = []
    for i in sorted(chosen):
        r, a, f = np.unravel_index(i, (10_000, 10_000, 10_000))
        expected.append({"regularization": values["regularization"][r],
                         "alpha": values["alpha"][a], "factors": values["factors"][f]})
    assert drawn == expected
    small = {"factors": [2, 4, 8], "alpha": [1.0, 5.0], "regularization": [0.1, 0.01]}
    listed = [dict(zip(small, c)) for c in itertools.product(*small.values())]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        assert search_space(small, n_samples=5, random_state=seed)[2] == \
            [listed[i] for i in sorted(rng.choice(12, 5, replace=False))]
    assert search_space(small)[2] == listed
    assert tune_module.MAX_CONFIGURATIONS == 100_000
    monkeypatch.setattr(tune_module, "MAX_CONFIGURATIONS", 100)  # (each one is checked)
    square = {"factors": range(1, 12), "iterations": range(1, 12)}  # 121
    with pytest.raises(ValueError, match="the grid has 121 configurations, each a fit, and "
                                         "at most 100 are tried: pass n_samples"):
        search_space(square)
    with pytest.raises(ValueError, match="n_samples=101 is more"):
        search_space(square, n_samples=101)
    assert len(search_space(square, n_samples=100)[2]) == 100


def test_configurations_that_train_the_same_model_are_trained_once(R, caplog):
    """A grid over solver and cg_steps: the Cholesky solver's trials differ only in
    cg_steps, which acts on nothing there, so one of them is trained; each trial's score
    is that of the same configuration searched alone."""
    grid = {"solver": ["cholesky", "cg"], "cg_steps": [1, 3], "factors": [2, 8]}
    with caplog.at_level("INFO", logger="gpu_als"), warnings.catch_warnings():
        warnings.simplefilter("error")  # cg_steps=1 of a Cholesky trial: searched, no warning
        result = tune(R, grid, base_params={"iterations": 4, "backend": "cpu"},
                      random_state=3, show_progress=False, halving=False, refit=False)
    assert "2 of the 8 configurations would train the model of another (they differ from " \
        "it only in settings that act on nothing in them, or not at all): each model is " \
        "trained once" in caplog.text
    assert [(t["solver"], t["cg_steps"], t["factors"]) for t in result.trials] == [
        ("cholesky", 1, 2), ("cholesky", 1, 8), ("cg", 1, 2), ("cg", 1, 8), ("cg", 3, 2),
        ("cg", 3, 8)]
    assert result.n_same == 2  # (the command line's summary counts them)
    caplog.clear()
    with caplog.at_level("INFO", logger="gpu_als"):
        alone = tune(R, {"solver": ["cholesky"], "factors": [2, 8]}, random_state=3,
                     base_params={"iterations": 4, "backend": "cpu", "cg_steps": 3},
                     show_progress=False, halving=False)
    assert "would train the model of another" not in caplog.text  # none left out: nothing said
    assert alone.n_same == 0
    assert [t["score"] for t in alone.trials] == [t["score"] for t in result.trials[:2]]


LISTED = [{"solver": ["cholesky"], "factors": [2, 8]},
          {"solver": ["cg"], "cg_steps": [1, 3], "factors": [2, 8]}]


def test_a_list_of_grids_searches_the_configurations_of_each(R, tmp_path):
    """A list of grids (scikit-learn's ParameterGrid takes one): the configurations of
    each in turn, scored as searched alone; a trial's value of a name that its grid has
    not is None (an empty cell in the CSV), and best_params has its grid's names."""
    result = tune(R, LISTED, base_params={"iterations": 4, "backend": "cpu"},
                  random_state=3, show_progress=False, halving=False)
    assert result.searched == ["solver", "factors", "cg_steps"]
    assert [(t["solver"], t["cg_steps"], t["factors"]) for t in result.trials] == [
        ("cholesky", None, 2), ("cholesky", None, 8), ("cg", 1, 2), ("cg", 1, 8),
        ("cg", 3, 2), ("cg", 3, 8)]
    each = [tune(R, grid, base_params={"iterations": 4, "backend": "cpu"}, random_state=3,
                 show_progress=False, halving=False, refit=False) for grid in LISTED]
    assert [t["score"] for t in result.trials] == \
        [t["score"] for one in each for t in one.trials]
    best = max(range(6), key=lambda i: result.trials[i]["score"])
    assert best >= 2  # (a CG trial: best_params has cg_steps)
    assert result.best_params == {name: result.trials[best][name]
                                  for name in ("solver", "cg_steps", "factors")}
    assert result.model.get_params()["cg_steps"] == result.best_params["cg_steps"]
    lines = result.to_csv(tmp_path / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("solver,factors,cg_steps,score")
    assert sum(line.startswith("cholesky,2,,") or line.startswith("cholesky,8,,")
               for line in lines) == 2
    pytest.importorskip("matplotlib")
    from gpu_als.plots import plot_tuning

    assert plot_tuning(result, tmp_path / "t.png").stat().st_size > 10_000


def test_a_configuration_of_two_grids_of_a_list_is_trained_once(R, caplog):
    """The same model from two grids of a list, once set by both, once left to the
    defaults by one (regularization=None is 0.01 for implicit feedback): trained once."""
    grids = [{"factors": [2, 8]}, {"factors": [8], "regularization": [0.01, 0.1]},
             {"alpha": [1.0]}]  # (alpha's default: factors=64, as ALS() is)
    with caplog.at_level("INFO", logger="gpu_als"):
        kept = search_space(grids, {"iterations": 4})[2]
    assert kept == [{"factors": 2}, {"factors": 8}, {"factors": 8, "regularization": 0.1},
                    {"alpha": 1.0}]
    assert "1 of the 5 configurations would train the model of another" in caplog.text
    readme = [{"feedback": ["implicit"], "alpha": [1, 10, 40]},  # the README's example
              {"feedback": ["explicit"], "regularization": [0.03, 0.1, 0.3]}]
    assert len(search_space(readme)[2]) == 6
    assert len(search_space({"feedback": ["implicit", "explicit"], "alpha": [1, 10, 40],
                             "regularization": [0.03, 0.1, 0.3]})[2]) == 12


def test_a_list_of_grids_is_sampled_as_one_grid_and_drawn_from_grid_first():
    """n_samples of a list of grids of lists: distinct configurations of their union, in
    its order; with a distribution, each draw picks its grid at random first."""
    import scipy.stats

    listed = [{"solver": "cholesky", "factors": 2}, {"solver": "cholesky", "factors": 8}] + \
        [{"solver": "cg", "cg_steps": c, "factors": f} for c in (1, 3) for f in (2, 8)]
    for seed in range(3):
        chosen = np.random.default_rng(seed).choice(6, 4, replace=False)
        assert search_space(LISTED, n_samples=4, random_state=seed)[2] == \
            [listed[i] for i in sorted(chosen)]
    assert search_space([{"factors": [2]}, {"factors": [3, 4, 5]}, {"alpha": [2.0]}])[2] == [
        {"factors": 2}, {"factors": 3}, {"factors": 4}, {"factors": 5}, {"alpha": 2.0}]
    grids = [{"factors": [2, 4, 8]}, {"regularization": scipy.stats.loguniform(1e-3, 1.0)}]
    rng = np.random.default_rng(6)
    expected = []
    for _ in range(6):
        if rng.integers(2) == 0:
            expected.append({"factors": [2, 4, 8][int(rng.integers(3))]})
        else:
            expected.append({"regularization":
                             grids[1]["regularization"].rvs(random_state=rng).item()})
    distinct = [c for i, c in enumerate(expected) if c not in expected[:i]]
    assert 3 < len(distinct) < 6  # (draws of a list repeat: each trained once)
    assert search_space(grids, n_samples=6, random_state=6)[2] == distinct
    with pytest.raises(ValueError, match=r"param_grid\[1\]\['regularization'\] is a "
                                         r"distribution: pass n_samples"):
        search_space(grids)
    with pytest.raises(TypeError, match=r"param_grid\[1\]\['factors'\] drew [\d.]+: factors "
                                        r"takes integers"):
        search_space([{"factors": [2]}, {"factors": scipy.stats.uniform(2, 8)}],
                     n_samples=4, random_state=1)


def test_refit_false_searches_without_the_final_fit(R, monkeypatch):
    """refit=False (scikit-learn's): the same trials and best, no model, and no fit of
    ALS at all (the trials train through Training); the backend is reported either way."""
    refitted = run(R)
    fits = []
    monkeypatch.setattr(ALS, "fit", lambda self, *a, **k: fits.append(self))
    searched = run(R, refit=False)
    assert searched.model is None and fits == []
    def timeless(trials):
        return [{k: v for k, v in t.items() if k != "seconds"} for t in trials]

    assert timeless(searched.trials) == timeless(refitted.trials)
    assert searched.best_params == refitted.best_params
    assert searched.backend == refitted.backend == "cpu"
    with pytest.raises(TypeError, match="refit must be True or False, got str"):
        run(R, refit="no")


def test_distributions_are_drawn_from_per_configuration(R, monkeypatch):
    """A distribution in the grid (scipy.stats', as RandomizedSearchCV takes them): each of
    n_samples configurations draws its value with the seeded generator, lists uniformly;
    the trials train with the values drawn, as Python numbers."""
    import scipy.stats

    grid = {"factors": [2, 8], "regularization": scipy.stats.loguniform(1e-3, 1.0),
            "alpha": scipy.stats.randint(1, 30)}
    drawn = search_space(grid, n_samples=6, random_state=4)[2]
    rng = np.random.default_rng(4)
    expected = []
    for _ in range(6):  # the draw, done by hand: the grid's order, one value each
        factors = [2, 8][int(rng.integers(2))]
        regularization = grid["regularization"].rvs(random_state=rng).item()
        expected.append({"factors": factors, "regularization": regularization,
                         "alpha": int(grid["alpha"].rvs(random_state=rng))})
    assert drawn == expected
    assert all(type(c["alpha"]) is int and type(c["regularization"]) is float for c in drawn)
    assert all(1e-3 <= c["regularization"] <= 1 and 1 <= c["alpha"] < 30 for c in drawn)
    assert len({c["regularization"] for c in drawn}) == 6
    assert search_space(grid, n_samples=6, random_state=5)[2] != drawn
    result = tune(R, grid, n_samples=3, halving=False, random_state=4, show_progress=False,
                  base_params={"iterations": 2, "backend": "cpu"})
    assert [{name: t[name] for name in grid} for t in result.trials] == \
        search_space(grid, n_samples=3, random_state=4)[2]
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=4)
    for trial in result.trials:  # each trained with the values drawn
        model = ALS(iterations=2, backend="cpu", random_state=4, show_progress=False,
                    **{name: trial[name] for name in grid}).fit(fit_part)
        assert trial["score"] == pytest.approx(
            ranking_metrics(model, fit_part, validation, K=10)["recall"])
    assert result.best_params == {name: max(result.trials, key=lambda t: t["score"])[name]
                                  for name in grid}
    with pytest.raises(ValueError, match=r"param_grid\['regularization'\] is a distribution: "
                                         r"pass n_samples, the number of configurations"):
        search_space(grid)
    with pytest.raises(TypeError, match=r"param_grid\['factors'\] drew [\d.]+: factors "
                                        r"takes integers, from a distribution of integers "
                                        r"such as scipy.stats.randint\(LOW, HIGH \+ 1\)"):
        search_space({**grid, "factors": scipy.stats.uniform(2, 8)}, n_samples=2)
    from gpu_als import tune as tune_module

    monkeypatch.setattr(tune_module, "MAX_CONFIGURATIONS", 7)  # (each one is checked)
    assert len(search_space(grid, n_samples=7)[2]) == 7
    with pytest.raises(ValueError, match=r"n_samples=8: each configuration is a fit, and at "
                                         r"most 7 are tried"):
        search_space(grid, n_samples=8)


def test_outputs_table_csv_plot(R, tmp_path, monkeypatch):
    result = run(R, metric="ndcg", K=5)
    assert result.metric == "ndcg@5"
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    best = ALS(iterations=6, backend="cpu", random_state=3, show_progress=False,
               **result.best_params).fit(fit_part)
    assert result.best_score == pytest.approx(  # scored at K=5
        ranking_metrics(best, fit_part, validation, K=5)["ndcg"])
    assert result.best_score != pytest.approx(
        ranking_metrics(best, fit_part, validation, K=10)["ndcg"])
    pd = pytest.importorskip("pandas")
    table = result.table()
    assert isinstance(table, pd.DataFrame) and table.iloc[0]["finished"]
    assert table.iloc[0]["score"] == result.best_score
    path = result.to_csv(tmp_path / "trials.csv")
    assert path.read_text().splitlines()[0].startswith("factors,regularization,alpha,score")
    assert_csv_is_the_table(path, result)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert result.to_csv("~/t.csv") == tmp_path / "t.csv"  # (a leading ~ expanded)
    pytest.importorskip("matplotlib")
    from gpu_als.plots import plot_tuning

    assert plot_tuning(result, tmp_path / "t.png").stat().st_size > 10_000


def assert_csv_is_the_table(path, result):
    """The trials CSV: every trial, in the table's order (finished first, best first)."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = result.table()
    assert len(rows) == len(table) == len(result.trials)
    assert [row["finished"] == "True" for row in rows] == list(table["finished"])
    np.testing.assert_array_equal([float(row["score"]) for row in rows], table["score"])
    np.testing.assert_array_equal([int(row["factors"]) for row in rows], table["factors"])


def test_any_iterable_of_values_is_read_once_numpy_scalars_as_pythons(R):
    """(A generator's values were once counted, which used it up: no configuration.)
    Names as NumPy strings (a DataFrame's column of them) are Python's too."""
    result = tune(R, {"factors": (k for k in [2, 3]), np.str_("alpha"): np.array([1.0, 5.0])},
                  base_params={"backend": "cpu", "iterations": 2}, show_progress=False)
    assert [(t["factors"], t["alpha"]) for t in result.trials] == [
        (2, 1.0), (2, 5.0), (3, 1.0), (3, 5.0)]
    assert all(type(t["factors"]) is int and type(t["alpha"]) is float
               for t in result.trials)
    assert all(type(name) is str for t in result.trials for name in t)
    assert all(type(name) is str for name in [*result.best_params, *result.searched])


def test_the_default_iterations_are_20(R):
    result = tune(R, {"factors": [2]}, base_params={"backend": "cpu"}, halving=False,
                  show_progress=False)
    assert result.trials[0]["iterations_trained"] == 20
    assert len(result.model.loss_history_) == 20


def test_each_trial_score_is_logged_at_info_then_the_refit(R, caplog):
    """A trial's score at each rung it reaches, named by its configuration; its
    iterations are not logged one by one (they would not say whose), the refit's are."""
    with caplog.at_level("INFO", logger="gpu_als"):
        result = run(R, halving=True, min_iterations=2, reduction_factor=3)
    lines = [r.getMessage() for r in caplog.records]
    trials = [line for line in lines if line.startswith("trial ")]
    assert len(trials) == 8 + 3  # every trial at rung 2, the best three at rung 6
    assert re.fullmatch(r"trial 1 of 8: recall@10 of factors=2, regularization=0\.01, "
                        r"alpha=1\.0: [0-9.e-]+ after 2 iterations", trials[0])
    for i, trial in enumerate(result.trials):  # the finished ones' last line: their score
        if trial["finished"]:
            params = ", ".join(f"{name}={trial[name]!r}" for name in GRID)
            assert (f"trial {i + 1} of 8: recall@10 of {params}: {trial['score']:.5g} "
                    f"after 6 iterations") in trials[8:]
    refit = lines.index(f"refitting the best, {result.best_params}, on all the data")
    assert refit > lines.index(trials[-1])
    assert [line.split(":")[0] for line in lines[refit + 1:]
            if line.startswith("iteration")] == [f"iteration {i}" for i in range(1, 7)]
    assert not any(line.startswith("iteration") for line in lines[:refit])


def test_iterations_searched_by_the_grid_stay_apart_from_those_trained(R, tmp_path):
    """A trial stopped at a rung records what it would have trained (the grid's
    ``iterations``) and what it did; the CSV and the chart get both."""
    result = tune(R, {"iterations": [2, 9], "factors": [2, 8, 16]},
                  base_params={"backend": "cpu"}, min_iterations=1, reduction_factor=3,
                  random_state=3, show_progress=False)
    assert sorted(t["iterations"] for t in result.trials) == [2, 2, 2, 9, 9, 9]
    for trial in result.trials:
        assert trial["finished"] == (trial["iterations_trained"] == trial["iterations"])
    stopped = [t for t in result.trials if not t["finished"]]
    assert stopped and all(t["iterations_trained"] < 9 for t in stopped)
    header = result.to_csv(tmp_path / "trials.csv").read_text().splitlines()[0]
    assert header == "iterations,factors,score,iterations_trained,finished,seconds"


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "auc"}, "metric='auc': expected one of"),
    ({"param_grid": {"factor": [2]}}, r"unknown parameter 'factor' \(did you mean 'factors'\?\)"),
    ({"param_grid": {"factors": []}}, r"param_grid\['factors'\] must be a non-empty list"),
    # one value where a list was meant: the list said (it said "a non-empty list" alone)
    ({"param_grid": {"factors": 4}}, r"param_grid\['factors'\] must be a non-empty list of "
                                     r"values \(or a distribution to draw them from, such as "
                                     r"scipy.stats'\): factors=4 alone is \[4\]$"),
    ({"param_grid": {"solver": "cg"}}, r"param_grid\['solver'\] must be a non-empty list.*: "
                                       r"solver='cg' alone is \['cg'\]$"),
    ({"param_grid": {"factors": {2: 1}}}, r"param_grid\['factors'\] must be a non-empty list "
                                          r"of values \(.*scipy.stats'\)$"),  # (its keys,
    # 2, were tried before); a name ALS lacks is named before its values are looked at
    ({"param_grid": {"factor": 64}}, r"^unknown parameter 'factor' \(did you mean "
                                     r"'factors'\?\)"),
    ({"param_grid": {"factors": [2, 4, 2]}}, r"param_grid\['factors'\] holds 2 more than once"),
    ({"param_grid": {"alpha": [1, 2, 1.0]}}, r"param_grid\['alpha'\] holds 1.0 more than once"),
    ({"param_grid": {"factors": list(range(10**5)) + [7]}},  # (compared pairwise before)
     r"param_grid\['factors'\] holds 7 more than once"),
    ({"param_grid": {"factors": [[4], [2], [2]]}}, r"param_grid\['factors'\] holds \[2\] "
                                                   r"more than once"),  # unhashable values
    # values that == does not answer with one truth (NumPy's "truth value of an array"
    # before), each configuration shown cut short (a sparse matrix's repr has lines)
    ({"param_grid": {"factors": sp.csr_matrix(np.ones((3, 3)))}},
     r"^param_grid's configuration \{'factors': <csr_matrix>\}: factors must be an integer"),
    ({"param_grid": {"factors": [np.array([4, 8]), np.array([4, 2])]}},
     r"^param_grid's configuration \{'factors': array\(\[4, 8\]\)\}: factors must be an "
     r"integer"),
    ({"param_grid": [("factors", [2, 4])]}, r"param_grid must be a dict of hyperparameter "
                                            r"name -> list of values, or a list of such "
                                            r"dicts, got a list of tuple$"),
    ({"param_grid": []}, r"param_grid must be a dict .* got an empty list$"),
    ({"param_grid": "factors"}, r"param_grid must be a dict .* got str$"),
    ({"param_grid": [{"factors": [2]}, {"factors": []}]},
     r"param_grid\[1\]\['factors'\] must be a non-empty list"),
    ({"param_grid": [{"factors": [2]}, {"factor": [2]}]}, r"unknown parameter 'factor'"),
    ({"param_grid": {np.str_("factor"): [2]}},  # (not np.str_\('factor'\))
     r"^unknown parameter 'factor' \(did you mean 'factors'\?\)"),
    ({"param_grid": {5: [2]}}, r"^param_grid's keys must be hyperparameter names "
                               r"\(strings\), got 5$"),
    ({"param_grid": [{"factors": [2]}, {None: [2]}]}, r"^param_grid\[1\]'s keys must be "
                                                      r"hyperparameter names .*got None$"),
    ({"param_grid": [{"factors": [2]}, {"alpha": [1.0, np.nan]}]},  # which configuration
     r"^param_grid's configuration \{'alpha': nan\}: alpha=nan: must be finite$"),
    ({"param_grid": {"regularization": [0, 0.1]}, "base_params": {"feedback": "explicit"}},
     r"^param_grid's configuration \{'regularization': 0\}: regularization=0 with "
     r"feedback='explicit'"),
    ({"base_params": {"iterations": -1}}, r"^base_params: iterations=-1: must be >= 0$"),
    ({"base_params": {3: 2}}, r"^base_params' keys must be hyperparameter names \(strings\), "
                              r"got 3$"),
    ({"reduction_factor": 1}, "reduction_factor=1: must be >= 2"),
    ({"K": 0}, "K=0: must be >= 1"),
    ({"min_iterations": 0}, "min_iterations=0: must be >= 1"),
    ({"validation_fraction": 1.5}, "validation_fraction=1.5: must be < 1"),
    ({"validation_fraction": 1}, "validation_fraction=1.0: must be < 1"),
    ({"base_params": {"iteration": 2}},
     r"unknown parameter 'iteration' \(did you mean 'iterations'\?\)"),
    ({"validation_fraction": 0}, "validation_fraction=0.0: must be > 0"),
    ({"base_params": 0}, r"base_params must be a dict of hyperparameter name -> value, "
                         r"got int"),  # (0 and [] were taken for no base_params)
    ({"base_params": [("iterations", 2)]}, r"base_params must be a dict .*got list"),
])
def test_bad_arguments(R, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tune(R, **{"param_grid": GRID, "show_progress": False, **kwargs})


@pytest.mark.parametrize("metric, shown", [
    ("auc", "'auc'"), (None, "None"), (np.array(["recall", "ndcg"]), r"array\(.*\)"),
    (sp.csr_matrix((0, 0)), "<csr_matrix>")])
def test_search_space_checks_the_metric_as_tune_does(metric, shown):
    """(An array was NumPy's "truth value is ambiguous", a sparse matrix SciPy's "ufunc
    'isnan' not supported": search_space compared them with 'rmse' unchecked.)"""
    with pytest.raises(ValueError, match=f"^metric={shown}: expected one of 'recall', "):
        search_space(GRID, metric=metric)


@pytest.mark.parametrize("given, says", [
    ([[1.0, 0.0], [0.0, 1.0]], r"list; for dense rows use scipy.sparse.csr_matrix\(rows\); "
                               r"for \(user, item, value\) triples, a DataFrame of them "
                               r"\(fit\(df\) takes one\)"),
    (None, "None"),
    ("ratings.csv", r"str; for a file of \(user, item, value\) rows, read it into a "
                    r"DataFrame \(fit\(df\) takes one\), or train from the command line: "
                    r"gpu-als train FILE")])
def test_what_is_not_a_matrix_or_a_frame_is_refused_by_name(given, says):
    with pytest.raises(TypeError, match=f"^user_items must be a scipy.sparse matrix or "
                                        f"array, got {says}$"):
        tune(given, param_grid=GRID, show_progress=False)


def test_data_without_a_user_to_validate_on_is_refused_before_training():
    one_each = sp.csr_matrix((np.ones(5, np.float32), (np.arange(5), np.arange(5))))
    with pytest.raises(ValueError, match="no user has 2 or more interactions, so there "
                                         "is nothing to hold out for validation"):
        tune(one_each, param_grid=GRID, show_progress=False)


def test_a_search_that_cannot_fit_in_memory_is_refused_before_copying(monkeypatch):
    from gpu_als import data
    from gpu_als import tune as tune_module

    monkeypatch.setattr(data, "available_memory", lambda: 10 * 2**20)  # 10 MiB
    monkeypatch.setattr(tune_module, "held_out_split",  # the split copies: not reached
                        lambda *args, **kwargs: pytest.fail("split before the check"))
    wide = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 1, 1], [0, 1, 0, 99_999])),
                         shape=(2, 100_000))
    with pytest.raises(MemoryError, match="a fit of 2 users x 100,000 items at factors=64"):
        tune(wide, param_grid={"factors": [8, 64]}, show_progress=False)


def test_progress_counts_each_trial_once_and_seconds_are_its_training_time(R, monkeypatch,
                                                                           tmp_path):
    """The progress bar ends at the number of trials, halving or not; a trial's seconds
    are its training time (positive, and together within the search's wall time); one
    sampled configuration is a search too."""
    import time

    from gpu_als import tune as tune_module

    progress = ProgressBars()
    bars = progress.bars
    monkeypatch.setattr(tune_module, "tqdm", progress)
    for halving in (True, False):
        start = time.perf_counter()
        result = run(R, halving=halving, min_iterations=2)
        wall = time.perf_counter() - start
        assert bars[-1].total == bars[-1].counted == 8 and bars[-1].disable is True
        seconds = [t["seconds"] for t in result.trials]
        assert all(s > 0 for s in seconds) and sum(seconds) < wall
    one = run(R, n_samples=1)
    assert len(one.trials) == 1 and one.trials[0]["finished"]
    lines = one.to_csv(tmp_path / "one.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == "factors,regularization,alpha,score,"\
        "iterations_trained,finished,seconds"


def test_a_trials_seconds_add_up_over_its_rungs(R, monkeypatch):
    """Each rung's training time is added to the trial's (here a clock that ticks 0.5 s
    per reading: 0.5 s per rung)."""
    from gpu_als import tune as tune_module

    ticks = iter(np.arange(0, 1000, 0.5))
    monkeypatch.setattr(tune_module, "time", type("Clock", (), {
        "perf_counter": staticmethod(lambda: float(next(ticks)))}))
    result = run(R, halving=True, min_iterations=2)  # rungs of 2 and 6 iterations
    assert {(t["iterations_trained"], t["seconds"]) for t in result.trials} == {(2, 0.5), (6, 1.0)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_confidence_setting_goes_to_the_backend_once(R, dtype):
    """The search hands the training data to the backend once per confidence setting
    (both orientations), not once per trial, in the trials' dtype: on a GPU it stays on
    the device; the refit on all the data puts its own."""
    backend = Counting()
    result = tune(R, {"factors": [2, 4], "alpha": [1.0, 20.0]}, halving=False,
                  base_params={"iterations": 2, "backend": backend, "dtype": dtype},
                  show_progress=False)
    assert len(result.trials) == 4
    assert backend.puts == 2 * 2 + 2
    assert result.model.item_factors_.dtype == dtype


def test_the_refit_trains_on_the_searchs_backend(R, monkeypatch):
    """A backend named by a string is made once: the trials and the refit use that one
    instance (on a GPU, the same device), and the model keeps the name."""
    from gpu_als import tune as tune_module
    made = []

    def get_backend(name):
        assert name == "cpu"
        made.append(Counting())
        return made[-1]

    monkeypatch.setattr(tune_module, "get_backend", get_backend)
    result = tune(R, {"factors": [2, 4]}, halving=False,
                  base_params={"iterations": 2, "backend": "cpu"}, show_progress=False)
    assert len(made) == 1 and made[0].puts == 2 + 2
    assert result.model.get_params()["backend"] == "cpu"


def test_the_best_is_a_finished_trial(R, monkeypatch):
    """A trial stopped at an early rung may have scored better there than any finished
    trial did at the end: the winner is still the best finished one."""
    from gpu_als import tune as tune_module

    def validation_score(model, fit_part, validation, metric, K):  # fewer iterations: better
        return 1.0 / len(model.loss_history_) + 1e-3 * model.factors

    monkeypatch.setattr(tune_module, "validation_score", validation_score)
    result = tune(R, {"factors": [2, 3, 4, 5]}, min_iterations=2, reduction_factor=2,
                  base_params={"iterations": 4, "backend": "cpu"}, show_progress=False)
    finished = [t for t in result.trials if t["finished"]]
    assert [t["factors"] for t in finished] == [4, 5]
    assert result.best_params == {"factors": 5}
    assert result.best_score == pytest.approx(1 / 4 + 5e-3)
    assert max(t["score"] for t in result.trials) > result.best_score


@pytest.mark.filterwarnings("ignore:factors=64 with 60 items")
def test_a_trial_that_fails_is_recorded_and_the_search_goes_on(R, tmp_path):
    """A configuration whose fit fails (regularization 0 with more factors than the 60
    items: Y^T Y is singular) is warned of and kept in the trials with its error and a NaN
    score, as scikit-learn's error_score=nan, and the search goes on without it."""
    with pytest.warns(UserWarning, match=r"^trial 3 of 4 \(factors=64, regularization=0\.0\) "
                                         r"failed before training: ValueError: regularization=0 "
                                         r"with factors=64 and 60 items: Y\^T Y, and with it "
                                         r"every user's and item's system, is singular; .*; the "
                                         r"search goes on without it$"):
        result = tune(R, {"factors": [2, 64], "regularization": [0.0, 0.1]}, min_iterations=3,
                      reduction_factor=2, base_params={"iterations": 6, "backend": "cpu"},
                      show_progress=False)
    failed = result.trials[2]
    assert failed["error"].startswith("ValueError: regularization=0 with factors=64")
    assert np.isnan(failed["score"]) and not failed["finished"]
    assert [t["error"] for t in result.trials] == ["", "", failed["error"], ""]
    assert result.best_params in ({"factors": 2, "regularization": 0.0},
                                  {"factors": 2, "regularization": 0.1},
                                  {"factors": 64, "regularization": 0.1})
    assert np.isfinite(result.best_score)
    rows = result.to_csv(tmp_path / "trials.csv").read_text().splitlines()
    assert rows[0].endswith(",error") and rows[-1].startswith("64,0.0,nan,")
    assert result.table()["error"].iloc[-1] == failed["error"]
    finished = sum(t["finished"] for t in result.trials)
    assert repr(result) == (  # a summary: the trials are counted, not listed
        f"TuneResult(best_params={result.best_params!r}, best_score="
        f"{result.best_score:.4g} (recall@10), 4 trials ({finished} finished, 1 failed), "
        f"model={result.model!r}, backend='cpu')")


def test_a_results_repr_counts_its_trials(R):
    """(It listed every trial: thousands of characters for a search of 45.)"""
    result = run(R, refit=False)
    finished = sum(t["finished"] for t in result.trials)
    assert 0 < finished < 8
    assert repr(result) == (f"TuneResult(best_params={result.best_params!r}, best_score="
                            f"{result.best_score:.4g} (recall@10), 8 trials ({finished} "
                            f"finished), model=None, backend='cpu')")


def test_failed_trials_keep_their_seconds_and_all_failing_says_why(R, monkeypatch):
    """A trial failing in its scoring or mid-training keeps the seconds it trained. Every
    trial failing is an error naming the first, also where it fails at a later rung (here
    each fit, once past 2 iterations); an exception outside TRIAL_ERRORS (a bug, not a
    configuration's failure) stops the search as it is."""
    from gpu_als import tune as tune_module

    # a trial that fails in its scoring counts its training's seconds once (here a clock
    # that ticks 1 s per reading: its start and its end)
    clock = itertools.count()
    monkeypatch.setattr(tune_module, "time", type("Clock", (), {
        "perf_counter": staticmethod(lambda: float(next(clock)))}))

    def validation_score(model, fit_part, validation, metric, K):
        if model.factors == 3:
            raise ValueError("no score")
        return 0.5

    monkeypatch.setattr(tune_module, "validation_score", validation_score)
    with pytest.warns(UserWarning, match="failed training to 4 iterations: ValueError: no"):
        result = tune(R, {"factors": [2, 3]}, halving=False, show_progress=False,
                      base_params={"iterations": 4, "backend": "cpu"})
    assert [t["seconds"] for t in result.trials] == [1.0, 1.0]
    monkeypatch.undo()

    class Training(tune_module.Training):
        def run(self, iterations, **kwargs):
            if self.iterations_done + iterations > 2:
                raise FloatingPointError(f"diverged at factors={self.p['factors']}")
            return super().run(iterations, **kwargs)

    class FailingAt3(tune_module.Training):
        def run(self, iterations, **kwargs):
            if self.p["factors"] == 3:
                super().run(1)  # some training before it fails
                raise FloatingPointError("diverged")
            return super().run(iterations, **kwargs)

    monkeypatch.setattr(tune_module, "Training", FailingAt3)
    with pytest.warns(UserWarning, match=r"trial 2 of 2 \(factors=3\) failed training to 4 "
                                         r"iterations: FloatingPointError: diverged"):
        result = tune(R, {"factors": [2, 3]}, halving=False, show_progress=False,
                      base_params={"iterations": 4, "backend": "cpu"})
    failed = result.trials[1]
    assert failed["error"] == "FloatingPointError: diverged" and failed["iterations_trained"] == 0
    assert 0 < failed["seconds"] < 60  # the training it did before failing
    assert result.best_params == {"factors": 2}

    monkeypatch.setattr(tune_module, "Training", Training)
    with pytest.warns(UserWarning, match="failed training to 4 iterations: "
                                         "FloatingPointError: diverged"), \
            pytest.raises(ValueError, match=r"^every trial of the search failed; the first, "
                                            r"trial 1 \(factors=2\), with FloatingPointError: "
                                            r"diverged at factors=2$"):
        tune(R, {"factors": [2, 3]}, min_iterations=2, reduction_factor=2,
             base_params={"iterations": 4, "backend": "cpu"}, show_progress=False)

    class Broken(tune_module.Training):
        def run(self, iterations, **kwargs):
            raise RuntimeError("a bug")

    monkeypatch.setattr(tune_module, "Training", Broken)
    with pytest.raises(RuntimeError, match="a bug"):
        tune(R, {"factors": [2, 3]}, base_params={"iterations": 4, "backend": "cpu"},
             show_progress=False)


def test_a_trial_that_stops_frees_its_factors(R, monkeypatch):
    """At each rung only the surviving trials hold their training state."""
    import weakref

    from gpu_als import tune as tune_module

    made, live_at_scoring = [], []

    class Training(tune_module.Training):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    def validation_score(model, fit_part, validation, metric, K):
        live_at_scoring.append(sum(ref() is not None for ref in made))
        return float(model.factors)

    monkeypatch.setattr(tune_module, "Training", Training)
    monkeypatch.setattr(tune_module, "validation_score", validation_score)
    result = run(R, min_iterations=2, reduction_factor=3)  # 8 trials, then 3
    assert sum(t["finished"] for t in result.trials) == 3
    assert live_at_scoring == [8] * 8 + [3] * 3


@pytest.mark.filterwarnings("ignore:epsilon=.* has no effect with confidence='linear'")
def test_each_confidence_setting_trains_with_its_own_confidences(R):
    """Trials that differ only in how values become confidences (each setting's weights
    computed once and reused) score as fresh fits with their settings. (The linear trials
    are told that their epsilon acts on nothing, as it does not.)"""
    grid = {"confidence": ["linear", "log"], "epsilon": [0.1, 10.0]}
    base = {"iterations": 3, "backend": "cpu", "factors": 4, "alpha": 5.0}
    result = tune(R, grid, metric="ndcg", halving=False, base_params=base, random_state=3,
                  show_progress=False)
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    scores = {}
    for trial in result.trials:
        settings = {name: trial[name] for name in grid}
        model = ALS(**base, **settings, random_state=3, show_progress=False).fit(fit_part)
        assert trial["score"] == pytest.approx(
            ranking_metrics(model, fit_part, validation, K=10)["ndcg"]), settings
        scores[tuple(settings.values())] = trial["score"]
    assert scores[("log", 0.1)] != scores[("log", 10.0)]  # epsilon mattered here


def test_explicit_ratings_are_searched_by_the_rmse_lowest_first(R, tmp_path):
    """metric="rmse": each trial's score is the RMSE of a fresh fit's predicted ratings,
    the lowest wins, halving keeps the lowest, and the outputs list the lowest first."""
    from gpu_als.evaluation import rmse

    grid = {"factors": [2, 6], "regularization": [0.02, 0.2, 2.0]}
    base = {"iterations": 4, "backend": "cpu", "feedback": "explicit"}
    result = tune(R, grid, metric="rmse", base_params=base, halving=False, random_state=3,
                  show_progress=False)
    fit_part, validation = train_test_split(R, test_fraction=0.2, random_state=3)
    for trial in result.trials:
        model = ALS(random_state=3, show_progress=False,
                    **{**base, **{name: trial[name] for name in grid}}).fit(fit_part)
        assert trial["score"] == pytest.approx(rmse(model, validation))
    scores = sorted(t["score"] for t in result.trials)
    assert result.best_score == scores[0] < scores[-1]
    assert (result.metric, result.lower_is_better) == ("rmse", True)
    assert list(result.table()["score"]) == scores
    halved = tune(R, grid, metric="rmse", base_params=base, min_iterations=2,
                  reduction_factor=3, random_state=3, show_progress=False)
    at_rung_2 = tune(R, grid, metric="rmse", base_params={**base, "iterations": 2},
                     halving=False, random_state=3, show_progress=False).trials
    lowest_two = sorted(at_rung_2, key=lambda t: t["score"])[:2]  # 6 trials -> keep 2
    assert {tuple(t[n] for n in grid) for t in lowest_two} == \
        {tuple(t[n] for n in grid) for t in halved.trials if t["finished"]}
    assert_csv_is_the_table(halved.to_csv(tmp_path / "trials.csv"), halved)


@pytest.mark.filterwarnings("ignore:factors=.* fit nothing")  # (the grid's 64, 128 on 30 items)
def test_rmse_needs_explicit_feedback_and_explicit_has_no_alpha_to_search(R):
    with pytest.raises(ValueError, match="metric='rmse' scores predicted ratings: every "
                                         "trial needs feedback='explicit'"):
        tune(R, {"factors": [2], "feedback": ["explicit", "implicit"]}, metric="rmse",
             base_params={"backend": "cpu"}, show_progress=False)
    result = tune(R[:40, :30], base_params={"iterations": 1, "backend": "cpu",
                                            "feedback": "explicit"},
                  metric="rmse", halving=False, show_progress=False)
    assert set(result.best_params) == {"factors", "regularization"}
    assert len(result.trials) == 12


def test_the_search_space_is_checked_without_data():
    """search_space: tune's base, grid and configurations (the default grid for None, by
    feedback); what tune would refuse, refused before any data."""
    from gpu_als.tune import DEFAULT_EXPLICIT_GRID

    base, grid, configurations = search_space({"factors": [8, 16], "alpha": [1.0]},
                                              {"iterations": 5})
    assert base["iterations"] == 5 and grid == {"factors": [8, 16], "alpha": [1.0]}
    assert configurations == [{"factors": 8, "alpha": 1.0}, {"factors": 16, "alpha": 1.0}]
    _, grid, configurations = search_space(None, {"feedback": "explicit"}, metric="rmse")
    assert grid == DEFAULT_EXPLICIT_GRID and len(configurations) == 12
    with pytest.raises(ValueError, match="factors=0: must be >= 1"):
        search_space({"factors": [8, 0]})
    with pytest.raises(TypeError, match="regularization must be a real number"):
        search_space({"regularization": ["a"]})
    with pytest.raises(ValueError, match="every trial needs feedback='explicit'"):
        search_space({"factors": [8]}, metric="rmse")


@pytest.mark.parametrize("grid, base, idle", [
    ({"alpha": [1, 5]}, {"feedback": "explicit"},
     "alpha has no effect with feedback='explicit' (ratings, no confidences)"),
    ({"confidence": ["linear", "log"], "factors": [4, 8]}, {"feedback": "explicit"},
     "confidence has no effect with feedback='explicit'"),
    ({"epsilon": [0.5, 2.0]}, {}, "epsilon has no effect with confidence='linear'"),
    ({"cg_steps": [2, 3], "alpha": [1, 5]}, {}, "cg_steps has no effect with "
                                                "solver='cholesky'"),
    ([{"epsilon": [0.5], "feedback": ["explicit"]}, {"factors": [2]}, {"epsilon": [2.0]}],
     {}, "epsilon has no effect with feedback='explicit' (ratings, no confidences) or "
         "confidence='linear'"),  # (a list of grids: idle in each that sets it)
])
def test_a_grid_over_a_setting_that_acts_on_nothing_is_refused(grid, base, idle):
    """Every value would train the same model (each trial warned of it before, and the
    search paid for every one); idle in some trials only, it is searched where it acts,
    and each model is trained once."""
    name = next(name for name in ([grid] if isinstance(grid, dict) else grid)[-1]
                if idle.startswith(name))
    with pytest.raises(ValueError, match=re.escape(
            f"param_grid[{name!r}]: {idle}") + r".*, so its 2 values would train the same "
                                               r"model; leave it out of the grid"):
        search_space(grid, base)
    assert search_space({"epsilon": [0.5, 2.0], "confidence": ["linear", "log"]})[2] == [
        {"epsilon": 0.5, "confidence": "linear"}, {"epsilon": 0.5, "confidence": "log"},
        {"epsilon": 2.0, "confidence": "log"}]  # (epsilon=2 of linear: the first again)
    assert search_space({"cg_steps": [2, 3], "solver": ["cholesky", "cg"]})[2] == [
        {"cg_steps": 2, "solver": "cholesky"}, {"cg_steps": 2, "solver": "cg"},
        {"cg_steps": 3, "solver": "cg"}]
    assert len(search_space({"alpha": [5], "factors": [4, 8]}, {"feedback": "explicit"})[2]) \
        == 2  # one value fixes it: not searched (fit warns of it)


def test_a_search_on_the_gpu_backend_scores_its_trials_as_the_cpu_does(gpu_backend):
    """The same search on the GPU backend (one backend for every trial, the data handed
    to it once per dtype) scores each trial as the CPU backend does: in float64 to
    rounding, in float32 within a few hits (a GPU's rounding may swap near-equal scores
    in a top-5), and refits the best there."""
    grid = {"factors": [2, 4], "alpha": [1.0, 5.0], "dtype": ["float32", "float64"]}
    R = random_interactions(120, 60, 0.12, seed=6)
    results = [tune(R, grid, base_params={"backend": backend, "iterations": 4}, K=5,
                    halving=False, show_progress=False) for backend in ("cpu", gpu_backend)]
    cpu, gpu = ({(t["factors"], t["alpha"], t["dtype"]): t for t in result.trials}
                for result in results)  # (no pandas: a GPU machine may lack it)
    assert sorted(cpu) == sorted(gpu) and len(gpu) == 8
    for key, trial in gpu.items():
        assert trial["iterations_trained"] == 4, key
        if key[2] == "float64":
            assert trial["score"] == pytest.approx(cpu[key]["score"], rel=1e-9), key
        else:
            assert trial["score"] == pytest.approx(cpu[key]["score"], abs=0.02), key
    best, model = results[1].best_params, results[1].model
    assert model.backend is gpu_backend and model.backend_ == "gpu"
    assert (model.factors, model.user_factors_.dtype) == (best["factors"], best["dtype"])
