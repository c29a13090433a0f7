"""Conformance: every backend's solve_rows and loss against slow per-row references."""

import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.backends import CPUBackend, get_backend
from gpu_als.data import check_user_items, check_user_items_allow_empty, weighted_rows

from .conftest import emulated_backend, random_interactions
from .reference import (
    cg_rows_loop,
    loss_dense,
    nnls_rows_loop,
    pcg_rows_loop,
    solve_rows_loop,
)

TOL = {np.float32: 2e-4, np.float64: 1e-9}


def edge_case_matrix(k, seed=0, negative=True):
    """Rows of every length class: empty, 1, k-1, k, k+1, long; an empty column; negatives."""
    rng = np.random.default_rng(seed)
    n_items = 3 * k + 40
    lengths = [0, 1, 1, 2, max(1, k - 1), k, k + 1, 2 * k + 3, n_items - 1, 0, 5, 3]
    rows, cols, vals = [], [], []
    for u, L in enumerate(lengths):
        chosen = rng.choice(n_items - 1, size=L, replace=False)  # last column stays empty
        rows += [u] * L
        cols += list(chosen)
        vals += list(rng.integers(1, 6, L))
    R = sp.csr_matrix((np.array(vals, np.float64), (rows, cols)), shape=(len(lengths), n_items))
    if negative:
        R.data[rng.random(R.nnz) < 0.15] *= -1
    return R


def run_solve(backend_name, R, F, regularization, feedback, dtype, *, start=None,
              solver="cholesky", cg_steps=3, scale_regularization=False, **conf):
    """One half-step of ``backend_name`` on ``R``'s rows against ``F``, from the factors
    ``start`` (default NaN: an exact solve must not read them), as NumPy."""
    backend = get_backend(backend_name)
    csr = check_user_items(R, dtype)
    rows = backend.put(weighted_rows(csr, feedback=feedback, **conf))
    Fb = backend.asarray(F, dtype)
    if start is None:
        start = np.full((R.shape[0], F.shape[1]), np.nan)
    out = backend.asarray(np.array(start, dtype))  # a copy: the caller's start is kept
    FtF = backend.gram(Fb)
    backend.solve_rows(rows, Fb, FtF, regularization=regularization, feedback=feedback,
                       out=out, solver=solver, cg_steps=cg_steps,
                       scale_regularization=scale_regularization)
    return backend.to_numpy(out)


def assert_close(got, want, dtype):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 32, 100])
def test_implicit_matches_per_row_solve(backend, k, dtype):
    R = edge_case_matrix(k)
    F = np.random.default_rng(1).random((R.shape[1], k)) * 0.5
    got = run_solve(backend, R, F, 0.1, "implicit", dtype, alpha=3.0)
    want = solve_rows_loop(R, F, 0.1, feedback="implicit", alpha=3.0)
    assert_close(got, want, dtype)
    assert not got[0].any() and not got[9].any(), "empty rows must get zero factors"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 32, 100])
def test_explicit_matches_per_row_solve(backend, k, dtype):
    R = edge_case_matrix(k, negative=False)
    F = np.random.default_rng(2).standard_normal((R.shape[1], k))
    got = run_solve(backend, R, F, 0.05, "explicit", dtype)
    want = solve_rows_loop(R, F, 0.05, feedback="explicit")
    assert_close(got, want, dtype)
    assert not got[0].any() and not got[9].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feedback", ["implicit", "explicit", "scaled"])
@pytest.mark.parametrize("n_rows", [4, 8])
def test_a_few_rows_against_many_fixed_rows_match_per_row_solve(backend, feedback, dtype,
                                                                n_rows):
    """A fold-in: on the CPU backend up to EACH_ROW_LIMIT rows are solved one by one, and
    more rows with entries so few (FEW_ENTRIES) whiten only the fixed rows they use, by
    triangular solves (with a scaled penalty, "scaled": by rotating them); rows shorter
    and longer than k, empty ones, negative values."""
    from gpu_als.backends.cpu import EACH_ROW_LIMIT, FEW_ENTRIES

    scaled = feedback == "scaled"
    feedback = "implicit" if scaled else feedback

    k, n_fixed = 8, 2000
    rng = np.random.default_rng(3)
    F = rng.random((n_fixed, k)) * 0.5
    R = sp.lil_matrix((n_rows, n_fixed))
    for u, length in enumerate([3, 0, k + 4, 1, 2, k, 0, 5][:n_rows]):
        R[u, rng.choice(n_fixed, length, replace=False)] = \
            rng.integers(1, 6, length) * rng.choice([-1, 1], length)
    R = R.tocsr()
    assert 0 < R.nnz * FEW_ENTRIES < n_fixed
    assert (n_rows <= EACH_ROW_LIMIT) == (n_rows == 4)
    conf = {"alpha": 3.0} if feedback == "implicit" else {}
    want = solve_rows_loop(R, F, 0.1, feedback=feedback, scaled=scaled, **conf)
    assert_close(run_solve(backend, R, F, 0.1, feedback, dtype, scale_regularization=scaled,
                           **conf), want, dtype)
    if backend == "cpu":  # long rows gathered a block at a time: 3 entries here
        small_blocks = CPUBackend(block_elements=3 * k)
        assert_close(run_solve(small_blocks, R, F, 0.1, feedback, dtype,
                               scale_regularization=scaled, **conf), want, dtype)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "nnls"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 32])
def test_implicit_with_a_scaled_penalty_matches_per_row_solve(backend, solver, dtype, k):
    """``scale_regularization``: each implicit row's penalty times its entries (Spark's
    implicit model), on every backend and solver; rows of every length class (the GPU's
    short rows too, which the Woodbury path must leave: they share no part to whiten
    by; its long rows over segments)."""
    R = edge_case_matrix(k)
    rng = np.random.default_rng(13)
    F = rng.random((R.shape[1], k)) * 0.5
    X0 = rng.random((R.shape[0], k)) * 0.1
    conf = {"alpha": 3.0}
    got = run_solve(backend, R, F, 0.1, "implicit", dtype, solver=solver, start=X0,
                    scale_regularization=True, **conf)
    want = {"cholesky": lambda: solve_rows_loop(R, F, 0.1, scaled=True, **conf),
            "cg": lambda: cg_rows_loop(R, F, X0, 0.1, 3, scaled=True, **conf),
            "nnls": lambda: nnls_rows_loop(R, F, 0.1, scaled=True, **conf)}[solver]()
    assert_close(got, want, dtype)
    unscaled = solve_rows_loop(R, F, 0.1, **conf)
    assert np.abs(want - unscaled).max() > 100 * TOL[dtype] * np.abs(want).max()


@pytest.mark.parametrize(("solver", "scaled"),
                         [("nnls", False), ("nnls", True), ("cholesky", True)])
