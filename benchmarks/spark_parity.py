"""gpu-als's half-step against Spark MLlib's ALS, factor for factor, on MovieLens 100K.

Spark's ``ALS.fit`` ends each iteration with the user half-step: its final user factors
solve each user's system against its final item factors. So, given Spark's item factors,
gpu-als's fold-in of every user (``ALS.from_factors(...).transform(R)``) must give Spark's
user factors, up to rounding, where the two solve the same problem. Four models, each
Spark's ``rank=10, maxIter=10, seed=0`` on the u1 split's training ratings (1 to 5):

* ``explicit``: ``regParam=0.1`` (ALS-WR), against ``feedback="explicit"``;
* ``implicit``: ``implicitPrefs=True, alpha=1.0, regParam=0.01``, against
  ``scale_regularization=True, alpha=1.0`` (Spark scales the implicit penalty by each
  row's positive entries: every entry here);
* ``explicit-nonnegative`` and ``implicit-nonnegative``: the same with
  ``nonnegative=True``, against ``solver="nnls"``;
* ``implicit, dislikes``: the implicit one on the ratings less 2.5, those of 1 and 2
  negative (dislikes: preference 0, confidence ``1 + alpha |r|``, and left out of the
  penalty's count);
* ``implicit, plain penalty``: Spark's implicit model against gpu-als's default
  (``scale_regularization=False``, Hu et al.'s penalty), which must not match: the check
  tells the two apart.

For each: the largest difference between the two sets of user factors, relative to the
largest factor, the RMSE (explicit) on ``u1.test`` of Spark's model and of a gpu-als fit
with the same settings, and Precision@10 (implicit). Needs pyspark (and Java 17), which
gpu-als does not install: ``make spark-check`` runs it in a venv of its own
(``.venv-spark``). Prints a Markdown table and writes the rows to ``--output`` as JSON.

    python benchmarks/spark_parity.py [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als import ALS  # noqa: E402
from gpu_als.datasets import load_movielens_100k  # noqa: E402
from gpu_als.evaluation import ranking_metrics  # noqa: E402

RANK, ITERATIONS, SEED = 10, 10, 0

#: name: (Spark's settings, gpu-als's[, a shift subtracted from the ratings])
CASES: dict[str, tuple] = {
    "explicit": ({"regParam": 0.1},
                 {"feedback": "explicit", "regularization": 0.1}),
    "implicit": ({"implicitPrefs": True, "alpha": 1.0, "regParam": 0.01},
                 {"feedback": "implicit", "alpha": 1.0, "regularization": 0.01,
                  "scale_regularization": True}),
    "explicit-nonnegative": ({"regParam": 0.1, "nonnegative": True},
                             {"feedback": "explicit", "regularization": 0.1,
                              "solver": "nnls"}),
    "implicit-nonnegative": ({"implicitPrefs": True, "alpha": 1.0, "regParam": 0.01,
                              "nonnegative": True},
                             {"feedback": "implicit", "alpha": 1.0, "regularization": 0.01,
                              "scale_regularization": True, "solver": "nnls"}),
    "implicit, dislikes": ({"implicitPrefs": True, "alpha": 1.0, "regParam": 0.01},
                           {"feedback": "implicit", "alpha": 1.0, "regularization": 0.01,
                            "scale_regularization": True}, 2.5),
    "implicit, plain penalty": ({"implicitPrefs": True, "alpha": 1.0, "regParam": 0.01},
                                {"feedback": "implicit", "alpha": 1.0,
                                 "regularization": 0.01}),
}


def as_frame(R: sp.csr_matrix):
    """``R``'s ratings as (user, item, rating) rows, the ids Spark sees."""
    import pandas as pd

    coo = R.tocoo()
    return pd.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                         "rating": coo.data.astype(np.float64)})


def factors_of(frame, n: int) -> np.ndarray:
    """Spark's ``userFactors``/``itemFactors`` as an (n, rank) array by id (0 for an id
    it has none for: an item without ratings in training)."""
    rows = frame.toPandas()
    out = np.zeros((n, RANK), np.float32)
    out[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy())
    return out


def host(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def rmse(predicted: np.ndarray, R: sp.csr_matrix) -> float:
    return float(np.sqrt(np.mean((predicted - R.tocoo().data) ** 2)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--backend", default="cpu",
                        help="gpu-als's backend for the half-step and the fit (default cpu)")
    args = parser.parse_args(argv)
    try:
        import pyspark
        from pyspark.ml.recommendation import ALS as SparkALS
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SystemExit(f"spark_parity.py needs pyspark ({exc}): `make spark-check` "
                         f"installs it in a venv of its own (and Spark needs Java 17)"
                         ) from None

    spark = (SparkSession.builder.master("local[2]").appName("gpu-als parity")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    movielens = load_movielens_100k()
    train, test = movielens.u1_base.tocsr(), movielens.u1_test.tocsr()
    n_users, n_items = train.shape
    test_coo = test.tocoo()
    rows = []
    print("| model | user factors: largest difference / largest factor | Spark | gpu-als |")
    print("|---|---:|---:|---:|")
    for name, (theirs, ours, *shift) in CASES.items():
        R = train.copy()
        R.data -= shift[0] if shift else 0.0
        started = time.perf_counter()
        spark_model = SparkALS(rank=RANK, maxIter=ITERATIONS, seed=SEED, userCol="user",
                               itemCol="item", ratingCol="rating", **theirs).fit(
            spark.createDataFrame(as_frame(R)))
        spark_seconds = time.perf_counter() - started
        X = factors_of(spark_model.userFactors, n_users)
        Y = factors_of(spark_model.itemFactors, n_items)
        # the user half-step against Spark's item factors, in float64
        folded = ALS.from_factors(X.astype(np.float64), Y.astype(np.float64),
                                  backend=args.backend, **ours)
        X_ours = host(folded.transform(R))
        difference = float(np.abs(X_ours - X).max() / np.abs(X).max())
        # a whole fit with the same settings (its own random start)
        model = ALS(factors=RANK, iterations=ITERATIONS, random_state=SEED,
                    backend=args.backend, show_progress=False, **ours).fit(R)
        if ours["feedback"] == "explicit":
            what = "RMSE on u1.test"
            spark_score = rmse((X[test_coo.row] * Y[test_coo.col]).sum(axis=1), test)
            our_score = rmse(host(model.predict(test_coo.row, test_coo.col)), test)
        else:
            what = "Precision@10 on u1.test"
            spark_score = ranking_metrics(ALS.from_factors(X, Y, backend="cpu"), R, test,
                                          K=10)["precision"]
            our_score = ranking_metrics(model, R, test, K=10)["precision"]
        rows.append({"model": name, "spark": theirs, "gpu_als": ours,
                     "ratings_less": shift[0] if shift else 0.0,
                     "user_factors_relative_difference": difference,
                     "metric": what, "spark_score": spark_score, "gpu_als_score": our_score,
                     "spark_seconds": spark_seconds})
        print(f"| {name} | {difference:.1e} | {what} {spark_score:.4f} | {our_score:.4f} |",
              flush=True)
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"pyspark": pyspark.__version__, "backend": args.backend, "rank": RANK,
                       "iterations": ITERATIONS, "rows": rows}, file, indent=1)
    spark.stop()


if __name__ == "__main__":
    main()
