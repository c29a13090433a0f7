"""The GPU backend's short-row path (kernels/woodbury.cu): rows of at most k / 2 entries
solved in their own space, on whitened factors. The conformance suite runs it through the
"gpu-emulated" backend; here are its scheduling, its fallbacks and its agreement with the
fused kernel it replaces, row for row."""

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als.backends import CPUBackend, gpu
from gpu_als.data import WeightedRows, check_user_items, weighted_rows

from .conftest import emulated_backend, needs_gpu
from .reference import solve_rows_loop
from .test_solver import assert_close, run_solve


def rows_of_lengths(lengths, n_items, seed=0, negative=False):
    rng = np.random.default_rng(seed)
    R = sp.csr_matrix(
        (rng.integers(1, 5, sum(lengths)).astype(np.float64),
         (np.repeat(np.arange(len(lengths)), lengths),
          np.concatenate([rng.choice(n_items, L, replace=False) for L in lengths]))),
        shape=(len(lengths), n_items))
    if negative:
        R.data[rng.random(R.nnz) < 0.2] *= -1
    return R


def test_length_classes():
    assert gpu._length_classes(3) == [3]
    assert gpu._length_classes(8) == [8]
    assert gpu._length_classes(20) == [8, 16, 20]
    assert gpu._length_classes(64) == [8, 16, 32, 64]


