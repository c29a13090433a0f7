"""The command line: demo, train and evaluate, end to end on small inputs."""

import numpy as np
import pytest

from gpu_als import ALS
from gpu_als.cli import main

from .conftest import random_interactions


@pytest.fixture
def csv_file(tmp_path):
    pd = pytest.importorskip("pandas")
    R = random_interactions(60, 30, 0.2, seed=0).tocoo()
    df = pd.DataFrame({"user": [f"u{r}" for r in R.row], "item": R.col + 100,
                       "value": R.data})
    path = tmp_path / "clicks.csv"
    df.to_csv(path, index=False)
    return path


def test_train_saves_a_model_with_its_ids(csv_file, tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "2",
                 "--backend", "cpu", "--output", str(out)]) == 0
    assert "saved to" in capsys.readouterr().out
    model = ALS.load(out, backend="cpu")
    assert model.factors == 4 and model.user_factors_.shape == (60, 4)
    assert model.user_ids_[0] == "u0" and model.item_ids_[0] == 100


def test_evaluate_prints_metrics_against_baselines(csv_file, capsys):
    assert main(["evaluate", str(csv_file), "--factors", "4", "--iterations", "2",
                 "--backend", "cpu", "--K", "5"]) == 0
    out = capsys.readouterr().out
    for word in ("P@5", "Recall@5", "NDCG@5", "MAP@5", "AUC", "Random", "Popularity", "ALS"):
        assert word in out


def test_explicit_evaluate_reports_rmse(csv_file, capsys):
    assert main(["evaluate", str(csv_file), "--feedback", "explicit", "--regularization",
                 "0.1", "--factors", "3", "--iterations", "3", "--backend", "cpu"]) == 0
    assert "RMSE of the predicted test values" in capsys.readouterr().out


def test_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.csv"), "--backend", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--regularization" in capsys.readouterr().out


def test_bad_columns(csv_file, capsys):
    assert main(["train", str(csv_file), "--user-col", "customer", "--backend", "cpu"]) == 2
    assert "column 'customer' not found" in capsys.readouterr().err


def test_demo_writes_the_table_and_plots(movielens, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--backend", "cpu", "--iterations", "3", "--factors", "16",
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Recall@10" in out and "Personalization" in out and "recommend(): all 943" in out
    for name in ("loss.png", "item_pca.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert np.isfinite(float(out.split("Personalization: ")[1].split()[0]))


def test_tune_writes_trials_plot_and_model(csv_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["tune", str(csv_file), "--grid", "factors=2,4", "--grid", "alpha=1,10.5",
            "--iterations", "4", "--min-iterations", "2", "--backend", "cpu",
            "--trials", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png"),
            "--output", str(tmp_path / "best.npz")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 configurations, 2 trained to the end" in out
    assert (tmp_path / "t.csv").read_text().count("\n") == 5
    assert ALS.load(tmp_path / "best.npz", backend="cpu").factors in (2, 4)
    assert main(["tune", str(csv_file), "--grid", "factors"]) == 2
