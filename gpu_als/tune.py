"""Hyperparameter search on a validation split (the reference document's tuning strategy).

:func:`tune` carves a validation split out of the *training* data (the caller's test split
is never seen), or takes one given with it (``validation=``, e.g. the later part of a split
by time), fits one model per configuration and scores it on the validation split by a
ranking metric at K (or, for explicit ratings, the RMSE of the predicted ratings), then
refits the best configuration on all the training data.

Early termination (successive halving, ``halving=True``): every configuration is trained
to the first rung of iterations (``min_iterations``), scored, and only the best
``1 / reduction_factor`` of them (at least one) continue to the next rung (``rung *
reduction_factor`` iterations, capped at the configuration's own ``iterations``), until
the survivors reach their full ``iterations``. A survivor continues from where it stopped:
ALS is deterministic, so its final model equals a fresh fit with the full iterations, and
halving changes which trials finish, never a finished trial's result. No factors are
shared between configurations (no warm starts across them), and configurations that
differ only in settings idle in them (``cg_steps`` of the Cholesky solver's trials, in a
grid over ``solver`` and ``cg_steps``), or not at all (one that two grids of a list of
grids share), are trained once.

A trial whose fit fails for its configuration alone (a singular system, factors that turn
NaN or overflow, memory that runs out: :data:`TRIAL_ERRORS`) is warned of, recorded with
its ``error`` and a NaN score, and left behind, as scikit-learn's searches do with
``error_score=nan``; the search fails only when every trial does.

Reuse: the training data is checked, split and transposed once; each confidence setting's
per-entry weights are computed once; on the GPU the data stays on the device across
trials. Memory: every configuration's factors live at once during the first rung (they
are freed as trials stop), so a search over many configurations of a very large model
may need ``n_samples`` or a smaller grid.
"""

from __future__ import annotations

import csv
import logging
import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from . import data
from ._training import Training, check_fit_memory, idle_settings
from ._urls import is_url, written
from .backends import get_backend, get_backend_or_cpu
from .evaluation import (
    LOWER_IS_BETTER,
    VALIDATION_METRICS,
    _sample_users,
    binarize,
    held_out_split,
    metric_name,
    scorable_part,
    validation_score,
)
from .model import ALS

logger = logging.getLogger("gpu_als")

__all__ = ["tune", "search_space", "TuneResult", "DEFAULT_GRID", "DEFAULT_EXPLICIT_GRID"]


#: The default grid; explicit feedback has no alpha to search.
DEFAULT_GRID: dict[str, list] = {"factors": [32, 64, 128],
                                 "regularization": [0.001, 0.01, 0.1],
                                 "alpha": [1.0, 5.0, 10.0, 20.0, 40.0]}
DEFAULT_EXPLICIT_GRID: dict[str, list] = {"factors": [16, 32, 64],
                                          "regularization": [0.01, 0.03, 0.1, 0.3]}


@dataclass(repr=False)
class TuneResult:
    """What :func:`tune` returns. Its repr is a summary (the best, the trials counted);
    :meth:`table` has every trial.

    Attributes
    ----------
    best_params : dict
        The winning hyperparameters (those searched over; the rest are ``base_params``).
    best_score : float
        Its validation metric.
    model : ALS or None
        The winning configuration refitted on all of ``user_items``; None for a search
        with ``refit=False``.
    trials : list of dict
        One per configuration: its hyperparameters, ``score`` (the metric at the last rung
        it reached), ``iterations_trained``, ``finished`` (reached its full iterations),
        ``seconds`` (training time); where a trial failed, also ``error`` (its exception
        as ``"Type: message"``, ``""`` for the others) and a NaN score.
    metric : str
        e.g. ``"recall@10"``, or ``"rmse"``.
    lower_is_better : bool
        True for the RMSE, False for the ranking metrics.
    backend : str
        Where the trials trained: "cpu" or "gpu".
    searched : list of str
        The hyperparameters searched: ``param_grid``'s names (of a list of grids, all of
        theirs; a trial's value is None where its grid has not that name, and
        ``best_params`` has the names of the best's grid).
    n_same : int
        The configurations left out because each would train the model of another (they
        differ from it in settings that act on nothing in it, or not at all), which has
        a trial.
    """

    best_params: dict[str, Any]
    best_score: float
    model: ALS | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    metric: str = ""
    lower_is_better: bool = False
    backend: str = ""
    searched: list[str] = field(default_factory=list)
    n_same: int = 0

    def __repr__(self) -> str:
        finished = sum(bool(t["finished"]) for t in self.trials)
        failed = sum(bool(t.get("error")) for t in self.trials)
        return (f"TuneResult(best_params={self.best_params!r}, best_score="
                f"{self.best_score:.4g} ({self.metric}), {len(self.trials)} trials "
                f"({finished} finished" + (f", {failed} failed" if failed else "")
                + f"), model={self.model!r}, backend={self.backend!r})")

    def table(self):
        """The trials as a pandas DataFrame, best first (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.trials).sort_values(
            ["finished", "score"], ascending=[False, self.lower_is_better]
        ).reset_index(drop=True)

    def to_csv(self, path) -> Path | str:
        """Write the trials, best first, as CSV (no pandas needed); returns the file
        written (``path``, a leading ``~`` expanded; or its URL, ``s3://...``)."""
        path = path if is_url(path) else data.check_path(path)
        sign = 1 if self.lower_is_better else -1
        rows = sorted(self.trials, key=lambda t: (not t["finished"], math.isnan(t["score"]),
                                                  sign * t["score"]))
        with written(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({name: data.shown_value(value) for name, value in row.items()}
                             for row in rows)
        return path if is_url(path) else Path(path)


#: What a trial's fit may raise for its configuration alone, which :func:`tune` records
#: and searches past: ValueError (a singular ``Y^T Y + lambda I``: NumPy's LinAlgError is
#: one), ArithmeticError (FloatingPointError: factors that turned NaN or overflowed),
#: MemoryError (CuPy's OutOfMemoryError is one). Anything else is a bug, and raised.
TRIAL_ERRORS = (ValueError, ArithmeticError, MemoryError)

#: The most configurations a grid may have without ``n_samples``: each is a fit, and a
#: larger grid (1,000 values of each of three hyperparameters make 10**9) is drawn from.
MAX_CONFIGURATIONS = 100_000


def _is_distribution(values: Any) -> bool:
    """Whether a grid's entry is a distribution to draw values from: anything with an
    ``rvs`` method, as scipy.stats' (``loguniform(1e-4, 1e-1)``, ``randint(16, 129)``)."""
    return callable(getattr(values, "rvs", None))


def _grids(param_grid: Any) -> list[tuple[str, dict[str, Any]]]:
    """``param_grid`` checked, as a list of grids, each with what errors call it: a dict
    (:func:`_grid`), or a non-empty list of them, whose configurations are those of each
    in turn (as scikit-learn's ``ParameterGrid`` takes such a list)."""
    if isinstance(param_grid, Mapping):
        return [("param_grid", _grid(param_grid))]
    if isinstance(param_grid, (list, tuple)) and param_grid and \
            all(isinstance(grid, Mapping) for grid in param_grid):
        return [(f"param_grid[{i}]", _grid(grid, f"param_grid[{i}]"))
                for i, grid in enumerate(param_grid)]
    got = type(param_grid).__name__
    if isinstance(param_grid, (list, tuple)):
        got = "an empty list" if not param_grid else f"a {got} of " + ", ".join(
            dict.fromkeys(type(grid).__name__ for grid in param_grid))
    raise TypeError(f"param_grid must be a dict of hyperparameter name -> list of values, "
                    f"or a list of such dicts, got {got}")


def _grid(param_grid: Mapping, where: str = "param_grid") -> dict[str, Any]:
    """One grid checked: a dict of non-empty lists (any iterable but a string, read once)
    of distinct values, NumPy scalars as Python's, or of distributions
    (:func:`_is_distribution`), kept as they are; ``where`` names it in errors."""
    lists: dict[str, Any] = {}
    for name, values in param_grid.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}'s keys must be hyperparameter names (strings), got "
                            f"{name!r}")
        name = str(name)  # (NumPy's str_, as pandas may give them, as Python's)
        if name not in ALS._param_names():  # (named before its values are looked at)
            raise ValueError(ALS._unknown_parameter(name))
        if _is_distribution(values):
            lists[name] = values
            continue
        listed = isinstance(values, Iterable) and not isinstance(values, (str, bytes, Mapping))
        values = [v.item() if isinstance(v, np.generic) else v for v in values] if listed \
            else values
        if not listed or not values:
            # one value where a list was meant (factors=64, as ALS takes it): the list of it
            one = "" if listed or values is None or isinstance(values, Mapping) else \
                f": {name}={values!r} alone is [{values!r}]"
            raise ValueError(f"{where}[{name!r}] must be a non-empty list of values (or "
                             f"a distribution to draw them from, such as scipy.stats'){one}")
        if (repeated := _repeated(values)) is not None:
            raise ValueError(f"{where}[{name!r}] holds {repeated!r} more than once: "
                             f"each configuration would be trained twice")
        lists[name] = values
    return lists


