"""The gpu-als command line: train, serve, evaluate and benchmark ALS models.

* ``demo``: MovieLens 100K under the protocol of DESIGN.md section 6; prints the reference
  document's table beside ours and writes the plots.
* ``train FILE``: fit on a CSV or Parquet file of (user, item, value) rows; save the model.
* ``recommend MODEL [FILE]``: top-N items per user as CSV; users the model lacks are folded
  in from their rows of FILE. ``recommend-users`` is the same the other way round: top-N
  users per item.
* ``similar MODEL``: the most similar items (or users) as CSV.
* ``explain MODEL FILE --user ID --items ...``: each item's score split over the user's
  items (``ALS.explain``) as CSV.
* ``evaluate FILE``: per-user split of the file (at random, or by ``--time-col``; or a
  ``--test`` file), fit, and ranking metrics against baselines.
* ``tune FILE``: hyperparameter search on a validation split (``gpu_als.tune``).
* ``predict MODEL FILE``, ``fold-in MODEL FILE``: scores of (user, item) pairs; a file's new
  users (or items) added to a model.
* ``info``: versions, the backends here, the GPU's limits; ``--compile`` builds the kernels.
* ``bench``: the benchmark (``gpu_als.benchmark``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import __version__
from ._id_queries import (
    examples,
    explain_by_id,
    factors_by_id,
    id_map,
    recommend_by_id,
    rows_against,
    similar_by_id,
)
from ._tables import (
    dask_frame,
    event_weights,
    fit_columns,
    no_ratings_column,
    read_frame,
    write_factors,
    write_table,
)
from ._urls import bucket_not_found, is_url, path_or_url, read_text
from ._urls import filesystem as url_filesystem
from .backends import BACKEND_NAMES
from .data import CONFIDENCES, DTYPES, FEEDBACKS, counted
from .datasets import MOVIELENS
from .evaluation import VALIDATION_METRICS, metric_name
from .model import SOLVERS

logger = logging.getLogger("gpu_als")

#: The reference document's table (protocol unstated, so not comparable to ours).
REFERENCE_TABLE = {"Random": (0.0096, 0.0036), "Popularity": (0.0817, 0.0399),
                   "ALS": (0.1316, 0.0675)}


# ---- shared pieces ----------------------------------------------------------------------

class _DefaultInt(int):
    """An int option's default value, told apart from the same number typed (see
    :func:`default`)."""


class _DefaultFloat(float):
    """A float option's default value (see :func:`default`)."""


class _DefaultStr(str):
    """A str option's default value (see :func:`default`)."""


#: The marked type of each option type's defaults.
_DEFAULT_TYPES = {int: _DefaultInt, float: _DefaultFloat, str: _DefaultStr}


def default(value: int | float | str):
    """``value`` as an option's default: equal to it, of a subclass of its type, so that
    :func:`model_params` can tell it from the same value given on the command line."""
    return _DEFAULT_TYPES[type(value)](value)


def add_model_options(parser: argparse.ArgumentParser, *,
                      regularization: float | None = None, iterations: int = 15) -> None:
    """The options of the ALS hyperparameters; ``regularization`` None: ALS's default,
    which depends on the feedback."""
    g = parser.add_argument_group("model hyperparameters (see gpu_als.ALS)")
    g.add_argument("--factors", type=at_least(1), default=default(64),
                   help="latent factors k (default 64)")
    g.add_argument("--regularization", type=real_at_least(0.0),
                   default=None if regularization is None else default(regularization),
                   help="L2 penalty lambda (default " + (
                       "0.01 for implicit feedback, 0.1 for explicit" if regularization is None
                       else str(regularization)) + ")")
    g.add_argument("--alpha", type=real_at_least(0.0), default=default(10.0),
                   help="implicit confidence scaling, c = 1 + alpha * r (default 10)")
    g.add_argument("--iterations", type=at_least(0), default=default(iterations),
                   help=f"ALS sweeps (default {iterations})")
    g.add_argument("--feedback", choices=FEEDBACKS, default=default("implicit"),
                   help="values are interaction amounts (implicit) or ratings (explicit) "
                        "(default implicit)")
    g.add_argument("--scale-regularization", action="store_true", default=None,
                   help="scale each user's and item's lambda by its number of entries "
                        "(ratings; with implicit feedback: positive entries, Spark's "
                        "implicit model; explicit feedback always does: ALS-WR)")
    g.add_argument("--confidence", choices=CONFIDENCES, default=default("linear"),
                   help="c = 1 + alpha*r (linear) or 1 + alpha*log(1 + r/epsilon) (log) "
                        "(default linear)")
    g.add_argument("--epsilon", type=real_at_least(0.0, strict=True), default=default(1.0),
                   help="scale of the log confidence (default 1)")
    g.add_argument("--solver", choices=SOLVERS, default=default("cholesky"),
                   help="exact per-row solves, conjugate-gradient steps, CG steps "
                        "preconditioned by Y^T Y + regularization I, or exact solves "
                        "with nonnegative factors (nnls: Spark's nonnegative=True) "
                        "(default cholesky)")
    g.add_argument("--cg-steps", type=at_least(1), default=default(3),
                   help="CG steps per row and half-step with --solver cg or pcg (default 3)")
    g.add_argument("--dtype", choices=[dtype.name for dtype in DTYPES], default=default("float32"),
                   help="precision of the factors and the solves (default float32)")
    g.add_argument("--backend", choices=BACKEND_NAMES, default=default("auto"),
                   help="where to train (default auto: the GPU when usable)")
    g.add_argument("--seed", type=at_least(0), default=default(42),
                   help="initialisation and split seed (default 42)")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, refused as the options are parsed
    (before any file is read)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


#: Endings of tables, not of a model file: ``-o trials.csv`` to train or tune would write
#: the model to ``trials.csv.npz`` after the whole fit (NumPy adds ``.npz``).
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".json", ".gz")


def file_path(text: str) -> Path | str:
    """An argparse ``type``: a path or URL to write, not empty (``Path("")`` is the working
    folder, and the error would call it a folder)."""
    if not text:
        raise argparse.ArgumentTypeError("is empty: give a file name")
    return path_or_url(text)


def model_file(text: str) -> Path | str:
    """An argparse ``type``: the path or URL of a model file to write, refused as the
    options are parsed where its name ends as a table's (``.csv``, ``.parquet`` ...)."""
    file_path(text)  # (not empty)
    stem = text
    while stem.lower().endswith(TABLE_SUFFIXES):  # results.csv.gz: results
        stem = stem[:stem.rindex(".")]
    if stem != text:
        raise argparse.ArgumentTypeError(f"{text!r} is named as a table: -o writes the "
                                         f"model, as .npz (ALS.save), e.g. -o {stem}.npz")
    return path_or_url(text)


def real_at_least(minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number >= ``minimum`` (> where ``strict``), refused
    as the options are parsed, as :func:`at_least` refuses integers."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, "
                                             f"got {value:g}")
        return value
    return parse


def fraction(text: str) -> float:
    """An argparse ``type``: a number strictly between 0 and 1 (a share held out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


#: The options of add_model_options (as argparse names them), and the ALS parameter each
#: sets where it is not the same name.
MODEL_OPTIONS = ("factors", "regularization", "alpha", "iterations", "feedback",
                 "scale_regularization", "confidence", "epsilon", "solver", "cg_steps",
                 "dtype", "backend", "seed")
PARAMETER_OF_OPTION = {"seed": "random_state"}
_DEFAULTS = tuple(_DEFAULT_TYPES.values())


def model_params(args: argparse.Namespace, *, given_only: bool = False) -> dict[str, Any]:
    """The model options as ALS's parameters: all of them, or (``given_only``) only those
    given on the command line."""
    params = {}
    for option in MODEL_OPTIONS:
        value = getattr(args, option)
        if value is None:  # not given, and left to ALS (the regularization by feedback)
            continue
        if isinstance(value, _DEFAULTS):
            if given_only:
                continue
            value = type(value).__mro__[1](value)  # the plain int, float or str
        params[PARAMETER_OF_OPTION.get(option, option)] = value
    return params


def make_model(args: argparse.Namespace, **overrides):
    """The model of the options, its hyperparameters checked (before any file is read)."""
    from .model import ALS

    model = ALS(**{**model_params(args), **overrides})
    model._check_params()
    return model


class IdList(argparse.Action):
    """An option of ids (``nargs="+"``): each value is an id, or ``@FILE``, the ids in FILE
    (a path or a URL), one per line (blank lines skipped), for lists too long to type."""

    def __call__(self, parser, namespace, values, option_string=None):
        ids: list[str] = []
        for value in values:
            if not value.startswith("@"):
                ids.append(value)
                continue
            try:  # (a BOM, as Excel writes, is not an id)
                text = read_text(value[1:], encoding="utf-8-sig")
            except (OSError, ValueError, RuntimeError) as exc:  # (UnicodeDecodeError too)
                raise argparse.ArgumentError(
                    self, f"{value}: cannot read the file of ids ({error_message(exc)}); an "
                          f"id that begins with @ is read from a file too") from None
            lines = [line.strip() for line in text.splitlines()]
            if not any(lines):
                raise argparse.ArgumentError(self, f"{value}: the file has no ids")
            ids += [line for line in lines if line]
        setattr(namespace, self.dest, ids)


#: The help of an IdList option's ``@FILE``.
ID_FILE_HELP = "; @FILE: the ids in FILE, one per line"
#: --min-value's help, of the held-out part that it applies to.
MIN_VALUE_HELP = ("count only {part} values >= this as relevant in the ranking metric "
                  "(e.g. 4 for ratings from 1 to 5; default: every {part} entry)")


def add_file_options(parser: argparse.ArgumentParser, *, optional: str | None = None,
                     values: str = "every row counts 1 if absent") -> None:
    """The interaction file and its columns; ``optional``: the file may be left out, and
    this says what it is for; ``values``: what the value column is for."""
    if optional:
        parser.add_argument("file", type=path_or_url, nargs="?", help=optional)
    else:
        parser.add_argument("file", type=path_or_url,
                            help="CSV (any delimiter; may be compressed, e.g. .csv.gz) or "
                                 "Parquet file, a folder of Parquet files, the URL of any "
                                 "of them (s3://..., through fsspec), or - for standard "
                                 "input")
    parser.add_argument("--user-col", default="user", help="user id column (default user)")
    parser.add_argument("--item-col", default="item", help="item id column (default item)")
    parser.add_argument("--value-col", default="value",
                        help=f"value column (default value; {values})")
    parser.add_argument("--sep", default=None,
                        help="CSV delimiter, taken literally (default: detected; a tab: "
                             "'\\t' or tab)")
    parser.add_argument("--encoding", default=None,
                        help="the CSV file's text encoding (default utf-8, or utf-16 for a "
                             "file that starts with its byte order mark, as Excel's "
                             "Unicode text does; e.g. latin-1, cp1252 for files from Excel "
                             "on Windows)")
    parser.add_argument("--decimal", default=".",
                        help="the CSV file's decimal mark (default .; --decimal , for "
                             "values written 4,5)")
    parser.add_argument("--no-header", action="store_true",
                        help="the CSV file has no header line: its columns are user, item "
                             "and value, in that order (more are ignored), as in "
                             "MovieLens' u.data")
    parser.add_argument("--event-weights", type=event_weights, default=None,
                        metavar="COLUMN=LABEL:WEIGHT,...",
                        help="make the values from an event log's column of labels, e.g. "
                             "event_type=view:1,cart:3,purchase:5 (every label needs a "
                             "weight; 0 leaves its rows out)")


def shown(file: Any) -> str:
    """An interaction file as messages name it: ``-`` is standard input."""
    return "standard input" if str(file) == "-" else str(file)


def destination(output: str) -> str:
    """Where a table was written, for a command's closing line: ``-`` is standard output."""
    return "standard output" if output == "-" else output


