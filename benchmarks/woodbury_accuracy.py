"""Float32 accuracy of the GPU backend's short-row path (kernels/woodbury.cu) against its
fused kernel and the CPU backend (which solves short rows the same way), on the emulated
kernels (no GPU needed): the largest error of a row's solution relative to its largest
entry, against a float64 np.linalg.solve per row.

    python benchmarks/woodbury_accuracy.py

Rows of 3 to 32 entries at k = 64 (the Woodbury path's), alpha = 40 and values up to 59,
so that confidences reach about 2,400: the case where a solve in the row's own space could
lose the most to cancellation.
"""

import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import emulated_backend  # noqa: E402
from tests.reference import solve_rows_loop  # noqa: E402
from tests.test_solver import run_solve  # noqa: E402


def main() -> int:
    rng = np.random.default_rng(0)
    k, n_items, alpha = 64, 500, 40.0
    lengths = [3, 10, 20, 31, 32]
    R = sp.csr_matrix(
        (rng.integers(1, 60, sum(lengths)).astype(np.float64),
         (np.repeat(np.arange(len(lengths)), lengths),
          np.concatenate([rng.choice(n_items, n, replace=False) for n in lengths]))),
        shape=(len(lengths), n_items))
    backend = emulated_backend().with_options(split_length=4096)  # no row is split
    print("factor scale, regularization: Woodbury | fused kernel | CPU backend")
    for scale in (0.01, 0.1, 1.0):
        F = rng.standard_normal((n_items, k)) * scale
        for regularization in (0.01, 1.0):
            want = solve_rows_loop(R, F, regularization, alpha=alpha)
            errors = []
            for b in (backend, backend.with_options(woodbury=False), "cpu"):
                got = run_solve(b, R, F, regularization, "implicit", np.float32, alpha=alpha)
                errors.append((np.abs(got - want).max(axis=1)
                               / np.abs(want).max(axis=1)).max())
            print(f"{scale:5} {regularization:5}: " + " | ".join(f"{e:.1e}" for e in errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
