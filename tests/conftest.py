"""Fixtures shared by the suite: the backends every conformance test runs against.

* "cpu": the NumPy reference.
* "gpu-emulated": the GPU backend's own Python code with NumPy arrays and ``kernels/*.cu``
  compiled for the host (tests/emulation.py), on tiny inputs, with small split, segment
  and memory limits so that the long-row and chunked paths run too. Needs g++ (C++20).
* "gpu": the real thing, skipped without a CUDA device (marker ``gpu``).

Under CI (``CI=true``) nothing that CI can run may skip: a missing compiler, NVRTC wheel or
MovieLens copy fails instead.
"""

import functools
import os

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als.backends import gpu

from . import emulation

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str):
    """Skip with ``reason``, or fail under CI, where this must not be missing."""
    if IN_CI:
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


_GPU_REASON = gpu.unavailable_reason()
needs_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(_GPU_REASON is not None, reason=f"no GPU backend: {_GPU_REASON}"),
]
_EMULATION_REASON = emulation.unavailable_reason()

#: Shape of the emulated backend: limits small enough that tiny inputs take every path.
EMULATED_SPLIT_LENGTH = 24
EMULATED_SEGMENT_LENGTH = 16
EMULATED_TILE_ROWS = 5  # rows of 6 to 24 entries take several tiles in the fused kernel
EMULATED_FREE_MEMORY = 256 * 1024


@functools.cache
def _build_emulation() -> None:
    emulation.build_all()  # every kernel file, two compilers at a time, cached on disk


def emulated_backend(free_memory: int = EMULATED_FREE_MEMORY, **options):
    """The "gpu-emulated" backend (GPUBackend ``options`` on top of the emulated limits)."""
    if _EMULATION_REASON is not None:
        skip_or_fail(f"kernel emulation unavailable: {_EMULATION_REASON}")
    _build_emulation()
    return gpu.GPUBackend(
        emulation.EmulatedRuntime(free_memory=free_memory),
        **{"split_length": EMULATED_SPLIT_LENGTH, "segment_length": EMULATED_SEGMENT_LENGTH,
           "tile_rows": EMULATED_TILE_ROWS, "woodbury_min_rows": 1, **options},
    )


def _make(name):
    return emulated_backend() if name == "gpu-emulated" else name


@pytest.fixture(params=["cpu", "gpu-emulated", pytest.param("gpu", marks=needs_gpu)])
def backend(request):
    """Every backend of the conformance suite: a name or a Backend instance for ALS."""
    return _make(request.param)


@pytest.fixture(params=["gpu-emulated", pytest.param("gpu", marks=needs_gpu)])
def gpu_backend(request):
    """The GPU backend as a GPUBackend instance: emulated, and the real one where present
    (both with the Woodbury path for every short row, however few: tests' inputs are
    tiny)."""
    from gpu_als.backends import get_backend

    return emulated_backend() if request.param == "gpu-emulated" else \
        get_backend("gpu").with_options(woodbury_min_rows=1)


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=needs_gpu)])
def real_backend(request):
    """The backends for tests that train many iterations or on real data: the emulation
    runs every CUDA thread as a fiber on one core and is kept to the conformance tests'
    tiny fits."""
    return request.param


def backend_name(backend) -> str:
    """What ``ALS.backend_`` says after fitting with ``backend``."""
    return backend if isinstance(backend, str) else backend.name


def fit_beside_cpu(backend, R, settings: dict):
    """ALS(**settings) fitted on ``R`` with ``backend`` (its ``backend_`` checked), its
    factors as NumPy, and the same fit on the CPU backend: ``(model, X, Y, reference)``."""
    from gpu_als import ALS

    model = ALS(backend=backend, **settings).fit(R)
    assert model.backend_ == backend_name(backend)
    return (model, model._backend.to_numpy(model.user_factors_),
            model._backend.to_numpy(model.item_factors_),
            ALS(backend="cpu", **settings).fit(R))


@pytest.fixture(scope="session")
def movielens():
    """MovieLens 100K from $GPU_ALS_DATA or the cache; never downloaded by the tests."""
    from gpu_als.datasets import load_movielens_100k

    try:
        return load_movielens_100k(download=False)
    except FileNotFoundError as exc:
        skip_or_fail(f"MovieLens 100K not available: {exc}")


def cudf_stand_in(frame):
    """A stand-in for a cuDF DataFrame of ``frame``'s rows, as far as gpu-als reads one
    (cuDF is not installed here): from a module named cudf, with ``to_pandas()``, and
    columns that cannot be read as NumPy arrays."""

    class DataFrame:
        __module__ = "cudf.core.dataframe"
        columns = frame.columns

        def to_pandas(self):
            return frame

        def __getitem__(self, name):
            raise AssertionError("read without to_pandas()")

    return DataFrame()


def random_interactions(n_users, n_items, density, seed, *, negative=False, dtype=np.float32):
    """A random sparse matrix of positive counts (and some negatives if asked)."""
    rng = np.random.default_rng(seed)
    R = sp.random(n_users, n_items, density=density, format="csr", random_state=rng,
                  data_rvs=lambda n: rng.integers(1, 5, n).astype(np.float64))
    if negative:
        R.data[rng.random(R.nnz) < 0.2] *= -1
    return R.astype(dtype)


def timed_interactions(n, n_users, n_items, seed):
    """A pandas DataFrame of ``n`` random (user, item, value, when) rows: ids below
    ``n_users`` and ``n_items``, values 1 to 5, times over the 30 days from 2024-01-01."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": rng.integers(0, n_users, n),
                         "item": rng.integers(0, n_items, n),
                         "value": rng.integers(1, 6, n),
                         "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(
                             rng.integers(0, 30 * 86400, n), unit="s")})


class ProgressBars:
    """A stand-in for ``tqdm`` (monkeypatch a module's ``tqdm`` with an instance) that
    keeps every bar made, in ``bars``: its ``total`` (or the iterable's length),
    ``disable``, the sum of its ``update`` calls in ``counted``, its ``postfixes``."""

    def __init__(self):
        self.bars = []

    def __call__(self, iterable=None, *, total=None, disable=None, **kwargs):
        bar = _ProgressBar(iterable, total, disable)
        self.bars.append(bar)
        return bar


class _ProgressBar:
    def __init__(self, iterable, total, disable):
        self.iterable = None if iterable is None else list(iterable)
        self.total = len(self.iterable) if total is None and iterable is not None else total
        self.disable, self.counted, self.postfixes = disable, 0, []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        assert n >= 0, "a progress bar never goes back"
        self.counted += n

    def set_postfix(self, **kwargs):
        self.postfixes.append(kwargs)