def test_unwhitened_systems_keep_a_small_regularization_in_float32(backend, solver, scaled):
    """The systems no shared part whitens (NNLS's; the exact solver's with a scaled
    penalty), from float32 factors of rank 2 and about 20 in size and confidences of 700:
    the float32 products of ``sum (c - 1) f f^T`` (norm 1e6) round by more than lambda =
    0.01 adds, and the first row's system formed from them was indefinite. It gave NaN
    (the fit a FloatingPointError, found by a fuzz of 150 tiny fits, where the exact
    solver fits) or a solution 100 % off. NNLS now forms its systems in float64; the
    scaled penalty's exact systems are formed in the eigenbasis of ``F^T F``."""
    rng = np.random.default_rng(2)
    F = np.abs(rng.standard_normal((4, 5))) * 20
    F[2:] = 0
    F = F.astype(np.float32)
    R = sp.csr_matrix([[700.0, 50, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 2, 0, 3]])
    got = run_solve(backend, R, F, 0.01, "implicit", np.float32, solver=solver, alpha=1.0,
                    scale_regularization=scaled)
    reference = nnls_rows_loop if solver == "nnls" else solve_rows_loop
    want = reference(R, F, 0.01, alpha=1.0, scaled=scaled)
    assert_close(got, want, np.float32)
    assert (want[0] > 0).all()
    # the first row alone (a fold-in: the CPU rotates its 2 entries, not the 4 fixed rows)
    assert_close(run_solve(backend, R[:1], F, 0.01, "implicit", np.float32, solver=solver,
                           alpha=1.0, scale_regularization=scaled), want[:1], np.float32)


def test_a_scaled_penalty_of_0_is_the_plain_one():
    """regularization=0: the scaled penalty is 0 too, and the CPU's half-step is the plain
    one, which names a singular F^T F (scaled by its eigenvalues, 0 here, it gave
    infinities)."""
    F = np.random.default_rng(0).random((3, 5))
    R = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 1, 0]]))
    with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization "
                                         r"\* I is singular \(factors=5 with 3 fixed-side"):
        run_solve("cpu", R, F, 0.0, "implicit", np.float64, scale_regularization=True)


def test_pcg_with_a_scaled_penalty_of_0_takes_the_plain_ones_steps(backend):
    """regularization=0: PCG's preconditioner is the plain one, ``F^T F``, for every row
    (each row's own scaled shared part is that too), so its steps are the plain penalty's,
    a row of dislikes alone (solution 0) included, rather than the whitened ones, whose
    scaling by ``e^-1/2`` would be as large as ``F^T F`` is near singular."""
    R, F, X0, conf = cg_problem("implicit", 6)
    R, X0 = with_a_row_of_dislikes(R, X0)
    plain = run_solve(backend, R, F, 0.0, "implicit", np.float64, start=X0, solver="pcg",
                      **conf)
    scaled = run_solve(backend, R, F, 0.0, "implicit", np.float64, start=X0, solver="pcg",
                       scale_regularization=True, **conf)
    np.testing.assert_array_equal(scaled, plain)
    np.testing.assert_allclose(plain, pcg_rows_loop(R, F, X0, 0.0, 3, **conf),
                               atol=1e-7 * np.abs(plain).max())
    assert np.abs(plain[-1]).min() > 0  # (the plain steps' warm start, not yet at 0)


def cg_problem(feedback, k):
    """Rows of every length class (:func:`edge_case_matrix`), fixed factors, a warm start
    and the confidence settings for the CG tests."""
    R = edge_case_matrix(k, negative=feedback == "implicit")
    rng = np.random.default_rng(5)
    F = rng.random((R.shape[1], k)) * 0.5 if feedback == "implicit" else \
        rng.standard_normal((R.shape[1], k))
    X0 = rng.standard_normal((R.shape[0], k)) * 0.1
    return R, F, X0, {"alpha": 3.0} if feedback == "implicit" else {}


def with_a_row_of_dislikes(R, X0):
    """``R`` and the warm start ``X0`` with one more row: two negative values (its
    solution with a scaled penalty is 0), started where row 1 is."""
    dislikes = sp.csr_matrix((np.array([-1.0, -2.0]), np.array([3, 5]), np.array([0, 2])),
                             shape=(1, R.shape[1]))
    return sp.vstack([R, dislikes]).tocsr(), np.vstack([X0, X0[1]])


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("steps", [1, 2, 8])
def test_cg_steps_match_per_row_conjugate_gradients(backend, feedback, steps):
    """solver="cg": ``steps`` conjugate-gradient steps on every row's system from the
    current factors, against textbook CG on each row's dense system; at k = 8, 8 steps
    reach the exact solution; an empty row's factors are 0."""
    k = 8
    R, F, X0, conf = cg_problem(feedback, k)
    got = run_solve(backend, R, F, 0.1, feedback, np.float64, start=X0, solver="cg",
                    cg_steps=steps, **conf)
    want = cg_rows_loop(R, F, X0, 0.1, steps, feedback=feedback, **conf)
    # (after a few steps CG's rounding grows apart with the order of its sums)
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-9 if steps < 3 else 1e-6)
                               * np.abs(want).max())
    if steps == k:  # (in float64, k steps of CG land near it, not on it: textbook CG 4.6e-7
        # of the largest value away here, the CPU backend's 1.4e-6, and 7.4e-7 with its
        # initial residual summed in the other order; on 60 random systems of positive
        # factors like these, the two orders' medians 7e-6 and 8e-6, largest 2.4e-4 and
        # 1.0e-4)
        np.testing.assert_allclose(got, solve_rows_loop(R, F, 0.1, feedback=feedback, **conf),
                                   rtol=0, atol=1e-5 * np.abs(got).max())
    assert not got[0].any() and not got[9].any()


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize(("steps", "dtype"), [(1, np.float32), (3, np.float32),
                                              (1, np.float64), (3, np.float64),
                                              (8, np.float64)])
def test_pcg_steps_match_per_row_preconditioned_conjugate_gradients(backend, feedback,
                                                                   steps, dtype):
    """solver="pcg": ``steps`` steps of CG preconditioned by ``F^T F + lambda I`` on every
    row's system from the current factors (the backends take them on whitened factors),
    against textbook preconditioned CG on each row's dense system, the preconditioner
    solved at every step; rows of every length class, the long ones past the emulated
    split_length (built systems on the GPU path). At k = 8, 8 steps reach the exact
    solution, and after 1 and 3 steps implicit rows are nearer to it than plain CG's;
    explicit feedback takes CG's steps (its shared part is a multiple of I). (In float32,
    near convergence, the steps of any CG drift apart with rounding: 8 steps in float64.)"""
    k = 8
    R, F, X0, conf = cg_problem(feedback, k)
    got = run_solve(backend, R, F, 0.1, feedback, dtype, start=X0, solver="pcg",
                    cg_steps=steps, **conf)
    want = pcg_rows_loop(R, F, X0, 0.1, steps, feedback=feedback, **conf)
    tolerance = {np.float32: 1e-4, np.float64: 1e-9 if steps < 3 else 1e-7}[dtype]
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * np.abs(want).max())
    exact = solve_rows_loop(R, F, 0.1, feedback=feedback, **conf)
    cg = cg_rows_loop(R, F, X0, 0.1, steps, feedback=feedback, **conf)
    if steps == k:
        np.testing.assert_allclose(got, exact, rtol=0,
                                   atol=10 * tolerance * np.abs(exact).max())
    elif feedback == "implicit":
        assert np.linalg.norm(want - exact) < 0.65 * np.linalg.norm(cg - exact)
    else:
        np.testing.assert_allclose(want, cg, rtol=0, atol=1e-12 * np.abs(cg).max())
    assert not got[0].any() and not got[9].any()


