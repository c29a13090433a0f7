"""Backends: one module per device, chosen from one table (``get_backend``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..exceptions import BackendUnavailableError
from . import gpu
from .base import Backend
from .cpu import CPUBackend
from .gpu import GPUBackend

logger = logging.getLogger("gpu_als")

#: name -> factory. The GPU factory raises BackendUnavailableError with the reason.
BACKENDS: dict[str, Callable[[], Backend]] = {
    "cpu": CPUBackend,
    "gpu": gpu.create_backend,
}
BACKEND_NAMES = ("auto", *BACKENDS)


def get_backend(backend: str | Backend = "auto") -> Backend:
    """Resolve a ``backend`` hyperparameter to a :class:`Backend` instance.

    ``"auto"`` picks the GPU when one is usable and otherwise the CPU, and logs which
    (logger ``gpu_als``, level INFO). A :class:`Backend` instance is returned as it is.

    Raises
    ------
    ValueError
        For an unknown name.
    BackendUnavailableError
        For ``"gpu"`` on a machine where the GPU backend cannot run.
    """
    if isinstance(backend, Backend):
        return backend
    if backend not in BACKEND_NAMES:
        raise ValueError(
            f"backend={backend!r}: expected one of {', '.join(map(repr, BACKEND_NAMES))} "
            "or a gpu_als.backends.Backend instance"
        )
    if backend == "auto":
        reason = gpu.unavailable_reason()
        if reason is None:
            logger.info("backend='auto': using the GPU backend")
            return BACKENDS["gpu"]()
        logger.info("backend='auto': using the CPU backend (%s)", reason)
        return BACKENDS["cpu"]()
    return BACKENDS[backend]()


def get_backend_or_cpu(backend: str | Backend, what: str) -> Backend:
    """:func:`get_backend`, or the CPU backend with a warning (logger ``gpu_als``) where
    ``backend`` cannot run here: for factors made elsewhere (``what`` says which) that
    must still be usable here, e.g. a GPU model unpickled on a machine without a GPU."""
    try:
        return get_backend(backend)
    except BackendUnavailableError as exc:
        logger.warning("%s on the CPU backend: %s", what, exc)
        return BACKENDS["cpu"]()


__all__ = ["Backend", "BackendUnavailableError", "CPUBackend", "GPUBackend", "get_backend",
           "get_backend_or_cpu", "BACKEND_NAMES"]
