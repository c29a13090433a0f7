"""Run the CUDA kernels on the CPU: the host emulation runtime of the "gpu-emulated" backend.

Each ``kernels/*.cu`` file is compiled unchanged with g++ (C++20) against
``tests/cuda_host.h`` into a shared library, once per source hash, with one exported entry
point per specialisation in ``gpu_als.backends._kernels.SPECIALISATIONS``. An
:class:`EmulatedKernel` is called exactly like a ``cupy.RawKernel`` —
``kernel(grid, block, args, shared_mem=...)`` — with NumPy arrays where CuPy arrays would
go, and checks what CUDA would reject or silently corrupt: the argument count and types
against the kernel's C++ signature, non-contiguous arrays, and dynamic shared memory above
48 KiB without the opt-in attribute or above the device's limit.

:class:`EmulatedRuntime` gives :class:`gpu_als.backends.gpu.GPUBackend` NumPy as its array
module and these kernels, so the backend's whole Python side (scheduling, splitting long
rows, chunking, launching) runs in CI. Not covered: the CuPy glue of ``CudaRuntime``
(RawModule compilation, device queries, CuPy's argument passing), the CUDA memory model,
timing and tensor cores; ``make gpu-check`` on a real GPU remains the final word.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gpu_als.backends import _kernels

from .cupy_shaped import DeviceArray, cupy_shaped_numpy

HEADER = Path(__file__).resolve().parent / "cuda_host.h"
#: Opt-in shared memory per block of an sm_80 GPU (A100), the smallest we target.
SM80_SHARED_BYTES = 163 * 1024
DEFAULT_SHARED_BYTES = 48 * 1024
CXX = os.environ.get("CXX", "g++")
FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unused-function")
TSAN_FLAGS = ("-std=c++20", "-O0", "-g", "-fPIC", "-shared", "-pthread",
              "-fsanitize=thread")
ASAN_FLAGS = ("-std=c++20", "-O1", "-g", "-fPIC", "-shared", "-pthread",
              "-fsanitize=address", "-fno-omit-frame-pointer")


def sanitizer_runtime(name: str) -> str | None:
    """The path of the compiler's sanitizer runtime ``lib<name>.so`` (to LD_PRELOAD into
    a Python process that loads sanitized kernels), or None when it is not installed."""
    found = subprocess.run([CXX, f"-print-file-name=lib{name}.so"], capture_output=True,
                           text=True).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


def unavailable_reason() -> str | None:
    """Why the emulation cannot run here (no C++20 compiler), or None."""
    if shutil.which(CXX) is None:
        return f"no C++ compiler ({CXX}) to build the kernel emulation"
    probe = subprocess.run([CXX, "-std=c++20", "-x", "c++", "-fsyntax-only", "-"],
                           input="#include <atomic>\nint main() { float f = 0; "
                                 "std::atomic_ref<float>(f).fetch_add(1.0f); }\n", text=True,
                           capture_output=True)
    if probe.returncode != 0:
        return f"{CXX} cannot compile C++20 (atomic_ref): {probe.stderr.strip()[:200]}"
    return None


def _symbol(index: int) -> str:
    return f"gpu_als_kernel_{index}"


def wrapper_source(file: str, names: list[str] | None = None) -> str:
    """The C++ translation unit that includes a kernel file and exports its kernels.

    ``file`` is a name in ``kernels/`` (its specialisations by default) or any path.
    """
    names = _kernels.SPECIALISATIONS[file] if names is None else names
    lines = [f'#include "{HEADER}"', f'#include "{_kernels.kernel_dir() / file}"']
    lines += [f"GPU_ALS_EMU_EXPORT({_symbol(i)}, {name})" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    return Path(os.environ.get("GPU_ALS_EMULATION_CACHE",
                               Path(tempfile.gettempdir()) / "gpu_als_emulation"))


def library_path(file: str, flags: tuple[str, ...], source: str) -> Path:
    """Where the emulation library of ``file`` built from ``source`` with ``flags`` is
    cached: named by the hash of all its inputs (the source, the flags, the compiler, the
    files the source includes and the headers they include), so an edit of one ``.cu`` file
    rebuilds its library only, and an edit of a header every library."""
    digest = hashlib.sha256()
    for part in (source, " ".join(flags), CXX):
        digest.update(part.encode())
    for included in re.findall(r'#include "([^"]+)"', source):  # the header, the .cu file
        digest.update(Path(included).read_bytes())
    for path in sorted(_kernels.kernel_dir().glob("*.cuh")):  # what the .cu files include
        digest.update(path.read_bytes())
    return cache_dir() / f"{Path(file).stem}-{digest.hexdigest()[:16]}.so"


def build(file: str, flags: tuple[str, ...] = FLAGS, source: str | None = None) -> Path:
    """Compile the emulation library of ``file`` (cached: :func:`library_path`)."""
    source = wrapper_source(file) if source is None else source
    target = library_path(file, flags, source)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wrapper = target.with_suffix(".cpp")
    wrapper.write_text(source)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run([CXX, *flags, f"-I{_kernels.kernel_dir()}", str(wrapper), "-o",
                             str(partial)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"emulation build of {file} failed:\n{result.stderr}")
    partial.replace(target)  # atomic: concurrent builders never see half a library
    return target


def host_source(file: str, defines: tuple[str, ...] = ()) -> str:
    """What the host compiler sees of ``file``'s kernels (with ``defines``, ``-D``
    options): the emulation's translation unit, preprocessed, without line markers. Code
    in a branch that only the GPU takes (``#else`` of ``GPU_ALS_HOST_EMULATION``,
    ``__CUDA_ARCH__ >= 800``) is not in it."""
    result = subprocess.run([CXX, "-std=c++20", "-E", "-P", *defines,
                             f"-I{_kernels.kernel_dir()}", "-x", "c++", "-"],
                            input=wrapper_source(file), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"preprocessing {file} for the emulation failed:\n{result.stderr}")
    return result.stdout


def build_all(flags: tuple[str, ...] = FLAGS) -> dict[str, Path]:
    """Build every kernel file's library, two compilers at a time."""
    files = list(_kernels.SPECIALISATIONS)
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(files, pool.map(lambda f: build(f, flags), files)))


