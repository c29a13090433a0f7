"""Pictures: the training loss and a PCA map of a fitted model's item factors, tuning
results, and the benchmark's charts.

matplotlib is optional (``pip install gpu-als[plot]``) and imported only here. The charts
are drawn on ``matplotlib.figure.Figure`` objects, not through pyplot: writing a file
changes neither pyplot's backend nor its current figure (a notebook's inline plots keep
working). A chart's ``path`` may be a URL (``s3://bucket/loss.png``: any protocol of
fsspec's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._urls import is_url, suffix, written
from .data import check_int, check_output_file, check_path, described, shown_value, to_host

__all__ = ["plot_loss", "plot_item_pca", "plot_tuning", "plot_benchmark", "pca",
           "check_matplotlib", "MAX_VALUE_TICKS"]


def check_matplotlib() -> None:
    """Raise the ``ImportError`` the plots would raise where matplotlib is not installed:
    for a command to fail before its work rather than after it."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"plots need matplotlib ({exc}): pip install gpu-als[plot]"
                          ) from exc


def _figure(**kwargs):
    """A new ``matplotlib.figure.Figure`` (``savefig`` needs no display and no pyplot)."""
    check_matplotlib()
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path) -> Path | str:
    """Write ``fig`` to ``path`` (a str, bytes or path-like, or a URL) in the format its
    suffix names, PNG for a name without one (``.png`` then added, as matplotlib does), and
    return the file written: as a Path, or the URL."""
    if is_url(path):
        if not suffix(path):
            path += ".png"
        with written(path, "wb") as file:  # (whole or not at all)
            fig.savefig(file, format=suffix(path)[1:])
        return path
    path = Path(check_path(path))
    if not path.suffix and not path.is_dir():  # a folder: refused below
        path = path.with_name(path.name + ".png")
    # a folder would make matplotlib write <folder>.png beside it
    check_output_file(str(path), "write the chart", "chart.png")
    fig.savefig(path)
    return path


