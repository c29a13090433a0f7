"""CG preconditioned by the shared part of the systems, against gpu-als's CG and the exact
solve: the training loss after each iteration, and the time per iteration, on the CPU.

gpu-als's CG, as implicit's, takes ``cg_steps`` steps on each row's ``A x = b``, with
``A = F^T F + lambda I + F_u^T W_u F_u``, from the row's previous factors, and multiplies
by the k x k shared part ``B = F^T F + lambda I`` at every step. Whitened by B's Cholesky
factor, ``B = C C^T``, the same system reads ``(I + Z_u^T W_u Z_u) h = Z_u^T t_u`` with
``Z = F C^-T`` and ``x = C^-T h``: CG there is CG preconditioned by B, and its steps need
no k x k product (the shared part is I). Before either backend gets such a solver, this
measures what it buys per step: each of its half-steps whitens F, runs the CPU backend's
CG on the whitened rows from ``h = C^T x`` and maps the result back.

    python benchmarks/preconditioned_cg.py                      # MovieLens 100K positives
    python benchmarks/preconditioned_cg.py --dataset power-law  # a quarter of ml20m-like

Measured on the 2-core development machine (one run each; loss per entry after the last
iteration, from the same initial factors):

    data, factors, steps, iterations     exact      CG         preconditioned CG
    ML-100K positives, 64, 3, 10         1.35369    1.36426    1.35467
    ML-100K positives, 128, 3, 10        0.76873    0.80254    0.77090
    ML-100K positives, 64, 1, 10         1.35369    1.88571    1.41067
    34,500 x 6,750 power law, 64, 3, 6   4.74971    4.75367    4.74956

With as many steps, preconditioned CG ends within 0.3 % of the exact solver's loss where
CG ends 0.1-4.4 % above it. Its times here are not the solver's: the whitening is done
in float64 by SciPy for every half-step, and the CPU backend still multiplies by the
(now identity) shared part at every step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.backends import CPUBackend  # noqa: E402
from gpu_als.data import check_user_items, weighted_rows  # noqa: E402
from gpu_als.datasets import load_movielens_100k, make_power_law  # noqa: E402
from gpu_als.evaluation import binarize  # noqa: E402

ALPHA, REGULARIZATION = 10.0, 0.01
SOLVERS = ("exact", "cg", "preconditioned cg")


def half_step(backend, rows, F, x, solver: str, steps: int) -> None:
    """New factors ``x`` (in place) for ``rows`` against the fixed factors ``F``."""
    FtF = backend.gram(F)
    if solver != "preconditioned cg":
        backend.solve_rows(rows, F, FtF, regularization=REGULARIZATION, feedback="implicit",
                           out=x, solver="cholesky" if solver == "exact" else "cg",
                           cg_steps=steps)
        return
    k = F.shape[1]
    C = np.linalg.cholesky(FtF + REGULARIZATION * np.eye(k))
    Z = scipy.linalg.solve_triangular(C, F.T.astype(np.float64), lower=True).T  # F C^-T
    h = (x.astype(np.float64) @ C).astype(x.dtype)  # C^T x, as rows
    # the backend adds lambda I to the shared part it is given: (1 - lambda) I makes it I
    backend.solve_rows(rows, Z.astype(F.dtype), (1 - REGULARIZATION) * np.eye(k),
                       regularization=REGULARIZATION, feedback="implicit", out=h,
                       solver="cg", cg_steps=steps)
    x[:] = scipy.linalg.solve_triangular(C, h.T.astype(np.float64), lower=True,
                                         trans="T").T  # C^-T h


def fit(R, solver: str, factors: int, iterations: int, steps: int):
    """Losses after each iteration and the median seconds per iteration."""
    backend = CPUBackend()
    csr = check_user_items(R, np.float32)
    Cu = backend.put(weighted_rows(csr, feedback="implicit", alpha=ALPHA))
    Ci = backend.put(weighted_rows(csr.T.tocsr(), feedback="implicit", alpha=ALPHA))
    X, Y = ALS(factors=factors, random_state=0)._initial_factors(
        backend, R.shape, factors, np.dtype(np.float32))
    losses, seconds = [], []
    with backend.reusing_buffers():
        for _ in range(iterations):
            started = time.perf_counter()
            half_step(backend, Cu, Y, X, solver, steps)
            half_step(backend, Ci, X, Y, solver, steps)
            seconds.append(time.perf_counter() - started)
            losses.append(backend.loss(Cu, X, Y, backend.gram(Y),
                                       regularization=REGULARIZATION, feedback="implicit"))
    return losses, float(np.median(seconds))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["ml-100k", "power-law"], default="ml-100k")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="CG steps per half-step")
    args = parser.parse_args(argv)
    if args.dataset == "ml-100k":
        R = binarize(load_movielens_100k().ratings, 4)
    else:  # a quarter of ml20m-like's rows, columns and entries
        R = make_power_law(34_500, 6_750, 2_500_000, random_state=0, device="cpu")
    print(f"{args.dataset}: {R.shape[0]:,} x {R.shape[1]:,}, {R.nnz:,} entries; factors "
          f"{args.factors}, {args.steps} CG steps; loss per entry after each iteration")
    results = {solver: fit(R, solver, args.factors, args.iterations, args.steps)
               for solver in SOLVERS}
    print(f"{'iteration':>9} " + " ".join(f"{solver:>18}" for solver in SOLVERS))
    for i in range(args.iterations):
        print(f"{i + 1:>9} " + " ".join(f"{results[s][0][i] / R.nnz:>18.5f}"
                                        for s in SOLVERS))
    print(f"{'ms/iter':>9} " + " ".join(f"{results[s][1] * 1e3:>18.1f}" for s in SOLVERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
