"""Where the CUDA sources live: ``kernels/`` in a checkout, ``gpu_als/kernels`` in a wheel.

Compilation and caching through ``cupy.RawModule`` come with the GPU backend; this module is
the one place that locates the sources, so both layouts behave the same.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


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
