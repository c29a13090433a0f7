"""CUDA backend seam: decides whether the GPU path can run on this machine.

The CUDA kernels (``kernels/*.cu``) and the CuPy backend that launches them are the subject
of their own issue; until they land, :func:`unavailable_reason` always gives a reason, so
``backend="auto"`` falls back to the CPU and ``backend="gpu"`` says why it cannot run.
CuPy is imported only inside these functions: ``import gpu_als`` never needs CUDA.
"""

from __future__ import annotations

INSTALL_HINT = "install gpu-als[gpu] (CUDA 12) or gpu-als[gpu-cuda13] (CUDA 13)"


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
    return (
        f"CuPy sees {count} CUDA device(s), but this version of gpu-als does not ship its "
        "CUDA kernels yet"
    )


def create_backend():
    """Return the GPU backend, or raise :class:`BackendUnavailableError` saying why not."""
    from ..exceptions import BackendUnavailableError

    reason = unavailable_reason()
    raise BackendUnavailableError(f"backend='gpu' cannot run: {reason}; or use backend='cpu'")
