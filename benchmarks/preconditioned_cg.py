"""CG preconditioned by the shared part of the systems (``solver="pcg"``), against
gpu-als's CG (implicit's iterates) and the exact solve: the training loss after each
iteration, and the time per iteration, on the CPU.

gpu-als's CG, as implicit's, takes ``cg_steps`` steps on each row's ``A x = b``, with
``A = F^T F + lambda I + F_u^T W_u F_u``, from the row's previous factors, and multiplies
by the k x k shared part ``B = F^T F + lambda I`` at every step. Whitened by B's Cholesky
factor, ``B = C C^T``, the same system reads ``(I + Z_u^T W_u Z_u) h = Z_u^T t_u`` with
``Z = F C^-T`` and ``x = C^-T h``: CG there is CG preconditioned by B, and its steps need
no k x k product (the shared part is I). ``ALS(solver="pcg")`` takes those steps; this
script runs the three solvers' half-steps from the same initial factors.

    python benchmarks/preconditioned_cg.py                      # MovieLens 100K positives
    python benchmarks/preconditioned_cg.py --dataset power-law  # a quarter of ml20m-like
    python benchmarks/preconditioned_cg.py --dataset counts --factors 32 --alpha 40
    python benchmarks/preconditioned_cg.py --scale-regularization  # Spark's implicit penalty

Measured on the 2-core development machine (one run each; loss per entry after the last
iteration, from the same initial factors; ms per iteration in brackets):

    data, factors, steps, iterations     exact            CG               preconditioned CG
    ML-100K positives, 64, 3, 10         1.35369 (32.3)   1.36426 (10.1)   1.35467 (9.8)
    ML-100K positives, 128, 3, 10        0.76873 (93.6)   0.80254 (17.3)   0.77090 (17.8)
    ML-100K positives, 64, 1, 10         1.35369 (34.2)   1.88571 (6.8)    1.41067 (7.1)
    34,500 x 6,750 power law, 64, 3, 6   4.74971 (805)    4.75367 (291)    4.74956 (315)

With 3 steps, preconditioned CG ends within 0.3 % of the exact solver's loss (on the
power-law set, below it) where CG ends 0.1-4.4 % above it; with 1 step, 4.2 % above
where CG ends 39 % above; at 0.97-1.08x CG's time per iteration (one run, the solvers one
after the other: within this machine's noise).

Fewer preconditioned steps against CG's 3 (``--dataset power-law --iterations 4
--pcg-steps 2 [--factors 128]``): after 4 iterations exact / CG (3) / preconditioned CG
(2) 4.79164 / 4.79939 / 4.79700 at k = 64 and 4.15822 / 4.18481 / 4.17484 at k = 128:
2 preconditioned steps end below 3 of CG, in 0.88-0.94x its time here (281 against 318
ms per iteration at k = 64, 437 against 463 at k = 128; one run each).

Where the values are heavy-tailed counts and the confidences large, the preconditioner
helps less than the spread of ``c_ui`` hurts: on ``--dataset counts`` (play counts, median
4, 99th percentile about 150; factors 32, 3 steps, 10 iterations), the loss per entry:

    confidence, alpha     exact      CG                  preconditioned CG
    linear, 1             3.07512    3.08949 (+0.47 %)   3.07336 (-0.06 %)
    linear, 10            7.19431    7.23340 (+0.54 %)   7.36586 (+2.38 %)
    linear, 40            9.92514    10.28325 (+3.61 %)  11.29693 (+13.8 %)
    log, 40               7.48888    7.47562 (-0.18 %)   7.52448 (+0.48 %)

From the same start one half-step of 3 preconditioned steps still closes more of each
user's gap to the exact solution than CG's 3 (a one-off check on such data), but on the
item side, where a popular item's row sums thousands of large weights, it closes less
(after 3 iterations at alpha 40: 35 % of the gap left against CG's 24 %). A Jacobi scaling
on top of the whitening (the whitened system's diagonal) left 31 %. Hence: ``"pcg"`` for
0/1 data, ratings and small confidences; for counts, the exact solver, or ``"cg"`` with
linear confidences at alpha >= 10 (or ``confidence="log"``, with which both end within
0.5 % of the exact loss).

With the scaled penalty (``--scale-regularization``: each row's ``lambda`` times its
positive entries, Spark's implicit model), no part is shared: preconditioned CG whitens
each row by its own ``F^T F + lambda n_u I``, diagonal in the eigenbasis of ``F^T F``
(one run each, 10 iterations, loss per entry after the last):

    data, factors, alpha                exact      CG                  preconditioned CG
    ML-100K positives, 64, 10           1.44310    1.46987 (+1.86 %)   1.44570 (+0.18 %)
    ML-100K positives, 128, 10          0.82027    0.88270 (+7.61 %)   0.82781 (+0.92 %)
    counts, 32, 10                      9.44514    9.72186 (+2.93 %)   9.58650 (+1.50 %)

(``lambda`` = 0.01.) On the counts it ends nearer than CG there, where with the plain
penalty it ended farther (+2.38 % against CG's +0.54 %, the table before): a popular
item's ``lambda n_u`` is large, and its preconditioner holds it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.backends import CPUBackend  # noqa: E402
from gpu_als.data import check_user_items, weighted_rows  # noqa: E402
from gpu_als.datasets import load_movielens_100k, make_power_law  # noqa: E402
from gpu_als.evaluation import binarize  # noqa: E402

ALPHA, REGULARIZATION = 10.0, 0.01
#: The columns, and the solvers that make them.
SOLVERS = {"exact": "cholesky", "cg": "cg", "preconditioned cg": "pcg"}


def half_step(backend, rows, F, x, solver: str, steps: int, scaled: bool = False) -> None:
    """New factors ``x`` (in place) for ``rows`` against the fixed factors ``F``;
    ``scaled``: each row's penalty times its positive entries (``scale_regularization``)."""
    backend.solve_rows(rows, F, backend.gram(F), regularization=REGULARIZATION,
                       feedback="implicit", out=x, solver=SOLVERS[solver], cg_steps=steps,
                       scale_regularization=scaled)


