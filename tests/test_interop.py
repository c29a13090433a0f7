"""gpu_als.from_implicit: implicit 0.7's ALS models (live or saved) as gpu-als models that
answer every query as they do and solve implicit's problem when they solve again."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from gpu_als import ALS, NotFittedError, from_implicit, to_implicit
from gpu_als.datasets import make_power_law
from gpu_als.exceptions import ImplicitModelFileError

from .conftest import skip_or_fail

R = make_power_law(300, 200, 4000, random_state=1, device="cpu").tocsr()  # 0/1 values


@pytest.fixture(scope="module")
def implicit_cpu():
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        skip_or_fail(f"implicit is not installed: {exc}")

    def fitted(cg_steps=3, **params):
        with threadpool_limits(1, "blas"):  # as implicit asks
            model = AlternatingLeastSquares(**{"factors": 16, "iterations": 4,
                                               "random_state": 0, **params})
            model.cg_steps = cg_steps  # an attribute in implicit 0.7, not an argument
            model.fit(R, show_progress=False)
        return model

    return fitted


@pytest.mark.parametrize("use_cg", [False, True])
def test_queries_answer_as_implicit_does(implicit_cpu, use_cg):
    theirs = implicit_cpu(alpha=5.0, use_cg=use_cg, regularization=0.05)
    ours = from_implicit(theirs, backend="cpu")
    assert ours.get_params()["alpha"] == 4.0 and ours.regularization == 0.05
    assert ours.solver == ("cg" if use_cg else "cholesky") and ours.factors == 16
    np.testing.assert_array_equal(ours.user_factors_, theirs.user_factors)
    users = np.arange(60)
    ids, scores = ours.recommend(users, R[users], N=10)
    their_ids, their_scores = theirs.recommend(users, R[users], N=10)
    np.testing.assert_array_equal(ids, their_ids)
    np.testing.assert_allclose(scores, their_scores, rtol=1e-5)
    ids, _ = ours.similar_items(np.arange(20), N=5)
    np.testing.assert_array_equal(ids, theirs.similar_items(np.arange(20), N=5)[0])


def test_fold_in_solves_implicits_problem(implicit_cpu):
    """The alpha translation (implicit's a is gpu-als's a - 1 on 0/1 data): a user folded
    in from their items gets implicit's exact solution."""
    theirs = implicit_cpu(alpha=5.0, use_cg=False)
    ours = from_implicit(theirs, backend="cpu")
    for user in (3, 77, 150):
        ids, scores = ours.recommend(user, R[user], N=10, recalculate_user=True)
        their_ids, their_scores = theirs.recommend(user, R[user], N=10,
                                                   recalculate_user=True)
        np.testing.assert_array_equal(ids, their_ids)
        np.testing.assert_allclose(scores, their_scores, rtol=1e-4)
    untranslated = from_implicit(theirs, backend="cpu", alpha=5.0)  # implicit's number
    _, scores = untranslated.recommend(3, R[3], N=10, recalculate_user=True)
    assert not np.allclose(scores, theirs.recommend(3, R[3], N=10, recalculate_user=True)[1],
                           rtol=1e-4)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.filterwarnings("ignore:cg_steps=2 has no effect")  # (carried over all the same)
