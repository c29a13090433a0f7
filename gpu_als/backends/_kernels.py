"""The CUDA sources: where they live, every specialisation, how they compile and load.

* :func:`kernel_dir` finds ``kernels/`` in a checkout and ``gpu_als/kernels`` in a wheel.
* :data:`SPECIALISATIONS` lists every template instantiation of every kernel file; CuPy's
  ``RawModule`` gets them as ``name_expressions``, the NVRTC check and the host emulation
  (tests/) compile exactly these.
* :func:`load_module` builds and caches a ``cupy.RawModule`` per file; sources are
  prefixed with ``#line 1 "<file>"`` so compiler errors point at the ``.cu`` line. CuPy
  caches the compiled binaries per device on disk.
* :func:`nvrtc_compile` compiles a file for an architecture with NVRTC alone (no GPU, no
  CuPy), through the NVRTC wheels (``nvidia-cuda-nvrtc-cu12`` for CUDA 12,
  ``nvidia-cuda-nvrtc`` 13 for CUDA 13, as cupy-cuda12x and cupy-cuda13x load them): the
  test suite's compile check, once per CUDA release installed (:func:`nvrtc_libraries`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
from pathlib import Path

import numpy as np

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: C++ spelling of the dtypes the kernels are instantiated for.
CTYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
}
_VALUES = ("float", "double")
_INDICES = ("int", "long long")

#: file -> every specialisation compiled from it.
SPECIALISATIONS: dict[str, list[str]] = {
    "solve.cu": [f"fused_solve<{t}, {i}>" for t in _VALUES for i in _INDICES],
    "gram.cu": [f"build_systems<{t}, {i}>" for t in _VALUES for i in _INDICES]
    + [f"shared_base<{t}>" for t in _VALUES],
    "cholesky.cu": [f"cholesky_solve_batched<{t}>" for t in _VALUES],
    "loss.cu": [f"loss_terms<{t}, {i}>" for t in _VALUES for i in _INDICES],
    "cg.cu": [f"{kernel}<{t}, {i}>"
              for kernel in ("cg_solve", "cg_solve_whitened", "cg_segment_products")
              for t in _VALUES for i in _INDICES]
    + [f"{kernel}<{t}>" for kernel in ("cg_long_start", "cg_long_step") for t in _VALUES],
    "woodbury.cu": [f"{kernel}<{t}, {i}>"
                    for kernel in ("woodbury_solve", "woodbury_solve_whitened")
                    for t in _VALUES for i in _INDICES],
}

#: Compiler options shared by CuPy and the NVRTC check.
COMPILE_OPTIONS = ("-std=c++17",)


def kernel_dir() -> Path:
    """The folder holding the ``.cu`` sources.

    Raises
    ------
    FileNotFoundError
        When neither the installed nor the source-checkout folder exists.
    """
    for candidate in (_PACKAGE_DIR / "kernels", _PACKAGE_DIR.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the CUDA kernel sources were not found in {_PACKAGE_DIR / 'kernels'} (installed "
        f"wheel) nor in {_PACKAGE_DIR.parent / 'kernels'} (source checkout); reinstall gpu-als"
    )


def kernel_files() -> list[Path]:
    """Every file shipped in the kernel folder, sorted by name."""
    return sorted(p for p in kernel_dir().iterdir() if p.is_file())


@functools.cache
def header_value(name: str) -> int:
    """The integer that ``kernels/common.cuh`` defines as ``name`` (``#define NAME 128``)."""
    text = (kernel_dir() / "common.cuh").read_text()
    match = re.search(rf"#define\s+{name}\s+(\d+)", text)
    if match is None:  # pragma: no cover - guards against an edit of the header
        raise RuntimeError(f"{name} is not defined in kernels/common.cuh")
    return int(match.group(1))


def block_threads() -> int:
    """Threads per block, ``ALS_BLOCK_THREADS`` in ``kernels/common.cuh``.

    The kernels' ``__launch_bounds__`` use the same macro, so the two cannot disagree.
    """
    return header_value("ALS_BLOCK_THREADS")


def fused_threads() -> int:
    """The most threads per block of ``fused_solve`` (``ALS_FUSED_THREADS``, its
    ``__launch_bounds__``); it also runs with ``block_threads()``."""
    return header_value("ALS_FUSED_THREADS")


def max_threads(kernel: str) -> int:
    """The ``__launch_bounds__`` of kernel ``kernel`` (a name, or a specialisation's)."""
    return fused_threads() if kernel.startswith("fused_solve") else block_threads()


def specialisation(template: str, value_dtype, index_dtype=None) -> str:
    """The name expression of ``template`` for these dtypes, e.g. ``fused_solve<float, int>``."""
    names = [CTYPES[np.dtype(value_dtype)]]
    if index_dtype is not None:
        names.append(CTYPES[np.dtype(index_dtype)])
    return f"{template}<{', '.join(names)}>"


@functools.cache
def sources_digest() -> str:
    """sha256 of every file in the kernel folder.

    Put into each compiled source as a comment: CuPy caches binaries by the source text
    and options only, so without it an edit to an included header could reuse a stale one.
    """
    digest = hashlib.sha256()
    for path in kernel_files():
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def source(file: str) -> str:
    """The file's source, prefixed with ``#line 1`` so diagnostics name the ``.cu`` file."""
    path = kernel_dir() / file
    return f'// gpu-als kernels {sources_digest()}\n#line 1 "{path}"\n' + path.read_text()


def _options() -> tuple[str, ...]:
    return (*COMPILE_OPTIONS, f"-I{kernel_dir()}")


@functools.cache
def load_module(file: str, defines: tuple[str, ...] = ()):
    """A ``cupy.RawModule`` of ``file`` with all its specialisations (cached per process),
    compiled with ``-D`` of each of ``defines`` (e.g. ``("ALS_ASYNC_COPIES=0",)``)."""
    import cupy

    return cupy.RawModule(
        code=source(file), options=(*_options(), *(f"-D{d}" for d in defines)),
        name_expressions=SPECIALISATIONS[file],
    )


# ---- NVRTC compile check (no GPU needed) ----------------------------------------------

def _ptxas_usage(log: str) -> dict[str, dict[str, int]]:
    """Mangled kernel name -> registers and spilled bytes, from ptxas's verbose log."""
    usage: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            current = usage.setdefault(entry.group(1), {"registers": 0, "spill_bytes": 0})
            continue
        if current is None:
            continue
        spills = re.search(r"(\d+) bytes spill stores", line)
        if spills:
            current["spill_bytes"] = int(spills.group(1))
        registers = re.search(r"Used (\d+) registers", line)
        if registers:
            current["registers"] = int(registers.group(1))
    return usage


#: Architectures the kernels are checked for without a device: T4 (sm_75: before cp.async,
#: so the tile loads' plain-copy fallback compiles too), A100 (sm_80), H100 and H200
#: (sm_90), B200 (sm_100; NVRTC 12.8 and later), where the NVRTC release knows them.
CHECK_ARCHS = ("sm_75", "sm_80", "sm_90", "sm_100")


@functools.cache
def nvrtc_libraries() -> dict[int, str]:
    """The NVRTC shared libraries of the installed NVIDIA wheels, by CUDA major release
    (oldest first): ``nvidia/cuda_nvrtc/lib/libnvrtc.so.12`` from nvidia-cuda-nvrtc-cu12,
    ``nvidia/cu13/lib/libnvrtc.so.13`` from nvidia-cuda-nvrtc 13. Empty without them."""
    try:
        import nvidia
    except ImportError:
        return {}
    found: dict[int, str] = {}
    for folder in nvidia.__path__:
        for path in sorted(Path(folder).glob("*/lib/libnvrtc.so.*")):
            major = re.fullmatch(r"libnvrtc\.so\.(\d+)", path.name)
            if major:
                found.setdefault(int(major.group(1)), str(path))
    return dict(sorted(found.items()))


@functools.cache
def _nvrtc_library(cuda: int | None = None) -> ctypes.CDLL:
    """NVRTC of CUDA release ``cuda`` (a major version), or the newest installed."""
    libraries = nvrtc_libraries()
    if not libraries:
        raise ImportError("the NVRTC compile check needs the nvidia-cuda-nvrtc-cu12 or "
                          "nvidia-cuda-nvrtc wheel (pip install gpu-als[dev])")
    if cuda is None:
        cuda = max(libraries)
    if cuda not in libraries:
        raise ImportError(f"no NVRTC of CUDA {cuda} installed (found CUDA "
                          f"{', '.join(map(str, libraries))})")
    return ctypes.CDLL(libraries[cuda])


def nvrtc_version(cuda: int | None = None) -> str:
    """The release of NVRTC :func:`nvrtc_compile` uses for ``cuda``, e.g. ``"12.9"``."""
    lib = _nvrtc_library(cuda)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def nvrtc_archs(cuda: int | None = None) -> list[str]:
    """The :data:`CHECK_ARCHS` that NVRTC of ``cuda`` can compile for."""
    lib = _nvrtc_library(cuda)
    count = ctypes.c_int()
    lib.nvrtcGetNumSupportedArchs(ctypes.byref(count))
    supported = (ctypes.c_int * count.value)()
    lib.nvrtcGetSupportedArchs(supported)
    return [arch for arch in CHECK_ARCHS if int(arch[3:]) in set(supported)]


def nvrtc_compile(file: str, arch: str = "sm_80", *, cuda: int | None = None,
                  resource_usage: bool = False, keep_cubin: bool = False) -> dict:
    """Compile ``file`` and all its specialisations for ``arch`` with the NVRTC of CUDA
    release ``cuda`` (default: the newest installed, see :func:`nvrtc_libraries`).

    Returns
    -------
    dict
        ``ok`` (bool), ``log`` (the compiler's messages), ``lowered`` (name expression ->
        mangled kernel name, for each specialisation found), ``cubin_bytes``; with
        ``resource_usage``, also ``usage``: name expression -> ``{"registers",
        "spill_bytes"}`` as ptxas reports them; with ``keep_cubin``, ``cubin`` (bytes).
    """
    lib = _nvrtc_library(cuda)
    program = ctypes.c_void_p()
    code = source(file).encode()

    def check(status: int, what: str) -> None:
        if status != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"{what} failed: {lib.nvrtcGetErrorString(status).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(program), code, file.encode(), 0, None, None),
          "nvrtcCreateProgram")
    try:
        for name in SPECIALISATIONS[file]:
            check(lib.nvrtcAddNameExpression(program, name.encode()), "nvrtcAddNameExpression")
        options = [*_options(), f"--gpu-architecture={arch}",
                   *(["--ptxas-options=-v"] if resource_usage else [])]
        array = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(program, len(options), array)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        result = {"ok": status == 0, "log": log.value.decode(errors="replace"), "lowered": {},
                  "cubin_bytes": 0}
        if status != 0:
            return result
        for name in SPECIALISATIONS[file]:
            lowered = ctypes.c_char_p()
            check(lib.nvrtcGetLoweredName(program, name.encode(), ctypes.byref(lowered)),
                  f"nvrtcGetLoweredName({name})")
            result["lowered"][name] = (lowered.value or b"").decode()
        cubin = ctypes.c_size_t()
        check(lib.nvrtcGetCUBINSize(program, ctypes.byref(cubin)), "nvrtcGetCUBINSize")
        result["cubin_bytes"] = cubin.value
        if keep_cubin:
            buffer = ctypes.create_string_buffer(cubin.value)
            check(lib.nvrtcGetCUBIN(program, buffer), "nvrtcGetCUBIN")
            result["cubin"] = buffer.raw
        if resource_usage:
            by_mangled = _ptxas_usage(result["log"])
            result["usage"] = {name: by_mangled[mangled]
                               for name, mangled in result["lowered"].items()
                               if mangled in by_mangled}
        return result
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
