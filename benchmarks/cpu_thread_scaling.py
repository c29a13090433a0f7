"""How CPU fits scale with threads: gpu-als's CPU backend and implicit's CPU ALS, seconds
per iteration on 1, 2, ... threads, side by side in one run.

    python benchmarks/cpu_thread_scaling.py [--solver cg] [--factors 64] [--threads 1 2]
        [--users 34500 --items 13500 --nnz 2500000] [--repeats 2]
    python benchmarks/cpu_thread_scaling.py --calls

``--calls`` times, instead, NumPy calls of the CG solver's kind repeated by 1 and by 2
threads: the gather of a block's factor rows (200 rows x 80 entries x 64 factors, 4 MB),
a batched matrix-vector product over it, and the small per-row vector updates of a step.

The data: gpu_als.datasets.make_power_law (seed 0; the defaults are a quarter of the
benchmark's ml20m-like set). Seconds per iteration: the median of iterations 2 to 4 of
a 4-iteration fit, each timed by the library's per-iteration callback (as the benchmark
times them), without the per-iteration loss, so set-up and the first iteration are left
out. Both libraries start from their own seeded factors; only the time is compared.
implicit is skipped when it is not installed. (The numbers in docs/cpu-backend.md were
measured as (a 4-iteration fit - a 1-iteration fit) / 3, which on a small set under load
could come out negative.)
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl

from gpu_als import ALS
from gpu_als.backends import CPUBackend
from gpu_als.benchmark import _per_iteration
from gpu_als.datasets import make_power_law

#: Iterations of each timed fit: the first (and set-up) left out, the median of the rest.
ITERATIONS = 4


def per_iteration(fit) -> float:
    """Seconds per iteration of ``fit(iterations)``, which returns the time since its start
    at the end of each iteration: the median over the iterations after the first."""
    return _per_iteration([0.0, *fit(ITERATIONS)])[0]


def call_scaling(calls: int = 400) -> None:
    """Microseconds per call of NumPy calls a CG block makes, by 1 thread and by 2 at once
    (each thread making its share of the calls in a row)."""
    rng = np.random.default_rng(0)
    F = rng.random((13_500, 64), dtype=np.float32)
    where = rng.integers(0, len(F), (200, 80))
    gathered = [np.empty((200, 80, 64), np.float32) for _ in range(2)]  # one per thread
    p = rng.random((200, 64), dtype=np.float32)

    def vector_update(_):  # a CG step's update of one block's x: (200, 64) arrays
        x = p.copy()
        step = np.einsum("ij,ij->i", x, p)
        x += np.divide(step, step, out=np.zeros_like(step), where=step > 0)[:, None] * p

    calls_of = {
        "gather of a block's factor rows (200 x 80 x 64, 4 MB)":
            lambda t: np.take(F, where, axis=0, mode="clip", out=gathered[t]),
        "batched matrix-vector product over it": lambda t: np.matmul(gathered[t], p[:, :, None]),
        "vector update of its 200 rows (7 small calls)": vector_update,
    }
    with threadpoolctl.threadpool_limits(1, "blas"):
        for name, call in calls_of.items():
            call(0)
            call(1)
            times = []
            for threads in (1, 2):
                def run(thread: int, n: int, call=call) -> None:
                    for _ in range(n):
                        call(thread)

                started = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    for future in [pool.submit(run, t, calls // threads)
                                   for t in range(threads)]:
                        future.result()
                times.append((time.perf_counter() - started) / calls * 1e6)
            print(f"{name}: {times[0]:.0f} us per call on 1 thread, {times[1]:.0f} us with 2 "
                  f"threads ({times[0] / times[1]:.2f}x the calls per second)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", choices=["cholesky", "cg"], default="cg")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=138_000 // 4)
    parser.add_argument("--items", type=int, default=27_000 // 2)
    parser.add_argument("--nnz", type=int, default=2_500_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", action="store_true",
                        help="time NumPy calls of the CG solver's kind instead of fits")
    args = parser.parse_args(argv)
    if args.calls:
        call_scaling()
        return 0
    R = make_power_law(args.users, args.items, args.nnz, random_state=0, device="cpu")
    print(f"{R.shape[0]:,} users x {R.shape[1]:,} items, {R.nnz:,} interactions; "
          f"solver {args.solver}, factors {args.factors}")

    def ours(threads: int):
        def fit(iterations: int) -> list[float]:
            model = ALS(factors=args.factors, iterations=iterations, solver=args.solver,
                        backend=CPUBackend(num_threads=threads), random_state=0,
                        show_progress=False, calculate_training_loss=False)
            stamps: list[float] = []
            started = time.perf_counter()
            model.fit(R, callback=lambda *_: stamps.append(time.perf_counter() - started))
            return stamps
        return fit

    def theirs(threads: int):
        from implicit.cpu.als import AlternatingLeastSquares

        def fit(iterations: int) -> list[float]:
            with threadpoolctl.threadpool_limits(1, "blas"):  # as implicit asks
                model = AlternatingLeastSquares(
                    factors=args.factors, iterations=iterations, use_cg=args.solver == "cg",
                    calculate_training_loss=False, random_state=0, num_threads=threads)
                stamps: list[float] = []
                started = time.perf_counter()
                model.fit(R, show_progress=False,
                          callback=lambda *_: stamps.append(time.perf_counter() - started))
                return stamps
        return fit

    libraries = {"gpu_als": ours}
    try:
        import implicit  # noqa: F401
        libraries["implicit"] = theirs
    except ImportError:
        print("implicit is not installed: gpu_als only")
    for repeat in range(args.repeats):
        for name, make in libraries.items():
            times = {t: per_iteration(make(t)) for t in args.threads}
            first = times[args.threads[0]]
            print(f"run {repeat + 1} {name:9s}" + "".join(
                f"  {t} thread{'s' if t > 1 else ''}: {s * 1e3:6.0f} ms ({first / s:.2f}x)"
                for t, s in times.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
