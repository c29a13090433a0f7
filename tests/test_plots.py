"""gpu_als.plots: files written without touching pyplot's state; every kind of searched
hyperparameter plotted."""

import numpy as np
import pytest

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
    factors = np.random.default_rng(0).random((20, 3))
    with pytest.raises(ValueError, match="popularity has 19 values for 20 items"):
        plots.plot_item_pca(factors, np.ones(19), tmp_path / "pca.png")
    with pytest.raises(ValueError, match=r"factors of shape \(1, 3\)"):
        plots.pca(factors[:1])
    assert not list(tmp_path.iterdir())


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