@pytest.mark.parametrize(("steps", "dtype"), [(1, np.float32), (3, np.float32),
                                              (1, np.float64), (3, np.float64),
                                              (8, np.float64)])
def test_pcg_with_a_scaled_penalty_preconditions_each_row_by_its_own_shared_part(
        backend, steps, dtype):
    """solver="pcg" with scale_regularization=True: each row's steps are preconditioned by
    its own ``F^T F + lambda n_u I`` (``n_u``: its positive entries; the backends take
    them in the eigenbasis of ``F^T F``, where it is diagonal), against textbook
    preconditioned CG on each row's dense system; rows of every length class (the long
    ones over their segments on the GPU path) and of dislikes alone (the solution 0).
    8 steps at k = 8 reach the exact solution; after 1 and 3, nearer to it than CG's."""
    k = 8
    R, F, X0, conf = cg_problem("implicit", k)
    R, X0 = with_a_row_of_dislikes(R, X0)
    conf = {**conf, "scaled": True}
    got = run_solve(backend, R, F, 0.1, "implicit", dtype, start=X0, solver="pcg",
                    cg_steps=steps, scale_regularization=True, alpha=conf["alpha"])
    want = pcg_rows_loop(R, F, X0, 0.1, steps, **conf)
    tolerance = {np.float32: 1e-4, np.float64: 1e-9 if steps < 3 else 1e-7}[dtype]
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * np.abs(want).max())
    exact = solve_rows_loop(R, F, 0.1, **conf)
    if steps == k:
        np.testing.assert_allclose(got, exact, rtol=0,
                                   atol=10 * tolerance * np.abs(exact).max())
    else:
        cg = cg_rows_loop(R, F, X0, 0.1, steps, **conf)
        assert np.linalg.norm(want - exact) < 0.65 * np.linalg.norm(cg - exact)
    assert not got[[0, 9, -1]].any() and X0[-1].all()  # empty rows, and the dislikes


@pytest.mark.parametrize("feedback, solver, scaled", [("implicit", "pcg", False),
                                                      ("implicit", "pcg", True),
                                                      ("explicit", "cg", False)])
def test_float32_steps_from_near_the_solution_keep_their_digits(backend, feedback, solver,
                                                                 scaled):
    """Three float32 steps from a warm start near the solution (each factor 1e-4 off it,
    as a fit's later half-steps start), with large values (x 1000; alpha 100: confidences
    up to 5e5), on rows of every length class: the residual ``b - A x`` is a small
    difference of large numbers. Each entry's ``t - w (f . x)`` is taken before the sum
    (the CPU backend always did): the steps are within 5e-7 of the solution's scale of
    textbook float64 ones. Summed apart (``b``, then ``A x``), as the GPU kernels did, the
    emulated GPU's were 2.5e-4 off with PCG (six times the steps' own size) and 1.3e-6
    with explicit CG. (Implicit CG without the preconditioner is left out: its own
    rounding in float32, the CPU's as well, is 8e-5 there.)"""
    k = 8
    R, F, _, conf = cg_problem(feedback, k)
    R = R.copy()
    R.data *= 1000.0
    conf = {"alpha": 100.0} if feedback == "implicit" else {}
    reference = {**conf, "scaled": scaled} if scaled else conf
    exact = solve_rows_loop(R, F, 0.1, feedback=feedback, **reference)
    noise = np.random.default_rng(3).standard_normal(exact.shape)
    start = (exact * (1 + 1e-4 * noise)).astype(np.float32)
    loop = pcg_rows_loop if solver == "pcg" else cg_rows_loop
    want = loop(R, F.astype(np.float32), start, 0.1, 3, feedback=feedback, **reference)
    got = run_solve(backend, R, F, 0.1, feedback, np.float32, start=start, solver=solver,
                    cg_steps=3, scale_regularization=scaled, **conf)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-7 * np.abs(want).max())


def test_cg_leaves_a_solved_row_as_it_is(backend):
    """A row whose residual is already 0 (ratings of 0 from factors of 0: the exact
    solution) takes no step: 0, not the NaN of a 0 / 0 step size."""
    R = sp.csr_matrix((np.array([0.0, 0.0, 4.0]), np.array([0, 1, 1]), np.array([0, 2, 3])),
                      shape=(2, 3))  # row 0: two stored ratings of 0
    F = np.random.default_rng(6).standard_normal((3, 2))
    got = run_solve(backend, R, F, 0.1, "explicit", np.float64, start=np.zeros((2, 2)),
                    solver="cg", cg_steps=3)
    assert np.isfinite(got).all() and not got[0].any() and got[1].any()


def test_entries_with_a_target_but_no_weight_beside_weighted_ones(backend):
    """A row shorter than k whose entries have a target but no weight (confidence 1) next to
    weighted ones, as the backend contract allows: its dense system's solution (the CPU
    solves such a block in the Woodbury form, not the push-through one)."""
    from gpu_als.data import WeightedRows

    k, n_fixed = 6, 20
    F = np.random.default_rng(7).random((n_fixed, k))
    # more rows than the CPU's EACH_ROW_LIMIT, so that they take the batched paths
    indptr = np.array([0, 3, 5, 6, 6, 6, 6], np.int32)  # (the index dtype of weighted_rows)
    indices = np.array([1, 4, 7, 2, 9, 3], np.int32)
    weight = np.array([0.0, 2.0, 0.0, 1.5, 0.0, 0.0])
    target = np.array([1.0, 3.0, 1.0, 2.5, 0.0, 1.0])
    b = get_backend(backend)
    rows = b.put(WeightedRows(indptr, indices, weight, target, n_fixed, 0.0))
    Fb = b.asarray(F, np.float64)
    out = b.asarray(np.full((6, k), np.nan), np.float64)
    b.solve_rows(rows, Fb, b.gram(Fb), regularization=0.1, feedback="implicit", out=out)
    want = np.zeros((6, k))
    for u in range(3):
        entries = slice(indptr[u], indptr[u + 1])
        Fu = F[indices[entries]]
        A = F.T @ F + 0.1 * np.eye(k) + Fu.T @ (weight[entries, None] * Fu)
        want[u] = np.linalg.solve(A, Fu.T @ target[entries])
    assert_close(b.to_numpy(out), want, np.float64)


def test_log_confidence_matches(backend):
    R = edge_case_matrix(16)
    F = np.random.default_rng(3).random((R.shape[1], 16))
    got = run_solve(backend, R, F, 0.01, "implicit", np.float64, alpha=2.0, confidence="log",
                    epsilon=0.5)
    want = solve_rows_loop(R, F, 0.01, alpha=2.0, confidence_kind="log", epsilon=0.5)
    assert_close(got, want, np.float64)


