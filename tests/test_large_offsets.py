"""Rows whose entries sit beyond position 2^31 of the CSR arrays (nnz >= 2^31: 64-bit
``indptr`` and ``indices``, a size the implicit library's GPU code cannot index).

Such a CSR takes more than 32 GB, but the kernels only ever read ``indptr[row]`` to
``indptr[row + 1]``: the rows of a small matrix are placed at the end of arrays of
2^31 + nnz entries (zero pages the test never touches, on the host; 34 GB of device
memory on a GPU) and must solve exactly as they do at the start.
"""

import numpy as np
import pytest

from gpu_als.backends.gpu import CudaRuntime
from gpu_als.data import WeightedRows, check_user_items, weighted_rows

from .test_solver import edge_case_matrix

OFFSET = 2**31 + 3


def shifted(backend, rows: WeightedRows) -> WeightedRows:
    """``rows`` with every entry moved OFFSET positions further, on ``backend``."""
    xp = backend.xp
    n = len(rows.indices)
    arrays = []
    for a in (rows.indices, rows.weight, rows.target):
        try:
            big = xp.zeros(OFFSET + n, a.dtype)
        except Exception as exc:  # MemoryError on a strict host, CuPy's OutOfMemoryError
            pytest.skip(f"cannot reserve {OFFSET + n} entries: {exc}")
        big[OFFSET:] = backend.asarray(a)
        arrays.append(big)
    indptr = backend.asarray(rows.indptr.astype(np.int64) + OFFSET)
    return WeightedRows(indptr, *arrays, rows.n_cols, rows.loss_constant)


@pytest.mark.parametrize("solver", ["fused", "two-kernel", "cg"])
def test_entries_beyond_position_2_31(gpu_backend, solver):
    k = 6
    backend = gpu_backend.with_options(split_length=0) if solver == "two-kernel" else gpu_backend
    R = edge_case_matrix(k)
    rows = weighted_rows(check_user_items(R, np.float32), feedback="implicit", alpha=2.0)
    rows = rows.map_arrays(lambda a: a.astype(np.int64) if a.dtype.kind == "i" else a)
    F = backend.asarray(np.random.default_rng(0).random((R.shape[1], k)), np.float32)
    on_gpu = isinstance(backend.runtime, CudaRuntime)
    results, losses = [], []
    for placed in (backend.put(rows), shifted(backend, rows)):
        out = backend.asarray(np.full((R.shape[0], k), 0.5), np.float32)
        backend.solve_rows(placed, F, backend.gram(F), regularization=0.1, feedback="implicit",
                           out=out, solver="cg" if solver == "cg" else "cholesky")
        results.append(backend.to_numpy(out))
        if on_gpu:  # the loss kernel walks every entry: 2^31 of them only on a GPU
            losses.append(backend.stored_loss(placed, out, F))
        del placed
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[1], results[0])
    if on_gpu:  # the zero entries before the rows add nothing
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize("solver", ["fused", "two-kernel", "cg"])
def test_factor_rows_beyond_element_2_31(gpu_backend, solver):
    """Fixed factors of n_cols * k > 2^31 values (10M items at k = 256): the rows a
    half-step reads sit beyond element 2^31 of F, named by 32-bit column indices, and must
    solve, and enter the loss, exactly as at the start of a small F. (F is zero pages but
    for those rows; the Woodbury path, which whitens all of F, is left out.)"""
    k = 6
    options = {"split_length": 0} if solver == "two-kernel" else {}
    backend = gpu_backend.with_options(woodbury=False, **options)
    R = edge_case_matrix(k)
    n_items = R.shape[1]
    first = 2**31 // k + 1  # F[first, 0] is element 2^31 + 2 of F
    rows = weighted_rows(check_user_items(R, np.float32), feedback="implicit", alpha=2.0)
    assert rows.indices.dtype == np.int32
    F = np.random.default_rng(0).random((n_items, k)).astype(np.float32)
    try:
        big = backend.xp.zeros((first + n_items, k), np.float32)
    except Exception as exc:  # MemoryError on a strict host, CuPy's OutOfMemoryError
        pytest.skip(f"cannot reserve {(first + n_items) * k} factor values: {exc}")
    big[first:] = backend.asarray(F)
    moved = WeightedRows(rows.indptr, rows.indices + np.int32(first), rows.weight,
                         rows.target, first + n_items, rows.loss_constant)
    FtF = backend.gram(backend.asarray(F))  # the zero rows add nothing
    results, losses = [], []
    for placed, factors in ((backend.put(rows), backend.asarray(F)), (backend.put(moved), big)):
        out = backend.asarray(np.full((R.shape[0], k), 0.5), np.float32)
        backend.solve_rows(placed, factors, FtF, regularization=0.1, feedback="implicit",
                           out=out, solver="cg" if solver == "cg" else "cholesky")
        results.append(backend.to_numpy(out))
        losses.append(backend.stored_loss(placed, out, factors))
    del big
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[1], results[0])
    assert losses[1] == losses[0]