def read_interactions(args: argparse.Namespace, feedback: str | None = None):
    """The file as (matrix, user_ids, item_ids), through gpu_als.data.from_dataframe;
    ``feedback`` (default: the option's) "explicit" needs a value column."""
    start = time.perf_counter()
    df = read_frame(args)
    logger.info("read %s: %s rows in %.2f s", shown(args.file), f"{len(df):,}",
                time.perf_counter() - start)
    return coded_interactions(args, df, feedback)


def values_dtype(args: argparse.Namespace) -> str:
    """The dtype a command reads its file's values in: float32 for a model of float32
    (the default ``--dtype``, without ``--init``), else float64, which a model of float64
    takes whole (``--dtype float64``, a model to go on from, tune's ``--grid
    dtype=float64``: values beyond float32's range were refused there as "beyond
    float32's range ... use dtype=float64")."""
    if getattr(args, "dtype", "float64") == "float32" and getattr(args, "init", None) is None:
        return "float32"
    return "float64"


def coded_interactions(args: argparse.Namespace, df, feedback: str | None = None):
    """:func:`read_interactions` of a DataFrame read from ``args.file``."""
    from .data import from_dataframe, warn_summed_ratings

    feedback = feedback or getattr(args, "feedback", None)
    if feedback == "explicit" and args.value_col not in df.columns:
        raise no_ratings_column(shown(args.file), args.value_col,
                                df.attrs.get("file_columns", df.columns))
    start = time.perf_counter()
    interactions = from_dataframe(df, args.user_col, args.item_col, args.value_col,
                                  dtype=values_dtype(args))
    logger.info("coded its %s users and %s items in %.2f s",
                f"{len(interactions.user_ids):,}", f"{len(interactions.item_ids):,}",
                time.perf_counter() - start)
    if feedback == "explicit":
        warn_summed_ratings(len(df), interactions.matrix, (args.user_col, args.item_col))
    return interactions


def print_table(rows: dict[str, dict[str, float]], columns: list[tuple[str, str]]) -> None:
    """One row per model, one column per metric; each column at least 11 wide and two more
    than its title (``Recall@5000``)."""
    widths = [max(11, len(title) + 2) for _, title in columns]
    print(f"{'Model':<12}" + "".join(f"{title:>{w}}" for (_, title), w in zip(columns, widths)))
    for name, metrics in rows.items():
        print(f"{name:<12}" + "".join(f"{metrics[key]:>{w}.4f}"
                                      for (key, _), w in zip(columns, widths)))


# ---- demo ---------------------------------------------------------------------------

def demo(args: argparse.Namespace) -> int:
    """Fit ALS on MovieLens 100K and compare it with the baselines (DESIGN.md section 6)."""
    from .datasets import load_movielens_100k, make_power_law
    from .evaluation import (
        PopularityRecommender,
        RandomRecommender,
        binarize,
        personalization,
        ranking_metrics,
        train_test_split,
    )

    try:
        positives = binarize(load_movielens_100k().ratings, threshold=4)
        dataset = "MovieLens 100K (ratings >= 4 as positives)"
    except (OSError, ValueError) as exc:
        print(f"{exc}\nRunning on synthetic power-law data instead (943 users x 1682 "
              f"items).")  # (the loader's errors name MovieLens 100K)
        positives = make_power_law(943, 1682, 55_000, random_state=args.seed)
        dataset = "synthetic power-law data"
    train, test = train_test_split(positives, test_fraction=0.2, random_state=args.seed)
    model = make_model(args)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    recommenders = {"Random": RandomRecommender(args.seed).fit(train),
                    "Popularity": PopularityRecommender().fit(train), "ALS": model}
    rows = {name: ranking_metrics(recommender, train, test, K=10, show_progress=False)
            for name, recommender in recommenders.items()}
    print(f"\n{dataset}: {train.shape[0]:,} users x {train.shape[1]:,} items, "
          f"{train.nnz:,} train / {test.nnz:,} test positives, {rows['ALS']['users']:,} test "
          f"users")
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

    users = np.arange(train.shape[0])
    start = time.perf_counter()
    ids, _ = model.recommend(users, train, N=10)
    recommend_ms = (time.perf_counter() - start) * 1e3
    mix = personalization(ids, train.shape[1])
    popular, _ = PopularityRecommender().fit(train).recommend(users, train, N=10)
    print(f"\nrecommend(): all {len(users)} users at N=10 in {recommend_ms:.1f} ms "
          f"({model.backend_})")
    print(f"Personalization: {mix['personalization']:.3f} (1 - mean share of a top-10 that two "
          f"users have in common; popularity: "
          f"{personalization(popular, train.shape[1])['personalization']:.3f}); "
          f"{mix['coverage']:.1%} of the items are recommended to someone")
    write_demo_plots(model, train, Path(args.output))
    return 0


def write_demo_plots(model, train, folder: Path) -> None:
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    factors = model._backend.to_numpy(model.item_factors_)
    try:
        loss = plots.plot_loss(model.loss_history_, folder / "loss.png")
        if factors.shape[1] < 2:  # (it failed after the results, with exit status 2)
            print(f"\nPlot: {loss} (training loss); no PCA of the item factors: "
                  f"--factors 1 has one component, and the chart shows two")
            return
        popularity = np.asarray(train.sum(axis=0)).ravel()
        embedding = plots.plot_item_pca(factors, popularity, folder / "item_pca.png")
    except ImportError as exc:
        print(f"\nNo plots: {exc}")
        return
    print(f"\nPlots: {loss} (training loss), {embedding} (item factors, PCA)")


# ---- train and evaluate --------------------------------------------------------------

def train(args: argparse.Namespace) -> int:
    if args.early_stopping is not None and args.init is not None:
        raise ValueError("--early-stopping does not combine with --init: the model to go on "
                         "from may have seen the interactions held out for validation, which "
                         "would favour stopping at once")
    if args.init is None:
        model = make_model(args)
    else:  # its hyperparameters but those given, its factors for the ids it knows
        model = load_model(args.init, backend=model_params(args)["backend"])
        given = model_params(args, given_only=True)
        kept = model.user_factors_.shape[1]
        if given.get("factors", kept) != kept:
            raise ValueError(f"--factors {given['factors']} with --init {args.init}, a model "
                             f"of {kept} factors: going on from it keeps them (leave "
                             f"--factors out, or leave --init out to train afresh)")
        model.set_params(**given)
        model._check_params()
        # a model without ids (as implicit's): its row numbers, as recommend reads them
        model.user_ids_ = id_map(model.user_ids_, len(model.user_factors_))
        model.item_ids_ = id_map(model.item_ids_, len(model.item_factors_))
    if args.time_col is not None and args.early_stopping is None:
        raise ValueError("--time-col chooses --early-stopping's validation interactions (each "
                         "user's latest): give --early-stopping too")
    if args.validation is not None and args.early_stopping is None:
        raise ValueError("--validation holds --early-stopping's validation interactions: "
                         "give --early-stopping too")
    if args.min_value is not None and args.early_stopping is None:
        raise ValueError("--min-value chooses the validation interactions that "
                         "--early-stopping's metric counts as relevant: give "
                         "--early-stopping too")
    check_min_value(args, early_stopping_metric(args, model))
    check_one_validation(args)
    if args.read_on_workers and args.scheduler is None:
        raise ValueError("--read-on-workers has the workers of a Dask cluster read the file: "
                         "give the cluster's --scheduler too")
    if args.read_on_workers and args.early_stopping is not None and args.validation is None:
        raise ValueError("--read-on-workers with --early-stopping validates on the rows of "
                         "a --validation file: the file the workers read is never in this "
                         "process to split (give --validation, or leave --read-on-workers "
                         "out)")
    with fitting_on(args.scheduler) as (fit, where, client):  # a cluster that fails: first
        parts = frame = None
        if args.read_on_workers:
            frame = dask_frame(args, model.feedback)
        elif args.time_col is not None:
            matrix, user_ids, item_ids, *parts = coded_parts_by_time(args, model.feedback)
        elif args.validation is not None:
            matrix, user_ids, item_ids, *parts = coded_given_parts(args, model.feedback)
        else:
            matrix, user_ids, item_ids = read_interactions(args, feedback=model.feedback)
        start = time.perf_counter()
        saved_warm_start = model.warm_start  # --init is this command's, not the model's
        model.set_params(warm_start=args.init is not None)
        if args.early_stopping is not None and frame is not None:
            iterations, frame = early_stopping_on_workers(args, model, frame, fit, client)
            model.set_params(iterations=iterations)
        elif args.early_stopping is not None:
            model.set_params(iterations=iterations_by_early_stopping(
                args, model, matrix, user_ids, item_ids, fit, parts))
        if frame is None:
            fit(model, matrix, user_ids=user_ids, item_ids=item_ids)
            shape, size, done = matrix.shape, f", {counted(matrix.nnz, 'interaction')}", \
                "trained"
        else:  # (the interactions, counted by the workers, are logged there)
            fit_read_on_workers(fit, model, frame, args.file)
            shape = (len(model.user_factors_), len(model.item_factors_))
            size, done = "", "read and trained"
        model.set_params(warm_start=saved_warm_start)
    loss = f", final loss {model.loss_history_[-1]:.6g}" if model.loss_history_ else ""
    print(f"{shown(args.file)}: {counted(shape[0], 'user')} x {counted(shape[1], 'item')}"
          f"{size}; {done} on {where or repr(str(model.backend_))}"
          f"{f' from {args.init}' if args.init else ''} in "
          f"{time.perf_counter() - start:.2f} s{loss}")
    written = model.save(args.output)
    print(f"saved to {written} (load with gpu_als.ALS.load)")
    return 0


def fit_read_on_workers(fit, model, frame, file: Path | str) -> None:
    """``train --read-on-workers``: ``fit`` (:func:`fitting_on`'s, on a cluster) of
    ``model`` on the Dask DataFrame ``frame`` of the Parquet ``file``, which the workers
    read by its path or URL; a worker that finds no file there is said to need it."""
    try:
        fit(model, frame)
    except FileNotFoundError as exc:
        where = ("through fsspec, as this process does: give them its protocol's package "
                 "and credentials" if is_url(file) else
                 f"at {Path(file).resolve()}, as this process does (a shared file system)")
        raise FileNotFoundError(
            f"a worker cannot read {file} ({error_message(exc)}): --read-on-workers has "
            f"every worker read it {where}; or leave --read-on-workers out to read it "
            f"here") from exc


@contextlib.contextmanager
def fitting_on(scheduler: str | None):
    """``train``'s fit, as ``fit(model, matrix, user_ids=, item_ids=)``, where it runs
    (None: this process) and the Dask client: ``model.fit`` (and None); or, with
    ``--scheduler``, :func:`gpu_als.distributed.fit_distributed` on that Dask cluster,
    through a client that is closed when the context ends."""
    with dask_client(scheduler) as client:
        if client is None:
            yield (lambda model, matrix, **ids: model.fit(matrix, **ids)), None, None
            return
        from .distributed import fit_distributed

        def fit(model, matrix, **ids):
            return fit_distributed(model, matrix, client, **ids)

        yield fit, f"the Dask cluster at {scheduler}", client


@contextlib.contextmanager
def dask_client(scheduler: str | None):
    """A client of the Dask cluster whose scheduler is at ``--scheduler``'s address,
    closed when the context ends (None without one); an address that is not one, or
    where no scheduler answers, is refused with what to do."""
    if scheduler is None:
        yield None
        return
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise RuntimeError("--scheduler needs Dask: pip install gpu-als[dist]") from exc
    from distributed.comm.addressing import parse_address, parse_host_port

    try:  # before the Client: one that fails on its address waits 60 s as it is freed
        protocol, location = parse_address(scheduler)
        if protocol in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError:  # (Dask's words: "missing port number", "invalid literal for int()")
        raise ValueError(f"--scheduler {scheduler}: not a scheduler's address; give it as "
                         f"tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786") from None
    try:
        client = Client(scheduler, set_as_default=False)
    except OSError as exc:  # Dask's "Timed out trying to connect"
        raise OSError(f"--scheduler {scheduler}: no Dask scheduler answered ({exc}); start "
                      f"one there with `dask scheduler`, and its workers with `dask worker "
                      f"{scheduler}`") from exc
    with client:
        yield client