def test_to_implicit_answers_and_solves_as_the_model(implicit_cpu, solver):
    """to_implicit: implicit's model of our factors recommends our items with our scores,
    folds a user in to our exact solution on 0/1 data (alpha + 1), goes on fitting from
    our factors as ours does with warm_start, and converts back unchanged."""
    implicit_cpu()  # skips where implicit is not installed
    ours = ALS(factors=12, alpha=4.0, regularization=0.05, iterations=3, solver=solver,
               cg_steps=2, backend="cpu", random_state=7, show_progress=False).fit(R)
    theirs = to_implicit(ours)
    assert (theirs.alpha, theirs.use_cg, theirs.cg_steps) == (5.0, solver == "cg", 2)
    assert theirs.random_state == 7
    assert (theirs.factors, theirs.regularization, theirs.iterations) == (12, 0.05, 3)
    users = np.arange(50)
    ids, scores = ours.recommend(users, R[users], N=10)
    their_ids, their_scores = theirs.recommend(users, R[users], N=10)
    np.testing.assert_array_equal(their_ids, ids)
    np.testing.assert_allclose(their_scores, scores, rtol=1e-5)
    if solver == "cholesky":  # implicit's fold-in is always exact
        for user in (3, 77):
            with threadpool_limits(1, "blas"):
                their_x = theirs.recalculate_user(user, R[user])
            np.testing.assert_allclose(their_x, ours.recalculate_user(user, R[user]),
                                       atol=1e-4 * np.abs(their_x).max())
    back = from_implicit(theirs, backend="cpu")
    np.testing.assert_array_equal(back.item_factors_, ours.item_factors_)
    assert {name: back.get_params()[name] for name in ("alpha", "solver", "cg_steps")} == \
        {"alpha": 4.0, "solver": solver, "cg_steps": 2}
    theirs.user_factors[0, 0] = 9.0  # its own copies
    assert ours.user_factors_[0, 0] != 9.0
    theirs.user_factors[0, 0] = ours.user_factors_[0, 0]
    with threadpool_limits(1, "blas"):
        theirs.fit(R, show_progress=False)  # 3 more iterations, from our factors
    ours.set_params(warm_start=True).fit(R)
    tolerance = 1e-4 if solver == "cholesky" else 2e-3  # as test_docs' comparison
    np.testing.assert_allclose(theirs.item_factors, ours.item_factors_,
                               atol=tolerance * np.abs(ours.item_factors_).max())


def test_to_implicit_gives_preconditioned_cg_implicits_cg(implicit_cpu):
    """implicit has no preconditioned CG: a solver="pcg" model becomes use_cg=True with
    its steps (the nearest in cost per iteration), and comes back as solver="cg"."""
    implicit_cpu()
    ours = ALS(factors=6, iterations=2, solver="pcg", cg_steps=2, backend="cpu",
               random_state=7, show_progress=False).fit(R)
    theirs = to_implicit(ours)
    assert (theirs.use_cg, theirs.cg_steps) == (True, 2)
    assert from_implicit(theirs, backend="cpu").solver == "cg"


def test_to_implicit_refuses_what_implicit_cannot_express(implicit_cpu):
    implicit_cpu()
    with pytest.raises(NotFittedError):
        to_implicit(ALS())
    with pytest.raises(TypeError, match="model must be a gpu_als.ALS, got str"):
        to_implicit("model.npz")  # a file: from_implicit reads files, to_implicit models
    for params, message in (({"feedback": "explicit"}, "implicit feedback only"),
                            ({"confidence": "log"}, "takes confidences alpha \\* r only"),
                            ({"solver": "nnls"}, "has no nonnegative solver")):
        model = ALS(factors=4, iterations=1, backend="cpu", show_progress=False,
                    **params).fit(R)
        with pytest.raises(ValueError, match=message):
            to_implicit(model)


def test_a_saved_implicit_model_loads_through_from_implicit(implicit_cpu, tmp_path):
    theirs = implicit_cpu(alpha=2.0, use_cg=True, cg_steps=5)
    theirs.save(str(tmp_path / "theirs"))  # implicit adds .npz, and so do both loads
    ours = from_implicit(tmp_path / "theirs", backend="cpu")
    np.testing.assert_array_equal(ours.item_factors_, theirs.item_factors)
    assert (ours.alpha, ours.solver, ours.cg_steps, ours.random_state) == (1.0, "cg", 5, 0)
    with pytest.raises(ValueError, match="saved by the implicit library: "
                                         "gpu_als.from_implicit"):
        ALS.load(tmp_path / "theirs.npz")
    ours.save(tmp_path / "ours.npz")  # and then it is an ordinary gpu-als model
    np.testing.assert_array_equal(ALS.load(tmp_path / "ours.npz", backend="cpu")
                                  .item_factors_, theirs.item_factors)
    with pytest.raises(ValueError, match="is a gpu-als model file: read it with ALS.load"):
        from_implicit(tmp_path / "ours.npz")
    import io  # implicit's save() and load() take file objects: so does from_implicit

    buffer = io.BytesIO()
    theirs.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(from_implicit(buffer, backend="cpu").item_factors_,
                                  theirs.item_factors)
    with pytest.raises(ImplicitModelFileError, match=r"the BytesIO looks like a model saved "
                                                     r"by the implicit library: "
                                                     r"gpu_als.from_implicit\(file\) reads"):
        ALS.load(io.BytesIO(buffer.getvalue()))
    fsspec = pytest.importorskip("fsspec")  # and by URL, as ALS.load
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/{tmp_path.name}/theirs.npz", buffer.getvalue())
    try:
        np.testing.assert_array_equal(from_implicit(f"memory://{tmp_path.name}/theirs",
                                                    backend="cpu").item_factors_,
                                      theirs.item_factors)
    finally:
        memory.rm(f"/{tmp_path.name}", recursive=True)