def test_rows_past_the_split_length_are_cut_into_whole_segments():
    """split_length 10, segment_length 4: a row of up to 10 entries is solved by one block
    (Woodbury's k / 2 = 20 notwithstanding at k = 40; at k = 8 the fused kernel from 5
    entries on), a longer one takes the two-kernel path in ceil(n / 4) segments that
    cover its entries once."""
    backend = emulated_backend(split_length=10, segment_length=4)
    lengths = [10, 11, 12, 16, 3, 5]
    R = rows_of_lengths(lengths, 60)
    rows = backend.put(weighted_rows(check_user_items(R, np.float64), feedback="implicit"))
    for k, short, fused in ((40, {0, 4, 5}, set()), (8, {4}, {0, 5})):
        plan = backend._plan(rows, k, np.dtype(np.float64))
        assert {int(r) for _, members in plan.short for r in backend.to_numpy(members)} == \
            short, k
        assert set(backend.to_numpy(plan.fused_rows).tolist()) == fused, k
        chunks = [{name: backend.to_numpy(getattr(chunk, name)) for name in (
            "slot_rows", "segment_slot", "segment_start", "segment_end")}
            for chunk in plan.chunks]
        assert [r for c in chunks for r in c["slot_rows"]] == [3, 2, 1], k  # longest first
        for c in chunks:
            for slot, row in enumerate(c["slot_rows"]):
                mine = c["segment_slot"] == slot
                starts, ends = c["segment_start"][mine], c["segment_end"][mine]
                assert mine.sum() == -(-lengths[row] // 4), (k, row)
                assert starts[0] == R.indptr[row] and ends[-1] == R.indptr[row + 1]
                assert (starts[1:] == ends[:-1]).all() and (ends > starts).all()


def test_short_rows_are_scheduled_by_length_class():
    """k = 40: rows of 1..20 entries take woodbury_solve in the classes <= 8, <= 16, <= 20
    (longest first in each); 21 and more the fused kernel; empty rows the fused kernel."""
    backend = emulated_backend()
    lengths = [0, 1, 8, 9, 16, 17, 20, 21, 23, 5]
    R = rows_of_lengths(lengths, 60)
    rows = backend.put(weighted_rows(check_user_items(R, np.float64), feedback="implicit"))
    plan = backend._plan(rows, 40, np.dtype(np.float64))
    assert [(bound, list(members)) for bound, members in plan.short] == \
        [(8, [2, 9, 1]), (16, [4, 3]), (20, [6, 5])]
    assert sorted(plan.fused_rows) == [0, 7, 8]
    assert not backend.with_options(woodbury=False)._plan(rows, 40, np.dtype(np.float64)).short


def test_too_few_short_rows_are_left_to_the_fused_kernel():
    """Below woodbury_min_rows short rows (default WOODBURY_MIN_ROWS), a half-step takes
    no Woodbury launch: its fixed work would cost more than it saves (H200 measurements
    in gpu.py). At the bound, every short row takes it; the solutions are the same."""
    from . import emulation

    assert gpu.GPUBackend(emulation.EmulatedRuntime()).woodbury_min_rows == \
        gpu.WOODBURY_MIN_ROWS == 2048
    lengths = [0, 1, 8, 9, 16, 17, 20, 21, 23, 5]  # 7 short rows at k = 40
    R = rows_of_lengths(lengths, 60)
    F = np.random.default_rng(2).standard_normal((60, 40)) * 0.3
    got = {}
    for least in (7, 8):
        backend = emulated_backend(woodbury_min_rows=least)
        rows = backend.put(weighted_rows(check_user_items(R, np.float64),
                                         feedback="implicit"))
        plan = backend._plan(rows, 40, np.dtype(np.float64))
        short = sorted(int(r) for _, members in plan.short for r in backend.to_numpy(members))
        fused = sorted(backend.to_numpy(plan.fused_rows).tolist())
        assert (short, fused) == (([1, 2, 3, 4, 5, 6, 9], [0, 7, 8]) if least == 7 else
                                  ([], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), least
        got[least] = run_solve(backend, R, F, 0.05, "implicit", np.float64, alpha=4.0)
    assert_close(got[7], got[8], np.float64)
    assert_close(got[8], solve_rows_loop(R, F, 0.05, alpha=4.0), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("k", [2, 9, 40])
def test_woodbury_equals_the_fused_kernel(gpu_backend, k, feedback, dtype):
    lengths = [0, 1, 2, 3, 4, 7, 8, 9, k // 2, k // 2 + 1, k, 2 * k]
    R = rows_of_lengths(lengths, 3 * k + 10, seed=k, negative=feedback == "implicit")
    F = np.random.default_rng(k).standard_normal((R.shape[1], k)) * 0.3
    conf = {"alpha": 4.0} if feedback == "implicit" else {}
    short = run_solve(gpu_backend, R, F, 0.05, feedback, dtype, **conf)
    fused = run_solve(gpu_backend.with_options(woodbury=False), R, F, 0.05, feedback, dtype,
                      **conf)
    assert_close(short, fused, dtype)
    assert_close(short, solve_rows_loop(R, F, 0.05, feedback=feedback, **conf), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 9, 40])
def test_short_rows_with_a_scaled_penalty_are_whitened_one_by_one(gpu_backend, k, dtype):
    """scale_regularization=True: no part every row shares, so each short row whitens
    itself in the eigenbasis of F^T F (woodbury_solve_whitened), as PCG's rows do; the
    fused kernel's solutions, the per-row reference's, and 0 for a row of dislikes
    alone (no positive entry)."""
    lengths = [0, 1, 2, 3, 4, 7, 8, 9, k // 2, k // 2 + 1, k, 2 * k]
    R = rows_of_lengths(lengths, 3 * k + 10, seed=k, negative=True)
    R = sp.vstack([R, sp.csr_matrix(([-1.0, -2.0], ([0, 0], [1, 4])),
                                    shape=(1, R.shape[1]))]).tocsr()
    F = np.random.default_rng(k).standard_normal((R.shape[1], k)) * 0.3
    assert gpu_backend._plan(gpu_backend.put(weighted_rows(check_user_items(R, dtype),
                                                           feedback="implicit")), k,
                             np.dtype(dtype), scaled=True).short
    short = run_solve(gpu_backend, R, F, 0.05, "implicit", dtype, alpha=4.0,
                      scale_regularization=True)
    fused = run_solve(gpu_backend.with_options(woodbury=False), R, F, 0.05, "implicit",
                      dtype, alpha=4.0, scale_regularization=True)
    assert_close(short, fused, dtype)
    assert_close(short, solve_rows_loop(R, F, 0.05, alpha=4.0, scaled=True), dtype)
    assert not short[-1].any()


def test_short_rows_with_a_scaled_penalty_keep_float32s_digits(backend):
    """Large confidences (values x 1000, alpha 100) in float32 with a scaled penalty: the
    short rows' solutions within 2e-5 of the float64 ones, row by row, on every backend
    (a GPU's where the Woodbury path takes them: a half-step of at least
    ``woodbury_min_rows`` short rows). The fused kernel gave them 3.7e-3 (the CPU: 1.5e-6),
    before the Woodbury path took them too."""
    from gpu_als.backends import get_backend

    from .test_solver import cg_problem

    backend = get_backend(backend)
    if isinstance(backend, gpu.GPUBackend):  # (its default leaves these few to fused)
        backend = backend.with_options(woodbury_min_rows=1)
    k = 8
    R, F, _, _ = cg_problem("implicit", k)
    R = R.copy()
    R.data *= 1000.0
    want = solve_rows_loop(R, F.astype(np.float32), 0.1, alpha=100.0, scaled=True)
    got = run_solve(backend, R, F, 0.1, "implicit", np.float32, alpha=100.0,
                    scale_regularization=True)
    lengths = np.diff(R.indptr)
    short = (lengths >= 1) & (lengths <= k // 2)
    assert short.sum() >= 3
    error = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1).clip(1e-30)
    assert error[short].max() < 2e-5, error[short]


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("k", [9, 20])  # k <= the emulated split length, 24
def test_woodbury_up_to_k_entries_equals_the_fused_kernel(gpu_backend, k, feedback):
    """woodbury_fraction=1: rows of up to k entries in their own space (an n x n system
    as large as the fused kernel's), still the fused kernel's solutions."""
    lengths = [1, 4, k // 2 + 1, k - 1, k, k + 1, 2 * k]
    R = rows_of_lengths(lengths, 3 * k + 10, seed=k + 1, negative=feedback == "implicit")
    F = np.random.default_rng(k).standard_normal((R.shape[1], k)) * 0.3
    conf = {"alpha": 4.0} if feedback == "implicit" else {}
    whole = gpu_backend.with_options(woodbury_fraction=1.0)
    rows = whole.put(weighted_rows(check_user_items(R, np.float64), feedback=feedback))
    plan = whole._plan(rows, k, np.dtype(np.float64))
    assert sorted(int(r) for _, members in plan.short for r in whole.to_numpy(members)) == \
        [0, 1, 2, 3, 4]
    short = run_solve(whole, R, F, 0.05, feedback, np.float64, **conf)
    fused = run_solve(gpu_backend.with_options(woodbury=False), R, F, 0.05, feedback,
                      np.float64, **conf)
    assert_close(short, fused, np.float64)
    assert_close(short, solve_rows_loop(R, F, 0.05, feedback=feedback, **conf), np.float64)


def test_zero_regularization_is_whitened_like_any_other():
    """Implicit with lambda = 0: a row's system A = F^T C_u F (C_u >= I) has F's rank, so
    it is definite exactly when the whitening base F^T F is. Full rank (8 item rows, k =
    6): the short rows' solutions are the reference's; rank 5 (a zero column, so a zero
    pivot whatever the rounding): every row is singular, and every GPU path (Woodbury,
    fused, two-kernel) gives NaN (the fit then stops), never finite values."""
    k = 6
    backend = emulated_backend()
    R = rows_of_lengths([1, 2, 3], 8)
    for singular in (False, True):
        F = np.random.default_rng(1).random((8, k))
        if singular:
            F[:, 5] = 0
        two_kernel = backend.with_options(woodbury=False, split_length=0)
        for path in (backend, backend.with_options(woodbury=False), two_kernel):
            assert bool(path._plan(path.put(weighted_rows(
                check_user_items(R, np.float64), feedback="implicit")), k,
                np.dtype(np.float64)).short) == path.woodbury
            got = run_solve(path, R, F, 0.0, "implicit", np.float64, alpha=5.0)
            if singular:
                assert np.isnan(got).all(), path
            else:
                assert_close(got, solve_rows_loop(R, F, 0.0, alpha=5.0), np.float64)


def test_a_base_that_is_not_positive_definite_gives_nan_not_a_wrong_answer(monkeypatch):
    backend = emulated_backend()

    def cholesky_factors(base):
        return [backend.to_numpy(a) for a in backend._cholesky_factors(backend.asarray(base))]

    base = np.diag([1.0, -1.0, 2.0])
    assert all(np.isnan(a).all() for a in cholesky_factors(base))  # NumPy raises
    # CuPy does not raise: it returns a wrong factor, which the residual catches
    monkeypatch.setattr(backend.xp.linalg, "cholesky", lambda a: backend.xp.tril(abs(a)))
    assert all(np.isnan(a).all() for a in cholesky_factors(base))
    good = np.array([[4.0, 2.0], [2.0, 3.0]])
    monkeypatch.undo()
    C, C_inv = cholesky_factors(good)
    np.testing.assert_allclose(C @ C.T, good, atol=1e-12)
    np.testing.assert_allclose(np.tril(C), C, atol=0)
    np.testing.assert_allclose(C_inv @ good @ C_inv.T, np.eye(2), atol=1e-12)


def test_shared_memory_bounds_the_longest_short_row():
    """The longest short row is what shared memory holds, when that is under k / 2: at
    k = 1024 in float64 about 20 entries on an sm_80 block's 163 KiB (longer rows take the
    two-kernel path); at k = 64 the full k / 2."""
    backend = emulated_backend()
    limit = backend._woodbury_limit(1024, 8)
    assert 0 < limit < 512
    assert gpu._shared_bytes_woodbury(1024, limit, 8) <= backend.runtime.max_shared_memory
    assert gpu._shared_bytes_woodbury(1024, limit + 1, 8) > backend.runtime.max_shared_memory
    assert backend._woodbury_limit(64, 4) == 32
    # the whitened kernel's k more values (each row's d) fit one entry fewer here
    whitened = backend._woodbury_limit(1024, 8, whitened=True)
    assert whitened == limit - 1
    assert gpu._shared_bytes_woodbury(1024, whitened, 8, whitened=True) <= \
        backend.runtime.max_shared_memory < \
        gpu._shared_bytes_woodbury(1024, whitened + 1, 8, whitened=True)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_short_rows_where_the_fused_kernel_does_not_fit(feedback):
    """k = 24 in float64 on a device with 4 KiB of shared memory: no fused kernel, so long
    rows take the two-kernel path while rows of up to 11 entries still take woodbury_solve
    (no k x k system in global memory for them), lambda = 0 too."""
    from gpu_als.backends.gpu import GPUBackend

    from . import emulation

    emulated_backend()  # builds the emulation (or skips without it)
    backend = GPUBackend(emulation.EmulatedRuntime(max_shared_memory=4096), tile_rows=3,
                         split_length=20, segment_length=8, woodbury_min_rows=1)
    k = 24
    R = rows_of_lengths([0, 1, 5, 11, 12, 30, 3], 60, seed=3)
    rows = backend.put(weighted_rows(check_user_items(R, np.float64), feedback=feedback))
    plan = backend._plan(rows, k, np.dtype(np.float64))
    assert len(plan.fused_rows) == 0
    assert sorted(int(r) for _, members in plan.short for r in backend.to_numpy(members)) \
        == [1, 2, 3, 6]
    F = np.random.default_rng(4).standard_normal((60, k)) * 0.3
    conf = {"alpha": 3.0} if feedback == "implicit" else {}
    for regularization in (0.1, 0.0) if feedback == "implicit" else (0.1,):
        got = run_solve(backend, R, F, regularization, feedback, np.float64, **conf)
        want = solve_rows_loop(R, F, regularization, feedback=feedback, **conf)
        assert_close(got, want, np.float64)


def test_rows_with_targets_but_no_weights_take_the_subtraction_form():
    """An entry with a target but weight 0 (alpha = 0 gives only such entries) has no
    q = target / sqrt(weight): its row takes h = g - Z^T S^-1 Z g instead. Rows mixing
    such entries with weighted ones, against A x = b solved directly."""
    k = 8
    rng = np.random.default_rng(6)
    indptr = np.array([0, 3, 5, 9])
    indices = np.array([0, 4, 7, 1, 2, 3, 5, 6, 8])
    weight = np.array([0.0, 2.0, 5.0, 0.0, 0.0, 1.5, 0.0, 3.0, 0.5])
    target = np.array([1.0, 3.0, 6.0, 1.0, 1.0, 2.5, 1.0, 0.0, 1.5])
    F = rng.standard_normal((10, k))
    base = F.T @ F + 0.1 * np.eye(k)
    want = np.array([np.linalg.solve(
        base + (F[indices[a:b]].T * weight[a:b]) @ F[indices[a:b]],
        F[indices[a:b]].T @ target[a:b]) for a, b in zip(indptr[:-1], indptr[1:])])
    rows = WeightedRows(indptr, indices, weight, target, 10, float(target.sum()))
    for backend in (emulated_backend(), emulated_backend().with_options(woodbury=False),
                    CPUBackend()):  # the CPU backend solves these rows the same way
        placed = backend.put(rows)
        if backend.name == "gpu":
            assert bool(backend._plan(placed, k, np.dtype(np.float64)).short) == \
                backend.woodbury
        F_there, out = backend.asarray(F), backend.asarray(np.zeros((3, k)))
        backend.solve_rows(placed, F_there, backend.asarray(F.T @ F), regularization=0.1,
                           feedback="implicit", out=out)
        assert_close(backend.to_numpy(out), want, np.float64)


@pytest.mark.parametrize("backend", ["cpu", "gpu-emulated",
                                     pytest.param("gpu", marks=needs_gpu)])
def test_stored_zeros_keep_the_accurate_form(backend):
    """A stored zero has neither weight nor target (c = 1, p = 0): it must not send its
    row to the subtraction form, which in float32 loses about 100 times more (1e-4 of
    the solution against 1e-6, benchmarks/woodbury_accuracy.py's setting: k = 64, rows
    of 3 to 32 entries, confidences up to about 2,400; the k x k system of the fused and
    two-kernel paths, 2e-5). The CPU backend solves these rows the same way."""
    if backend != "cpu":  # every row on the Woodbury path: none split
        backend = (emulated_backend() if backend == "gpu-emulated"
                   else gpu.create_backend()).with_options(split_length=4096,
                                                           woodbury_min_rows=1)
    rng = np.random.default_rng(0)
    k, n_items, alpha = 64, 500, 40.0
    lengths = [3, 10, 20, 31, 32]
    R = rows_of_lengths(lengths, n_items)
    R.data = rng.integers(1, 60, R.nnz).astype(np.float64)
    R.data[R.indptr[:-1]] = 0  # each row's first entry: a stored zero
    F = rng.standard_normal((n_items, k)) * 0.1
    want = solve_rows_loop(R, F, 0.01, alpha=alpha)
    got = run_solve(backend, R, F, 0.01, "implicit", np.float32, alpha=alpha)
    error = (np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)).max()
    assert error < 1e-5


def test_a_singular_short_row_gives_nan_not_a_wrong_answer(gpu_backend):
    """Explicit feedback with regularization 0: a short row's system in its own space is
    S = F_u F_u^T, singular when an item of the row has all-zero factors (an exactly zero
    pivot, whatever the rounding). woodbury_solve must then return NaN, which the model's
    finiteness check reports, not the finite garbage of solves through a pivot of 1."""
    k = 8
    R = sp.csr_matrix((np.ones(9), ([0, 0, 1, 1, 1, 2, 2, 2, 2], [3, 0, 0, 5, 6, 1, 2, 0, 7])),
                      shape=(3, 10))
    F = np.random.default_rng(7).standard_normal((10, k))
    F[0] = 0
    placed = gpu_backend.put(weighted_rows(check_user_items(R, np.float64),
                                           feedback="explicit"))
    plan = gpu_backend._plan(placed, k, np.dtype(np.float64))
    assert sorted(np.concatenate([gpu_backend.to_numpy(rows) for _, rows in plan.short])) \
        == [0, 1, 2]
    got = run_solve(gpu_backend, R, F, 0.0, "explicit", np.float64)
    assert np.isnan(got).all()
