"""Command line: ``gpu-als demo`` (more subcommands come with their issues)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import __version__

#: The reference document's table (protocol unstated, so not comparable to ours).
REFERENCE_TABLE = {"Random": (0.0096, 0.0036), "Popularity": (0.0817, 0.0399),
                   "ALS": (0.1316, 0.0675)}


def demo(args: argparse.Namespace) -> int:
    """Fit ALS on MovieLens 100K and compare it with the baselines (DESIGN.md section 6)."""
    from .datasets import load_movielens_100k, make_power_law
    from .evaluation import (
        PopularityRecommender,
        RandomRecommender,
        binarize,
        ranking_metrics,
        train_test_split,
    )
    from .model import ALS

    try:
        positives = binarize(load_movielens_100k().ratings, threshold=4)
        dataset = "MovieLens 100K (ratings >= 4 as positives)"
    except (OSError, ValueError) as exc:
        print(f"MovieLens 100K is unavailable: {exc}\n"
              "Running on synthetic power-law data instead (943 users x 1682 items).")
        positives = make_power_law(943, 1682, 55_000, random_state=args.seed)
        dataset = "synthetic power-law data"
    train, test = train_test_split(positives, test_fraction=0.2, random_state=args.seed)
    model = ALS(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                iterations=args.iterations, backend=args.backend, random_state=args.seed)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    rows = {
        "Random": ranking_metrics(RandomRecommender(args.seed).fit(train), train, test, K=10),
        "Popularity": ranking_metrics(PopularityRecommender().fit(train), train, test, K=10),
        "ALS": ranking_metrics(model, train, test, K=10),
    }
    print(f"\n{dataset}: {train.shape[0]} users x {train.shape[1]} items, "
          f"{train.nnz} train / {test.nnz} test positives, {rows['ALS']['users']} test users")
    print(f"ALS: factors={args.factors}, regularization={args.regularization}, "
          f"alpha={args.alpha}, iterations={args.iterations}; backend '{model.backend_}', "
          f"trained in {seconds:.2f} s\n")
    print(f"{'Model':<12}{'Recall@10':>11}{'NDCG@10':>10}   "
          f"{'reference doc (other protocol)':>30}")
    for name, metrics in rows.items():
        ref = REFERENCE_TABLE[name]
        print(f"{name:<12}{metrics['recall']:>11.4f}{metrics['ndcg']:>10.4f}   "
              f"{ref[0]:>19.4f} / {ref[1]:.4f}")
    if dataset.startswith("MovieLens"):
        print("\nUnder this protocol the implicit library 0.7.3 gets ALS 0.1972 / 0.2231 and "
              "Popularity 0.1134 / 0.1487 (DESIGN.md section 6).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-als", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpu-als {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="train on MovieLens 100K and compare with baselines")
    p.add_argument("--factors", type=int, default=64, help="latent factors (default 64)")
    p.add_argument("--regularization", type=float, default=0.001,
                   help="L2 penalty lambda (default 0.001)")
    p.add_argument("--alpha", type=float, default=10.0,
                   help="confidence scaling, c = 1 + alpha * r (default 10)")
    p.add_argument("--iterations", type=int, default=20, help="ALS sweeps (default 20)")
    p.add_argument("--backend", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where to train (default auto: the GPU when usable)")
    p.add_argument("--seed", type=int, default=42, help="split and initialisation seed")
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"gpu-als {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
