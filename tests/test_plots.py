"""gpu_als.plots: files written without touching pyplot's state; every kind of searched
hyperparameter plotted."""

import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als.tune import tune

from .conftest import random_interactions

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def svg_backend():
    """pyplot on a backend of the user's choosing (here a file-only one that is not Agg),
    restored afterwards."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    yield plt
    plt.switch_backend(before)


def test_plots_leave_pyplot_alone(svg_backend, tmp_path):
    """A notebook's backend and figures stay as they were: the charts are drawn on
    Figure objects (pyplot's global state, which matplotlib.use("Agg") changed, is not
    used)."""
    from gpu_als import plots

    plt = svg_backend
    mine = plt.figure()
    rng = np.random.default_rng(0)
    plots.plot_loss([3.0, 2.0, 1.5], tmp_path / "loss.png")
    plots.plot_item_pca(rng.random((50, 4)), rng.integers(0, 9, 50), tmp_path / "pca.png")
    plots.plot_item_pca(rng.random((50, 2)), rng.integers(0, 9, 50), tmp_path / "k2.png")
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == [mine.number] and plt.gcf() is mine
    for name in ("loss.png", "pca.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(mine)


def test_tuning_plot_takes_hyperparameters_that_are_not_numbers(tmp_path):
    """solver, dtype or a boolean searched over: one column per value (comparing them
    with 0 for a log scale raised TypeError after the whole search)."""
    from gpu_als.plots import plot_tuning

    R = random_interactions(80, 40, 0.15, seed=2)
    result = tune(R, {"solver": ["cholesky", "cg"], "calculate_training_loss": [True, False],
                      "factors": [2, 8]},
                  base_params={"iterations": 3, "backend": "cpu"}, show_progress=False)
    assert {t["solver"] for t in result.trials} == {"cholesky", "cg"}
    assert plot_tuning(result, tmp_path / "t.png").stat().st_size > 10_000


def test_plots_say_what_is_wrong_with_their_input(tmp_path):
    from gpu_als import plots

    with pytest.raises(ValueError, match="no loss to plot: loss_history is empty"):
        plots.plot_loss([], tmp_path / "loss.png")
    for shape, losses in (("(1, 2)", [[3.0, 2.0]]), ("()", 3.0)):
        with pytest.raises(ValueError, match=r"loss_history must hold one loss per iteration "
                                             r"\(1-D\), got shape " + re.escape(shape)):
            plots.plot_loss(losses, tmp_path / "loss.png")
    factors = np.random.default_rng(0).random((20, 3))
    with pytest.raises(ValueError, match="popularity has 19 values for 20 items"):
        plots.plot_item_pca(factors, np.ones(19), tmp_path / "pca.png")
    with pytest.raises(ValueError, match=r"factors of shape \(1, 3\)"):
        plots.pca(factors[:1])
    # what does not read as numbers, by name (NumPy's "could not convert string to float"
    # and "setting an array element with a sequence" before); counts that LogNorm cannot
    # draw (matplotlib's "Invalid vmin or vmax")
    for call, match in (
            (lambda: plots.plot_loss([1.0, "a"], tmp_path / "l.png"),
             r"^loss_history must be an array of numbers, got list \[1.0, 'a'\]$"),
            (lambda: plots.pca("x"), r"^factors must be an array of numbers, got str 'x'$"),
            (lambda: plots.plot_item_pca(sp.csr_matrix(factors), np.ones(20),
                                         tmp_path / "p.png"),
             r"^item_factors must be an array of numbers, got csr_matrix$"),
            (lambda: plots.plot_item_pca(factors[:1], np.ones(1), tmp_path / "p.png"),
             r"^item_factors of shape \(1, 3\)"),
            (lambda: plots.plot_item_pca(factors, ["a"] * 20, tmp_path / "p.png"),
             r"^popularity must be an array of numbers")):
        with pytest.raises(TypeError if "numbers" in match else ValueError, match=match):
            call()
    for bad in (np.nan, -1.0):
        with pytest.raises(ValueError, match=r"^popularity must hold counts: finite and >= "
                                             r"0, e.g. R.getnnz\(axis=0\)"):
            plots.plot_item_pca(factors, np.r_[np.ones(19), bad], tmp_path / "pca.png")
    with pytest.raises(TypeError, match="path must be a str or a path-like object, got "
                                        "NoneType"):
        plots.plot_loss([2.0, 1.0], None)
    with pytest.raises(TypeError, match="result must be what gpu_als.tune.tune returns"):
        plots.plot_tuning({"factors": [8]}, tmp_path / "tune.png")
    with pytest.raises(TypeError, match="got SimpleNamespace"):  # best_params, no trials
        plots.plot_tuning(SimpleNamespace(best_params={"factors": 8}), tmp_path / "tune.png")
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="other.json is not a benchmark result"):
        plots.plot_benchmark(tmp_path / "other.json", tmp_path / "charts")
    (tmp_path / "other.json").unlink()
    # a result given as a dict is checked as a file's is (rows of other shapes ended in
    # "string indices must be integers" and KeyError: 'dataset')
    with pytest.raises(ValueError, match="^result is not a benchmark result .*: it has no "
                                         "'device', 'commit', 'date', 'benchmarks'$"):
        plots.plot_benchmark({"rows": []}, tmp_path / "charts")
    head = {"device": "cpu", "commit": "abc", "date": "2026-12-06"}
    with pytest.raises(ValueError, match="^result: its 'benchmarks' must be a list of rows"):
        plots.plot_benchmark({**head, "benchmarks": "x"}, tmp_path / "charts")
    with pytest.raises(ValueError, match=r"^result: row 0 \(\?\) has no 'dataset'"):
        plots.plot_benchmark({**head, "benchmarks": [{"x": 1}]}, tmp_path / "charts")
    with pytest.raises(ValueError, match="factors hold NaN or infinite values"):
        plots.pca(np.full((5, 3), np.nan))  # not numpy's "SVD did not converge"
    with pytest.raises(IsADirectoryError, match=r"cannot write the chart to .*: it is a "
                                                r"folder; give a file name such as"):
        plots.plot_loss([2.0, 1.0], tmp_path)  # matplotlib wrote <tmp_path>.png beside it
    with pytest.raises(FileNotFoundError, match=r"there is no folder .*missing$"):
        plots.plot_loss([2.0, 1.0], tmp_path / "missing" / "loss.png")
    assert not list(tmp_path.iterdir())
    assert not tmp_path.with_name(tmp_path.name + ".png").exists()


def test_a_chart_without_a_suffix_is_a_png_named_as_written(tmp_path):
    """matplotlib adds ".png" to a name without a suffix: the path returned is the file's."""
    from gpu_als import plots

    written = plots.plot_loss([2.0, 1.0], tmp_path / "loss")
    assert written == tmp_path / "loss.png" and written.read_bytes()[:4] == b"\x89PNG"
    assert plots.plot_loss([2.0, 1.0], str(tmp_path / "l.svg")).read_bytes()[:5] == b"<?xml"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.svg", "loss.png"]


