"""The benchmark: gpu_als against the implicit library, on the CPU and on the GPU.

For every dataset x factors x implementation asked for, one fit in its own subprocess
(so that peak host and device memory belong to that fit alone, and a crash or a timeout
costs one row), recording:

* seconds per iteration: the median over the iterations after the first (which compiles
  kernels and warms caches up; it is reported apart), measured by each library's own
  per-iteration callback, after the device has finished; both libraries run without
  their per-iteration training loss;
* for gpu_als, the time of each phase of one more half-step per side, profiled
  (:meth:`gpu_als.backends.Backend.profile`): the fixed side's Gram ``F^T F``, the shared
  part, each row's weighted Gram build, the solves (or the fused build+solve kernel, or
  the CG steps). On the GPU the fused kernel does build and solve in one pass, so the
  build and solve phases are also timed apart on the two-kernel path (every row through
  kernels/gram.cu then kernels/cholesky.cu); the Gram phase's FLOP/s, nominally
  ``2 * nnz * k^2`` per half-step, come from that. ``gpu_als-gpu-cusolver`` is the same
  exact solver with the systems built by kernels/gram.cu and solved by cuSOLVER's batched
  Cholesky (``GPUBackend(cholesky="cusolver")``), the yardstick for kernels/cholesky.cu
  and the fused kernel;
* peak host memory (the subprocess's max RSS) and, on the GPU, peak device memory in use
  (polled), next to the size of the CSR in both orientations plus the factors;
* the final training loss of every library's factors under one loss function (gpu_als's,
  DESIGN.md section 1), and on MovieLens 100K the Recall@10 of the fitted model (the
  DESIGN.md section 6 split), so that speed is never bought with worse solutions.

Every library solves the same objective from the same initial factors: gpu_als uses the
confidence ``c = 1 + alpha * r``; implicit treats a stored value as the confidence itself
(its CPU fit multiplies values by its own ``alpha`` and its GPU fit, in 0.7.x, ignores
``alpha``), so implicit is given ``1 + alpha * r`` as values and ``alpha=1``.

    python -m gpu_als.benchmark --profile quick     # or: gpu-als bench, make bench-quick
    python -m gpu_als.benchmark --profile full      # every dataset at factors 32..256
    python -m gpu_als.benchmark --datasets ml-100k --factors 64 \
        --implementations gpu_als-cpu-cholesky implicit-cpu-cholesky
    python -m gpu_als.benchmark --matrix clicks.npz  # your own data (scipy.sparse.save_npz)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import glob
import importlib.metadata
import importlib.util
import json
import numbers
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import __version__
from .backends.gpu import CG_LARGE_TILE_BYTES
from .data import check_choice, check_path, check_user_items, described, weighted_rows

ALPHA = 10.0
REGULARIZATION = 0.01
SEED = 0
#: MovieLens 100K: ratings >= 4 are positives, split per user as in DESIGN.md section 6.
ML_THRESHOLD, ML_TEST_FRACTION, ML_SPLIT_SEED = 4, 0.2, 42


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: MovieLens 100K, or :func:`gpu_als.datasets.make_power_law`
    at a fixed shape (Zipf(1) items, lognormal(sigma=1) users, seed 0)."""

    name: str
    users: int
    items: int
    nnz: int
    synthetic: bool = True
    #: Iterations per fit (the first is the warm-up).
    iterations: int = 6
    #: A user's own users x items matrix (a ``scipy.sparse.save_npz`` file), timed as
    #: the synthetic sets are: see :func:`matrix_dataset`.
    file: str | None = None


DATASETS = {d.name: d for d in [
    Dataset("ml-100k", 943, 1682, 44_000, synthetic=False, iterations=15),  # nnz approximate
    Dataset("ml20m-like", 138_000, 27_000, 10_000_000),   # MovieLens 20M positives' shape
    Dataset("lastfm-like", 360_000, 290_000, 17_500_000),  # Last.fm 360K's shape
    Dataset("large", 1_000_000, 100_000, 100_000_000),
]}


@dataclass(frozen=True)
class Implementation:
    library: str  # "gpu_als" or "implicit"
    backend: str  # "cpu" or "gpu"
    solver: str  # "cholesky" (exact), "cg" (3 conjugate-gradient steps), "pcg" (gpu_als's
    # 3 steps of CG preconditioned by Y^T Y + lambda I), "pcg2" (2 of them), "cusolver"
    # (gpu_als's exact solver with cuSOLVER's batched Cholesky: GPUBackend(cholesky=...))
    # or "nnls" (gpu_als's nonnegative factors: another problem, which implicit lacks)
    #: Timed when no implementation is named; the others only when named.
    by_default: bool = True

    @property
    def name(self) -> str:
        return f"{self.library}-{self.backend}-{self.solver}"


IMPLEMENTATIONS = {i.name: i for i in [
    Implementation("gpu_als", "gpu", "cholesky"),
    Implementation("gpu_als", "gpu", "cg"),
    Implementation("gpu_als", "gpu", "pcg"),
    # 2 preconditioned steps ended below 3 of CG on the CPU (power-law sets, k = 64, 128)
    Implementation("gpu_als", "gpu", "pcg2"),
    Implementation("implicit", "gpu", "cg"),  # implicit's GPU ALS has no exact solver
    Implementation("gpu_als", "gpu", "cusolver"),
    Implementation("gpu_als", "cpu", "cholesky"),
    Implementation("gpu_als", "cpu", "cg"),
    Implementation("gpu_als", "cpu", "pcg"),
    Implementation("implicit", "cpu", "cholesky"),
    Implementation("implicit", "cpu", "cg"),
    # opt-in: what nonnegative factors cost against the exact solver on the same data
    Implementation("gpu_als", "gpu", "nnls", by_default=False),
    Implementation("gpu_als", "cpu", "nnls", by_default=False),
]}
#: What is timed when no implementation is named.
DEFAULT_IMPLEMENTATIONS = [name for name, i in IMPLEMENTATIONS.items() if i.by_default]

#: quick: fits in a `make gpu-check` run; full: everything the README's charts show.
#: CPU implementations run only on datasets of at most ``cpu_max_nnz`` interactions.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"datasets": ["ml-100k", "ml20m-like"], "factors": [64, 128],
              "cpu_max_nnz": 1_000_000, "iterations": 5, "timeout": 300},
    "full": {"datasets": list(DATASETS), "factors": [32, 64, 128, 256],
             "cpu_max_nnz": 20_000_000, "iterations": None, "timeout": 3600},
}

#: FP32 lanes per SM by compute capability major (minor where it differs).
_FP32_LANES = {(7, None): 64, (8, 0): 64, (8, None): 128, (9, None): 128, (10, None): 128,
               (12, None): 128}


# ---- what can run here --------------------------------------------------------------