def test_zero_alpha_and_regularization(backend):
    """alpha=0 (every confidence 1) and regularization=0 are legal implicit settings."""
    R = edge_case_matrix(8)
    F = np.random.default_rng(4).random((R.shape[1], 8))
    got = run_solve(backend, R, F, 0.0, "implicit", np.float64, alpha=0.0)
    assert_close(got, solve_rows_loop(R, F, 0.0, alpha=0.0), np.float64)


def test_zero_alpha_on_short_rows_of_one_length(backend):
    """alpha=0 gives every entry a target and no weight, which the short rows' push-through
    form (``h = Z^T S^-1 (t / sqrt(w))``) cannot express. Rows all of one length and all
    positive make blocks without padding or a zero target, so that nothing else sends
    them to the form that can."""
    rng = np.random.default_rng(5)
    k, n_items = 8, 40
    cols = np.concatenate([rng.choice(n_items, 3, replace=False) for _ in range(6)])
    R = sp.csr_matrix((np.ones(18), cols, np.arange(0, 19, 3)), shape=(6, n_items))
    F = rng.random((n_items, k))
    got = run_solve(backend, R, F, 0.1, "implicit", np.float64, alpha=0.0)
    assert_close(got, solve_rows_loop(R, F, 0.1, alpha=0.0), np.float64)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_stored_zeros(backend, feedback):
    """A stored zero (scipy keeps them unless eliminated): implicit, p = 0 and c = 1, the
    same as no entry; explicit, a rating of 0, which counts in the row's n_u."""
    implicit = feedback == "implicit"
    R = edge_case_matrix(8, negative=implicit)
    R.data[np.random.default_rng(7).random(R.nnz) < 0.2] = 0
    assert (R.data == 0).sum() > 5
    F = np.random.default_rng(8).standard_normal((R.shape[1], 8))
    conf = {"alpha": 3.0} if implicit else {}
    got = run_solve(backend, R, F, 0.1, feedback, np.float64, **conf)
    assert_close(got, solve_rows_loop(R, F, 0.1, feedback=feedback, **conf), np.float64)
    without = R.copy()
    without.eliminate_zeros()
    same = np.allclose(got, run_solve(backend, without, F, 0.1, feedback, np.float64, **conf),
                       rtol=0, atol=1e-9)
    assert same == implicit


def test_int64_indices(backend):
    R = edge_case_matrix(8)
    R64 = R.copy()
    R64.indices, R64.indptr = R.indices.astype(np.int64), R.indptr.astype(np.int64)
    assert R64.indices.dtype == np.int64  # scipy keeps them when set this way
    F = np.random.default_rng(5).random((R.shape[1], 8))
    got = run_solve(backend, R64, F, 0.1, "implicit", np.float64, alpha=1.0)
    assert_close(got, solve_rows_loop(R, F, 0.1, alpha=1.0), np.float64)


def test_long_row_and_single_row(backend):
    """One user with thousands of entries, alone in the matrix."""
    rng = np.random.default_rng(6)
    n_items, k = 6000, 24
    R = sp.csr_matrix((rng.integers(1, 4, n_items - 7).astype(np.float64),
                       (np.zeros(n_items - 7, int), rng.permutation(n_items)[:-7])),
                      shape=(1, n_items))
    F = rng.random((n_items, k)) * 0.1
    got = run_solve(backend, R, F, 0.1, "implicit", np.float32, alpha=2.0)
    assert_close(got, solve_rows_loop(R, F, 0.1, alpha=2.0), np.float32)


def test_gpu_plans_serve_only_the_rows_they_were_made_for():
    """The GPU backend caches each half-step's schedule by ``id(rows)``, and CPython hands
    a freed object's id to a new one: the entry's weak reference must tell that rows
    which took over a freed matrix's id are other rows, whose own plan is made."""
    from .conftest import emulated_backend

    backend = emulated_backend()
    k, dtype = 4, np.dtype(np.float64)

    def put(R):
        return backend.put(weighted_rows(check_user_items(R, dtype), feedback="implicit",
                                         alpha=2.0))

    R_small, R_big = random_interactions(6, 25, 0.2, seed=1), edge_case_matrix(k)
    small, big = put(R_small), put(R_big[:, :25])
    backend._plan(small, k, dtype)
    # as if big had been allocated where small was, once small was freed
    key = (k, dtype.str, False, False, False)  # (not NNLS's plan, not scaled, implicit)
    backend._plans[(id(big), *key)] = backend._plans[(id(small), *key)]
    F = np.random.default_rng(2).random((25, k))
    out = backend.asarray(np.zeros((big.n_rows, k)))
    Fb = backend.asarray(F)
    backend.solve_rows(big, Fb, backend.gram(Fb), regularization=0.1, feedback="implicit",
                       out=out)
    assert_close(backend.to_numpy(out), solve_rows_loop(R_big[:, :25], F, 0.1, alpha=2.0),
                 np.float64)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cpu_block_size_does_not_change_results(solver, monkeypatch):
    """Tiny blocks (one row each, none merged), many threads, and every block merged into
    the next give the same factors as the default."""
    from gpu_als.backends import CPUBackend, cpu

    monkeypatch.setattr(cpu, "CHOLESKY_PARALLEL_ELEMENTS", 0)  # threads even for this size

    R = random_interactions(300, 120, 0.1, seed=7)
    F = np.random.default_rng(8).random((120, 16)).astype(np.float32)
    rows = weighted_rows(check_user_items(R), feedback="implicit", alpha=5.0)
    start = np.random.default_rng(9).random((300, 16)).astype(np.float32)  # CG's

    def solve(backend, min_elements=None, parallel_from=0):
        monkeypatch.setattr(cpu, "CG_PARALLEL_ELEMENTS", parallel_from)
        if min_elements is not None:
            for name in ("MIN_BLOCK_ELEMENTS", "CG_MIN_BLOCK_ELEMENTS",
                         "CG_SERIAL_MIN_BLOCK_ELEMENTS"):
                monkeypatch.setattr(cpu, name, min_elements)
        out = start.copy()
        backend.solve_rows(rows, F, backend.gram(F), regularization=0.1, feedback="implicit",
                           out=out, solver=solver)
        return out

    default = solve(CPUBackend())
    one_thread = solve(CPUBackend(num_threads=1))
    tiny = solve(CPUBackend(num_threads=4, block_elements=1), min_elements=0)
    merged = solve(CPUBackend(), min_elements=2**40)
    # a CG half-step small enough for one thread takes its own block sizes
    tiny_serial = solve(CPUBackend(block_elements=1), min_elements=0, parallel_from=2**40)
    merged_serial = solve(CPUBackend(), min_elements=2**40, parallel_from=2**40)
    # float32 CG: each step divides by dot products that other blockings round otherwise
    atol = 1e-5 if solver == "cholesky" else 5e-4
    for result in (one_thread, tiny, merged, tiny_serial, merged_serial):
        np.testing.assert_allclose(result, default, atol=atol)


