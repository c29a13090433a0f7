"""``GPUBackend(cholesky="cusolver")``: every row's system built by kernels/gram.cu and
solved by cuSOLVER's batched Cholesky.

Without a GPU the emulation runtime stands in for cuSOLVER with its documented semantics
(column-major matrices through an array of pointers, only the named triangle read), so the
backend's side (which triangle, the pointer arithmetic, the scatter into ``out``) is
tested here; the real cuSOLVER runs in the ``gpu`` cases.
"""

import numpy as np
import pytest

from gpu_als import ALS
from gpu_als.backends.gpu import GPUBackend

from . import emulation
from .conftest import (
    EMULATED_FREE_MEMORY,
    EMULATED_SEGMENT_LENGTH,
    EMULATED_SPLIT_LENGTH,
    emulated_backend,
    needs_gpu,
    random_interactions,
)
from .reference import solve_rows_loop
from .test_solver import assert_close, edge_case_matrix, run_solve


def emulated_cusolver(free_memory=EMULATED_FREE_MEMORY):
    return emulated_backend(free_memory, cholesky="cusolver")


@pytest.fixture(params=["gpu-emulated", pytest.param("gpu", marks=needs_gpu)])
def cusolver_backend(request):
    return emulated_cusolver() if request.param == "gpu-emulated" else \
        GPUBackend(cholesky="cusolver")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 32])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_cusolver_matches_per_row_solve(cusolver_backend, feedback, k, dtype):
    R = edge_case_matrix(k, negative=feedback == "implicit")
    F = np.random.default_rng(4).standard_normal((R.shape[1], k)) * 0.3
    conf = {"alpha": 3.0} if feedback == "implicit" else {}
    got = run_solve(cusolver_backend, R, F, 0.1, feedback, dtype, **conf)
    want = solve_rows_loop(R, F, 0.1, feedback=feedback, **conf)
    assert_close(got, want, dtype)
    assert not got[0].any() and not got[9].any(), "empty rows must get zero factors"


def test_every_row_takes_the_two_kernel_path_in_several_chunks():
    """No row goes to the fused kernel; a small free memory cuts the rows into chunks,
    each solved by one potrf/potrs pair, and long rows are split into segments."""
    k = 8
    backend = emulated_cusolver(free_memory=2 * 5 * k * k * 8)  # 5 float64 slots a chunk
    R = edge_case_matrix(k)
    F = np.random.default_rng(5).random((R.shape[1], k))
    got = run_solve(backend, R, F, 0.05, "implicit", np.float64, alpha=2.0)
    plan = next(iter(backend._plans.values()))[1]
    assert len(plan.fused_rows) == 0 and len(plan.chunks) >= 2
    assert max(len(c.slot_rows) for c in plan.chunks) == 5  # the budget, not one more
    assert any(len(c.segment_slot) > len(c.slot_rows) for c in plan.chunks)
    assert_close(got, solve_rows_loop(R, F, 0.05, alpha=2.0), np.float64)


def test_the_filled_triangle_is_the_one_cusolver_reads(monkeypatch):
    """gram.cu adds the weights into the row-major lower triangle only, which cuSOLVER
    (column-major) calls "upper"; told "lower" it would factorize the unweighted base."""
    k = 6
    R = edge_case_matrix(k)
    F = np.random.default_rng(6).random((R.shape[1], k))
    want = solve_rows_loop(R, F, 0.1, alpha=3.0)
    runtime = emulated_cusolver().runtime
    for method in ("potrf_batched", "potrs_batched"):
        original = getattr(runtime, method)
        monkeypatch.setattr(runtime, method,
                            lambda fill, *a, _f=original: _f("lower", *a))
    backend = GPUBackend(runtime, split_length=EMULATED_SPLIT_LENGTH,
                         segment_length=EMULATED_SEGMENT_LENGTH, cholesky="cusolver")
    got = run_solve(backend, R, F, 0.1, "implicit", np.float64, alpha=3.0)
    assert np.abs(got - want).max() > 1e-3