def pca(factors: Any, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the rows of ``factors`` (an SVD of the centred matrix;
    NumPy or CuPy).

    Returns
    -------
    projected : numpy.ndarray, shape (n_rows, components)
    explained_variance_ratio : numpy.ndarray, shape (components,)
    """
    return _pca(factors, components)


def _pca(factors: Any, components: int, name: str = "factors"
         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pca`, whose errors call ``factors`` ``name``."""
    components = check_int("components", components, minimum=1)
    F = _numbers(factors, name)
    if F.ndim != 2 or len(F) < 2 or F.shape[1] < components:
        raise ValueError(f"{name} of shape {F.shape}: a PCA to {components} components "
                         f"needs at least 2 rows and {components} columns")
    if not np.isfinite(F).all():
        raise ValueError(f"{name} hold NaN or infinite values: no PCA of them")
    centred = F - F.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    total = variance.sum()  # 0 for rows all alike: no variance, none explained
    ratio = variance[:components] / total if total > 0 else np.zeros(components)
    return centred @ vt[:components].T, ratio


def _numbers(value: Any, name: str) -> np.ndarray:
    """``value`` (NumPy, CuPy or anything ``numpy.asarray`` takes) as a float64 host
    array; a ``TypeError`` naming ``name`` for what does not read as numbers (text,
    a sparse matrix, lists of several lengths)."""
    try:
        return to_host(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {described(value)}"
                        ) from None


def _of_model(value: Any, attribute: str) -> Any:
    """``value``, or where it is a fitted :class:`gpu_als.ALS`, its ``attribute``."""
    from .model import ALS

    if isinstance(value, ALS):
        value._check_fitted()  # NotFittedError for a model not fitted yet
        return getattr(value, attribute)
    return value


def plot_loss(loss_history, path, *, title: str = "ALS training loss") -> Path | str:
    """The loss after each iteration, on a log scale (linear where a loss is 0 or
    below); written to ``path`` (PNG). ``loss_history``: a fitted model's
    ``loss_history_``, or the model itself."""
    loss_history = _numbers(_of_model(loss_history, "loss_history_"), "loss_history")
    if loss_history.ndim != 1:
        raise ValueError(f"loss_history must hold one loss per iteration (1-D), got shape "
                         f"{loss_history.shape}")
    if len(loss_history) == 0:
        raise ValueError("no loss to plot: loss_history is empty (a fit with "
                         "calculate_training_loss=False, or iterations=0, records none)")
    if not np.isfinite(loss_history).all():  # (drawn with gaps before)
        raise ValueError("loss_history holds NaN or infinite values: a fit's has none")
    fig = _figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    iterations = np.arange(1, len(loss_history) + 1)
    ax.plot(iterations, loss_history, marker="o", markersize=3)
    if loss_history.min() > 0:  # (else matplotlib's warning, "cannot be log-scaled")
        ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_item_pca(item_factors, popularity, path, *, title: str = "ALS item embeddings (PCA)"
                  ) -> Path | str:
    """Item factors projected on their first two principal components, coloured by
    popularity (log scale), with the explained variance on the axes (the reference
    document's embedding visualisation). ``item_factors``: a fitted model's
    ``item_factors_``, or the model itself."""
    projected, ratio = _pca(_of_model(item_factors, "item_factors_"), 2, "item_factors")
    popularity = _numbers(popularity, "popularity").ravel()
    if len(popularity) != len(projected):
        raise ValueError(f"popularity has {len(popularity)} values for {len(projected)} "
                         f"items: give one per row of item_factors")
    if not (np.isfinite(popularity) & (popularity >= 0)).all():  # (matplotlib's "Invalid
        raise ValueError("popularity must hold counts: finite and >= 0, e.g. "  # vmin")
                         "R.getnnz(axis=0) of the training matrix R")
    fig = _figure(figsize=(6.5, 5), dpi=120)
    from matplotlib.colors import LogNorm

    ax = fig.subplots()
    order = np.argsort(popularity)  # popular items drawn last, on top
    points = ax.scatter(projected[order, 0], projected[order, 1], c=popularity[order] + 1,
                        cmap="viridis", norm=LogNorm(), alpha=0.7, s=10)
    fig.colorbar(points, ax=ax, label="popularity (training interactions + 1)")
    ax.set_xlabel(f"PC1 ({ratio[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.1%} of variance)")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


#: A numeric hyperparameter tried at up to this many values gets a tick at each of them.
MAX_VALUE_TICKS = 8


def plot_tuning(result, path, *, title: str | None = None) -> Path | str:
    """The validation metric against each searched hyperparameter (one panel each).

    Filled dots: trials that ran all their iterations; hollow: trials stopped early by
    successive halving, at the score of the last rung they reached. Failed trials have no
    score, and no dot: the title counts them; nor has a trial in the panel of a
    hyperparameter that its grid (of a list of grids) leaves out. A hyperparameter with
    values that are not numbers (``solver``, ``dtype``, booleans) gets one column per value.
    """
    if not (hasattr(result, "best_params") and hasattr(result, "trials")):
        raise TypeError(f"result must be what gpu_als.tune.tune returns (a TuneResult), got "
                        f"{type(result).__name__}")
    names = getattr(result, "searched", None) or list(result.best_params)
    fig = _figure(figsize=(4 * len(names), 3.6), dpi=120)
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        trials = [t for t in result.trials if t[name] is not None]  # (not of its grid)
        values = [t[name] for t in trials]
        numeric = all(isinstance(v, (int, float, np.integer, np.floating))
                      and not isinstance(v, (bool, np.bool_)) for v in values)
        labels = [] if numeric else list(dict.fromkeys(map(_label, values)))

        def position(value, numeric=numeric, labels=labels):
            return value if numeric else labels.index(_label(value))

        for finished, style in ((False, {"facecolors": "none", "edgecolors": "tab:gray"}),
                                (True, {"color": "tab:blue"})):
            points = [(position(t[name]), t["score"]) for t in trials
                      if t["finished"] == finished and not t.get("error")]
            if points:
                x, y = zip(*points)
                ax.scatter(x, y, s=25, label="finished" if finished else "stopped early",
                           **style)
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        tried = sorted(set(values)) if numeric else []
        if 0 < len(tried) <= MAX_VALUE_TICKS:  # ticks at the values tried, as written
            ax.set_xticks(tried, [f"{v:g}" for v in tried])
            ax.minorticks_off()
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        if name in result.best_params:
            ax.axvline(position(result.best_params[name]), color="tab:red", alpha=0.4)
        ax.set_xlabel(name)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"validation {result.metric}")
    axes[0][0].legend(loc="best", fontsize=8)  # (lower right hid a dot there)
    failed = sum(bool(t.get("error")) for t in result.trials)  # (NaN scores: no dot)
    fig.suptitle(title or f"Hyperparameter search ({len(result.trials)} configurations"
                 + (f", {failed} failed, not drawn)" if failed else ")"))
    fig.tight_layout()
    return _save(fig, path)