def _preload_cuda_libraries() -> None:
    """Load the CUDA libraries implicit's GPU extension links against (cuBLAS, cuRAND,
    RMM, rapids-logger) from pip's NVIDIA wheels, which are not on the loader's path."""
    for module in ("rapids_logger", "librmm"):
        with contextlib.suppress(Exception):
            __import__(module).load_library()
    for name in ("libcublasLt.so.*", "libcublas.so.*", "libcurand.so.*"):
        for folder in sys.path:
            found = sorted(glob.glob(os.path.join(folder, "nvidia", "**", name),
                                     recursive=True))
            if found:
                with contextlib.suppress(OSError):
                    ctypes.CDLL(found[-1], mode=ctypes.RTLD_GLOBAL)
                break


def unavailable(implementation: Implementation) -> str | None:
    """None when ``implementation`` can run here, else why not."""
    from .backends import gpu

    if implementation.backend == "gpu":
        reason = gpu.unavailable_reason()
        if reason is not None:
            return reason
    if implementation.library == "gpu_als":
        return None
    # Not imported here: `import implicit` imports implicit.gpu, which must come after
    # _preload_cuda_libraries or it disables the GPU for the whole process.
    if importlib.util.find_spec("implicit") is None:
        return "implicit is not installed (pip install gpu-als[bench])"
    if implementation.backend == "cpu":
        return None
    return _implicit_gpu_problem()


@functools.cache
def _implicit_gpu_problem() -> str | None:
    """None when implicit's GPU ALS imports with CUDA, else why not (once per process)."""
    _preload_cuda_libraries()
    # implicit.gpu turns a failure to load its extension into a warning and HAS_CUDA=False:
    # keep the warning, it says why (e.g. an RMM whose symbols do not match).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import implicit.gpu
        except Exception as exc:  # a CUDA library that fails to load raises OSError or others
            return f"implicit.gpu does not import ({exc})"
    if not getattr(implicit.gpu, "HAS_RMM", True):
        return "implicit's GPU ALS needs RMM (rmm-cu13, librmm-cu13, rapids-logger)"
    if not implicit.gpu.HAS_CUDA:
        why = "; ".join(str(w.message) for w in caught) or "no CUDA extension in this build"
        return f"implicit's GPU ALS is disabled: {why}"
    return None


def device_name() -> str | None:
    """The GPU's name, or None where the GPU backend cannot run."""
    from .backends import gpu

    if gpu.unavailable_reason() is not None:
        return None
    return gpu.current_device_name()


def fp32_peak_gflops() -> float | None:
    """The current GPU's FP32 peak (FMA = 2 FLOP) at its maximum clock, or None."""
    from .backends import gpu

    if gpu.unavailable_reason() is not None:
        return None
    import cupy

    device = cupy.cuda.Device()
    # Device.attributes holds CuPy's cudaDevAttr* names only: no compute capability there.
    attributes = dict(device.attributes)
    if not attributes.get("ClockRate"):  # cudaDevAttrClockRate (kHz), else the properties
        attributes["ClockRate"] = cupy.cuda.runtime.getDeviceProperties(device.id).get(
            "clockRate")
    return peak_gflops(device.compute_capability, attributes)


def peak_gflops(compute_capability: str, attributes: dict) -> float | None:
    """FP32 peak in GFLOP/s of a GPU of ``compute_capability`` (CuPy's form: "90" for 9.0)
    with ``attributes`` ``MultiProcessorCount`` and ``ClockRate`` (kHz); None if unknown."""
    major, minor = int(compute_capability[:-1]), int(compute_capability[-1])
    lanes = _FP32_LANES.get((major, minor), _FP32_LANES.get((major, None)))
    clock_khz = attributes.get("ClockRate")
    sms = attributes.get("MultiProcessorCount")
    if lanes is None or not clock_khz or not sms:
        return None
    return sms * lanes * 2 * clock_khz * 1e3 / 1e9


