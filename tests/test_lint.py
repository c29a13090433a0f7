"""`make lint` runs in `make test` too: ruff on the package, the tests and the benchmarks,
and mypy on the package, whose ``py.typed`` promises annotations that hold. (A commit of
this project's once broke mypy: nothing but a hand-run `make lint` would have said so.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool, arguments", [
    ("ruff", ["check", "--no-cache", "gpu_als", "tests", "benchmarks"]),
    ("mypy", ["gpu_als"]),  # its cache: .mypy_cache, as `make lint`'s
])
def test_the_code_is_lint_clean(tool, arguments):
    try:
        __import__(tool)
    except ImportError as exc:
        skip_or_fail(f"{tool} is not installed (pip install gpu-als[dev]): {exc}")
    result = subprocess.run([sys.executable, "-m", tool, *arguments], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