def early_stopping_metric(args: argparse.Namespace, model) -> str:
    """``train --early-stopping``'s ``--metric``: by default recall, or the RMSE for a
    model of explicit ratings."""
    return args.metric or ("rmse" if model.feedback == "explicit" else "recall")


def iterations_by_early_stopping(args: argparse.Namespace, model, matrix, user_ids,
                                 item_ids, fit, parts=None) -> int:
    """``train --early-stopping``: how many iterations to train ``model`` (not fitted) for,
    found by a fit (``fit``, as :func:`fitting_on` gives it) of a copy on all but
    ``--validation-fraction`` of each user's interactions (at random; or ``parts``, the
    two matrices of :func:`coded_parts` and how they were split, in words) that
    :class:`gpu_als.evaluation.EarlyStopping` stops once ``--metric`` on the rest has not
    improved for ``--early-stopping`` iterations."""
    from .evaluation import EarlyStopping, held_out_split, scorable_part
    from .model import ALS

    metric = early_stopping_metric(args, model)
    fraction = args.validation_fraction
    if parts is None:
        fit_part, validation = held_out_split(matrix, fraction, args.seed, "validation",
                                              "--early-stopping: ")
        held_out = f"{fraction:.0%} of each user's interactions held out"
    else:
        fit_part, validation, held_out = parts
        validation = scorable_part(fit_part, validation)[0]  # (the rest counted before)
        if validation.nnz == 0:
            raise ValueError("--early-stopping: no validation interaction can be scored (each "
                             "is of a new user or item, or a pair already in the rest)")
    validation = relevant_part(args, validation, "nothing to validate on")
    probe = ALS(**model.get_params())
    stop = EarlyStopping(probe, fit_part, validation, metric=metric, K=args.K,
                         patience=args.early_stopping, restore_best=False,
                         max_users=args.validation_users, random_state=args.seed)
    probe.set_params(callback=stop)
    fit(probe, fit_part, user_ids=user_ids, item_ids=item_ids)
    return best_iterations(args, model, stop, held_out,
                           int((stop.validation.getnnz(axis=1) > 0).sum()))


def best_iterations(args: argparse.Namespace, model, stop, held_out: str, users: int) -> int:
    """The iterations that the fit of ``stop`` (an :class:`EarlyStopping
    <gpu_als.evaluation.EarlyStopping>` of ``--early-stopping``, on ``held_out``, said in
    words, of ``users`` users) found best for ``model``, and the line that says so."""
    if stop.best_iteration is None:  # --iterations 0
        return 0
    best = stop.best_iteration + 1
    name = metric_name(early_stopping_metric(args, model), args.K)
    ran = (f"stopped after {stop.stopped_iteration + 1}" if stop.stopped_iteration is not None
           else "ran all")
    scored = "" if args.validation_users is None else f" (a sample of {counted(users, 'user')})"
    if args.min_value is not None:
        scored += f" (values >= {args.min_value:g} relevant)"
    print(f"early stopping: {name} on {held_out}{scored} was best, {stop.best_score:.4f}, "
          f"after {best} iteration(s) ({ran} of {model.iterations}); training on all of them "
          f"for {best}")
    return best


def early_stopping_on_workers(args: argparse.Namespace, model, frame, fit, client):
    """``train --read-on-workers --early-stopping --validation FILE``: the iterations to
    train ``model`` for (:func:`best_iterations`), found by a fit of a copy on the
    workers' Dask DataFrame ``frame`` (``fit`` and ``client``: :func:`fitting_on`'s)
    validated on the rows of ``--validation``, which this process reads; and the Dask
    DataFrame of both files, to train ``model`` on. Of ``frame``'s rows only those of the
    validation users come to this process: their items are left out of their rankings,
    and a validation pair among them is not scored (as of the file read here).
    ``--validation-users`` draws its users first, so that only theirs come, before the
    pairs already in the rest are left out; the command without ``--read-on-workers``
    draws after: another sample."""
    import dask.dataframe as dd

    from .evaluation import EarlyStopping, _sample_frame_users
    from .model import ALS

    validation = fit_columns(read_second_file(args, args.validation), args)
    if set(validation.columns) != set(frame.columns):
        raise ValueError(f"--validation {shown(args.validation)} has the columns "
                         f"{sorted(validation.columns)} and {shown(args.file)} "
                         f"{sorted(frame.columns)} (as fit(df) names them): give both files "
                         f"the same")
    both = dd.concat([frame, dd.from_pandas(validation[list(frame.columns)],
                                            npartitions=1)])
    scored = validation
    if args.validation_users is not None:
        scored = _sample_frame_users(scored, args.validation_users, args.seed)
    users = scored["user"].unique()
    train = client.compute(frame[frame["user"].isin(list(users))]).result()
    pairs = train[["user", "item"]].drop_duplicates()
    fresh = scored.merge(pairs, on=["user", "item"], how="left", indicator=True)[
        "_merge"].eq("left_only").to_numpy()
    held_out = f"the rows of {shown(args.validation)}"
    print(f"validating on {held_out}: {len(validation):,} rows"
          + (f" ({counted(int((~fresh).sum()), 'pair')} already in the rest not scored"
             f"{' of the users sampled' if len(scored) < len(validation) else ''})"
             if not fresh.all() else ""))
    scored = scored[fresh]
    if args.min_value is not None:  # (a file without values: each row counts 1)
        values = scored["value"].to_numpy() if "value" in scored.columns else \
            np.ones(len(scored))
        scored = scored[values >= args.min_value]
    if len(scored) == 0:
        raise ValueError(f"--early-stopping: no row of --validation {shown(args.validation)} "
                         f"can be scored (each of a pair already in {shown(args.file)}"
                         + (f", or of a value below --min-value {args.min_value:g}"
                            if args.min_value is not None else "") + ")")
    probe = ALS(**model.get_params())
    stop = EarlyStopping(probe, train, scored, metric=early_stopping_metric(args, model),
                         K=args.K, patience=args.early_stopping, restore_best=False,
                         random_state=args.seed)
    probe.set_params(callback=stop)
    fit(probe, frame)
    return best_iterations(args, model, stop, held_out, len(users)), both


def check_min_value(args: argparse.Namespace, metric: str | None = None) -> None:
    """``--min-value`` (``evaluate``, ``tune``, ``train --early-stopping``): a finite number,
    and not for ``--metric rmse``, which scores every rating."""
    if args.min_value is None:
        return
    if not np.isfinite(args.min_value):
        raise ValueError(f"--min-value must be a finite number, got {args.min_value}")
    if metric == "rmse":
        raise ValueError("--min-value chooses the held-out interactions a ranking metric "
                         "counts as relevant; --metric rmse scores every rating")


