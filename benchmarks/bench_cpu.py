"""CPU benchmark: gpu_als's NumPy backend against the implicit library's CPU ALS.

Times seconds per iteration (median over the iterations after the first) on MovieLens 100K
and on a synthetic power-law set, side by side in one run, and scores every fitted model
with the same loss function (gpu_als's, DESIGN.md section 1), so that speed is never
bought with a worse solution. implicit is optional (``pip install gpu-als[bench]``).

Both libraries solve the same objective: implicit treats a stored value as the confidence
``c`` itself, gpu_als uses ``c = 1 + alpha * r``; on binary data implicit is therefore fed
``R * (1 + alpha)``. implicit runs with BLAS held to one thread, as it asks.

    python benchmarks/bench_cpu.py                 # ML-100K and 100k x 20k x 2M, k = 64, 128
    python benchmarks/bench_cpu.py --quick         # smaller synthetic set, k = 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_als import ALS, __version__  # noqa: E402
from gpu_als.backends import CPUBackend  # noqa: E402
from gpu_als.data import check_user_items, weighted_rows  # noqa: E402
from gpu_als.datasets import load_movielens_100k, make_power_law  # noqa: E402

ALPHA = 10.0
REGULARIZATION = 0.01


def datasets(quick: bool):
    try:
        ml = load_movielens_100k()
        yield "ml-100k", (ml.ratings > 0).astype(np.float32).tocsr()
    except (OSError, ValueError) as exc:
        print(f"skipping MovieLens 100K: {exc}", file=sys.stderr)
    if quick:
        yield "powerlaw-20k", make_power_law(20_000, 5_000, 400_000, random_state=0)
    else:
        yield "powerlaw-2m", make_power_law(100_000, 20_000, 2_000_000, random_state=0)


def shared_loss(R, X, Y) -> float:
    """gpu_als's implicit loss of factors X, Y on binary R with c = 1 + ALPHA * r."""
    backend = CPUBackend()
    rows = weighted_rows(check_user_items(R), feedback="implicit", alpha=ALPHA)
    X, Y = np.asarray(X, np.float32), np.asarray(Y, np.float32)
    return backend.loss(rows, X, Y, backend.gram(Y), regularization=REGULARIZATION,
                        feedback="implicit")


def per_iteration(stamps: list[float]) -> float:
    """Median seconds of the iterations after the first (the first warms caches up)."""
    return float(np.median(np.diff(stamps)[1:]))


def run_gpu_als(R, factors, iterations, solver="cholesky"):
    stamps = [0.0]
    model = ALS(factors=factors, regularization=REGULARIZATION, alpha=ALPHA,
                iterations=iterations, backend="cpu", random_state=0, show_progress=False,
                solver=solver, callback=lambda it, elapsed, loss: stamps.append(elapsed))
    model.fit(R)
    return per_iteration(stamps), model.user_factors_, model.item_factors_


def run_implicit(R, factors, iterations, use_cg):
    from implicit.cpu.als import AlternatingLeastSquares

    stamps = [0.0]
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=REGULARIZATION,
                                        iterations=iterations, use_cg=use_cg, random_state=0,
                                        calculate_training_loss=False)
        start = time.perf_counter()
        model.fit((R * (1 + ALPHA)).tocsr(), show_progress=False,
                  callback=lambda *a: stamps.append(time.perf_counter() - start))
    return per_iteration(stamps), model.user_factors, model.item_factors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic set, k=64 only")
    parser.add_argument("--iterations", type=int, default=5, help="iterations per fit")
    parser.add_argument("--factors", type=int, nargs="+", default=None)
    parser.add_argument("--output", type=Path, default=None, help="result JSON path")
    args = parser.parse_args(argv)
    factor_list = args.factors or ([64] if args.quick else [64, 128])
    try:
        import implicit
        implicit_version = implicit.__version__
    except ImportError:
        implicit_version = None
        print("implicit is not installed: timing gpu_als only (pip install gpu-als[bench])")

    rows = []
    for name, R in datasets(args.quick):
        for k in factor_list:
            runs = [("gpu_als", "cholesky", run_gpu_als, ()),
                    ("gpu_als", "cg", run_gpu_als, ("cg",))]
            if implicit_version:
                runs += [("implicit", "cholesky", run_implicit, (False,)),
                         ("implicit", "cg", run_implicit, (True,))]
            for library, solver, run, extra in runs:
                seconds, X, Y = run(R, k, args.iterations, *extra)
                row = {"dataset": name, "users": R.shape[0], "items": R.shape[1], "nnz": R.nnz,
                       "factors": k, "library": library, "solver": solver, "backend": "cpu",
                       "seconds_per_iteration": seconds,
                       "final_loss": shared_loss(R, X, Y) / R.nnz}
                rows.append(row)
                print(f"{name:>14} k={k:<4} {library:>8} {solver:>9}: "
                      f"{seconds:8.3f} s/iteration, loss/nnz {row['final_loss']:.5f}", flush=True)

    print("\nratios, same solver (implicit s/it / gpu_als s/it; > 1: gpu_als is faster):")
    for row in rows:
        if row["library"] != "implicit":
            continue
        ours = next(r for r in rows if r["library"] == "gpu_als" and r["solver"] == row["solver"]
                    and r["dataset"] == row["dataset"] and r["factors"] == row["factors"])
        row["gpu_als_speedup"] = row["seconds_per_iteration"] / ours["seconds_per_iteration"]
        print(f"  {row['dataset']:>14} k={row['factors']:<4} {row['solver']:>9}, gpu_als vs "
              f"implicit: {row['gpu_als_speedup']:.2f}x")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    result = {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"gpu_als": __version__, "implicit": implicit_version,
                     "numpy": np.__version__,
                     "blas": [f"{i['internal_api']} {i['version']}" for i in threadpool_info()
                              if i["user_api"] == "blas"]},
        "iterations": args.iterations, "alpha": ALPHA, "regularization": REGULARIZATION,
        "benchmarks": rows,
    }
    output = args.output or ROOT / "benchmarks" / "results" / f"cpu-{commit}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
