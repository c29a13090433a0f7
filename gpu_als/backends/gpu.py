"""CUDA backend: CuPy arrays and the raw kernels of ``kernels/*.cu``.

A half-step (DESIGN.md section 4), for rows ``u`` against fixed factors ``F`` (n_cols x k):

* rows of at most ``split_length`` entries, when the k x k system fits the opt-in shared
  memory, go to ``fused_solve`` (kernels/solve.cu): one thread block per row builds
  ``A = base + sum weight f f^T`` and ``b`` in shared memory and solves it there, so no
  n x k x k array is ever written. Rows are launched longest first for balance; the
  tile and the block size (128 or 256 threads) are those that keep the most warps
  resident per multiprocessor.
* longer rows, and every row when k is too large for shared memory, take the two-kernel
  path in chunks sized from the free device memory: rows are cut into segments of at most
  ``segment_length`` entries, one block per segment adds its share of ``A`` and ``b`` to the
  row's slot (kernels/gram.cu), then one block per slot factorizes and solves
  (kernels/cholesky.cu). A popular item's row is thus spread over many blocks.
* rows of 1 to k / 2 entries (``woodbury=True``, the default; ``woodbury_fraction`` sets
  the share of k; fewer if shared memory is short), in a half-step with at least
  ``woodbury_min_rows`` of them (explicit rows: of 1 to k - 1 entries, however few, as
  float32 loses the penalty of their singular k x k systems beside large factors),
  take neither path but ``woodbury_solve``
  (kernels/woodbury.cu): one block per row
  solves an n x n system in the row's own space (the Woodbury identity, on factors
  whitened by the Cholesky factor of ``F^T F + lambda I``), launched per length class so
  that short rows take little shared memory; exact, with O(n^2 k + n^3) work instead of
  O(n k^2 + k^3), and no k x k system in global memory for k beyond the fused kernel.
* ``GPUBackend(cholesky="cusolver")`` sends every row down the two-kernel path and solves
  the slots with cuSOLVER's batched Cholesky (``potrfBatched`` + ``potrsBatched``) instead
  of kernels/cholesky.cu: the alternative DESIGN.md section 4 asks to benchmark against.
* ``solver="cg"``: ``cg_solve`` (kernels/cg.cu), one block per row of at most
  ``split_length`` entries, never forming A (a row that fits its tile is gathered once,
  not at every step; ``cg_tile_bytes`` sizes the tile by bytes); the longer rows take
  the same CG steps spread over many blocks, a launch pair per step (one block per
  segment for the entries' part of ``A p``, then one per row for the step), so that no
  single block streams a popular item's entries at every step, and no ``A`` is formed.
* implicit feedback with a scaled penalty (``F^T F + lambda n_u I``, no part every row
  shares): the fused and two-kernel paths, on the fixed factors in the eigenbasis of
  ``F^T F`` (:meth:`GPUBackend._eigenbasis`), so that float32 keeps a small penalty; on
  the Woodbury path, each short row whitened by its own diagonal there
  (woodbury_solve_whitened).
* ``solver="nnls"``: every non-empty row's system is built in global memory in float64
  (gram.cu, in chunks, as the two-kernel path builds them) and solved under ``x >= 0`` by
  :func:`gpu_als.backends.nnls.nnls_rows` in CuPy, a few batched solves per round (and
  two host synchronisations per round: the groups' bounds and sizes, the rows left).

The schedule (which rows go where, the segments, the chunks) depends only on the CSR
structure and k, so it is computed once per fit and cached; after that a half-step launches
kernels without synchronising with the host (but for NNLS's rounds), and an iteration
waits for the device once if the loss is asked for (its terms read at once), else never.

The backend talks to CUDA only through a *runtime* object: :class:`CudaRuntime` (CuPy) here,
and, in the test suite, a host emulation runtime that runs the same kernels on the CPU with
NumPy arrays (tests/emulation.py), so that all of this module's logic is tested in CI.
CuPy is imported only when a :class:`CudaRuntime` is created: ``import gpu_als`` never needs
CUDA.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import WeightedRows, check_bool, check_float, check_int, optional_module
from . import _kernels
from .base import ITERATIVE_SOLVERS, Backend, rotated
from .nnls import nnls_rows

INSTALL_HINT = "install gpu-als[gpu] (CUDA 12) or gpu-als[gpu-cuda13] (CUDA 13)"
#: Largest number of factors the kernels accept (the implicit library's GPU limit too).
MAX_FACTORS = 1024
#: Factor rows loaded into shared memory per tile (fewer when shared memory is short, or
#: when fewer keep more fused blocks resident: GPUBackend._fused_shape).
TILE_ROWS = 32
#: Columns per panel of the kernels' blocked Cholesky (ALS_CHOLESKY_PANEL): the fused
#: kernel's tile, its column buffer once the system is built, needs this many rows.
CHOLESKY_PANEL = 4
#: Rows longer than this are spread over several blocks (two-kernel path).
SPLIT_LENGTH = 4096
#: Entries per block on the two-kernel path (and CG's long rows).
SEGMENT_LENGTH = 2048
#: Device memory of a long row in CG, in vectors of k values: its x, the entries' part
#: of A p, b, r and p.
CG_SLOT_VECTORS = 5
#: Dynamic shared memory a kernel may use without opting in.
DEFAULT_SHARED_BYTES = 48 * 1024
#: Fewest short rows for which a half-step takes the Woodbury path. Its fixed work
#: (whitening the fixed factors, a launch per length class) cost 0.6-1.0 ms per half-step
#: on an H200, more than it saved with at most 1,682 short rows (ML-100K at k = 64 and
#: 128: half-steps of 0.2-1.1 ms without it, 1.0-1.3 ms with it; ml20m-like's items at
#: k = 64, about 10 short: 7.4 ms without, 8.1 with), and it saved 3-325 ms from about
#: 6,700 short rows up (ml20m-like's items at k = 128: 39.4 ms without, 36.2 with). The
#: counts of ml20m-like's short rows are those of the CPU's draw of the same generator.
WOODBURY_MIN_ROWS = 2048
#: A size for cg_solve's tile by bytes (``GPUBackend(cg_tile_bytes=)``; the benchmark's
#: profile times it beside the default tiles of tile_rows): a row that fits one tile is
#: gathered from global memory once per solve, not once per CG step (four times with the
#: default three steps). 32 KiB hold 122 rows at k = 64 in float32 and 62 at k = 128,
#: where TILE_ROWS = 32; they leave room for six 128-thread blocks per H100/H200
#: multiprocessor instead of eight, and less of its L1 cache, where each step's product
#: with the k x k shared part (64 KiB at k = 128) is read. Which wins is not measured yet.
CG_LARGE_TILE_BYTES = 32 * 1024
#: Share of the free device memory the two-kernel path may fill with k x k systems.
MEMORY_FRACTION = 0.5
#: Device memory of a row's system in the NNLS solver (``solver="nnls"``), in k x k
#: float64 matrices: the system, and a round's gathered, masked and factorized copies.
NNLS_SLOT_SYSTEMS = 5
#: Who factorizes the exact solver's systems: this package's kernels or cuSOLVER.
CHOLESKY_CHOICES = ("kernels", "cusolver")


def unavailable_reason() -> str | None:
    """``None`` when the GPU backend can run here, else a sentence saying why not."""
    try:
        import cupy
    except ImportError:
        return f"CuPy is not installed; {INSTALL_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own types
        return f"CuPy found no usable CUDA device ({exc})"
    if count == 0:
        return "CuPy found no CUDA device"
    try:  # NVRTC compiles the kernels; CuPy loads it at first use, where it would fail
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:
        return (f"CuPy cannot load NVRTC, which compiles the kernels ({exc}); "
                f"{INSTALL_HINT}, which bring it")
    return None


def create_backend() -> GPUBackend:
    """Return the GPU backend, or raise :class:`BackendUnavailableError` saying why not."""
    from ..exceptions import BackendUnavailableError

    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(
            f"backend='gpu' cannot run: {reason}; or use backend='cpu'"
        )
    return GPUBackend()


def current_device_name() -> str:
    """The current CUDA device's name, e.g. "NVIDIA H100 80GB HBM3" (needs a device)."""
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _nvtx_range(name: str):
    """An NVTX range named ``gpu_als:<name>`` when the optional ``nvtx`` package is there
    (looked for once: a half-step opens four ranges or more)."""
    nvtx = optional_module("nvtx")
    if nvtx is None:
        return contextlib.nullcontext()
    return nvtx.annotate(f"gpu_als:{name}", domain="gpu_als")