def relevant_part(args: argparse.Namespace, held_out, nothing: str):
    """The entries of the ``held_out`` matrix that the ranking metrics count as hits: those
    of a value of at least ``--min-value`` (all without it); a ValueError that ends in
    ``nothing`` where none is left."""
    from .evaluation import binarize

    if args.min_value is None:
        return held_out
    relevant = binarize(held_out, args.min_value)
    if relevant.nnz == 0:
        raise ValueError(f"no held-out interaction has a value >= --min-value "
                         f"{args.min_value:g}: {nothing}")
    return relevant


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation import (
        PopularityRecommender,
        RandomRecommender,
        auc,
        held_out_split,
        ranking_metrics,
        rmse,
    )

    check_min_value(args)
    model = make_model(args)
    for option, value in (("--cutoff", args.cutoff), ("--latest", args.latest)):
        if value is not None and args.time_col is None:
            raise ValueError(f"{option} holds out by time: name the column of the times with "
                             f"--time-col")
    given = [option for option, value in (("--test-fraction", args.test_fraction),
                                          ("--latest", args.latest),
                                          ("--cutoff", args.cutoff),
                                          ("--test", args.test)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: give one way to hold out (a share of each "
                         f"user's interactions, each user's latest K, all at or after a "
                         f"time, or a test file)")
    if args.test is not None and args.time_col is not None:
        raise ValueError("--test and --time-col: the test file is the held-out part; "
                         "--time-col splits FILE instead")
    if args.test is not None:
        train_m, test_m, held_out = scorable_parts(
            args, read_frame(args), read_second_file(args, args.test),
            f"the rows of {shown(args.test)}", f"every row of {shown(args.test)}")
    elif args.time_col is None:
        matrix, _, _ = read_interactions(args)
        train_m, test_m = held_out_split(matrix, held_out_fraction(args), args.seed, "testing",
                                         f"{shown(args.file)}: ")
        held_out = f"{held_out_fraction(args):.0%} of each user's, seed {args.seed}"
    else:
        train_m, test_m, held_out = split_by_time(args)
    relevant = relevant_part(args, test_m, "nothing to test")  # the ranking's hits
    start = time.perf_counter()
    model.fit(train_m)
    seconds = time.perf_counter() - start
    print(f"{shown(args.file)}: {counted(train_m.shape[0], 'user')} x "
          f"{counted(train_m.shape[1], 'item')}; "
          f"{train_m.nnz:,} train / {test_m.nnz:,} test interactions ({held_out}"
          + ("" if args.min_value is None else
             f"; {relevant.nnz:,} of them >= {args.min_value:g} count as relevant")
          + f"); trained on '{model.backend_}' in {seconds:.2f} s\n")
    cutoffs = list(dict.fromkeys(args.K))  # (each once, in the order given)
    scored: dict[int, dict[str, dict[str, float]]] = {K: {} for K in cutoffs}
    for name, recommender in (("Random", RandomRecommender(args.seed).fit(train_m)),
                              ("Popularity", PopularityRecommender().fit(train_m)),
                              ("ALS", model)):
        at = ranking_metrics(recommender, train_m, relevant, K=cutoffs)  # one ranking
        area = {} if args.no_auc else {"auc": auc(recommender, train_m, relevant)}
        for K in cutoffs:
            scored[K][name] = {**at[K], **area}
    metrics = ["precision", "recall", "ndcg", "map"] + ([] if args.no_auc else ["auc"])
    for K in cutoffs:
        print("" if K == cutoffs[0] else "\n", end="")
        print_table(scored[K], list(zip(metrics, [f"P@{K}", f"Recall@{K}", f"NDCG@{K}",
                                                  f"MAP@{K}", "AUC"])))
    if args.feedback == "explicit":
        error = rmse(model, test_m)
        for K in cutoffs:
            scored[K]["ALS"]["rmse"] = error
        metrics.append("rmse")
        print(f"\nRMSE of the predicted test values: {error:.4f}")
        if any(rows["ALS"]["recall"] < rows["Popularity"]["recall"]
               for rows in scored.values()):
            print("ALS ranks below popularity here, as models of explicit ratings often do: "
                  "it orders items by predicted rating, and an item with few ratings gets an "
                  "extreme one. For top-N lists, train on implicit feedback (without "
                  "--feedback explicit; the ratings are then confidences), which learns what "
                  "each user chose to rate.")
    if args.output is not None:  # a row per model and K
        table = [(name, K, row) for K, rows in scored.items() for name, row in rows.items()]
        columns = {"model": np.array([name for name, _, _ in table]),
                   "K": np.array([K for _, K, _ in table]),
                   **{key: np.array([row.get(key, np.nan) for _, _, row in table])
                      for key in metrics},
                   "users": np.array([row["users"] for _, _, row in table])}
        write_table(args.output, columns, scores=tuple(metrics))
        print(f"\nmetrics written to {args.output}")
    return 0


def held_out_fraction(args: argparse.Namespace) -> float:
    """``evaluate --test-fraction``, 0.2 where not given."""
    return 0.2 if args.test_fraction is None else args.test_fraction


def file_parts_by_time(args: argparse.Namespace, fraction: float, cutoff: str | None = None,
                       latest: int | None = None):
    """The file read and split by :func:`gpu_als.evaluation.temporal_split` on
    ``--time-col``: each user's latest ``fraction`` of rows (or ``latest`` rows, for the
    users with more), or those at or after ``--cutoff`` (``cutoff``), as the earlier and
    the later DataFrame (without the times, so that a file without values is counted as
    if it had no other column), and how the later one was held out, in words."""
    from .evaluation import temporal_split

    df = read_frame(args)
    df[args.time_col] = _time_column(df, args.time_col)
    if latest is not None:
        earlier, later = temporal_split(df, args.time_col, user_col=args.user_col, K=latest)
        which = "interaction" if latest == 1 else f"{latest} interactions"
        held_out = f"each user's latest {which} by {args.time_col!r}"
    elif cutoff is None:
        earlier, later = temporal_split(df, args.time_col, user_col=args.user_col,
                                        test_fraction=fraction)
        held_out = f"each user's latest {fraction:.0%} by {args.time_col!r}"
    else:
        value: Any = cutoff
        if df[args.time_col].dtype.kind in "iuf":
            try:
                value = float(cutoff)
            except ValueError:
                raise ValueError(f"--cutoff {cutoff}: column {args.time_col!r} holds "
                                 f"numbers, so give one{_as_unix_seconds(cutoff)}") from None
        try:
            earlier, later = temporal_split(df, args.time_col, cutoff=value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace(f"cutoff={value!r}", f"--cutoff {cutoff}")
                            ) from None
        held_out = f"those at or after {cutoff} by {args.time_col!r}"
    return earlier.drop(columns=args.time_col), later.drop(columns=args.time_col), held_out


def split_by_time(args: argparse.Namespace):
    """``evaluate --time-col``: the file split by :func:`file_parts_by_time`, as the
    train matrix of the users and items of the earlier part and the test matrix of the
    later part's interactions that a model of them can be asked about (a new user or item,
    or a pair already in train, is left out and counted), and how they were held out, in
    words."""
    train_df, test_df, held_out = file_parts_by_time(args, held_out_fraction(args),
                                                     args.cutoff, args.latest)
    return scorable_parts(args, train_df, test_df, held_out, "every held-out row")


def scorable_parts(args: argparse.Namespace, train_df, test_df, held_out: str,
                   tested: str):
    """``evaluate``'s train and test matrices of two DataFrames (the parts of a split by
    time, or the file and the ``--test`` file): the train matrix of ``train_df``'s users
    and items, and the test matrix of ``test_df``'s interactions that a model of them can
    be asked about (a new user or item, or a pair already in train, is left out and
    counted in ``held_out``, the words that say how the test part was held out);
    ``tested``: what the test rows are called where none is left."""
    from .data import frame_positions, warn_summed_ratings
    from .evaluation import scorable_part

    train_m, users, items = coded_interactions(args, train_df)
    (test_m, _, _), rows, columns = frame_positions(
        test_df, args.user_col, args.item_col, args.value_col, dtype=values_dtype(args),
        user_ids=users, item_ids=items, drop_unknown=True)
    known = (rows >= 0) & (columns >= 0)
    new = int((~known).sum())
    if args.feedback == "explicit":
        warn_summed_ratings(int(known.sum()), test_m, (args.user_col, args.item_col))
    test_m, _, shared = scorable_part(train_m, test_m)  # (its users and items: train's)
    if new or shared:
        held_out += f"; {unscorable(new, shared, 'train')} left out"
    if test_m.nnz == 0:
        raise ValueError(f"{shown(args.file)}: {tested} names a user or item not in the "
                         f"train part, or a pair already in it: nothing to test")
    return train_m, test_m, held_out


def coded_parts_by_time(args: argparse.Namespace, feedback: str | None = None):
    """``tune --time-col`` and ``train --early-stopping --time-col``: :func:`coded_parts`
    of the file's earlier part and each user's latest ``--validation-fraction``
    (:func:`file_parts_by_time`)."""
    earlier, later, held_out = file_parts_by_time(args, args.validation_fraction)
    return coded_parts(args, earlier, later, held_out, feedback)


def coded_given_parts(args: argparse.Namespace, feedback: str | None = None):
    """``tune --validation`` and ``train --early-stopping --validation``:
    :func:`coded_parts` of the file and the validation file (read with the same
    options)."""
    return coded_parts(args, read_frame(args), read_second_file(args, args.validation),
                       f"the rows of {shown(args.validation)}", feedback)


def read_second_file(args: argparse.Namespace, path: Path | str):
    """The file at ``path`` (``--test``'s, ``--validation``'s) as ``read_frame`` reads
    FILE: with the same columns, delimiter, encoding and event weights."""
    return read_frame(argparse.Namespace(**{**vars(args), "file": path}))


def check_one_validation(args: argparse.Namespace) -> None:
    """Refuse ``--validation`` with ``--time-col``: each names the validation rows."""
    if args.validation is not None and args.time_col is not None:
        raise ValueError("--validation and --time-col: the validation file is the held-out "
                         "part; --time-col splits FILE instead")


def coded_parts(args: argparse.Namespace, earlier, later, held_out: str,
                feedback: str | None = None):
    """Two DataFrames of a split, ``earlier`` to fit on and ``later`` to validate on (split
    as ``held_out`` says, in words), as ``(matrix, user_ids, item_ids)`` of both together
    and the two parts as matrices in its ids, and ``held_out``; the validation rows that
    cannot be scored (:func:`unscorable`) are counted in a printed line, and left for the
    scoring to leave out."""
    import pandas as pd

    from .data import from_dataframe
    from .evaluation import scorable_part

    matrix, user_ids, item_ids = coded_interactions(args, pd.concat([earlier, later]),
                                                    feedback)
    fit_part, validation = (from_dataframe(part, args.user_col, args.item_col,
                                           args.value_col, dtype=values_dtype(args),
                                           user_ids=user_ids, item_ids=item_ids).matrix
                            for part in (earlier, later))
    _, new, shared = scorable_part(fit_part, validation)
    print(f"validating on {held_out}: {len(later):,} of the {len(earlier) + len(later):,} rows"
          + (f" ({unscorable(new, shared, 'the rest')} not scored)" if new or shared else ""))
    return matrix, user_ids, item_ids, fit_part, validation, held_out


def unscorable(new: int, shared: int, earlier: str) -> str:
    """``"86 interactions of new users or items and 12 pairs already in train"``: the
    held-out interactions of a split by time that a model of the ``earlier`` part cannot
    be scored on, in words."""
    return " and ".join([f"{counted(new, 'interaction')} of new users or items"] * bool(new)
                        + [f"{counted(shared, 'pair')} already in {earlier}"] * bool(shared))


def _as_unix_seconds(text: str) -> str:
    """`` (if they are Unix seconds, 1998-03-01 is 888710400)`` for a date, else a
    hint of what a number of a time is."""
    import pandas as pd

    try:
        seconds = pd.Timestamp(text, tz="UTC").timestamp()
    except (TypeError, ValueError):
        return " (e.g. Unix seconds)"
    return f" (if they are Unix seconds, {text} is {seconds:.0f})"


def _time_column(df, name: str):
    """Column ``name`` of a file as numbers or datetimes: text (as CSV files hold dates)
    read as datetimes, each in UTC where it names a time zone."""
    import pandas as pd

    column = df[name]
    if column.dtype.kind in "iufmM" or isinstance(column.dtype, pd.DatetimeTZDtype):
        return column
    try:
        with warnings.catch_warnings():  # (pandas' "could not infer format")
            warnings.simplefilter("ignore", UserWarning)
            return pd.to_datetime(column, utc=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--time-col {name}: its values are neither numbers nor dates and "
                         f"times ({exc})") from None


#: ``--grid NAME=KIND:LOW:HIGH``: the distributions a search can draw a value from, with
#: ``--n-samples`` (randint's HIGH included, as a range written so reads).
GRID_DISTRIBUTIONS = ("loguniform", "uniform", "randint")


#: What ``--or`` puts among the ``--grid`` options: the start of another grid.
GRID_BREAK = "--or"


def parse_grid(items: list[str] | None) -> dict[str, Any] | list[dict[str, Any]] | None:
    """``["factors=32,64", "alpha=1,10"]`` -> ``{"factors": [32, 64], "alpha": [1.0, 10.0]}``;
    ``regularization=loguniform:0.0001:0.1`` -> a scipy.stats distribution; grids apart
    (:data:`GRID_BREAK` between them, from ``--or``) -> a list of them."""
    if not items:
        return None
    if GRID_BREAK not in items:
        return _parse_one_grid(items)
    groups: list[list[str]] = [[]]
    for item in items:
        if item == GRID_BREAK:
            groups.append([])
        else:
            groups[-1].append(item)
    if not all(groups):
        raise ValueError("--or stands between two sets of --grid options, each one grid "
                         "(e.g. --grid feedback=implicit --grid alpha=1,10 --or --grid "
                         "feedback=explicit)")
    return [_parse_one_grid(group) for group in groups]


def _parse_one_grid(items: list[str]) -> dict[str, Any]:
    """One grid of :func:`parse_grid`."""
    grid: dict[str, Any] = {}
    for item in items:
        name, _, values = item.partition("=")
        if not name or not values:
            raise ValueError(f"--grid {item!r}: expected NAME=VALUE,VALUE,... or "
                             f"NAME=loguniform:LOW:HIGH")
        if name in grid:
            raise ValueError(f"--grid {name}= is given twice: list all of its values in one, "
                             f"{name}=A,B,...")
        if values.partition(":")[0] in GRID_DISTRIBUTIONS:
            grid[name] = grid_distribution(name, values)
            continue
        parsed = []
        for value in values.split(","):
            for kind in (int, float, str):
                try:
                    parsed.append(kind(value))
                    break
                except ValueError:
                    continue
        grid[name] = parsed
    return grid


def grid_distribution(name: str, spec: str):
    """``loguniform:LOW:HIGH`` (and ``uniform``, ``randint``, HIGH included) as the
    scipy.stats distribution :func:`gpu_als.tune.tune` draws ``name``'s values from."""
    import scipy.stats

    kind, *bounds = spec.split(":")
    example = f"--grid {name}={kind}:LOW:HIGH"
    number = int if kind == "randint" else float
    try:
        low, high = (number(bound) for bound in bounds)
    except ValueError:
        raise ValueError(f"--grid {name}={spec}: expected {example}, with "
                         f"{'integers' if number is int else 'numbers'} LOW < HIGH") from None
    if not math.isfinite(low) or not math.isfinite(high):
        raise ValueError(f"--grid {name}={spec}: LOW and HIGH must be finite numbers")
    if not low < high:
        raise ValueError(f"--grid {name}={spec}: LOW must be below HIGH ({example})")
    if kind == "loguniform":
        if low <= 0:
            raise ValueError(f"--grid {name}={spec}: a log scale needs LOW > 0 (use "
                             f"uniform:{low:g}:{high:g} for a linear one)")
        return scipy.stats.loguniform(low, high)
    if kind == "uniform":
        return scipy.stats.uniform(low, high - low)
    return scipy.stats.randint(low, high + 1)


#: What gpu_als.tune's messages call the search's arguments, and the options they are.
_TUNE_OPTIONS = ((r"param_grid\[(\d+)\]\['([^']+)'\]",
                  lambda match: f"--grid {match[2]} (of grid {int(match[1]) + 1}, counting "
                                f"the sets of --grid options apart by --or)"),
                 (r"param_grid\['([^']+)'\]", r"--grid \1"),
                 (r"param_grid's configuration (\{[^}]*\})", r"the configuration \1 of --grid"),
                 (r"^base_params: ", ""),  # (--iterations, --feedback ...: named already)
                 (r"\bn_samples=([\d,]+)", r"--n-samples \1"),
                 (r"\bn_samples\b", "--n-samples"),
                 (r"\bmetric='(\w+)'", r"--metric \1"),
                 (r"\bbase_params=\{'feedback': '(\w+)'\}", r"--feedback \1"),
                 (r"\bmin_value=", "--min-value "),
                 (r"scipy\.stats\.randint\(LOW, HIGH \+ 1\)", "randint:LOW:HIGH"))


@contextlib.contextmanager
def option_terms():
    """Within the block, a TypeError or ValueError of :mod:`gpu_als.tune` is raised again in
    the command's terms (:func:`_in_option_terms`)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        message = _in_option_terms(str(exc))
        if message == str(exc):
            raise
        raise type(exc)(message) from None


def _in_option_terms(message: str) -> str:
    """A message of :func:`gpu_als.tune.search_space`, naming the command's options
    rather than the Python arguments they become."""
    for pattern, option in _TUNE_OPTIONS:
        message = re.sub(pattern, option, message)
    return message


def tune_command(args: argparse.Namespace) -> int:
    from .tune import search_space, tune

    if args.plot:  # the plot comes after the search: matplotlib is checked before it
        from .plots import check_matplotlib

        check_matplotlib()
    check_min_value(args, args.metric)
    grid = parse_grid(args.grid)
    base_params = {"iterations": args.iterations, "backend": args.backend,
                   "feedback": args.feedback}
    with option_terms():  # a mistyped grid fails before the file is read
        search_space(grid, base_params, metric=args.metric, n_samples=args.n_samples,
                     random_state=args.seed)
    check_one_validation(args)
    validation = None
    with dask_client(args.scheduler) as client:  # a cluster that fails, before the read
        if args.time_col is not None:
            _, user_ids, item_ids, matrix, validation, _ = coded_parts_by_time(args)
        elif args.validation is not None:
            _, user_ids, item_ids, matrix, validation, _ = coded_given_parts(args)
        else:
            matrix, user_ids, item_ids = read_interactions(args)
        start = time.perf_counter()
        with warnings.catch_warnings(), option_terms():
            warnings.filterwarnings("ignore", "of the .* entries of validation")
            result = tune(matrix, grid, n_samples=args.n_samples, metric=args.metric,
                          K=args.K, validation_fraction=args.validation_fraction,
                          validation=validation, min_value=args.min_value,
                          max_users=args.validation_users, base_params=base_params,
                          halving=not args.no_halving, min_iterations=args.min_iterations,
                          reduction_factor=args.reduction_factor, random_state=args.seed,
                          refit=args.output is not None,  # (a full fit, for -o alone)
                          client=client)
    finished = sum(t["finished"] for t in result.trials)
    failed = sum(bool(t.get("error")) for t in result.trials)
    same = "" if not result.n_same else \
        f" ({result.n_same} more would train the same model as one of these: left out)"
    where = "" if client is None else f" workers of the Dask cluster at {args.scheduler}"
    print(f"{len(result.trials)} configurations{same}, {finished} trained to the end"
          + (f", {failed} failed (their error: in the trials file)" if failed else "")
          + f", in {time.perf_counter() - start:.1f} s on '{result.backend}'{where}")
    notes = []
    if args.min_value is not None:
        notes.append(f"values >= {args.min_value:g} relevant")
    if args.validation_users is not None:
        notes.append(f"a sample of at most {counted(args.validation_users, 'user')}")
    # a value drawn from a range to 4 digits (0.1236, not 0.12362436879527071): the trials
    # file has them whole
    best = {name: float(f"{value:.4g}") if isinstance(value, float) else value
            for name, value in result.best_params.items()}
    print(f"best: {best}, validation {result.metric} {result.best_score:.4f}"
          + "".join(f" ({note})" for note in notes))
    result.to_csv(args.trials)
    print(f"all trials: {args.trials}")
    if result.model is not None:
        written = result.model.save(args.output, user_ids=user_ids, item_ids=item_ids)
        print(f"best model refitted on all the data: {written}")
    if args.plot:
        from .plots import plot_tuning

        print(f"plot: {plot_tuning(result, args.plot)}")
    return 0


# ---- recommend and similar -----------------------------------------------------------

def add_ranking_options(parser: argparse.ArgumentParser, what: str, n: int = 10) -> None:
    """--N, --output and --backend of the commands that rank with a saved model."""
    parser.add_argument("-N", "--N", type=at_least(1), default=n, help=f"{what} (default {n})")
    add_table_options(parser)


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """--output and --backend of the commands that write a table from a saved model."""
    add_table_output(parser)
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                        help="where to load the model (default auto)")


def add_table_output(parser: argparse.ArgumentParser) -> None:
    """--output of the commands that write a table (CSV, or Parquet by its name)."""
    parser.add_argument("-o", "--output", default="-",
                        help="CSV file to write, or its URL (default: standard output); "
                             "Parquet where the name ends in .parquet")


def load_model(path: Path | str, backend: str):
    """A model saved by gpu-als, or by the implicit library (converted, and said so)."""
    from .exceptions import ImplicitModelFileError
    from .interop import from_implicit
    from .model import ALS

    try:
        return ALS.load(path, backend=backend)
    except ImplicitModelFileError:
        print(f"{path}: a model of the implicit library, converted (gpu_als.from_implicit)",
              file=sys.stderr)
        return from_implicit(path, backend=backend)


def check_not_comma_separated(option: str, ids: list[str] | None, known: np.ndarray) -> None:
    """Refuse an id of ``option`` that the model lacks (``known``: its ids) but whose
    comma-separated parts it has: ``--users 1,2`` meant ``--users 1 2`` (an id may hold a
    comma, so only such a one is refused)."""
    from .data import id_positions

    joined = [value for value in ids or () if "," in value]
    if not joined:
        return
    split = [[part.strip() for part in value.split(",")] for value in joined]
    # one lookup of them all: each hashes every id of the model
    found = id_positions(known, joined + [part for parts in split for part in parts]) >= 0
    at = len(joined)
    for value, parts, value_found in zip(joined, split, found):
        parts_found, at = found[at:at + len(parts)], at + len(parts)
        if not value_found and all(parts) and parts_found.all():
            raise ValueError(f"{option} {value!r} is no id of the model, but "
                             f"{', '.join(map(repr, parts))} are: separate ids with spaces "
                             f"({option} {' '.join(map(shlex.quote, parts))})")


def recommend_command(args: argparse.Namespace) -> int:
    """Top-N items per user from a saved model; users the model lacks are folded in."""
    return _ranking_command(args, "user", "item")


def recommend_users_command(args: argparse.Namespace) -> int:
    """Top-N users per item from a saved model (``ALS.recommend_users_frame``); items the
    model lacks are folded in."""
    return _ranking_command(args, "item", "user")


def _ranking_command(args: argparse.Namespace, queried: str, ranked: str) -> int:
    """``recommend`` (``queried`` "user", ``ranked`` "item") or ``recommend-users`` (the
    other way round): each ``queried`` one's top ``ranked`` ones, from the options
    ``--{queried}s``, ``--{ranked}s`` and ``--exclude-{ranked}s``."""
    from .data import id_positions

    queries, allowed, blocked = (getattr(args, name) for name in (
        f"{queried}s", f"{ranked}s", f"exclude_{ranked}s"))
    if args.file is None and queries is None:
        raise ValueError(f"name the {queried}s (--{queried}s) or give an interaction file: "
                         f"its {queried}s get {ranked}s, without the {ranked}s they already "
                         f"have")
    model = load_model(args.model, args.backend)
    if queried == "item":
        model = model._transposed()  # its users are the items
    check_not_comma_separated(f"--{queried}s", queries,
                              id_map(model.user_ids_, model.user_factors_.shape[0]))
    ranked_ids = id_map(model.item_ids_, model.item_factors_.shape[0])
    check_not_comma_separated(f"--{ranked}s", allowed, ranked_ids)
    check_not_comma_separated(f"--exclude-{ranked}s", blocked, ranked_ids)
    columns = {"user": args.user_col, "item": args.item_col}
    found = recommend_by_id(
        model, queries, None if args.file is None else read_frame(args), args.N,
        filter_already_liked_items=not args.keep_liked, items=allowed, filter_items=blocked,
        user_col=columns[queried], item_col=columns[ranked], value_col=args.value_col,
        sides=(queried, ranked))
    written = write_table(args.output, found.table, scores=("score",))
    notes = [f"{counted(found.n_known, queried)} known to the model"]
    if found.n_folded_in:
        notes.append(f"{found.n_folded_in} folded in from their rows in {shown(args.file)}")
    if len(found.skipped):
        notes.append(f"{len(found.skipped)} skipped: not in the model and no interactions "
                     f"with its {ranked}s ({examples(found.skipped)})")
    if found.n_unknown_item_rows:
        rows = counted(found.n_unknown_item_rows, "row")
        notes.append(f"{rows} of {shown(args.file)} naming {ranked}s the model lacks left "
                     f"out")
    for option, ids in ((f"--{ranked}s", allowed), (f"--exclude-{ranked}s", blocked)):
        unknown = 0 if ids is None else int((id_positions(ranked_ids, ids) < 0).sum())
        if unknown:
            notes.append(f"{option}: {unknown} of its {len(ids)} ids not {ranked}s of the "
                         f"model (ignored)")
    liked = f"liked {ranked}s" if queried == "user" else f"{ranked}s who have the {queried}"
    liked += " filtered" if found.filtered else " not filtered"
    print(f"{counted(written, 'recommendation')} (up to {found.N} per {queried}, {liked}) "
          f"to {destination(args.output)}; " + "; ".join(notes), file=sys.stderr)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``x_u . y_i`` of each (user, item) row of a file from a saved model, as
    ``ALS.predict_frame``; pairs the model cannot score get NaN, and are counted."""
    from ._id_queries import predict_by_id

    model = load_model(args.model, args.backend)
    df = read_frame(args)
    found = predict_by_id(model, df, args.user_col, args.item_col)
    columns = {"user": df[args.user_col].to_numpy(), "item": df[args.item_col].to_numpy()}
    if args.value_col in df.columns and args.value_col not in (args.user_col, args.item_col):
        columns["value"] = df[args.value_col].to_numpy()
    columns["score"] = found.scores
    written = write_table(args.output, columns, scores=("score",))
    notes = ""
    if found.n_unknown:
        notes = (f"; {found.n_unknown} name users or items the model lacks "
                 f"({found.lacking()}): their score is nan")
    print(f"{counted(written, 'pair')} scored to {destination(args.output)}{notes}",
          file=sys.stderr)
    return 0


def fold_in_command(args: argparse.Namespace) -> int:
    """A saved model with the users (or, with ``--items``, the items) of a file added:
    exact solves against the other side's factors, as ``ALS.partial_fit_users`` /
    ``partial_fit_items``, written to a new model file."""
    from .data import id_positions

    model = load_model(args.model, args.backend)
    side, other = ("item", "user") if args.items else ("user", "item")
    columns = {"user": args.user_col, "item": args.item_col}
    # a model without ids (as implicit's): its row numbers are its ids from now on
    known_ids = id_map(getattr(model, f"{side}_ids_"), len(getattr(model, f"{side}_factors_")))
    fixed_ids = id_map(getattr(model, f"{other}_ids_"),
                       len(getattr(model, f"{other}_factors_")))
    df = read_frame(args)
    # one row per user (item) of the file, one column per item (user) of the model
    R, file_ids, unknown = rows_against(df, columns[side], columns[other], args.value_col,
                                        fixed_ids, feedback=model.feedback, dtype=model.dtype)
    if known_ids.dtype.kind in "SU" and file_ids.dtype.kind in "iuf":
        file_ids = file_ids.astype(str)  # "5" in the model, 5 read from the file: one id
    known = id_positions(known_ids, file_ids) >= 0
    empty = R.getnnz(axis=1) == 0
    chosen = ~empty & (~known | args.update_known)
    skipped = empty & ~known  # new, but without interactions with the model's other side
    if not chosen.any():
        again = "" if args.update_known else " (--update-known solves them again)"
        raise ValueError(
            f"no {side} of {shown(args.file)} to fold in: {counted(int(known.sum()), side)} "
            f"already in the model{again}, {int(skipped.sum())} new without interactions "
            f"with its {other}s")
    start = time.perf_counter()
    setattr(model, f"{side}_ids_", known_ids)
    getattr(model, f"partial_fit_{side}s")(**{f"{side}_{other}s": R[chosen],
                                              f"{side}_ids": file_ids[chosen]})
    notes = [f"{counted(int((chosen & ~known).sum()), f'new {side}')} added"]
    if args.update_known:
        notes.append(f"{int((chosen & known).sum())} known solved again from their rows")
    elif known.any():
        notes.append(f"{int(known.sum())} known kept as they were")
    if skipped.any():
        notes.append(f"{int(skipped.sum())} new skipped: no interactions with the model's "
                     f"{other}s ({examples(file_ids[skipped])})")
    if unknown:
        notes.append(f"{counted(unknown, 'row')} naming {other}s the model lacks left out")
    print(f"{shown(args.file)}: " + "; ".join(notes) + f" ({time.perf_counter() - start:.2f} s on "
          f"'{model.backend_}'); the model now has "
          f"{counted(len(getattr(model, f'{side}_ids_')), side)}")
    written = model.save(args.output)
    print(f"saved to {written} (load with gpu_als.ALS.load)")
    return 0


def similar_command(args: argparse.Namespace) -> int:
    """The N items (or users) most similar to each given one, the query itself left out."""
    model = load_model(args.model, args.backend)
    kind, query = ("user", args.users) if args.users is not None else ("item", args.items)
    check_not_comma_separated(f"--{kind}s", query, id_map(getattr(model, f"{kind}_ids_"),
                                                          len(getattr(model, f"{kind}_factors_"))))
    found = similar_by_id(model, kind, query, args.N,
                          interactions=None if args.file is None else read_frame(args),
                          user_col=args.user_col, item_col=args.item_col,
                          value_col=args.value_col)
    written = write_table(args.output, found.table, scores=("score",))
    N = int(found.table["rank"].max(initial=0))  # (args.N, or every other one where fewer)
    notes = []
    if found.n_folded_in:
        notes.append(f"{found.n_folded_in} folded in from their rows in {shown(args.file)}")
    if found.n_unknown_rows:
        other = "user" if kind == "item" else "item"
        notes.append(f"{counted(found.n_unknown_rows, 'row')} of {shown(args.file)} naming "
                     f"{other}s the model lacks left out")
    print(f"{written} similar {kind}s (cosine of the factors, {N} per {kind}) to "
          f"{destination(args.output)}" + "".join(f"; {note}" for note in notes),
          file=sys.stderr)
    return 0


def export_command(args: argparse.Namespace) -> int:
    """The factors of a saved model's items (or users) by id, a row each, as
    ``ALS.item_factors_frame`` gives them."""
    model = load_model(args.model, args.backend)
    kind, query = ("user", args.users) if args.users is not None else ("item", args.items)
    check_not_comma_separated(f"--{kind}s", query, id_map(getattr(model, f"{kind}_ids_"),
                                                          len(getattr(model, f"{kind}_factors_"))))
    ids, factors = factors_by_id(model, kind, query or None)  # (--users alone: all of them)
    written = write_factors(args.output, kind, ids, factors)
    print(f"factors of {counted(written, kind)} ({factors.shape[1]} {factors.dtype} values "
          f"each) to {destination(args.output)}", file=sys.stderr)
    return 0


def explain_command(args: argparse.Namespace) -> int:
    """Why a saved model scores items for a user: each score split over the user's items."""
    model = load_model(args.model, args.backend)
    check_not_comma_separated("--items", args.items,
                              id_map(model.item_ids_, model.item_factors_.shape[0]))
    table, n_items, n_interactions = explain_by_id(
        model, args.user, read_frame(args), args.items, args.N, user_col=args.user_col,
        item_col=args.item_col, value_col=args.value_col, name=shown(args.file))
    written = write_table(args.output, table, scores=("score", "contribution"))
    where = destination(args.output)
    print(f"{counted(written, 'contribution')} (up to {args.N} per item) for "
          f"{counted(n_items, 'item')} and user {args.user!r}, from "
          f"{counted(n_interactions, 'interaction')} with the model's items, to {where}",
          file=sys.stderr)
    return 0


# ---- fetch ------------------------------------------------------------------------------

def fetch_command(args: argparse.Namespace) -> int:
    """A MovieLens release's ratings (downloaded once, checked) written as a table."""
    from .datasets import load_movielens

    release = args.dataset.removeprefix("movielens-")
    df = load_movielens(release, data_home=args.data_home)
    written = write_table(args.output, {name: df[name].to_numpy() for name in df.columns},
                          scores=())
    where = "FILE" if args.output == "-" else shlex.quote(args.output)
    print(f"{written:,} ratings of MovieLens {release.upper()} "
          f"({df['user'].nunique():,} users, {df['item'].nunique():,} items) to "
          f"{destination(args.output)}; e.g. gpu-als evaluate {where} --value-col rating "
          f"--min-value 4 --time-col timestamp", file=sys.stderr)
    return 0


# ---- info -------------------------------------------------------------------------------

def info_command(args: argparse.Namespace) -> int:
    """Versions, the CPU and GPU backends as they are here, and optionally a kernel build
    and a check of the GPU's solves; or, given a model file, what the model holds."""
    if args.model is not None:
        for option, what in (("compile", "builds the kernels"), ("check", "checks the GPU")):
            if getattr(args, option):
                raise ValueError(f"--{option} {what} here: give it without a model file")
        return model_summary(args.model)
    from . import benchmark
    from .backends import CPUBackend, gpu
    from .backends.cpu import _thread_pools

    reason = gpu.unavailable_reason()
    if args.check and reason is not None:
        raise ValueError(f"--check: no GPU to check here ({reason})")
    found = benchmark.versions()
    print(f"gpu-als {found.pop('gpu_als')}: " +
          ", ".join(f"{name} {version}" for name, version in found.items()))
    optional = [f"{name} {benchmark.installed_version(name) or '-'}"
                for name in ("cupy", "pandas", "pyarrow", "fsspec", "polars", "matplotlib",
                             "dask", "nvtx", "implicit", "scikit-learn")
                if name not in found]
    print("optional packages: " + ", ".join(optional))
    pools = ", ".join(f"{pool['internal_api']} {pool.get('version') or ''} "
                      f"({pool['num_threads']} threads)".replace("  ", " ")
                      for pool in _thread_pools().info())
    print(f"CPU: {benchmark.host_description()}; the CPU backend solves on "
          f"{CPUBackend().num_threads} threads; BLAS/OpenMP: {pools or 'none found'}")
    if reason is not None:
        print(f"GPU: not usable: {reason}")
    else:
        try:
            print(f"GPU: {_gpu_summary(gpu.GPUBackend())}")
        except Exception as exc:  # CuPy raises its own types; info must still finish
            print(f"GPU: usable, but its details could not be read: "
                  f"{type(exc).__name__}: {exc}")
    print(f"backend='auto' uses the {'CPU' if reason else 'GPU'} backend here")
    status = _compile_kernels(on_device=reason is None) if args.compile else 0
    if args.check:
        status = max(status, _check_gpu())
    return status


def _check_gpu() -> int:
    """``--check`` on a machine with a GPU: the GPU backend's half-steps against the CPU
    backend's (gpu_als._selfcheck), a line per case; the exit status, 1 where one
    disagrees (as ``--compile``'s where a build fails)."""
    from . import _selfcheck
    from .backends import gpu

    print(f"check: the GPU backend's half-steps against the CPU backend's in float64 (rows "
          f"of every length, one of {_selfcheck.LONG_ROW:,} entries):")
    start = time.perf_counter()
    outcomes = _selfcheck.check(gpu.GPUBackend())
    for outcome in outcomes:
        print(f"  {outcome}")
    failed = sum(not outcome.ok for outcome in outcomes)
    print(f"check: {len(outcomes) - failed} of {len(outcomes)} cases agree "
          f"({time.perf_counter() - start:.1f} s, kernel builds included)")
    return 1 if failed else 0


def model_summary(path: Path | str) -> int:
    """``gpu-als info MODEL``: a saved model's hyperparameters, its users and items (how
    many, and their ids), its factors and its recorded training loss."""
    model = load_model(str(path), "cpu")
    X, Y = model.user_factors_, model.item_factors_
    # (the backend it was loaded onto here is no hyperparameter of the file's)
    print(f"{path}: {type(model)(**{**model.get_params(), 'backend': 'auto'})!r}")
    for side, factors in (("user", X), ("item", Y)):
        ids = getattr(model, f"{side}_ids_")
        named = ("no ids: its factor rows are its ids" if ids is None else
                 f"ids of {ID_KINDS.get(np.asarray(ids).dtype.kind, 'objects')}, e.g. "
                 f"{examples(np.asarray(ids))}")
        print(f"{side}s: {len(factors):,} ({named})")
    held = X.nbytes + Y.nbytes  # (under 0.1 MiB as KiB: "0.0 MiB" said nothing)
    print(f"factors: {X.shape[1]} per user and item, {X.dtype}, "
          + (f"{held / 2**20:,.1f} MiB" if held >= 2**20 / 10 else f"{held / 2**10:.1f} KiB")
          + " in all")
    losses = model.loss_history_
    print(f"training loss: {len(losses)} iterations recorded, from {losses[0]:.6g} to "
          f"{losses[-1]:.6g}" if losses else
          "training loss: none recorded (fitted with calculate_training_loss=False, or made "
          "of factors)")
    return 0


#: How ``model_summary`` names a kind of ids (NumPy's ``dtype.kind``).
ID_KINDS = {"i": "integers", "u": "integers", "f": "numbers", "b": "booleans", "U": "text",
            "S": "bytes", "M": "datetimes", "m": "durations", "O": "text"}


def _gpu_summary(backend) -> str:
    """The device and the kernels' limits on it: the largest k of the fused kernel."""
    import cupy

    from . import benchmark

    free, total = cupy.cuda.runtime.memGetInfo()
    device = cupy.cuda.Device()
    peak = benchmark.fp32_peak_gflops()
    parts = [f"{backend.runtime.device_name}, compute capability "
             f"{device.compute_capability}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB "
             f"free)"]
    if peak:
        parts.append(f"FP32 peak {peak / 1e3:.1f} TFLOP/s")
    parts.append(f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}; "
                 f"{backend.runtime.max_shared_memory // 1024} KiB of shared memory per "
                 f"block: the fused kernel takes k <= {backend.fused_limit(np.float32)} "
                 f"(float32), <= {backend.fused_limit(np.float64)} (float64), the "
                 f"two-kernel path up to {backend.max_factors}")
    sm = backend.runtime.multiprocessor
    if sm is None:
        parts.append(f"occupancy limits unknown ({backend.runtime.multiprocessor_error}): "
                     f"the fused kernel takes the largest tile that fits")
    else:
        parts.append(f"per multiprocessor {sm.shared_memory // 1024} KiB of shared memory "
                     f"({sm.reserved_shared_memory} bytes reserved per block), "
                     f"{sm.registers} registers, {sm.threads} threads, {sm.blocks} blocks")
    parts.append(fused_shapes(backend))
    return ", ".join(parts)


def fused_shapes(backend, factors: tuple[int, ...] = (64, 128)) -> str:
    """How the fused kernel runs at each of ``factors`` in float32 on ``backend``'s
    device: the tile and block size chosen for occupancy."""
    shapes = []
    for k in factors:
        shape = backend.fused_shape(k, np.float32)
        shapes.append(f"k = {k}: the two-kernel path" if shape is None else
                      f"k = {k}: tiles of {shape[0]} rows, {shape[1]} threads a block")
    return "the fused kernel (float32) at " + "; ".join(shapes)


def _compile_kernels(*, on_device: bool) -> int:
    """Build every kernel specialisation: through CuPy for this device, else with each
    installed NVRTC for the architectures it knows of ``_kernels.CHECK_ARCHS``. Returns
    the exit status (1 if one failed)."""
    from .backends import _kernels

    failed = 0
    for file, names in _kernels.SPECIALISATIONS.items():
        start = time.perf_counter()
        try:
            if on_device:
                module = _kernels.load_module(file)
                for name in names:
                    module.get_function(name)
                where = "this device"
            else:
                built = []
                for cuda in _kernels.nvrtc_libraries() or [None]:
                    archs = _kernels.nvrtc_archs(cuda)
                    for arch in archs:
                        result = _kernels.nvrtc_compile(file, arch, cuda=cuda)
                        if not result["ok"]:
                            raise RuntimeError(f"NVRTC {_kernels.nvrtc_version(cuda)}, "
                                               f"{arch}:\n{result['log'].strip()}")
                    built.append(f"{', '.join(archs)} with NVRTC {_kernels.nvrtc_version(cuda)}")
                where = "; ".join(built) + " (no device)"
        except ImportError as exc:
            print(f"kernels: cannot compile here: {exc}")
            return 1
        except Exception as exc:  # a compiler error: say which file, go on with the rest
            failed += 1
            print(f"{file}: FAILED\n{exc}")
            continue
        print(f"{file}: {len(names)} specialisations built for {where} in "
              f"{time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


# ---- entry point ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-als", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpu-als {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo", help="train on MovieLens 100K and compare with baselines",
                            description=demo.__doc__)
    add_model_options(p, regularization=0.001, iterations=20)
    p.add_argument("-o", "--output", default="demo-output",
                   help="folder for the charts (default demo-output)")
    p.set_defaults(func=demo)

    p = commands.add_parser("train", help="fit on an interaction file and save the model",
                            description="Fit ALS on a CSV or Parquet file of (user, item, "
                            "value) rows and save it as .npz (with the id maps).")
    add_file_options(p)
    add_model_options(p)
    p.add_argument("-o", "--output", type=model_file, default=Path("model.npz"),
                   help="model file to write, or its URL (default model.npz)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="fit on the Dask cluster of this scheduler (e.g. tcp://host:8786; "
                        "gpu_als.distributed.fit_distributed), each worker on --backend: "
                        "needs gpu-als[dist]")
    p.add_argument("--read-on-workers", action="store_true",
                   help="with --scheduler: the workers read the Parquet file or folder, at "
                        "the same path (a shared file system) or by its URL, and this "
                        "process never holds the interactions (default: it reads them and "
                        "sends each worker its part); with --early-stopping, it validates "
                        "on a --validation file")
    p.add_argument("--init", type=path_or_url, default=None, metavar="MODEL",
                   help="go on from this model file: its hyperparameters (but those given "
                        "here) and its factors for the users and items it knows (by id, or "
                        "by row number for a model without ids; new ones start random)")
    g = p.add_argument_group("early stopping (see gpu_als.evaluation.EarlyStopping)")
    g.add_argument("--early-stopping", type=at_least(1), default=None, metavar="PATIENCE",
                   help="first find the number of iterations (at most --iterations): fit on "
                        "all but --validation-fraction of each user's interactions until "
                        "--metric on the rest has not improved for PATIENCE iterations; "
                        "then train on everything for the best number")
    g.add_argument("--validation-fraction", type=fraction, default=0.1,
                   help="share of each user's interactions held out (default 0.1)")
    g.add_argument("--time-col", default=None, metavar="COLUMN",
                   help="hold out each user's latest interactions by this column of times "
                        "(numbers, or dates and times), not a random share (with "
                        "--no-header, the fourth column)")
    g.add_argument("--validation", type=path_or_url, default=None,
                   metavar="VALIDATION_FILE",
                   help="validate on this file of the same columns instead (a split made "
                        "beforehand); the model then trains on both files")
    g.add_argument("--validation-users", type=at_least(1), default=None, metavar="N",
                   help="score a fixed random sample (--seed) of N of the users with held-out "
                        "interactions after each iteration, not all of them: on large data "
                        "an evaluation of every user can cost more than an iteration")
    g.add_argument("--metric", choices=VALIDATION_METRICS,
                   default=None, help="validation metric (default recall, or rmse with "
                                      "--feedback explicit)")
    g.add_argument("--K", type=at_least(1), default=10, help="cut-off of the metric (default 10)")
    g.add_argument("--min-value", type=float, default=None,
                   help=MIN_VALUE_HELP.format(part="validation"))
    p.set_defaults(func=train)

    p = commands.add_parser("evaluate", help="split an interaction file, fit and score",
                            description="Hold out a share of each user's interactions (at "
                            "random, or the latest by --time-col), fit on the rest and report "
                            "ranking metrics against baselines; or, with --test, fit on the "
                            "file and score a test file.")
    add_file_options(p)
    add_model_options(p)
    p.add_argument("--test-fraction", type=fraction, default=None,
                   help="share of each user's interactions held out (default 0.2)")
    p.add_argument("--time-col", default=None, metavar="COLUMN",
                   help="hold out each user's latest interactions by this column of times "
                        "(numbers, or dates and times), not a random share (with "
                        "--no-header, the fourth column, as MovieLens' timestamps); test "
                        "rows of new users or items, and pairs already in train, are left "
                        "out")
    p.add_argument("--cutoff", default=None, metavar="TIME",
                   help="with --time-col: hold out every interaction at or after this time "
                        "(a number, or a date such as 1998-03-01), for all users at once")
    p.add_argument("--latest", type=at_least(1), default=None, metavar="K",
                   help="with --time-col: hold out each user's latest K interactions (of the "
                        "users with more than K; 1: leave the last one out)")
    p.add_argument("--test", type=path_or_url, default=None, metavar="TEST_FILE",
                   help="the held-out interactions, as a second file of the same columns "
                        "(a split made beforehand, e.g. MovieLens' u1.base and u1.test): "
                        "FILE is all of train; test rows of new users or items, and pairs "
                        "already in FILE, are left out")
    p.add_argument("--K", type=at_least(1), nargs="+", default=[10],
                   help="cut-off of the metrics (default 10); several (--K 5 10 20) are "
                        "scored from one ranking, a table each")
    p.add_argument("--min-value", type=float, default=None,
                   help=MIN_VALUE_HELP.format(part="held-out") + "; the RMSE of --feedback "
                        "explicit still scores every held-out rating")
    p.add_argument("--no-auc", action="store_true",
                   help="leave out AUC, which places every test item among all of its "
                        "user's candidates: on large data most of the time")
    p.add_argument("-o", "--output", default=None,
                   help="also write the table to this CSV file (Parquet where the name ends "
                        "in .parquet): a row per model, a column per metric, the RMSE of "
                        "--feedback explicit on the ALS row (default: printed only)")
    p.set_defaults(func=evaluate)

    p = commands.add_parser("tune", help="search hyperparameters on a validation split",
                            description="Grid or random search of ALS hyperparameters on a "
                            "validation split of the file, with successive halving on "
                            "iterations (see gpu_als.tune).")
    add_file_options(p)
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...",
                   help="values to try for one hyperparameter (repeat the option; one "
                        "value fixes it, e.g. factors=64), or a range to draw them from "
                        "with --n-samples: NAME=loguniform:LOW:HIGH (a log scale, e.g. "
                        "regularization=loguniform:0.0001:0.1), uniform:LOW:HIGH or "
                        "randint:LOW:HIGH (integers, both ends included); default: "
                        "factors, regularization and alpha around the reference")
    p.add_argument("--or", dest="grid", action="append_const", const=GRID_BREAK,
                   help="start another grid: the search tries the configurations of the "
                        "--grid options before it, then those after it (settings that go "
                        "together only in part, e.g. --grid feedback=implicit --grid "
                        "alpha=1,10 --or --grid feedback=explicit --grid "
                        "regularization=0.1,0.3)")
    p.add_argument("--n-samples", type=at_least(1), default=None,
                   help="try this many random configurations of the grid (default: all of "
                        "them; needed for a range)")
    p.add_argument("--metric", choices=VALIDATION_METRICS,
                   default="recall", help="validation metric (default recall; rmse, the "
                                          "lower the better, needs --feedback explicit)")
    p.add_argument("--feedback", choices=FEEDBACKS, default="implicit",
                   help="implicit (default) or explicit (ratings: ALS-WR, with a grid of "
                        "factors and regularization by default)")
    p.add_argument("--K", type=at_least(1), default=10, help="cut-off of the metric (default 10)")
    p.add_argument("--validation-fraction", type=fraction, default=0.2,
                   help="share of each user's interactions for validation (default 0.2)")
    p.add_argument("--min-value", type=float, default=None,
                   help=MIN_VALUE_HELP.format(part="validation") + " (not with --metric rmse)")
    p.add_argument("--validation-users", type=at_least(1), default=None, metavar="N",
                   help="score each trial on a fixed random sample (--seed) of N of the users "
                        "with validation interactions, not all of them: on large data a "
                        "ranking of every user can cost as much as a trial's training")
    p.add_argument("--time-col", default=None, metavar="COLUMN",
                   help="validate on each user's latest interactions by this column of "
                        "times (numbers, or dates and times), not a random share (with "
                        "--no-header, the fourth column); validation rows of new users or "
                        "items, and pairs already in the rest, are not scored")
    p.add_argument("--validation", type=path_or_url, default=None,
                   metavar="VALIDATION_FILE",
                   help="validate on this file of the same columns instead (a split made "
                        "beforehand; its rows of new users or items, and pairs already in "
                        "FILE, are not scored); the best model is refitted on both files")
    p.add_argument("--iterations", type=at_least(0), default=20,
                   help="iterations per trial (default 20)")
    p.add_argument("--no-halving", action="store_true",
                   help="train every configuration to the end")
    p.add_argument("--min-iterations", type=at_least(1), default=3,
                   help="iterations of the first halving rung (default 3)")
    p.add_argument("--reduction-factor", type=at_least(2), default=3,
                   help="keep the best 1/this of the trials at each rung (default 3)")
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                   help="where to train (default auto: the GPU when usable)")
    p.add_argument("--seed", type=at_least(0), default=42,
                   help="split, sampling and start seed (default 42)")
    p.add_argument("--trials", type=file_path, default=Path("trials.csv"),
                   help="CSV of every trial (default trials.csv)")
    p.add_argument("--plot", type=file_path, default=None,
                   help="PNG of metric vs hyperparameters (default: none drawn)")
    p.add_argument("-o", "--output", type=model_file, default=None,
                   help="save the refitted best model, as .npz (default: not saved; the "
                        "trials go to --trials)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="train the trials on the workers of the Dask cluster of this "
                        "scheduler (e.g. tcp://host:8786), each rung's at once, each worker "
                        "on --backend, and refit the best on one: needs gpu-als[dist]")
    p.set_defaults(func=tune_command)

    p = commands.add_parser("recommend", help="top-N items per user from a saved model",
                            description="Recommend items to users with a model saved by "
                            "'gpu-als train' (or ALS.save), as CSV rows user,item,rank,score. "
                            "Users the model lacks are folded in from their rows of FILE.")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p, optional="interactions (CSV or Parquet): its users get "
                     "recommendations without the items they have; users the model lacks "
                     "are folded in from their rows")
    p.add_argument("--users", "--user", nargs="+", metavar="ID", action=IdList,
                   help="recommend to these users only (default: every user in FILE)"
                        + ID_FILE_HELP)
    p.add_argument("--keep-liked", action="store_true",
                   help="allow items the user has in FILE")
    p.add_argument("--items", nargs="+", metavar="ID", action=IdList,
                   help="recommend among these items only (e.g. those in stock)"
                        + ID_FILE_HELP)
    p.add_argument("--exclude-items", nargs="+", metavar="ID", action=IdList,
                   help="never recommend these items" + ID_FILE_HELP)
    add_ranking_options(p, "items per user")
    p.set_defaults(func=recommend_command)

    p = commands.add_parser("recommend-users", help="top-N users per item from a saved model",
                            description="The users to show items to (a campaign's audience), "
                            "with a model saved by 'gpu-als train' (or ALS.save), as CSV rows "
                            "item,user,rank,score: recommend with the sides swapped "
                            "(ALS.recommend_users_frame). Items the model lacks are folded in "
                            "from their rows of FILE.")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p, optional="interactions (CSV or Parquet): its items get users, "
                     "without the users who have them; items the model lacks are folded in "
                     "from their rows")
    p.add_argument("--items", "--item", nargs="+", metavar="ID", action=IdList,
                   help="rank users for these items only (default: every item in FILE)"
                        + ID_FILE_HELP)
    p.add_argument("--keep-liked", action="store_true",
                   help="allow users who have the item in FILE")
    p.add_argument("--users", nargs="+", metavar="ID", action=IdList,
                   help="rank only these users (e.g. those who may be contacted)"
                        + ID_FILE_HELP)
    p.add_argument("--exclude-users", nargs="+", metavar="ID", action=IdList,
                   help="never rank these users" + ID_FILE_HELP)
    add_ranking_options(p, "users per item")
    p.set_defaults(func=recommend_users_command)

    p = commands.add_parser("predict", help="score (user, item) pairs with a saved model",
                            description="Score each (user, item) row of FILE with a model "
                            "saved by 'gpu-als train' (or ALS.save): x_u . y_i, a predicted "
                            "rating for a model of explicit feedback, as CSV rows "
                            "user,item,score in the file's order (and value, where FILE has "
                            "the value column). Pairs whose user or item the model lacks get "
                            "nan, and are counted (ALS.predict_frame).")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p, values="copied to the output, as value, where the file has it")
    add_table_options(p)
    p.set_defaults(func=predict_command, values_counted=False)

    p = commands.add_parser("fold-in", help="add a file's new users (or items) to a saved "
                            "model", description="Add the users of FILE that a saved model "
                            "lacks, each solved exactly from its rows of FILE against the "
                            "model's item factors (no retraining: items and known users keep "
                            "their factors), and save the model (ALS.partial_fit_users). "
                            "With --items, the same for new items against the user factors.")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p)
    p.add_argument("--items", action="store_true",
                   help="fold in the file's new items (cold-start items, from the users who "
                        "had them) instead of its new users")
    p.add_argument("--update-known", action="store_true",
                   help="also solve the users (items) the model has again, from their rows "
                        "of FILE (which should then hold all of their interactions)")
    p.add_argument("-o", "--output", type=model_file, required=True,
                   help="model file to write")
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                   help="where to load the model (default auto)")
    p.set_defaults(func=fold_in_command)

    p = commands.add_parser("similar", help="most similar items (or users) from a saved model",
                            description="The items (or users) whose factors have the largest "
                            "cosine with each given one's, the query itself left out, as CSV "
                            "rows item,similar_item,rank,score.")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p, optional="interactions (CSV or Parquet) that fold in the items (or "
                     "users) the model lacks, from their rows: the items most like a new "
                     "one, from its first users")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--items", nargs="+", metavar="ID", action=IdList,
                       help="these items (default: every item of FILE, or without it of the "
                            "model)" + ID_FILE_HELP)
    which.add_argument("--users", nargs="+", metavar="ID", action=IdList,
                       help="these users instead")
    add_ranking_options(p, "results per query")
    p.set_defaults(func=similar_command)

    p = commands.add_parser("export", help="the factors of a saved model's items (or users)",
                            description="Each item's (or user's) factors, a row per id, for "
                            "a warehouse table, a feature store or a vector index: CSV "
                            "columns item,factor_0,...,factor_<k-1> (to the digits that read "
                            "back as the same floats), or, where the output ends in "
                            ".parquet, columns item and factors, a fixed-size list per row "
                            "(as Spark MLlib's itemFactors).")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--items", nargs="*", metavar="ID", action=IdList,
                       help="these items (default: every item of the model)" + ID_FILE_HELP)
    which.add_argument("--users", nargs="*", metavar="ID", action=IdList,
                       help="users instead: these, or with no ids every user")
    add_table_options(p)
    p.set_defaults(func=export_command)

    p = commands.add_parser("explain", help="why a saved model scores items for a user",
                            description="Split each item's score for the user over the "
                            "user's items in FILE (Hu, Koren & Volinsky 2008, section 5), "
                            "as CSV rows user,item,score,because_item,contribution: the "
                            "largest contributions first.")
    p.add_argument("model", type=path_or_url, help="model file (.npz; or its URL)")
    add_file_options(p)
    p.add_argument("--user", required=True, metavar="ID", help="the user, as in FILE")
    p.add_argument("--items", "--item", required=True, nargs="+", metavar="ID",
                   action=IdList, help="the items whose scores to explain" + ID_FILE_HELP)
    add_ranking_options(p, "contributions per item", n=5)
    p.set_defaults(func=explain_command)

    p = commands.add_parser("fetch", help="a MovieLens release's ratings, downloaded, to a file",
                            description="The ratings of a MovieLens release as a table for the "
                            "other commands: columns user,item,rating,timestamp "
                            "(gpu_als.datasets.load_movielens). GroupLens' zip is downloaded "
                            "once into the cache (or --data-home) and kept only if its "
                            "checksum is the published one.")
    p.add_argument("dataset", choices=[f"movielens-{name}" for name in ("100k", *MOVIELENS)],
                   help="the release")
    add_table_output(p)
    p.add_argument("--data-home", type=Path, default=None, metavar="FOLDER",
                   help="a folder to look in first for a copy (the zip or its unzipped "
                        "folder), and to download into")
    p.set_defaults(func=fetch_command)

    p = commands.add_parser("info", help="versions, backends and GPU limits here (or what a "
                                         "model file holds)",
                            description=info_command.__doc__)
    p.add_argument("model", type=path_or_url, nargs="?", default=None,
                   help="a model file (.npz; or its URL): show its hyperparameters, users, "
                        "items, factors and training loss instead")
    p.add_argument("--compile", action="store_true",
                   help="also build every kernel (on the GPU, or with NVRTC for sm_75, sm_80, "
                        "sm_90 and sm_100)")
    p.add_argument("--check", action="store_true",
                   help="also check the GPU backend's solves against the CPU backend's, "
                        "one half-step of each of its paths (exit status 1 if one "
                        "disagrees; an error where there is no GPU)")
    p.set_defaults(func=info_command)

    for command in commands.choices.values():  # -v after the command too: gpu-als train -v
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log at INFO level")
        command.set_defaults(command_parser=command)  # its own usage in main()'s errors
    # Listed here for --help; main() hands its arguments to gpu_als.benchmark unparsed.
    commands.add_parser("bench", add_help=False,
                        help="time ALS against the implicit library, CPU and GPU "
                             "(gpu-als bench --help)")
    return parser