def _label(value) -> str:
    """A hyperparameter's value as a tick label: ``float32``, not NumPy's class's repr
    (the two labels of a dtype ran into each other)."""
    return str(shown_value(value))


#: Line style per implementation in the benchmark charts: gpu_als solid, implicit dashed;
#: GPU in warm colours, CPU in cool ones.
_BENCH_STYLE = {
    "gpu_als-gpu-cholesky": ("tab:red", "-", "o"),
    "gpu_als-gpu-cg": ("tab:orange", "-", "s"),
    "gpu_als-gpu-pcg": ("tab:olive", "-", "D"),
    "gpu_als-gpu-pcg2": ("tab:olive", ":", "d"),
    "gpu_als-gpu-cusolver": ("tab:pink", ":", "^"),
    "implicit-gpu-cg": ("tab:brown", "--", "s"),
    "gpu_als-cpu-cholesky": ("tab:blue", "-", "o"),
    "gpu_als-cpu-cg": ("tab:cyan", "-", "s"),
    "gpu_als-cpu-pcg": ("tab:green", "-", "D"),
    "implicit-cpu-cholesky": ("tab:purple", "--", "o"),
    "implicit-cpu-cg": ("tab:gray", "--", "s"),
    "gpu_als-gpu-nnls": ("tab:red", ":", "v"),
    "gpu_als-cpu-nnls": ("tab:blue", ":", "v"),
}


def plot_benchmark(result: dict | str | Path, folder) -> list[Path]:
    """One chart per dataset of a benchmark result (``gpu_als.benchmark``): seconds per
    iteration against factors, one line per implementation, log scales, the device in the
    title. ``result`` is the result dict or its JSON file, either checked as
    :func:`gpu_als.benchmark.check_result` checks it; writes
    ``folder/bench-<dataset>.png`` and returns the paths."""
    from .benchmark import check_result, read_result

    if isinstance(result, dict):
        check_result(result)  # as read_result checks a file's
        document = result
    else:
        document = read_result(result)
    folder = Path(check_path(folder))
    if folder.exists() and not folder.is_dir():  # (mkdir's "[Errno 17] File exists")
        raise FileExistsError(f"folder {folder} is a file: give a folder for the charts")
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r for r in document["benchmarks"] if "error" not in r]
    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        fig = _figure(figsize=(6.4, 4.4), dpi=120)
        ax = fig.subplots()
        names = dict.fromkeys(f"{r['library']}-{r['backend']}-{r['solver']}" for r in mine)
        for name in names:
            line = sorted((r["factors"], r["seconds_per_iteration"]) for r in mine
                          if f"{r['library']}-{r['backend']}-{r['solver']}" == name)
            colour, style, marker = _BENCH_STYLE.get(name, (None, "-", "o"))
            ax.plot(*zip(*line), label=name, color=colour, linestyle=style, marker=marker)
        factors = sorted({r["factors"] for r in mine})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(factors, [str(k) for k in factors])
        ax.set_xlabel("factors")
        ax.set_ylabel("seconds per iteration")
        first = mine[0]
        # the commits of this chart's rows (merge_results marks each row with its run's)
        commits = " + ".join(dict.fromkeys(r.get("commit", document["commit"]) for r in mine))
        ax.set_title(f"{dataset}: {first['users']:,} x {first['items']:,}, "
                     f"{first['nnz']:,} nnz\n{document['device']} ({commits})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"bench-{dataset}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