_SCALAR_TYPES = {
    "f4": ctypes.c_float, "f8": ctypes.c_double,
    "i4": ctypes.c_int32, "i8": ctypes.c_int64, "i1": ctypes.c_int8,
}


def _type_code(dtype: np.dtype) -> str:
    """The C++ side's code for a dtype: "f4", "i8", ... (bool and unsigned count as "i")."""
    return f"{'f' if dtype.kind == 'f' else 'i'}{dtype.itemsize}"


class EmulatedKernel:
    """One kernel specialisation, called like ``cupy.RawKernel``."""

    def __init__(self, library: ctypes.CDLL, symbol: str, name: str):
        self.name = name
        self._entry = getattr(library, symbol)
        self._entry.restype = None
        self._entry.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_size_t,
                                                      ctypes.POINTER(ctypes.c_void_p),
                                                      ctypes.c_uint]
        #: Blocks run at once (tests/cuda_host.h's lanes); 1: one after another.
        self.lanes = 1
        signature = getattr(library, f"{symbol}_signature")
        signature.restype = ctypes.c_char_p
        self.signature = signature().decode().split(",")
        self._take_fault = library.gpu_als_emu_take_fault
        self._take_fault.restype = ctypes.c_char_p
        #: As CUDA's cudaFuncAttributeMaxDynamicSharedMemorySize (CuPy's attribute name).
        self.max_dynamic_shared_size_bytes = DEFAULT_SHARED_BYTES

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        # What a real launch refuses (cudaErrorInvalidConfiguration / LaunchOutOfResources).
        if not (1 <= grid[0] < 2**31 and all(1 <= g <= 65535 for g in grid[1:])):
            raise RuntimeError(f"{self.name}: invalid grid {grid} (a CUDA launch needs "
                               f"1 <= x < 2**31 and 1 <= y, z <= 65535)")
        threads = int(np.prod(block))
        if min(block) < 1 or threads > _kernels.max_threads(self.name):
            raise RuntimeError(f"{self.name}: block {block} ({threads} threads) exceeds its "
                               f"__launch_bounds__({_kernels.max_threads(self.name)})")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise RuntimeError(
                f"{self.name}: {shared_mem} bytes of dynamic shared memory without raising "
                f"max_dynamic_shared_size_bytes ({self.max_dynamic_shared_size_bytes})"
            )
        if shared_mem > SM80_SHARED_BYTES:
            raise RuntimeError(f"{self.name}: {shared_mem} bytes of shared memory exceed the "
                               f"{SM80_SHARED_BYTES} an sm_80 block may use")
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments, "
                            f"got {len(args)}")
        keep = []  # ctypes objects that must outlive the call
        params = (ctypes.c_void_p * len(args))()
        for i, (arg, code) in enumerate(zip(args, self.signature)):
            if code.startswith("P"):
                if not isinstance(arg, DeviceArray):
                    raise TypeError(f"{self.name} argument {i}: expected a device array "
                                    f"({code}), got {type(arg).__name__}")
                arg = arg._a
                if not arg.flags.c_contiguous:
                    raise ValueError(f"{self.name} argument {i}: array is not C-contiguous")
                if _type_code(arg.dtype) != code[1:]:
                    raise TypeError(f"{self.name} argument {i}: array of {arg.dtype} where the "
                                    f"kernel takes {code}")
                value = ctypes.c_void_p(arg.ctypes.data)
            else:
                dtype = getattr(arg, "dtype", None)
                if dtype is None or not isinstance(arg, np.generic):
                    raise TypeError(f"{self.name} argument {i}: pass a NumPy scalar ({code}), "
                                    f"not {type(arg).__name__}, as CuPy needs exact types")
                if _type_code(dtype) != code:
                    raise TypeError(f"{self.name} argument {i}: {dtype} where the kernel "
                                    f"takes {code}")
                value = _SCALAR_TYPES[code](arg.item())
            keep.append(value)
            params[i] = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        self._entry(*grid, *block, shared_mem, params, self.lanes)
        fault = self._take_fault().decode()
        if fault:  # a GPU would end the launch with an error (and poison the context)
            raise RuntimeError(f"{self.name}: {fault}")