def test_cpu_paths_take_their_own_block_sizes_unless_one_is_given(monkeypatch):
    """The exact solver, CG on several threads and on one, and the loss each cut their
    work at their own size (see cpu.py's constants); block_elements, where given, is the
    size of every one."""
    from gpu_als.backends import CPUBackend, cpu

    assert repr(CPUBackend(num_threads=2)) == "CPUBackend(num_threads=2)"
    assert repr(CPUBackend(num_threads=2, block_elements=1000)) == \
        "CPUBackend(num_threads=2, block_elements=1000)"
    sizes = []

    def spy(lengths, factors, block_elements, min_elements):
        sizes.append((block_elements, min_elements))
        return row_blocks(lengths, factors, block_elements, min_elements)

    row_blocks = cpu.row_blocks
    monkeypatch.setattr(cpu, "row_blocks", spy)
    R = random_interactions(300, 120, 0.1, seed=7)
    F = np.random.default_rng(8).random((120, 16)).astype(np.float32)
    rows = weighted_rows(check_user_items(R), feedback="implicit", alpha=5.0)
    for given in (None, 1000):
        backend = CPUBackend(block_elements=given)
        for solver, parallel_from in (("cholesky", 2**40), ("cg", 0), ("cg", 2**40)):
            monkeypatch.setattr(cpu, "CG_PARALLEL_ELEMENTS", parallel_from)
            backend.solve_rows(rows, F, backend.gram(F), regularization=0.1,
                               feedback="implicit", out=np.zeros((300, 16), np.float32),
                               solver=solver)
    assert sizes == [(cpu.BLOCK_ELEMENTS, cpu.MIN_BLOCK_ELEMENTS),
                     (cpu.CG_BLOCK_ELEMENTS, cpu.CG_MIN_BLOCK_ELEMENTS),
                     (cpu.CG_SERIAL_BLOCK_ELEMENTS, cpu.CG_SERIAL_MIN_BLOCK_ELEMENTS),
                     (1000, cpu.MIN_BLOCK_ELEMENTS), (1000, cpu.CG_MIN_BLOCK_ELEMENTS),
                     (1000, cpu.CG_SERIAL_MIN_BLOCK_ELEMENTS)]
    dense = weighted_rows(check_user_items(random_interactions(300, 120, 0.5, seed=7)),
                          feedback="implicit", alpha=5.0)  # more entries than a chunk
    X = np.random.default_rng(9).random((300, 16)).astype(np.float32)
    taken = []
    monkeypatch.setattr(cpu.np, "take", lambda a, ids, *args, **kw:
                        taken.append(len(ids)) or np.asarray(a)[ids])
    for given, chunk in ((None, cpu.LOSS_CHUNK_ELEMENTS // 16), (160, 10)):
        taken.clear()
        CPUBackend(block_elements=given).stored_loss(dense, X, F)
        assert dense.indptr[-1] > chunk and max(taken) == chunk
    serial = CPUBackend(num_threads=2).stored_loss(dense, X, F)
    # a large half-step's loss: its own chunks, on both threads, added in order
    monkeypatch.setattr(cpu, "CG_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(cpu, "LOSS_PARALLEL_CHUNK_ELEMENTS", 16 * 700)
    taken.clear()
    assert CPUBackend(num_threads=2).stored_loss(dense, X, F) == pytest.approx(serial,
                                                                               rel=1e-12)
    assert max(taken) == 700 < dense.indptr[-1]


def test_cpu_batched_solve_gives_nan_for_a_singular_system_and_solves_the_others():
    """As the GPU kernels do (NaN rows, which the fit reports as a FloatingPointError): an
    exactly singular system, as overflowed factors make, is not a LinAlgError out of fit."""
    from gpu_als.backends.cpu import solve_batch

    A = np.array([[[2.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]],
                 np.float32)
    b = np.array([[2.0, 8.0], [1.0, 2.0], [3.0, 5.0]], np.float32)
    x = solve_batch(A, b)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1.0, 2.0], [np.nan, np.nan], [3.0, 5.0]])


@pytest.mark.parametrize("k", [4, 32])
def test_cpu_row_blocks(k):
    """Every non-empty row once, in a block padded to at least its length; no block across
    k; blocks within the element bound and, unmerged, within BUCKET_GROWTH; a small block
    merged into the next unless that would pad more than min_elements, or cross k."""
    from gpu_als.backends.cpu import BUCKET_GROWTH, row_blocks

    lengths = np.random.default_rng(k).zipf(1.6, 3000).clip(max=5000)
    lengths[::7] = 0
    for block_elements, min_elements in ((2**14, 0), (2**14, 2**12), (2**20, 2**16)):
        blocks = list(row_blocks(lengths, k, block_elements, min_elements))
        ids = np.concatenate([rows for rows, _ in blocks])
        np.testing.assert_array_equal(np.sort(ids), np.flatnonzero(lengths))
        for rows, padded in blocks:
            assert lengths[rows].max() <= padded
            assert (lengths[rows] < k).all() or (lengths[rows] >= k).all()
            if len(rows) > 1:
                # a small block (< min_elements), padded by at most min_elements more
                assert len(rows) * padded * k <= block_elements + 2 * min_elements
            if min_elements == 0:
                shortest = lengths[rows].min()
                assert padded <= (shortest if shortest < 16 else shortest * BUCKET_GROWTH)
        for (rows, padded), (_, next_padded) in zip(blocks, blocks[1:]):
            if len(rows) * padded * k < min_elements and (padded < k) == (next_padded < k):
                # not merged: padded to the next block's length, it would grow too much
                assert len(rows) * (next_padded - padded) * k > min_elements
        if min_elements:
            unmerged = list(row_blocks(lengths, k, block_elements, 0))
            assert len(blocks) < len(unmerged)
    # 10 rows of 20 entries (800 elements at k = 4, under 1,000) take in the 10 rows of 30
    # for 400 elements of padding; the block (2,400) is no longer small: 60 stays apart
    lengths = np.repeat([20, 30, 60], 10)
    blocks = [(sorted(rows), padded) for rows, padded in row_blocks(lengths, 4, 2**14, 1000)]
    assert blocks == [(list(range(20)), 30), (list(range(20, 30)), 60)]
    # ... but not the rows of 200: 7,200 elements of padding, more than 1,000
    lengths = np.repeat([20, 200], 10)
    blocks = [(sorted(rows), padded) for rows, padded in row_blocks(lengths, 4, 2**14, 1000)]
    assert blocks == [(list(range(10)), 20), (list(range(10, 20)), 200)]


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cpu_work_arrays_are_reused_and_change_no_result(solver, monkeypatch):
    """Within reusing_buffers (a fit) the CPU backend lends the same work arrays to block
    after block and call after call, whatever their sizes and dtypes: the results are
    bit-identical to fresh arrays', at most one set per thread is made, and a fit makes
    one scratch in all."""
    from gpu_als.backends import cpu

    for name in ("CHOLESKY_PARALLEL_ELEMENTS", "CG_PARALLEL_ELEMENTS"):
        monkeypatch.setattr(cpu, name, 0)  # threads even for these sizes
    backend = cpu.CPUBackend(num_threads=3, block_elements=2000)
    rng = np.random.default_rng(3)
    cases = [(random_interactions(300, 120, 0.1, seed=7), 16, np.float32),
             (random_interactions(80, 50, 0.4, seed=9), 6, np.float64),
             (random_interactions(40, 400, 0.2, seed=5), 24, np.float32)]
    cases.append(cases[0])

    def solve(R, k, dtype):
        F = rng.random((R.shape[1], k)).astype(dtype)
        rows = weighted_rows(check_user_items(R, dtype), feedback="implicit", alpha=5.0)
        out = np.full((R.shape[0], k), 0.01, dtype)
        backend.solve_rows(rows, F, backend.gram(F), regularization=0.1,
                           feedback="implicit", out=out, solver=solver)
        return out

    rng = np.random.default_rng(3)
    fresh = [solve(*case) for case in cases]
    rng = np.random.default_rng(3)
    with backend.reusing_buffers():
        scratch = cpu._fit_scratch.get()
        reused = [solve(*case) for case in cases]
        with backend.reusing_buffers():  # nested: the same arrays
            assert cpu._fit_scratch.get() is scratch
    assert cpu._fit_scratch.get() is None
    for got, want in zip(reused, fresh):
        np.testing.assert_array_equal(got, want)
    assert 1 <= len(scratch._free) <= backend.num_threads
    made = []
    monkeypatch.setattr(cpu, "_Scratch", lambda: made.append(1) or scratch)
    ALS(factors=4, iterations=3, solver=solver, backend=backend, show_progress=False,
        random_state=0).fit(cases[0][0])
    assert len(made) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_is_float64_whatever_the_factors(backend, dtype):
    """(The contract: the solves add ``lambda I`` and the loss its traces to it in float64.)"""
    F = np.random.default_rng(4).standard_normal((23, 6)).astype(dtype)
    b = get_backend(backend)
    got = b.gram(b.asarray(F))
    assert got.dtype == np.float64 and got.shape == (6, 6)
    np.testing.assert_allclose(b.to_numpy(got), F.astype(np.float64).T @ F,
                               rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("users, items, density", [
    (40, 30, 0.2),
    (6, 5, 0.4),  # fewer entries than a block has threads (the GPU's loss grid rounds up)
])
def test_loss_matches_dense_definition(backend, feedback, users, items, density):
    R = random_interactions(users, items, density, seed=9, negative=feedback == "implicit")
    assert R.nnz > 0
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((users, 5)), rng.standard_normal((items, 5))
    b = get_backend(backend)
    rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback=feedback, alpha=2.0))
    Xb, Yb = b.asarray(X), b.asarray(Y)
    got = b.loss(rows, Xb, Yb, b.gram(Yb), regularization=0.3, feedback=feedback)
    want = loss_dense(R, X, Y, 0.3, feedback=feedback, alpha=2.0)
    assert got == pytest.approx(want, rel=1e-10)
    if feedback == "implicit":  # the penalty scaled by each row's and column's entries
        got = b.loss(rows, Xb, Yb, b.gram(Yb), regularization=0.3, feedback=feedback,
                     scale_regularization=True)
        want_scaled = loss_dense(R, X, Y, 0.3, alpha=2.0, scaled=True)
        assert got == pytest.approx(want_scaled, rel=1e-10) and want_scaled != want


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_loss_without_stored_entries(backend, feedback):
    """No entries (a fold-in of users without interactions): the loss is the dense part
    alone, sum (x_u . y_i)^2 (implicit) or nothing (explicit), plus the penalty."""
    R = sp.csr_matrix((4, 3))
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    b = get_backend(backend)
    rows = b.put(weighted_rows(check_user_items_allow_empty(R, np.float64, name="R"),
                               feedback=feedback, alpha=2.0))
    Xb, Yb = b.asarray(X), b.asarray(Y)
    got = b.loss(rows, Xb, Yb, b.gram(Yb), regularization=0.3, feedback=feedback)
    assert got == pytest.approx(loss_dense(R, X, Y, 0.3, feedback=feedback), rel=1e-10)


