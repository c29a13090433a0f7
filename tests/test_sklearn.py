"""ALS among scikit-learn's tools: ``clone``, ``Pipeline`` (as a step that turns users'
interactions into features), ``GridSearchCV`` over its parameters, ``set_output`` and
``get_feature_names_out``, checked with scikit-learn itself (a dev dependency)."""

import sys

import numpy as np
import pytest

from gpu_als import ALS
from gpu_als.exceptions import NotFittedError

from .conftest import random_interactions

try:
    import sklearn
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_is_fitted
except ImportError:  # the GPU machine has none: set_output's tests run there without it
    sklearn = None

#: scikit-learn is a dev dependency: CI has it
needs_sklearn = pytest.mark.skipif(sklearn is None, reason="scikit-learn is not installed")


def als(**params):
    return ALS(**{"factors": 4, "iterations": 3, "backend": "cpu", "random_state": 0,
                  "show_progress": False, "dtype": np.float64, **params})


@pytest.fixture
def users():
    """Interactions of 80 users with 30 items, and a label per user: whether most of the
    user's interactions are with the first half of the items."""
    X = random_interactions(80, 30, 0.2, seed=3, dtype=np.float64)
    first = np.asarray(X[:, :15].sum(axis=1)).ravel()
    y = (first > np.asarray(X.sum(axis=1)).ravel() / 2).astype(int)
    assert 0 < y.sum() < len(y)
    return X, y


@needs_sklearn
def test_a_pipeline_feeds_the_users_factors_to_the_next_step(users):
    """Pipeline.fit passes y to ALS.fit_transform, which ignores it; predict folds the new
    users in (transform) and hands their factors to the classifier."""
    X, y = users
    pipeline = make_pipeline(als(), LogisticRegression()).fit(X, y)
    by_hand = als().fit(X)
    classifier = LogisticRegression().fit(by_hand.user_factors_, y)
    new_users = random_interactions(6, 30, 0.3, seed=9, dtype=np.float64)
    np.testing.assert_allclose(pipeline.decision_function(new_users),
                               classifier.decision_function(by_hand.transform(new_users)),
                               rtol=1e-10)
    assert list(pipeline[:-1].get_feature_names_out()) == ["als0", "als1", "als2", "als3"]
    assert pipeline.n_features_in_ == 30  # the items, as its first step has them


@needs_sklearn
def test_grid_search_fits_each_candidate_with_its_parameters(users):
    X, y = users
    search = GridSearchCV(make_pipeline(als(), LogisticRegression()),
                          {"als__factors": [2, 5], "als__regularization": [0.01, 1.0]},
                          cv=2).fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert len(search.cv_results_["params"]) == 4
    best = search.best_estimator_.named_steps["als"]
    assert best.user_factors_.shape == (80, search.best_params_["als__factors"])
    assert best.regularization == search.best_params_["als__regularization"]
    from sklearn.model_selection import StratifiedKFold

    accuracies = []  # the first candidate's score, by hand: ALS on the fold's users, the
    for train, test in StratifiedKFold(2).split(X, y):  # others folded in
        model = als(factors=2, regularization=0.01).fit(X[train])
        classifier = LogisticRegression().fit(model.user_factors_, y[train])
        accuracies.append(np.mean(classifier.predict(model.transform(X[test])) == y[test]))
    assert search.cv_results_["params"][0] == {"als__factors": 2, "als__regularization": 0.01}
    assert search.cv_results_["mean_test_score"][0] == pytest.approx(np.mean(accuracies))


@needs_sklearn
def test_clone_is_unfitted_with_the_same_parameters(users):
    X, _ = users
    model = als(factors=3, alpha=2.0).fit(X)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "user_factors_")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(copy)
    check_is_fitted(model)
    np.testing.assert_array_equal(copy.fit(X).user_factors_, model.user_factors_)
    copy = clone(als().set_output(transform="pandas"))  # GridSearchCV's candidates keep it
    assert isinstance(copy.fit_transform(X), pytest.importorskip("pandas").DataFrame)


@needs_sklearn
def test_a_last_step_given_targets_says_that_als_takes_none(users):
    X, y = users
    make_pipeline(als()).fit(X)  # Pipeline.fit passes y=None: fine
    with pytest.raises(TypeError, match="fit's second argument is show_progress .*got "
                                        "ndarray: ALS learns from user_items alone"):
        make_pipeline(als()).fit(X, y)


