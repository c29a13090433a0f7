import os

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als.backends import gpu


def _gpu_reason():
    return gpu.unavailable_reason()


needs_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(_gpu_reason() is not None, reason=f"no GPU backend: {_gpu_reason()}"),
]

BACKENDS = ["cpu", pytest.param("gpu", marks=needs_gpu)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend the conformance suite runs against (GPU ones skip without a GPU)."""
    return request.param


@pytest.fixture(scope="session")
def movielens():
    """MovieLens 100K from $GPU_ALS_DATA or the cache; never downloaded by the tests.

    Skips when absent, except where GPU_ALS_REQUIRE_DATA=1 (CI), where it fails.
    """
    from gpu_als.datasets import load_movielens_100k

    try:
        return load_movielens_100k(download=False)
    except FileNotFoundError as exc:
        if os.environ.get("GPU_ALS_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"MovieLens 100K not available: {exc}")


def random_interactions(n_users, n_items, density, seed, *, negative=False, dtype=np.float32):
    """A random sparse matrix of positive counts (and some negatives if asked)."""
    rng = np.random.default_rng(seed)
    R = sp.random(n_users, n_items, density=density, format="csr", random_state=rng,
                  data_rvs=lambda n: rng.integers(1, 5, n).astype(np.float64))
    if negative:
        R.data[rng.random(R.nnz) < 0.2] *= -1
    return R.astype(dtype)
