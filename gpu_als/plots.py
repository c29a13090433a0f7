"""Pictures of a fitted model: the training loss and a PCA map of the item factors.

matplotlib is optional (``pip install gpu-als[plot]``) and imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: works without a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install gpu-als[plot]") from exc
    return plt


def pca(factors: Any, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the rows of ``factors`` (an SVD of the centred matrix).

    Returns
    -------
    projected : numpy.ndarray, shape (n_rows, components)
    explained_variance_ratio : numpy.ndarray, shape (components,)
    """
    F = np.asarray(factors, dtype=np.float64)
    centred = F - F.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    ratio = variance[:components] / variance.sum()
    return centred @ vt[:components].T, ratio


def plot_loss(loss_history, path, *, title: str = "ALS training loss") -> Path:
    """The loss after each iteration, on a log scale; written to ``path`` (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    iterations = np.arange(1, len(loss_history) + 1)
    ax.plot(iterations, loss_history, marker="o", markersize=3)
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_item_pca(item_factors, popularity, path, *, title: str = "ALS item embeddings (PCA)"
                  ) -> Path:
    """Item factors projected on their first two principal components, coloured by
    popularity (log scale), with the explained variance on the axes (the reference
    document's embedding visualisation)."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    projected, ratio = pca(item_factors)
    popularity = np.asarray(popularity, dtype=np.float64)
    order = np.argsort(popularity)  # popular items drawn last, on top
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    points = ax.scatter(projected[order, 0], projected[order, 1], c=popularity[order] + 1,
                        cmap="viridis", norm=LogNorm(), alpha=0.7, s=10)
    fig.colorbar(points, ax=ax, label="popularity (training interactions + 1)")
    ax.set_xlabel(f"PC1 ({ratio[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.1%} of variance)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_tuning(result, path, *, title: str | None = None) -> Path:
    """The validation metric against each searched hyperparameter (one panel each).

    Filled dots: trials that ran all their iterations; hollow: trials stopped early by
    successive halving, at the score of the last rung they reached.
    """
    plt = _pyplot()
    names = list(result.best_params)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), dpi=120,
                             squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for finished, style in ((False, {"facecolors": "none", "edgecolors": "tab:gray"}),
                                (True, {"color": "tab:blue"})):
            points = [(t[name], t["score"]) for t in result.trials
                      if t["finished"] == finished]
            if points:
                x, y = zip(*points)
                ax.scatter(x, y, s=25, label="finished" if finished else "stopped early",
                           **style)
        values = [t[name] for t in result.trials]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        ax.axvline(result.best_params[name], color="tab:red", alpha=0.4)
        ax.set_xlabel(name)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"validation {result.metric}")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or f"Hyperparameter search ({len(result.trials)} configurations)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