def host_description() -> str:
    """The CPU model and how many CPUs this process may use."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpus: int | None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return f"{model}, {cpus} CPUs"


#: Package name -> the distributions that install it (CuPy: one per CUDA major version).
DISTRIBUTIONS = {"cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy")}


def installed_version(name: str) -> str | None:
    """The installed version of package ``name``, from its metadata (without importing
    it), or None."""
    for distribution in DISTRIBUTIONS.get(name, (name,)):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return None


def versions() -> dict[str, Any]:
    """Versions of gpu_als, Python and the libraries the benchmark uses (and CUDA's)."""
    found: dict[str, Any] = {"gpu_als": __version__, "numpy": np.__version__,
                             "python": platform.python_version()}
    # From the installed metadata: importing implicit here would import implicit.gpu
    # before _preload_cuda_libraries and disable its GPU ALS for the whole process.
    for name in ("implicit", "scipy", "cupy"):
        version = installed_version(name)
        if version is not None:
            found[name] = version
    try:
        if device_name() is not None:
            import cupy

            found["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:  # a device CuPy sees but cannot query: the rest, as `gpu-als info`
        pass  # (which says why) and a benchmark (which fails on the device) need them
    return found


# ---- datasets -------------------------------------------------------------------------

def default_cache() -> Path:
    return Path(os.environ.get("GPU_ALS_BENCH_CACHE",
                               Path.home() / ".cache" / "gpu_als" / "bench"))


def matrix_dataset(path: str | os.PathLike) -> Dataset:
    """A dataset of one's own: a users x items sparse matrix of interaction strengths
    ``r`` (as ``fit`` takes them) saved by ``scipy.sparse.save_npz``, named by its file's
    stem (``clicks.npz``: "clicks"), its shape and entries read from the file."""
    path = Path(path)
    try:
        R = sp.load_npz(path)
    except FileNotFoundError:
        raise ValueError(f"--matrix {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--matrix {path}: a folder, not a file") from None
    except (OSError, ValueError, KeyError, EOFError):
        raise ValueError(f"--matrix {path}: not a sparse matrix saved by "
                         f"scipy.sparse.save_npz (from a DataFrame: "
                         f"save_npz(path, gpu_als.data.from_dataframe(df).matrix))") from None
    if R.ndim != 2 or R.nnz == 0:
        raise ValueError(f"--matrix {path}: a matrix of shape {R.shape} with {R.nnz} "
                         f"stored entries has nothing to fit")
    return Dataset(path.stem, R.shape[0], R.shape[1], int(R.nnz), file=str(path))


def prepare(dataset: Dataset, cache: Path) -> Path | None:
    """Generate a synthetic dataset once (on the GPU when there is one) and keep it as
    .npz for the fits' subprocesses; None for MovieLens, which each subprocess loads; a
    matrix of one's own as its file is."""
    from .datasets import make_power_law

    if dataset.file is not None:
        return Path(dataset.file)
    if not dataset.synthetic:
        from .datasets import load_movielens_100k

        load_movielens_100k()  # here, so that a missing copy skips the dataset once
        return None
    device = "gpu" if device_name() else "cpu"
    path = cache / f"{dataset.name}-seed{SEED}-{device}.npz"
    if not path.exists():
        started = time.perf_counter()
        R = make_power_law(dataset.users, dataset.items, dataset.nnz, random_state=SEED,
                           device=device)
        print(f"  generated {dataset.name} on the {device.upper()} in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        sp.save_npz(partial, R, compressed=False)
        partial.rename(path)
    return path


def _load(path: str | None):
    """(train matrix, test matrix or None): the .npz at ``path``, or MovieLens 100K."""
    if path is not None:
        return sp.load_npz(path).tocsr(), None
    from .datasets import load_movielens_100k
    from .evaluation import binarize, train_test_split

    positives = binarize(load_movielens_100k().ratings, threshold=ML_THRESHOLD)
    return train_test_split(positives, test_fraction=ML_TEST_FRACTION,
                            random_state=ML_SPLIT_SEED)


# ---- one fit (in a subprocess) ----------------------------------------------------------

class _DeviceMemoryMonitor:
    """Peak device memory in use while the block runs, by polling cudaMemGetInfo."""

    def __init__(self, interval: float = 0.002):
        import cupy

        self._runtime = cupy.cuda.runtime
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.lowest = self._free()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _free(self) -> int:
        return int(self._runtime.memGetInfo()[0])

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.lowest = min(self.lowest, self._free())
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.lowest = min(self.lowest, self._free())

    @property
    def peak_bytes(self) -> int:
        return self.baseline - self.lowest


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _per_iteration(stamps: list[float]) -> tuple[float, float]:
    """(median seconds of the iterations after the first, seconds of the first)."""
    steps = np.diff(stamps)
    return float(np.median(steps[1:] if len(steps) > 1 else steps)), float(steps[0])


#: ALS's ``solver`` and ``cg_steps`` for each gpu_als implementation's solver.
GPU_ALS_SOLVERS = {"cholesky": ("cholesky", 3), "cg": ("cg", 3), "pcg": ("pcg", 3),
                   "pcg2": ("pcg", 2), "cusolver": ("cholesky", 3), "nnls": ("nnls", 3)}
#: The implementations' solvers that take CG steps.
CG_SOLVERS = ("cg", "pcg", "pcg2")


def _gpu_als_solver(spec: dict) -> tuple[Any, str, int]:
    """The backend, ALS ``solver`` and ``cg_steps`` of a gpu_als implementation
    ("cusolver": the exact solver on a GPU backend that solves with cuSOLVER, on the same
    device)."""
    from .backends import get_backend
    from .backends.gpu import GPUBackend

    backend = get_backend(spec["backend"])
    solver, steps = GPU_ALS_SOLVERS[spec["solver"]]
    if spec["solver"] != "cusolver":
        return backend, solver, steps
    if not isinstance(backend, GPUBackend):
        raise ValueError(f"the cusolver implementation needs the GPU backend, not {backend}")
    return backend.with_options(cholesky="cusolver"), solver, steps


def _fit_gpu_als(R, spec: dict) -> dict:
    from ._training import Training
    from .model import ALS

    backend, solver, steps = _gpu_als_solver(spec)
    # Like implicit here, without the per-iteration loss (every library's loss is
    # computed afterwards by shared_loss).
    model = ALS(factors=spec["factors"], regularization=REGULARIZATION, alpha=ALPHA,
                solver=solver, cg_steps=steps, backend=backend, random_state=SEED,
                show_progress=False, calculate_training_loss=False)
    started = time.perf_counter()
    training = Training(model, R)
    backend.synchronize()
    setup = time.perf_counter() - started
    stamps = [0.0]

    def stamp(*args):
        backend.synchronize()  # the iteration's kernels have finished
        stamps.append(time.perf_counter() - start)

    start = time.perf_counter()
    training.run(spec["iterations"], callback=stamp)
    return {"setup_seconds": setup, "stamps": stamps, "training": training,
            "X": backend.to_numpy(training.X), "Y": backend.to_numpy(training.Y)}


#: Fused-kernel tiles (factor rows in shared memory) profiled besides the default: a
#: smaller tile leaves room for more blocks per multiprocessor at large k.
PROFILED_TILES = (8, 16)
#: Longest rows of the Woodbury path, as fractions of k, profiled besides the default 1/2.
PROFILED_WOODBURY = (0.25, 1.0)
#: Threads per block of the fused kernel, each profiled (the default picks one by occupancy).
PROFILED_FUSED_THREADS = (128, 256)
#: A split_length no row reaches: every row on the one-block path.
ONE_BLOCK = 2**62
#: Sizes of the CG solver's tile by bytes, each profiled but the one run (0: tile_rows rows).
PROFILED_CG_TILE_BYTES = (0, CG_LARGE_TILE_BYTES)


def _profile_phases(training, spec: dict) -> dict:
    """The phases of one more half-step per side (into scratch copies of the factors):
    ``{"phases": {"user": {...}, "item": {...}}}``; for the GPU's exact solver also
    ``"phases_two_kernel"`` (every row on the two-kernel path), ``"phases_no_woodbury"``
    (short rows on the fused kernel too), ``"phases_tile<t>"`` (the fused kernel with
    ``t`` tile rows, for each of PROFILED_TILES), ``"phases_woodbury<p>"`` (rows of up
    to p % of k on the Woodbury path, for each of PROFILED_WOODBURY),
    ``"phases_threads<n>"`` (the fused kernel in blocks of n threads, for each of
    PROFILED_FUSED_THREADS) and ``"phases_plain_copies"`` (the tiles loaded with plain
    copies instead of cp.async): the data for choosing between the paths, the tile size,
    the Woodbury bound, the fused kernel's block size and the way tiles are loaded. For
    the GPU's CG solvers (CG_SOLVERS), ``"phases_cg_one_block"``: every row's CG steps in
    one block, the long rows' too (not spread over their segments), and
    ``"phases_cg_tile_bytes<b>"``: the tile sized by ``cg_tile_bytes=b``, for each of
    PROFILED_CG_TILE_BYTES but the one run.

    A setting whose half-steps fail (a kernel that does not compile or launch on this
    device, say) gets ``{"error": "..."}`` instead of its phases, and the others are still
    timed: one variant's failure costs its own column, not the row."""
    from .backends.gpu import GPUBackend

    backend = training.backend
    backends = {"phases": backend}
    if isinstance(backend, GPUBackend) and spec["solver"] == "cholesky":
        backends["phases_two_kernel"] = backend.with_options(split_length=0, woodbury=False)
        backends["phases_no_woodbury"] = backend.with_options(woodbury=False)
        for tile in PROFILED_TILES:
            if tile < backend.tile_rows:
                backends[f"phases_tile{tile}"] = backend.with_options(tile_rows=tile)
        for fraction in PROFILED_WOODBURY:
            backends[f"phases_woodbury{round(fraction * 100)}"] = \
                backend.with_options(woodbury_fraction=fraction)
        for threads in PROFILED_FUSED_THREADS:
            backends[f"phases_threads{threads}"] = backend.with_options(fused_threads=threads)
        if backend.async_copies:
            backends["phases_plain_copies"] = backend.with_options(async_copies=False)
    if isinstance(backend, GPUBackend) and spec["solver"] in CG_SOLVERS:
        # every row in one cg_solve block, as before the long rows were spread over blocks
        backends["phases_cg_one_block"] = backend.with_options(split_length=ONE_BLOCK)
        for size in PROFILED_CG_TILE_BYTES:
            if size != backend.cg_tile_bytes:
                backends[f"phases_cg_tile_bytes{size}"] = \
                    backend.with_options(cg_tile_bytes=size)
    result = {}
    for key, b in backends.items():
        try:
            result[key] = _half_step_phases(training, b, compile_first=getattr(
                b, "async_copies", None) != getattr(backend, "async_copies", None))
        except Exception as error:  # CuPy's CUDA errors have no common base but Exception
            result[key] = {"error": f"{type(error).__name__}: {error}"}
            print(f"profiling {key} failed: {result[key]['error']}", file=sys.stderr,
                  flush=True)
    return result


def timed_phases(row: dict, key: str = "phases") -> dict | None:
    """A row's half-step phases under ``key`` (``{"user": {phase: seconds}, "item":
    ...}``), or None when they were not profiled or their profile failed."""
    phases = row.get(key)
    return None if phases is None or "error" in phases else phases


def _half_step_phases(training, b, compile_first: bool) -> dict:
    """``{"user": {phase: seconds}, "item": {...}}``: one half-step per side on backend
    ``b`` (into scratch copies of the factors), after a half-step that compiles its
    kernels when ``compile_first`` (kernel binaries built at first use are not timed)."""
    arguments = dict(regularization=REGULARIZATION, feedback="implicit",
                     solver=training.p["solver"], cg_steps=training.p["cg_steps"])
    phases = {}
    for side, rows, fixed, solved in (("user", training.Cu, training.Y, training.X),
                                      ("item", training.Ci, training.X, training.Y)):
        b.synchronize()
        mark = time.perf_counter()
        FtF = b.gram(fixed)
        b.synchronize()
        fixed_gram = time.perf_counter() - mark
        if compile_first:
            b.solve_rows(rows, fixed, FtF, out=solved.copy(), **arguments)
        with b.profile() as timer:
            b.solve_rows(rows, fixed, FtF, out=solved.copy(), **arguments)
        phases[side] = {"fixed_gram": fixed_gram, **timer.seconds}
    return phases


def _initial_factors(shape, factors: int):
    """gpu_als's initial factors for SEED (host, float32): every library starts there."""
    from .backends import CPUBackend
    from .model import ALS

    model = ALS(factors=factors, random_state=SEED)
    return model._initial_factors(CPUBackend(), shape, factors, np.dtype(np.float32))


def _fit_implicit(R, spec: dict) -> dict:
    k, iterations = spec["factors"], spec["iterations"]
    X0, Y0 = _initial_factors(R.shape, k)
    C = R.astype(np.float32).tocsr(copy=True)
    C.data = 1 + ALPHA * C.data  # implicit's confidence is the stored value
    stamps = [0.0]
    if spec["backend"] == "cpu":
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings():  # `import implicit` also tries its GPU extension
            warnings.simplefilter("ignore")
            from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):  # implicit asks for single-threaded BLAS
            model = AlternatingLeastSquares(
                factors=k, regularization=REGULARIZATION, alpha=1.0, iterations=iterations,
                use_cg=spec["solver"] == "cg", calculate_training_loss=False,
                random_state=SEED)
            model.user_factors, model.item_factors = X0.copy(), Y0.copy()
            start = time.perf_counter()
            model.fit(C, show_progress=False,
                      callback=lambda *a: stamps.append(time.perf_counter() - start))
        X, Y = model.user_factors, model.item_factors
    else:
        _preload_cuda_libraries()
        import cupy
        import implicit.gpu
        from implicit.gpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(factors=k, regularization=REGULARIZATION, alpha=1.0,
                                        iterations=iterations, calculate_training_loss=False,
                                        random_state=SEED)
        # Matrix copies rows * cols floats from the first element: C order, float32.
        model.user_factors = implicit.gpu.Matrix(np.ascontiguousarray(X0, np.float32))
        model.item_factors = implicit.gpu.Matrix(np.ascontiguousarray(Y0, np.float32))

        def stamp(*args):
            cupy.cuda.runtime.deviceSynchronize()  # the iteration's kernels have finished
            stamps.append(time.perf_counter() - start)

        start = time.perf_counter()
        model.fit(C, show_progress=False, callback=stamp)
        X, Y = model.user_factors.to_numpy(), model.item_factors.to_numpy()
    return {"stamps": stamps, "X": np.asarray(X), "Y": np.asarray(Y)}


def shared_loss(R, X: np.ndarray, Y: np.ndarray) -> float:
    """gpu_als's implicit training loss (alpha, regularization of this benchmark) of
    factors ``X``, ``Y`` on ``R``, on the GPU when there is one."""
    from .backends import get_backend

    backend = get_backend("auto")
    rows = backend.put(weighted_rows(check_user_items(R, np.float32), feedback="implicit",
                                     alpha=ALPHA))
    Xb = backend.asarray(X, np.float32)
    Yb = backend.asarray(Y, np.float32)
    return backend.loss(rows, Xb, Yb, backend.gram(Yb), regularization=REGULARIZATION,
                        feedback="implicit")


def _recall_at_10(X, Y, train, test) -> float:
    from .backends import CPUBackend
    from .evaluation import ranking_metrics
    from .model import ALS

    model = ALS(factors=X.shape[1], backend="cpu", show_progress=False)
    model._set_fitted(CPUBackend(), X, Y, [])
    return ranking_metrics(model, train, test, K=10, show_progress=False)["recall"]


#: What :func:`run_one` reads of its ``spec`` (given by :func:`run` to ``--child``).
CHILD_SPEC_KEYS = ("dataset", "path", "factors", "library", "backend", "solver", "iterations")
#: The longest ``--timeout``: ``subprocess.run`` waits at most 2^31 ms.
MAX_TIMEOUT = 2_000_000


def run_one(spec: dict) -> dict:
    """One fit as ``spec`` says; the benchmark row (run in a subprocess by :func:`run`)."""
    R, test = _load(spec["path"])
    k = spec["factors"]
    row = {"dataset": spec["dataset"], "users": R.shape[0], "items": R.shape[1], "nnz": R.nnz,
           "factors": k, "library": spec["library"], "backend": spec["backend"],
           "solver": spec["solver"], "iterations": spec["iterations"]}
    csr_bytes = R.data.nbytes + R.indices.nbytes + R.indptr.nbytes
    row["csr_and_factors_bytes"] = 2 * csr_bytes + (R.shape[0] + R.shape[1]) * k * 4
    row["host_before_fit_bytes"] = _max_rss_bytes()
    fit = _fit_gpu_als if spec["library"] == "gpu_als" else _fit_implicit
    monitor = _DeviceMemoryMonitor() if spec["backend"] == "gpu" else contextlib.nullcontext()
    with monitor:
        result = fit(R, spec)
    row["host_peak_bytes"] = _max_rss_bytes()
    row["device_peak_bytes"] = monitor.peak_bytes \
        if isinstance(monitor, _DeviceMemoryMonitor) else None
    row["seconds_per_iteration"], row["first_iteration_seconds"] = \
        _per_iteration(result["stamps"])
    row["setup_seconds"] = result.get("setup_seconds")
    row["final_loss"] = shared_loss(R, result["X"], result["Y"])
    if test is not None:
        row["recall_at_10"] = _recall_at_10(result["X"], result["Y"], R, test)
    if "training" in result:  # after the memory readings (the profile's buffers are extra)
        # and the fit's measures, which a variant that breaks the device cannot take along
        row.update(_profile_phases(result.pop("training"), spec))
    # The Gram phase: nominally 2 nnz k^2 FLOP per half-step, timed on the path that
    # builds the systems apart from the solves (CG builds none).
    phases = timed_phases(row, "phases_two_kernel") or timed_phases(row, "phases")
    if phases and all("gram_build" in side for side in phases.values()):
        seconds = sum(side["gram_build"] for side in phases.values())
        row["gram_seconds"] = seconds
        row["gram_gflops"] = 2 * 2 * R.nnz * k * k / seconds / 1e9 if seconds > 0 else None
    if spec["backend"] == "gpu":
        row["fp32_peak_gflops"] = fp32_peak_gflops()
    return row


# ---- the whole benchmark --------------------------------------------------------------

def _run_subprocess(spec: dict, timeout: float) -> dict:
    command = [sys.executable, "-m", "gpu_als.benchmark", "--child", json.dumps(spec)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # runs from a source checkout too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    failed = {key: spec[key] for key in ("dataset", "factors", "library", "backend", "solver")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    output = (done.stderr or done.stdout).strip()
    tail = output.splitlines()[-3:]
    return {**failed, "error": f"exit code {done.returncode}: {' | '.join(tail)}",
            "output_tail": output[-3000:]}  # the traceback, to fix it from the result


def compare(rows: list[dict]) -> list[dict]:
    """Each gpu_als row against each implicit row of the same dataset, factors and device:
    ``speedup`` = implicit's seconds per iteration / gpu_als's (> 1: gpu_als is faster),
    ``loss_ratio`` = gpu_als's final loss / implicit's (<= 1: as good or better)."""
    ok = [r for r in rows if "error" not in r]
    comparisons = []
    for theirs in (r for r in ok if r["library"] == "implicit"):
        for ours in ok:
            if ours["library"] == "gpu_als" and all(
                    ours[key] == theirs[key] for key in ("dataset", "factors", "backend")):
                comparisons.append({
                    "dataset": ours["dataset"], "factors": ours["factors"],
                    "backend": ours["backend"], "gpu_als": ours["solver"],
                    "implicit": theirs["solver"],
                    "speedup": theirs["seconds_per_iteration"] / ours["seconds_per_iteration"],
                    "loss_ratio": ours["final_loss"] / theirs["final_loss"],
                })
    return comparisons


def _format_row(row: dict) -> str:
    label = f"{row['dataset']:>12} k={row['factors']:<4} " \
            f"{row['library']}-{row['backend']}-{row['solver']:<9}"
    if "error" in row:
        return f"{label} failed: {row['error']}"
    text = f"{label} {row['seconds_per_iteration'] * 1e3:10.2f} ms/it  " \
           f"loss/nnz {row['final_loss'] / row['nnz']:.5f}"
    if "recall_at_10" in row:
        text += f"  Recall@10 {row['recall_at_10']:.4f}"
    if row.get("gram_gflops"):
        text += f"  Gram {row['gram_gflops']:.0f} GFLOP/s"
    if row.get("device_peak_bytes") is not None:
        text += f"  device peak {row['device_peak_bytes'] / 2**20:.0f} MiB"
    return text


def _names(option: str, value: Any, example: str) -> list[str] | None:
    """``value``, a list (or other iterable) of str given as ``option``, as a list; None
    stays None. One str is refused: it would be taken letter by letter."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{option} must be a list, such as {example}, got {described(value)}")
    value = list(value)
    if not value:
        raise ValueError(f"{option}=[]: give at least one, or None for the profile's")
    return value


def _integer(option: str, value: Any, list_example: str | None = None) -> int:
    """``value`` as an int; a ``TypeError`` naming ``option`` for anything else (a bool, a
    float), an item of a list where ``list_example`` shows one."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if list_example is None:
            raise TypeError(f"{option} must be an integer, got {described(value)}")
        raise TypeError(f"{option} must be a list of integers, such as {list_example}, got "
                        f"an item {described(value)}")
    return int(value)


def check_run_options(profile: Any, *, datasets: Any = None, factors: Any = None,
                      implementations: Any = None, iterations: Any = None,
                      cpu_max_nnz: Any = None, timeout: Any = None, matrices: Any = None,
                      option: Callable[[str], str] = str) -> None:
    """Refuse, before anything runs, what :func:`run` cannot take, with a ``ValueError`` or
    ``TypeError`` naming the parameter as ``option(name)`` spells it (``"--cpu-max-nnz"``
    for the command line)."""
    check_choice(option("profile"), profile, tuple(PROFILES))
    for name, value, example in (("datasets", datasets, "['ml-100k']"),
                                 ("implementations", implementations,
                                  "['gpu_als-gpu-cholesky']"),
                                 ("matrices", matrices, "['clicks.npz']")):
        for item in _names(option(name), value, example) or []:
            if name == "matrices":
                check_path(item)
            elif not isinstance(item, str):
                raise TypeError(f"{option(name)} must be a list of names, such as {example}, "
                                f"got an item {described(item)}")
    for k in _names(option("factors"), factors, "[64, 128]") or []:
        if _integer(option("factors"), k, "[64, 128]") < 1:
            raise ValueError(f"{option('factors')} must be >= 1, got {k}")
    if iterations is not None and _integer(option("iterations"), iterations) < 2:
        raise ValueError(f"{option('iterations')} must be >= 2 (the first is a warm-up), "
                         f"got {iterations}")
    if cpu_max_nnz is not None and _integer(option("cpu_max_nnz"), cpu_max_nnz) < 1:
        raise ValueError(f"{option('cpu_max_nnz')} must be >= 1, got {cpu_max_nnz}")
    if timeout is not None:
        if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"{option('timeout')} must be a number of seconds, got "
                            f"{described(timeout)}")
        seconds = float(timeout)
        if not seconds > 0:  # (NaN too)
            raise ValueError(f"{option('timeout')} must be > 0 seconds, got {seconds:g}")
        if seconds > MAX_TIMEOUT:  # (subprocess's limit)
            raise ValueError(f"{option('timeout')} must be at most {MAX_TIMEOUT:,} seconds "
                             f"(23 days), got {seconds:g}")


def run(profile: str = "quick", *, datasets=None, factors=None, implementations=None,
        iterations=None, cpu_max_nnz=None, timeout=None,
        cache: str | os.PathLike | None = None, on_row=None, matrices=None) -> dict:
    """Run the benchmark; the result as written to JSON (see :func:`main`).

    ``cache``: the folder the synthetic sets are generated into once (default
    :func:`default_cache`). ``on_row(row)``, when given, is called with each row as soon
    as it is measured.
    ``matrices``: paths of one's own users x items matrices (:func:`matrix_dataset`),
    timed after ``datasets``, or alone where ``datasets`` is not given.
    """
    check_run_options(profile, datasets=datasets, factors=factors,
                      implementations=implementations, iterations=iterations,
                      cpu_max_nnz=cpu_max_nnz, timeout=timeout, matrices=matrices)
    if on_row is not None and not callable(on_row):
        raise TypeError(f"on_row must be a function of the row, got {described(on_row)}")
    settings = PROFILES[profile]
    own = [matrix_dataset(path) for path in matrices or []]
    names = datasets or ([] if own else settings["datasets"])
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown}: expected some of {list(DATASETS)}")
    taken = set(DATASETS)
    for dataset in own:  # a row names its dataset: one name, one dataset
        if dataset.name in taken:
            raise ValueError(f"--matrix {dataset.file}: its name {dataset.name!r} is taken "
                             f"(by a dataset of the benchmark's or another --matrix): "
                             f"rename the file")
        taken.add(dataset.name)
    chosen = implementations or DEFAULT_IMPLEMENTATIONS
    unknown = [n for n in chosen if n not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown implementations {unknown}: expected some of {list(IMPLEMENTATIONS)}")
    factor_list = factors or settings["factors"]
    cpu_max_nnz = settings["cpu_max_nnz"] if cpu_max_nnz is None else cpu_max_nnz
    timeout = timeout or settings["timeout"]
    if cache is not None and not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be the path of a folder, got {described(cache)}")
    cache = default_cache() if cache is None else Path(cache).expanduser()  # (a str: its
    # synthetic sets failed in Python's words, "unsupported operand type(s) for /")
    commit = _commit()  # of the code that runs (the fits import it as they start)

    runnable, reasons = [], []
    for name in chosen:
        reason = unavailable(IMPLEMENTATIONS[name])
        if reason is None:
            runnable.append(IMPLEMENTATIONS[name])
        else:
            reasons.append(f"{name}: {reason}")
            print(f"skipping {reasons[-1]}", flush=True)
    if not runnable:  # else an empty result, and each dataset "skipped" for its size
        raise ValueError(f"none of the implementations asked for can run here "
                         f"({'; '.join(reasons)})")
    rows, skipped = [], []
    for dataset in [*(DATASETS[n] for n in names), *own]:
        here = [i for i in runnable if i.backend == "gpu" or dataset.nnz <= cpu_max_nnz]
        try:
            if not here:
                limit = "1 interaction" if cpu_max_nnz == 1 else f"{cpu_max_nnz:,} interactions"
                raise ValueError(f"nothing to run on it here (CPU implementations run up "
                                 f"to {limit})")
            path = prepare(dataset, cache)
        except (OSError, ValueError) as exc:
            skipped.append(f"{dataset.name}: {exc}")
            print(f"skipping {skipped[-1]}", flush=True)
            continue
        for k in factor_list:
            for implementation in here:
                spec = {"dataset": dataset.name, "path": str(path) if path else None,
                        "factors": k, "library": implementation.library,
                        "backend": implementation.backend, "solver": implementation.solver,
                        "iterations": _iterations(dataset, settings, iterations)}
                row = _run_subprocess(spec, timeout)
                rows.append(row)
                print(_format_row(row), flush=True)
                if on_row is not None:
                    on_row(row)
    if not rows:  # else a result file without a row, and exit status 0
        raise ValueError(f"nothing was measured: {'; '.join(skipped)}")
    return result_document(profile, rows, commit)


def result_document(profile: str, rows: list[dict], commit: str | None = None) -> dict:
    """The benchmark's JSON document for ``rows``: where and with what they were measured,
    the rows, and the comparisons between libraries."""
    return {
        "commit": commit or _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name() or host_description(),
        "host": host_description(),
        "versions": versions(),
        "profile": profile,
        "alpha": ALPHA, "regularization": REGULARIZATION, "seed": SEED,
        "benchmarks": rows,
        "comparisons": compare(rows),
    }


def _iterations(dataset: Dataset, settings: dict, asked: int | None) -> int:
    """MovieLens runs its own count (its Recall@10 needs a converged model); the synthetic
    sets what was asked, else the profile's, else their own."""
    if not dataset.synthetic:
        return dataset.iterations
    return asked or settings["iterations"] or dataset.iterations


def _commit() -> str:
    if os.environ.get("GPU_ALS_COMMIT"):
        return os.environ["GPU_ALS_COMMIT"]
    with contextlib.suppress(OSError):
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent)
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def print_comparisons(comparisons: list[dict]) -> None:
    if not comparisons:
        return
    print("\nimplicit's s/iteration / gpu_als's (> 1: gpu_als faster); "
          "final loss gpu_als / implicit (<= 1: as good or better):")
    for c in comparisons:
        print(f"  {c['dataset']:>12} k={c['factors']:<4} {c['backend']}: gpu_als "
              f"{c['gpu_als']:<8} vs implicit {c['implicit']:<8} {c['speedup']:8.2f}x   "
              f"loss {c['loss_ratio']:.4f}")


#: What every result document has (``result_document``'s, ``make gpu-check``'s), what
#: every row has, and what a row that measured a fit (no ``error``) has too.
RESULT_KEYS = ("device", "commit", "date", "benchmarks")
ROW_KEYS = ("dataset", "factors", "library", "backend", "solver")
MEASURED_KEYS = ("users", "items", "nnz", "seconds_per_iteration", "final_loss")


def read_result(path: str | Path) -> dict:
    """The result document in the JSON file at ``path`` (of ``gpu-als bench`` or ``make
    gpu-check``), checked as :func:`check_result` checks it; a ``ValueError`` naming the
    file for one that is not JSON."""
    path = Path(check_path(path))
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON file ({exc})") from None
    check_result(document, str(path))
    return document


def check_result(document: Any, name: str = "result") -> None:
    """A ``ValueError`` naming ``name`` and what it lacks, unless ``document`` is a result
    document whose rows the tables, the charts and :func:`merge_results` can read."""
    what = "is not a benchmark result (gpu-als bench, make gpu-check)"
    if not isinstance(document, dict):
        raise ValueError(f"{name} {what}: it holds a JSON {type(document).__name__}, not an "
                         f"object")
    if missing := [key for key in RESULT_KEYS if key not in document]:
        raise ValueError(f"{name} {what}: it has no {', '.join(map(repr, missing))}")
    rows = document["benchmarks"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{name}: its 'benchmarks' must be a list of rows (objects)")
    for i, row in enumerate(rows):
        needed = ROW_KEYS if "error" in row else ROW_KEYS + MEASURED_KEYS
        if missing := [key for key in needed if key not in row]:
            raise ValueError(f"{name}: row {i} ({row.get('dataset', '?')}) has no "
                             f"{', '.join(map(repr, missing))}")
        not_numbers = [] if "error" in row else [
            f"{key}={row[key]!r}" for key in MEASURED_KEYS
            if isinstance(row[key], bool) or not isinstance(row[key], (int, float))]
        if not_numbers:
            raise ValueError(f"{name}: row {i} ({row['dataset']}) holds a measure that is "
                             f"not a number: {', '.join(not_numbers)}")


def merge_results(documents: list[dict]) -> list[dict]:
    """Result documents of several runs (a benchmark run in pieces), one per device.

    Each has the rows of all its device's runs; where two runs have a row for the same
    dataset, factors and implementation, the row of the later run (by ``date``, whatever
    the order of the arguments: file names sort by commit) replaces the earlier one. Each
    row gets its run's ``commit`` (unless it has one); the document's ``commit`` joins the
    runs' commits in date order ("8737698 + b3fbc04"), ``date`` is the latest, and the
    comparisons are recomputed from the merged rows.
    """
    merged: dict[str, dict] = {}
    for document in sorted(documents, key=lambda d: d["date"]):
        into = merged.setdefault(document["device"], {**document, "benchmarks": {}})
        into["benchmarks"].update(
            ((r["dataset"], r["factors"], r["library"], r["backend"], r["solver"]),
             {"commit": document["commit"], **r})
            for r in document["benchmarks"])
        if document["commit"] not in into["commit"].split(" + "):
            into["commit"] += f" + {document['commit']}"
        into["date"] = max(into["date"], document["date"])
    for document in merged.values():
        document["benchmarks"] = list(document["benchmarks"].values())
        document["comparisons"] = compare(document["benchmarks"])
    return list(merged.values())


def markdown_tables(result: dict) -> str:
    """The result as Markdown tables: every fit; the GPU exact solver's half-steps with
    each profiled setting, and the GPU CG solvers' with every row in one block and each
    tile (where profiled); each gpu_als fit's half-steps phase by phase; gpu_als against
    implicit."""
    def mib(value):
        return "" if value is None else f"{value / 2**20:,.0f}"

    lines = [f"{result['device']}, commit {result['commit']}, {result['date'][:10]}", "",
             "| dataset | k | implementation | ms/iteration | Gram GFLOP/s | host peak MiB "
             "| device peak MiB | loss/nnz | Recall@10 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["benchmarks"]:
        name = f"{r['library']}-{r['backend']}-{r['solver']}"
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['factors']} | {name} | failed: "
                         f"{r['error'][:60]} | | | | | |")
            continue
        gflops = f"{r['gram_gflops']:,.1f}" if r.get("gram_gflops") else ""
        recall = f"{r['recall_at_10']:.4f}" if "recall_at_10" in r else ""
        lines.append(
            f"| {r['dataset']} | {r['factors']} | {name} | "
            f"{r['seconds_per_iteration'] * 1e3:,.1f} | {gflops} | "
            f"{mib(r.get('host_peak_bytes'))} | {mib(r.get('device_peak_bytes'))} | "
            f"{r['final_loss'] / r['nnz']:.5f} | {recall} |")
    paths = [r for r in result["benchmarks"] if "phases_two_kernel" in r]
    if paths:  # the GPU exact solver's half-steps on each path and tile: ms, user + item
        tiles = [f"phases_tile{t}" for t in PROFILED_TILES]
        bounds = [f"phases_woodbury{round(f * 100)}" for f in PROFILED_WOODBURY]
        blocks = [f"phases_threads{n}" for n in PROFILED_FUSED_THREADS]
        lines += ["", "| dataset | k | half-steps, ms (user + item): as run | "
                  "no Woodbury | " + " | ".join(f"fused, {t[len('phases_'):]}" for t in tiles)
                  + " | " + " | ".join(f"Woodbury to {round(f * 100)}% of k"
                                       for f in PROFILED_WOODBURY)
                  + " | " + " | ".join(f"fused, {n} threads" for n in PROFILED_FUSED_THREADS)
                  + " | plain copies | two-kernel |",
                  "|---|---:|---:|---:|" + "---:|" * (len(tiles) + len(bounds) + len(blocks)
                                                      + 2)]
        for r in paths:
            lines.append(f"| {r['dataset']} | {r['factors']} | " + " | ".join(
                _half_steps_cell(r, key) for key in (
                    "phases", "phases_no_woodbury", *tiles, *bounds, *blocks,
                    "phases_plain_copies", "phases_two_kernel")) + " |")
    cg = [r for r in result["benchmarks"] if "phases_cg_one_block" in r]
    if cg:  # the GPU's CG solvers' half-steps as run, every row in one block, each tile
        sizes = [f"phases_cg_tile_bytes{b}" for b in PROFILED_CG_TILE_BYTES]
        lines += ["", "| dataset | k | solver | CG half-steps, ms (user + item): as run | "
                  "every row in one block | " + " | ".join(
                      "tiles of tile_rows" if b == 0 else f"tiles of {b // 1024} KiB"
                      for b in PROFILED_CG_TILE_BYTES) + " |",
                  "|---|---:|---|---:|---:|" + "---:|" * len(sizes)]
        lines += [f"| {r['dataset']} | {r['factors']} | {r['solver']} | " + " | ".join(
            _half_steps_cell(r, key) for key in ("phases", "phases_cg_one_block", *sizes))
            + " |" for r in cg]
    lines += _phase_table(result["benchmarks"])
    if result.get("comparisons"):
        lines += ["", "| dataset | k | device | gpu_als | implicit | speed-up | loss ratio |",
                  "|---|---:|---|---|---|---:|---:|"]
        for c in result["comparisons"]:
            lines.append(f"| {c['dataset']} | {c['factors']} | {c['backend']} | "
                         f"{c['gpu_als']} | {c['implicit']} | {c['speedup']:.2f}x | "
                         f"{c['loss_ratio']:.4f} |")
    return "\n".join(lines) + "\n"


#: The phases of a half-step (Backend.profile's names, and F^T F timed by the benchmark)
#: in the order the phase table shows them, with their column headings.
PHASE_COLUMNS: dict[str, str] = {
    "fixed_gram": "F^T F", "shared": "shared", "woodbury": "Woodbury", "fused": "fused",
    "gram_build": "Gram build", "solve": "solve", "cg": "CG", "cg_long": "CG, long rows"}


def _half_steps_cell(row: dict, key: str) -> str:
    """The half-steps table's cell: the milliseconds of both half-steps' solves (F^T F
    left out) with the setting ``key``; blank when not profiled, "failed" when it failed."""
    if key not in row:
        return ""
    phases = timed_phases(row, key)
    if phases is None:
        return "failed"
    seconds = sum(sum(v for name, v in side.items() if name != "fixed_gram")
                  for side in phases.values())
    return f"{seconds * 1e3:,.1f}"


def _phase_table(rows: list[dict]) -> list[str]:
    """Markdown lines of each gpu_als fit's half-steps as run, phase by phase (ms), one
    line per side; none when no row was profiled."""
    profiled = [(r, phases) for r in rows
                if "error" not in r and (phases := timed_phases(r)) is not None]
    if not profiled:
        return []
    found: set[str] = {name for _, phases in profiled
                       for side in phases.values() for name in side}
    names = [name for name in PHASE_COLUMNS if name in found] + \
        sorted(found - set(PHASE_COLUMNS))  # a phase named since, under its own name
    lines = ["", "| dataset | k | implementation | half-step | "
             + " | ".join(PHASE_COLUMNS.get(name, name) for name in names) + " | total |",
             "|---|---:|---|---|" + "---:|" * (len(names) + 1)]
    for r, phases in profiled:
        for side, seconds in phases.items():
            cells = [f"{seconds[name] * 1e3:,.2f}" if name in seconds else ""
                     for name in names]
            lines.append(f"| {r['dataset']} | {r['factors']} | {r['library']}-{r['backend']}-"
                         f"{r['solver']} | {side} | " + " | ".join(cells)
                         + f" | {sum(seconds.values()) * 1e3:,.2f} |")
    return lines


def _per_profile(setting: str) -> str:
    """A setting's value in each profile, for the help: "5 for quick, 6 for full"."""
    def value(profile: dict) -> int:  # iterations None: the synthetic sets' own
        return profile[setting] or Dataset.iterations
    return ", ".join(f"{value(settings):,} for {name}" for name, settings in PROFILES.items())


def build_parser() -> argparse.ArgumentParser:
    """The options of ``gpu-als bench`` (and ``python -m gpu_als.benchmark``)."""
    parser = argparse.ArgumentParser(
        prog="gpu-als bench", description=__doc__.splitlines()[0],
        epilog=f"datasets: {', '.join(DATASETS)}; implementations: "
               f"{', '.join(IMPLEMENTATIONS)}")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", choices=list(PROFILES), default="quick",
                         help="quick: ML-100K and ml20m-like at k=64,128 (a few minutes on a "
                              "GPU); full: every dataset at k=32..256 (default quick)")
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="same as --profile quick")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="same as --profile full")
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(DATASETS),
                        metavar="DATASET", help="datasets to time on (default: the profile's, "
                                                "or none with --matrix)")
    parser.add_argument("--matrix", nargs="+", default=None, type=Path, metavar="NPZ",
                        help="your own data too: users x items sparse matrices of "
                             "interaction strengths saved by scipy.sparse.save_npz, each a "
                             "dataset named by its file (timed as the synthetic sets are)")
    parser.add_argument("--factors", type=int, nargs="+", default=None,
                        help="factor counts to time (default: the profile's)")
    parser.add_argument("--implementations", nargs="+", default=None,
                        choices=list(IMPLEMENTATIONS), metavar="IMPLEMENTATION",
                        help="what to time (default: every one that can run here but "
                             "the opt-in " + ", ".join(sorted(
                                 set(IMPLEMENTATIONS) - set(DEFAULT_IMPLEMENTATIONS))) + ")")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations per fit on the synthetic sets, the first being the "
                             f"warm-up (default: the profile's, {_per_profile('iterations')}; "
                             "MovieLens 100K always runs 15)")
    parser.add_argument("--cpu-max-nnz", type=int, default=None,
                        help="largest dataset (in interactions) the CPU implementations "
                             f"run on (default: the profile's, {_per_profile('cpu_max_nnz')})")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per fit (default: the profile's, {_per_profile('timeout')})")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="result JSON, or a folder for it (default benchmarks/results/"
                             "bench-<device>-<commit>.json); rewritten after every fit")
    parser.add_argument("--plots", type=Path, default=None, metavar="FOLDER",
                        help="also draw the charts into FOLDER/<device>/")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