def _repeated(values: list) -> Any:
    """A value that ``values`` holds twice (as ``==`` compares: 1 and 1.0 are one), or
    None; by hashing, so that a list of 100,000 values takes milliseconds."""
    try:
        seen: set = set()
        for value in values:
            if value in seen:
                return value
            seen.add(value)
        return None
    except TypeError:  # unhashable values (lists, arrays): compared pairwise
        return next((v for i, v in enumerate(values)
                     if any(_equal(v, earlier) for earlier in values[:i])), None)


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as one truth; False where ``==`` gives none (arrays of several
    elements, sparse matrices: they are refused as hyperparameters later, by name)."""
    try:
        with warnings.catch_warnings():  # (SciPy's "comparing sparse matrices")
            warnings.simplefilter("ignore")
            return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def _draw(grid: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn at random: each distribution's value by its ``rvs``, each
    list's uniformly (scikit-learn's ``ParameterSampler`` draws so), NumPy scalars as
    Python's."""
    chosen = {}
    for name, values in grid.items():
        value = values.rvs(random_state=rng) if _is_distribution(values) \
            else values[int(rng.integers(len(values)))]
        chosen[name] = value.item() if isinstance(value, np.generic) else value
    return chosen


def _check_integers_drawn(draws: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """A distribution of real numbers for a hyperparameter that takes integers (factors,
    iterations, cg_steps) is refused by name, with the distribution to use instead.
    ``draws``: each configuration drawn, with its grid and what errors call that grid."""
    defaults = ALS._param_defaults()
    for where, grid, configuration in draws:
        for name, values in grid.items():
            value = configuration[name]
            if _is_distribution(values) and isinstance(defaults.get(name), int) \
                    and not isinstance(defaults[name], bool) and not isinstance(value, int):
                raise TypeError(f"{where}[{name!r}] drew {value!r}: {name} takes "
                                f"integers, from a distribution of integers such as "
                                f"scipy.stats.randint(LOW, HIGH + 1)")


def _combination(lists: dict[str, list], index: int) -> dict[str, Any]:
    """Configuration ``index`` of the grid ``lists``, in the order of
    ``itertools.product`` (the last hyperparameter varying fastest)."""
    chosen = {}
    for name in reversed(list(lists)):
        index, position = divmod(index, len(lists[name]))
        chosen[name] = lists[name][position]
    return {name: chosen[name] for name in lists}


def tune(
    user_items: Any,
    param_grid: dict[str, Any] | list[dict[str, Any]] | None = None,
    *,
    n_samples: int | None = None,
    metric: str = "recall",
    K: int = 10,
    validation_fraction: float = 0.2,
    validation: Any = None,
    min_value: float | None = None,
    max_users: int | None = None,
    base_params: dict[str, Any] | None = None,
    halving: bool = True,
    min_iterations: int = 3,
    reduction_factor: int = 3,
    random_state: int | None = 0,
    show_progress: bool = True,
    refit: bool = True,
    client: Any = None,
) -> TuneResult:
    """Search ALS hyperparameters on a validation split of ``user_items``.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items), or DataFrame
        The training data (never the test split); a DataFrame of ``user, item[, value]``
        rows as for :meth:`ALS.fit`, whose ids the refitted model keeps.
    param_grid : dict of str -> list or distribution, or a list of such dicts
        Values to try per hyperparameter of :class:`ALS`, e.g.
        ``{"factors": [32, 64], "regularization": [0.001, 0.01], "alpha": [1, 10]}``,
        or a distribution to draw them from, with ``n_samples`` (anything with an ``rvs``
        method, e.g. ``scipy.stats.loguniform(1e-4, 1e-1)``; as scikit-learn's
        ``RandomizedSearchCV`` takes them). A list of dicts (as scikit-learn's
        ``ParameterGrid``) searches the configurations of each, e.g. ``[{"feedback":
        ["implicit"], "alpha": [1, 10]}, {"feedback": ["explicit"], "regularization":
        [0.1, 0.3]}]``, where one grid would cross settings that do not go together; a
        configuration that two of them share trains once. Default: factors,
        regularization and alpha around the reference settings (:data:`DEFAULT_GRID`);
        factors and regularization for explicit feedback (:data:`DEFAULT_EXPLICIT_GRID`).
    n_samples : int, optional
        Try this many configurations drawn at random (seeded) from the grid instead of all:
        of a grid of lists, distinct ones; where it has a distribution, each value drawn
        by itself (lists then uniformly; of a list of grids, each draw's grid first), as
        scikit-learn's ``ParameterSampler`` draws.
    metric : {"recall", "ndcg", "precision", "map", "rmse"}
        Validation metric: a ranking metric at ``K``
        (:func:`gpu_als.evaluation.ranking_metrics`), the higher the better; or, for
        ``feedback="explicit"`` only, the RMSE of the predicted ratings
        (:func:`gpu_als.evaluation.rmse`), the lower the better.
    K : int, default 10
    validation_fraction : float, default 0.2
        Share of each user's training interactions held out for validation.
    validation : scipy.sparse matrix or DataFrame, optional
        The interactions to score on, instead of ``validation_fraction`` of
        ``user_items``: e.g. the later part of
        :func:`~gpu_als.evaluation.temporal_split`, for a search that predicts what users
        do next. A matrix of ``user_items``' shape, or a DataFrame of the same columns
        where ``user_items`` is one. The trials fit on ``user_items`` and are scored on
        the entries of ``validation`` that they can be asked about (a user or item
        without interactions in ``user_items``, or a pair it has too, is left out, with
        a warning that counts them); the best is refitted on both together.
    min_value : float, optional
        A ranking metric counts only the validation entries with a value of at least
        this as relevant, e.g. 4 for ratings from 1 to 5 (as ``gpu-als evaluate
        --min-value``; :func:`~gpu_als.evaluation.binarize`): the others are still held
        out of the trials' fits, and ranked as misses. Default: every validation entry.
        Not with ``metric="rmse"``, which scores every rating.
    max_users : int, optional
        Score the trials on a random sample (``random_state``) of this many of the
        validation users, the same for every trial, instead of all of them: on large data
        a ranking of every validation user can cost as much as a trial's training (as
        :class:`~gpu_als.evaluation.EarlyStopping`'s ``max_users``).
    base_params : dict, optional
        Hyperparameters shared by every trial (default: the reference settings'
        iterations=20 and the ALS defaults; ``backend``, ``dtype`` ... go here).
    halving : bool, default True
        Successive halving on iterations (see the module docstring).
    min_iterations, reduction_factor : int
        First rung and the factor between rungs (and of trials kept at each rung).
    random_state : int or None
        Seeds the validation split (without ``validation``), the sampling and every
        trial's initial factors.
    show_progress : bool
        A progress bar over trials.
    refit : bool, default True
        Fit the best configuration on all of ``user_items`` (with ``validation``'s
        entries) as ``model``; False: only search (``model`` is None), as scikit-learn's
        ``refit=False``, which saves a full fit where only the best settings are wanted.
    client : dask.distributed.Client, optional
        Train the trials on the workers of this Dask cluster (``pip install
        gpu-als[dist]``): each rung's trials at once, a trial in a worker at a time, on
        that worker's backend (``base_params``' ``backend``, a name, resolved on each
        worker: with ``dask_cuda.LocalCUDACluster``, a trial per GPU). The training and
        validation parts go to every worker once; a trial's factors stay on the workers
        between rungs; the best is refitted on a worker too (the model then in this
        process: on its backend where this process has it, else on the CPU, as
        :func:`gpu_als.distributed.fit_distributed` leaves one). The trials and the
        model are those of the search without it, but that each worker's BLAS may round
        differently from this process's. Waits up to 60 s for a first worker.

    Returns
    -------
    TuneResult
    """
    data.check_choice("metric", metric, VALIDATION_METRICS)
    K = data.check_int("K", K, minimum=1)
    halving = data.check_bool("halving", halving)
    show_progress = data.check_bool("show_progress", show_progress)
    refit = data.check_bool("refit", refit)
    min_iterations = data.check_int("min_iterations", min_iterations, minimum=1)
    reduction_factor = data.check_int("reduction_factor", reduction_factor, minimum=2)
    validation_fraction = data.check_float("validation_fraction", validation_fraction,
                                           strict=True)
    if validation_fraction >= 1:
        raise ValueError(f"validation_fraction={validation_fraction}: must be < 1")
    if max_users is not None:
        max_users = data.check_int("max_users", max_users, minimum=1)
    if min_value is not None:
        min_value = data.check_float("min_value", min_value, minimum=-math.inf)
        if metric == "rmse":
            raise ValueError("min_value chooses the validation entries a ranking metric "
                             "counts as relevant; metric='rmse' scores every rating")
    base, param_grid, configurations, n_same = _search_space(
        param_grid, base_params, metric=metric, n_samples=n_samples, random_state=random_state)
    if client is not None:
        from .distributed import _check_client, _running_workers

        _check_client(client, "tune")
        if not isinstance(base.get("backend", "auto"), str):
            raise TypeError("tune on a cluster needs a backend name ('cpu', 'gpu' or "
                            "'auto') in base_params, which each worker resolves, not a "
                            "Backend instance")
        _running_workers(client, 60.0, "tune")
    names = _searched(param_grid)
    feedbacks = _feedbacks(base, configurations)
    feedback = "explicit" if "explicit" in feedbacks else "implicit"
    user_ids = item_ids = None  # a DataFrame's, which the refit below keeps
    if validation is not None:
        user_items, validation, user_ids, item_ids = _given_parts(user_items, validation,
                                                                  feedback)
    elif data.is_dataframe(user_items):  # float64: each fit takes its own dtype from it
        user_items, user_ids, item_ids = data.frame_interactions(user_items, feedback,
                                                                 np.float64)
    if hasattr(user_items, "shape") and len(user_items.shape) == 2:  # before any copy
        largest = max(ALS(**{**base, **config})._check_params()["factors"]
                      for config in configurations)
        check_fit_memory(user_items.shape, {"factors": largest,
                                            "dtype": base.get("dtype", np.float32)})
    if validation is None:
        fit_part, validation = held_out_split(user_items, validation_fraction, random_state,
                                              "validation")
    else:  # the refit's: both parts
        fit_part, user_items = user_items, (user_items + validation).tocsr()
        if feedback == "explicit":
            data.warn_summed_ratings(fit_part.nnz + validation.nnz, user_items,
                                     rows="entries of user_items and validation")
        validation = _scored_part(fit_part, validation)
    if min_value is not None:  # what a ranking metric counts as hits
        validation = binarize(validation, min_value)
        if validation.nnz == 0:
            raise ValueError(f"no validation entry has a value >= min_value={min_value:g}: "
                             f"nothing to score trials on")
    if max_users is not None:  # (after min_value: users with entries that count)
        validation = _sample_users(validation, max_users, random_state)

    def score(model: ALS) -> float:
        return validation_score(model, fit_part, validation, metric, K)

    given_backend = base.get("backend", "auto")  # (on a cluster, each worker resolves it)
    if client is None:  # one backend instance: the data stays put on it
        backend = base["backend"] = get_backend(given_backend)
    models = [ALS(**{**base, **config}) for config in configurations]
    prepared = _PreparedByDtype(fit_part, [model._check_params()["dtype"] for model in models],
                                keep=client is None)  # (a cluster's workers prepare it)
    runner: _LocalTrials | _ClusterTrials = \
        _LocalTrials(models, prepared, score, names) if client is None else \
        _ClusterTrials(client, models, fit_part, validation, metric, K, names)
    trials = _successive_halving(
        runner, models, lower_is_better=metric in LOWER_IS_BETTER,
        first_rung=min_iterations if halving else None, reduction_factor=reduction_factor,
        show_progress=show_progress, metric=metric_name(metric, K),
        labels=[", ".join(f"{name}={data.shown_value(value)!r}"
                          for name, value in config.items()) for config in configurations])
    # every record has every name searched: None where its grid (of a list) has not it
    trials = [{**{name: config.get(name) for name in names}, **trial}
              for config, trial in zip(configurations, trials)]
    sign = 1 if metric in LOWER_IS_BETTER else -1  # sorting by sign * score: best first
    best = min((i for i, t in enumerate(trials) if t["finished"]),
               key=lambda i: sign * trials[i]["score"])
    best_params = dict(configurations[best])
    model = None
    if refit:
        model = ALS(**{**base, "backend": given_backend, **best_params})
        logger.info("refitting the best, %s, on all the data", best_params)
        if client is not None:  # on a worker, as a trial
            _refit_on_worker(client, model, user_items, (user_ids, item_ids))
        else:  # on the trials' device
            model.set_params(backend=backend).fit(user_items, user_ids=user_ids,
                                                  item_ids=item_ids)
            model.set_params(backend=given_backend)
    return TuneResult(best_params, trials[best]["score"], model, trials,
                      metric_name(metric, K), metric in LOWER_IS_BETTER,
                      ", ".join(sorted(runner.backends)), names, n_same)


def _given_parts(user_items: Any, validation: Any, feedback: str
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix, Any, Any]:
    """``tune``'s ``user_items`` and a ``validation`` given with it as two checked
    matrices of the same users and items (and their ids: for DataFrames, those of
    either)."""
    if data.is_dataframe(user_items) != data.is_dataframe(validation):
        kinds = ("a DataFrame", "a matrix") if data.is_dataframe(user_items) else \
            ("a matrix", "a DataFrame")
        raise TypeError(f"user_items is {kinds[0]} but validation is {kinds[1]}: give the "
                        f"two parts of one split alike")
    if not data.is_dataframe(user_items):
        fit_part = data.check_user_items(user_items, data.kept_dtype(user_items))
        held_out = data.check_user_items_allow_empty(validation, data.kept_dtype(validation),
                                                     name="validation")
        if held_out.shape != fit_part.shape:
            raise ValueError(f"validation has shape {held_out.shape}, user_items "
                             f"{fit_part.shape}: give the two parts of one split, of the "
                             f"same users and items")
        return fit_part, held_out, None, None
    frames = [data._eager_frame(part) for part in (user_items, validation)]
    valued = ["value" in frame.columns for frame in frames]
    if valued[0] != valued[1]:
        has, lacks = ("user_items", "validation") if valued[0] else ("validation", "user_items")
        raise ValueError(f"{has} has a column 'value' but {lacks} has not (so that its rows "
                         f"would count 1 each): give both parts the same columns")
    if len(frames[1]) == 0:  # (as a matrix without entries is told; from_dataframe's
        raise ValueError("validation has no rows to score trials on")  # words are fit's)
    (fit_part, fit_users, fit_items), (held_out, held_users, held_items) = (
        data.frame_interactions(frame, feedback, np.float64) for frame in frames)
    user_ids, user_at = data._positions(np.concatenate([fit_users, held_users]), None, "user",
                                        False)
    item_ids, item_at = data._positions(np.concatenate([fit_items, held_items]), None, "item",
                                        False)

    def placed(matrix, rows_at, columns_at):  # in the rows and columns of both parts' ids
        coo = matrix.tocoo()
        return sp.csr_matrix((coo.data, (rows_at[coo.row], columns_at[coo.col])),
                             shape=(len(user_ids), len(item_ids)))

    return (placed(fit_part, user_at[:len(fit_users)], item_at[:len(fit_items)]),
            placed(held_out, user_at[len(fit_users):], item_at[len(fit_items):]),
            user_ids, item_ids)


def _scored_part(fit_part: sp.csr_matrix, validation: sp.csr_matrix) -> sp.csr_matrix:
    """The entries of a given ``validation`` that trials fitted on ``fit_part`` are
    scored on (see :func:`gpu_als.evaluation.scorable_part`), the rest warned of."""
    scored, new, shared = scorable_part(fit_part, validation)
    left_out = [f"{new:,} of users or items without interactions in user_items"] * bool(new) \
        + [f"{shared:,} that user_items has too"] * bool(shared)
    if scored.nnz == 0:
        raise ValueError("validation has no entries to score trials on"
                         + (f" ({' and '.join(left_out)})" if left_out else ""))
    if left_out:
        warnings.warn(f"of the {validation.nnz:,} entries of validation, "
                      f"{' and '.join(left_out)} are left out of the scoring",
                      UserWarning, stacklevel=data.user_stacklevel())
    return scored


def search_space(param_grid: dict[str, Any] | list[dict[str, Any]] | None = None,
                 base_params: dict[str, Any] | None = None, *, metric: str = "recall",
                 n_samples: int | None = None, random_state: int | None = 0
                 ) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """What :func:`tune` with these arguments would try, every name and value checked
    without any data (the command line calls it before reading the file): the base
    hyperparameters, the grid (the default one for ``None``) and its configurations.

    Raises
    ------
    ValueError, TypeError
        An unknown hyperparameter, a value :class:`ALS` refuses, a grid that is not a dict
        of non-empty lists of distinct values, or ``metric="rmse"`` for implicit feedback.
    """
    base, grid, configurations, _ = _search_space(param_grid, base_params, metric=metric,
                                                  n_samples=n_samples,
                                                  random_state=random_state)
    return base, grid, configurations


def _search_space(param_grid: Any, base_params: dict[str, Any] | None, *, metric: str,
                  n_samples: int | None, random_state: int | None
                  ) -> tuple[dict[str, Any], Any, list[dict[str, Any]], int]:
    """:func:`search_space`, and how many configurations it left out as the same model as
    another's (:func:`_distinct_models`)."""
    data.check_choice("metric", metric, VALIDATION_METRICS)
    if base_params is not None and not isinstance(base_params, Mapping):
        raise TypeError(f"base_params must be a dict of hyperparameter name -> value, got "
                        f"{type(base_params).__name__}")
    base = {"iterations": 20, "show_progress": False, "random_state": random_state,
            **(base_params or {})}
    if param_grid is None:
        param_grid = dict(DEFAULT_EXPLICIT_GRID if base.get("feedback") == "explicit"
                          else DEFAULT_GRID)
    configurations = _configurations(param_grid, base, n_samples, random_state)
    try:
        ALS(**base)._check_params()
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"base_params: {exc}") from None
    resolved = [_checked(base, config) for config in configurations]
    idle = [idle_settings(p) for p in resolved]
    for name in _searched(param_grid):  # searched, but idle in every trial that sets it
        setting = [(config, settings) for config, settings in zip(configurations, idle)
                   if name in config]
        values = len({repr(config[name]) for config, _ in setting})
        if values > 1 and all(name in settings for _, settings in setting):
            reasons = " or ".join(dict.fromkeys(settings[name] for _, settings in setting))
            raise ValueError(f"param_grid[{name!r}]: {name} has no effect with {reasons}, "
                             f"so its {values} values would train the same model; leave it "
                             f"out of the grid")
    distinct = _distinct_models(configurations, resolved, idle)
    feedbacks = _feedbacks(base, distinct)
    if metric == "rmse" and feedbacks != {"explicit"}:
        raise ValueError("metric='rmse' scores predicted ratings: every trial needs "
                         "feedback='explicit' (base_params={'feedback': 'explicit'})")
    return base, param_grid, distinct, len(configurations) - len(distinct)