def test_plots_take_device_arrays(tmp_path):
    """A GPU model's factors (CuPy: no implicit conversion to NumPy) plot as they are."""
    from gpu_als import plots

    class DeviceArray:  # what matters of a CuPy array here: .get(), no __array__
        def __init__(self, a):
            self._a = np.asarray(a)

        def get(self):
            return self._a.copy()

    factors = np.random.default_rng(0).random((30, 4))
    projected, ratio = plots.pca(DeviceArray(factors))
    np.testing.assert_allclose(np.abs(projected), np.abs(plots.pca(factors)[0]))
    plots.plot_item_pca(DeviceArray(factors), DeviceArray(np.arange(30)), tmp_path / "p.png")
    plots.plot_loss(DeviceArray([3.0, 2.0]), tmp_path / "l.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.png", "p.png"]


# ---- what the charts show: their Figures inspected ---------------------------------------

@pytest.fixture
def drawn(monkeypatch):
    """The Figures the plots draw, kept for inspection."""
    from gpu_als import plots

    figures = []
    new_figure = plots._figure

    def keep(**kwargs):
        figures.append(new_figure(**kwargs))
        return figures[-1]

    monkeypatch.setattr(plots, "_figure", keep)
    return figures


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pca_is_that_of_the_covariance_matrix():
    """Projections on the covariance's leading eigenvectors (up to sign) and their share
    of the total variance: against numpy.linalg.eigh on data off centre."""
    from gpu_als.plots import pca

    rng = np.random.default_rng(0)
    F = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4)) * [5, 2, 1, 0.5] \
        + [10, -3, 0, 7]
    values, vectors = np.linalg.eigh(np.cov(F.T))
    values, vectors = values[::-1], vectors[:, ::-1]
    projected, ratio = pca(F)
    np.testing.assert_allclose(ratio, values[:2] / values.sum(), rtol=1e-10)
    np.testing.assert_allclose(np.abs(projected), np.abs((F - F.mean(axis=0)) @ vectors[:, :2]),
                               rtol=1e-8, atol=1e-8)
    # the share explained does not depend on the scale, however small the variance
    np.testing.assert_allclose(pca(F * 1e-3)[1], ratio, rtol=1e-10)
    assert pca(F, components=3)[0].shape == (300, 3)
    assert pca(F[:2, :2])[0].shape == (2, 2)  # the least it takes: 2 rows, 2 columns
    with np.errstate(all="raise"):  # rows all alike: no variance, none explained
        np.testing.assert_array_equal(pca(np.ones((5, 3)))[1], [0.0, 0.0])
    for bad, error in ((0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="components"):  # -1 gave all but the last one
            pca(F, components=bad)


def test_loss_chart(drawn, tmp_path):
    from gpu_als.plots import plot_loss

    path = plot_loss([4.0, 2.0, 1.5], tmp_path / "loss.png", title="my fit")
    assert is_png(path)
    (ax,) = drawn[0].axes
    (line,) = ax.lines
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [4.0, 2.0, 1.5]
    assert ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == \
        ("iteration", "training loss", "my fit")
    # a loss of 0 or below (a list of one's own): a linear scale, without matplotlib's
    # "cannot be log-scaled" warning; NaN or infinity: refused (drawn with gaps before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_loss([3.0, 0.0, -1.0], tmp_path / "flat.png")
    assert drawn[1].axes[0].get_yscale() == "linear"
    for bad in ([1.0, float("nan")], [float("inf")]):
        with pytest.raises(ValueError, match="^loss_history holds NaN or infinite values"):
            plot_loss(bad, tmp_path / "bad.png")


def test_charts_of_a_model_take_the_model_itself(drawn, tmp_path):
    """plot_loss(model, ...) and plot_item_pca(model, ...): its loss history and item
    factors (a model used to fail inside float()); an unfitted one is NotFittedError."""
    from gpu_als import ALS
    from gpu_als.exceptions import NotFittedError
    from gpu_als.plots import pca, plot_item_pca, plot_loss

    model = ALS(factors=3, iterations=3, random_state=0, show_progress=False).fit(
        random_interactions(20, 10, 0.3, seed=0))
    plot_loss(model, tmp_path / "loss.png")
    assert list(drawn[0].axes[0].lines[0].get_ydata()) == model.loss_history_
    plot_item_pca(model, np.arange(10), tmp_path / "pca.png")
    np.testing.assert_allclose(drawn[1].axes[0].collections[0].get_offsets(),
                               pca(model.item_factors_)[0])
    with pytest.raises(NotFittedError):
        plot_loss(ALS(), tmp_path / "unfitted.png")


def test_item_pca_chart(drawn, tmp_path):
    """Items at their two principal coordinates, the popular ones drawn last, coloured by
    popularity + 1 on a log scale, the explained variance on the axes."""
    from gpu_als.plots import pca, plot_item_pca

    rng = np.random.default_rng(1)
    factors = rng.standard_normal((40, 5)) * [3, 1, 1, 1, 1]
    popularity = rng.permutation(40)
    assert is_png(plot_item_pca(factors, popularity, tmp_path / "pca.png", title="items"))
    ax, colorbar = drawn[0].axes
    (points,) = ax.collections
    projected, ratio = pca(factors)
    order = np.argsort(popularity)
    np.testing.assert_allclose(points.get_offsets(), projected[order])
    np.testing.assert_array_equal(points.get_array(), popularity[order] + 1)
    assert type(points.norm).__name__ == "LogNorm"
    assert ax.get_xlabel() == f"PC1 ({ratio[0]:.1%} of variance)"
    assert ax.get_ylabel() == f"PC2 ({ratio[1]:.1%} of variance)"
    assert ax.get_title() == "items"
    assert colorbar.get_ylabel().startswith("popularity")


def test_tuning_chart(drawn, tmp_path):
    """One panel per hyperparameter: a log axis where the values span 10x or more, one
    column per value that is not a number (booleans too), finished trials filled and
    stopped ones hollow, a line at the best value, a tick at each value tried (16 and
    32, not 17.5, 20, 22.5, ...)."""
    from gpu_als.plots import MAX_VALUE_TICKS, plot_tuning
    from gpu_als.tune import TuneResult

    trials = [
        {"factors": 4, "regularization": 0.01, "solver": "cg", "loss": True, "score": 0.1,
         "finished": False, "alpha": 1, "epsilon": 0.0},
        {"factors": 64, "regularization": 0.02, "solver": "cholesky", "loss": False,
         "score": 0.3, "finished": True, "alpha": 10, "epsilon": 5.0},
        {"factors": 64, "regularization": 0.01, "solver": "cg", "loss": True, "score": 0.2,
         "finished": True, "alpha": 10, "epsilon": 5.0},
    ]
    best = {"factors": 64, "regularization": 0.02, "solver": "cholesky", "loss": False,
            "alpha": 10, "epsilon": 5.0}
    result = TuneResult(best, 0.3, None, trials, "recall@10")
    assert is_png(plot_tuning(result, tmp_path / "tune.png"))
    figure = drawn[0]
    factors, regularization, solver, loss, alpha, epsilon = figure.axes
    assert list(figure.get_size_inches()) == [4 * 6, 3.6]  # 4 inches per hyperparameter
    assert factors.get_xscale() == "log" and regularization.get_xscale() == "linear"
    assert alpha.get_xscale() == "log"  # 10x: log
    assert epsilon.get_xscale() == "linear"  # a zero among the values: linear
    for ax, labels in ((factors, ["4", "64"]), (regularization, ["0.01", "0.02"]),
                       (alpha, ["1", "10"]), (epsilon, ["0", "5"])):
        assert [t.get_text() for t in ax.get_xticklabels()] == labels
        assert [float(x) for x in ax.get_xticks()] == [float(x) for x in labels]
        assert not ax.get_xticks(minor=True).size
    for ax, labels in ((solver, ["cg", "cholesky"]), (loss, ["True", "False"])):
        assert [t.get_text() for t in ax.get_xticklabels()] == labels
        assert ax.get_xlim() == (-0.5, 1.5)
    stopped, finished = solver.collections
    np.testing.assert_array_equal(stopped.get_offsets(), [[0, 0.1]])
    np.testing.assert_array_equal(finished.get_offsets(), [[1, 0.3], [0, 0.2]])
    assert len(stopped.get_facecolors()) == 0 or not stopped.get_facecolors()[:, 3].any()
    assert [line.get_xdata()[0] for ax in figure.axes for line in ax.lines] == \
        [64, 0.02, 1, 1, 10, 5.0]
    assert [ax.get_xlabel() for ax in figure.axes] == list(best)
    assert factors.get_ylabel() == "validation recall@10"
    assert [t.get_text() for t in factors.get_legend().get_texts()] == \
        ["stopped early", "finished"]
    # (Figure.get_suptitle is matplotlib 3.8's; the package takes 3.6)
    assert figure._suptitle.get_text() == "Hyperparameter search (3 configurations)"
    plot_tuning(result, tmp_path / "tune.png", title="my search")
    assert drawn[1]._suptitle.get_text() == "my search"
    failed = {**trials[0], "score": float("nan"), "error": "ValueError: singular"}
    plot_tuning(TuneResult(best, 0.3, None, [*trials, failed], "recall@10"),
                tmp_path / "failed.png")
    assert drawn[2]._suptitle.get_text() == \
        "Hyperparameter search (4 configurations, 1 failed, not drawn)"
    np.testing.assert_array_equal(drawn[2].axes[2].collections[0].get_offsets(), [[0, 0.1]])
    # MAX_VALUE_TICKS values: a tick at each; more: matplotlib's own ticks
    for count in (MAX_VALUE_TICKS, MAX_VALUE_TICKS + 1):
        many = [{**trials[1], "factors": k, "finished": True} for k in range(1, count + 1)]
        plot_tuning(TuneResult({**best, "factors": count}, 0.3, None, many, "recall@10"),
                    tmp_path / "many.png")
        ticks = [float(x) for x in drawn[-1].axes[0].get_xticks()]
        assert ticks and (ticks == list(range(1, count + 1))) == (count == MAX_VALUE_TICKS)
    # values below 1 that span 100x: a log axis too; one value tried: linear, one tick at it
    small = [{**trials[1], "regularization": r} for r in (0.001, 0.1)]
    plot_tuning(TuneResult({**best, "regularization": 0.1}, 0.3, None, small, "recall@10"),
                tmp_path / "small.png")
    factors, regularization = drawn[-1].axes[:2]
    assert regularization.get_xscale() == "log" and factors.get_xscale() == "linear"
    assert [float(x) for x in factors.get_xticks()] == [64.0]
    # a list of grids: a panel per name searched; a trial whose grid has not the name
    # (None) has no dot in its panel, and a best without it no line
    listed = [{"solver": "cholesky", "factors": 8, "cg_steps": None, "score": 0.3,
               "finished": True},
              {"solver": "cg", "factors": 8, "cg_steps": 1, "score": 0.1, "finished": True},
              {"solver": "cg", "factors": 8, "cg_steps": 3, "score": 0.2, "finished": True}]
    plot_tuning(TuneResult({"solver": "cholesky", "factors": 8}, 0.3, None, listed,
                           "recall@10", searched=["solver", "factors", "cg_steps"]),
                tmp_path / "listed.png")
    solver, factors, cg_steps = drawn[-1].axes
    assert [ax.get_xlabel() for ax in drawn[-1].axes] == ["solver", "factors", "cg_steps"]
    np.testing.assert_array_equal(cg_steps.collections[0].get_offsets(), [[1, 0.1], [3, 0.2]])
    assert [float(x) for x in cg_steps.get_xticks()] == [1.0, 3.0]
    assert len(solver.lines) == len(factors.lines) == 1 and not cg_steps.lines
    # a grid over dtype: its values named as dtypes (their classes' reprs ran into each
    # other), the best's line at its own
    typed = [{"dtype": np.float32, "score": 0.3, "finished": True},
             {"dtype": np.float64, "score": 0.2, "finished": True},
             {"dtype": "float32", "score": 0.25, "finished": True}]
    plot_tuning(TuneResult({"dtype": np.float64}, 0.3, None, typed, "recall@10"),
                tmp_path / "typed.png")
    (dtype,) = drawn[-1].axes
    assert [t.get_text() for t in dtype.get_xticklabels()] == ["float32", "float64"]
    np.testing.assert_array_equal(dtype.collections[0].get_offsets(),
                                  [[0, 0.3], [1, 0.2], [0, 0.25]])
    assert dtype.lines[0].get_xdata()[0] == 1
    assert dtype.get_legend()._loc == 0  # "best": where no dot is (lower right hid one)


def test_benchmark_chart(drawn, tmp_path, monkeypatch):
    """One chart per dataset: seconds per iteration against factors, one line per
    implementation (failed rows left out), log scales, the set and the device in the
    title."""
    from gpu_als.plots import plot_benchmark

    def row(dataset, library, factors, seconds, **extra):
        return {"dataset": dataset, "users": 100, "items": 50, "nnz": 1234, "library": library,
                "backend": "gpu", "solver": "cg", "factors": factors,
                "seconds_per_iteration": seconds, "final_loss": 9.5, **extra}

    rows = [row("a", "gpu_als", 128, 0.4), row("a", "gpu_als", 32, 0.1),
            row("a", "implicit", 32, 1.0), row("a", "implicit", 64, 2.0, commit="def456"),
            row("a", "implicit", 128, None, error="timed out"), row("b", "gpu_als", 64, 0.5)]
    result = {"device": "Test GPU", "commit": "abc123", "date": "2026-12-06", "benchmarks": rows}
    paths = plot_benchmark(result, tmp_path / "charts")
    assert [p.name for p in paths] == ["bench-a.png", "bench-b.png"]
    assert all(p.parent == tmp_path / "charts" and is_png(p) for p in paths)
    (ax,) = drawn[0].axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
             for line in ax.lines}
    assert lines == {"gpu_als-gpu-cg": ([32, 128], [0.1, 0.4]),
                     "implicit-gpu-cg": ([32, 64], [1.0, 2.0])}
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.xaxis.get_transform().base == 2  # factors double: 32, 64, 128, 256
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64", "128"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("factors", "seconds per iteration")
    # the commits of the chart's own rows (a merged result's rows each have theirs)
    assert ax.get_title() == "a: 100 x 50, 1,234 nnz\nTest GPU (abc123 + def456)"
    assert drawn[1].axes[0].get_title().endswith("Test GPU (abc123)")
    assert ax.get_legend() is not None
    assert [line.get_label() for line in drawn[1].axes[0].lines] == ["gpu_als-gpu-cg"]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({**result, "date": "2026-12-04"}))
    assert plot_benchmark("~/r.json", "~/home") == [tmp_path / "home" / p.name for p in paths]
    assert not (tmp_path / "~").exists()  # (not a folder named ~ made here)
    with pytest.raises(FileExistsError, match=r"^folder .*r\.json is a file: give a folder "
                                              r"for the charts$"):  # (mkdir's Errno 17)
        plot_benchmark(result, tmp_path / "r.json")


def test_every_benchmark_implementation_has_its_own_line_style():
    from gpu_als import benchmark
    from gpu_als.plots import _BENCH_STYLE

    assert set(_BENCH_STYLE) == set(benchmark.IMPLEMENTATIONS)
    assert len(set(_BENCH_STYLE.values())) == len(_BENCH_STYLE)
