"""``gpu-als info --check``: the GPU backend's solves against the CPU backend's, here.

What the test suite's GPU cases check on a development machine, for a user's own card,
driver and CUDA libraries: one half-step of each of the GPU backend's paths (the fused
kernel, the two-kernel path above what shared memory holds, long rows split over
blocks, short rows in their own space, CG and preconditioned CG, nonnegative least
squares), from the same fixed
factors and start as the CPU backend's, which solves in float64. A case passes where
the largest difference is within the limit for its dtype, relative to the largest value
of the CPU's solution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .data import check_user_items, weighted_rows

#: (feedback, solver, factors, GPUBackend options): every path of the GPU backend (the
#: option ``scale_regularization``, the half-step's, not the backend's: the penalty
#: scaled by each row's positive entries, whose short rows woodbury_solve_whitened
#: takes). 300
#: factors is beyond what the fused kernel's shared memory holds in float32 on any card
#: (238 on an H100), so it takes the two-kernel path; ``woodbury_min_rows=1`` sends the
#: short rows to their own kernel (woodbury.cu), which otherwise takes them only where
#: there are thousands.
CASES: tuple[tuple[str, str, int, dict[str, Any]], ...] = (
    ("implicit", "cholesky", 8, {}), ("implicit", "cholesky", 64, {}),
    ("implicit", "cholesky", 128, {}), ("implicit", "cholesky", 300, {}),
    ("explicit", "cholesky", 64, {}),
    ("implicit", "cholesky", 64, {"woodbury_min_rows": 1}),
    ("explicit", "cholesky", 64, {"woodbury_min_rows": 1}),
    ("implicit", "cg", 64, {}), ("implicit", "pcg", 64, {}), ("explicit", "cg", 64, {}),
    ("implicit", "nnls", 64, {}), ("explicit", "nnls", 64, {}),
    ("implicit", "cholesky", 64, {"scale_regularization": True, "woodbury_min_rows": 1}),
    ("implicit", "cg", 64, {"scale_regularization": True}),
    ("implicit", "pcg", 64, {"scale_regularization": True}),
    ("implicit", "nnls", 64, {"scale_regularization": True}),
)
#: Entries of the long row (split over several blocks on a GPU).
LONG_ROW = 10_000
#: The largest difference from the CPU's float64 solution allowed, relative to its
#: largest value, as the test suite allows it (tests/test_solver.py, tests/test_gpu.py):
#: an exact solve (NNLS's too) in each dtype; three CG steps in float64 (in float32 the rounding of
#: steps that have not converged grows apart with the order of the sums, so they are not
#: compared).
LIMITS = {("cholesky", "float32"): 2e-4, ("cholesky", "float64"): 1e-9,
          ("cg", "float64"): 1e-6, ("pcg", "float64"): 1e-6,
          ("nnls", "float32"): 2e-4, ("nnls", "float64"): 1e-9}
REGULARIZATION = 0.1
ALPHA = 2.0


@dataclass
class Outcome:
    """One case of :func:`check`."""

    feedback: str
    solver: str
    factors: int
    #: the GPUBackend options of the case
    options: dict[str, Any]
    #: dtype name -> (largest difference relative to the CPU's largest value, its limit)
    errors: dict[str, tuple[float, float]]
    #: what the GPU raised instead of solving (a kernel that does not build, say)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and all(error <= limit
                                            for error, limit in self.errors.values())

    def __str__(self) -> str:
        solver = "exact" if self.solver == "cholesky" else self.solver.upper()
        errors = "  ".join(f"{dtype} {error:.1e} (limit {limit:.0e})"
                           for dtype, (error, limit) in self.errors.items())
        options = "".join(f" {name}={value}" for name, value in self.options.items())
        verdict = "ok" if self.ok else "FAILED" if self.failure is None else \
            f"FAILED: {self.failure}"
        return f"{self.feedback:8s} {solver:5s} k={self.factors:<4d} {errors}  {verdict}{options}"


def rows_of_every_length(factors: int, long_row: int = LONG_ROW, seed: int = 0
                         ) -> sp.csr_matrix:
    """Rows of every length class, values 1 to 5 (some negative): empty, 1, k - 1, k,
    k + 1, 2k + 3, and one of ``long_row`` entries; a column no row has."""
    rng = np.random.default_rng(seed)
    n_items = max(3 * factors + 40, long_row + 10)
    lengths = [0, 1, 2, max(1, factors - 1), factors, factors + 1, 2 * factors + 3,
               long_row, 5]
    rows, cols = [], []
    for u, length in enumerate(lengths):
        rows += [u] * length
        cols += list(rng.choice(n_items - 1, size=length, replace=False))
    values = rng.integers(1, 6, len(rows)).astype(np.float64)
    values[rng.random(len(values)) < 0.15] *= -1
    return sp.csr_matrix((values, (rows, cols)), shape=(len(lengths), n_items))


def half_step(backend: Any, R: sp.csr_matrix, F: np.ndarray, start: np.ndarray,
              feedback: str, solver: str, dtype: Any, scaled: bool = False) -> np.ndarray:
    """One half-step of ``backend`` on ``R``'s rows against ``F`` (CG from ``start``), in
    ``dtype``, as NumPy; ``scaled``: the penalty scaled by each row's positive entries."""
    rows = backend.put(weighted_rows(check_user_items(R, dtype), feedback=feedback,
                                     alpha=ALPHA))  # (alpha: implicit feedback's alone)
    fixed = backend.asarray(F, dtype)
    out = backend.asarray(np.array(start, dtype))
    backend.solve_rows(rows, fixed, backend.gram(fixed), regularization=REGULARIZATION,
                       feedback=feedback, out=out, solver=solver,
                       scale_regularization=scaled)
    return backend.to_numpy(out)


def check(backend: Any, cases: Iterable[tuple[str, str, int, dict[str, Any]]] | None = None,
          *, long_row: int | None = None, seed: int = 0) -> list[Outcome]:
    """Each case's half-step on ``backend`` (a GPUBackend, with the case's options)
    against the CPU backend's in float64, from the same factors and start (default:
    :data:`CASES`, a long row of :data:`LONG_ROW` entries)."""
    from .backends import get_backend

    cpu = get_backend("cpu")
    long_row = LONG_ROW if long_row is None else long_row
    outcomes = []
    for feedback, solver, factors, options in CASES if cases is None else cases:
        R = rows_of_every_length(factors, long_row, seed)
        rng = np.random.default_rng(seed + 1)
        F = rng.standard_normal((R.shape[1], factors)) * 0.1
        start = rng.standard_normal((R.shape[0], factors)) * 0.1
        backend_options = dict(options)
        scaled = backend_options.pop("scale_regularization", False)
        want = half_step(cpu, R, F, start, feedback, solver, np.float64, scaled)
        scale = max(1.0, float(np.abs(want).max()))
        errors, failure = {}, None
        for dtype in (np.float32, np.float64):
            limit = LIMITS.get((solver, np.dtype(dtype).name))
            if limit is None or failure is not None:
                continue
            try:
                got = half_step(backend.with_options(**backend_options) if backend_options
                                else backend, R, F, start, feedback, solver, dtype, scaled)
            except Exception as exc:  # noqa: BLE001 - CuPy's and CUDA's own types: a
                failure = f"{type(exc).__name__}: {exc}"  # failed case, the others go on
                continue
            error = float(np.abs(got - want).max()) / scale
            errors[np.dtype(dtype).name] = (error if np.isfinite(error) else np.inf, limit)
        outcomes.append(Outcome(feedback, solver, factors, options, errors, failure))
    return outcomes