def test_cpu_loss_adds_every_chunk_of_entries():
    """stored_loss takes LOSS_CHUNK_ELEMENTS // k entries at a time (block_elements // k
    where given): with chunks of one to a few entries the loss is the one-pass value."""
    R = random_interactions(40, 30, 0.2, seed=9)
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((30, 5))
    rows = weighted_rows(check_user_items(R, np.float64), feedback="implicit", alpha=2.0)
    want = loss_dense(R, X, Y, 0.3, feedback="implicit", alpha=2.0)
    for block_elements in (1, 5 * 7, 2**20):
        b = CPUBackend(block_elements=block_elements)
        assert b.loss(rows, X, Y, b.gram(Y), regularization=0.3,
                      feedback="implicit") == pytest.approx(want, rel=1e-10)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, on purpose
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("chosen", [[0, 3, 6], list(range(12))])
@pytest.mark.parametrize(("solver", "scaled"), [
    ("cholesky", False), ("cg", False), ("pcg", False), ("nnls", False),
    ("cholesky", True), ("cg", True), ("nnls", True)])
def test_non_finite_fixed_factors_give_nan_rows_on_every_path(backend, chosen, value, solver,
                                                              scaled):
    """A fixed side holding NaN (a diverged half-step) makes every implicit row's system
    NaN: each path returns NaN rows, for fit to report, instead of raising an error that
    blames the regularization or (LAPACK, of an infinite matrix) returning zeros; three
    rows take the CPU's row-by-row fold-in path. PCG's preconditioner, the Cholesky
    factor of that shared part, is NaN too rather than an error; and with a scaled
    penalty, the eigenbasis of a NaN F^T F (the rows with a positive entry: the others'
    solution is 0 whatever the factors)."""
    b = get_backend(backend)
    R = edge_case_matrix(7)[chosen]
    F = np.random.default_rng(1).random((R.shape[1], 7))
    F[3] = value
    rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback="implicit",
                               alpha=2.0))
    Fb = b.asarray(F)
    out = b.asarray(np.zeros((len(chosen), 7)))
    b.solve_rows(rows, Fb, b.gram(Fb), regularization=0.1, feedback="implicit", out=out,
                 solver=solver, scale_regularization=scaled)
    solved = np.diff(R.indptr) > 0  # (scaled: the rows with a positive entry)
    if scaled:
        solved = np.array([(R[u].data > 0).any() for u in range(R.shape[0])])
    assert solved.any() and np.isnan(b.to_numpy(out)[solved]).all()