#: Kernel defines that choose between device code paths only: ALS_ASYNC_COPIES picks
#: cp.async or plain copies, and the host code's copies (GPU_ALS_HOST_EMULATION) are plain
#: either way.
DEVICE_ONLY_DEFINES = ("ALS_ASYNC_COPIES",)


class EmulatedModule:
    """The emulated counterpart of ``cupy.RawModule`` for one kernel file."""

    def __init__(self, file: str, flags: tuple[str, ...] = FLAGS,
                 names: list[str] | None = None):
        self.file = file
        self.names = _kernels.SPECIALISATIONS[file] if names is None else names
        source = wrapper_source(file, self.names)
        self._library = ctypes.CDLL(str(build(file, flags, source)))
        self._kernels: dict[str, EmulatedKernel] = {}

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self._kernels:
            if name not in self.names:
                raise KeyError(f"{name} is not a specialisation listed for {self.file}")
            self._kernels[name] = EmulatedKernel(
                self._library, _symbol(self.names.index(name)), name)
        return self._kernels[name]


def runs_blocks_at_once(file: str) -> bool:
    """Whether the emulation may run several blocks of ``file``'s kernels at once: not
    where the file (or the header it includes) declares a static ``__shared__`` variable,
    which the emulation keeps once for all blocks."""
    static = re.compile(r"^\s*__shared__\s", re.MULTILINE)
    return not any(static.search((_kernels.kernel_dir() / name).read_text())
                   for name in (file, "common.cuh"))