def test_a_live_model_carries_its_settings_and_a_gpu_model_is_read_through_to_cpu(
        implicit_cpu):
    """Every setting of a live implicit model carries over (a NumPy integer seed too); a
    model of implicit's GPU ALS (here a stand-in of its class: no GPU) is read through its
    to_cpu() and is CG, as its fit always is."""
    theirs = implicit_cpu(use_cg=False, iterations=6, calculate_training_loss=True,
                          random_state=np.int64(11), regularization=0.2, alpha=3.0)
    ours = from_implicit(theirs, backend="cpu")
    assert {name: ours.get_params()[name] for name in (
        "solver", "iterations", "calculate_training_loss", "random_state", "regularization",
        "alpha")} == {"solver": "cholesky", "iterations": 6, "calculate_training_loss": True,
                      "random_state": 11, "regularization": 0.2, "alpha": 2.0}
    back = to_implicit(ours)
    assert (back.calculate_training_loss, back.iterations, back.use_cg) == (True, 6, False)
    assert back.random_state == 11
    ours.random_state = np.random.default_rng(0)  # a generator: implicit gets no seed
    assert to_implicit(ours).random_state is None

    class AlternatingLeastSquares:  # implicit.gpu.als's class, by name and module
        def to_cpu(self):
            return theirs  # its CPU twin, which says use_cg=False

    AlternatingLeastSquares.__module__ = "implicit.gpu.als"
    converted = from_implicit(AlternatingLeastSquares(), backend="cpu")
    assert converted.solver == "cg"
    np.testing.assert_array_equal(converted.item_factors_, theirs.item_factors)


def test_a_file_of_factors_alone_takes_implicits_defaults(tmp_path):
    """What implicit 0.7's ALS defaults to where its file leaves a setting out: CG with 3
    steps, 15 iterations, regularization 0.01, alpha 1 (gpu-als's 0)."""
    X, Y = np.random.default_rng(0).random((5, 4)), np.random.default_rng(1).random((7, 4))
    np.savez(tmp_path / "factors.npz", user_factors=X.astype(np.float32),
             item_factors=Y.astype(np.float32))
    ours = from_implicit(tmp_path / "factors.npz", backend="cpu")
    assert (ours.solver, ours.cg_steps, ours.iterations, ours.regularization, ours.alpha,
            ours.calculate_training_loss) == ("cg", 3, 15, 0.01, 0.0, False)
    np.testing.assert_array_equal(ours.item_factors_, Y.astype(np.float32))
    # keyword arguments replace what is translated
    ours = from_implicit(tmp_path / "factors.npz", backend="cpu", solver="cholesky",
                         regularization=0.5, iterations=2, calculate_training_loss=True)
    assert (ours.solver, ours.regularization, ours.iterations,
            ours.calculate_training_loss) == ("cholesky", 0.5, 2, True)