@pytest.mark.parametrize("solver", ["cholesky", "nnls"])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_loss_never_increases_between_half_steps(backend, feedback, solver):
    """With exact solves each half-step minimises the loss over its side (NNLS: over its
    nonnegative factors, which it keeps so): it cannot go up."""
    R = random_interactions(30, 25, 0.2, seed=11, negative=feedback == "implicit")
    b = get_backend(backend)
    rows = b.put(weighted_rows(check_user_items(R, np.float64), feedback=feedback, alpha=5.0))
    cols = b.put(weighted_rows(check_user_items(R.T, np.float64), feedback=feedback, alpha=5.0))
    rng = np.random.default_rng(12)
    X, Y = b.asarray(rng.random((30, 5)) * 0.01), b.asarray(rng.random((25, 5)) * 0.01)
    losses = []
    for _ in range(4):
        for target, fixed, side in ((X, Y, rows), (Y, X, cols)):
            b.solve_rows(side, fixed, b.gram(fixed), regularization=0.05, feedback=feedback,
                         out=target, solver=solver)
            losses.append(b.loss(rows, X, Y, b.gram(Y), regularization=0.05,
                                 feedback=feedback))
    assert all(after <= before * (1 + 1e-12) for before, after in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]
    if solver == "nnls":
        assert (b.to_numpy(X) >= 0).all() and (b.to_numpy(Y) >= 0).all()


def test_fit_loss_history_decreases(backend):
    R = random_interactions(50, 40, 0.1, seed=13)
    model = ALS(factors=6, iterations=4, backend=backend, random_state=0, dtype=np.float64,
                show_progress=False).fit(R)
    history = model.loss_history_
    assert len(history) == 4
    assert all(b <= a * (1 + 1e-12) for a, b in zip(history, history[1:]))


@pytest.mark.parametrize("solver", ["cholesky", "cg", "pcg"])
@pytest.mark.parametrize("feedback, scaled", [("implicit", False), ("implicit", True),
                                              ("explicit", None)])
def test_a_gpu_iteration_waits_for_the_device_only_for_the_loss(feedback, scaled, solver):
    """Issue 4: no host synchronisation inside an iteration, but where the training loss
    is asked for. Fits of 1 and 3 iterations on the emulated GPU, whose device arrays
    count what reads their values on the host (tests/cupy_shaped.py's ``host_reads``):
    without the loss, both read as often (the set-up and the final finiteness check);
    with it, each iteration adds one read (the loss, its terms summed on the device; three
    or four until stop 82, a read per term). At k = 8 every
    path of a half-step is taken: Woodbury's short rows, fused rows, the two-kernel
    path's chunk of long rows (or CG's launches for them)."""
    from . import cupy_shaped

    R = random_interactions(60, 40, 0.15, seed=5).tolil()
    R[0, :] = 2.0  # a long user row and a long item column
    R[:, 1] = 3.0
    R = R.tocsr()

    def reads(iterations: int, loss: bool) -> int:
        model = ALS(factors=8, iterations=iterations, solver=solver, feedback=feedback,
                    scale_regularization=scaled, calculate_training_loss=loss,
                    backend=emulated_backend(), random_state=0, show_progress=False)
        cupy_shaped.host_reads.clear()
        model.fit(R)
        return sum(cupy_shaped.host_reads.values())

    without = [reads(n, loss=False) for n in (1, 3)]
    assert without[0] > 0, "the counter counts nothing"  # (the finiteness check reads)
    assert without[1] == without[0], f"reads in fits of 1 and 3 iterations: {without}"
    with_loss = [reads(n, loss=True) for n in (1, 3)]
    assert with_loss[1] - with_loss[0] == 2, \
        f"reads in fits of 1 and 3 iterations with the loss: {with_loss}"


@pytest.mark.parametrize("solver", ["cholesky", "cg", "pcg"])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_fits_keep_the_problems_symmetries(backend, feedback, solver):
    """Fits from given factors, compared with fits of transformed problems that have the
    same solution: users and items in another order (the same factors, reordered); values
    times s with ``alpha`` / s (implicit: the same confidences) or ``regularization`` * s
    and the factors times sqrt(s) (explicit: the objective times s^2); a user and an item
    without entries appended, from zero factors (their solutions are 0, which adds nothing
    to the other side's systems). A row's place in a length bucket, block or tile, or an
    empty row's handling, that changed a result fails here."""
    R = random_interactions(40, 30, 0.25, seed=21, negative=feedback == "implicit")
    rng = np.random.default_rng(22)
    X, Y = rng.standard_normal((40, 5)) * 0.1, rng.standard_normal((30, 5)) * 0.1
    params = {"feedback": feedback, "solver": solver, "iterations": 2, "regularization": 0.1,
              "dtype": np.float64, **({"alpha": 2.0} if feedback == "implicit" else {})}

    def fit(matrix, X, Y, **changed):
        model = ALS.from_factors(X, Y, backend=backend, warm_start=True, show_progress=False,
                                 **{**params, **changed}).fit(matrix)
        return (model._backend.to_numpy(model.user_factors_),
                model._backend.to_numpy(model.item_factors_))

    Xa, Ya = fit(R, X, Y)
    users, items = rng.permutation(40), rng.permutation(30)
    Xp, Yp = fit(R[users][:, items], X[users], Y[items])
    if feedback == "implicit":
        Xs, Ys = fit(R * 4, X, Y, alpha=0.5)
    else:
        Xs, Ys = fit(R * 4, X * 2, Y * 2, regularization=0.4)
        Xs, Ys = Xs / 2, Ys / 2
    grown = sp.csr_matrix((R.data, R.indices, np.append(R.indptr, R.nnz)), shape=(41, 31))
    Xe, Ye = fit(grown, np.vstack([X, np.zeros(5)]), np.vstack([Y, np.zeros(5)]))
    scale = max(np.abs(Xa).max(), np.abs(Ya).max())
    for name, (x, y) in {"order": (Xp[np.argsort(users)], Yp[np.argsort(items)]),
                         "scale": (Xs, Ys), "empty rows": (Xe[:40], Ye[:30])}.items():
        np.testing.assert_allclose(x, Xa, rtol=0, atol=1e-9 * scale, err_msg=name)
        np.testing.assert_allclose(y, Ya, rtol=0, atol=1e-9 * scale, err_msg=name)
    assert not Xe[40].any() and not Ye[30].any()


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_profiled_solve_is_the_same_solve_and_times_its_phases(backend, solver):
    b = get_backend(backend)
    R = edge_case_matrix(7)
    csr = check_user_items(R, np.float64)
    rows = b.put(weighted_rows(csr, feedback="implicit", alpha=3.0))
    F = b.asarray(np.random.default_rng(1).random((R.shape[1], 7)) * 0.5, np.float64)
    start = np.random.default_rng(2).random((R.shape[0], 7))
    plain, profiled = b.asarray(start, np.float64), b.asarray(start, np.float64)
    kwargs = dict(regularization=0.1, feedback="implicit", solver=solver)
    b.solve_rows(rows, F, b.gram(F), out=plain, **kwargs)
    FtF = b.gram(F)
    with b.profile() as timer:
        started = time.perf_counter()
        b.solve_rows(rows, F, FtF, out=profiled, **kwargs)
        elapsed = time.perf_counter() - started
    assert b.timer is None, "profiling ends with the block"
    np.testing.assert_array_equal(b.to_numpy(profiled), b.to_numpy(plain))
    phases = dict(timer.seconds)
    if solver == "cg" and b.name == "cpu":
        expected = {"cg", "shared"}
    elif solver == "cg":  # rows beyond split_length over their segments
        plan = b._plan(rows, 7, np.dtype(np.float64))
        expected = {"shared"} | {name for name, used in (
            ("cg", len(plan.cg_rows)), ("cg_long", plan.cg_chunks)) if used}
        if backend != "gpu":
            assert expected == {"shared", "cg", "cg_long"}
    elif b.name == "cpu":
        expected = {"shared", "gram_build", "solve"}
    else:  # the GPU paths this matrix takes: all of them under the emulated limits
        plan = b._plan(rows, 7, np.dtype(np.float64))
        expected = {"shared"} | {name for name, used in (
            ("woodbury", plan.short), ("fused", len(plan.fused_rows)),
            ("gram_build", plan.chunks), ("solve", plan.chunks)) if used}
        if backend != "gpu":
            assert expected == {"shared", "woodbury", "fused", "gram_build", "solve"}
    assert set(phases) == expected
    assert all(seconds >= 0 for seconds in phases.values())
    assert 0 < sum(phases.values()) <= elapsed  # the phases split the call's time
    if b.name == "cpu" and solver == "cholesky":  # a fold-in's rows, solved one by one
        with b.profile() as timer:
            b.solve_rows(b.put(weighted_rows(csr[:2], feedback="implicit", alpha=3.0)), F,
                         b.gram(F), out=profiled[:2], **kwargs)
        np.testing.assert_allclose(profiled[:2], plain[:2], rtol=1e-12)
        assert set(timer.seconds) == {"solve"} and timer.seconds["solve"] > 0