class EmulatedRuntime:
    """The runtime interface of ``GPUBackend`` (see ``CudaRuntime``), on the host.

    ``free_memory`` is what the backend is told the device has free: small values force
    its chunking paths on tiny inputs, as a small ``max_shared_memory`` sends small k to
    the two-kernel path. ``flags`` are the compiler's (``TSAN_FLAGS`` builds
    the kernels under ThreadSanitizer; the process must then preload libtsan).
    ``concurrent_blocks`` runs that many blocks of a launch at once (1: one after another)
    in the kernels without static shared variables (:func:`runs_blocks_at_once`), so that
    ThreadSanitizer sees blocks that race on global memory.
    """

    #: The GPU backend's array module: NumPy, shaped like CuPy (tests/cupy_shaped.py), so
    #: that the backend's own code takes its CuPy branches and uses only what CuPy has; its
    #: arrays are device arrays, which reach NumPy only through ``to_numpy`` (a copy), as
    #: CuPy's. The kernels take only them.
    xp = cupy_shaped_numpy(device_arrays=True)
    device_name = "CUDA host emulation"

    def __init__(self, free_memory: int = 1 << 30, flags: tuple[str, ...] = FLAGS,
                 max_shared_memory: int = SM80_SHARED_BYTES, concurrent_blocks: int = 1,
                 multiprocessor=None, registers: int = 0):
        self._free_memory = free_memory
        self._flags = flags
        self.concurrent_blocks = concurrent_blocks
        self.max_shared_memory = max_shared_memory
        #: A gpu.Multiprocessor for the backend's occupancy choices (None: none made), and
        #: the registers per thread it is told every kernel uses.
        self.multiprocessor = multiprocessor
        self._registers = registers
        self._modules: dict[tuple[str, tuple[str, ...]], EmulatedModule] = {}
        self._arrays: list[weakref.ref] = []  # what address() handed out, while alive

    def kernel(self, file: str, name: str, defines: tuple[str, ...] = ()) -> EmulatedKernel:
        """``defines`` go to the compiler as ``-D`` options, as ``CudaRuntime.kernel``'s,
        but for those in DEVICE_ONLY_DEFINES: the host code takes no branch on them, so
        the library built without them serves (not a second build of every file)."""
        if (file, defines) not in self._modules:
            self._modules[file, defines] = EmulatedModule(
                file, (*self._flags, *(f"-D{d}" for d in defines
                                       if d.split("=")[0] not in DEVICE_ONLY_DEFINES)))
        kernel = self._modules[file, defines].get_function(name)
        kernel.lanes = self.concurrent_blocks if runs_blocks_at_once(file) else 1
        return kernel

    def free_memory(self) -> int:
        return self._free_memory

    def registers(self, file: str, name: str, defines: tuple[str, ...] = ()) -> int:
        self.kernel(file, name, defines)  # as CUDA's runtime, which compiles it to count
        return self._registers

    def asarray(self, a, dtype=None) -> DeviceArray:
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:  # kernels run to completion when called
        pass

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed(self, start: float, stop: float) -> float:
        return stop - start

    # cuSOLVER's batched Cholesky, as its documentation specifies it: column-major
    # matrices reached through an array of pointers, only the ``fill`` triangle read and
    # overwritten, ``nrhs`` 1. Each pointer must lie, with the whole matrix it names,
    # inside an array this runtime handed out an address for.

    def address(self, a: DeviceArray) -> int:
        if not isinstance(a, DeviceArray):
            raise TypeError(f"address of a {type(a).__name__}: a device array expected")
        if not a.flags.c_contiguous:
            raise ValueError("address of an array that is not C-contiguous")
        self._arrays = [r for r in self._arrays if r() is not None]
        self._arrays.append(weakref.ref(a))
        return a.data.ptr

    def _matrix(self, pointer: int, rows: int, cols: int, ld: int, dtype) -> np.ndarray:
        """A writable view of the column-major ``rows x cols`` matrix at ``pointer``."""
        dtype = np.dtype(dtype)
        size = (ld * (cols - 1) + rows) * dtype.itemsize
        for ref in self._arrays:
            a = ref()
            if a is not None and a.dtype == dtype and a.data.ptr <= pointer and \
                    pointer + size <= a.data.ptr + a.nbytes:
                break
        else:
            raise RuntimeError(f"pointer {pointer:#x} (+{size} bytes of {dtype}) is in no "
                               "array handed to the device: an illegal address")
        if (pointer - a.data.ptr) % dtype.itemsize:
            raise RuntimeError(f"pointer {pointer:#x} is not aligned to {dtype}")
        buffer = (ctypes.c_char * (ld * cols * dtype.itemsize)).from_address(pointer)
        return np.frombuffer(buffer, dtype).reshape(cols, ld)[:, :rows].T

    @staticmethod
    def _check_batched(fill, n, lda, pointers, batch, dtype):
        if fill not in ("upper", "lower"):
            raise ValueError(f"fill must be 'upper' or 'lower', got {fill!r}")
        if n < 0 or lda < max(1, n) or batch < 0:
            raise ValueError(f"invalid n={n}, lda={lda} or batch={batch}")
        if pointers.dtype != np.uint64 or len(pointers) < batch:
            raise ValueError(f"{batch} pointers expected as uint64, got {len(pointers)} "
                             f"{pointers.dtype}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"potrf/potrs for {dtype}")

    def potrf_batched(self, fill, n, pointers, lda, info, batch, dtype) -> None:
        self._check_batched(fill, n, lda, pointers, batch, dtype)
        upper = fill == "upper"
        for j in range(batch):
            M = self._matrix(int(pointers[j]), n, n, lda, dtype)
            half = np.triu(M) if upper else np.tril(M)
            symmetric = (half + half.T - np.diag(np.diag(M))).astype(np.float64)
            try:
                L = np.linalg.cholesky(symmetric)
            except np.linalg.LinAlgError:  # the matrix is left unfactored: what potrs
                info[j] = 1                # then computes from it is finite garbage
                continue
            info[j] = 0
            at = np.triu_indices(n) if upper else np.tril_indices(n)
            M[at] = (L.T if upper else L)[at]

    def potrs_batched(self, fill, n, nrhs, pointers, lda, rhs, ldb, info, batch,
                      dtype) -> None:
        import scipy.linalg

        self._check_batched(fill, n, lda, pointers, batch, dtype)
        if nrhs != 1 or ldb < max(1, n) or len(rhs) < batch or len(info) != 1:
            raise ValueError(f"potrsBatched supports nrhs = 1 (got {nrhs}), ldb >= n "
                             f"(got {ldb}), one pointer per system and one info")
        upper = fill == "upper"
        for j in range(batch):
            M = self._matrix(int(pointers[j]), n, n, lda, dtype)
            B = self._matrix(int(rhs[j]), n, nrhs, ldb, dtype)
            L = np.tril(M.T) if upper else np.tril(M)  # upper: A = U^T U with L = U^T
            try:
                y = scipy.linalg.solve_triangular(L, B.astype(np.float64), lower=True)
                B[...] = scipy.linalg.solve_triangular(L.T, y, lower=False)
            except np.linalg.LinAlgError:  # a failed factor: cuSOLVER divides by zero
                B[...] = np.nan
        info[0] = 0
