"""The nonnegative solver (``solver="nnls"``): block principal pivoting against SciPy's
Lawson-Hanson ``nnls``, on every backend, and in the estimator."""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.backends import nnls
from gpu_als.backends.cpu import solve_batch

from .conftest import fit_beside_cpu, random_interactions
from .reference import nnls_rows_loop
from .test_solver import assert_close, edge_case_matrix, run_solve


def lawson_hanson(A, b):
    """Each row's solution by SciPy's ``nnls`` on the least-squares form."""
    out = np.zeros(b.shape)
    for j in range(len(b)):
        L = np.linalg.cholesky(A[j])
        out[j] = scipy.optimize.nnls(L.T, scipy.linalg.solve_triangular(L, b[j], lower=True))[0]
    return out


def systems(n, k, seed, *, conditioning=1.0):
    """``n`` random symmetric positive definite ``k x k`` systems (Gram matrices of
    ``3k`` rows, their columns scaled to spread the eigenvalues by ``conditioning``) and
    right-hand sides with both signs."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 3 * k, k)) * np.geomspace(1, conditioning, k)
    A = Z.transpose(0, 2, 1) @ Z / (3 * k) + 0.01 * np.eye(k)
    return A, rng.standard_normal((n, k))


def solve_nnls(A, b, **options):
    return nnls.nnls_rows(A, b, xp=np, solve=solve_batch, to_numpy=np.asarray,
                          asarray=np.asarray, **options)


def assert_kkt(A, b, x, tolerance=1e-8):
    """The optimality conditions: x >= 0, the gradient y = A x - b >= 0, x_j y_j = 0."""
    y = (A @ x[:, :, None])[:, :, 0] - b
    scale = np.abs(b).max(axis=1, keepdims=True)
    assert (x >= 0).all()
    assert (y >= -tolerance * scale).all()
    assert (np.abs(x * y) <= tolerance * scale * np.abs(x).max(axis=1, keepdims=True)).all()


@pytest.mark.parametrize("k", [1, 2, 8, 33, 100])
@pytest.mark.parametrize("conditioning", [1.0, 1e3])
def test_nnls_rows_match_lawson_hanson(k, conditioning):
    A, b = systems(60, k, seed=k, conditioning=conditioning)
    b[0] = -np.abs(b[0])  # the solution 0 (for k = 1, -b <= 0 means x = 0)
    b[1] = A[1] @ np.abs(np.random.default_rng(0).standard_normal(k))  # all free
    x = solve_nnls(A, b)
    want = lawson_hanson(A, b)
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert_kkt(A, b, x)
    assert not x[0].any()
    assert (x[1] > 0).all()
    assert ((x == 0).any(axis=1)).mean() > 0.5, "most rows need the constraint"


@pytest.mark.parametrize("start", ["none", "zeros", "solution", "random", "nan"])
def test_nnls_rows_reach_the_same_solution_from_any_start(start):
    """The start only picks the first free sets."""
    A, b = systems(40, 12, seed=3)
    want = lawson_hanson(A, b)
    rng = np.random.default_rng(4)
    guesses = {"none": None, "zeros": np.zeros(b.shape), "solution": want,
               "random": rng.standard_normal(b.shape), "nan": np.full(b.shape, np.nan)}
    x = solve_nnls(A, b, start=guesses[start])
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-10 * np.abs(want).max())


def test_nnls_rows_from_the_solution_take_one_round(monkeypatch):
    """Started from its own solution's free set, a row is done after one solve: what a
    fit's later iterations, whose factors change little, mostly see."""
    A, b = systems(30, 10, seed=5)
    rounds = []
    original = nnls._round
    monkeypatch.setattr(nnls, "_round", lambda *a: rounds.append(len(a[1])) or original(*a))
    solve_nnls(A, b, start=lawson_hanson(A, b))
    assert rounds == [30]