#: Options naming a file that a command writes when its work is done.
OUTPUT_OPTIONS = ("output", "trials", "plot")


def check_output_folders(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output file whose folder does not exist or that is a
    folder itself, or a file as the demo's output folder (which it creates; ``-`` is
    standard output); warn of a URL whose bucket is not found."""
    if args.command == "demo":  # a folder, made when the charts are drawn
        if str(args.output) == "":  # (the charts went into the working folder)
            raise ValueError("--output is empty: give a folder for the charts")
        if Path(args.output).exists() and not Path(args.output).is_dir():
            raise FileExistsError(f"--output {args.output} is a file: the demo writes its "
                                  f"charts into a folder")
        return
    for name in OUTPUT_OPTIONS:
        path = getattr(args, name, None)
        if path is None or str(path) == "-":
            continue
        if is_url(path):  # a folder refused, a bucket not found warned of, before the work
            fs, where = url_filesystem(path, "writing")
            if fs.isdir(where):
                raise IsADirectoryError(f"--{name} {path} is a folder: give a file name")
            if (bucket := bucket_not_found(path)) is not None:
                warnings.warn(f"--{name} {path}: there is no bucket {bucket!r}, or this "
                              f"process may not look it up: writing there may fail once "
                              f"the work is done", stacklevel=2)
            continue
        if str(path) == "":  # (it said "--output  is a folder")
            raise ValueError(f"--{name} is empty: give a file name")
        folder = Path(path).parent
        if not folder.is_dir():
            raise FileNotFoundError(f"--{name} {path}: there is no folder {folder}")
        if Path(path).is_dir():
            raise IsADirectoryError(f"--{name} {path} is a folder: give a file name")


def error_message(exc: Exception) -> str:
    """An error as one line: an operating system's without its "[Errno N]" prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def in_option_words(message: str, parser: argparse.ArgumentParser) -> str:
    """A message that names a setting as the Python API spells it, ``factors=0: must be
    >= 1`` or ``... with feedback='explicit'`` (at its start, or after "with", "and" or
    "use"), as the options of ``parser`` that set it: ``--factors 0: must be >= 1``,
    ``... with --feedback explicit``, ``... or use --dtype float64``."""
    options = {action.dest: action.option_strings[-1] for action in parser._actions
               if action.option_strings and action.option_strings[-1].startswith("--")}

    def option(match: re.Match) -> str:
        name = options.get(match[2])
        return match[0] if name is None else f"{match[1]}{name} {match[4]}"

    return re.sub(r"(^|with |and |use )(\w+)=('?)([^\s:',]*)\3(?=[:,; )]|$)", option, message)