def _checked(base: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    """A configuration's hyperparameters as its trial takes them (``ALS._check_params``);
    a value refused is raised again with the configuration that holds it."""
    try:
        return ALS(**{**base, **configuration})._check_params()
    except (TypeError, ValueError) as exc:
        shown = ", ".join(f"{name!r}: {data.short_repr(value)}"  # (a matrix's repr: lines)
                          for name, value in configuration.items())
        raise type(exc)(f"param_grid's configuration {{{shown}}}: {exc}") from None


def _distinct_models(configurations: list[dict[str, Any]], resolved: list[dict[str, Any]],
                     idle: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The configurations that train different models: of those whose hyperparameters
    (``resolved``: as the trials take them) differ only in settings idle in them
    (``cg_steps`` of the Cholesky solver's trials in a grid over ``solver`` and
    ``cg_steps``), or not at all (a value that one grid of a list sets and another leaves
    to ``base_params`` or the default), the first, as the others would be the same fit."""
    seen: set[tuple] = set()
    kept = []
    for config, p, settings in zip(configurations, resolved, idle):
        acting = tuple(sorted((name, repr(value)) for name, value in {**config, **p}.items()
                              if name not in settings))
        if acting not in seen:
            seen.add(acting)
            kept.append(config)
    if len(kept) < len(configurations):
        logger.info("%d of the %d configurations would train the model of another (they "
                    "differ from it only in settings that act on nothing in them, or not "
                    "at all): each model is trained once",
                    len(configurations) - len(kept), len(configurations))
    return kept


def _feedbacks(base: dict[str, Any], configurations: list[dict[str, Any]]) -> set[str]:
    """The feedbacks (implicit, explicit) that the search's trials train on."""
    return {config.get("feedback", base.get("feedback", "implicit"))
            for config in configurations}


def _configurations(param_grid: Any, base: dict[str, Any], n_samples: int | None,
                    random_state: int | None) -> list[dict[str, Any]]:
    """The grid's configurations (all, or ``n_samples`` drawn at random, in grid order),
    each hyperparameter name checked against :class:`ALS`'s; the draw never lists the
    whole grid, which may be far larger than what is drawn from it. A list of grids is
    one grid of their configurations in turn; where one has a distribution, each draw
    picks a grid at random first, as scikit-learn's ``ParameterSampler`` does."""
    grids = _grids(param_grid)
    known = set(ALS._param_names())
    if names := [name for name in base if not isinstance(name, str)]:
        raise TypeError(f"base_params' keys must be hyperparameter names (strings), got "
                        f"{names[0]!r}")
    for name in base:  # (a grid's names: checked by _grid)
        if name not in known:
            raise ValueError(ALS._unknown_parameter(name))
    if n_samples is not None:
        n_samples = data.check_int("n_samples", n_samples, minimum=1)
    if drawn := [(where, name) for where, grid in grids for name, values in grid.items()
                 if _is_distribution(values)]:
        if n_samples is None:
            where, name = drawn[0]
            raise ValueError(f"{where}[{name!r}] is a distribution: pass n_samples, "
                             f"the number of configurations to draw from it")
        if n_samples > MAX_CONFIGURATIONS:
            raise ValueError(f"n_samples={n_samples:,}: each configuration is a fit, and at "
                             f"most {MAX_CONFIGURATIONS:,} are tried")
        rng = np.random.default_rng(data.check_random_state(random_state))
        draws = []
        for _ in range(n_samples):  # (one grid: no draw of it, the values as before)
            where, grid = grids[int(rng.integers(len(grids)))] if len(grids) > 1 else grids[0]
            draws.append((where, grid, _draw(grid, rng)))
        _check_integers_drawn(draws)
        return [configuration for _, _, configuration in draws]
    sizes = [math.prod(len(values) for values in grid.values()) for _, grid in grids]
    total = sum(sizes)
    if min(total, n_samples or total) > MAX_CONFIGURATIONS:
        fix = "pass n_samples to try that many, drawn at random" if n_samples is None \
            else f"n_samples={n_samples:,} is more"
        raise ValueError(f"the grid has {total:,} configurations, each a fit, and at most "
                         f"{MAX_CONFIGURATIONS:,} are tried: {fix}")
    chosen = range(total) if n_samples is None else sorted(
        np.random.default_rng(data.check_random_state(random_state)).choice(
            total, min(n_samples, total), replace=False).tolist())
    starts = np.cumsum([0, *sizes])  # where each grid's configurations begin

    def configuration(index: int) -> dict[str, Any]:
        which = int(np.searchsorted(starts, index, side="right")) - 1
        return _combination(grids[which][1], index - int(starts[which]))

    return [configuration(i) for i in chosen]


def _searched(param_grid: Any) -> list[str]:
    """The names of a (checked) ``param_grid``, a dict or a list of them, in order."""
    grids = [param_grid] if isinstance(param_grid, Mapping) else param_grid
    return list(dict.fromkeys(str(name) for grid in grids for name in grid))


class _PreparedByDtype:
    """The training part as :class:`gpu_als.data.Prepared` in each dtype the trials take,
    prepared once per dtype (a trial of another dtype than the first prepared its own
    copy, from values rounded to the first's: float64 trials learnt float32's).

    Each is prepared at once: a dtype whose preparation fails (values beyond float32's
    range) fails the trials of that dtype alone, as each asks for it; and where every
    trial would, the search is refused with that error before any trains. ``keep=False``:
    each dtype only checked so (a search on a cluster, whose workers prepare the data)."""

    def __init__(self, matrix: Any, dtypes: Iterable[Any], *, keep: bool = True):
        self._prepared: dict[np.dtype, data.Prepared | Exception | None] = {}
        for dtype in dict.fromkeys(np.dtype(dtype) for dtype in dtypes):
            try:
                if keep:
                    self._prepared[dtype] = data.Prepared(matrix, dtype)
                else:
                    data.check_user_items(matrix, dtype)
                    self._prepared[dtype] = None
            except TRIAL_ERRORS as exc:
                self._prepared[dtype] = exc
        errors = [found for found in self._prepared.values() if isinstance(found, Exception)]
        if len(errors) == len(self._prepared):
            raise errors[0]

    def __call__(self, dtype: Any) -> data.Prepared:
        found = self._prepared[np.dtype(dtype)]
        if isinstance(found, Exception):
            raise found
        assert found is not None, "checked only (keep=False)"
        return found


class _LocalTrials:
    """The trials of a search trained in this process, one after another, on one backend
    instance (the data stays on it), from the training part prepared once per dtype."""

    def __init__(self, models: list[ALS], prepared: _PreparedByDtype,
                 score: Callable[[ALS], float], searched: Iterable[str]):
        self.models, self.score = models, score
        self.trainings: dict[int, Training] = {}
        #: the trials that failed before training (e.g. more factors than the backend
        #: takes), and why
        self.failed: dict[int, Exception] = {}
        for i, model in enumerate(models):
            try:
                self.trainings[i] = Training(model, prepared(model._check_params()["dtype"]),
                                             searched=searched)
            except TRIAL_ERRORS as exc:
                self.failed[i] = exc
        #: the name of the backend the trials train on
        self.backends = {training.backend.name for training in self.trainings.values()}

    def run(self, budgets: dict[int, int]):
        """Train each trial ``i`` of ``budgets`` to ``budgets[i]`` iterations in all and
        score it: yields ``(i, score or the exception of TRIAL_ERRORS it raised, seconds
        of training)``."""
        for i, budget in budgets.items():
            training = self.trainings[i]
            start = time.perf_counter()
            try:
                try:
                    training.run(budget - training.iterations_done, log=False)
                finally:  # (also the training a failure cut short)
                    seconds = time.perf_counter() - start
                scored = ALS(**self.models[i].get_params())  # transient: no factors later
                training.finish(scored)
                outcome: float | Exception = self.score(scored)
            except TRIAL_ERRORS as exc:
                outcome = exc
            yield i, outcome, seconds

    def stop(self, i: int) -> None:
        """Free the factors of trial ``i``, which trains no more."""
        self.trainings.pop(i, None)


class _ClusterTrials:
    """The trials of a search trained on the workers of a Dask cluster, each rung's at
    once, a task per trial and rung (:func:`_trial_rung`). The training and validation
    parts are sent to every worker once; a trial's factors go from one rung's task to
    the next on the workers (as NumPy arrays); only scores and times come back. A rung
    whose worker was lost (with the trial's factors) trains its trial again from the
    start to that rung: ALS being deterministic, that is the same model."""

    #: Times a trial is trained again after losing its worker, before the search fails.
    MAX_RETRIES = 3

    def __init__(self, client, models: list[ALS], fit_part: sp.csr_matrix,
                 validation: sp.csr_matrix, metric: str, K: int, searched: Iterable[str]):
        self.client = client
        self.params = [model.get_params() for model in models]
        self.held = [fit_part, validation]  # (to send again where every copy was lost)
        self.parts = client.scatter(self.held, broadcast=True, hash=False)
        self.scoring = (metric, K, tuple(searched))
        self.rungs: dict[int, Any] = {}  # each trial's last rung, a future
        self.failed: dict[int, Exception] = {}  # (found at the first rung)
        self.backends: set[str] = set()  # the names of those the workers trained on
        self.retries: dict[int, int] = {}  # each trial's, after losing its worker

    def run(self, budgets: dict[int, int]):
        """As :meth:`_LocalTrials.run`, the trials trained at once, each yielded as it
        ends; a trial that fails before training (a configuration its worker's backend
        refuses) is put in :attr:`failed` instead."""
        from distributed import as_completed

        started_before = {i for i in budgets if i in self.rungs}
        summaries = {self._submit(i, budget, self.rungs.get(i)): i
                     for i, budget in budgets.items()}
        # (the client's loop: without it, as_completed looks for Dask's default client)
        ended = as_completed(summaries, loop=self.client.loop)
        for summary in ended:
            i = summaries[summary]
            try:
                outcome, seconds, started, backend, said = summary.result()
            except _worker_lost() as exc:
                again = self._submit(i, budgets[i], None, quiet=i in started_before,
                                     lost=exc)
                summaries[again] = i
                ended.add(again)
                continue
            self.backends.add(backend)
            for category, message in said:  # as the trial in this process would warn
                warnings.warn(message, category, stacklevel=data.user_stacklevel())
            if not started:
                self.failed[i] = outcome
                self.stop(i)
                continue
            yield i, outcome, seconds

    def _submit(self, i: int, budget: int, previous, *, quiet: bool = False,
                lost: Exception | None = None):
        """Train trial ``i`` to ``budget`` iterations from its ``previous`` rung (None:
        from the start; ``quiet``: its set-up's warnings were given already); returns the
        future of the rung's summary. ``lost``: why the last try failed (a worker lost):
        logged, and the search fails once the trial has lost one :attr:`MAX_RETRIES`
        times."""
        if lost is not None:
            self.retries[i] = self.retries.get(i, 0) + 1
            if self.retries[i] > self.MAX_RETRIES:
                raise RuntimeError(f"tune on a cluster: trial {i + 1} lost its worker "
                                   f"{self.retries[i]} times, last with "
                                   f"{type(lost).__name__}: {lost}") from lost
            logger.warning("tune: trial %d lost its worker (%s: %s); training it again from "
                           "the start", i + 1, type(lost).__name__, lost)
            from .distributed import _running_workers

            _running_workers(self.client, 60.0, "tune")
            if self._parts_lost():
                self.parts = self.client.scatter(self.held, broadcast=True, hash=False)
        self.rungs[i] = self.client.submit(
            _trial_rung, self.params[i], *self.parts, previous, budget, *self.scoring,
            quiet, pure=False)
        return self.client.submit(_rung_summary, self.rungs[i], pure=False)

    def _parts_lost(self) -> bool:
        """Whether no worker holds a copy of the training or validation part any more (a
        cluster of one worker, which its nanny started again)."""
        try:
            return not all(self.client.who_has(self.parts).values())
        except _worker_lost():  # (Dask has forgotten them: "already forgotten")
            return True

    def stop(self, i: int) -> None:
        """Let the workers drop trial ``i``'s factors."""
        self.rungs.pop(i, None)


def _worker_lost() -> tuple[type[Exception], ...]:
    """What a task's future raises when its worker, or one holding its inputs, was lost."""
    from concurrent.futures import CancelledError  # FutureCancelledError's base

    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    return CancelledError, CommClosedError, KilledWorker


#: On a worker: the training part of a search as each trial's backend holds it
#: (:class:`gpu_als.data.Prepared`, whose weights stay on that backend instance across
#: trials and rungs), dropped when Dask releases the part. Keys: (id(part), dtype,
#: backend name).
_TRIAL_PARTS: dict[tuple[int, str, str], tuple[Any, data.Prepared]] = {}


def _trial_part(fit_part: sp.csr_matrix, dtype: Any, backend_name: str):
    """(backend, prepared part) of a worker's trials of ``dtype`` on ``backend_name``."""
    from .distributed import _aligned

    key = (id(fit_part), np.dtype(dtype).str, backend_name)
    if key not in _TRIAL_PARTS:
        aligned = sp.csr_matrix((_aligned(fit_part.data), _aligned(fit_part.indices),
                                 _aligned(fit_part.indptr)), shape=fit_part.shape)
        _TRIAL_PARTS[key] = (get_backend(backend_name), data.Prepared(aligned, dtype))
        weakref.finalize(fit_part, _TRIAL_PARTS.pop, key, None)
    return _TRIAL_PARTS[key]


def _trial_rung(params: dict[str, Any], fit_part: sp.csr_matrix, validation: sp.csr_matrix,
                previous: tuple | None, budget: int, metric: str, K: int,
                searched: tuple[str, ...], quiet: bool = False) -> tuple:
    """On a worker: one rung of a trial, trained on from ``previous`` (the result of its
    last rung; None for the first, or to train it again from the start: then ``quiet``
    where its set-up warned already) to ``budget`` iterations in all, and scored. Returns
    ``(state, outcome, seconds, started, backend, said)``: the trial's
    :meth:`Training.state` (None once it failed), its score or the exception of
    :data:`TRIAL_ERRORS` it raised, the seconds of training, whether it got past its
    set-up, the name of the backend it trained on, and the warnings it gave, as
    ``(category, message)`` (its set-up's at its first rung only, as a trial in one
    process warns once)."""
    model = ALS(**params)
    p = model._check_params()
    started, seconds, name = False, 0.0, params["backend"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backend, prepared = _trial_part(fit_part, p["dtype"], params["backend"])
            model.set_params(backend=backend)  # (its data stays on this instance)
            name = backend.name  # ("auto" resolved)
            training = Training(model, prepared, searched=searched)
            if previous is not None:
                training.resume(previous[0])
            if previous is not None or quiet:  # (its set-up warned at its first rung)
                del caught[:]
            started = True
            start = time.perf_counter()
            try:
                training.run(budget - training.iterations_done, log=False)
            finally:  # (also the training a failure cut short)
                seconds = time.perf_counter() - start
            training.finish(model)
            outcome: float | Exception = validation_score(model, fit_part, validation,
                                                          metric, K)
        except TRIAL_ERRORS as exc:
            outcome = exc
    said = [(w.category, str(w.message)) for w in caught]
    state = training.state() if started and not isinstance(outcome, Exception) else None
    return state, outcome, seconds, started, name, said


def _refit_on_worker(client, model: ALS, user_items: sp.csr_matrix,
                     ids: tuple[Any, Any]) -> None:
    """Fit ``model`` on ``user_items`` in one of the workers of ``client``, as its trials
    trained (so that it is the model of the search in one process), then hold it here:
    on ``model.backend`` where this process has it (a GPU model where it has a GPU), else
    on the CPU, as :func:`gpu_als.distributed.fit_distributed` leaves its model."""
    fitted, said = client.submit(
        _fitted_on_worker, model.get_params(), client.scatter(user_items, hash=False),
        pure=False).result()
    for category, message in said:  # as the fit in this process would warn
        warnings.warn(message, category, stacklevel=data.user_stacklevel())
    if isinstance(fitted, Exception):
        raise fitted
    X, Y, loss_history = fitted
    home = get_backend_or_cpu(model.backend, f"the refitted {model.backend} model")
    model._set_fitted(home, X, Y, loss_history, *ids)


def _fitted_on_worker(params: dict[str, Any], user_items: sp.csr_matrix) -> tuple:
    """On a worker: ``ALS(**params).fit(user_items)``'s factors (on the host) and loss
    history, or the exception it raised; and its warnings, as ``(category, message)``
    (those before an exception too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = ALS(**params).fit(user_items)
        except Exception as exc:  # (raised in the driver, after the warnings)
            return exc, [(w.category, str(w.message)) for w in caught]
    backend = model._backend
    return ((backend.to_numpy(model.user_factors_), backend.to_numpy(model.item_factors_),
             model.loss_history_), [(w.category, str(w.message)) for w in caught])


def _rung_summary(rung: tuple) -> tuple:
    """What the driver needs of a :func:`_trial_rung`: all but the factors."""
    return rung[1:]


def _successive_halving(runner: _LocalTrials | _ClusterTrials, models: list[ALS], *,
                        lower_is_better: bool, first_rung: int | None, reduction_factor: int,
                        show_progress: bool, labels: list[str], metric: str = "score"
                        ) -> list[dict[str, Any]]:
    """Train a fit of each model's configuration in rungs, through ``runner`` (the models
    are templates: never fitted themselves) and return one record per model: its
    ``score`` at the last rung it reached, ``iterations_trained`` (not ``iterations``: a
    grid may search that), ``finished`` and ``seconds``.

    At each rung every surviving model trains up to ``rung`` iterations (at most its own
    ``iterations``) and is scored; the finished ones leave, and the best
    ``1 / reduction_factor`` of the others (at least one) go on to the next rung, ``rung *
    reduction_factor``. ``first_rung=None``: one rung, every model trained to the end.
    Each ``metric`` score is logged at INFO, the trial named by its ``labels`` entry (its
    configuration). A trial that raises one of :data:`TRIAL_ERRORS` leaves with a
    warning, a NaN score and its ``error`` (every record then has one); a ``ValueError``
    when every trial fails.
    """
    trials: list[dict[str, Any]] = [
        {"score": float("nan"), "iterations_trained": 0, "finished": False, "seconds": 0.0}
        for _ in models]
    failures: dict[int, Exception] = {}

    def fail(i: int, exc: Exception, rung: int | None = None) -> None:
        failures[i] = exc
        runner.stop(i)  # free its factors
        when = "before training" if rung is None else f"training to {rung} iterations"
        warnings.warn(f"trial {i + 1} of {len(models)} ({labels[i]}) failed {when}: "
                      f"{type(exc).__name__}: {exc}; the search goes on without it",
                      UserWarning, stacklevel=data.user_stacklevel())

    targets = [model._check_params()["iterations"] for model in models]
    sign = 1 if lower_is_better else -1  # sorting by sign * score: best first
    rung = max(targets) if first_rung is None else first_rung
    progress = tqdm(total=len(models), desc="tune", unit="trial",
                    disable=None if show_progress else True)
    with progress:
        for i in sorted(runner.failed):  # (where known before any training)
            fail(i, runner.failed[i])
        progress.update(len(failures))
        alive = [i for i in range(len(models)) if i not in failures]
        while alive:
            budgets = {i: min(rung, targets[i]) for i in alive if i not in runner.failed}
            for i, outcome, seconds in runner.run(budgets):
                trials[i]["seconds"] += seconds
                if isinstance(outcome, Exception):
                    fail(i, outcome, budgets[i])
                    continue
                trials[i].update(score=outcome, iterations_trained=budgets[i],
                                 finished=budgets[i] == targets[i])
                logger.info("trial %d of %d: %s of %s: %.5g after %d iterations", i + 1,
                            len(models), metric, labels[i], trials[i]["score"], budgets[i])
            for i in sorted(set(runner.failed) - set(failures)):  # (in trial order)
                fail(i, runner.failed[i])
            failed = [i for i in alive if i in failures]
            alive = [i for i in alive if i not in failures]
            progress.update(len(failed))
            done = [i for i in alive if trials[i]["finished"]]
            running = [i for i in alive if not trials[i]["finished"]]
            keep = len(running) if first_rung is None else \
                math.ceil(len(running) / reduction_factor)
            ranked = sorted(running, key=lambda i: sign * trials[i]["score"])
            progress.update(len(done) + len(ranked) - keep)
            alive = ranked[:keep]
            for i in done + ranked[keep:]:
                runner.stop(i)  # free the factors of trials that stopped
            rung *= reduction_factor
    errors = {i: f"{type(error).__name__}: {error}" for i, error in failures.items()}
    if not any(trial["finished"] for trial in trials):
        first = min(failures)
        raise ValueError(f"every trial of the search failed; the first, trial {first + 1} "
                         f"({labels[first]}), with {errors[first]}") from failures[first]
    if failures:  # every record then has an error, "" for those that did not fail
        for i, trial in enumerate(trials):
            trial["error"] = errors.get(i, "")
    return trials
