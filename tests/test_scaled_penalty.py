"""``scale_regularization``: implicit feedback with each row's penalty scaled by its
entries (Spark MLlib's implicit model), in the estimator. The half-steps of every backend
and solver are in test_solver (``test_implicit_with_a_scaled_penalty_*``)."""

import numpy as np
import pytest

from gpu_als import ALS

from .conftest import fit_beside_cpu, random_interactions
from .reference import loss_dense, solve_rows_loop


@pytest.mark.parametrize("solver", ["cholesky", "cg", "pcg", "nnls"])
def test_a_fit_with_a_scaled_penalty_is_the_same_on_every_backend(backend, solver):
    """The CPU's factors on every backend; a loss that never goes up (exact solvers, and
    PCG, each of whose half-steps lowers every row's objective) and is the dense
    definition's with the scaled penalty."""
    R = random_interactions(25, 18, 0.3, seed=21, negative=True)
    settings = {"factors": 5, "iterations": 4, "solver": solver, "alpha": 3.0,
                "regularization": 0.05, "scale_regularization": True,
                "show_progress": False, "random_state": 0, "dtype": np.float64}
    model, X, Y, reference = fit_beside_cpu(backend, R, settings)
    np.testing.assert_allclose(X, reference.user_factors_, atol=1e-8)
    np.testing.assert_allclose(Y, reference.item_factors_, atol=1e-8)
    history = model.loss_history_
    assert history[-1] == pytest.approx(loss_dense(R, X, Y, 0.05, alpha=3.0, scaled=True),
                                        rel=1e-9)
    if solver != "cg":
        assert all(b <= a * (1 + 1e-12) for a, b in zip(history, history[1:])), history
    plain = ALS(backend="cpu", **{**settings, "scale_regularization": False}).fit(R)
    assert np.abs(plain.user_factors_ - reference.user_factors_).max() > 1e-3


def test_fold_ins_and_explain_solve_the_scaled_problem():
    """Dislikes (negative values) among the new rows: the penalty counts only positive
    entries (Spark's count), and a row of dislikes alone has the factors 0."""
    R = random_interactions(30, 20, 0.3, seed=22)
    model = ALS(factors=4, iterations=3, alpha=2.0, regularization=0.1,
                scale_regularization=True, backend="cpu", show_progress=False,
                random_state=0).fit(R)
    new = random_interactions(3, 20, 0.4, seed=23).tolil()
    new[0, [0, 1, 2]] = [-1.0, -2.0, -1.0]
    new[2, :] = 0
    new[2, [4, 5]] = [-3.0, -1.0]
    new = new.tocsr()
    want = solve_rows_loop(new, model.item_factors_, 0.1, alpha=2.0, scaled=True)
    np.testing.assert_allclose(model.recalculate_user(np.arange(3), new), want, atol=1e-5)
    assert not want[2].any() and want[0].any()
    score, contributions, _ = model.explain(0, new[0], 7)
    assert score == pytest.approx(float(want[0] @ model.item_factors_[7]), rel=1e-4)


def test_scaled_penalty_settings_refused_with_what_to_do():
    R = random_interactions(10, 8, 0.4, seed=24)
    with pytest.raises(ValueError, match=r"scale_regularization=False with "
                                         r"feedback='explicit'.*leave it None"):
        ALS(feedback="explicit", scale_regularization=False, backend="cpu").fit(R)
    with pytest.raises(TypeError, match="scale_regularization must be True or False"):
        ALS(scale_regularization="yes", backend="cpu").fit(R)
    # explicit feedback is ALS-WR already: True there is the default
    explicit = ALS(feedback="explicit", factors=2, iterations=2, backend="cpu",
                   show_progress=False, random_state=0)
    np.testing.assert_array_equal(
        explicit.fit(R).user_factors_,
        ALS(**{**explicit.get_params(), "scale_regularization": True}).fit(R).user_factors_)


def test_a_model_with_a_scaled_penalty_saves_loads_and_is_not_implicits(tmp_path):
    R = random_interactions(12, 9, 0.4, seed=25)
    model = ALS(factors=3, iterations=2, scale_regularization=True, backend="cpu",
                show_progress=False, random_state=1).fit(R)
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
    assert loaded.scale_regularization is True
    np.testing.assert_array_equal(loaded.recalculate_user([0, 1], R[:2]),
                                  model.recalculate_user([0, 1], R[:2]))
    pytest.importorskip("implicit")
    from gpu_als import to_implicit

    with pytest.raises(ValueError, match="scale_regularization=True: implicit's ALS"):
        to_implicit(model)
