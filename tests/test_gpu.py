"""On a real GPU only (marker ``gpu``): parity with the CPU at every supported size.

The rest of the conformance suite runs here too, through the ``backend`` fixture's "gpu"
parameter; these are the cases too large for the host emulation.
"""

import functools

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.backends import get_backend
from gpu_als.backends.gpu import GPUBackend
from gpu_als.datasets import make_power_law

from .conftest import needs_gpu
from .test_solver import assert_close, edge_case_matrix, run_solve

pytestmark = needs_gpu


def with_long_row(k, length=100_001, seed=0):
    """The edge-case rows plus one row longer than 100,000 entries (split over blocks)."""
    R = edge_case_matrix(k, seed=seed)
    rng = np.random.default_rng(seed)
    n_items = max(R.shape[1], length + 10)
    long_row = sp.csr_matrix((rng.integers(1, 4, length).astype(np.float64),
                              (np.zeros(length, int), rng.permutation(n_items)[:length])),
                             shape=(1, n_items))
    R = sp.hstack([R, sp.csr_matrix((R.shape[0], n_items - R.shape[1]))]).tocsr()
    return sp.vstack([R, long_row]).tocsr()


@functools.cache
def long_row_case(k, feedback):
    """(R, F, solve options, the CPU backend's float64 solution): shared by the tests of
    both exact GPU solvers, as the CPU solve of the long row is the slow part at large k."""
    R = with_long_row(k)
    F = np.random.default_rng(1).standard_normal((R.shape[1], k)) * 0.1
    conf = {"alpha": 2.0} if feedback == "implicit" else {}
    return R, F, conf, run_solve("cpu", R, F, 0.1, feedback, np.float64, **conf)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("k", [1, 7, 32, 64, 100, 128, 256, 512, 1024])
def test_gpu_matches_cpu_at_every_size(k, feedback):
    R, F, conf, cpu = long_row_case(k, feedback)
    assert_close(run_solve("gpu", R, F, 0.1, feedback, np.float64, **conf), cpu, np.float64)
    assert_close(run_solve("gpu", R, F, 0.1, feedback, np.float32, **conf), cpu, np.float32)


@pytest.mark.parametrize("solver", ["cg", "pcg"])
@pytest.mark.parametrize("k", [7, 128, 1024])
def test_gpu_cg_matches_cpu_at_every_size(k, solver):
    """3 CG (or preconditioned CG) steps from the same start on both backends, up to
    k = 1024, with a row of 100,001 entries (its system built over many blocks)."""
    R = with_long_row(k)
    F = np.random.default_rng(1).standard_normal((R.shape[1], k)) * 0.1
    start = np.random.default_rng(2).standard_normal((R.shape[0], k)) * 0.1
    cpu = run_solve("cpu", R, F, 0.1, "implicit", np.float64, start=start, solver=solver,
                    alpha=2.0)
    gpu = run_solve("gpu", R, F, 0.1, "implicit", np.float64, start=start, solver=solver,
                    alpha=2.0)
    # (CG's rounding grows apart with the order of its sums, as in test_solver)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-6 * np.abs(cpu).max())


def test_fit_matches_cpu_from_the_same_start():
    R = make_power_law(3000, 800, 60_000, random_state=2)
    params = dict(factors=48, regularization=0.05, alpha=5.0, iterations=5, random_state=7,
                  show_progress=False, dtype=np.float64)
    gpu = ALS(backend="gpu", **params).fit(R)
    cpu = ALS(backend="cpu", **params).fit(R)
    np.testing.assert_allclose(gpu.loss_history_, cpu.loss_history_, rtol=1e-9)
    np.testing.assert_allclose(get_backend("gpu").to_numpy(gpu.item_factors_),
                               cpu.item_factors_, atol=1e-8)


def test_fit_takes_a_cupy_sparse_matrix():
    import cupyx.scipy.sparse as cusparse

    R = make_power_law(500, 200, 5_000, random_state=3).tocsr()
    params = dict(factors=8, iterations=2, random_state=0, show_progress=False, backend="gpu")
    model = ALS(**params).fit(cusparse.csr_matrix(R))
    np.testing.assert_array_equal(model.to_cpu().user_factors_,
                                  ALS(**params).fit(R).to_cpu().user_factors_)
    ids, _ = model.recommend([0, 1], cusparse.csr_matrix(R[[0, 1]]))
    np.testing.assert_array_equal(ids, model.recommend([0, 1], R[[0, 1]])[0])


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("k", [1, 64, 128, 256])
def test_gpu_cusolver_matches_cpu_with_a_long_row(k, feedback):
    R, F, conf, cpu = long_row_case(k, feedback)
    backend = GPUBackend(cholesky="cusolver")
    assert_close(run_solve(backend, R, F, 0.1, feedback, np.float64, **conf), cpu, np.float64)
    assert_close(run_solve(backend, R, F, 0.1, feedback, np.float32, **conf), cpu, np.float32)


def test_the_device_reports_its_multiprocessor_and_the_fused_tile_follows():
    """CUDA's limits per multiprocessor, read through CuPy, are a real card's; the fused
    kernel's register count comes back from the compiled kernel, and the tile and block
    size chosen for k = 128 keep at least as many warps resident as the largest tile that
    fits in blocks of 128 threads."""
    from gpu_als.backends import _kernels, gpu

    backend = GPUBackend()
    sm = backend.runtime.multiprocessor
    assert sm.shared_memory >= backend.runtime.max_shared_memory > 0
    assert 0 <= sm.reserved_shared_memory <= 4096
    assert sm.registers >= 32768 and sm.threads >= 1024 and sm.blocks >= 16
    float32, index = np.dtype(np.float32), np.dtype(np.int32)
    registers = backend.runtime.registers(
        "solve.cu", _kernels.specialisation("fused_solve", float32, index))
    assert 16 <= registers <= 255
    (tile, threads), largest = backend._fused_shape(128, float32, index), \
        backend._tile(128, 4, True)
    assert gpu.CHOLESKY_PANEL <= tile <= largest and threads in (128, 256)
    assert sm.resident_blocks(threads, registers, gpu._shared_bytes_fused(128, tile, 4)) * \
        threads >= sm.resident_blocks(128, registers, gpu._shared_bytes_fused(
            128, largest, 4)) * 128 >= 128