def test_a_model_seeded_with_a_generator_converts_without_a_seed(implicit_cpu, tmp_path):
    """implicit pickles a generator given as random_state into its file: the file reads
    as the live model does, without a seed (refused as pickled before); ALS.load still
    says it is implicit's."""
    theirs = implicit_cpu(random_state=np.random.default_rng(3))
    theirs.save(str(tmp_path / "theirs.npz"))
    for source in (theirs, tmp_path / "theirs.npz"):
        ours = from_implicit(source, backend="cpu")
        assert ours.random_state is None
        np.testing.assert_array_equal(ours.item_factors_, theirs.item_factors)
    with pytest.raises(ValueError, match="looks like a model saved by the implicit library"):
        ALS.load(tmp_path / "theirs.npz")
    arrays = dict(np.load(tmp_path / "theirs.npz", allow_pickle=True))
    arrays["alpha"] = np.array([object()], dtype=object)  # other pickles stay refused
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="refusing to load pickled objects \\(in 'alpha'"):
        from_implicit(tmp_path / "pickled.npz")


def test_float64_factors_stay_float64(implicit_cpu, tmp_path):
    theirs = implicit_cpu(dtype=np.float64)
    assert theirs.item_factors.dtype == np.float64
    theirs.save(str(tmp_path / "theirs.npz"))
    for source in (theirs, tmp_path / "theirs.npz"):
        ours = from_implicit(source, backend="cpu")
        assert ours.dtype is np.float64 and ours.item_factors_.dtype == np.float64
        np.testing.assert_array_equal(ours.item_factors_, theirs.item_factors)
    np.savez(tmp_path / "mixed.npz", user_factors=theirs.user_factors,
             item_factors=theirs.item_factors.astype(np.float32))
    assert from_implicit(tmp_path / "mixed.npz", backend="cpu").dtype is np.float32