def play_counts(n_users: int, n_items: int, nnz: int):
    """A power-law set whose values are heavy-tailed counts (rounded lognormal, median 4,
    99th percentile about 150, as play counts are) instead of 1s."""
    R = make_power_law(n_users, n_items, nnz, random_state=0, device="cpu")
    counts = np.random.default_rng(0).lognormal(1.5, 1.5, R.nnz).round().clip(1)
    R.data = counts.astype(np.float32)
    return R


def fit(R, solver: str, factors: int, iterations: int, steps: int, alpha: float = ALPHA,
        confidence: str = "linear", scaled: bool = False):
    """Losses after each iteration and the median seconds per iteration."""
    backend = CPUBackend()
    csr = check_user_items(R, np.float32)
    weights = {"feedback": "implicit", "alpha": alpha, "confidence": confidence}
    Cu = backend.put(weighted_rows(csr, **weights))
    Ci = backend.put(weighted_rows(csr.T.tocsr(), **weights))
    X, Y = ALS(factors=factors, random_state=0)._initial_factors(
        backend, R.shape, factors, np.dtype(np.float32))
    losses, seconds = [], []
    with backend.reusing_buffers():
        for _ in range(iterations):
            started = time.perf_counter()
            half_step(backend, Cu, Y, X, solver, steps, scaled)
            half_step(backend, Ci, X, Y, solver, steps, scaled)
            seconds.append(time.perf_counter() - started)
            losses.append(backend.loss(Cu, X, Y, backend.gram(Y),
                                       regularization=REGULARIZATION, feedback="implicit",
                                       scale_regularization=scaled))
    return losses, float(np.median(seconds))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["ml-100k", "power-law", "counts"],
                        default="ml-100k", help="counts: 5,000 x 1,000 power law of 80,000 "
                        "play counts (default ml-100k)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"confidence scaling (default {ALPHA:g})")
    parser.add_argument("--confidence", choices=["linear", "log"], default="linear",
                        help="c = 1 + alpha r, or 1 + alpha log(1 + r) (default linear)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="CG steps per half-step")
    parser.add_argument("--pcg-steps", type=int, default=None,
                        help="preconditioned CG's steps per half-step (default: --steps)")
    parser.add_argument("--scale-regularization", action="store_true",
                        help="each row's penalty times its positive entries (Spark's "
                        "implicit model): preconditioned CG whitens each row by its own "
                        "shared part")
    args = parser.parse_args(argv)
    steps = {"exact": args.steps, "cg": args.steps,
             "preconditioned cg": args.pcg_steps or args.steps}
    if args.dataset == "ml-100k":
        R = binarize(load_movielens_100k().ratings, 4)
    elif args.dataset == "power-law":  # a quarter of ml20m-like's rows, columns and entries
        R = make_power_law(34_500, 6_750, 2_500_000, random_state=0, device="cpu")
    else:
        R = play_counts(5_000, 1_000, 80_000)
    print(f"{args.dataset}: {R.shape[0]:,} x {R.shape[1]:,}, {R.nnz:,} entries; factors "
          f"{args.factors}, {args.steps} CG steps (preconditioned: "
          f"{steps['preconditioned cg']}), {args.confidence} confidence, alpha "
          f"{args.alpha:g}{', scaled penalty' if args.scale_regularization else ''}; loss "
          f"per entry after each iteration")
    results = {solver: fit(R, solver, args.factors, args.iterations, steps[solver],
                           args.alpha, args.confidence, args.scale_regularization)
               for solver in SOLVERS}
    print(f"{'iteration':>9} " + " ".join(f"{solver:>18}" for solver in SOLVERS))
    for i in range(args.iterations):
        print(f"{i + 1:>9} " + " ".join(f"{results[s][0][i] / R.nnz:>18.5f}"
                                        for s in SOLVERS))
    print(f"{'ms/iter':>9} " + " ".join(f"{results[s][1] * 1e3:>18.1f}" for s in SOLVERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