def test_feature_names(users):
    X, _ = users
    with pytest.raises(NotFittedError):
        als().get_feature_names_out()
    assert not hasattr(als(), "n_features_in_")  # NotFittedError is an AttributeError
    model = als(factors=3).fit(X)
    names = model.get_feature_names_out([f"item{i}" for i in range(30)])
    assert names.dtype == object and list(names) == ["als0", "als1", "als2"]
    with pytest.raises(ValueError, match="input_features has 2 names, but the model has 30 "
                                         "items"):
        model.get_feature_names_out(["a", "b"])


def host(a):
    return a.get() if hasattr(a, "get") else a


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_set_output_gives_frames_of_the_same_factors(users, library, backend):
    """On every backend: a GPU model's factors come to the host in the frame."""
    X, _ = users
    frames = pytest.importorskip(library)
    model = als(backend=backend).set_output(transform=library)
    fitted = model.fit_transform(X)
    assert isinstance(fitted, frames.DataFrame)
    assert list(fitted.columns) == ["als0", "als1", "als2", "als3"]
    np.testing.assert_array_equal(fitted.to_numpy(), host(model.user_factors_))
    rows = X[:5]
    folded = model.transform(rows)
    assert isinstance(folded, frames.DataFrame)
    np.testing.assert_array_equal(folded.to_numpy(),
                                  host(model.set_output(transform="default").transform(rows)))
    assert not isinstance(model.set_output().transform(rows), frames.DataFrame)  # unchanged
    assert isinstance(model.set_output(transform=library).to_cpu().transform(rows),
                      frames.DataFrame)  # to_cpu's copy keeps it


@needs_sklearn
def test_set_output_in_a_pipeline_and_by_set_config(users):
    pandas = pytest.importorskip("pandas")
    X, _ = users
    pipeline = make_pipeline(als(), StandardScaler()).set_output(transform="pandas")
    out = pipeline.fit_transform(X)
    assert isinstance(out, pandas.DataFrame) and list(out.columns) == [f"als{i}" for i in
                                                                       range(4)]
    np.testing.assert_allclose(out.to_numpy().mean(axis=0), 0, atol=1e-12)
    model = als().fit(X)
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(model.transform(X[:2]), pandas.DataFrame)
    assert isinstance(model.transform(X[:2]), np.ndarray)
    with pytest.raises(ValueError, match="transform"):
        model.set_output(transform="numpy")


@needs_sklearn
def test_tags_say_sparse_input_and_no_targets():
    import sklearn.utils

    if not hasattr(sklearn.utils, "get_tags"):
        pytest.skip("scikit-learn < 1.6 has no tags to read")
    tags = sklearn.utils.get_tags(als())
    assert tags.input_tags.sparse and not tags.input_tags.two_d_array  # dense: refused
    assert not tags.target_tags.required
    assert tags.transformer_tags is not None and tags.estimator_type is None


def test_transform_without_scikit_learn(users, monkeypatch):
    """Hidden (None in sys.modules, as where its import is blocked): arrays, no error."""
    X, _ = users
    monkeypatch.setitem(sys.modules, "sklearn", None)
    model = als().fit(X)
    assert isinstance(model.transform(X[:2]), np.ndarray)
    assert model.fit_transform(X) is model.user_factors_


@needs_sklearn
def test_a_feature_union_and_a_pickled_pipeline(users):
    """Beside another transformer in a FeatureUnion (its names prefixed, its DataFrame
    joined by set_output), and a fitted pipeline through pickle (as joblib.dump keeps
    one): the same predictions after."""
    import pickle

    from sklearn.decomposition import TruncatedSVD
    from sklearn.pipeline import FeatureUnion

    X, y = users
    union = FeatureUnion([("als", als(factors=3)), ("svd", TruncatedSVD(2, random_state=0))])
    assert union.fit_transform(X, y).shape == (80, 5)
    assert list(union.get_feature_names_out()) == [
        "als__als0", "als__als1", "als__als2", "svd__truncatedsvd0", "svd__truncatedsvd1"]
    frame = union.set_output(transform="pandas").fit_transform(X, y)
    np.testing.assert_array_equal(frame[["als__als0", "als__als1", "als__als2"]].to_numpy(),
                                  als(factors=3).fit(X).user_factors_)
    pipeline = make_pipeline(union, LogisticRegression()).fit(X, y)
    copy = pickle.loads(pickle.dumps(pipeline))
    np.testing.assert_array_equal(copy.decision_function(X[:10]),
                                  pipeline.decision_function(X[:10]))