def test_what_cannot_be_translated_is_refused(implicit_cpu, tmp_path):
    from implicit.cpu.als import AlternatingLeastSquares

    with pytest.raises(ValueError, match="not fitted"):
        from_implicit(AlternatingLeastSquares(factors=4))
    half = AlternatingLeastSquares(factors=4)
    half.user_factors = np.ones((3, 4), np.float32)  # no item factors yet
    with pytest.raises(ValueError, match="not fitted"):
        from_implicit(half)

    class Lookalike:  # the name of implicit's class, from another library
        pass

    Lookalike.__name__ = "AlternatingLeastSquares"
    with pytest.raises(TypeError, match=r"or a path, got tests\.test_interop\."
                                        r"AlternatingLeastSquares"):
        from_implicit(Lookalike())
    theirs = implicit_cpu(alpha=0.5)
    with pytest.raises(ValueError, match="alpha=0.5 .* has no gpu-als equivalent"):
        from_implicit(theirs)
    assert from_implicit(theirs, backend="cpu", alpha=0.0).alpha == 0.0
    with pytest.raises(TypeError, match="implicit's AlternatingLeastSquares or a path"):
        from_implicit(42)
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    bpr = BayesianPersonalizedRanking(factors=7, iterations=1, random_state=0)
    bpr.fit(R, show_progress=False)
    with pytest.raises(TypeError, match="BayesianPersonalizedRanking"):
        from_implicit(bpr)
    bpr.save(str(tmp_path / "bpr.npz"))
    with pytest.raises(ValueError, match="BPR or LMF model, not ALS"):
        from_implicit(tmp_path / "bpr.npz")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="missing: item_factors, user_factors"):
        from_implicit(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        from_implicit(tmp_path / "none.npz")
    np.savez(tmp_path / "counts.npz", user_factors=np.ones((3, 2), np.int64),
             item_factors=np.ones((4, 2)))
    with pytest.raises(ValueError, match="user_factors has dtype int64, expected floats"):
        from_implicit(tmp_path / "counts.npz")
    for name, value, says in (  # Python's messages, a crash or a silent truncation before
            ("regularization", np.ones(3), r"regularization is an array of shape \(3,\) "
                                           r"\(float64\), expected a number"),
            ("alpha", np.array("x"), r"alpha is 'x' \(<U1\), expected a number"),
            ("regularization", np.array(True), r"regularization is True \(bool\), expected a "
                                               r"number"),
            ("iterations", np.array(2.5), r"iterations is 2.5 \(float64\), expected an "
                                          r"integer"),
            ("cg_steps", np.array(np.inf), r"cg_steps is inf \(float64\)"),
            ("use_cg", np.array("no"), r"use_cg is 'no' \(<U2\), expected True or False"),
            ("random_state", np.array(1.5), r"random_state is 1.5 \(float64\), expected an "
                                            r"integer")):
        np.savez(tmp_path / "odd.npz", user_factors=np.ones((3, 2)),
                 item_factors=np.ones((4, 2)), **{name: value})
        with pytest.raises(ValueError, match=f"odd.npz holds invalid hyperparameters: {says}"):
            from_implicit(tmp_path / "odd.npz")
    np.savez(tmp_path / "odd.npz", user_factors=np.array(1.0), item_factors=np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"odd.npz: user_factors has shape \(\), expected"):
        from_implicit(tmp_path / "odd.npz")  # AttributeError before
    theirs.user_factors[0, 0] = np.nan
    with pytest.raises(ValueError, match="AlternatingLeastSquares: user_factors holds NaN"):
        from_implicit(theirs, alpha=0.0)


@pytest.mark.gpu
def test_a_model_of_implicits_gpu_als_converts():
    """implicit's GPU ALS model (factors in its own GPU matrices, always CG): the same
    recommendations from the converted model on the GPU backend."""
    from gpu_als import benchmark

    problem = benchmark.unavailable(benchmark.IMPLEMENTATIONS["implicit-gpu-cg"])
    if problem:  # checked first: it loads the CUDA libraries before implicit.gpu
        pytest.skip(problem)
    from implicit.gpu.als import AlternatingLeastSquares

    theirs = AlternatingLeastSquares(factors=16, iterations=3, random_state=0)
    theirs.fit(R, show_progress=False)
    ours = from_implicit(theirs, backend="gpu")
    assert ours.solver == "cg" and ours.backend_ == "gpu"
    users = np.arange(60)
    ids, scores = ours.recommend(users, R[users], N=10)
    their_ids, their_scores = theirs.recommend(users, R[users], N=10)
    np.testing.assert_array_equal(ids, their_ids)
    np.testing.assert_allclose(scores, their_scores, rtol=1e-4)


def test_the_command_line_serves_an_implicit_model_file(implicit_cpu, tmp_path, capsys):
    from gpu_als.cli import main

    theirs = implicit_cpu(alpha=3.0)
    theirs.save(str(tmp_path / "theirs.npz"))
    assert main(["similar", str(tmp_path / "theirs.npz"), "--items", "4", "--N", "3",
                 "--backend", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "a model of the implicit library, converted" in captured.err
    rows = [line.split(",") for line in captured.out.splitlines()[1:]]
    ids, _ = theirs.similar_items(4, N=4)
    assert [int(row[1]) for row in rows] == [i for i in ids.tolist() if i != 4][:3]


def test_ranking_metrics_against_implicits_ranking_metrics_at_k(implicit_cpu):
    """The same recommendations scored by both: NDCG and MAP agree; implicit's "precision"
    is another quantity, the hits of all users over their sum of min(K, test items)."""
    from implicit.evaluation import ranking_metrics_at_k

    from gpu_als.evaluation import ranking_metrics, train_test_split

    train, test = train_test_split(R, test_fraction=0.3, random_state=0)
    theirs = implicit_cpu()
    with threadpool_limits(1, "blas"):
        expected = ranking_metrics_at_k(theirs, train, test, K=10, show_progress=False)
    ours_model = from_implicit(theirs, backend="cpu")
    ours = ranking_metrics(ours_model, train, test, K=10, show_progress=False)
    assert ours["ndcg"] == pytest.approx(expected["ndcg"], rel=1e-9)
    assert ours["map"] == pytest.approx(expected["map"], rel=1e-9)
    users = np.flatnonzero(np.diff(test.indptr))
    ids, _ = ours_model.recommend(users, train[users], N=10)
    hits = [len(np.intersect1d(ids[j], test[u].indices)) for j, u in enumerate(users)]
    assert expected["precision"] == pytest.approx(
        sum(hits) / np.minimum(10, np.diff(test.indptr)[users]).sum(), rel=1e-9)
    assert ours["precision"] == pytest.approx(np.mean(hits) / 10, rel=1e-9)
    assert ours["precision"] < expected["precision"]