@dataclass(frozen=True)
class Multiprocessor:
    """What bounds the thread blocks of one kernel resident on a multiprocessor at once:
    its shared memory, registers, threads and block slots (CUDA's occupancy rules)."""

    shared_memory: int  # bytes per multiprocessor
    reserved_shared_memory: int  # bytes the CUDA runtime takes per resident block
    registers: int  # 32-bit registers per multiprocessor
    threads: int
    blocks: int

    #: Registers are given to warps in units of this many; shared memory in units of
    #: SHARED_UNIT bytes.
    REGISTER_UNIT = 256
    SHARED_UNIT = 128

    def resident_blocks(self, threads: int, registers_per_thread: int, shared: int) -> int:
        """Blocks of ``threads`` threads, each thread using ``registers_per_thread``
        registers and each block ``shared`` bytes of dynamic shared memory, that one
        multiprocessor runs at once."""
        warps = -(-threads // 32)
        warp_registers = -(-registers_per_thread * 32 // self.REGISTER_UNIT) * \
            self.REGISTER_UNIT
        by_registers = self.registers // warp_registers // warps if warp_registers \
            else self.blocks
        block_shared = -(-shared // self.SHARED_UNIT) * self.SHARED_UNIT + \
            self.reserved_shared_memory
        by_shared = self.shared_memory // block_shared if block_shared else self.blocks
        return min(self.blocks, self.threads // threads, by_registers, by_shared)


#: CUDA's device attribute numbers (cudaDeviceAttr) of Multiprocessor's fields.
_MULTIPROCESSOR_ATTRIBUTES = {"shared_memory": 81, "reserved_shared_memory": 111,
                              "registers": 82, "threads": 39, "blocks": 106}


class CudaRuntime:
    """What :class:`GPUBackend` needs from CUDA, through CuPy."""

    def __init__(self):
        import cupy

        self.xp = cupy
        device = cupy.cuda.Device()
        self.max_shared_memory = int(device.attributes["MaxSharedMemoryPerBlockOptin"])
        #: The occupancy limits, or None (with why in ``multiprocessor_error``) if CUDA
        #: does not report them: the fused kernel then takes the largest tile that fits.
        self.multiprocessor: Multiprocessor | None = None
        self.multiprocessor_error: str | None = None
        try:
            self.multiprocessor = Multiprocessor(**{
                field: int(cupy.cuda.runtime.deviceGetAttribute(number, device.id))
                for field, number in _MULTIPROCESSOR_ATTRIBUTES.items()})
        except Exception as exc:  # CuPy raises its own CUDA error types
            self.multiprocessor_error = f"{type(exc).__name__}: {exc}"
        self.device_name = current_device_name()
        self._kernels: dict[tuple, Any] = {}

    def registers(self, file: str, name: str, defines: tuple[str, ...] = ()) -> int:
        """Registers per thread of kernel ``name`` in ``file`` (compiles it if need be)."""
        return int(self.kernel(file, name, defines).num_regs)

    def kernel(self, file: str, name: str, defines: tuple[str, ...] = ()):
        """The ``cupy.RawKernel`` of specialisation ``name`` in ``file``, compiled with
        ``defines`` (see ``_kernels.load_module``), for the current device
        (``get_function`` builds a new wrapper per call: one per kernel is kept)."""
        key = (self.xp.cuda.runtime.getDevice(), file, name, defines)
        if key not in self._kernels:
            self._kernels[key] = _kernels.load_module(file, defines).get_function(name)
        return self._kernels[key]

    def free_memory(self) -> int:
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free + self.xp.get_default_memory_pool().free_bytes())

    def asarray(self, a: Any, dtype: Any = None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    def mark(self):
        """A point in the stream's work, for :meth:`elapsed` (a recorded CUDA event)."""
        event = self.xp.cuda.Event()
        event.record()
        return event

    def elapsed(self, start, stop) -> float:
        """Seconds of device work between two marks (waits for ``stop``)."""
        stop.synchronize()
        return self.xp.cuda.get_elapsed_time(start, stop) / 1e3

    # cuSOLVER's batched Cholesky, as its C API has it: column-major matrices given by a
    # device array of pointers; ``fill`` ("upper" or "lower") names the triangle used.

    def address(self, a) -> int:
        """The device address of an array's first element."""
        return int(a.data.ptr)

    def potrf_batched(self, fill: str, n: int, pointers, lda: int, info, batch: int,
                      dtype) -> None:
        """``cusolverDn<t>potrfBatched``: factorize each matrix in place; ``info[j]`` > 0
        when matrix j is not positive definite."""
        from cupy_backends.cuda.libs import cusolver

        function = {np.float32: cusolver.spotrfBatched,
                    np.float64: cusolver.dpotrfBatched}[np.dtype(dtype).type]
        function(self._cusolver_handle(), _cublas_fill(fill), n, pointers.data.ptr, lda,
                 info.data.ptr, batch)

    def potrs_batched(self, fill: str, n: int, nrhs: int, pointers, lda: int, rhs, ldb: int,
                      info, batch: int, dtype) -> None:
        """``cusolverDn<t>potrsBatched``: solve with the factors of :meth:`potrf_batched`,
        overwriting the right-hand sides (``nrhs`` must be 1; ``info`` has one element)."""
        from cupy_backends.cuda.libs import cusolver

        function = {np.float32: cusolver.spotrsBatched,
                    np.float64: cusolver.dpotrsBatched}[np.dtype(dtype).type]
        function(self._cusolver_handle(), _cublas_fill(fill), n, nrhs, pointers.data.ptr,
                 lda, rhs.data.ptr, ldb, info.data.ptr, batch)

    def _cusolver_handle(self):
        """CuPy's cuSOLVER handle for the current device, bound to the current stream."""
        from cupy_backends.cuda.libs import cusolver

        handle = self.xp.cuda.device.get_cusolver_handle()
        cusolver.setStream(handle, self.xp.cuda.get_current_stream().ptr)
        return handle


def _cublas_fill(fill: str) -> int:
    from cupy_backends.cuda.libs import cublas

    return {"upper": cublas.CUBLAS_FILL_MODE_UPPER,
            "lower": cublas.CUBLAS_FILL_MODE_LOWER}[fill]


@dataclass
class _Chunk:
    """Rows solved together over segments: on the two-kernel path one k x k slot each,
    for CG a few vectors each."""

    slot_rows: Any  # (n_slots,) int64: the row of each slot
    segment_slot: Any  # (n_segments,) int64
    segment_start: Any  # (n_segments,) int64: first entry (CSR position)
    segment_end: Any  # (n_segments,) int64: one past the last entry


@dataclass
class _Plan:
    cg_rows: Any  # int64 rows for cg_solve: all of at most split_length entries, longest first
    cg_chunks: list[_Chunk]  # the longer ones, CG over segments (no k x k slots)
    fused_rows: Any  # int64 rows for fused_solve, longest first (may include empty rows)
    chunks: list[_Chunk]
    zero_rows: Any  # empty rows not covered by the fused kernel
    short: list[tuple[int, Any]]  # (max_length, rows) per woodbury_solve launch
    lengths: Any  # int64 entries of each row: explicit feedback's penalty counts


def fused_stride(k: int) -> int:
    """Row stride of the fused kernel's k x k system in shared memory: odd, so that the
    Cholesky's column accesses (stride = one row) fall in 32 different banks."""
    return k if k % 2 else k + 1


def _shared_bytes_fused(k: int, tile: int, itemsize: int) -> int:
    return (k * fused_stride(k) + k + tile * k + 2 * tile + 1) * itemsize


def _shared_bytes_woodbury(k: int, max_length: int, itemsize: int,
                           whitened: bool = False) -> int:
    return (max_length * fused_stride(k) + max_length * fused_stride(max_length)
            + (2 if whitened else 1) * k + (2 + CHOLESKY_PANEL) * max_length + 1) * itemsize


def _length_classes(limit: int) -> list[int]:
    """Upper bounds of the short rows' launches: 8, 16, 32, ... and ``limit`` last."""
    bounds = [8]
    while bounds[-1] < limit:
        bounds.append(bounds[-1] * 2)
    return [b for b in bounds if b < limit] + [limit]


def _shared_bytes_build(k: int, tile: int, itemsize: int) -> int:
    return (tile * k + 2 * tile) * itemsize


def _shared_bytes_cg(k: int, tile: int, itemsize: int, block_threads: int,
                     whitened: bool = False) -> int:
    return ((6 if whitened else 4) * k + tile * k + 3 * tile + block_threads // 32) * itemsize


def _shared_bytes_cg_segment(k: int, tile: int, itemsize: int) -> int:
    return (3 * k + tile * k + 3 * tile) * itemsize


class GPUBackend(Backend):
    """The CUDA backend.

    Parameters
    ----------
    runtime : CudaRuntime, optional
        Default: CuPy on the current device.
    split_length, segment_length : int
        Rows longer than ``split_length`` entries are cut into segments of
        ``segment_length`` entries, one thread block each.
    tile_rows : int
        Factor rows a block loads into shared memory at once (fewer if they do not fit; the
        CG solver's tile may take more, see ``cg_tile_bytes``).
    memory_fraction : float
        Share of the free device memory (0 < share <= 1) the k x k systems of the
        two-kernel path may take.
    woodbury : bool, default True
        Solve rows of at most k / 2 entries in their own space (kernels/woodbury.cu)
        instead of on the fused or two-kernel path: same solutions, less work. (Implicit
        feedback with regularization 0 leaves them on those paths: nothing to whiten with.)
    woodbury_fraction : float, default 0.5
        The longest row the Woodbury path takes, as a fraction of k (0 < fraction <= 1;
        fewer entries if shared memory is short). Its work per row, O(n^2 k + n^3),
        equals the fused kernel's, O(n k^2 + k^3), near n = k; the benchmark times other
        fractions to find where it pays on each card. Explicit rows of up to k - 1
        entries take it whatever the fraction: their k x k systems are singular but for
        the penalty, which float32 can lose (see ``_plan``).
    woodbury_min_rows : int, default WOODBURY_MIN_ROWS (2048)
        A half-step with fewer short rows leaves them to the fused kernel: the Woodbury
        path's fixed work costs more than it saves on so few rows. (Not explicit rows:
        they take it however few.)
    cholesky : {"kernels", "cusolver"}, default "kernels"
        Who solves the exact solver's systems. "kernels": the fused build + solve kernel
        where the system fits shared memory, else kernels/cholesky.cu. "cusolver": every
        row's system is built in global memory (kernels/gram.cu) and solved by cuSOLVER's
        batched Cholesky; same results, for comparison (``gpu-als bench``). The CG solver
        (``ALS(solver="cg")``) ignores this.
    async_copies : bool, default True
        Copy the factor rows (and the fused kernel's ``F^T F + lambda I``) into shared
        memory with ``cp.async`` (sm_80 and later), so that a thread's copies are in
        flight together. False compiles the kernels with plain copies, as on older
        devices: for comparison (the benchmark's profile times both).
    cg_tile_bytes : int, default 0
        Shared memory for the CG solver's tile: as many factor rows as fit (with their
        weights, targets and products), at least ``tile_rows``, so that more rows are
        gathered once per solve instead of at every CG step, at the price of fewer
        resident blocks and less L1 cache (see CG_LARGE_TILE_BYTES). 0: tiles of
        ``tile_rows`` rows. The benchmark's profile times both.
    fused_threads : int or None, default None
        Threads per block of the fused kernel: ``ALS_BLOCK_THREADS`` (128) or
        ``ALS_FUSED_THREADS`` (256). None: with its tile, whichever keeps more warps
        resident per multiprocessor by the device's occupancy rules (at k = 128 in
        float32 on an H100/H200, 256: shared memory holds three blocks either way), the
        fewer threads when both keep as many.
    """

    name = "gpu"
    max_factors = MAX_FACTORS
    #: 2^26 scores (256 MiB in float32, with the top-N's masks about 400 MiB) per block:
    #: each block of ``topk`` waits for the device a few times (candidate count, copy-back).
    topk_block_elements = 1 << 26

    def __init__(self, runtime: Any = None, *, split_length: int = SPLIT_LENGTH,
                 segment_length: int = SEGMENT_LENGTH, tile_rows: int = TILE_ROWS,
                 memory_fraction: float = MEMORY_FRACTION, woodbury: bool = True,
                 woodbury_fraction: float = 0.5, woodbury_min_rows: int = WOODBURY_MIN_ROWS,
                 cholesky: str = "kernels", async_copies: bool = True,
                 cg_tile_bytes: int = 0, fused_threads: int | None = None):
        if cholesky not in CHOLESKY_CHOICES:
            raise ValueError(f"cholesky={cholesky!r}: expected one of "
                             f"{', '.join(map(repr, CHOLESKY_CHOICES))}")
        # Checked before the runtime, which needs a device: a wrong option is named first.
        self.split_length = check_int("split_length", split_length, minimum=0)
        self.segment_length = check_int("segment_length", segment_length, minimum=1)
        self.tile_rows = check_int("tile_rows", tile_rows, minimum=1)
        self.memory_fraction = check_float("memory_fraction", memory_fraction, strict=True,
                                           maximum=1)
        self.woodbury = check_bool("woodbury", woodbury)
        self.woodbury_fraction = check_float("woodbury_fraction", woodbury_fraction,
                                             strict=True, maximum=1)
        self.woodbury_min_rows = check_int("woodbury_min_rows", woodbury_min_rows, minimum=0)
        self.cholesky = cholesky
        self.async_copies = check_bool("async_copies", async_copies)
        self.cg_tile_bytes = check_int("cg_tile_bytes", cg_tile_bytes, minimum=0)
        choices = (_kernels.block_threads(), _kernels.fused_threads())
        if fused_threads is not None:
            fused_threads = check_int("fused_threads", fused_threads, minimum=1)
            if fused_threads not in choices:
                raise ValueError(f"fused_threads={fused_threads}: expected None (by "
                                 f"occupancy), {choices[0]} or {choices[1]}")
        self.fused_threads = fused_threads
        self.runtime = runtime if runtime is not None else CudaRuntime()
        self.xp = self.runtime.xp
        self.block_threads = _kernels.block_threads()
        self._plans: dict[tuple, tuple[weakref.ref, _Plan]] = {}
        self._fused_shapes: dict[tuple, tuple[int, int] | None] = {}

    def with_options(self, **changes: Any) -> GPUBackend:
        """A backend on the same runtime (device) with these constructor options changed,
        e.g. ``backend.with_options(cholesky="cusolver")``."""
        options = {name: getattr(self, name)  # every option is kept under its own name
                   for name in inspect.signature(GPUBackend).parameters if name != "runtime"}
        return GPUBackend(self.runtime, **{**options, **changes})

    def __repr__(self) -> str:
        device = getattr(self.runtime, "device_name", "?")
        extra = "" if self.woodbury else ", woodbury=False"
        extra += "" if self.cholesky == "kernels" else f", cholesky={self.cholesky!r}"
        extra += "" if self.async_copies else ", async_copies=False"
        extra += f", cg_tile_bytes={self.cg_tile_bytes}" if self.cg_tile_bytes else ""
        extra += "" if self.fused_threads is None else f", fused_threads={self.fused_threads}"
        return f"GPUBackend(device={device!r}{extra})"

    @property
    def _defines(self) -> tuple[str, ...]:
        """The ``-D`` options of every kernel this backend compiles."""
        return () if self.async_copies else ("ALS_ASYNC_COPIES=0",)

    # ---- arrays ---------------------------------------------------------------------

    def asarray(self, a: Any, dtype: Any = None):
        return self.runtime.asarray(a, dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.runtime.to_numpy(a)

    def synchronize(self) -> None:
        self.runtime.synchronize()

    def range(self, name: str):
        return _nvtx_range(name)

    # ---- kernels --------------------------------------------------------------------

    @contextlib.contextmanager
    def _phase(self, name: str):
        """An NVTX range ``name``; under :meth:`profile`, also add the device time of the
        work queued in the block to phase ``name`` (waiting for it)."""
        with _nvtx_range(name):
            timer = self.timer
            if timer is None:
                yield
                return
            start = self.runtime.mark()
            yield
            timer.add(name, self.runtime.elapsed(start, self.runtime.mark()))

    def _launch(self, file: str, name: str, grid: int, args: tuple, shared: int = 0,
                threads: int | None = None) -> None:
        kernel = self.runtime.kernel(file, name, self._defines)
        if shared > DEFAULT_SHARED_BYTES and kernel.max_dynamic_shared_size_bytes < shared:
            kernel.max_dynamic_shared_size_bytes = shared  # opt in above 48 KiB
        kernel((grid,), (threads or self.block_threads,), args, shared_mem=shared)

    def _tile(self, k: int, itemsize: int, fused: bool) -> int | None:
        """Largest tile (<= tile_rows; >= CHOLESKY_PANEL when fused) whose shared memory
        fits, or None."""
        if fused:
            limit, size, smallest = self.runtime.max_shared_memory, _shared_bytes_fused, \
                CHOLESKY_PANEL
        else:
            limit, size, smallest = DEFAULT_SHARED_BYTES, _shared_bytes_build, 1
        for tile in range(max(self.tile_rows, smallest), smallest - 1, -1):
            if size(k, tile, itemsize) <= limit:
                return tile
        return None

    def _fused_shape(self, k: int, dtype: np.dtype,
                     index_dtype: np.dtype) -> tuple[int, int] | None:
        """The fused kernel's tile rows and threads per block (None: no tile fits): of the
        tiles that fit (<= tile_rows) and the block sizes allowed (``fused_threads``, or
        128 and 256), those that keep the most warps resident per multiprocessor (the
        device's occupancy rules, when the runtime knows them; else the largest tile and
        the fewer threads); of those the fewer threads, then the largest tile. The system
        takes most of a block's shared memory at large k, so a few tile rows too many can
        cost a resident block: on an H200 at k = 128 (float32), 19 rows or fewer keep
        three blocks, 32 two, and with 16 rows the half-steps took 15-18% less time than
        with 32 (the benchmark's tile phases). Chosen once per k and dtypes."""
        key = (k, dtype.str, index_dtype.str)
        if key not in self._fused_shapes:
            self._fused_shapes[key] = self._most_resident_shape(k, dtype, index_dtype)
        return self._fused_shapes[key]

    def _most_resident_shape(self, k: int, dtype: np.dtype,
                             index_dtype: np.dtype) -> tuple[int, int] | None:
        largest = self._tile(k, dtype.itemsize, fused=True)
        threads = [self.fused_threads] if self.fused_threads is not None else \
            [self.block_threads, _kernels.fused_threads()]
        multiprocessor = getattr(self.runtime, "multiprocessor", None)
        if largest is None or multiprocessor is None:
            return None if largest is None else (largest, threads[0])
        registers = self.runtime.registers(
            "solve.cu", _kernels.specialisation("fused_solve", dtype, index_dtype),
            self._defines)

        def resident_warps(shape: tuple[int, int]) -> int:
            tile, block = shape
            return multiprocessor.resident_blocks(
                block, registers, _shared_bytes_fused(k, tile, dtype.itemsize)) * block // 32

        shapes = [(tile, block) for block in threads
                  for tile in range(largest, CHOLESKY_PANEL - 1, -1)]
        most = max(map(resident_warps, shapes))
        return next(shape for shape in shapes if resident_warps(shape) == most)

    def fused_shape(self, k: int, dtype: Any = np.float32) -> tuple[int, int] | None:
        """The tile rows and threads per block of the fused kernel at ``k`` factors (for
        int32 CSR indices), as chosen for occupancy; None where the system does not fit
        shared memory (the two-kernel path). Compiles the kernel to count its registers."""
        return self._fused_shape(check_int("k", k, minimum=1), np.dtype(dtype),
                                 np.dtype(np.int32))

    def fused_limit(self, dtype: Any = np.float32) -> int:
        """The largest k whose systems the fused kernel builds and solves in this device's
        shared memory (larger k take the two-kernel path)."""
        itemsize = np.dtype(dtype).itemsize
        return max((k for k in range(1, self.max_factors + 1)
                    if self._tile(k, itemsize, fused=True) is not None), default=0)

    def _woodbury_limit(self, k: int, itemsize: int, whitened: bool = False,
                        longest: int | None = None) -> int:
        """Longest row (<= ``longest`` entries, default woodbury_fraction * k)
        woodbury_solve (``whitened``: woodbury_solve_whitened) takes in shared memory; 0:
        none."""
        limit = int(k * self.woodbury_fraction) if longest is None else longest
        while limit > 0 and _shared_bytes_woodbury(k, limit, itemsize, whitened) > \
                self.runtime.max_shared_memory:
            limit -= 1
        return limit

    # ---- scheduling -----------------------------------------------------------------

    def _plan(self, rows: WeightedRows, k: int, dtype: np.dtype, nnls: bool = False,
              scaled: bool = False, explicit: bool = False) -> _Plan:
        """Which rows go where (cached per rows, k and dtype). ``nnls``: the NNLS
        solver's, every non-empty row in the chunks of systems built in global memory,
        with room for its float64 copies. ``scaled``: implicit rows with a scaled
        penalty, whose short rows whiten themselves (woodbury_solve_whitened's shared
        memory bounds them). ``explicit``: explicit rows, whose every row of fewer than k
        entries takes the Woodbury path where shared memory holds it, however few: its
        k x k system ``F_u^T F_u + lambda n_u I`` is singular but for the penalty, which
        float32 loses beside large factors (ratings of 1,000 and lambda 1e-3: solutions
        half wrong, or NaN), where the row's own n x n system keeps it, as the CPU's."""
        key = (id(rows), k, dtype.str, nnls, scaled, explicit)
        cached = self._plans.get(key)
        if cached is not None and cached[0]() is rows:
            return cached[1]
        indptr = self.to_numpy(rows.indptr).astype(np.int64)
        lengths, starts = np.diff(indptr), indptr[:-1]

        def longest_first(members):
            return members[np.argsort(-lengths[members], kind="stable")]

        fused = self.cholesky == "kernels" and not nnls and \
            self._tile(k, dtype.itemsize, fused=True) is not None
        limit = self._woodbury_limit(k, dtype.itemsize, scaled, k - 1 if explicit else None) \
            if self.woodbury and self.cholesky == "kernels" and not nnls else 0
        is_short = (lengths >= 1) & (lengths <= min(limit, self.split_length))
        if not explicit and np.count_nonzero(is_short) < self.woodbury_min_rows:
            limit, is_short = 0, np.zeros_like(is_short)
        short, lower = [], 0
        for bound in _length_classes(limit) if limit else []:
            members = np.flatnonzero(is_short & (lengths > lower) & (lengths <= bound))
            if len(members):
                short.append((bound, longest_first(members)))
            lower = bound
        if fused:
            in_fused = (lengths <= self.split_length) & ~is_short
            fused_rows = longest_first(np.flatnonzero(in_fused))
            split_rows = np.flatnonzero(~in_fused & ~is_short)
            zero_rows: np.ndarray = np.empty(0, np.int64)
        else:
            fused_rows = np.empty(0, np.int64)
            split_rows = np.flatnonzero((lengths > 0) & ~is_short)
            zero_rows = np.flatnonzero(lengths == 0)
        chunks = self._chunks(longest_first(split_rows), lengths, starts,
                              k * k * (NNLS_SLOT_SYSTEMS * 8 if nnls else dtype.itemsize))
        long_rows = np.flatnonzero(lengths > self.split_length)
        cg_chunks = self._chunks(longest_first(long_rows), lengths, starts,
                                 CG_SLOT_VECTORS * k * dtype.itemsize)
        cg_rows = longest_first(np.flatnonzero(lengths <= self.split_length))
        plan = _Plan(self.asarray(cg_rows, np.int64), cg_chunks,
                     self.asarray(fused_rows, np.int64), chunks,
                     self.asarray(zero_rows, np.int64),
                     [(bound, self.asarray(members, np.int64)) for bound, members in short],
                     self.asarray(lengths, np.int64))
        self._plans[key] = (weakref.ref(rows), plan)
        return plan

    def _chunks(self, split_rows, lengths, starts, slot_bytes: int) -> list[_Chunk]:
        """The chunks for ``split_rows``: as many slots of ``slot_bytes`` per chunk as the
        memory budget holds, each row cut into segments of ``segment_length``."""
        budget = int(self.runtime.free_memory() * self.memory_fraction)
        per_chunk = max(1, budget // slot_bytes)
        chunks = []
        for first in range(0, len(split_rows), per_chunk):
            chunk_rows = split_rows[first:first + per_chunk]
            n_segments = -(-lengths[chunk_rows] // self.segment_length)  # ceil
            segment_slot = np.repeat(np.arange(len(chunk_rows)), n_segments)
            within = np.arange(len(segment_slot)) - np.repeat(
                np.cumsum(n_segments) - n_segments, n_segments)
            segment_start = starts[chunk_rows][segment_slot] + within * self.segment_length
            row_end = starts[chunk_rows] + lengths[chunk_rows]
            segment_end = np.minimum(segment_start + self.segment_length,
                                     row_end[segment_slot])
            chunks.append(_Chunk(*(self.asarray(a, np.int64) for a in (
                chunk_rows, segment_slot, segment_start, segment_end))))
        return chunks

    # ---- numerics -------------------------------------------------------------------

    def solve_rows(self, rows: WeightedRows, F, FtF, *, regularization, feedback, out,
                   solver="cholesky", cg_steps=3, scale_regularization=False):
        xp = self.xp
        k = F.shape[1]
        if k > MAX_FACTORS:
            raise ValueError(f"factors={k}: the GPU kernels support factors <= {MAX_FACTORS}")
        dtype = np.dtype(F.dtype)
        T = dtype.type
        index_dtype = rows.indices.dtype
        implicit = feedback == "implicit"
        # implicit rows whose penalty is scaled by their positive entries: the shared part
        # is F^T F alone, each row adding regularization * n_u * I as explicit rows do (no
        # part to whiten every row by: the exact solver's systems are built, and the short
        # rows' and PCG's whitened one by one, in the eigenbasis of F^T F instead, see
        # _eigenbasis), and a row without a positive entry, whose right-hand side is 0,
        # gets the solution 0. (A penalty of 0 scales to 0: PCG's plain one.)
        scaled = implicit and scale_regularization
        if scaled and solver == "pcg" and regularization == 0:
            scaled = False
        # NNLS builds its systems in float64 (_solve_nnls)
        base_dtype = np.dtype(np.float64) if solver == "nnls" else dtype
        rotation = eigen = None
        with _nvtx_range("solve_rows"):
            plan = self._plan(rows, k, dtype, scaled=scaled, explicit=not implicit)
            with self._phase("shared"):
                diag_scale = T(regularization if scaled or not implicit else 0)
                # the diagonal's n_u: each row's entries (explicit), or positive entries
                counts = self.row_counts(rows, positive=True) if scaled else plan.lengths
                if scaled and solver in ("cholesky", "pcg"):
                    eigen, rotation = self._eigenbasis(FtF, dtype)
                    F = rotated(F, rotation)
                    if solver == "pcg":  # (its warm start, in that basis too; no base:
                        out[...] = rotated(out, rotation)  # each row whitens itself)
                        base = None
                    else:
                        base = xp.diag(eigen)
                elif implicit:
                    base = self._shared_base(FtF, 0.0 if scaled else regularization,
                                             base_dtype)
                else:
                    base = xp.zeros((k, k), base_dtype)
            if solver == "nnls":
                self._solve_nnls(rows, F, base, diag_scale, counts, out)
            elif solver in ITERATIVE_SOLVERS:
                self._solve_cg(rows, F, base, diag_scale, counts, implicit, out, cg_steps,
                               plan, index_dtype,
                               preconditioned=solver == "pcg" and implicit,
                               eigen=eigen)
            else:
                self._solve_exact(rows, F, base, diag_scale, counts, implicit, out, plan,
                                  index_dtype, eigen)
            if rotation is not None:  # z = Q^T x
                out[...] = rotated(out, rotation.T)
            if scaled:  # (no host synchronisation)
                out[...] = xp.where((counts == 0)[:, None], 0, out)
        return out

    def _solve_exact(self, rows, F, base, diag_scale, counts, implicit: bool, out, plan,
                     index_dtype, eigen=None) -> None:
        """The exact solver's paths (the module's docstring): the Woodbury path's short
        rows, the fused kernel's, and the two-kernel path's chunks. ``eigen``: the scaled
        penalty's eigenvalues of ``F^T F`` (``F`` and ``base = diag(eigen)`` in its
        eigenbasis), by which the short rows whiten themselves."""
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        fused_rows, chunks = plan.fused_rows, plan.chunks
        # With lambda = 0 too: a row's A = F^T C_u F has F's rank, so it is definite
        # exactly when the whitening base F^T F is.
        if plan.short:
            with self._phase("woodbury"):
                self._solve_short(rows, F, base if implicit else None, diag_scale, out,
                                  plan, index_dtype, counts, eigen)
        if len(fused_rows):
            shape = self._fused_shape(k, dtype, index_dtype)
            assert shape is not None, "the plan sends rows here only when a tile fits"
            fused_tile, threads = shape
            with self._phase("fused"):
                self._launch(
                    "solve.cu", _kernels.specialisation("fused_solve", dtype, index_dtype),
                    len(fused_rows),
                    (fused_rows, rows.indptr, rows.indices, rows.weight, rows.target,
                     F, base, diag_scale, counts, np.int32(k),
                     np.int32(fused_stride(k)), np.int32(fused_tile), out),
                    _shared_bytes_fused(k, fused_tile, dtype.itemsize), threads,
                )
        for chunk in chunks:
            n_slots = len(chunk.slot_rows)
            with self._phase("gram_build"):
                A, b = self._build_systems(chunk, rows, F, base, diag_scale, counts)
            with self._phase("solve"):
                if self.cholesky == "cusolver":
                    out[chunk.slot_rows] = self._cusolver_solve(A, b)
                else:
                    self._launch(
                        "cholesky.cu",
                        _kernels.specialisation("cholesky_solve_batched", dtype),
                        n_slots, (A, b, chunk.slot_rows, np.int32(k), out),
                    )
        if len(plan.zero_rows):
            out[plan.zero_rows] = 0

    def _eigenbasis(self, FtF, dtype: np.dtype):
        """``FtF = Q diag(e) Q^T``: ``(e`` in ``dtype``, ``Q)``, for the scaled penalty's
        systems, built from the fixed rows in that basis (as
        :func:`gpu_als.backends.cpu.eigenbasis` says why), and its preconditioned CG,
        whitened there row by row. All NaN where ``FtF`` is not finite (the model's
        finiteness check then reports it); no host synchronisation."""
        xp = self.xp
        B = self.asarray(FtF, np.float64)
        finite = xp.isfinite(B).all()
        e, Q = xp.linalg.eigh(xp.where(finite, B, 0.0))
        e = xp.where(finite, xp.maximum(e, 0.0), np.nan)
        return e.astype(dtype), Q

    def _solve_nnls(self, rows, F, base, diag_scale, counts, out) -> None:
        """``solver="nnls"``: each chunk's systems built by gram.cu in float64 (phase
        "gram_build"; ``base`` in float64), their upper triangles filled from the lower,
        and solved with ``x >= 0`` (phase "nnls"), from the free sets of the current
        factors ``out``. In float64 because NNLS cannot whiten them: built in float32, a
        row whose products lost a regularization that is tiny against its confidences
        (the factors nearly rank-deficient) had an indefinite system, and NaN or a wrong
        solution. The cost: float64 copies of ``F`` and of the entries' weights.

        A row of ``counts`` 0 (a scaled penalty's row without a positive entry, whose
        right-hand side is 0) is given ``I x = 0``, solved in its first round: its own
        system has no penalty and may be singular, which CuPy's solve answers with any
        numbers, not an error (the CPU backend leaves such rows out)."""
        xp = self.xp
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        plan = self._plan(rows, k, dtype, nnls=True)
        identity = xp.eye(k, dtype=np.float64)
        if dtype != np.float64:
            F = F.astype(np.float64)
            rows = WeightedRows(rows.indptr, rows.indices, rows.weight.astype(np.float64),
                                rows.target.astype(np.float64), rows.n_cols,
                                rows.loss_constant)
        lower = xp.tri(k, dtype=bool)
        for chunk in plan.chunks:
            with self._phase("gram_build"):
                A, b = self._build_systems(chunk, rows, F, base, np.float64(diag_scale),
                                           counts)
            with self._phase("nnls"):
                none = (counts[chunk.slot_rows] == 0)[:, None]  # (no host read)
                A = xp.where(none[:, :, None], identity, xp.where(lower, A, A.transpose(0, 2, 1)))
                b = xp.where(none, 0.0, b)
                x = nnls_rows(A, b, xp=xp, solve=self._solve_batched,
                              to_numpy=self.to_numpy, asarray=self.asarray,
                              start=out[chunk.slot_rows])
                out[chunk.slot_rows] = x.astype(dtype)
        if len(plan.zero_rows):
            out[plan.zero_rows] = 0

    def _solve_batched(self, M, c):
        """The solutions of ``M[j] z = c[j]`` (float64; CuPy's batched LU)."""
        return self.xp.linalg.solve(M, c[:, :, None])[:, :, 0]

    def _shared_base(self, FtF, regularization: float, dtype: np.dtype):
        """``(FtF + FtF^T) / 2 + regularization I`` in ``dtype``: exactly symmetric (the CG
        kernels read it by columns), computed in float64, by one kernel (gram.cu)."""
        k = FtF.shape[0]
        base = self.xp.empty((k, k), dtype)
        self._launch("gram.cu", _kernels.specialisation("shared_base", dtype),
                     min(-(-k * k // self.block_threads), 1024),
                     (self.asarray(FtF, np.float64), np.float64(regularization), np.int32(k),
                      base))
        return base

    def _build_systems(self, chunk: _Chunk, rows, F, base, diag_scale, counts):
        """The systems ``(A, b)`` of a chunk's rows in global memory (kernels/gram.cu: the
        lower triangle of each row's entries' part, added to ``base``, by one block per
        segment; the diagonal ``diag_scale * n_u`` added here, ``n_u`` from ``counts``)."""
        xp = self.xp
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        n_slots = len(chunk.slot_rows)
        tile = self._tile(k, dtype.itemsize, fused=False)
        assert tile is not None, "a one-row tile of any k <= MAX_FACTORS fits 48 KiB"
        A = xp.empty((n_slots, k, k), dtype)
        A[...] = base
        if diag_scale:  # explicit rows, and implicit ones whose penalty is scaled
            diag = xp.arange(k)
            A[:, diag, diag] += (diag_scale * counts[chunk.slot_rows].astype(dtype))[:, None]
        b = xp.zeros((n_slots, k), dtype)
        self._launch(
            "gram.cu", _kernels.specialisation("build_systems", dtype, rows.indices.dtype),
            len(chunk.segment_slot),
            (chunk.segment_slot, chunk.segment_start, chunk.segment_end, rows.indices,
             rows.weight, rows.target, F, np.int32(k), np.int32(tile), A, b),
            _shared_bytes_build(k, tile, dtype.itemsize),
        )
        return A, b

    def _solve_short(self, rows, F, base, diag_scale, out, plan, index_dtype, counts=None,
                     eigen=None) -> None:
        """The rows of ``plan.short`` by woodbury_solve, one launch per length class.
        Implicit (``base`` given): on the factors whitened by ``base = C C^T``, and the
        solutions h turned into x = C^-T h. With a scaled penalty (``eigen``: the
        eigenvalues of ``F^T F``, ``F`` and ``out`` in its eigenbasis), by
        woodbury_solve_whitened, each row whitened by its own ``(eigen + diag_scale
        n_u)^-1/2``, ``n_u`` its ``counts``."""
        xp = self.xp
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        whitened = eigen is not None
        implicit = base is not None
        kernel, arguments = ("woodbury_solve_whitened", (counts, eigen, dtype.type(diag_scale))) \
            if whitened else ("woodbury_solve", (dtype.type(diag_scale), np.int32(implicit)))
        shared = implicit and not whitened  # the part every row shares, to whiten by
        if shared:
            _, C_inv = self._cholesky_factors(base)
            F = F @ C_inv.T  # rows C^-1 f_i
        for max_length, members in plan.short:
            H = xp.empty((len(members), k), dtype)
            self._launch(
                "woodbury.cu", _kernels.specialisation(kernel, dtype, index_dtype),
                len(members),
                (members, rows.indptr, rows.indices, rows.weight, rows.target, F, *arguments,
                 np.int32(k), np.int32(max_length), np.int32(fused_stride(k)),
                 np.int32(fused_stride(max_length)), H),
                _shared_bytes_woodbury(k, max_length, dtype.itemsize, whitened),
            )
            out[members] = H @ C_inv if shared else H  # x = C^-T h, as rows

    def _cholesky_factors(self, base):
        """``C`` and ``C^-1`` for ``base = C C^T`` (computed in float64, returned in base's
        dtype), all NaN when ``base`` is not numerically positive definite (then the
        model's finiteness check reports it): CuPy returns a wrong factor there (it
        raises nothing), caught by its residual. No host synchronisation."""
        xp = self.xp
        B = base.astype(np.float64)
        C = xp.linalg.cholesky(B)
        ok = xp.abs(C @ C.T - B).max() <= 1e-10 * xp.abs(B).max()
        return (xp.where(ok, C, np.nan).astype(base.dtype),
                xp.where(ok, xp.linalg.inv(C), np.nan).astype(base.dtype))

    def _cusolver_solve(self, A, b):
        """The solutions of ``A[j] x = b[j]`` by cuSOLVER's batched Cholesky (overwrites
        both). gram.cu fills each slot's lower triangle, row-major: cuSOLVER, column-major,
        sees it as the upper one. A system that is not positive definite gets NaN, which
        the model's finiteness check then reports."""
        xp = self.xp
        n, k = A.shape[:2]
        dtype = np.dtype(A.dtype)
        first = xp.arange(n, dtype=np.uint64)
        A_pointers = first * np.uint64(k * k * dtype.itemsize) + np.uint64(self.runtime.address(A))
        b_pointers = first * np.uint64(k * dtype.itemsize) + np.uint64(self.runtime.address(b))
        info = xp.zeros(n, np.int32)
        self.runtime.potrf_batched("upper", k, A_pointers, k, info, n, dtype)
        self.runtime.potrs_batched("upper", k, 1, A_pointers, k, b_pointers, k,
                                   xp.zeros(1, np.int32), n, dtype)
        return xp.where((info != 0)[:, None], dtype.type(np.nan), b)

    def _solve_cg(self, rows, F, base, diag_scale, counts, implicit: bool, out, steps, plan,
                  index_dtype, preconditioned: bool = False, eigen=None):
        """The CG iterations (kernels/cg.cu): rows of at most ``split_length`` entries in
        one launch of cg_solve, longest first (phase "cg"); the longer ones over their
        segments, a launch pair per step ("cg_long", :meth:`_solve_cg_long`): one block
        streaming a long row's entries at every step held back the whole half-step.
        ``preconditioned`` (implicit feedback): the same iterations on the factors
        whitened by ``base = C C^T`` (``Z = F C^-T``, where every row's shared part is I:
        no k x k product per step), from ``h = C^T x`` and back by ``x = C^-T h`` (phase
        "shared"): CG preconditioned by ``base``. With the scaled penalty (``eigen``, the
        eigenvalues of ``F^T F``; ``F`` and ``out`` in its eigenbasis), no part is shared:
        each row whitens itself there by ``(eigen + diag_scale * n_u)^-1/2`` (kernels/cg.cu
        says how), and the shared part becomes I."""
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        use_base, diag_constant, x = implicit, dtype.type(0), out
        # whitening: (eigen, whiten, its penalty); unwhitened, the kernels read no eigen
        if eigen is not None:  # (scaled, preconditioned) the shared part is I: no base
            assert preconditioned and base is None, "the scaled penalty's PCG alone"
            whitening = (eigen, np.int32(1), diag_scale)
            base, use_base, diag_constant, diag_scale = \
                eigen, False, dtype.type(1), dtype.type(0)  # (eigen: base's unread pointer)
        else:
            whitening = (base[0], np.int32(0), dtype.type(0))
        if preconditioned and eigen is None:
            with self._phase("shared"):
                C, C_inv = self._cholesky_factors(base)
                F = F @ C_inv.T  # rows C^-1 f_i
                x = out @ C  # h = C^T x, as rows
                use_base, diag_constant = False, dtype.type(1)
        system = (base, np.int32(use_base), diag_constant, diag_scale)
        if len(plan.cg_rows):
            whitened = eigen is not None
            tile = self._cg_tile(k, dtype.itemsize, whitened)
            kernel, arguments = ("cg_solve_whitened", (counts, eigen, whitening[2])) \
                if whitened else ("cg_solve", (*system, counts))
            with self._phase("cg"):
                self._launch(
                    "cg.cu", _kernels.specialisation(kernel, dtype, index_dtype),
                    len(plan.cg_rows),
                    (plan.cg_rows, rows.indptr, rows.indices, rows.weight, rows.target, F,
                     *arguments, np.int32(k), np.int32(steps), np.int32(tile), x),
                    _shared_bytes_cg(k, tile, dtype.itemsize, self.block_threads, whitened),
                )
        for chunk in plan.cg_chunks:
            with self._phase("cg_long"):
                self._solve_cg_long(chunk, rows, F, system, whitening, counts, steps, x)
        if preconditioned and eigen is None:
            with self._phase("shared"):
                out[...] = x @ C_inv  # x = C^-T h, as rows

    def _solve_cg_long(self, chunk: _Chunk, rows, F, system, whitening, counts,
                       steps: int, x) -> None:
        """cg_solve's iterations for a chunk of long rows, from and into ``x``, spread
        over their segments: cg_segment_products adds each segment's share of the entries'
        part of ``A v`` (first, of the residual ``b - A x``, each entry's difference
        taken before it is summed, as cg_solve takes it) to its row's slot, cg_long_start
        and cg_long_step (one block per row) add the shared part (``system``: base,
        use_base, diag_constant, diag_scale, and ``whitening``: eigen, whiten, its
        penalty, as cg_solve takes them; the rows' ``counts``) and take the steps.
        Whitened rows' products are of ``d p`` (``PD``), which the long kernels keep."""
        xp = self.xp
        k = F.shape[1]
        dtype = np.dtype(F.dtype)
        n_slots, index_dtype = len(chunk.slot_rows), rows.indices.dtype
        tile = self._cg_tile(k, dtype.itemsize)
        products, residuals = xp.zeros((n_slots, k), dtype), xp.zeros((n_slots, k), dtype)
        R, P, RS = xp.empty((n_slots, k), dtype), xp.empty((n_slots, k), dtype), \
            xp.empty(n_slots, dtype)
        whitened = bool(whitening[1])
        PD = xp.empty((n_slots, k), dtype) if whitened else P  # (not written unwhitened)
        per_row = (chunk.slot_rows, counts[chunk.slot_rows])
        small = (2 * k + self.block_threads // 32) * dtype.itemsize  # two vectors + scratch

        def add_products(V, residual: bool) -> None:
            self._launch(
                "cg.cu", _kernels.specialisation("cg_segment_products", dtype, index_dtype),
                len(chunk.segment_slot),
                (chunk.segment_slot, chunk.segment_start, chunk.segment_end, rows.indices,
                 rows.weight, rows.target, F, V, np.int32(k), np.int32(tile),
                 np.int32(residual), products, residuals),
                _shared_bytes_cg_segment(k, tile, dtype.itemsize),
            )

        add_products(x[chunk.slot_rows], residual=True)
        self._launch("cg.cu", _kernels.specialisation("cg_long_start", dtype), n_slots,
                     (*per_row, residuals, *system, *whitening, np.int32(k), x, R, P, PD, RS),
                     small)
        for _ in range(steps):
            products[...] = 0
            add_products(PD, residual=False)
            self._launch("cg.cu", _kernels.specialisation("cg_long_step", dtype), n_slots,
                         (*per_row, products, *system, *whitening, np.int32(k), x, R, P, PD,
                          RS),
                         small)

    def _cg_tile(self, k: int, itemsize: int, whitened: bool = False) -> int:
        """cg_solve's tile rows: as many as ``cg_tile_bytes`` hold (a factor row, its
        weight, target and product each), at least ``tile_rows``, at most ``split_length``
        (no longer row comes here); fewer if the block's shared memory does not fit (with
        ``whitened`` rows' two more vectors)."""
        tile = max(self.tile_rows, self.cg_tile_bytes // ((k + 3) * itemsize))
        tile = max(1, min(tile, self.split_length))
        while tile > 1 and _shared_bytes_cg(k, tile, itemsize, self.block_threads,
                                            whitened) > self.runtime.max_shared_memory:
            tile -= 1
        return tile

    def stored_loss(self, rows: WeightedRows, X, Y) -> float:
        return float(self.to_numpy(self._stored_loss_term(rows, X, Y)))

    def _stored_loss_term(self, rows: WeightedRows, X, Y):
        """The stored entries' terms, summed by loss.cu into a float64 scalar array on
        the device (not read here)."""
        nnz = len(rows.indices)
        if nnz == 0:
            return self.xp.zeros((), np.float64)
        dtype = np.dtype(X.dtype)
        total = self.xp.zeros(1, np.float64)
        grid = min(-(-nnz // self.block_threads), 8 * 1024)
        with _nvtx_range("loss"):
            self._launch(
                "loss.cu", _kernels.specialisation("loss_terms", dtype, rows.indices.dtype),
                grid,
                (rows.indptr, np.int64(rows.n_rows), rows.indices, rows.weight, rows.target,
                 X, Y, np.int64(nnz), np.int32(X.shape[1]), total),
            )
        return total[0]


__all__ = ["CudaRuntime", "GPUBackend", "Multiprocessor", "create_backend",
           "unavailable_reason"]