def _check_folder(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    """Make ``folder`` (and its parents) for what ``option`` writes there, or exit with
    the parser's error saying why it cannot be written."""
    if folder.exists() and not folder.is_dir():
        parser.error(f"{option}: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"{option}: cannot make the folder {folder} ({exc.strerror})")
    if not os.access(folder, os.W_OK):
        parser.error(f"{option}: cannot write in the folder {folder}")


def _option_of(name: str) -> str:
    """The command-line option that gives :func:`run`'s parameter ``name``."""
    return "--matrix" if name == "matrices" else "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child is not None:  # (one fit, in a subprocess of run: not for users)
        try:
            spec = json.loads(args.child)
        except json.JSONDecodeError:
            spec = None
        if not isinstance(spec, dict) or not set(CHILD_SPEC_KEYS) <= set(spec):
            parser.error(f"--child, the option of the benchmark's own subprocesses, takes "
                         f"a JSON object of {', '.join(CHILD_SPEC_KEYS)}")
        row = run_one(spec)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    try:  # (run checks them too; here they are named as options, before any output)
        check_run_options(args.profile, datasets=args.datasets, factors=args.factors,
                          implementations=args.implementations, iterations=args.iterations,
                          cpu_max_nnz=args.cpu_max_nnz, timeout=args.timeout,
                          matrices=args.matrix,
                          option=_option_of)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.plots is not None:  # the charts come after every fit: matplotlib checked first
        from .plots import check_matplotlib

        check_matplotlib()
        _check_folder(parser, "--plots", args.plots)
    if args.output is not None and args.output.suffix.lower() not in ("", ".json") \
            and not args.output.is_dir():  # (it overwrote -o results.csv with JSON)
        parser.error(f"--output {args.output}: the result is JSON; name the file "
                     f"{args.output.with_suffix('.json').name}, or give a folder for it")
    # (a folder that cannot be written is named now, not after the last fit)
    output = args.output or Path("benchmarks") / "results" / "bench.json"
    _check_folder(parser, "--output", output if output.is_dir() else output.parent)

    def save(document: dict) -> Path:
        name = f"bench-{slug(document['device'])}-{document['commit']}.json"
        output = args.output or Path("benchmarks") / "results" / name
        if output.is_dir():
            output = output / name
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(document, indent=2) + "\n")
        return output

    # The file is rewritten after every fit, so a run cut short keeps what it measured
    # (the header - commit, device, versions - is read once).
    partial = result_document(args.profile, [])

    def on_row(row: dict) -> None:
        partial["benchmarks"].append(row)
        partial["comparisons"] = compare(partial["benchmarks"])
        save(partial)

    result = run(args.profile, datasets=args.datasets, factors=args.factors,
                 implementations=args.implementations, iterations=args.iterations,
                 cpu_max_nnz=args.cpu_max_nnz, timeout=args.timeout, on_row=on_row,
                 matrices=args.matrix)
    print_comparisons(result["comparisons"])
    output = save(result)
    print(f"\nwrote {output}")
    if args.plots is not None:
        from .plots import plot_benchmark

        for path in plot_benchmark(result, args.plots / slug(result["device"])):
            print(f"wrote {path}")
    failed = [r for r in result["benchmarks"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