@pytest.mark.parametrize("start", ["none", "solution"])
def test_a_round_on_device_arrays_reads_two_things_on_the_host(start, monkeypatch):
    """On a GPU each read of a device array on the host waits for the device: a round
    reads its groups' bounds and sizes (one copy) and the rows left, however many
    groups of free-set sizes it solves (k = 40: up to 8, 16, 32, 40 free variables; the
    arrays of tests/cupy_shaped.py count the reads). The same solutions as on NumPy."""
    from . import cupy_shaped

    xp = cupy_shaped.cupy_shaped_numpy(device_arrays=True)
    A, b = systems(80, 40, seed=8)
    want = lawson_hanson(A, b)
    rounds = []
    original = nnls._round
    monkeypatch.setattr(nnls, "_round", lambda *a: rounds.append(len(a[1])) or original(*a))

    def solve(M, c):  # (on the host here: its two reads are not the round's)
        solved = xp.asarray(solve_batch(M.get(), c.get()))
        cupy_shaped.host_reads["get"] -= 2
        return solved

    cupy_shaped.host_reads.clear()
    x = nnls.nnls_rows(xp.asarray(A), xp.asarray(b), xp=xp, solve=solve, to_numpy=xp.asnumpy,
                       asarray=xp.asarray, start=None if start == "none" else xp.asarray(want))
    reads = sum(cupy_shaped.host_reads.values())
    np.testing.assert_allclose(x.get(), want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert len(rounds) >= (1 if start == "solution" else 3)
    assert reads <= 2 * len(rounds) + 1, f"{reads} reads in {len(rounds)} rounds"


@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_rows_left_after_the_rounds_are_solved_by_scipy(rounds, monkeypatch):
    """A row that block principal pivoting has not finished after ``rounds`` (rounding
    can make its exchanges cycle) goes to SciPy's Lawson-Hanson: the same solutions."""
    A, b = systems(50, 16, seed=6)
    handed = []
    original = nnls._scipy_nnls
    monkeypatch.setattr(nnls, "_scipy_nnls", lambda A, b: handed.append(len(b)) or
                        original(A, b))
    x = solve_nnls(A, b, rounds=rounds)
    want = lawson_hanson(A, b)
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert handed and handed[0] == (50 if rounds == 0 else handed[0]) and handed[0] > 0


def test_the_backup_rule_ends_what_exchanging_every_variable_would_not(monkeypatch):
    """With the backup rule off (every infeasible variable exchanged every round), a row
    of these nearly singular systems (Gram matrices of k + 1 rows, columns scaled up to
    30-fold) cycles until the rounds run out; with it, none does."""
    k = 6
    rng = np.random.default_rng(23)  # (found by a search: 1 row in 500 cycles)
    Z = rng.standard_normal((500, k + 1, k)) * np.geomspace(1, 30, k)
    A = Z.transpose(0, 2, 1) @ Z + 1e-3 * np.eye(k)
    b = rng.standard_normal((500, k))
    handed = []
    monkeypatch.setattr(nnls, "_scipy_nnls", lambda A, b: handed.append(len(b)) or
                        lawson_hanson(A, b))
    x = solve_nnls(A, b)
    assert handed == [], "the backup rule must finish every row"
    assert_kkt(A, b, x)
    monkeypatch.setattr(nnls, "BACKUP_TRIES", 10 ** 6)
    assert_kkt(A, b, solve_nnls(A, b))
    assert handed == [1], "a row cycles without the rule (else this test proves nothing)"


def test_a_row_with_nan_gives_nan_and_the_others_their_solutions():
    A, b = systems(5, 6, seed=8)
    A[2, 1, 1] = np.nan
    x = solve_nnls(A, b)
    assert np.isnan(x[2]).all()
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(x[keep], lawson_hanson(A[keep], b[keep]), atol=1e-10)


# ---- the backends' half-steps -------------------------------------------------------


def test_a_scaled_penalty_row_without_a_positive_entry_is_never_solved_on_the_gpu(
        monkeypatch):
    """With the penalty scaled by each row's positive entries, a row of dislikes alone
    has no penalty, a right-hand side of 0 and the solution 0; where a factor is 0 in
    every fixed row its system is singular, which CuPy's batched solve answers with any
    numbers (the emulation: NaN). The GPU backend gives such a row ``I x = 0`` instead:
    every solve it makes is finite, and the half-step equals the CPU's."""
    from gpu_als.backends import gpu

    from .conftest import emulated_backend

    R = sp.csr_matrix(np.array([[2.0, 0, 1, 0], [-3.0, -1, 0, 0], [0, 0, 0, -2], [0, 1, 1, 1]]))
    F = np.random.default_rng(10).random((4, 6))
    F[:, 4:] = 0  # factors at 0 (as a nonnegative fit's often are): F^T F exactly singular
    solved = []
    original = gpu.GPUBackend._solve_batched

    def recorded(self, M, c):
        z = original(self, M, c)
        solved.append(bool(np.isfinite(z.get()).all()))
        return z

    monkeypatch.setattr(gpu.GPUBackend, "_solve_batched", recorded)
    options = dict(regularization=0.1, feedback="implicit", dtype=np.float64, solver="nnls",
                   scale_regularization=True, alpha=2.0)
    got = run_solve(emulated_backend(), R, F, start=np.zeros((4, 6)), **options)
    assert solved and all(solved), f"finite solves: {solved}"
    assert not got[[1, 2]].any()
    np.testing.assert_allclose(got, run_solve("cpu", R, F, start=np.zeros((4, 6)), **options),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("k", [1, 7, 32])
def test_nnls_half_step_matches_per_row_lawson_hanson(backend, feedback, k, dtype):
    """Rows of every length class (empty, one entry, longer than k and than the emulated
    GPU's split length), negative values: every backend's ``solver="nnls"`` against one
    SciPy ``nnls`` per row."""
    R = edge_case_matrix(k, negative=feedback == "implicit")
    rng = np.random.default_rng(9)
    F = rng.random((R.shape[1], k)) * 0.5 if feedback == "implicit" else \
        rng.standard_normal((R.shape[1], k))
    conf = {"alpha": 3.0} if feedback == "implicit" else {}
    got = run_solve(backend, R, F, 0.1, feedback, dtype, solver="nnls", **conf)
    want = nnls_rows_loop(R, F, 0.1, feedback=feedback, **conf)
    assert_close(got, want, dtype)
    assert (got >= 0).all()
    assert not got[0].any() and not got[9].any(), "empty rows must get zero factors"
    if k > 1:
        assert (want == 0).any() and (want > 0).any(), "the constraint must bind somewhere"


@pytest.mark.parametrize("n_rows", [1, 4, 8])
def test_nnls_fold_in_of_a_few_rows_matches_lawson_hanson(backend, n_rows):
    """The few rows of a fold-in, which the CPU's exact solver sends down paths of their
    own, take the NNLS solver all the same."""
    k, n_fixed = 8, 500
    rng = np.random.default_rng(10)
    F = rng.standard_normal((n_fixed, k))
    R = sp.lil_matrix((n_rows, n_fixed))
    for u, length in enumerate([3, 12, 0, 1, 2, k, 5, 9][:n_rows]):
        R[u, rng.choice(n_fixed, length, replace=False)] = rng.integers(1, 6, length)
    R = R.tocsr()
    got = run_solve(backend, R, F, 0.1, "implicit", np.float64, solver="nnls", alpha=2.0)
    assert_close(got, nnls_rows_loop(R, F, 0.1, alpha=2.0), np.float64)


@pytest.mark.parametrize("k", [4, 64])
def test_cpu_formed_blocks_bound_their_systems_and_cover_every_row_once(k):
    """Each CPU block forms a k x k system per row: a block of short rows, bounded by
    rows x length x k elements in the exact solver, is cut to bound rows x k x k."""
    from gpu_als.backends.cpu import formed_blocks

    lengths = np.random.default_rng(18).zipf(1.5, 5000) % 300
    blocks = list(formed_blocks(lengths, k, block_elements=2 ** 14))
    rows = np.concatenate([ids for ids, _ in blocks])
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(lengths))
    assert all(len(ids) * k * k <= 2 ** 14 or len(ids) == 1 for ids, _ in blocks)
    assert all((lengths[ids] <= padded).all() for ids, padded in blocks)


# ---- the estimator ------------------------------------------------------------------


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_a_nonnegative_fit_is_the_same_on_every_backend(backend, feedback):
    """``ALS(solver="nnls")``: nonnegative factors, a loss that never goes up, and the
    CPU's factors on every backend."""
    R = random_interactions(25, 18, 0.3, seed=13, negative=feedback == "implicit")
    settings = {"factors": 5, "iterations": 4, "solver": "nnls", "feedback": feedback,
                "show_progress": False, "random_state": 0, "dtype": np.float64}
    model, X, Y, reference = fit_beside_cpu(backend, R, settings)
    assert (X >= 0).all() and (Y >= 0).all()
    assert (X == 0).any() and (Y == 0).any(), "the constraint must bind"
    history = model.loss_history_
    assert all(b <= a * (1 + 1e-12) for a, b in zip(history, history[1:])), history
    np.testing.assert_allclose(X, reference.user_factors_, atol=1e-8)
    np.testing.assert_allclose(Y, reference.item_factors_, atol=1e-8)


def test_a_nonnegative_model_folds_in_and_adds_users_under_the_constraint():
    """``recalculate_user``, ``transform``, ``partial_fit_users``, ``recalculate_item``
    and ``partial_fit_items`` of an NNLS model solve the nonnegative problem (the
    unconstrained solution has negative factors)."""
    R = random_interactions(40, 30, 0.2, seed=14)
    model = ALS(factors=12, iterations=5, solver="nnls", backend="cpu", show_progress=False,
                random_state=0).fit(R)
    Y = model.item_factors_
    new = random_interactions(3, 30, 0.3, seed=15)
    want = nnls_rows_loop(new, Y, model.regularization or 0.01, alpha=model.alpha)
    assert (want == 0).any()
    np.testing.assert_allclose(model.recalculate_user(np.arange(3), new), want, atol=1e-5)
    np.testing.assert_allclose(model.transform(new), want, atol=1e-5)
    model.partial_fit_users([40, 41, 42], new)
    np.testing.assert_allclose(model.user_factors_[40:], want, atol=1e-5)
    ids, _ = model.recommend(0, new[0], N=3, recalculate_user=True)
    scores = want[0] @ Y.T
    scores[new[0].indices] = -np.inf
    assert list(ids) == list(np.argsort(-scores, kind="stable")[:3])
    new_items = random_interactions(2, 43, 0.3, seed=16)  # items x the 43 users now
    want_items = nnls_rows_loop(new_items, model.user_factors_, 0.01, alpha=model.alpha)
    assert (want_items == 0).any()
    np.testing.assert_allclose(model.recalculate_item([0, 1], new_items), want_items,
                               atol=1e-5)
    model.partial_fit_items([30, 31], new_items)
    np.testing.assert_allclose(model.item_factors_[30:], want_items, atol=1e-5)


def test_nonnegative_settings_refused_or_warned_with_what_to_do():
    R = random_interactions(10, 8, 0.4, seed=16)
    with pytest.raises(ValueError, match=r"regularization=0 with solver='nnls'.*> 0"):
        ALS(solver="nnls", regularization=0, backend="cpu").fit(R)
    with pytest.raises(TypeError, match=r"'nonnegative' is Spark MLlib's parameter; in "
                                        r"gpu-als: solver='nnls'"):
        ALS(nonnegative=True)
    with pytest.warns(UserWarning, match=r"cg_steps=5 has no effect with solver='nnls'"):
        ALS(solver="nnls", cg_steps=5, factors=2, iterations=1, backend="cpu",
            show_progress=False).fit(R)


@pytest.mark.parametrize(("spark", "ours"), [
    ("rank", "factors="), ("maxIter", "iterations="), ("regParam", "regularization="),
    ("implicitPrefs", "feedback='implicit'"), ("nonnegative", "solver='nnls'"),
    ("seed", "random_state=")])
def test_spark_parameter_names_are_refused_with_ours(spark, ours):
    with pytest.raises(TypeError, match=rf"^'{spark}' is Spark MLlib's parameter; in "
                                        rf"gpu-als: {ours}"):
        ALS(**{spark: 1})


def test_a_nonnegative_fit_of_confidences_beyond_float64_says_what_to_do():
    """Confidences of 4e31 (values of 1e30) against regularization 0.01: the exact solver
    whitens them away and fits; NNLS's systems, not whitened, lose the regularization to
    float64 rounding and are singular. The error says so, and not only "use float64"."""
    R = random_interactions(30, 20, 0.3, seed=0)
    R.data *= 1e30
    with pytest.raises(FloatingPointError, match=r"confidences up to 4e\+31.*NNLS solver's "
                                                 r"systems, not whitened.*scale the values "
                                                 r"down \(confidence='log' for counts\)"):
        ALS(factors=4, iterations=3, solver="nnls", backend="cpu", show_progress=False,
            dtype=np.float64, random_state=0).fit(R)


def test_a_nonnegative_model_saves_and_loads_as_one(tmp_path):
    R = random_interactions(12, 9, 0.4, seed=17)
    model = ALS(solver="nnls", factors=3, iterations=2, backend="cpu",
                show_progress=False, random_state=1).fit(R)
    model.save(tmp_path / "m.npz")
    loaded = ALS.load(tmp_path / "m.npz", backend="cpu")
    assert loaded.solver == "nnls"
    new = R[:2]
    np.testing.assert_array_equal(loaded.recalculate_user([0, 1], new),
                                  model.recalculate_user([0, 1], new))
