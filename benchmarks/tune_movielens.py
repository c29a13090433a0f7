"""Hyperparameter search on MovieLens 100K under the protocol of DESIGN.md section 6.

Searches on a validation split of the training positives only, then scores the best
configuration on the test split beside the reference document's settings (factors=64,
regularization=0.001, alpha=10, iterations=20).

    python benchmarks/tune_movielens.py [--no-halving] [--backend cpu] [--plot docs/tune.png]
        [--split time] [--random N]

``--split time`` holds out each user's latest 20 % of positives by u.data's timestamps
for the test, and the latest 20 % of the rest for validation
(:func:`gpu_als.evaluation.temporal_split`, ``tune(..., validation=...)``), instead of
20 % at random for each.

``--random N`` searches N configurations drawn from ranges (:data:`RANGES`: regularization
and alpha on a log scale) instead of the default grid of 45.

``--workers N`` trains the trials on a Dask ``LocalCluster`` of N worker processes of one
thread each (``tune(..., client=...)``), started before the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS, from_dataframe  # noqa: E402
from gpu_als.datasets import load_movielens_100k  # noqa: E402
from gpu_als.evaluation import (  # noqa: E402
    binarize,
    ranking_metrics,
    temporal_split,
    train_test_split,
)
from gpu_als.tune import tune  # noqa: E402

#: ``--random``'s search space: the default grid's factors, and regularization and alpha
#: drawn on a log scale over the default grid's span (and beyond it, for regularization).
RANGES = {"factors": [32, 64, 128], "regularization": scipy.stats.loguniform(0.001, 1),
          "alpha": scipy.stats.loguniform(1, 40)}


def split_by_time(u_data: Path):
    """MovieLens 100K's positives split by time: the train and test matrices (of the
    train part's users and items) and ``tune``'s arguments (the train part split again)."""
    import pandas as pd

    df = pd.read_csv(u_data, sep="\t", names=["user", "item", "rating", "timestamp"])
    positives = df.loc[df["rating"] >= 4, ["user", "item", "timestamp"]]
    train_df, test_df = temporal_split(positives, test_fraction=0.2)
    fit_df, validation_df = temporal_split(train_df, test_fraction=0.2)
    ids = ["user", "item"]
    train, users, items = from_dataframe(train_df[ids])
    test, _, _ = from_dataframe(test_df[ids], user_ids=users, item_ids=items,
                                drop_unknown=True)
    fit_part, validation = (from_dataframe(part[ids], user_ids=users, item_ids=items).matrix
                            for part in (fit_df, validation_df))
    return train, test, {"user_items": fit_part, "validation": validation}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-halving", action="store_true")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--split", choices=["random", "time"], default="random")
    parser.add_argument("--random", type=int, default=None, metavar="N",
                        help="N configurations drawn from RANGES instead of the grid")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="train the trials on a Dask LocalCluster of N processes")
    args = parser.parse_args(argv)
    with local_cluster(args.workers) as client:
        return search(args, client)


@contextlib.contextmanager
def local_cluster(workers: int | None):
    """A client of a LocalCluster of ``workers`` one-thread processes (None: none)."""
    if workers is None:
        yield None
        return
    import dask
    from dask.distributed import Client, LocalCluster

    from gpu_als.distributed import WORKER_MALLOC

    dask.config.set(WORKER_MALLOC)
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as \
            cluster, Client(cluster) as client:
        yield client


def search(args: argparse.Namespace, client) -> int:
    """The search of ``args``, on the cluster of ``client`` (None: this process)."""

    movielens = load_movielens_100k()
    if args.split == "random":
        train, test = train_test_split(binarize(movielens.ratings, 4), test_fraction=0.2,
                                       random_state=42)
        searched = {"user_items": train}
    else:
        train, test, searched = split_by_time(movielens.path / "u.data")
    start = time.perf_counter()
    with warnings.catch_warnings():  # validation's rows of items first rated in it
        warnings.filterwarnings("ignore", "of the .* entries of validation")
        result = tune(**searched, param_grid=RANGES if args.random else None,
                      n_samples=args.random, base_params={"backend": args.backend},
                      halving=not args.no_halving, random_state=42, show_progress=False,
                      client=client)
    wall = time.perf_counter() - start
    finished = sum(t["finished"] for t in result.trials)
    where = "" if client is None else f" ({args.workers} Dask workers)"
    print(f"{len(result.trials)} configurations ({finished} trained to 20 iterations) "
          f"in {wall:.1f} s on '{result.model.backend_}'{where}")
    print(f"best on validation: {result.best_params}, {result.metric} "
          f"{result.best_score:.4f}")
    reference = ALS(factors=64, regularization=0.001, alpha=10, iterations=20,
                    random_state=42, backend=args.backend, show_progress=False).fit(train)
    for name, model in (("best found", result.model), ("reference settings", reference)):
        m = ranking_metrics(model, train, test, K=10)
        print(f"test, {name:<18}: Recall@10 {m['recall']:.4f}  NDCG@10 {m['ndcg']:.4f}")
    if args.plot:
        from gpu_als.plots import plot_tuning

        print(f"plot: {plot_tuning(result, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
