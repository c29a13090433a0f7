"""recommend(): gpu-als against the implicit library, same factors, same users, on the CPU
or on the GPU.

    python benchmarks/bench_recommend.py [--users 20000] [--factors 64] [--N 10] [--repeats 5]
    python benchmarks/bench_recommend.py --backend gpu --users 138000

ml20m-like interactions (138,000 x 27,000 x 10M) filter each user's liked items; the
factors are random normal (the selection's cost does not depend on how they were fitted).
The cases: ``recommend`` for ``--users`` users at once; ``similar_items`` asked one item
at a time (``--similar`` items, as a service would); ``recommend`` one user at a time
(``--similar`` users, each with its own row, as a service receives them) with the fitted
factors, folded in from the row (``recalculate_user=True``), among an allowlist
(``items=``) and excluding a blocklist (``filter_items=``) of ``--listed`` random items.
Each case runs ``--repeats`` rounds in which the two libraries take turns, so that a
change in the (shared) machine's load hits both alike; printed: the median seconds of
each, the median and the range of the per-round speed ratios, and whether both return
the same items. On the GPU the first round includes the warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

from gpu_als import ALS, benchmark  # noqa: E402
from gpu_als.backends import gpu  # noqa: E402
from gpu_als.datasets import make_power_law  # noqa: E402


def median_seconds(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000, help="users to recommend to")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--N", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds; in each, both libraries run every case once")
    parser.add_argument("--shape", type=int, nargs=3, default=[138_000, 27_000, 10_000_000],
                        metavar=("USERS", "ITEMS", "NNZ"),
                        help="the power-law set (default ml20m-like)")
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="cpu",
                        help="where both libraries' models live")
    parser.add_argument("--similar", type=int, default=200,
                        help="items whose similar_items are asked one at a time, and users "
                             "whose recommend is")
    parser.add_argument("--listed", type=int, default=5000,
                        help="items of the allowlist (items=) and of the blocklist "
                             "(filter_items=) of the one-at-a-time recommend")
    args = parser.parse_args(argv)
    on_gpu = args.backend == "gpu"
    if on_gpu and gpu.unavailable_reason():
        parser.error(f"--backend gpu: {gpu.unavailable_reason()}")

    R = make_power_law(*args.shape, random_state=0, device=args.backend).tocsr()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((R.shape[0], args.factors)).astype(np.float32)
    Y = rng.standard_normal((R.shape[1], args.factors)).astype(np.float32)
    users = np.arange(min(args.users, R.shape[0]))
    liked = R[users]

    # the same fold-in objective in both: implicit's confidence alpha * r = 10 on this 0/1
    # data is gpu-als's 1 + alpha * r with alpha = 9 (regularization 0.01 in both)
    model = ALS.from_factors(X, Y, alpha=9.0, regularization=0.01, backend=args.backend)
    if on_gpu:
        model.recommend(users[:100], liked[:100], N=args.N)  # compiles, allocates
    where = benchmark.device_name() if on_gpu else "CPU"
    print(f"{len(users)} users x {R.shape[1]:,} items, k = {args.factors}, N = {args.N}, "
          f"liked items filtered, on {where}")
    queries = np.arange(min(args.similar, R.shape[1]))
    folded = users[:args.similar]
    single_rows = [liked[int(u)] for u in folded]  # as a service receives them
    listed = np.sort(rng.choice(R.shape[1], min(args.listed, R.shape[1]), replace=False))

    def similar_one_by_one(model):
        return np.array([model.similar_items(int(i), N=args.N)[0] for i in queries])

    def one_by_one(**options):
        def run(model):
            return np.array([model.recommend(int(u), row, N=args.N, **options)[0]
                             for u, row in zip(folded, single_rows)])
        return run

    # (what, of what, one call with each library's model)
    cases = [
        ("recommend", "users", lambda model: model.recommend(users, liked, N=args.N)[0]),
        (f"similar_items, {len(queries)} items one at a time", "items", similar_one_by_one),
        (f"recommend, {len(folded)} users one at a time", "users", one_by_one()),
        (f"recommend(recalculate_user=True), {len(folded)} users one at a time", "users",
         one_by_one(recalculate_user=True)),
        (f"recommend(items=<{len(listed):,} items>), {len(folded)} users one at a time",
         "users", one_by_one(items=listed)),
        (f"recommend(filter_items=<{len(listed):,} items>), {len(folded)} users one at a "
         f"time", "users", one_by_one(filter_items=listed)),
    ]
    problem = benchmark.unavailable(benchmark.IMPLEMENTATIONS[f"implicit-{args.backend}-cg"])
    theirs_model = None
    if problem:
        print(f"no comparison: {problem}")
    else:
        from implicit.cpu.als import AlternatingLeastSquares

        theirs_model = AlternatingLeastSquares(factors=args.factors, alpha=10.0,
                                               regularization=0.01)
        theirs_model.user_factors, theirs_model.item_factors = X, Y
        if on_gpu:
            theirs_model = theirs_model.to_gpu()
            theirs_model.recommend(users[:100], liked[:100], N=args.N)
        version = f"implicit {__import__('implicit').__version__} {args.backend.upper()}"
    for what, of, run in cases:
        ours, theirs = [], []
        for _ in range(args.repeats):  # the libraries take turns: drift hits both alike
            seconds, mine = median_seconds(lambda run=run: run(model), 1)
            ours.append(seconds)
            if theirs_model is not None:
                with threadpool_limits(1, "blas"):  # as implicit asks (it threads itself)
                    seconds, their_ids = median_seconds(lambda run=run: run(theirs_model), 1)
                theirs.append(seconds)
        line = f"{what}: gpu-als {statistics.median(ours):.3f} s"
        if theirs:
            same = np.mean((mine == their_ids).all(axis=1)) \
                if mine.shape == their_ids.shape else 0.0  # lists of other lengths
            ratios = sorted(t / o for o, t in zip(ours, theirs))
            line += (f", {version} {statistics.median(theirs):.3f} s; gpu-als / implicit "
                     f"speed: {statistics.median(ratios):.2f}x (rounds: {ratios[0]:.2f}-"
                     f"{ratios[-1]:.2f}x); same items for {same:.2%} of the {of}")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