def test_concurrent_calls_leave_the_blas_threads_as_they_were():
    """The CPU backend holds BLAS to one thread while its own threads work. Limits are
    process-wide: overlapping calls from several threads (a server) must not leave the
    process single-threaded afterwards."""
    import threading

    from threadpoolctl import ThreadpoolController

    from gpu_als.backends import cpu

    def blas_threads():
        return [pool["num_threads"] for pool in ThreadpoolController().info()]

    # two threads to begin with, whatever an earlier test (or a mutant) left behind
    limits = ThreadpoolController().limit(limits=2)
    try:
        before = blas_threads()
        if not before or max(before) < 2:
            pytest.skip("BLAS runs on one thread here: nothing to restore")
        R = random_interactions(300, 2000, 0.01, seed=1)
        model = ALS(factors=8, iterations=1, backend=cpu.CPUBackend(num_threads=2),
                    show_progress=False, random_state=0).fit(R)
        users = np.tile(np.arange(300), 30)  # 9,000 queries: several blocks, in parallel
        liked = R[users]
        errors = []

        def serve():
            try:
                for _ in range(10):
                    model.recommend(users, liked, N=5)
                    model.recommend(0, R[0], N=5, recalculate_user=True)  # a fold-in, too
            except Exception as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=serve) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = blas_threads()
    finally:
        limits.restore_original_limits()
    assert not errors
    assert after == before


@pytest.mark.parametrize("num_threads", [1, 3])
def test_map_in_order_yields_in_order_and_stays_a_few_items_ahead(num_threads):
    """The CPU backend's threads compute items at once, yielded in the items' order, at
    most 2 * num_threads items ahead of the caller; the first error is raised and the
    items not started are dropped."""
    import threading
    import time

    from gpu_als.backends import cpu

    backend = cpu.CPUBackend(num_threads=num_threads)
    started, lock = [], threading.Lock()

    def work(item):
        with lock:
            started.append(item)
        time.sleep(0.002 * (item % 3))  # finish out of order
        return item * item

    results = []
    for result in backend.map_in_order(work, iter(range(40))):
        results.append(result)
        time.sleep(0.004)  # a slow caller: the threads must wait for it
        assert len(started) <= len(results) + 2 * num_threads
    assert results == [i * i for i in range(40)]

    def fail_at_5(item):
        if item == 5:
            raise ValueError("item 5")
        return work(item)

    started.clear()
    with pytest.raises(ValueError, match="item 5"):
        list(backend.map_in_order(fail_at_5, range(1000)))
    # items 0 to 4 were yielded, so at most items 5 to 4 + 2 * num_threads were submitted;
    # on a loaded machine the threads may start all of them before the error is seen
    assert len(started) <= 5 + 2 * num_threads


def test_map_in_order_drops_the_items_not_started_after_an_error():
    """Three threads, six items submitted ahead: item 0 fails at once and items 1 and 2
    hold two threads for 0.3 s. The thread item 0 freed may or may not take item 3 before
    the error reaches the caller (a race); items 4 and 5 are cancelled rather than run."""
    import threading

    from gpu_als.backends import cpu

    started, lock = [], threading.Lock()

    def work(item):
        with lock:
            started.append(item)
        if item == 0:
            raise ValueError("item 0")
        time.sleep(0.3)
        return item

    with pytest.raises(ValueError, match="item 0"):
        list(cpu.CPUBackend(num_threads=3).map_in_order(work, range(100)))
    assert sorted(started) in ([0, 1, 2], [0, 1, 2, 3])


@pytest.mark.parametrize("num_threads", [1, 3])
def test_map_in_order_runs_each_item_under_the_callers_numpy_error_handling(num_threads):
    """A thread starts from NumPy's default error handling: the loss's np.errstate, which
    keeps an overflow quiet for the fit to report, did not reach its chunks on several
    threads (NumPy's "overflow encountered" warnings came first)."""
    from gpu_als.backends import cpu

    backend = cpu.CPUBackend(num_threads=num_threads)

    def overflow(item):
        return np.float32(3e38) * np.float32(item + 10)

    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        list(backend.map_in_order(overflow, range(8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore"):
            assert list(backend.map_in_order(overflow, range(8))) == [np.inf] * 8


def test_single_threaded_blas_is_held_while_any_caller_is_inside():
    """The one-thread limit of a fold-in and of a solve's parallel blocks: the first
    caller to enter sets it, overlapping callers keep it, the last to leave restores the
    pools as they were (each restoring its own would undo another's limit, or leave one
    for good)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from gpu_als.backends.cpu import _single_threaded_blas

    def blas_threads():
        return {pool["num_threads"] for pool in threadpoolctl.threadpool_info()
                if pool["user_api"] == "blas"}

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip(f"this BLAS does not run 2 threads: {threadpoolctl.threadpool_info()}")
        with _single_threaded_blas:
            assert blas_threads() == {1}
            _single_threaded_blas.__enter__()  # a second caller, overlapping
            assert blas_threads() == {1}
        assert blas_threads() == {1}  # the first has left, the second is still inside
        _single_threaded_blas.__exit__(None, None, None)
        assert blas_threads() == {2}
        with _single_threaded_blas:  # and again, from the restored state
            assert blas_threads() == {1}
        assert blas_threads() == {2}