class _TqdmToStderr(tqdm):
    """tqdm whose ``write`` goes to standard error unless given a file: the logging
    redirect of older tqdm (4.60, the oldest this package allows) writes each log line
    with ``write()`` and no file, which is standard output, where a command's CSV goes."""

    @classmethod
    def write(cls, s, file=None, end="\n", nolock=False):
        super().write(s, file=sys.stderr if file is None else file, end=end, nolock=nolock)


def _as_grid(extra: list[str]) -> str:
    """``--factors 64 --alpha 2`` given to tune, as its ``--grid`` options, for a message;
    empty where ``extra`` names no hyperparameter of ALS."""
    from .model import ALS

    names = set(ALS().get_params())
    grid = [f"--grid {option[2:].replace('-', '_')}={value}"
            for option, value in zip(extra, [*extra[1:], ""])
            if option.startswith("--") and option[2:].replace("-", "_") in names
            and value and not value.startswith("--")]
    return " ".join(grid)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from . import benchmark

        try:
            return benchmark.main(argv[1:])
        except (ValueError, ImportError) as exc:
            print(f"gpu-als bench: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "tune" and all("=" in e and e[0] != "-" for e in extra):
        print(f"gpu-als tune: error: unrecognized arguments: {' '.join(extra)}; each --grid "
              f"takes one NAME=V1,V2,...: write --grid before each (--grid {extra[0]})",
              file=sys.stderr)
        return 2
    if extra:
        message = f"unrecognized arguments: {' '.join(extra)}"
        if args.command == "tune" and (grid := _as_grid(extra)):
            message += (f"; tune takes hyperparameters through --grid (one value fixes "
                        f"one): {grid}")
        args.command_parser.error(message)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")

    def show_warning(message, category, *_args, **_kwargs):  # one line, as the errors
        print(f"gpu-als {args.command}: warning: {message}", file=sys.stderr)

    # -v on a terminal: each log line printed above the progress bar, not into it
    console = logging_redirect_tqdm(tqdm_class=_TqdmToStderr) if args.verbose else \
        contextlib.nullcontext()
    try:
        with warnings.catch_warnings(), console:
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = show_warning
            check_output_folders(args)
            return args.func(args)
    except BrokenPipeError:  # `gpu-als recommend ... | head`: the reader left, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, RuntimeError, OSError, ImportError, MemoryError,
            FloatingPointError) as exc:  # (the last: a fit whose factors overflowed)
        message = in_option_words(error_message(exc), args.command_parser)
        print(f"gpu-als {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: no traceback; a model file is written whole or not
        print(f"gpu-als {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