@pytest.mark.parametrize("path", ["cusolver", "fused", "two-kernel"])
def test_a_system_that_is_not_positive_definite_gives_nan(path):
    """Zero regularization and fixed factors with a zero column leave every A singular
    with an exactly zero pivot (whatever the rounding): the factorization fails at that
    column, and the row becomes NaN, which the model's finiteness check turns into an
    error, where the solves alone would return finite garbage. cuSOLVER's info flags it;
    the kernels' Cholesky (fused, and cholesky.cu after gram.cu: split_length 0 sends
    every row there) flags a pivot that is not positive."""
    backend = emulated_cusolver() if path == "cusolver" else \
        emulated_backend(split_length=0 if path == "two-kernel" else EMULATED_SPLIT_LENGTH)
    R = edge_case_matrix(4, negative=False)
    F = np.random.default_rng(5).random((R.shape[1], 4))
    F[:, 2] = 0
    got = run_solve(backend, R, F, 0.0, "implicit", np.float64, alpha=1.0)
    lengths = np.diff(R.indptr)
    assert np.isnan(got[lengths > 0]).all() and not got[lengths == 0].any()


def test_an_indefinite_system_gives_nan_not_what_potrs_makes_of_it():
    """cuSOLVER's potrs solves with whatever potrf left in a matrix it could not factorize
    (finite garbage for an indefinite one): info, not the solve, decides; the systems that
    factorize are solved."""
    backend = emulated_cusolver()
    A = backend.asarray(np.array([[[4.0, 0.0], [0.0, 9.0]], [[1.0, 2.0], [2.0, 1.0]]]))
    b = backend.asarray(np.array([[4.0, 9.0], [1.0, 1.0]]))
    x = backend.to_numpy(backend._cusolver_solve(A, b))
    np.testing.assert_allclose(x[0], [1.0, 1.0])
    assert np.isnan(x[1]).all()


def test_fit_with_cusolver_equals_fit_with_the_kernels():
    R = random_interactions(60, 40, 0.15, seed=7)
    params = dict(factors=6, regularization=0.05, alpha=4.0, iterations=3, random_state=3,
                  show_progress=False, dtype=np.float64)
    ours = ALS(backend=emulated_backend(), **params).fit(R)
    theirs = ALS(backend=emulated_cusolver(), **params).fit(R)
    np.testing.assert_allclose(theirs.loss_history_, ours.loss_history_, rtol=1e-10)
    np.testing.assert_allclose(theirs.to_cpu().item_factors_, ours.to_cpu().item_factors_,
                               atol=1e-10)


def test_cholesky_choice_is_checked():
    with pytest.raises(ValueError, match="cholesky='magma'"):
        GPUBackend(emulation.EmulatedRuntime(), cholesky="magma")
    assert repr(GPUBackend(emulation.EmulatedRuntime(), cholesky="cusolver",
                           woodbury=False)) == \
        "GPUBackend(device='CUDA host emulation', woodbury=False, cholesky='cusolver')"


def test_emulated_cusolver_checks_its_pointers():
    runtime = emulation.EmulatedRuntime()
    A = runtime.asarray(np.eye(3)[None].repeat(2, 0))
    base = runtime.address(A)
    info = runtime.asarray(np.zeros(2, np.int32))
    runtime.potrf_batched("upper", 3, runtime.asarray([base, base + 72], np.uint64), 3, info,
                          2, np.float64)
    assert not runtime.to_numpy(info).any()
    with pytest.raises(RuntimeError, match="illegal address"):  # one matrix past the end
        runtime.potrf_batched("upper", 3, runtime.asarray([base + 72, base + 144], np.uint64),
                              3, info, 2, np.float64)
    with pytest.raises(TypeError, match="a device array expected"):  # CuPy has no host ones
        runtime.address(np.eye(3))

