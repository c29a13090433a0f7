"""The command line: every command, end to end on small inputs."""

import argparse
import datetime
import gzip
import importlib.util
import io
import os
import re
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.cli import build_parser, main
from gpu_als.data import from_dataframe

from .conftest import needs_gpu, random_interactions, skip_or_fail, timed_interactions


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
    said = capsys.readouterr().out
    model = ALS.load(out, backend="cpu")
    assert f" s, final loss {model.loss_history_[-1]:.6g}\nsaved to {out} (" in said
    assert model.factors == 4 and model.user_factors_.shape == (60, 4)
    assert model.user_ids_[0] == "u0" and model.item_ids_[0] == 100
    assert model.solver == "cholesky"
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "2", "--solver",
                 "cg", "--cg-steps", "2", "--backend", "cpu", "--output", str(out)[:-4]]) == 0
    assert f"saved to {out} (" in capsys.readouterr().out  # the name of the file written
    model = ALS.load(str(out)[:-4], backend="cpu")  # found as it was given
    assert (model.solver, model.cg_steps) == ("cg", 2)
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "2", "--solver",
                 "pcg", "--backend", "cpu", "--output", str(out)]) == 0
    assert ALS.load(out, backend="cpu").solver == "pcg"
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "2", "--solver",
                 "nnls", "--backend", "cpu", "--output", str(out)]) == 0
    model = ALS.load(out, backend="cpu")
    assert model.solver == "nnls"
    assert (model.user_factors_ >= 0).all() and (model.item_factors_ >= 0).all()
    assert (model.user_factors_ == 0).any()
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "2",
                 "--scale-regularization", "--backend", "cpu", "--output", str(out)]) == 0
    assert ALS.load(out, backend="cpu").scale_regularization is True


def test_the_regularization_option_defaults_to_that_of_the_feedback(csv_file, tmp_path,
                                                                    capsys):
    """Not given, --regularization is left to ALS (0.01 implicit, 0.1 explicit); given, it
    is kept; the help says both defaults. The demo keeps its own 0.001."""
    from gpu_als.cli import build_parser, model_params

    out = tmp_path / "m.npz"
    for feedback, given, fitted in (("implicit", [], 0.01), ("explicit", [], 0.1),
                                    ("explicit", ["--regularization", "0.05"], 0.05)):
        assert main(["train", str(csv_file), "--factors", "2", "--iterations", "1",
                     "--feedback", feedback, *given, "--backend", "cpu",
                     "--output", str(out)]) == 0
        model = ALS.load(out, backend="cpu")
        assert model.regularization == (float(given[1]) if given else None)
        assert model._check_params()["regularization"] == fitted
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "L2 penalty lambda (default 0.01 for implicit feedback, 0.1 for explicit)" in \
        " ".join(capsys.readouterr().out.split())
    assert model_params(build_parser().parse_args(["demo"]))["regularization"] == 0.001
    assert "regularization" not in model_params(build_parser().parse_args(["train", "f"]))


def test_the_options_offer_what_the_library_has():
    """Every command's --solver, --feedback, --confidence, --dtype and --backend offer the
    library's own list, so that a solver (say) added to ALS is on the command line too."""
    from gpu_als.backends import BACKEND_NAMES
    from gpu_als.cli import build_parser
    from gpu_als.data import CONFIDENCES, DTYPES, FEEDBACKS
    from gpu_als.model import SOLVERS

    library = {"solver": SOLVERS, "feedback": FEEDBACKS, "confidence": CONFIDENCES,
               "dtype": tuple(dtype.name for dtype in DTYPES), "backend": BACKEND_NAMES}
    commands = next(action for action in build_parser()._actions
                    if action.dest == "command").choices
    offered = {(name, action.dest): tuple(action.choices)
               for name, command in commands.items() for action in command._actions
               if action.dest in library}
    assert {dest for _, dest in offered} == set(library)
    assert {(name, "solver") for name in ("train", "evaluate", "demo")} <= set(offered)
    for (name, dest), choices in offered.items():
        assert choices == library[dest], (name, dest)


@pytest.mark.parametrize("command", [["demo"], ["train", "f.csv"], ["tune", "f.csv"],
                                     ["recommend", "m.npz"], ["similar", "m.npz"],
                                     ["explain", "m.npz", "f.csv", "--user", "7", "--items", "1"],
                                     ["fold-in", "m.npz", "f.csv"], ["bench"]])
def test_output_and_N_have_the_short_forms_o_and_N(command):
    """``-o`` for ``--output`` on every command that writes, ``-N`` for ``--N`` on those
    that rank: what a user types first."""
    from gpu_als import benchmark
    from gpu_als.cli import build_parser

    def parse(*options):
        if command[0] == "bench":
            return benchmark.build_parser().parse_args(list(options))
        return build_parser().parse_args([*command, *options])

    assert str(parse("-o", "out.x").output) == "out.x"
    assert parse("-o", "out.x").output == parse("--output", "out.x").output
    if command[0] in ("recommend", "similar", "explain"):
        assert parse("-N", "3").N == 3 == parse("--N", "3").N
@pytest.mark.parametrize("packed", ["plain", "gzip", "parquet"])
def test_a_file_piped_in_as_dash_is_read_as_the_file(csv_file, tmp_path, capsys,
                                                      monkeypatch, packed):
    """`zcat data.csv.gz | gpu-als train -`: standard input, as CSV (compressed or not) or
    Parquet by its first bytes, trains the model of the file ("-: no such file" before);
    messages name it "standard input"."""
    import gzip
    import io

    pd = pytest.importorskip("pandas")
    data = csv_file.read_bytes()
    if packed == "gzip":
        data = gzip.compress(data)
    elif packed == "parquet":
        pytest.importorskip("pyarrow")
        buffer = io.BytesIO()
        pd.read_csv(csv_file).to_parquet(buffer)
        data = buffer.getvalue()

    class Stdin:  # (sys.stdin's binary stream)
        buffer = io.BytesIO(data)

    common = ["--factors", "4", "--iterations", "2", "--backend", "cpu"]
    assert main(["train", str(csv_file), *common, "--output", str(tmp_path / "f.npz")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["train", "-", *common, "--output", str(tmp_path / "s.npz")]) == 0
    assert capsys.readouterr().out.startswith("standard input: 60 users x 30 items")
    piped, from_file = (ALS.load(tmp_path / f"{n}.npz", backend="cpu") for n in "sf")
    np.testing.assert_array_equal(piped.user_factors_, from_file.user_factors_)
    np.testing.assert_array_equal(piped.item_ids_, from_file.item_ids_)
    Stdin.buffer = io.BytesIO(b"a,b\n1,2\n")
    assert main(["train", "-", *common]) == 2
    assert capsys.readouterr().err.startswith(
        "gpu-als train: error: standard input has no column 'user'; its columns are ['a', "
        "'b']")
    Stdin.buffer = io.BytesIO(b"")
    assert main(["train", "-", *common]) == 2
    assert "error: standard input is empty: pipe the interactions in" in \
        capsys.readouterr().err
    # (its temporary copy's name before); two lines: the fewest that the check reads
    Stdin.buffer = io.BytesIO(b"user,item\n1,100\n")
    assert main(["train", "-", *common, "--no-header", "--output", str(tmp_path / "h.npz")]) == 0
    assert "warning: the first line of standard input looks like column names" in \
        capsys.readouterr().err


def test_train_goes_on_from_a_model(csv_file, tmp_path, capsys):
    """--init: the model's hyperparameters except those given, its factors for the ids it
    knows: 2 iterations, then 3 more from the file, are a 5-iteration fit; a later file's
    new ids start random."""
    first, second, whole = (tmp_path / f"{name}.npz" for name in ("first", "second", "whole"))
    common = ["--factors", "4", "--solver", "cg", "--backend", "cpu"]
    assert main(["train", str(csv_file), *common, "--iterations", "2", "--alpha", "5",
                 "--output", str(first)]) == 0
    assert main(["train", str(csv_file), "--init", str(first), "--iterations", "3",
                 "--output", str(second)]) == 0
    assert f"trained on 'cpu' from {first} in" in capsys.readouterr().out
    assert main(["train", str(csv_file), *common, "--iterations", "5", "--alpha", "5",
                 "--output", str(whole)]) == 0
    continued, reference = ALS.load(second, backend="cpu"), ALS.load(whole, backend="cpu")
    assert (continued.alpha, continued.solver, continued.iterations) == (5.0, "cg", 3)
    assert not continued.warm_start  # --init is the command's, not saved with the model
    np.testing.assert_allclose(continued.item_factors_, reference.item_factors_, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(continued.user_ids_, reference.user_ids_)

    later = tmp_path / "later.csv"
    later.write_text(csv_file.read_text() + "someone_new,100,1.0\n")
    assert main(["train", str(later), "--init", str(second), "--iterations", "0",
                 "--output", str(first)]) == 0
    start = ALS.load(first, backend="cpu")
    new = list(start.user_ids_).index("someone_new")  # the ids are sorted
    assert (start.user_factors_[new] < 0.01).all()
    np.testing.assert_array_equal(np.delete(start.user_factors_, new, axis=0),
                                  continued.user_factors_)
    assert main(["train", str(csv_file), "--init", str(second), "--factors", "8",
                 "--output", str(first)]) == 2
    assert (f"--factors 8 with --init {second}, a model of 4 factors: going on from it keeps "
            f"them (leave --factors out, or leave --init out") in capsys.readouterr().err
    assert main(["train", str(csv_file), "--init", str(second), "--factors", "4",
                 "--iterations", "0", "--output", str(first)]) == 0  # the same: fine


#: train's options in the early-stopping tests, and what early_stopped() fits with them.
EARLY_STOPPING_OPTIONS = ["--factors", "8", "--regularization", "0.001", "--iterations", "30",
                          "--backend", "cpu", "--seed", "5", "--early-stopping", "2"]


def early_stopped(R, relevant=lambda validation: validation, **options):
    """What ``train EARLY_STOPPING_OPTIONS`` decides by, on the file's matrix ``R``: an
    EarlyStopping (``options`` added) of a fit on all but 10 % of each user's entries
    (seed 5), scored on ``relevant`` of those held out; returns it after the fit, and
    the entries held out."""
    from gpu_als.evaluation import EarlyStopping, train_test_split

    fit_part, validation = train_test_split(R, test_fraction=0.1, random_state=5)
    probe = ALS(factors=8, regularization=0.001, iterations=30, backend="cpu", random_state=5,
                show_progress=False)
    stop = EarlyStopping(probe, fit_part, relevant(validation), patience=2, **options)
    probe.fit(fit_part, callback=stop)
    return stop, validation


def test_train_with_early_stopping_trains_for_the_best_number_of_iterations(
        csv_file, tmp_path, capsys):
    """--early-stopping: EarlyStopping on a seeded split of the file picks the count, then
    the model trains on every interaction for that many iterations."""
    from gpu_als import from_dataframe

    pd = pytest.importorskip("pandas")
    out = tmp_path / "m.npz"
    options = EARLY_STOPPING_OPTIONS[:-2]
    assert main(["train", str(csv_file), *options, "--early-stopping", "2", "--metric",
                 "ndcg", "--K", "5", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    best = int(said.split("after ")[1].split(" iteration")[0])
    model = ALS.load(out, backend="cpu")
    assert model.iterations == best and len(model.loss_history_) == best

    R, user_ids, item_ids = from_dataframe(pd.read_csv(csv_file))  # what the command did
    stop, _ = early_stopped(R, metric="ndcg", K=5)
    assert stop.best_iteration + 1 == best and stop.stopped_iteration is not None
    assert f"ndcg@5 on 10% of each user's interactions held out was best, " \
           f"{stop.best_score:.4f}, after {best} iteration(s) (stopped after " \
           f"{stop.stopped_iteration + 1} of 30)" in said
    whole = ALS(factors=8, regularization=0.001, iterations=best, backend="cpu",
                random_state=5, show_progress=False).fit(R)
    np.testing.assert_allclose(model.user_factors_, whole.user_factors_, rtol=1e-5, atol=1e-7)

    for fraction in ("1.5", "1"):  # refused as the options are read
        with pytest.raises(SystemExit):
            main(["train", str(tmp_path / "nowhere.csv"), *options, "--early-stopping", "2",
                  "--validation-fraction", fraction, "--output", str(out)])
        assert f"argument --validation-fraction: must be between 0 and 1, got {fraction}" \
            in capsys.readouterr().err
    assert main(["train", str(csv_file), "--feedback", "explicit", "--factors", "2",
                 "--iterations", "3", "--backend", "cpu", "--early-stopping", "1",
                 "--output", str(out)]) == 0  # ratings: the RMSE by default
    assert "early stopping: rmse on 10% of each user's interactions held out was best" in \
        capsys.readouterr().out
    assert main(["train", str(csv_file), *options[:4], "--iterations", "0", "--backend",
                 "cpu", "--early-stopping", "2", "--output", str(out)]) == 0
    assert ALS.load(out, backend="cpu").iterations == 0  # nothing to stop: no iterations
    with pytest.raises(SystemExit):
        main(["train", str(csv_file), *options, "--early-stopping", "0", "--output", str(out)])
    assert "argument --early-stopping: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["train", str(csv_file), "--init", str(out), "--early-stopping", "2",
                 "--output", str(out)]) == 2
    assert "--early-stopping does not combine with --init" in capsys.readouterr().err


def test_early_stopping_can_score_a_sample_of_the_validation_users(csv_file, tmp_path,
                                                                   capsys):
    """--validation-users N: EarlyStopping(max_users=N, random_state=--seed) decides."""
    from gpu_als import from_dataframe

    pd = pytest.importorskip("pandas")
    out = tmp_path / "m.npz"
    options = [*EARLY_STOPPING_OPTIONS, "--output", str(out)]
    assert main(["train", str(csv_file), *options, "--validation-users", "20"]) == 0
    said = capsys.readouterr().out
    R, _, _ = from_dataframe(pd.read_csv(csv_file))
    stop, validation = early_stopped(R, max_users=20, random_state=5)
    assert (stop.validation.getnnz(axis=1) > 0).sum() == 20 < \
        (validation.getnnz(axis=1) > 0).sum()
    assert f"recall@10 on 10% of each user's interactions held out (a sample of 20 users) " \
           f"was best, {stop.best_score:.4f}, after {stop.best_iteration + 1} " in said
    assert ALS.load(out, backend="cpu").iterations == stop.best_iteration + 1
    with pytest.raises(SystemExit):
        main(["train", str(csv_file), *options, "--validation-users", "0"])
    assert "argument --validation-users: must be >= 1, got 0" in capsys.readouterr().err


def test_tune_and_early_stopping_count_only_values_of_at_least_min_value(
        csv_file, tmp_path, capsys):
    """--min-value, as evaluate's: tune (gpu_als.tune's min_value) and train
    --early-stopping (EarlyStopping on the validation entries of at least that value)
    count only those as relevant; not with --metric rmse, and train only with
    --early-stopping. tune --validation-users N samples the users scored (max_users)."""
    from gpu_als import from_dataframe
    from gpu_als.evaluation import binarize
    from gpu_als.tune import tune

    pd = pytest.importorskip("pandas")
    R, _, _ = from_dataframe(pd.read_csv(csv_file))
    grid = {"factors": [2, 4], "alpha": [1.0, 10.0]}
    assert main(["tune", str(csv_file), "--grid", "factors=2,4", "--grid", "alpha=1,10",
                 "--iterations", "4", "--backend", "cpu", "--min-value", "3", "--trials",
                 str(tmp_path / "t.csv")]) == 0
    said = capsys.readouterr().out
    result = tune(R, grid, min_value=3, base_params={"iterations": 4, "backend": "cpu"},
                  random_state=42, show_progress=False)
    assert f"validation recall@10 {result.best_score:.4f} (values >= 3 relevant)\n" in said
    plain = tune(R, grid, base_params={"iterations": 4, "backend": "cpu"}, random_state=42,
                 show_progress=False)
    assert [t["score"] for t in result.trials] != [t["score"] for t in plain.trials]
    # --validation-users N: tune's max_users
    assert main(["tune", str(csv_file), "--grid", "factors=2,4", "--grid", "alpha=1,10",
                 "--iterations", "4", "--backend", "cpu", "--min-value", "3",
                 "--validation-users", "15", "--trials", str(tmp_path / "t.csv")]) == 0
    sampled = tune(R, grid, min_value=3, max_users=15, random_state=42,
                   base_params={"iterations": 4, "backend": "cpu"}, show_progress=False)
    assert f"validation recall@10 {sampled.best_score:.4f} (values >= 3 relevant) (a sample " \
           f"of at most 15 users)\n" in capsys.readouterr().out
    assert [t["score"] for t in sampled.trials] != [t["score"] for t in result.trials]

    out = tmp_path / "m.npz"
    options = [*EARLY_STOPPING_OPTIONS, "--output", str(out)]
    assert main(["train", str(csv_file), *options, "--min-value", "3"]) == 0
    said = capsys.readouterr().out
    stop, _ = early_stopped(R, lambda validation: binarize(validation, 3))
    assert f"recall@10 on 10% of each user's interactions held out (values >= 3 relevant) " \
           f"was best, {stop.best_score:.4f}, after {stop.best_iteration + 1} " in said
    assert ALS.load(out, backend="cpu").iterations == stop.best_iteration + 1

    for command, error in (
            (["tune", "--min-value", "9"], "no validation entry has a value >= --min-value 9: "
                                           "nothing to score trials on"),
            (["tune", "--min-value", "3", "--metric", "rmse", "--feedback", "explicit"],
             "--min-value chooses the held-out interactions a ranking metric counts as "
             "relevant; --metric rmse scores every rating"),
            (["tune", "--min-value", "inf"], "--min-value must be a finite number, got inf"),
            (["train", *options, "--min-value", "9"],
             "no held-out interaction has a value >= --min-value 9: nothing to validate on"),
            (["train", *options, "--min-value", "3", "--feedback", "explicit"],
             "--min-value chooses the held-out interactions a ranking metric counts as "
             "relevant; --metric rmse scores every rating"),  # (explicit: the RMSE)
            (["train", "--min-value", "3", "--output", str(out)],
             "--min-value chooses the validation interactions that --early-stopping's "
             "metric counts as relevant: give --early-stopping too")):
        assert main([command[0], str(csv_file), *command[1:]]) == 2
        assert capsys.readouterr().err == f"gpu-als {command[0]}: error: {error}\n"


def test_train_goes_on_from_a_model_without_ids_by_row_number(tmp_path, capsys):
    """A model without ids (as implicit's) is read with its row numbers as ids, as
    `recommend` reads it; a file whose ids are none of them is warned about."""
    pd = pytest.importorskip("pandas")
    R = sp.csr_matrix(random_interactions(40, 20, 0.3, seed=4).toarray() + np.eye(40, 20))
    model = ALS(factors=3, iterations=2, backend="cpu", random_state=0,
                show_progress=False).fit(R)
    model.save(tmp_path / "plain.npz")  # no ids
    coo = R.tocoo()
    numbers = tmp_path / "numbers.csv"
    pd.DataFrame({"user": coo.row, "item": coo.col, "value": coo.data}).to_csv(numbers,
                                                                               index=False)
    out = tmp_path / "out.npz"
    assert main(["train", str(numbers), "--init", str(tmp_path / "plain.npz"),
                 "--iterations", "0", "--output", str(out)]) == 0
    start = ALS.load(out, backend="cpu")
    np.testing.assert_array_equal(start.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(start.item_factors_, model.item_factors_)
    named = tmp_path / "named.csv"
    pd.DataFrame({"user": [f"u{r}" for r in coo.row], "item": coo.col,
                  "value": coo.data}).to_csv(named, index=False)
    assert main(["train", str(named), "--init", str(tmp_path / "plain.npz"),
                 "--iterations", "0", "--output", str(out)]) == 0
    assert "gpu-als train: warning: warm_start=True: none of the data's users is among " \
           "the model's (40, e.g. 0); all start random" in capsys.readouterr().err
    # recommend reads it so too: its items are its 20 rows (not, say, its 3 factors), and
    # of --items only 99 is not one of them
    assert main(["recommend", str(tmp_path / "plain.npz"), "--users", "5", "12", "--N", "2",
                 "--items", "15", "16", "17", "99", "--backend", "cpu"]) == 0
    out, err = capsys.readouterr()
    ids, _ = model.recommend([5, 12], N=2, filter_already_liked_items=False,
                             items=[15, 16, 17])
    assert [[int(line.split(",")[1]) for line in out.splitlines() if line.startswith(f"{u},")]
            for u in (5, 12)] == ids.tolist()
    assert err.endswith("; --items: 1 of its 4 ids not items of the model (ignored)\n")


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_fit_that_overflows_ends_with_a_one_line_error_and_no_model(command, csv_file,
                                                                      tmp_path, capsys):
    """The fit's FloatingPointError (factors not finite after a half-step: CG's float32
    products overflow at these confidences) was not caught: a traceback."""
    out = tmp_path / "m.npz"
    argv = [command, str(csv_file), "--factors", "2", "--iterations", "2", "--backend",
            "cpu", "--alpha", "1e30", "--solver", "cg"]
    argv += ["--output", str(out)] if command == "train" else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpu-als {command}: error: the user factors hold NaN or infinite "
                          f"values after the user half-step of iteration 0; ")
    assert err.count("\n") == 1 and err.endswith(
        "alpha=1e+30) make the problem numerically unstable in float32; use --dtype float64 "
        "for double precision\n")  # (the option, where the API says dtype=float64)
    assert not out.exists()
    assert main([*argv, "--dtype", "float64"]) == 0  # which it does


def test_values_beyond_float32_train_with_dtype_float64(tmp_path, capsys):
    """The file's values were read in float32 whatever --dtype said: "beyond float32's
    range ... or use dtype=float64", with --dtype float64 given. Without it, the error
    names the option."""
    df = timed_interactions(300, 30, 20, seed=3)
    df.assign(value=1e45).to_csv(tmp_path / "big.csv", index=False)
    common = ["--factors", "2", "--iterations", "2", "--alpha", "1", "--backend", "cpu"]
    assert main(["train", str(tmp_path / "big.csv"), *common, "-o",
                 str(tmp_path / "m.npz")]) == 2
    assert capsys.readouterr().err.endswith(": scale the values down or use --dtype "
                                            "float64\n")
    for command, output in (("train", ["-o", str(tmp_path / "m.npz")]),
                            ("evaluate", []), ("evaluate", ["--time-col", "when"])):
        assert main([command, str(tmp_path / "big.csv"), *common, "--dtype", "float64",
                     *output]) == 0, capsys.readouterr().err
    assert ALS.load(tmp_path / "m.npz").dtype == np.float64
    # and the commands of a saved model read the values in its dtype (float32 before)
    df.iloc[:40].assign(user=df["user"][:40] + 100, value=1e45).to_csv(tmp_path / "new.csv",
                                                                        index=False)
    for command in (["fold-in", str(tmp_path / "m.npz"), str(tmp_path / "new.csv"), "-o",
                     str(tmp_path / "m2.npz")],
                    ["recommend", str(tmp_path / "m.npz"), str(tmp_path / "new.csv")],
                    ["explain", str(tmp_path / "m.npz"), str(tmp_path / "big.csv"), "--user",
                     str(df["user"][0]), "--items", str(df["item"][0])]):
        assert main([*command, "--backend", "cpu"]) == 0, capsys.readouterr().err
    # tune, whose trials may be of float64 (--grid dtype=float64), reads float64 too: its
    # trials of float32 refuse the values as fit does
    assert main(["tune", str(tmp_path / "big.csv"), "--grid", "factors=2", "--grid",
                 "alpha=1", "--iterations", "2", "--backend", "cpu"]) == 2
    assert re.search(r"user_items holds \d+ value\(s\) beyond float32's range",
                     capsys.readouterr().err)


def test_an_interrupted_command_says_so_and_writes_no_model(csv_file, tmp_path, capsys,
                                                             monkeypatch):
    """Ctrl-C during a fit: exit status 130 (as a shell reports SIGINT), one line, no
    traceback, and no model file."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ALS, "fit", interrupted)
    out = tmp_path / "m.npz"
    assert main(["train", str(csv_file), "--backend", "cpu", "--output", str(out)]) == 130
    assert capsys.readouterr().err == "gpu-als train: interrupted\n"
    assert not out.exists()


def test_values_with_a_decimal_comma(tmp_path, capsys):
    """(As Excel writes them in much of Europe, beside a ';' delimiter.) Read with
    --decimal ,; without it, refused with that hint rather than read as text."""
    from gpu_als.cli import read_interactions

    path = tmp_path / "ratings.csv"
    path.write_text("user;item;value\na;x;1,5\nb;y;2\na;y;-0,25\n")
    out = tmp_path / "m.npz"
    assert main(["train", str(path), "--feedback", "explicit", "--backend", "cpu",
                 "--output", str(out)]) == 2
    assert (f"{path}: column 'value' holds numbers written with a decimal comma (e.g. "
            f"'1,5'): pass --decimal ," in capsys.readouterr().err)
    args = build_parser().parse_args(["train", str(path), "--decimal", ","])
    matrix = read_interactions(args).matrix
    assert sorted(matrix.data.tolist()) == [-0.25, 1.5, 2.0]
    assert main(["train", str(path), "--decimal", ";", "--output", str(out)]) == 2
    assert "--decimal ';': one character, not the delimiter ';'" in capsys.readouterr().err
    path.write_text("user;item;value\na;x;1\nb;y;2\n")  # whole numbers: no comma needed
    assert sorted(read_interactions(args).matrix.data.tolist()) == [1.0, 2.0]
    path.write_text("user;item;value\na;x;liked,twice\nb;y;2\n")  # text, not a number
    assert main(["train", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "decimal" not in err.replace(str(path), "") and \
        f"expected numbers (line 2 of {path} holds 'liked,twice')" in err
    # without a header line, as many commas as semicolons a line: the semicolon is the
    # delimiter where every comma is within a number (it trained a,x;1 as a user, before)
    path.write_text("a;x;1,5\nb;y;2,0\na;y;-0,25\n")
    assert main(["train", str(path), "--no-header", "--output", str(out)]) == 2
    assert "decimal comma (e.g. '1,5'): pass --decimal ," in capsys.readouterr().err
    args = build_parser().parse_args(["train", str(path), "--no-header", "--decimal", ","])
    assert sorted(read_interactions(args).matrix.data.tolist()) == [-0.25, 1.5, 2.0]
    from gpu_als._tables import sniff_delimiter
    for text, sep in (("1,2,3\n4,5,6\n", ","), ("7;8;1,5\n9;3;2,5\n", ";"),
                      ("a,b;c,1\nd,e;f,2\n", ","), ("u,i\na;1,x\n", ",")):
        path.write_text(text)
        assert sniff_delimiter(path) == sep, text


@pytest.mark.parametrize("sep", [";", "\t", "|", " ", "::"])
def test_the_delimiter_is_detected(sep, csv_file, tmp_path, capsys):
    """Any of , ; tab | space, found from the first lines (then read by pandas' C parser),
    and MovieLens 1M's :: (pandas' Python parser, without its warning about falling back
    to it): the same model as from the comma file; --sep overrides."""
    from gpu_als._tables import sniff_delimiter

    other = tmp_path / "clicks.txt"
    other.write_text(csv_file.read_text().replace(",", sep))
    assert sniff_delimiter(csv_file) == "," and sniff_delimiter(other) == sep
    models = []
    for path, extra in ((csv_file, []), (other, []), (other, ["--sep", sep])):
        out = tmp_path / "m.npz"
        assert main(["train", str(path), "--factors", "3", "--iterations", "1",
                     "--backend", "cpu", "--output", str(out), *extra]) == 0
        models.append(ALS.load(out, backend="cpu"))
    for model in models[1:]:
        np.testing.assert_array_equal(model.user_factors_, models[0].user_factors_)
        np.testing.assert_array_equal(model.user_ids_, models[0].user_ids_)
    single = tmp_path / "one_column.csv"
    single.write_text("user\na\nb\n")
    assert sniff_delimiter(single) == ","
    single.write_text("user,item\na,x::y\nb,z\n")  # '::' in one field: not the delimiter
    assert sniff_delimiter(single) == ","
    assert "warning" not in capsys.readouterr().err


def test_a_tab_typed_as_backslash_t_is_a_tab(csv_file, tmp_path, monkeypatch):
    """``--sep '\\t'`` in a shell passes a backslash and a t, which pandas took for a
    regular expression and read with its Python parser (40x slower); it and ``--sep tab``
    are a tab, read by the C parser, to the same model."""
    pd = pytest.importorskip("pandas")
    tabbed = tmp_path / "clicks.tsv"
    tabbed.write_text(csv_file.read_text().replace(",", "\t"))
    engines = []
    read_csv = pd.read_csv

    def recording(*args, **kwargs):
        engines.append((kwargs.get("sep"), kwargs.get("engine", "c")))
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", recording)
    models = []
    for sep in ("\t", "\\t", "tab"):
        out = tmp_path / "m.npz"
        assert main(["train", str(tabbed), "--sep", sep, "--factors", "2", "--iterations",
                     "1", "--backend", "cpu", "--output", str(out)]) == 0
        models.append(ALS.load(out).user_factors_)
    assert set(engines) == {("\t", "c")}
    for model in models[1:]:
        np.testing.assert_array_equal(model, models[0])


@pytest.mark.parametrize("typed, sep", [("|;", "|;"), ("+-", "+-"), ("[]", "[]"),
                                        ("\\\\", "\\\\"), ("\\t\\t", "\t\t")])
def test_a_separator_of_several_characters_is_taken_literally(typed, sep, csv_file, tmp_path,
                                                               capsys):
    """pandas takes a separator of several characters for a regular expression: '|;'
    split every character off (a model of nonsense ids, trained without a word), '+-' and
    '[]' raised re.error, two backslashes split at each. --sep is the delimiter itself
    ('\\t' a tab in it too): each gives the comma file's model; an empty one is refused."""
    other = tmp_path / "clicks.txt"
    other.write_text(csv_file.read_text().replace(",", sep))
    models = []
    for path, extra in ((csv_file, []), (other, ["--sep", typed])):
        out = tmp_path / "m.npz"
        assert main(["train", str(path), "--factors", "3", "--iterations", "1",
                     "--backend", "cpu", "--output", str(out), *extra]) == 0
        models.append(ALS.load(out, backend="cpu"))
    np.testing.assert_array_equal(models[1].user_ids_, models[0].user_ids_)
    np.testing.assert_array_equal(models[1].item_ids_, models[0].item_ids_)
    np.testing.assert_array_equal(models[1].user_factors_, models[0].user_factors_)
    capsys.readouterr()
    assert main(["train", str(other), "--sep", "", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("error: --sep is empty: name the delimiter, e.g. "
                                            "--sep ';' (or leave the option out to have it "
                                            "detected)\n")


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zip", ".tar", ".tar.gz",
                                    ".tar.xz", ".zst"])
@pytest.mark.parametrize("sep", ["\t", "::"])
def test_the_delimiter_is_found_in_compressed_files(suffix, sep, csv_file, tmp_path):
    """pandas decompresses by the name's ending; the delimiter is looked for in the same
    text (it was looked for in the compressed bytes: MovieLens' ratings.dat.gz came in as
    one column). Every format gives the model of the plain file; .zst needs zstandard."""
    import bz2
    import gzip
    import lzma
    import tarfile
    import zipfile

    from gpu_als._tables import sniff_delimiter

    plain = tmp_path / "clicks.txt"
    plain.write_text(csv_file.read_text().replace(",", sep))
    packed = tmp_path / f"clicks{suffix}"
    data = plain.read_bytes()
    if suffix.startswith(".tar"):
        with tarfile.open(packed, "w:" + suffix[5:]) as archive:
            archive.add(plain, arcname="clicks.txt")
    elif suffix == ".zip":
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(plain, arcname="clicks.txt")
    elif suffix == ".zst":
        zstandard = pytest.importorskip("zstandard")
        packed.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        packed.write_bytes({".gz": gzip, ".bz2": bz2, ".xz": lzma}[suffix].compress(data))
    assert sniff_delimiter(packed) == sep
    models = []
    for path in (plain, packed):
        out = tmp_path / "m.npz"
        assert main(["train", str(path), "--factors", "3", "--iterations", "1",
                     "--backend", "cpu", "--output", str(out)]) == 0
        models.append(ALS.load(out, backend="cpu"))
    np.testing.assert_array_equal(models[1].user_factors_, models[0].user_factors_)
    np.testing.assert_array_equal(models[1].item_ids_, models[0].item_ids_)


def test_the_encoding_of_a_csv_file(csv_file, tmp_path, capsys):
    """Not UTF-8 (Latin-1, Windows' cp1252): the error names --encoding and a likely one;
    with it, the ids are the file's text. Excel's UTF-16 "Unicode text" starts with a byte
    order mark, and is read as UTF-16 without --encoding (gzipped too); with another
    --encoding, the error names utf-16."""
    text = csv_file.read_text().replace("u1,", "José,")
    assert "José" in text
    for encoding, sep, bom in (("latin-1", ",", b""), ("utf-16-le", "\t", b"\xff\xfe"),
                               ("utf-16-be", ";", b"\xfe\xff")):
        path = tmp_path / f"clicks-{encoding}.csv"
        path.write_bytes(bom + text.replace(",", sep).encode(encoding))
        named = encoding[:6] if bom else encoding  # UTF-16 finds its order from the mark
        for wrong in (["--encoding", "utf-8"], ["--encoding", "latin-1"]) if bom else [[]]:
            # (latin-1 read the mark as characters: the columns were named 'ÿþu\x00s...',
            # and the message suggested --user-col so)
            assert main(["train", str(path), "--backend", "cpu", *wrong]) == 2
            assert capsys.readouterr().err.endswith(
                f"starts with the byte order mark of UTF-16, which --encoding {wrong[1]} "
                f"reads as characters: leave --encoding out (the mark says the encoding)\n"
                if bom else f"name its encoding with --encoding, e.g. --encoding {named}\n")
        out = tmp_path / "m.npz"
        for given in [["--encoding", named]] + ([[]] if bom else []):
            assert main(["train", str(path), *given, "--factors", "2", "--iterations", "1",
                         "--backend", "cpu", "--output", str(out)]) == 0
            assert "José" in ALS.load(out).user_ids_.tolist()
    marked = tmp_path / "clicks-utf-8-sig.csv"  # UTF-8 with a mark, as Excel saves it
    marked.write_text(text, encoding="utf-8-sig")
    assert main(["train", str(marked), "--encoding", "cp1252", "--backend", "cpu"]) == 2
    assert "starts with the byte order mark of UTF-8, which --encoding cp1252 reads as " \
        "characters: leave --encoding out" in capsys.readouterr().err
    for given in ([], ["--encoding", "utf-8"]):
        assert main(["train", str(marked), *given, "--factors", "2", "--iterations", "1",
                     "--backend", "cpu", "--output", str(tmp_path / "m.npz")]) == 0
        assert "José" in ALS.load(tmp_path / "m.npz").user_ids_.tolist()
    utf8 = tmp_path / "clicks-utf-8.csv"  # an encoding given that the file is not in
    utf8.write_text(text, encoding="utf-8")
    # (Python's own words: 3.13 says "'utf-16' codec can't decode bytes in position 0-1:
    # Stream does not start with BOM", earlier ones "UTF-16 stream does not ...")
    for given, why in (("utf-16", r"(UTF-16 stream|'utf-16' codec can't decode bytes in "
                                  r"position 0-1: Stream) does not start with BOM"),
                       ("ascii", r"'ascii' codec can't decode byte 0xc3")):
        assert main(["train", str(utf8), "--encoding", given, "--backend", "cpu"]) == 2
        err = capsys.readouterr().err
        assert re.match(rf"gpu-als train: error: {re.escape(str(utf8))} is not {given} "
                        rf"text \({why}", err)
        assert err.endswith("): its first bytes read as UTF-8: leave --encoding out\n")
    # UTF-8 still when the bytes read to tell (the first 4,096) end inside a character:
    # a user id whose "é" starts at byte 4,095 (1 of its 2 bytes read), or whose emoji
    # starts at byte 4,093 (3 of 4)
    rows = "user,item,value\n" + "".join(f"u{i},i{i % 7},1\n" for i in range(300))
    cut = tmp_path / "cut.csv"
    for char in ("é", "\N{GRINNING FACE}"):
        start = 4096 - len(char.encode()) + 1
        cut.write_text(rows + "u" + "x" * (start - 1 - len(rows)) + char + ",i1,1\n",
                       encoding="utf-8")
        assert cut.read_bytes()[start:4096 + 1] == char.encode()
        assert main(["train", str(cut), "--encoding", "ascii", "--backend", "cpu"]) == 2
        assert capsys.readouterr().err.endswith(
            "): its first bytes read as UTF-8: leave --encoding out\n")
    # but a Latin-1 "é" there is no cut UTF-8 character (a lead byte, then no follower)
    cut.write_bytes((rows + "u" + "x" * (4093 - len(rows))).encode() + "é,i1,1\n".encode(
        "latin-1"))
    assert main(["train", str(cut), "--encoding", "ascii", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(
        "name its encoding with --encoding, e.g. --encoding latin-1\n")
    zipped = tmp_path / "clicks-utf-16.csv.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert main(["train", str(zipped), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(out)]) == 0
    assert "José" in ALS.load(out).user_ids_.tolist()
    assert main(["train", str(path), "--encoding", "klingon", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("--encoding klingon: not an encoding Python "
                                            "knows (e.g. utf-8, latin-1, cp1252)\n")


def test_a_compressed_file_without_its_decompressor_or_contents(tmp_path, capsys,
                                                                monkeypatch):
    empty = tmp_path / "empty.zip"
    __import__("zipfile").ZipFile(empty, "w").close()
    assert main(["train", str(empty), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(f"error: {empty}: an archive read as CSV must "
                                            f"hold one file, as pandas reads it; this one "
                                            f"holds 0\n")
    import tarfile

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "c.csv").write_text("user,item\n1,2\n")
    with tarfile.open(tmp_path / "two.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="d")  # the folder's entry, then its file's
    assert main(["train", str(tmp_path / "two.tar.gz"), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("this one holds 2: d, d/c.csv\n")
    with tarfile.open(tmp_path / "folder.tar", "w") as archive:
        archive.add(folder, arcname="d", recursive=False)
    assert main(["train", str(tmp_path / "folder.tar"), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("folder.tar: the archive's one member is not "
                                            "a file\n")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # not installed
    packed = tmp_path / "clicks.csv.zst"
    packed.write_bytes(b"(not read)")
    assert main(["train", str(packed), "--backend", "cpu"]) == 2
    assert "reading .zst files needs the zstandard package" in capsys.readouterr().err


@pytest.mark.parametrize("sep, header", [(",", True), ("::", True), ("::", False),
                                         ("; ", False)])
def test_ids_written_with_leading_zeros_stay_as_written(sep, header, tmp_path, capsys):
    """pandas reads 007 as 7: the model's ids, its output and the ids asked for on the
    command line must be the file's text (and 007 and 7 two ids); ids written as plain
    numbers stay numbers. Every reader: the C parser, the :: fast path (whose fields are
    every other column), pandas' Python parser (a separator of two characters)."""
    pytest.importorskip("pandas")
    rows = [("007", "0001"), ("007", "0002"), ("7", "0001"), ("008", "0002"),
            ("008", "0003"), ("009", "0003")]
    path = tmp_path / "padded.txt"
    lines = [f"{u}{sep}{i}{sep}1" for u, i in rows]
    path.write_text("\n".join(([f"user{sep}item{sep}value"] if header else []) + lines))
    model_file = tmp_path / "m.npz"
    options = ["--sep", sep] + ([] if header else ["--no-header"])
    assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(model_file), *options]) == 0
    model = ALS.load(model_file, backend="cpu")
    assert model.user_ids_.tolist() == ["007", "008", "009", "7"]
    assert model.item_ids_.tolist() == ["0001", "0002", "0003"]
    capsys.readouterr()
    assert main(["recommend", str(model_file), "--users", "007", "--N", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("007,000")
    assert main(["similar", str(model_file), "--items", "0001", "--N", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("0001,")
    path.write_text(path.read_text().replace("007", "17").replace("008", "18")
                    .replace("009", "19"))  # users written plainly, items still padded
    assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(model_file), *options]) == 0
    model = ALS.load(model_file, backend="cpu")
    assert model.user_ids_.tolist() == [7, 17, 18, 19]
    assert model.item_ids_.tolist() == ["0001", "0002", "0003"]
    if sep == ",":  # spaces after the separator: not part of the names and ids
        path.write_text("user, item\n1, 0001\n2, 0002\n")
        assert main(["train", str(path), "--factors", "2", "--iterations", "1",
                     "--backend", "cpu", "--output", str(model_file)]) == 0
        assert ALS.load(model_file).item_ids_.tolist() == ["0001", "0002"]


def test_train_on_a_cluster_needs_dask_and_a_scheduler_that_answers(csv_file, tmp_path,
                                                                      capsys, monkeypatch):
    """(The fit on a cluster itself: tests/test_distributed.py.)"""
    dask = pytest.importorskip("dask")
    pytest.importorskip("dask.distributed")  # its defaults in dask.config before the set
    common = ["train", str(csv_file), "--factors", "2", "--iterations", "1", "--backend",
              "cpu", "--output", str(tmp_path / "m.npz"), "--scheduler"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*common, "tcp://127.0.0.1:9"]) == 2  # the discard port: refused
    assert "Timed out trying to connect to tcp://127.0.0.1:9" in capsys.readouterr().err
    for address in ("out.parquet", "tcp://host", "tcp://host:port"):  # no Client made: one
        assert main([*common, address]) == 2  # that failed so hung 60 s, then a traceback
        assert capsys.readouterr().err == (
            f"gpu-als train: error: --scheduler {address}: not a scheduler's address; "
            f"give it as tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786\n")
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # not installed
    assert main([*common, "tcp://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == ("gpu-als train: error: --scheduler needs Dask: pip "
                                       "install gpu-als[dist]\n")
    assert not (tmp_path / "m.npz").exists()


def test_verbose_logs_at_info_level(csv_file, tmp_path):
    """-v: the library's INFO messages (here, where backend='auto' trains) on stderr."""
    import subprocess

    argv = [sys.executable, "-m", "gpu_als", "train", str(csv_file), "--factors", "2",
            "--iterations", "1", "--output", str(tmp_path / "m.npz")]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    loud = subprocess.run(argv[:3] + ["-v"] + argv[3:], capture_output=True, text=True,
                          timeout=120)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "backend='auto'" not in quiet.stderr
    assert re.search(r"^gpu_als: backend='auto': using the (CPU|GPU) backend",
                     loud.stderr, re.M), loud.stderr
    assert "gpu_als:" not in loud.stdout  # no log line on stdout (a command's CSV goes there)


def test_python_dash_m_gpu_als_is_the_command_line():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "gpu_als", "info"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-als ") and "backend='auto' uses" in done.stdout
    done = subprocess.run([sys.executable, "-m", "gpu_als", "train"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("usage: gpu-als train")


def test_plots_without_matplotlib_are_refused_before_the_work(csv_file, tmp_path, capsys,
                                                              monkeypatch):
    """tune --plot and bench --plots drew after the search or the fits, and tune's
    ImportError came out as a traceback."""
    from gpu_als import benchmark
    from gpu_als import tune as tune_module

    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.setattr(tune_module, "tune", lambda *a, **k: pytest.fail("searched"))
    monkeypatch.setattr(benchmark, "run", lambda *a, **k: pytest.fail("measured"))
    says = r"error: plots need matplotlib \(.+\): pip install gpu-als\[plot\]\n"
    assert main(["tune", str(csv_file), "--plot", str(tmp_path / "t.png")]) == 2
    assert re.fullmatch(f"gpu-als tune: {says}", capsys.readouterr().err)
    assert main(["bench", "--datasets", "ml-100k", "--plots", str(tmp_path)]) == 2
    assert re.fullmatch(f"gpu-als bench: {says}", capsys.readouterr().err)


@pytest.mark.parametrize("header", [None, "infer"])
def test_a_repeated_character_separator_reads_as_pandas_python_parser_does(tmp_path, header):
    """'::' is read by the C parser on ':' where that gives the same table (as the Python
    parser reads it with the command line's options); a lone ':' in a field (in every
    row, or in some), or rows wider than the header, send the file to the Python parser
    instead, which then warns of the cut fields itself."""
    import pandas as pd

    from gpu_als._tables import _read_csv

    engines = []

    class Spy:  # pandas, recording the parser of each read
        errors, RangeIndex = pd.errors, pd.RangeIndex

        @staticmethod
        def read_csv(*args, **kwargs):
            engines.append(kwargs.get("engine", "c"))
            return pd.read_csv(*args, **kwargs)

    lines = ["user::item::value", "1::10::4.5", "2::20::3", "u3::30::"]
    for body, parsers in ((lines, ["c"]), ([*lines, "4::a:b::1"], ["c", "python"]),
                          ([lines[0], "1::a:b::2", "2::c:d::3"], ["c", "python"]),
                          ([lines[0], "1::10::4.5::123", "2::20::3::456"], ["c", "python"]),
                          # a lone ':' in some rows' fields, in rows of the same width
                          ([lines[0], "1:2::3", "4::5::6"], ["c", "python"]),
                          # a ':' ending every line: an even number of ':'-fields
                          ([f"{line}:" for line in lines], ["c", "python"])):
        path = tmp_path / "ratings.dat"
        path.write_text("\n".join(body) + "\n")
        engines.clear()
        options = {"keep_default_na": False, "na_values": [""], "index_col": False,
                   "skipinitialspace": True}
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            try:
                expected = pd.read_csv(path, sep="::", header=header, engine="python",
                                       **options)
            except pd.errors.ParserError:  # rows wider than the first: pandas refuses it
                with pytest.raises(pd.errors.ParserError):
                    _read_csv(Spy, path, "::", header)
                continue
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            got = _read_csv(Spy, path, "::", header)
        pd.testing.assert_frame_equal(got, expected)
        assert engines == parsers
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


def test_evaluate_prints_metrics_against_baselines(csv_file, capsys):
    import time

    start = time.perf_counter()
    assert main(["evaluate", str(csv_file), "--factors", "4", "--iterations", "2",
                 "--backend", "cpu", "--K", "5"]) == 0
    wall = time.perf_counter() - start
    out = capsys.readouterr().out
    for word in ("P@5", "Recall@5", "NDCG@5", "MAP@5", "AUC", "Random", "Popularity", "ALS"):
        assert word in out
    seconds = float(re.search(r"; trained on 'cpu' in ([\d.]+) s\n", out).group(1))
    assert 0 <= seconds <= wall  # the fit's time, within the command's


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_evaluate_writes_its_table_with_output(csv_file, tmp_path, capsys, feedback):
    """--output: the printed table as CSV, a row per model (the same numbers), and the
    RMSE of explicit feedback on the ALS row; before any work, a folder that is not there
    is refused."""
    pd = pytest.importorskip("pandas")
    out = tmp_path / "metrics.csv"
    argv = ["evaluate", str(csv_file), "--factors", "4", "--iterations", "2", "--backend",
            "cpu", "--K", "5", "--feedback", feedback]
    assert main(argv + ["-o", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out)
    metrics = ["precision", "recall", "ndcg", "map", "auc"]
    assert list(table.columns) == ["model", "K", *metrics] + \
        (["rmse"] if feedback == "explicit" else []) + ["users"]
    assert list(table["model"]) == ["Random", "Popularity", "ALS"]
    assert (table["K"] == 5).all() and (table["users"] > 0).all()
    for _, row in table.iterrows():  # the printed row, to its 4 decimals
        line = next(line for line in printed.splitlines() if line.startswith(row["model"]))
        assert [float(v) for v in line.split()[1:]] == pytest.approx(
            [row[m] for m in metrics], abs=5.1e-5)
    if feedback == "explicit":
        shown = float(re.search(r"RMSE of the predicted test values: ([\d.]+)", printed)[1])
        assert table["rmse"][2] == pytest.approx(shown, abs=5.1e-5)
        assert table["rmse"][:2].isna().all()
    assert f"metrics written to {out}" in printed
    assert main(argv + ["--output", str(tmp_path / "nowhere" / "m.csv")]) == 2
    assert "there is no folder" in capsys.readouterr().err


def test_evaluate_at_several_k_prints_a_table_each_from_one_ranking(csv_file, tmp_path,
                                                                      capsys):
    """--K 5 2 5: a table per K (each once, in the order given), and with --output a row
    per model and K; ALS's and popularity's numbers are those of --K 5 and --K 2 alone
    (the random model draws again: its numbers differ)."""
    pd = pytest.importorskip("pandas")
    common = ["evaluate", str(csv_file), "--factors", "4", "--iterations", "2", "--backend",
              "cpu"]
    both, alone = tmp_path / "both.csv", {K: tmp_path / f"{K}.csv" for K in (5, 2)}
    assert main(common + ["--K", "5", "2", "5", "-o", str(both)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    headers = [at for at, line in enumerate(lines) if line.startswith("Model")]
    assert [lines[at].split() for at in headers] == [
        ["Model", f"P@{K}", f"Recall@{K}", f"NDCG@{K}", f"MAP@{K}", "AUC"] for K in (5, 2)]
    assert [lines[at - 2:at] for at in headers] == [[lines[0], ""], [lines[headers[0] + 3], ""]]
    table = pd.read_csv(both)
    assert list(table["K"]) == [5, 5, 5, 2, 2, 2]
    assert list(table["model"]) == ["Random", "Popularity", "ALS"] * 2
    for K, path in alone.items():
        assert main(common + ["--K", str(K), "-o", str(path)]) == 0
        one = pd.read_csv(path)
        pd.testing.assert_frame_equal(table[table["K"] == K][1:].reset_index(drop=True),
                                      one[1:].reset_index(drop=True))
    with pytest.raises(SystemExit):  # (argparse's exit)
        main(common + ["--K", "5", "0"])
    assert "argument --K: must be >= 1, got 0" in capsys.readouterr().err


def test_evaluate_without_auc_prints_the_same_ranking_metrics(csv_file, capsys, monkeypatch):
    from gpu_als import evaluation

    common = ["evaluate", str(csv_file), "--factors", "4", "--iterations", "2", "--backend",
              "cpu", "--K", "5"]
    assert main(common) == 0
    full = capsys.readouterr().out.splitlines()
    monkeypatch.setattr(evaluation, "auc", lambda *a, **k: pytest.fail("AUC computed"))
    assert main(common + ["--no-auc"]) == 0
    lean = capsys.readouterr().out.splitlines()
    header = lean.index(next(line for line in lean if line.startswith("Model")))
    assert "AUC" not in lean[header] and "AUC" in full[header]
    for mine, theirs in zip(lean[header:header + 4], full[header:header + 4]):
        assert theirs.startswith(mine)  # the same columns, AUC's left out at the end


def test_evaluate_keeps_its_columns_apart_at_a_large_k(csv_file, capsys):
    """Titles as wide as the columns ("P@1000Recall@1000" ran together): every title and
    number ends where its column ends."""
    assert main(["evaluate", str(csv_file), "--factors", "2", "--iterations", "1",
                 "--backend", "cpu", "--K", "1000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("Model"))):][:4]
    assert table[0].split() == ["Model", "P@1000", "Recall@1000", "NDCG@1000", "MAP@1000",
                                "AUC"]

    def ends(line):  # where each cell after the name ends
        return [m.end() for m in re.finditer(r"\S+", line)][1:]

    assert ends(table[1]) == ends(table[2]) == ends(table[3]) == ends(table[0])


def test_explicit_evaluate_reports_rmse(csv_file, capsys):
    assert main(["evaluate", str(csv_file), "--feedback", "explicit", "--regularization",
                 "0.1", "--factors", "3", "--iterations", "3", "--backend", "cpu"]) == 0
    assert "RMSE of the predicted test values" in capsys.readouterr().out


def test_explicit_evaluate_says_why_it_ranks_below_popularity(movielens, tmp_path, capsys):
    """An explicit model ranks MovieLens 100K by predicted rating, below popularity: the
    output says why and what to train instead; no note for the implicit model (above
    it), nor for an explicit one above it (ratings of rank 2, observed at random)."""
    u_data = str(movielens.path / "u.data")
    rng = np.random.default_rng(0)
    ratings = np.clip(np.round(3 + 1.2 * rng.normal(size=(80, 2)) @ rng.normal(size=(2, 50))),
                      1, 5)
    users, items = np.nonzero(rng.random(ratings.shape) < 0.5)
    low_rank = tmp_path / "low_rank.csv"
    low_rank.write_text("user,item,value\n" + "".join(
        f"{u},{i},{ratings[u, i]:g}\n" for u, i in zip(users, items)))
    common = ["--no-auc", "--backend", "cpu", "--min-value", "4"]
    notes = []
    for args in ([u_data, "--no-header", "--factors", "8", "--iterations", "3",
                  "--feedback", "explicit"],
                 [u_data, "--no-header", "--factors", "8", "--iterations", "3"],
                 [str(low_rank), "--factors", "2", "--regularization", "0.1", "--iterations",
                  "10", "--feedback", "explicit"]):
        assert main(["evaluate", *args, *common]) == 0
        out = capsys.readouterr().out
        table = [line.split() for line in out.splitlines()]
        recall = {cells[0]: float(cells[2]) for cells in table
                  if len(cells) == 5 and cells[0] in ("Popularity", "ALS")}
        notes.append((recall["ALS"] < recall["Popularity"],
                      "ALS ranks below popularity here, as models of explicit" in out))
    assert notes == [(True, True), (False, False), (False, False)]


def test_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.csv"), "--backend", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--regularization" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # what gpu-als is, then its commands
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "The gpu-als command line: train, serve, evaluate and benchmark ALS models." \
        in help_text and "recommend" in help_text


def _options(parser: argparse.ArgumentParser):
    """Every (command, option) of ``parser`` and its subcommands that takes a value."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {where}", a) for where, a in _options(sub))
        elif (action.option_strings and action.nargs != 0 and not action.required
              and action.help != argparse.SUPPRESS):
            yield action.option_strings[-1], action


def test_every_option_help_says_its_default():
    """An option that falls back to a value when left out says which, in its help."""
    from gpu_als import benchmark

    options = [*_options(build_parser()), *_options(benchmark.build_parser())]
    assert len(options) > 60
    silent = [where for where, action in options
              if action.default is not None and "default" not in (action.help or "")]
    assert not silent, f"options whose help does not give their default: {silent}"
    unhelped = [where for where, action in options if not action.help]
    assert not unhelped, f"options without help: {unhelped}"


def test_verbose_logs_the_reading_the_coding_and_each_iteration(csv_file, tmp_path, caplog):
    with caplog.at_level("INFO", logger="gpu_als"):
        assert main(["train", str(csv_file), "--iterations", "2", "--backend", "cpu",
                     "--output", str(tmp_path / "m.npz"), "-v"]) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(rf"read {re.escape(str(csv_file))}: [0-9,]+ rows in [0-9.]+ s",
                            line) for line in lines)
    assert any(re.fullmatch(r"coded its [0-9,]+ users and [0-9,]+ items in [0-9.]+ s", line)
               for line in lines)
    assert sum(line.startswith("iteration ") for line in lines) == 2


def test_verbose_log_lines_go_above_the_progress_bar_not_into_it(csv_file, tmp_path, capsys,
                                                                 monkeypatch):
    """-v on a terminal (the bar forced on here): each log line on its own line, printed
    over the cleared bar (tqdm's logging redirect), not appended to the bar's line."""
    import logging

    from tqdm.auto import tqdm

    import gpu_als._training

    monkeypatch.setattr(gpu_als._training, "tqdm",
                        lambda *a, **k: tqdm(*a, **{**k, "disable": False}))
    console = logging.StreamHandler(sys.stderr)  # as basicConfig would add on a terminal
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [*root.handlers, console])
    monkeypatch.setattr(root, "level", logging.INFO)
    assert main(["train", str(csv_file), "--iterations", "3", "--backend", "cpu",
                 "--output", str(tmp_path / "m.npz"), "-v"]) == 0
    err = capsys.readouterr().err
    assert "it/s" in err and err.count("iteration ") == 3  # the bar, and the 3 lines
    for line in re.findall(r"[^\r\n]*iteration \d+: loss", err):
        assert line.startswith("iteration "), line  # (not "...loss=1.2e+03]iteration 1")
    assert root.handlers[-1] is console  # the console handler given back


def test_verbose_before_or_after_the_command():
    parse = build_parser().parse_args
    assert parse(["-v", "train", "f.csv"]).verbose and parse(["train", "f.csv", "-v"]).verbose
    assert parse(["recommend", "m.npz", "--verbose", "--users", "1"]).verbose
    assert not parse(["train", "f.csv"]).verbose


def test_bad_columns(csv_file, capsys):
    assert main(["train", str(csv_file), "--user-col", "customer", "--backend", "cpu"]) == 2
    assert ("has no column 'customer'; its columns are ['user', 'item', 'value']. Name the "
            "id columns with --user-col and --item-col (e.g. --user-col user --item-col "
            "item), or pass --no-header" in capsys.readouterr().err)
    # a header with a number among its names is still a header; two columns: still an
    # example of the options
    dated = csv_file.with_name("dated.csv")
    dated.write_text("uid,sku,2024\nu1,7,1\n")
    paired = csv_file.with_name("paired.csv")
    paired.write_text("uid,sku\nu1,7\n")
    for file, names in ((dated, "['uid', 'sku', '2024']"), (paired, "['uid', 'sku']")):
        assert main(["train", str(file), "--backend", "cpu"]) == 2
        assert (f"has no column 'user'; its columns are {names}. Name the id columns with "
                f"--user-col and --item-col (e.g. --user-col uid --item-col sku), or pass "
                f"--no-header" in capsys.readouterr().err)
    # the example names the likeliest id columns, not the first two (a time first here)
    timed = csv_file.with_name("timed.csv")
    timed.write_text("timestamp,rating,movieId,userId\n100,4,10,1\n")
    assert main(["train", str(timed), "--backend", "cpu"]) == 2
    assert "(e.g. --user-col userId --item-col movieId)" in capsys.readouterr().err
    spaced = csv_file.with_name("spaced.csv")  # names as a shell would need them typed
    spaced.write_text("user id,item's id,\nu1,7,2\n")
    assert main(["train", str(spaced), "--backend", "cpu"]) == 2
    assert ("(e.g. --user-col 'user id' --item-col 'item'\"'\"'s id'), or pass --no-header"
            in capsys.readouterr().err)
    assert main(["train", str(spaced), "--user-col", "user id", "--item-col", "item's id",
                 "--backend", "cpu", "--output", str(csv_file.with_name("s.npz"))]) == 0
    assert ("column(s) ['Unnamed: 2'] are not used; name the values' column with --value-col "
            "(e.g. --value-col 'Unnamed: 2')" in capsys.readouterr().err)
    for sep, told in ((",", "','? Pass --sep ,"), ("\t", "'\\t'? Pass --sep tab"),
                      ("|", "'|'? Pass --sep '|'"), ("::", "'::'? Pass --sep ::")):
        # the wrong --sep: one column
        joined = csv_file.with_name("joined.csv")
        joined.write_text(csv_file.read_text().replace(",", sep))
        assert main(["train", str(joined), "--sep", ";", "--backend", "cpu"]) == 2
        assert capsys.readouterr().err.endswith(  # (not "Pass --sep ,, or leave")
            f"Its header line reads as one column: is the delimiter {told} (or leave --sep "
            f"out to have it detected)\n")
    # names that cannot be typed or shown in one line (a header read with the wrong
    # delimiter): no example, and the message stays one line (the examples printed a tab
    # and U+2028 raw, found by a sweep of random file contents)
    garbled = csv_file.with_name("garbled.csv")
    garbled.write_text("us\ter;it\u2028em;va\tlue\nu1;7;2\n", encoding="utf-8")
    assert main(["train", str(garbled), "--sep", ";", "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("its columns are ['us\\ter', 'it\\u2028em', 'va\\tlue']. Name the id "
                        "columns with --user-col and --item-col, or pass --no-header for a "
                        "file without a header line\n") and len(err.splitlines()) == 1
    named = ["train", str(garbled), "--sep", ";", "--user-col", "us\ter", "--item-col",
             "it\u2028em", "--factors", "1", "--backend", "cpu"]
    assert main([*named, "--output", str(csv_file.with_name("g.npz"))]) == 0
    assert capsys.readouterr().err == (
        "gpu-als train: warning: no column 'value': every row counts 1, and column(s) "
        "['va\\tlue'] are not used; name the values' column with --value-col\n")
    assert main([*named, "--value-col", "rating"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("has no column 'rating' for --value-col; its columns are ['us\\ter', "
                        "'it\\u2028em', 'va\\tlue']\n") and len(err.splitlines()) == 1
    single = csv_file.with_name("single.csv")  # one column: no example to give
    single.write_text("uid\nu1\n")
    assert main(["train", str(single), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(
        "has no column 'user'; its columns are ['uid']. Name the id columns with --user-col "
        "and --item-col, or pass --no-header for a file without a header line\n")
    assert main(["train", str(csv_file.with_name("none.csv")), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("none.csv: no such file\n")
    rated = csv_file.with_name("rated.csv")
    rated.write_text(csv_file.read_text().replace("value", "rating", 1))
    model = csv_file.with_name("m.npz")
    assert main(["train", str(rated), "--factors", "2", "--iterations", "1", "--backend", "cpu",
                 "--output", str(model)]) == 0
    err = capsys.readouterr().err  # trained on counts, and says so in one line
    assert err.startswith("gpu-als train: warning: no column 'value': every row counts 1, "
                          "and column(s) ['rating'] are not used; name the values' column "
                          "with --value-col (e.g. --value-col rating)\n")  # options' words
    assert err.count("\n") == 1
    assert main(["train", str(rated), "--feedback", "explicit", "--backend", "cpu",
                 "--output", str(model)]) == 2  # refused: no "every row counts 1" first
    assert capsys.readouterr().err == (
        f"gpu-als train: error: {rated} has no column 'value': --feedback explicit learns "
        f"ratings; name their column with --value-col (the columns are ['user', 'item', "
        f"'rating'])\n")
    for command in ("train", "evaluate", "predict"):  # a --value-col that is not there
        given = [str(model)] if command == "predict" else []  # (was not a column, said
        assert main([command, *given, str(csv_file), "--value-col", "rating",  # predict)
                     "--backend", "cpu"]) == 2
        assert capsys.readouterr().err == (
            f"gpu-als {command}: error: {csv_file} has no column 'rating' for --value-col; "
            f"its columns are ['user', 'item', 'value'] (did you mean --value-col value?)\n")
    for value_col, meant in (("Rating", "rating"), ("stars", "rating")):  # spelt, or values
        assert main(["train", str(rated), "--value-col", value_col, "--feedback",
                     "explicit", "--backend", "cpu"]) == 2
        assert capsys.readouterr().err.endswith(
            f"has no column {value_col!r} for --value-col; its columns are ['user', 'item', "
            f"'rating'] (did you mean --value-col {meant}?)\n")
    both = csv_file.with_name("both.csv")  # the spelling first, then what holds values
    both.write_text("user,item,plays,rating\nu1,7,3,4\n")
    assert main(["train", str(both), "--value-col", "ratng", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("(did you mean --value-col rating?)\n")
    unvalued = csv_file.with_name("unvalued.csv")  # nothing to suggest
    unvalued.write_text("user,item,when\nu1,7,2024-01-02\n")
    assert main(["train", str(unvalued), "--value-col", "n", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(
        "has no column 'n' for --value-col; its columns are ['user', 'item', 'when']\n")
    unvalued.write_text("u1,7\nu2,8\n")  # two columns: no third for --value-col to name
    assert main(["train", str(unvalued), "--no-header", "--value-col", "n", "--backend",
                 "cpu"]) == 2
    assert "has no column 'n' (with --no-header, the third) for --value-col" in \
        capsys.readouterr().err
    # a model of ratings to go on from: the file needs them too (the model's feedback)
    assert main(["train", str(csv_file), "--feedback", "explicit", "--factors", "2",
                 "--iterations", "1", "--backend", "cpu", "--output", str(model)]) == 0
    assert main(["train", str(rated), "--init", str(model), "--output", str(model)]) == 2
    assert ("has no column 'value': --feedback explicit learns ratings; name their column "
            "with --value-col (the columns are ['user', 'item', 'rating'])"
            in capsys.readouterr().err)


@pytest.mark.parametrize("content, says", [
    (b"", "empty.csv is empty: no header line and no rows"),  # (pandas': "No columns to
    (b"\n\n", "empty.csv is empty: no header line and no rows"),  # parse from file")
    (b"user,item\n\"a,x\n", "empty.csv cannot be read as CSV: Error tokenizing data"),
    (b"\x89PNG\x00\x01", "empty.csv is not utf-8 text ('utf-8' codec can't decode byte "
                        "0x89 in position 0: invalid start byte): it holds NUL bytes, as "
                        "binary files do: is it a CSV file?"),
    (b"user,item,value\n", "empty.csv has a header line but no rows"),
])
def test_unreadable_or_empty_files_are_named(tmp_path, capsys, content, says):
    file = tmp_path / "empty.csv"
    file.write_bytes(content)
    assert main(["train", str(file), "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_file_of_one_interaction_is_counted_in_the_singular(tmp_path, capsys):
    """train's and evaluate's summaries said "1 users x 1 items, 1 interactions"."""
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("user,item,value\na,x,3\n")
    two.write_text("user,item,value\na,x,3\nb,x,1\n")
    assert main(["train", str(one), "--factors", "1", "--backend", "cpu",
                 "--iterations", "1"]) == 0
    assert f"{one}: 1 user x 1 item, 1 interaction; trained on 'cpu'" in \
        capsys.readouterr().out
    assert main(["train", str(two), "--factors", "1", "--backend", "cpu",
                 "--iterations", "1"]) == 0
    assert f"{two}: 2 users x 1 item, 2 interactions; trained" in capsys.readouterr().out


def test_a_parquet_file_trains_as_the_same_rows_in_csv(csv_file, tmp_path, capsys,
                                                      monkeypatch):
    """Read by pyarrow for real (the dev extras have it), also as a folder of part files
    (as Spark writes it); a file that is not Parquet is named in the error, and without
    pyarrow the error says what to install."""
    pd = pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"pyarrow is not installed: {exc}")
    parquet = tmp_path / "clicks.parquet"
    pd.read_csv(csv_file).to_parquet(parquet)
    folder = tmp_path / "spark_output"
    folder.mkdir()
    rows = pd.read_csv(csv_file)
    half = len(rows) // 2
    rows.iloc[:half].to_parquet(folder / "part-00000-1.snappy.parquet")
    rows.iloc[half:].to_parquet(folder / "part-00001-1.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    short = tmp_path / "CLICKS.PQ"  # the other suffix, in capitals
    short.write_bytes(parquet.read_bytes())
    models = []
    for file in (csv_file, parquet, folder, short):
        out = tmp_path / f"{file.name}.npz"
        assert main(["train", str(file), "--factors", "3", "--iterations", "2", "--backend",
                     "cpu", "--output", str(out)]) == 0
        models.append(ALS.load(out, backend="cpu"))
    for model in models[1:]:
        np.testing.assert_array_equal(model.user_ids_, models[0].user_ids_)
        np.testing.assert_array_equal(model.item_ids_, models[0].item_ids_)
        np.testing.assert_array_equal(model.user_factors_, models[0].user_factors_)
    capsys.readouterr()
    (folder / "part-00000-1.snappy.parquet").unlink()
    (folder / "part-00001-1.snappy.parquet").unlink()
    assert main(["train", str(folder), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(f"error: {folder} is a folder without .parquet "
                                            f"files: give a CSV or Parquet file, or a folder "
                                            f"of Parquet files\n")
    not_parquet = tmp_path / "other.parquet"
    not_parquet.write_bytes(b"user,item\n1,2\n")
    assert main(["train", str(not_parquet), "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "other.parquet cannot be read as Parquet: " in err and "its files" not in err
    # part files that disagree on a column's type (written by two programs, say): said so
    rows.iloc[:half].to_parquet(folder / "part-0.parquet")
    rows.iloc[half:].assign(item=rows["item"].iloc[half:].astype(str) + "x").to_parquet(
        folder / "part-1.parquet")
    assert main(["train", str(folder), "--backend", "cpu",
                 "--output", str(tmp_path / "never.npz")]) == 2
    assert f"{folder} cannot be read as Parquet: " in (err := capsys.readouterr().err)
    assert err.endswith("(do its files give a column different types?)\n")
    # part files of which one lacks a column read (renamed): that file named, not the
    # missing values pyarrow would give its rows
    day = folder / "day=2"  # a partition key (in no file): fine
    day.mkdir()
    rows.iloc[half:].to_parquet(folder / "part-1.parquet")
    rows.iloc[:4].rename(columns={"value": "clicks"}).to_parquet(day / "part-2.parquet")
    assert main(["train", str(folder), "--backend", "cpu",
                 "--output", str(tmp_path / "never.npz")]) == 2
    assert capsys.readouterr().err == (
        f"gpu-als train: error: {folder}: 1 of its 3 Parquet files lacks the column 'value' "
        f"that the others have (e.g. {os.path.join('day=2', 'part-2.parquet')}, with columns "
        f"['clicks', 'item', 'user']): give every file the same columns\n")
    rows.iloc[:4].to_parquet(day / "part-2.parquet")
    assert main(["train", str(folder), "--backend", "cpu", "--factors", "2",
                 "--iterations", "1", "--output", str(tmp_path / "days.npz")]) == 0
    np.testing.assert_array_equal(ALS.load(tmp_path / "days.npz").user_ids_,
                                  models[0].user_ids_)

    def without_pyarrow(*args, **kwargs):  # pandas' words where no engine is installed
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', "
                          "'fastparquet'.")

    monkeypatch.setattr(pd, "read_parquet", without_pyarrow)
    assert main(["train", str(parquet), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == ("gpu-als train: error: reading Parquet needs pyarrow: "
                                       "pip install gpu-als[parquet]\n")


def test_a_header_line_repeated_among_the_rows_is_refused(tmp_path, capsys):
    """Files joined with their header lines: the repeated header was a user named 'user'
    with an item named 'item' (without values, trained silently), or an error about text
    among the values. A user and an item that merely share the column names are fine."""
    for text in ("user,item\nu1,m1\nuser,item\nu2,m2\n",       # ids only: trained before
                 "user,item,value\n1,10,1\n2,20,2\nuser,item,value\n3,10,1\n"):
        path = tmp_path / "joined.csv"
        path.write_text(text)
        assert main(["train", str(path), "--backend", "cpu",
                     "--output", str(tmp_path / "m.npz")]) == 2
        line = 3 if text.count("\n") == 4 else 4
        assert capsys.readouterr().err == (
            f"gpu-als train: error: 1 row(s) repeat the header line, the first at line "
            f"{line} of {path} (files joined with their header lines?): keep the first "
            f"header line only\n")
    named = tmp_path / "named.csv"
    named.write_text("user,item,value\nuser,x,1\nu2,item,2\n")
    assert main(["train", str(named), "--backend", "cpu", "--factors", "2", "--iterations",
                 "1", "--output", str(tmp_path / "m.npz")]) == 0
    assert sorted(ALS.load(tmp_path / "m.npz").user_ids_) == ["u2", "user"]


def test_parquet_errors_say_what_fits_parquet(tmp_path, capsys):
    """A Parquet file names its columns: a missing id column's hint is the options alone
    (not --no-header, which Parquet refuses, not even for number-like names); part files
    whose types pyarrow cannot unify (its NotImplementedError) are said to be the folder's
    problem, in one line."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    numbered = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"1": [1, 2], "2": [3, 4]}), numbered)
    assert main(["train", str(numbered), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"gpu-als train: error: {numbered} has no column 'user'; its columns are ['1', '2']. "
        f"Name the id columns with --user-col and --item-col (e.g. --user-col 1 --item-col "
        f"2)\n")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64())}),
                   empty)
    assert main(["train", str(empty), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == f"gpu-als train: error: {empty} has no rows\n"
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"user": [1.5, 2.5], "item": [1, 2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"user": pa.array([datetime.date(2026, 1, 1)] * 2),
                             "item": [1, 2]}), folder / "part-1.parquet")
    assert main(["train", str(folder), "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpu-als train: error: {folder} cannot be read as Parquet: "
                          f"Unsupported cast from ")
    assert err.endswith("(do its files give a column different types?)\n")
    assert err.count("\n") == 1
    # a folder with other files than Parquet (pyarrow's message: "Parquet magic bytes not
    # found in footer ... (do its files give a column different types?)"); names starting
    # with _ or . are left out, as pyarrow leaves them (Spark's _SUCCESS, .crc files)
    (folder / "part-1.parquet").unlink()
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"\0")
    assert main(["train", str(folder), "--backend", "cpu", "--factors", "2",
                 "--iterations", "1", "--output", str(tmp_path / "m.npz")]) == 0
    (folder / "day=2").mkdir()
    (folder / "day=2" / "notes.txt").write_text("user,item\n")
    assert main(["train", str(folder), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"gpu-als train: error: {folder} is read as the Parquet files of one table, but "
        f"holds other files too (e.g. {os.path.join('day=2', 'notes.txt')}): give a folder "
        f"of Parquet files only, or one file\n")
    model = tmp_path / "m.npz"  # a model given where the interactions go
    assert main(["recommend", str(model), str(model), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"gpu-als recommend: error: {model} is an .npz file, as models are: give the "
        f"interactions as a CSV or Parquet file\n")


def test_the_url_of_a_parquet_folder_is_read_through_fsspec(tmp_path, capsys, monkeypatch):
    """A URL (here fsspec's in-memory filesystem) trains as the folder it copies, with
    the same checks (a part file without a column, other files, no such file), and is
    read through fsspec alone: pandas 3.1 would have pyarrow's own S3 client read s3://,
    blind to fsspec's configuration (an endpoint_url: found against a local S3 server). A
    protocol fsspec does not know and one whose package is missing are refused with what
    to do."""
    fsspec = pytest.importorskip("fsspec")
    pa = pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    import pyarrow.parquet as pq

    read_parquet, asked = pd.read_parquet, []
    monkeypatch.setattr(pd, "read_parquet", lambda path, **kwargs: (
        asked.append((path, kwargs.get("filesystem"))), read_parquet(path, **kwargs))[1])

    folder = tmp_path / "events"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        pq.write_table(pa.table({"uid": rng.integers(0, 30, 200), "iid": rng.integers(0, 9, 200),
                                 "plays": rng.random(200)}), folder / f"part-{k}.parquet")
    memory, root = fsspec.filesystem("memory"), f"/{tmp_path.name}"
    for file in folder.iterdir():
        memory.pipe(f"{root}/events/{file.name}", file.read_bytes())
    url = f"memory:/{root}/events"
    common = ["--user-col", "uid", "--item-col", "iid", "--value-col", "plays", "--backend",
              "cpu", "--factors", "3", "--iterations", "2", "--dtype", "float64"]
    try:
        assert main(["train", str(folder), *common, "-o", str(tmp_path / "here.npz")]) == 0
        here = capsys.readouterr().out.split(" in ")[0]  # "...: 30 users x 9 items, ..."
        assert main(["train", url, *common, "-o", str(tmp_path / "url.npz")]) == 0
        assert capsys.readouterr().out.split(" in ")[0] == here.replace(str(folder), url)
        expected, model = ALS.load(tmp_path / "here.npz"), ALS.load(tmp_path / "url.npz")
        np.testing.assert_array_equal(model.item_factors_, expected.item_factors_)
        np.testing.assert_array_equal(model.user_ids_, expected.user_ids_)
        # (the folder's path in the in-memory filesystem, and that filesystem)
        assert [(str(path), type(filesystem).__name__) for path, filesystem in asked] == [
            (str(folder), "NoneType"), (f"{root}/events", "MemoryFileSystem")]
        # a second file (--test, as --validation) by URL: the table of the local one's
        tested = []
        for test in (folder / "part-1.parquet", f"{url}/part-1.parquet"):
            assert main(["evaluate", str(folder / "part-0.parquet"), "--test", str(test),
                         *common]) == 0
            tested.append(re.sub(r"[\d.]+ s\b", "T s", capsys.readouterr().out.replace(
                str(test), "TEST")))
        assert tested[0] == tested[1] and "TEST" in tested[0], tested

        def refused(file, *more):
            assert main(["train", file, *common, *more]) == 2
            return capsys.readouterr().err.removeprefix("gpu-als train: error: ")

        memory.pipe(f"{root}/events/part-2.parquet", memory.cat(f"{root}/events/part-0.parquet"))
        memory.pipe(f"{root}/odd/part-0.parquet", memory.cat(f"{root}/events/part-0.parquet"))
        pq.write_table(pa.table({"uid": [1], "iid": [2]}), tmp_path / "lacking.parquet")
        memory.pipe(f"{root}/odd/part-1.parquet", (tmp_path / "lacking.parquet").read_bytes())
        assert refused(f"memory:/{root}/odd").startswith(
            f"memory:/{root}/odd: 1 of its 2 Parquet files lacks the column 'plays' that the "
            f"others have (e.g. part-1.parquet, with columns ['iid', 'uid'])")
        memory.pipe(f"{root}/events/notes.txt", b"user,item\n")
        assert refused(url) == (
            f"{url} is read as the Parquet files of one table, but holds other files too "
            f"(e.g. notes.txt): give a folder of Parquet files only, or one file\n")
        assert refused(f"memory:/{root}/none.parquet") == \
            f"memory:/{root}/none.parquet: no such file\n"
    finally:
        memory.rm(root, recursive=True)
    assert refused("nope://bucket/events/").startswith(
        "nope://bucket/events/: Protocol not known: nope")
    if importlib.util.find_spec("s3fs") is None:
        assert refused("s3://bucket/events/") == \
            "reading s3://bucket/events/: Install s3fs to access S3\n"


def test_every_file_a_command_reads_or_writes_may_be_a_url(csv_file, tmp_path, capsys):
    """CSV files by URL (plain or compressed) are downloaded and read as the local file,
    their errors naming the URL; models, tables, factors, trials and charts are written
    to URLs and read from them as from paths (fsspec's in-memory filesystem here)."""
    fsspec = pytest.importorskip("fsspec")
    memory, root = fsspec.filesystem("memory"), f"/{tmp_path.name}"
    url = f"memory:/{root}"
    memory.pipe(f"{root}/data/clicks.csv", csv_file.read_bytes())
    memory.pipe(f"{root}/data/clicks.csv.gz", gzip.compress(csv_file.read_bytes()))
    common = ["--factors", "3", "--iterations", "2", "--backend", "cpu"]

    def run(*argv, status=0):
        assert main(list(argv)) == status, capsys.readouterr()
        said = capsys.readouterr()
        return re.sub(r"[\d.]+ s\b", "T s", said.out + said.err)

    try:
        here = run("train", str(csv_file), *common, "-o", str(tmp_path / "here.npz"))
        for data in (f"{url}/data/clicks.csv", f"{url}/data/clicks.csv.gz"):
            said = run("train", data, *common, "-o", f"{url}/models/model")
            assert said == here.replace(str(csv_file), data).replace(
                str(tmp_path / "here.npz"), f"{url}/models/model.npz")
            expected, model = (ALS.load(tmp_path / "here.npz"),
                               ALS.load(f"{url}/models/model.npz"))
            np.testing.assert_array_equal(model.user_factors_, expected.user_factors_)
            np.testing.assert_array_equal(model.item_ids_, expected.item_ids_)
        # --init and the commands' model by URL; their tables to URLs, as they go to files
        run("train", f"{url}/data/clicks.csv", "--iterations", "1", "--init",
            f"{url}/models/model.npz", "-o", f"{url}/models/more.npz")
        run("train", str(csv_file), "--iterations", "1", "--init", str(tmp_path / "here.npz"),
            "-o", str(tmp_path / "more.npz"))
        assert memory.cat(f"{root}/models/more.npz") == (tmp_path / "more.npz").read_bytes()
        for command, *more in (("recommend", f"{url}/data/clicks.csv", "-N", "3"),
                               ("similar", "--items", "100", "101"),
                               ("export", "--items"), ("predict", str(csv_file))):
            for table in ("table.csv", "table.parquet"):
                local = run(command, str(tmp_path / "more.npz"), *more, "-o",
                            str(tmp_path / table))
                remote = run(command, f"{url}/models/more.npz", *more, "-o",
                             f"{url}/out/{table}")
                assert remote == local.replace(str(tmp_path / table), f"{url}/out/{table}")
                assert memory.cat(f"{root}/out/{table}") == (tmp_path / table).read_bytes(), \
                    (command, table)
        memory.pipe(f"{root}/data/items.txt", b"\xef\xbb\xbf100\n101\n")  # (a BOM)
        assert run("similar", f"{url}/models/more.npz", "--items", f"@{url}/data/items.txt") \
            == run("similar", f"{url}/models/more.npz", "--items", "100", "101")
        with pytest.raises(SystemExit):
            main(["similar", f"{url}/models/more.npz", "--items", f"@{url}/none.txt"])
        assert capsys.readouterr().err.endswith(
            f"gpu-als similar: error: argument --items: @{url}/none.txt: cannot read "
            f"the file of ids (No such file or directory: {url}/none.txt); an id that begins "
            f"with @ is read from a file too\n")
        assert run("export", f"{url}/models/more.npz", "-o", f"{url}/out", status=2) == \
            f"gpu-als export: error: --output {url}/out is a folder: give a file name\n"
        assert run("train", str(csv_file), *common, "-o", f"{url}/out", status=2) == \
            f"gpu-als train: error: --output {url}/out is a folder: give a file name\n"  # first
        assert run("info", f"{url}/models/more.npz") == run(
            "info", str(tmp_path / "more.npz")).replace(str(tmp_path / "more.npz"),
                                                        f"{url}/models/more.npz")
        run("fold-in", f"{url}/models/more.npz", f"{url}/data/clicks.csv", "--update-known",
            "-o", f"{url}/models/folded.npz")
        run("fold-in", str(tmp_path / "more.npz"), str(csv_file), "--update-known", "-o",
            str(tmp_path / "folded.npz"))
        assert memory.cat(f"{root}/models/folded.npz") == \
            (tmp_path / "folded.npz").read_bytes()
        run("evaluate", f"{url}/data/clicks.csv", *common, "-o", f"{url}/out/metrics.csv")
        run("evaluate", str(csv_file), *common, "-o", str(tmp_path / "metrics.csv"))
        assert memory.cat(f"{root}/out/metrics.csv") == (tmp_path / "metrics.csv").read_bytes()
        if importlib.util.find_spec("matplotlib") is not None:
            said = run("tune", f"{url}/data/clicks.csv", "--grid", "factors=2,3",
                       "--iterations", "2", "--backend", "cpu", "--trials",
                       f"{url}/out/trials.csv", "--plot", f"{url}/out/tune", "-o",
                       f"{url}/models/best.npz")
            assert f"all trials: {url}/out/trials.csv\n" in said
            assert f"plot: {url}/out/tune.png\n" in said
            assert memory.cat(f"{root}/out/trials.csv").count(b"\n") == 3
            assert memory.cat(f"{root}/out/tune.png").startswith(b"\x89PNG")
            assert ALS.load(f"{url}/models/best.npz").factors in (2, 3)
        # an output in a bucket not found (a typo, say) is warned of before the work: the
        # write would fail after it (with write-only credentials, the write may still go)
        from fsspec.implementations.memory import MemoryFileSystem

        class Buckets(MemoryFileSystem):  # (s3fs and gcsfs split their paths so)
            protocol = "buckets"

            @classmethod
            def _strip_protocol(cls, path):
                return super()._strip_protocol(path.replace("buckets://", "memory://", 1))

            def split_path(self, path):
                bucket, _, key = self._strip_protocol(path).lstrip("/").partition("/")
                return bucket, key, None

            def exists(self, path, **kwargs):  # (a folder of files: fsspec 2021's said no)
                path = self._strip_protocol(path).rstrip("/")
                return super().exists(path) or any(key.startswith(f"{path}/")
                                                   for key in self.store)

        fsspec.register_implementation("buckets", Buckets, clobber=True)
        warned = run("train", str(csv_file), *common, "-o", "buckets://nobucket/m.npz")
        assert "gpu-als train: warning: --output buckets://nobucket/m.npz: there is no " \
            "bucket 'nobucket', or this process may not look it up: writing there may fail " \
            "once the work is done\n" in warned
        assert "warning" not in run("train", str(csv_file), *common, "-o",
                                    f"buckets:/{root}/models/m.npz")
        memory.rm("/nobucket", recursive=True)
        # a CSV URL's errors name it, not the copy read
        memory.pipe(f"{root}/data/ratings.csv", b"uid,iid\n1,2\n")
        assert run("train", f"{url}/data/ratings.csv", status=2) == (
            f"gpu-als train: error: {url}/data/ratings.csv has no column 'user'; its columns "
            f"are ['uid', 'iid']. Name the id columns with --user-col and --item-col (e.g. "
            f"--user-col uid --item-col iid), or pass --no-header for a file without a "
            f"header line\n")
        assert run("train", f"{url}/data/none.csv", status=2) == \
            f"gpu-als train: error: {url}/data/none.csv: no such file\n"
        assert run("recommend", f"{url}/models/none.npz", str(csv_file), status=2) == \
            f"gpu-als recommend: error: no model file at {url}/models/none.npz\n"
    finally:
        memory.rm(root, recursive=True)


def test_a_wide_parquet_file_is_read_for_its_three_columns(csv_file, tmp_path, capsys,
                                                          monkeypatch):
    """An event log's other columns are not read (11x faster and a quarter of the memory
    with five more text columns), nor those of a file without a column 'value', whose
    warning names them as from_dataframe's does where one of them may hold the values (a
    column of numbers: not a session id nor a time, as in an event log, which counts its
    rows without a word); the errors about a missing column list every column; a folder's
    partition keys (day=1/) are columns too."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = pd.read_csv(csv_file)
    wide = rows.assign(session=[f"s{i}" for i in range(len(rows))], ts=pd.Timestamp(0),
                       price=2.5)
    wide.to_parquet(tmp_path / "wide.parquet")
    wide.drop(columns="value").to_parquet(tmp_path / "no_value.parquet")
    wide.drop(columns=["value", "price"]).to_parquet(tmp_path / "log.parquet")
    (tmp_path / "days" / "day=1").mkdir(parents=True)
    wide.to_parquet(tmp_path / "days" / "day=1" / "part-0.parquet")
    asked = []
    read_parquet = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda path, columns=None: (
        asked.append(columns), read_parquet(path, columns=columns))[1])
    for file, extra in (("wide.parquet", []), ("no_value.parquet", []), ("log.parquet", []),
                        ("days", ["--value-col", "day"])):
        out = tmp_path / f"{file}.npz"
        assert main(["train", str(tmp_path / file), "--factors", "2", "--iterations", "1",
                     "--backend", "cpu", "--output", str(out), *extra]) == 0
        assert ALS.load(out).user_ids_.tolist() == sorted(set(rows["user"]))
    assert asked == [["user", "item", "value"], ["user", "item"], ["user", "item"],
                     ["user", "item", "day"]]
    err = capsys.readouterr().err  # one warning: the file without values, which counts rows
    assert err.count("column(s) ['session', 'ts', 'price'] are not used; name the values' "
                     "column with --value-col (e.g. --value-col price)") == 1
    assert err.count("warning") == 1
    with pytest.warns(UserWarning, match=r"column\(s\) \['session', 'ts', 'price'\] are not "
                                         r"used; name the values' column with value_col="):
        from_dataframe(wide.drop(columns="value"))  # the same, in the API's words
    with warnings.catch_warnings():  # the event log: no column that may hold values
        warnings.simplefilter("error")
        from_dataframe(wide.drop(columns=["value", "price"]))
    for extra, says in ((["--feedback", "explicit"], "has no column 'value': --feedback "
                         "explicit learns ratings; name their column with --value-col (the "
                         "columns are ['user', 'item', 'session', 'ts', 'price'])"),
                        (["--value-col", "n"], "has no column 'n' for --value-col; its "
                         "columns are ['user', 'item', 'session', 'ts', 'price'] (did you "
                         "mean --value-col price?)")):
        assert main(["train", str(tmp_path / "no_value.parquet"), "--backend", "cpu",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert says in err and "warning" not in err  # (not also "every row counts 1")


def test_a_file_without_a_header_line(movielens, tmp_path, capsys):
    """MovieLens' u.data (tab-separated user, item, rating, timestamp; no header) trains
    with --no-header as the same rows with a header do; without it, the error says how."""
    u_data = movielens.path / "u.data"
    assert main(["train", str(u_data), "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(
        "its columns are ['196', '242', '3', '881250949']. Its first line holds values, not "
        "column names: pass --no-header (the columns are then user, item and value, in "
        "that order)\n")
    with_header = tmp_path / "ratings.csv"
    with_header.write_text("user,item,value,timestamp\n"
                           + u_data.read_text().replace("\t", ","))
    models = []
    for file, extra in ((u_data, ["--no-header"]), (with_header, [])):
        out = tmp_path / f"{file.stem}.npz"
        assert main(["train", str(file), "--factors", "4", "--iterations", "2",
                     "--backend", "cpu", "--output", str(out), *extra]) == 0
        models.append(ALS.load(out))
    np.testing.assert_array_equal(models[0].user_ids_, models[1].user_ids_)
    np.testing.assert_array_equal(models[0].user_factors_, models[1].user_factors_)
    capsys.readouterr()
    # the other way round: a header line read as data (the first user and item ids not
    # numbers, all below them numbers) is said, once
    assert main(["train", str(with_header), "--no-header", "--factors", "2", "--iterations",
                 "1", "--backend", "cpu", "--output", str(tmp_path / "m.npz")]) == 2
    assert "column 'value' has dtype" in capsys.readouterr().err  # 'value' in a rating
    two_columns = tmp_path / "pairs.csv"
    two_columns.write_text("userId,movieId\n1,10\n2,20\n1,20\n")
    assert main(["train", str(two_columns), "--no-header", "--factors", "2",
                 "--iterations", "1", "--backend", "cpu", "--output",
                 str(tmp_path / "m.npz")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and (
        "warning: the first line of " in err and "looks like column names (userId, movieId), "
        "and is read as an interaction of user 'userId' with item 'movieId': without "
        "--no-header it names the columns" in err)
    for lines in ("a,x\n", "a,x\nb,x\nc,y\n", "7,10\n1,10\n2,20\n1,20\n"):  # no header
        two_columns.write_text(lines)
        assert main(["train", str(two_columns), "--no-header", "--factors", "1",
                     "--iterations", "1", "--backend", "cpu", "--output",
                     str(tmp_path / "m.npz")]) == 0
        assert "warning" not in capsys.readouterr().err
    assert main(["train", str(two_columns), "--backend", "cpu"]) == 2
    assert "Its first line holds values, not column names" in capsys.readouterr().err
    parquet = tmp_path / "r.parquet"
    parquet.write_bytes(b"")
    assert main(["train", str(parquet), "--no-header"]) == 2
    assert "--no-header is for CSV files" in capsys.readouterr().err


def test_a_file_without_a_header_line_read_as_one_column(tmp_path, capsys):
    """With --no-header, lines that read as one field (a delimiter the detection missed,
    as where one line is cut short, or a file of one column) are refused by what to pass;
    it was a KeyError's traceback."""
    path = tmp_path / "cut.csv"
    path.write_text("11;18;3\n2;13;5\n13\n")  # the last line cut: ';' is not detected
    assert main(["train", str(path), "--no-header", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"gpu-als train: error: {path}: its lines read as one column with the delimiter "
        f"',', and --no-header takes the first for the user ids and the second for the item "
        f"ids: is the delimiter ';'? Pass --sep ';'\n")
    path.write_text("1::2\n3::4\n5:6\n")  # (MovieLens' ratings.dat, a line mistyped)
    assert main(["train", str(path), "--no-header", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("is the delimiter '::'? Pass --sep ::\n")
    path.write_text("11;18;3\n")  # a file of one line, the wrong --sep given
    assert main(["train", str(path), "--no-header", "--sep", ",", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("is the delimiter ';'? Pass --sep ';'\n")
    path.write_text("1\n2\n")
    assert main(["evaluate", str(path), "--no-header", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(
        "--no-header takes the first for the user ids and the second for the item ids "
        "(give the file a user and an item column, in that order)\n")
    path.write_text("11;18;3\n2;13;5\n13;1;4\n")  # with --sep, the same lines train
    assert main(["train", str(path), "--no-header", "--sep", ";", "--factors", "1",
                 "--iterations", "1", "--backend", "cpu", "--output",
                 str(tmp_path / "m.npz")]) == 0


def test_demo_writes_the_table_and_plots(movielens, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--backend", "cpu", "--iterations", "3", "--factors", "16",
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Recall@10" in out and "Personalization" in out and "recommend(): all 943" in out
    # DESIGN.md section 6: ratings >= 4, 20% of each user's held out (seed 42), lambda 0.001
    from gpu_als.evaluation import binarize, train_test_split

    train, test = train_test_split(binarize(movielens.ratings, threshold=4), test_fraction=0.2,
                                   random_state=42)
    assert train.nnz + test.nnz == 55_375
    assert f"943 users x 1,682 items, {train.nnz:,} train / {test.nnz:,} test positives" in out
    assert "ALS: factors=16, regularization=0.001, alpha=10.0, iterations=3;" in out
    for name in ("loss.png", "item_pca.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert np.isfinite(float(out.split("Personalization: ")[1].split()[0]))


def test_tune_draws_from_ranges_of_the_grid(csv_file, tmp_path, capsys):
    """--grid NAME=loguniform:LOW:HIGH (uniform, randint with HIGH included) with
    --n-samples: each trial's value drawn in the range, as tune() draws from scipy.stats'."""
    import scipy.stats

    from gpu_als.cli import parse_grid
    from gpu_als.tune import search_space

    grid = parse_grid(["regularization=loguniform:0.001:0.1", "alpha=uniform:1:20",
                       "factors=randint:2:4", "confidence=linear,log"])
    assert grid["confidence"] == ["linear", "log"]
    expected = {"regularization": scipy.stats.loguniform(0.001, 0.1),
                "alpha": scipy.stats.uniform(1, 19), "factors": scipy.stats.randint(2, 5)}
    assert search_space(grid, n_samples=5)[2] == search_space(
        {**expected, "confidence": ["linear", "log"]}, n_samples=5)[2]
    args = ["tune", str(csv_file), "--grid", "regularization=loguniform:0.001:0.1",
            "--grid", "factors=randint:2:4", "--n-samples", "5", "--iterations", "2",
            "--backend", "cpu", "--trials", str(tmp_path / "t.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 configurations" in out
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].startswith("regularization,factors,") and len(rows) == 6
    best = eval(re.search(r"^best: (\{.*\}), validation", out, re.M)[1])
    drawn = [row.split(",") for row in rows[1:]]  # the best first, its values whole
    assert best == {"regularization": float(f"{float(drawn[0][0]):.4g}"),
                    "factors": int(drawn[0][1])}
    assert best["regularization"] != float(drawn[0][0])  # (rounded: 4 digits)
    for row in rows[1:]:
        regularization, factors = row.split(",")[:2]
        assert 0.001 <= float(regularization) <= 0.1 and int(factors) in (2, 3, 4)
    for item, error in (
            ("regularization=loguniform:0:1", "--grid regularization=loguniform:0:1: a log "
                                              "scale needs LOW > 0 (use uniform:0:1 for a "
                                              "linear one)"),
            ("factors=randint:8:8", "--grid factors=randint:8:8: LOW must be below HIGH "
                                    "(--grid factors=randint:LOW:HIGH)"),
            ("factors=randint:2:8.5", "--grid factors=randint:2:8.5: expected --grid "
                                      "factors=randint:LOW:HIGH, with integers LOW < HIGH"),
            ("alpha=uniform:1", "--grid alpha=uniform:1: expected --grid "
                                "alpha=uniform:LOW:HIGH, with numbers LOW < HIGH"),
            ("alpha=uniform:1:5", "--grid alpha is a distribution: pass --n-samples, the "
                                  "number of configurations to draw from it"),
            ("alpha=uniform:1:inf", "--grid alpha=uniform:1:inf: LOW and HIGH must be "
                                    "finite numbers"),
            ("factors=uniform:2:8 --n-samples 1", None)):
        if error is None:  # factors drawn as reals: the option that draws integers
            assert main(["tune", str(tmp_path / "nowhere.csv"), "--grid", *item.split()]) == 2
            assert re.fullmatch(r"gpu-als tune: error: --grid factors drew [\d.]+: factors "
                                r"takes integers, from a distribution of integers such as "
                                r"randint:LOW:HIGH\n", capsys.readouterr().err)
            continue
        assert main(["tune", str(tmp_path / "nowhere.csv"), "--grid", item]) == 2
        assert capsys.readouterr().err == f"gpu-als tune: error: {error}\n"


def test_tune_searches_grids_apart_by_or(csv_file, tmp_path, capsys):
    """--or starts another grid: the search of tune() with a list of grids (the trials of
    one grid, then of the next), its errors named by the option and the grid."""
    from gpu_als.cli import parse_grid

    items = ["solver=cholesky", "factors=2,3", "--or", "solver=cg", "cg_steps=1,2"]
    assert parse_grid(items) == [{"solver": ["cholesky"], "factors": [2, 3]},
                                 {"solver": ["cg"], "cg_steps": [1, 2]}]
    args = ["tune", str(csv_file), "--grid", "solver=cholesky", "--grid", "factors=2,3",
            "--or", "--grid", "solver=cg", "--grid", "cg_steps=1,2", "--iterations", "2",
            "--backend", "cpu", "--no-halving", "--trials", str(tmp_path / "t.csv")]
    assert main(args) == 0
    assert "4 configurations, 4 trained to the end" in capsys.readouterr().out
    rows = sorted((tmp_path / "t.csv").read_text().splitlines()[1:])
    assert [row.split(",")[:3] for row in rows] == [
        ["cg", "", "1"], ["cg", "", "2"], ["cholesky", "2", ""], ["cholesky", "3", ""]]
    for grids, error in (
            (["--or", "--grid", "factors=2"], "--or stands between two sets of --grid "
                                              "options, each one grid"),
            (["--grid", "factors=2", "--or"], "--or stands between"),
            (["--grid", "factors=2", "--or", "--or", "--grid", "factors=3"],
             "--or stands between"),
            (["--grid", "factors=2", "--or", "--grid", "factors=uniform:2:8",
              "--n-samples", "2"], r"--grid factors \(of grid 2, counting the sets of --grid "
                                   r"options apart by --or\) drew [\d.]+: factors takes "
                                   r"integers")):
        assert main(["tune", str(tmp_path / "nowhere.csv"), *grids]) == 2
        assert re.match(f"gpu-als tune: error: {error}", capsys.readouterr().err)


def test_tune_counts_the_configurations_left_out_as_the_same_model(csv_file, tmp_path,
                                                                   capsys):
    """cg_steps acts on nothing in the Cholesky solver's trials: of the grid's 4
    configurations one is left out, and the summary says so (it said "3 configurations"
    of a grid of 4)."""
    assert main(["tune", str(csv_file), "--grid", "solver=cholesky,cg", "--grid",
                 "cg_steps=2,3", "--grid", "factors=2", "--iterations", "2", "--backend",
                 "cpu", "--trials", str(tmp_path / "t.csv")]) == 0
    assert "3 configurations (1 more would train the same model as one of these: left out), "\
        "3 trained to the end, in " in capsys.readouterr().out


def test_tune_refits_the_best_only_for_its_output(csv_file, tmp_path, capsys, monkeypatch):
    """Without -o nothing keeps the refitted model: tune skips that full fit."""
    import gpu_als.tune

    refits = []
    search = gpu_als.tune.tune
    monkeypatch.setattr(gpu_als.tune, "tune", lambda *a, **k: refits.append(k["refit"])
                        or search(*a, **k))
    args = ["tune", str(csv_file), "--grid", "factors=2,4", "--iterations", "2",
            "--backend", "cpu", "--trials", str(tmp_path / "t.csv")]
    assert main(args) == 0 and main([*args, "-o", str(tmp_path / "best.npz")]) == 0
    assert refits == [False, True]
    out = capsys.readouterr().out
    assert out.count("2 configurations, 2 trained to the end, in ") == 2
    assert out.count(" s on 'cpu'\n") == 2
    assert out.count("best model refitted on all the data") == 1
    assert ALS.load(tmp_path / "best.npz").factors in (2, 4)


@pytest.mark.parametrize("command", ["train", "tune", "fold-in"])
def test_a_model_file_named_as_a_table_is_refused_before_training(command, csv_file,
                                                                   tmp_path, capsys):
    """-o results.csv wrote the model to results.csv.npz after the whole fit (the trials
    of tune go to --trials); it is refused as the options are read."""
    given = [str(tmp_path / "m.npz")] if command == "fold-in" else []
    for name, instead in (("results.csv", "results.npz"), ("out.csv.gz", "out.npz"),
                          ("best.PARQUET", "best.npz")):
        with pytest.raises(SystemExit):
            main([command, *given, str(csv_file), "-o", str(tmp_path / name)])
        assert capsys.readouterr().err.endswith(
            f"error: argument -o/--output: {str(tmp_path / name)!r} is named as a table: -o "
            f"writes the model, as .npz (ALS.save), e.g. -o {tmp_path / instead}\n")
        assert not list(tmp_path.glob("*.npz"))


def test_tune_writes_trials_plot_and_model(csv_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["tune", str(csv_file), "--grid", "factors=2,4", "--grid", "alpha=1,10.5",
            "--iterations", "4", "--min-iterations", "2", "--backend", "cpu",
            "--trials", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png"),
            "--output", str(tmp_path / "best")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 configurations, 2 trained to the end" in out
    assert f"refitted on all the data: {tmp_path / 'best.npz'}\n" in out
    assert (tmp_path / "t.csv").read_text().count("\n") == 5
    assert ALS.load(tmp_path / "best.npz", backend="cpu").factors in (2, 4)
    # a configuration that fails (Y^T Y singular: more factors than the 30 items, no
    # regularization) is counted, warned of, and its error is in the trials file
    assert main(["tune", str(csv_file), "--grid", "factors=2,40", "--grid",
                 "regularization=0", "--iterations", "2", "--backend", "cpu",
                 "--trials", str(tmp_path / "f.csv")]) == 0
    captured = capsys.readouterr()
    assert "2 configurations, 1 trained to the end, 1 failed (their error: in the trials " \
        "file), in " in captured.out
    assert "warning: trial 2 of 2 (factors=40, regularization=0) failed before training: " \
        "ValueError: regularization=0 with factors=40 and 30 items" in captured.err
    assert (tmp_path / "f.csv").read_text().splitlines()[-1].startswith(
        '40,0,nan,0,False,0.0,"ValueError: regularization=0 with factors=40')
    for grid in ("factors", "factors=", "=2,4"):
        assert main(["tune", str(csv_file), "--grid", grid]) == 2
        assert f"--grid {grid!r}: expected NAME=VALUE,VALUE,..." in capsys.readouterr().err
    assert main(["tune", str(csv_file), "--feedback", "explicit", "--grid", "alpha=1,5"]) == 2
    assert "gpu-als tune: error: --grid alpha: alpha has no effect with --feedback explicit " \
        "(ratings, no confidences), so its 2 values would train the same model" \
        in capsys.readouterr().err
    assert main(["tune", str(csv_file), "--grid", "factors=2", "--grid", "factors=4"]) == 2
    assert "--grid factors= is given twice: list all of its values in one, factors=A,B" \
        in capsys.readouterr().err
    assert main(["tune", str(csv_file), "--grid", "factors=2,4", "alpha=1,10"]) == 2
    assert capsys.readouterr().err == (
        "gpu-als tune: error: unrecognized arguments: alpha=1,10; each --grid takes one "
        "NAME=V1,V2,...: write --grid before each (--grid alpha=1,10)\n")
    with pytest.raises(SystemExit):  # not all of them grid items: argparse's own error
        main(["tune", str(csv_file), "--grid", "factors=2,4", "alpha=1,10", "stray"])
    err = capsys.readouterr().err  # (with the usage of tune, not of gpu-als)
    assert err.startswith("usage: gpu-als tune ")
    assert err.endswith("gpu-als tune: error: unrecognized arguments: alpha=1,10 stray\n")
    # hyperparameters as train takes them: tune takes them through --grid, and says so
    with pytest.raises(SystemExit):
        main(["tune", str(csv_file), "--factors", "8", "--confidence", "log", "--stray"])
    assert capsys.readouterr().err.endswith(
        "gpu-als tune: error: unrecognized arguments: --factors 8 --confidence log --stray; "
        "tune takes hyperparameters through --grid (one value fixes one): --grid factors=8 "
        "--grid confidence=log\n")
    wide = ",".join(map(str, range(1, 401)))  # 160,000 configurations
    for grid, error in (("factors=2,x", "the configuration {'factors': 'x'} of --grid: "
                                        "factors must be an integer, got str 'x'"),
                        ("factor=2", "unknown parameter 'factor' (did you mean 'factors'?)"),
                        # in the options' terms, not tune()'s (param_grid['factors'] ...)
                        ("factors=2,4,2", "--grid factors holds 2 more than once"),
                        (f"factors={wide} --grid iterations={wide}",
                         "the grid has 160,000 configurations, each a fit, and at most "
                         "100,000 are tried: pass --n-samples to try that many"),
                        (f"factors={wide} --grid iterations={wide} --n-samples 150000",
                         "the grid has 160,000 configurations, each a fit, and at most "
                         "100,000 are tried: --n-samples 150,000 is more"),
                        ("factors=2 --metric rmse", "--metric rmse scores predicted ratings: "
                                                    "every trial needs feedback='explicit' "
                                                    "(--feedback explicit)")):
        # (checked before the file is read: this one does not exist)
        assert main(["tune", str(tmp_path / "nowhere.csv"), "--grid", *grid.split()]) == 2
        assert capsys.readouterr().err.startswith(f"gpu-als tune: error: {error}")
    args = ["tune", str(csv_file), "--feedback", "explicit", "--metric", "rmse", "--grid",
            "factors=2,4", "--grid", "regularization=0.1,1", "--iterations", "4",
            "--backend", "cpu", "--trials", str(tmp_path / "r.csv"), "--no-halving",
            "--min-iterations", "2"]  # (halving would stop 2 of the 4 after 2)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 configurations, 4 trained to the end" in out and "validation rmse " in out
    scores = [float(line.split(",")[2]) for line in
              (tmp_path / "r.csv").read_text().splitlines()[1:]]
    assert len(scores) == 4 and scores == sorted(scores)  # the lowest first


@pytest.fixture
def trained(csv_file, tmp_path):
    """A model trained by the command line on ``csv_file`` (users u0..u59, items 100..129)."""
    path = tmp_path / "m.npz"
    assert main(["train", str(csv_file), "--factors", "4", "--iterations", "3",
                 "--backend", "cpu", "--output", str(path)]) == 0
    return path, ALS.load(path, backend="cpu")


def test_options_are_checked_before_the_file_is_read(trained, tmp_path, capsys):
    """A mistyped option fails at once, not after minutes of reading a large file: here
    the file does not exist, and the option is what the error names."""
    path, _ = trained
    missing = str(tmp_path / "nowhere.csv")
    for argv, error in (
            (["evaluate", missing, "--feedback", "explicit", "--regularization", "0"],
             "--regularization 0 with --feedback explicit"),
            (["train", missing, "--init", str(path), "--early-stopping", "2", "--output",
              "m.npz"], "--early-stopping does not combine with --init")):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith(f"gpu-als {argv[0]}: error: {error}")
    for argv, error in ((["train", missing, "--factors", "0", "--output", "m.npz"],
                         "--factors: must be >= 1, got 0"),
                        (["train", missing, "--init", str(path), "--regularization", "-2",
                          "--output", "m.npz"], "--regularization: must be >= 0, got -2"),
                        (["tune", missing, "--iterations", "-1"],
                         "--iterations: must be >= 0, got -1"),
                        (["evaluate", missing, "--K", "0"], "--K: must be >= 1, got 0"),
                        (["evaluate", missing, "--test-fraction", "0"],
                         "--test-fraction: must be between 0 and 1, got 0"),
                        (["tune", missing, "--reduction-factor", "1"],
                         "--reduction-factor: must be >= 2, got 1"),
                        (["tune", missing, "--n-samples", "2.5"],
                         "--n-samples: expected an integer, got '2.5'"),
                        # (named random_state=-1 after the file was read, before)
                        (["evaluate", missing, "--seed", "-1"], "--seed: must be >= 0, got -1"),
                        (["tune", missing, "--seed", "-2"], "--seed: must be >= 0, got -2")):
        with pytest.raises(SystemExit):
            main(argv)
        assert f"gpu-als {argv[0]}: error: argument {error}" in capsys.readouterr().err


#: Each integer option with a floor: (command, option, the least value it takes).
FLOORS = [(command, "--seed", 0) for command in ("demo", "train", "evaluate", "tune")] + \
    [(command, "--N", 1) for command in ("recommend", "recommend-users", "similar",
                                         "explain")] + \
    [("train", "--early-stopping", 1), ("train", "--validation-users", 1), ("train", "--K", 1),
     ("evaluate", "--K", 1), ("evaluate", "--latest", 1), ("tune", "--K", 1),
     ("tune", "--n-samples", 1), ("tune", "--validation-users", 1),
     ("tune", "--min-iterations", 1), ("tune", "--reduction-factor", 2),
     ("tune", "--iterations", 0)] + \
    [(command, option, least) for command in ("demo", "train", "evaluate")
     for option, least in (("--factors", 1), ("--iterations", 0), ("--cg-steps", 1))]


def test_each_integer_option_takes_its_floor_and_refuses_below_it(capsys):
    """The floor itself parses, one below it is refused by the option's name; the table
    above lists every option with a floor (a new one must be added to it)."""
    import argparse

    from gpu_als.cli import build_parser

    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction)).choices
    floored = {(name, action.option_strings[-1])  # the long name (-N is --N)
               for name, command in commands.items() for action in command._actions
               if getattr(action.type, "__qualname__", "") == "at_least.<locals>.parse"}
    assert floored == {(command, option) for command, option, _ in FLOORS}
    for command, option, least in FLOORS:
        parser = commands[command]
        dest = next(a.dest for a in parser._actions if option in a.option_strings)
        required = [[*a.option_strings[:1], "x"] for a in parser._actions if a.required]
        argv = [word for words in required for word in words] + [option, str(least)]
        parsed = getattr(parser.parse_args(argv), dest)
        assert parsed == ([least] if option == "--K" and command == "evaluate" else least), \
            (command, option)  # (evaluate --K takes several)
        with pytest.raises(SystemExit):
            parser.parse_args(argv[:-1] + [str(least - 1)])
        assert re.search(rf"argument (-\w/)?{option}: must be >= {least}, got {least - 1}",
                         capsys.readouterr().err), (command, option)


@pytest.mark.parametrize("command", ["demo", "train", "evaluate"])
def test_the_real_hyperparameters_are_refused_below_their_floors_as_parsed(command, capsys):
    """--regularization and --alpha take 0 and up, --epsilon more than 0, each a finite
    number, refused by the option's name as the options are parsed (as the integer
    options are; the library's "alpha=-1.0: must be >= 0.0" came after the file was
    read)."""
    from gpu_als.cli import build_parser

    parser = build_parser()
    required = [] if command == "demo" else ["data.csv"]
    for option, floor, below in (("--regularization", "0", "-0.5"), ("--alpha", "0", "-1"),
                                 ("--epsilon", "1e-9", "0")):
        args = parser.parse_args([command, *required, option, floor])
        assert getattr(args, option[2:]) == float(floor)
        for value, error in ((below, f"must be {'>' if option == '--epsilon' else '>='} 0, "
                                     f"got {float(below):g}"),
                             ("nan", "must be a finite number, got nan"),
                             ("inf", "must be a finite number, got inf"),
                             ("x", "expected a number, got 'x'")):
            with pytest.raises(SystemExit):
                parser.parse_args([command, *required, option, value])
            assert f"error: argument {option}: {error}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--no-header", "--user-col", "value"],  # (pandas' two columns of one name: an
     "--user-col and --value-col (by default 'value') both name 'value'"),  # AttributeError)
    (["--no-header", "--item-col", "user"], "--item-col and --user-col (by default 'user')"),
    (["--user-col", "value"], "--user-col and --value-col (by default 'value') both name "
                              "'value': give each a column of its own"),  # (in Python's
    (["--value-col", "item"], "--value-col and --item-col (by default 'item')"),  # words)
    (["--event-weights", "user=click:1"], "--event-weights and --user-col (by default "
                                          "'user') both name 'user'"),
])
def test_two_column_options_naming_one_column_are_refused(csv_file, tmp_path, capsys, argv,
                                                          message):
    for command in (["train", str(csv_file), "-o", str(tmp_path / "m.npz")],
                    ["evaluate", str(csv_file)]):
        assert main([*command, *argv, "--backend", "cpu", "--iterations", "1"]) == 2
        assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_the_librarys_settings_are_named_as_the_options_that_set_them(csv_file, capsys):
    """A setting refused by the library for what another option set: named as the
    options (it said "regularization=0 with feedback='explicit'")."""
    assert main(["train", str(csv_file), "--feedback", "explicit", "--regularization", "0",
                 "-o", "m.npz"]) == 2
    assert capsys.readouterr().err.startswith(
        "gpu-als train: error: --regularization 0 with --feedback explicit: a user or item "
        "with fewer ratings than factors")
    from gpu_als.cli import build_parser, in_option_words

    train = next(action for action in build_parser()._actions
                 if isinstance(action, argparse._SubParsersAction)).choices["train"]
    for message, said in (
            ("cg_steps=0: must be >= 1", "--cg-steps 0: must be >= 1"),
            ("epsilon has no effect with confidence='linear'",
             "epsilon has no effect with --confidence linear"),
            # names the command has no option for, and names inside a sentence, stay
            ("user_ids=None: no ids", "user_ids=None: no ids"),
            ("fit(df) with factors=8 and feedback='explicit'",
             "fit(df) with --factors 8 and --feedback explicit"),
            ("ALS(factors=8)", "ALS(factors=8)")):
        assert in_option_words(message, train) == said


def test_a_count_below_one_is_refused(trained, csv_file, capsys):
    path, _ = trained
    for command in (["recommend", str(path), "--users", "u0"],
                    ["similar", str(path), "--items", "100"],
                    ["explain", str(path), str(csv_file), "--user", "u0", "--items", "100"]):
        with pytest.raises(SystemExit):
            main([*command, "--N", "0", "--backend", "cpu"])
        assert "argument -N/--N: must be >= 1, got 0" in capsys.readouterr().err


def test_early_stopping_needs_users_with_two_interactions(tmp_path, capsys):
    file = tmp_path / "single.csv"
    file.write_text("user,item\n" + "".join(f"{u},{u % 5}\n" for u in range(20)))
    assert main(["train", str(file), "--early-stopping", "2", "--backend", "cpu"]) == 2
    assert "no user has 2 or more interactions, so there is nothing to hold out" in \
        capsys.readouterr().err


def row_of(ids, wanted):
    return int(np.flatnonzero(np.asarray(ids) == wanted)[0])


def read_ranking(path):
    pd = pytest.importorskip("pandas")
    return pd.read_csv(path, dtype={0: str})


def test_recommend_matches_the_model_and_folds_in_new_users(trained, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    path, model = trained
    query = pd.DataFrame({"user": ["u3", "u3", "new", "new", "new", "u5"],
                          "item": [100, 101, 102, 103, 999, 104], "value": [1, 2, 3, 1, 5, 1]})
    query.to_csv(tmp_path / "q.csv", index=False)
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(path), str(tmp_path / "q.csv"), "--N", "4",
                 "--backend", "cpu", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "12 recommendations (up to 4 per user, liked items filtered)" in err
    assert "2 users known to the model; 1 folded in" in err
    assert f"1 row of {tmp_path / 'q.csv'} naming items the model lacks left out" in err
    recs = read_ranking(out)
    assert list(recs.columns) == ["user", "item", "rank", "score"]
    users, items = model.user_ids_, model.item_ids_
    n_items = len(items)
    col = [row_of(items, item) for item in (100, 101, 102, 103, 104)]
    # known users: their fitted factors, the query file's items filtered
    R = sp.csr_matrix(([1, 2, 1], ([0, 0, 1], [col[0], col[1], col[4]])), shape=(2, n_items))
    ids, scores = model.recommend([row_of(users, "u3"), row_of(users, "u5")], R, N=4)
    for row, user in enumerate(["u3", "u5"]):
        mine = recs[recs.user == user]
        np.testing.assert_array_equal(mine["item"], items[ids[row]])
        np.testing.assert_array_equal(mine["rank"], [1, 2, 3, 4])
        np.testing.assert_allclose(mine["score"], scores[row], rtol=1e-5)
    # a new user: folded in from its rows (the unknown item 999 left out)
    row = sp.csr_matrix(([3.0, 1.0], ([0, 0], [col[2], col[3]])), shape=(1, n_items))
    ids, scores = model.recommend(0, row, N=4, recalculate_user=True)
    mine = recs[recs.user == "new"]
    np.testing.assert_array_equal(mine["item"], items[ids])
    np.testing.assert_allclose(mine["score"], scores, rtol=1e-5)
    assert not set(mine["item"]) & {102, 103}
    # named users (in the order given, each once) with the file: the same rows for them
    assert main(["recommend", str(path), str(tmp_path / "q.csv"), "--users", "u3", "new",
                 "u3", "--N", "4", "--backend", "cpu", "--output", str(out)]) == 0
    named = read_ranking(out)
    assert list(named.user) == ["u3"] * 4 + ["new"] * 4
    np.testing.assert_array_equal(named.item[4:], items[ids])
    # --keep-liked: the file's items may come back; a huge --N is the whole catalogue
    assert main(["recommend", str(path), str(tmp_path / "q.csv"), "--users", "u3", "--N",
                 str(10**12), "--keep-liked", "--backend", "cpu", "--output", str(out)]) == 0
    assert f"{n_items} recommendations (up to {n_items} per user, liked items not " \
        "filtered)" in capsys.readouterr().err
    kept = read_ranking(out)
    ids, _ = model.recommend(row_of(users, "u3"), None, N=n_items,
                             filter_already_liked_items=False)
    np.testing.assert_array_equal(kept["item"], items[ids])


def test_fold_in_adds_new_users_and_keeps_the_rest(trained, tmp_path, capsys):
    """fold-in: new users solved from their rows (an unknown item left out), known ones
    kept (or solved again with --update-known), items untouched; the model file written
    answers for the new ids."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    # u5: known, its one row naming an item the model lacks (kept, not "new skipped")
    pd.DataFrame({"user": ["u3", "new", "new", "new", "ghost", "u5"],
                  "item": [100, 102, 103, 999, 999, 999], "value": [1, 3, 1, 5, 2, 4]}
                 ).to_csv(tmp_path / "today.csv", index=False)
    out = tmp_path / "more.npz"
    argv = ["fold-in", str(path), str(tmp_path / "today.csv"), "--backend", "cpu",
            "--output", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert ("today.csv: 1 new user added; 2 known kept as they were; 1 new skipped: no "
            "interactions with the model's items ('ghost'); 3 rows naming items the model "
            "lacks left out") in said
    assert f"the model now has {len(model.user_ids_) + 1} users" in said
    assert f"saved to {out} (load with" in said
    grown = ALS.load(out, backend="cpu")
    assert list(grown.user_ids_) == [*model.user_ids_, "new"]
    np.testing.assert_array_equal(grown.user_factors_[:-1], model.user_factors_)
    np.testing.assert_array_equal(grown.item_factors_, model.item_factors_)
    items = model.item_ids_
    row = sp.csr_matrix(([3.0, 1.0], ([0, 0], [row_of(items, 102), row_of(items, 103)])),
                        shape=(1, len(items)))
    np.testing.assert_allclose(grown.user_factors_[-1], model.recalculate_user(0, row),
                               rtol=1e-5)
    assert (grown.factors, grown.alpha) == (model.factors, model.alpha)

    assert main(argv[:-1] + [str(tmp_path / "again.npz"), "--update-known"]) == 0
    assert "1 known solved again from their rows" in capsys.readouterr().out
    again = ALS.load(tmp_path / "again.npz", backend="cpu")
    u3 = row_of(model.user_ids_, "u3")
    only = sp.csr_matrix(([1.0], ([0], [row_of(items, 100)])), shape=(1, len(items)))
    np.testing.assert_allclose(again.user_factors_[u3], model.recalculate_user(0, only),
                               rtol=1e-5)
    # nothing new: a one-line error, no model written
    assert main(["fold-in", str(out), str(tmp_path / "today.csv"), "--backend", "cpu",
                 "--output", str(tmp_path / "none.npz")]) == 2
    assert ("today.csv to fold in: 3 users already in the model "
            "(--update-known solves them again), 1 new without interactions with its items"
            in capsys.readouterr().err)
    assert not (tmp_path / "none.npz").exists()


def test_fold_in_items_adds_cold_start_items(trained, tmp_path, capsys):
    """--items: a new item solved from the users who had it, against the user factors."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    pd.DataFrame({"user": ["u1", "u4", "nobody", "u2"], "item": [500, 500, 500, 100],
                  "value": [2, 1, 1, 1]}).to_csv(tmp_path / "items.csv", index=False)
    out = tmp_path / "items.npz"
    assert main(["fold-in", str(path), str(tmp_path / "items.csv"), "--items", "--backend",
                 "cpu", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert ("1 new item added; 1 known kept as they were; 1 row naming users the model "
            "lacks left out") in said and f"{len(model.item_ids_) + 1} items" in said
    grown = ALS.load(out, backend="cpu")
    assert list(grown.item_ids_) == [*model.item_ids_, 500]
    np.testing.assert_array_equal(grown.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(grown.item_factors_[:-1], model.item_factors_)
    users = model.user_ids_
    column = sp.csr_matrix(([2.0, 1.0], ([0, 0], [row_of(users, "u1"), row_of(users, "u4")])),
                           shape=(1, len(users)))
    np.testing.assert_allclose(grown.item_factors_[-1], model.recalculate_item(0, column),
                               rtol=1e-5)


def test_fold_in_reads_numbers_as_the_models_string_ids(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    R = random_interactions(5, 4, 0.6, seed=0)
    model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(
        R, user_ids=np.array(["1", "2", "3", "4", "5"]), item_ids=np.array(list("abcd")))
    model.save(tmp_path / "m.npz")
    pd.DataFrame({"user": [1, 9], "item": ["a", "b"]}).to_csv(tmp_path / "q.csv", index=False)
    assert main(["fold-in", str(tmp_path / "m.npz"), str(tmp_path / "q.csv"), "--backend",
                 "cpu", "--output", str(tmp_path / "m2.npz")]) == 0
    assert "1 new user added; 1 known kept as they were" in capsys.readouterr().out
    assert list(ALS.load(tmp_path / "m2.npz").user_ids_) == ["1", "2", "3", "4", "5", "9"]


def test_fold_in_gives_a_model_without_ids_its_row_numbers(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    R = random_interactions(20, 12, 0.3, seed=1)
    model = ALS(factors=3, iterations=2, backend="cpu", random_state=0,
                show_progress=False).fit(R)
    model.save(tmp_path / "plain.npz")
    pd.DataFrame({"user": [40, 40, 0], "item": [1, 2, 0]}).to_csv(tmp_path / "q.csv",
                                                                   index=False)
    assert main(["fold-in", str(tmp_path / "plain.npz"), str(tmp_path / "q.csv"),
                 "--backend", "cpu", "--output", str(tmp_path / "grown.npz")]) == 0
    grown = ALS.load(tmp_path / "grown.npz", backend="cpu")
    assert list(grown.user_ids_) == [*range(20), 40] and grown.item_ids_ is None
    np.testing.assert_array_equal(grown.user_factors_[:20], model.user_factors_)  # 0 kept
    np.testing.assert_allclose(
        grown.user_factors_[20],
        model.recalculate_user(0, sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 2])), shape=(1, 12))),
        rtol=1e-5)


def test_predict_scores_each_pair_of_the_file_in_order(trained, tmp_path, capsys):
    """gpu-als predict: x_u . y_i of each row (predict_frame's), the value column copied,
    nan for pairs the model lacks, counted; other columns neither warned of nor written."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    query = pd.DataFrame({"user": ["u3", "zoe", "u5", "u3"], "item": [101, 100, 999, 129],
                          "value": [2.0, 1.0, 4.0, 3.0], "day": ["mon", "tue", "wed", "thu"]})
    query.to_csv(tmp_path / "q.csv", index=False)
    assert main(["predict", str(path), str(tmp_path / "q.csv"), "--backend", "cpu",
                 "-o", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert err == ("4 pairs scored to " + str(tmp_path / "p.csv") + "; 2 name users or items "
                   "the model lacks (1 user, e.g. 'zoe'; 1 item, e.g. 999): their score is "
                   "nan\n")
    got = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["user", "item", "value", "score"]
    assert list(got["user"]) == list(query["user"]) and list(got["item"]) == list(query["item"])
    assert list(got["value"]) == list(query["value"])
    want = model.predict([row_of(model.user_ids_, "u3")] * 2,
                         [row_of(model.item_ids_, 101), row_of(model.item_ids_, 129)])
    np.testing.assert_allclose(got["score"][[0, 3]], want, rtol=1e-5)  # 6 digits written
    assert got["score"][[1, 2]].isna().all()
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "value column (default value; copied to the output, as value, where the file " \
        "has it)" in " ".join(capsys.readouterr().out.split())


def test_predict_without_values_and_into_parquet(trained, tmp_path, capsys):
    """A file without a value column: no rows are counted, so its other columns are not
    warned of (as train warns); Parquet keeps the scores unrounded."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path, model = trained
    pd.DataFrame({"user": ["u1", "u2"], "item": [100, 101], "day": [1, 2]}).to_csv(
        tmp_path / "q.csv", index=False)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(path), str(tmp_path / "q.csv"), "--backend", "cpu",
                 "--output", str(out)]) == 0
    assert capsys.readouterr().err == f"2 pairs scored to {out}\n"
    got = pd.read_parquet(out)
    assert list(got.columns) == ["user", "item", "score"]
    want = model.predict(model.user_rows(["u1", "u2"]), model.item_rows([100, 101]))
    np.testing.assert_array_equal(got["score"].to_numpy(), want)  # unrounded in Parquet


def test_recommend_users_writes_what_recommend_users_frame_gives(trained, tmp_path, capsys):
    """`gpu-als recommend-users`: the users to show each item to, as the model's
    recommend_users_frame ranks them (an item the model lacks folded in from the file's
    rows, the users who have an item there filtered unless --keep-liked), with --users
    and --exclude-users as the allow- and blocklist; its line counts what it did."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    query = pd.DataFrame({"user": ["u3", "u4", "u5", "u6", "ghost", "u1"],
                          "item": [100, 100, 777, 777, 777, 101],
                          "value": [1.0, 2.0, 3.0, 1.0, 1.0, 1.0]})
    query.to_csv(tmp_path / "q.csv", index=False)
    out = tmp_path / "audience.csv"
    assert main(["recommend-users", str(path), str(tmp_path / "q.csv"), "--N", "5",
                 "--backend", "cpu", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "15 recommendations (up to 5 per item, users who have the item filtered)" in err
    assert "2 items known to the model; 1 folded in" in err
    assert f"1 row of {tmp_path / 'q.csv'} naming users the model lacks left out" in err
    got = pd.read_csv(out, dtype={1: str})
    assert list(got.columns) == ["item", "user", "rank", "score"]
    with pytest.warns(UserWarning, match="name users the model lacks: 1 left out"):
        want = model.recommend_users_frame(interactions=query, N=5)
    assert list(got["item"]) == list(want["item"]) == [100] * 5 + [101] * 5 + [777] * 5
    assert list(got["user"]) == list(want["user"])
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5)
    assert not {"u3", "u4"} & set(got[got["item"] == 100]["user"])

    assert main(["recommend-users", str(path), "--items", "101", "100", "--users", "u1", "u2",
                 "u3", "u9", "nobody", "--exclude-users", "u2", "--N", "2",
                 "--backend", "cpu"]) == 0
    printed, err = capsys.readouterr()
    want = model.recommend_users_frame([101, 100], N=2, users=["u1", "u3", "u9"])
    assert printed.splitlines()[0] == "item,user,rank,score"
    assert [line.split(",")[:3] for line in printed.splitlines()[1:]] == \
        [[str(i), u, str(r)] for i, u, r in zip(want["item"], want["user"], want["rank"])]
    assert "users who have the item not filtered" in err
    assert "--users: 1 of its 5 ids not users of the model (ignored)" in err
    assert main(["recommend-users", str(path), "--backend", "cpu"]) == 2
    assert "name the items (--items) or give an interaction file: its items get users, " \
        "without the users they already have" in capsys.readouterr().err
    assert main(["recommend-users", str(path), "--items", "100,101", "--backend", "cpu"]) == 2
    assert "--items '100,101' is no id of the model, but '100', '101' are" in \
        capsys.readouterr().err
    assert main(["recommend-users", str(path), "--items", "555", "--backend", "cpu"]) == 2
    assert "item '555' is not in the model and has no interactions with its users to fold " \
        "in" in capsys.readouterr().err


def test_recommend_named_users_without_a_file(trained, capsys):
    path, model = trained
    assert main(["recommend", str(path), "--users", "u7", "ghost", "--N", "3",
                 "--backend", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    ids, _ = model.recommend(row_of(model.user_ids_, "u7"), N=3,
                             filter_already_liked_items=False)
    assert lines[0] == "user,item,rank,score" and len(lines) == 4
    assert [int(line.split(",")[1]) for line in lines[1:]] == list(model.item_ids_[ids])
    assert "liked items not filtered" in err and "1 skipped" in err and "'ghost'" in err
    assert main(["recommend", str(path), "--user", "u7", "--N", "3", "--backend", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == lines  # --user: --users (not ambiguous)
    assert main(["recommend", str(path), "--users", "ghost", "--backend", "cpu"]) == 2
    assert ("user 'ghost' is not in the model and has no interactions with its items to "
            "fold in" in capsys.readouterr().err)
    assert main(["recommend", str(path), "--backend", "cpu"]) == 2
    assert "name the users (--users)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recommend", str(path), "--users", "u1", "--N", "0"])


def test_ids_joined_by_commas_are_named_with_how_to_give_them(trained, tmp_path, capsys):
    """`--users u1,u2` is one id the model lacks ("user 'u1,u2' is not in the model"
    before): where its parts are ids, the error says to separate them with spaces; an id
    with a comma that is not made of ids is looked up as it is."""
    path, _ = trained
    csv = tmp_path / "e.csv"
    csv.write_text("user,item\nu1,100\n")
    for command, says in (
            (["recommend", str(path), "--users", "u1,u2"],
             "--users 'u1,u2' is no id of the model, but 'u1', 'u2' are: separate ids with "
             "spaces (--users u1 u2)"),
            (["recommend", str(path), "--users", "u1", "--items", "100, 101"],
             "--items '100, 101' is no id of the model, but '100', '101' are"),
            (["recommend", str(path), "--users", "u1", "--exclude-items", "100,101"],
             "--exclude-items '100,101' is no id"),
            (["similar", str(path), "--items", "100,101"], "--items '100,101' is no id"),
            (["similar", str(path), "--users", "u3,u4"], "--users 'u3,u4' is no id"),
            (["explain", str(path), str(csv), "--user", "u1", "--items", "100,101"],
             "--items '100,101' is no id")):
        assert main([*command, "--backend", "cpu"]) == 2
        assert capsys.readouterr().err.startswith(f"gpu-als {command[0]}: error: {says}")
    assert main(["recommend", str(path), "--users", "u1,ghost", "--backend", "cpu"]) == 2
    assert "user 'u1,ghost' is not in the model" in capsys.readouterr().err
    # a model without ids: its ids are its rows (30 users, 6 items; fewer factors, 4)
    rng = np.random.default_rng(0)
    rows = tmp_path / "rows.npz"
    ALS.from_factors(rng.random((30, 4)), rng.random((6, 4))).save(rows)
    for command, says in ((["recommend", str(rows), "--users", "20,21"],
                           "--users '20,21' is no id of the model, but '20', '21' are"),
                          (["recommend", str(rows), "--users", "1", "--items", "4,5"],
                           "--items '4,5' is no id of the model, but '4', '5' are"),
                          (["recommend-users", str(rows), "--items", "1", "--users", "20,21"],
                           "--users '20,21' is no id of the model, but '20', '21' are"),
                          (["similar", str(rows), "--items", "4,5"],
                           "--items '4,5' is no id of the model, but '4', '5' are")):
        assert main([*command, "--backend", "cpu"]) == 2
        assert capsys.readouterr().err.startswith(f"gpu-als {command[0]}: error: {says}")


def test_similar_folds_in_the_new_items_of_a_file(trained, tmp_path, capsys):
    """`gpu-als similar MODEL FILE`: the items of FILE the model lacks are folded in from
    their rows (the items most like a new one, from its first users), as
    similar_items_frame(interactions=) finds them; the line counts what it did."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    rows = pd.DataFrame({"user": ["u3", "u4", "u8", "ghost"], "item": [777] * 4,
                         "value": [1.0, 2.0, 1.0, 1.0]})
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert main(["similar", str(path), str(tmp_path / "new.csv"), "--items", "101", "777",
                 "--N", "3", "--backend", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert err == (f"6 similar items (cosine of the factors, 3 per item) to standard output; "
                   f"1 folded in from their rows in {tmp_path / 'new.csv'}; 1 row of "
                   f"{tmp_path / 'new.csv'} naming users the model lacks left out\n")
    with pytest.warns(UserWarning, match="name users the model lacks: 1 left out"):
        want = model.similar_items_frame([101, 777], N=3, interactions=rows)
    got = [line.split(",") for line in out.splitlines()[1:]]
    assert [(int(i), int(j), int(r)) for i, j, r, _ in got] == \
        list(zip(want["item"], want["similar_item"], want["rank"]))
    assert main(["similar", str(path), str(tmp_path / "new.csv"), "--N", "2",
                 "--backend", "cpu"]) == 0  # every item of the file: 777
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == \
        ["777", "777"]


def test_similar_to_the_only_item_is_a_header_and_zero_per_item(tmp_path, capsys):
    path = tmp_path / "one.npz"
    ALS.from_factors(np.ones((3, 4)), np.ones((1, 4))).save(path)
    assert main(["similar", str(path), "--items", "0", "--backend", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out == "item,similar_item,rank,score\n"
    assert err == "0 similar items (cosine of the factors, 0 per item) to standard output\n"
    two = tmp_path / "two.npz"  # each item's only other one
    ALS.from_factors(np.ones((3, 4)), np.ones((2, 4))).save(two)
    assert main(["similar", str(two), "--N", "5", "--backend", "cpu"]) == 0
    assert capsys.readouterr().out == "item,similar_item,rank,score\n0,1,1,1\n1,0,1,1\n"


def test_recommend_among_named_items_and_ids_read_from_files(trained, tmp_path, capsys):
    """--items (an allowlist, here read from a file with @FILE) and --exclude-items: the
    model's recommend with items= and filter_items=; ids the model lacks are counted; @FILE
    works for every option of ids, and a file that cannot be read is a usage error."""
    path, model = trained
    allowed = tmp_path / "in_stock.txt"
    allowed.write_text("\ufeff101\n103\n\n105\n107\n999\n", encoding="utf-8")  # BOM, blank
    assert main(["recommend", str(path), "--users", "u7", "--items", f"@{allowed}", "110",
                 "--exclude-items", "103", "--N", "3", "--keep-liked", "--backend", "cpu"]) == 0
    out, err = capsys.readouterr()
    rows = np.flatnonzero(np.isin(model.item_ids_, [101, 105, 107, 110]))
    ids, _ = model.recommend(row_of(model.user_ids_, "u7"), N=3, items=rows,
                             filter_already_liked_items=False)
    assert [int(line.split(",")[1]) for line in out.splitlines()[1:]] == \
        list(model.item_ids_[ids])
    assert "--items: 1 of its 6 ids not items of the model (ignored)" in err
    first = str(model.item_ids_[0])  # at row 0: an item of the model, as every other
    assert main(["recommend", str(path), "--users", "u7", "--items", first, "107",
                 "--exclude-items", first, "--N", "3", "--backend", "cpu"]) == 0
    assert "not items of the model" not in capsys.readouterr().err
    assert main(["recommend", str(path), "--users", "u7", "--exclude-items", "101", "102",
                 "--N", "30", "--backend", "cpu"]) == 0
    items = [int(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(items) == 28 and not {101, 102} & set(items)
    users = tmp_path / "users.txt"
    users.write_text("u3\nu5\n")
    assert main(["recommend", str(path), "--users", f"@{users}", "--N", "1",
                 "--backend", "cpu"]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == \
        ["u3", "u5"]
    assert main(["similar", str(path), "--items", f"@{allowed}", "--N", "1",
                 "--backend", "cpu"]) == 2  # 999: not an item of the model
    assert "the model has no item '999'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recommend", str(path), "--users", "@nowhere.txt"])
    assert "argument --users/--user: @nowhere.txt: cannot read the file of ids (No such file or " \
           "directory: nowhere.txt); an id that begins with @ is read from a file too" in \
        capsys.readouterr().err
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(SystemExit):
        main(["recommend", str(path), "--items", f"@{tmp_path / 'blank.txt'}"])
    assert "the file has no ids" in capsys.readouterr().err


def test_rankings_written_as_parquet_hold_the_csv_rows(trained, tmp_path, capsys,
                                                       monkeypatch):
    """``--output *.parquet`` (recommend, similar, explain): the same rows as the CSV
    file, with the ids' own types and unrounded scores; without pyarrow one error line
    says what to install."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path, model = trained
    pd.DataFrame({"user": ["u3", "u3", "new"], "item": [100, 101, 102]}).to_csv(
        tmp_path / "q.csv", index=False)
    commands = {"recommend": [str(tmp_path / "q.csv"), "--N", "4"],
                "similar": ["--items", "105", "101", "--N", "3"],
                "explain": [str(tmp_path / "q.csv"), "--user", "u3", "--items", "105", "101"]}
    for command, options in commands.items():
        files = [tmp_path / f"{command}.csv", tmp_path / f"{command}.Parquet"]  # any case
        for out in files:
            assert main([command, str(path), *options, "--backend", "cpu", "--output",
                         str(out)]) == 0
        written, expected = pd.read_parquet(files[1]), pd.read_csv(files[0])
        assert list(written.columns) == list(expected.columns) and len(written) > 0
        text = pd.read_csv(files[0], dtype=str)
        for column in written.columns:
            if written[column].dtype.kind == "f":  # the CSV's: 6 significant digits
                assert text[column].tolist() == [f"{v:.6g}" for v in written[column]]
            else:
                assert written[column].tolist() == expected[column].tolist()
    numbered = tmp_path / "numbered.csv"  # users named on the command line: "5" is 5
    numbered.write_text("user,item\n5,1\n5,2\n6,2\n6,3\n7,1\n")
    assert main(["train", str(numbered), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(tmp_path / "numbered.npz")]) == 0
    assert main(["recommend", str(tmp_path / "numbered.npz"), "--users", "6", "5", "--N", "1",
                 "--backend", "cpu", "--output", str(tmp_path / "r.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "r.parquet")["user"].tolist() == [6, 5]
    capsys.readouterr()

    def without_pyarrow(*args, **kwargs):
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', "
                          "'fastparquet'.")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", without_pyarrow)
    assert main(["similar", str(path), "--items", "105", "--backend", "cpu", "--output",
                 str(tmp_path / "s.parquet")]) == 2
    assert capsys.readouterr().err == ("gpu-als similar: error: writing Parquet needs pandas "
                                       "and pyarrow: pip install gpu-als[parquet]\n")


def test_ids_that_are_numbers_in_one_block_of_rows_and_text_in_another(tmp_path, capsys):
    """pandas types a large file's columns a block of rows at a time: user ids that are
    all numbers for 300,000 rows and then "abc" came as ints and strs, which failed with
    advice for Python (and pandas' warning about low_memory); they are now the file's
    text."""
    path = tmp_path / "mixed.csv"
    path.write_text("user,item\n" + "".join(f"{i % 5000},{i % 700}\n" for i in range(300_000))
                    + "abc,1\n")
    out = tmp_path / "m.npz"
    assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    ids = ALS.load(out).user_ids_
    assert len(ids) == 5001 and {"0", "4999", "abc"} <= set(ids.tolist())
    with path.open("a") as file:
        file.write(",2\n")  # an empty field stays a missing id, not the id "nan"
    assert main(["train", str(path), "--backend", "cpu"]) == 2
    assert f"column 'user' has 1 missing ids (NaN or None), the first at line 300003 of " \
        f"{path}" in capsys.readouterr().err


def test_ids_that_pandas_would_take_for_missing_are_ids(tmp_path, capsys, monkeypatch):
    """NA (Namibia), null, None, N/A are ids; pandas' default took them for missing and
    the file was refused. An empty field is still a missing id or value."""
    path = tmp_path / "na.csv"
    path.write_text("user,item,value\nNA,x,1\nnull,y,2\nNone,x,1\nb,N/A,1\n")
    out = tmp_path / "m.npz"
    assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(out)]) == 0
    model = ALS.load(out)
    assert model.user_ids_.tolist() == ["NA", "None", "b", "null"]
    assert model.item_ids_.tolist() == ["N/A", "x", "y"]
    for lines, says in (("a,x,\nb,y,1\n", "column 'value' holds 1 missing, NaN or infinite "
                                          "value(s), the first at line 2"),
                        (",x,1\nb,y,1\n", "column 'user' has 1 missing ids (NaN or None), "
                                          "the first at line 2"),
                        ("a,x,NA\nb,y,1\n", "expected numbers (line 2"),
                        ("a,x,1\nb,y,nan\n", "expected numbers (line 3"),
                        # ('inf' is a number to pandas: the 'x' below it is named)
                        ("a,x,1\n\n  \nb,y,inf\nc,z,x\n", "expected numbers (line 6"),
                        ("a,x,1\r\nb,y,\r\n", "holds 1 missing, NaN or infinite value(s), "
                                                "the first at line 3")):
        # (a file's line: blank lines counted, as an editor counts them, and pandas skips)
        path.write_text("user,item,value\n" + lines, newline="")
        capsys.readouterr()
        assert main(["train", str(path), "--backend", "cpu"]) == 2
        assert f"{says} of {path}" in capsys.readouterr().err, says
    path.write_text("a,x,1\nb,y,\n")  # without a header line, line 2 is the second row
    assert main(["train", str(path), "--no-header", "--backend", "cpu"]) == 2
    assert f"the first at line 2 of {path}" in capsys.readouterr().err
    # in a time split's part, still the file's line (the part keeps the rows' numbers)
    path.write_text("user,item,value,t\na,x,1,5\na,y,2,6\nb,x,1,7\nb,y,,8\na,z,2,9\n")
    assert main(["evaluate", str(path), "--time-col", "t", "--test-fraction", "0.5",
                 "--backend", "cpu"]) == 2
    assert f"the first at line 5 of {path}" in capsys.readouterr().err
    stdin = "user,item,value\na,x,1\nb,y,\n"  # (no lines: the copy of standard input is gone)
    monkeypatch.setattr(sys, "stdin", argparse.Namespace(buffer=io.BytesIO(stdin.encode())))
    assert main(["train", "-", "--backend", "cpu"]) == 2
    assert capsys.readouterr().err.endswith("the first at row 1\n")


def test_a_delimiter_ending_every_line(tmp_path, capsys):
    """``1,10,3,``: pandas took the first column for the index and shifted the others
    (user <- item, item <- value: an error about missing values, or worse, a model of the
    wrong columns); the fields are the header's. Rows wider than the header keep their
    first fields, with pandas' warning of the cut."""
    path = tmp_path / "trailing.csv"
    out = tmp_path / "m.npz"
    for text, users, items, warned in (
            ("user,item,value\n1,10,3,\n2,20,4,\n1,20,5,\n", [1, 2], [10, 20], False),
            ("user,item\n1,10,\n2,20,\n", [1, 2], [10, 20], False),
            ("user,item\n1,10,7\n2,20,8\n", [1, 2], [10, 20], True)):
        path.write_text(text)
        assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                     "cpu", "--output", str(out)]) == 0
        model = ALS.load(out)
        assert model.user_ids_.tolist() == users and model.item_ids_.tolist() == items
        assert ("warning: Length of header or names does not match length of data" in
                capsys.readouterr().err) == warned


def test_ids_that_are_floats_are_written_in_full(tmp_path, capsys):
    """Only the scores are rounded to 6 digits: a float id 1234567.5 is not 1.23457e+06."""
    path = tmp_path / "f.csv"
    path.write_text("user,item\n1234567.5,10\n1234567.5,20\n2.5,10\n2.5,30\n")
    assert main(["train", str(path), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(tmp_path / "f.npz")]) == 0
    capsys.readouterr()
    assert main(["similar", str(tmp_path / "f.npz"), "--users", "2.5", "--backend",
                 "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("2.5,1234567.5,1,")


def test_similar_items_and_users_leave_the_query_out(trained, tmp_path, capsys):
    path, model = trained
    out = tmp_path / "sim.csv"
    assert main(["similar", str(path), "--items", "105", "101", "--N", "3",
                 "--backend", "cpu", "--output", str(out)]) == 0
    sim = read_ranking(out)
    assert list(sim.columns) == ["item", "similar_item", "rank", "score"]
    items, users = model.item_ids_, model.user_ids_
    queries = [row_of(items, 105), row_of(items, 101)]
    ids, scores = model.similar_items(queries, N=4)
    for row, item in enumerate([105, 101]):
        mine = sim[sim["item"] == str(item)]
        expected = [i for i in ids[row] if i != queries[row]][:3]
        np.testing.assert_array_equal(mine["similar_item"], items[expected])
        np.testing.assert_allclose(mine["score"], scores[row][ids[row] != queries[row]][:3],
                                   rtol=1e-5)
        assert item not in set(mine["similar_item"])
    assert main(["similar", str(path), "--users", "u2", "--N", "2", "--backend", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    query = row_of(users, "u2")
    ids, _ = model.similar_users(query, N=3)
    assert lines[0] == "user,similar_user,rank,score"
    assert [line.split(",")[1] for line in lines[1:]] == list(users[ids[ids != query][:2]])
    assert main(["similar", str(path), "--N", "2", "--backend", "cpu",
                 "--output", str(out)]) == 0
    assert len(read_ranking(out)) == len(items) * 2  # every item by default
    assert main(["similar", str(path), "--items", "7777", "--backend", "cpu"]) == 2
    assert "the model has no item '7777'" in capsys.readouterr().err


def test_export_writes_factors_that_read_back_as_the_same_model(trained, tmp_path, capsys):
    """gpu-als export: CSV columns item,factor_0.. whose values read back as the same
    float32s (a model made of them recommends as the trained one), Parquet a list column
    per id; --users alone: every user; ids the model lacks are refused."""
    pd = pytest.importorskip("pandas")
    path, model = trained
    items, users = tmp_path / "items.csv", tmp_path / "users.csv"
    assert main(["export", str(path), "--backend", "cpu", "-o", str(items)]) == 0
    assert capsys.readouterr().err == (f"factors of 30 items (4 float32 values each) to "
                                       f"{items}\n")
    assert main(["export", str(path), "--users", "--backend", "cpu", "-o", str(users)]) == 0
    assert capsys.readouterr().err.startswith("factors of 60 users (4 float32 values each)")
    Y, X = pd.read_csv(items), pd.read_csv(users, dtype={"user": str})
    assert list(Y.columns) == ["item", "factor_0", "factor_1", "factor_2", "factor_3"]
    np.testing.assert_array_equal(Y["item"], model.item_ids_)
    np.testing.assert_array_equal(X["user"], model.user_ids_)
    for read, factors in ((Y, model.item_factors_), (X, model.user_factors_)):
        np.testing.assert_array_equal(read.iloc[:, 1:].to_numpy().astype(np.float32), factors)
    again = ALS.from_factors(X.iloc[:, 1:].to_numpy(), Y.iloc[:, 1:].to_numpy(),
                             user_ids=X["user"].to_numpy(), item_ids=Y["item"].to_numpy(),
                             backend="cpu")
    pd.testing.assert_frame_equal(again.recommend_frame(N=5), model.recommend_frame(N=5))

    pytest.importorskip("pyarrow")
    some = tmp_path / "some.parquet"
    assert main(["export", str(path), "--items", "105", "101", "-o", str(some)]) == 0
    assert capsys.readouterr().err.startswith("factors of 2 items (4 float32 values each)")
    read = pd.read_parquet(some)
    assert list(read["item"]) == [105, 101]  # (the model's integer ids, not the text typed)
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = pq.read_schema(some).field("factors").type  # a fixed length: a vector column
    assert pa.types.is_fixed_size_list(vectors) and vectors.list_size == 4
    assert vectors.value_type == pa.float32()
    np.testing.assert_array_equal(np.stack(read["factors"]),
                                  model.item_factors_[model.item_rows([105, 101])])
    assert main(["export", str(path), "--users", "u2", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "user,factor_0,factor_1,factor_2,factor_3" and len(out) == 2
    assert out[1].split(",")[1:] == [f"{v:.9g}" for v in model.user_factors_[row_of(
        model.user_ids_, "u2")]]
    assert main(["export", str(path), "--items", "105", "7777", "--backend", "cpu"]) == 2
    assert "the model has no item '7777' (1 of the 2 given)" in capsys.readouterr().err
    # a float64 model's factors to 17 digits: the same float64s read back
    wide = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    ALS.from_factors(rng.standard_normal((3, 2)), rng.standard_normal((4, 2)),
                     dtype=np.float64, backend="cpu").save(wide)
    assert main(["export", str(wide), "--backend", "cpu", "-o", str(items)]) == 0
    assert "(2 float64 values each)" in capsys.readouterr().err
    # (read by Python's float(): pandas 1.5's default parser may miss the last bit)
    np.testing.assert_array_equal(np.loadtxt(items, delimiter=",", skiprows=1,
                                             usecols=(1, 2)),
                                  ALS.load(wide, backend="cpu").item_factors_)
    assert main(["export", str(path), "--items", "101,105", "--backend", "cpu"]) == 2
    assert "separate ids with spaces (--items 101 105)" in capsys.readouterr().err


def test_csv_tables_are_written_a_chunk_of_rows_at_a_time_as_in_one(tmp_path, monkeypatch):
    """Large tables are formatted a chunk of rows at a time (their text all at once took
    750 MB for 138,000 users' factors): the file is the same, rows neither lost nor
    repeated where the chunks do not divide the rows; a progress bar (on a terminal)
    counts the rows where there is more than one chunk."""
    from gpu_als import _tables
    from gpu_als._tables import _write_csv

    from .conftest import ProgressBars

    progress = ProgressBars()
    monkeypatch.setattr(_tables, "tqdm", progress)

    factors = np.arange(15, dtype=np.float32).reshape(5, 3) / 7
    columns = {"item": np.array(["a", "b", "c", "d", "e"]),
               **{f"factor_{j}": factors[:, j] for j in range(3)}}
    formats = dict.fromkeys(list(columns)[1:], "%.9g")
    whole, parts = tmp_path / "whole.csv", tmp_path / "parts.csv"
    assert _write_csv(str(whole), columns, formats) == 5
    assert _write_csv(str(parts), columns, formats, cells=8) == 5  # 2 rows: 2 + 2 + 1
    assert parts.read_text() == whole.read_text()
    assert [(bar.total, bar.counted, bar.disable) for bar in progress.bars] == [
        (5, 5, True), (5, 5, None)]  # one chunk: no bar; three: a bar where a terminal
    assert whole.read_text().splitlines()[1:] == [
        ",".join([item, *(f"{v:.9g}" for v in row)]) for item, row in zip("abcde", factors)]


def _raise(exc):
    raise exc


def test_fetch_writes_a_movielens_release_as_a_table_the_other_commands_read(
        movielens, tmp_path, capsys, monkeypatch):
    """gpu-als fetch movielens-100k: load_movielens's DataFrame as CSV or Parquet, which
    evaluate then reads as its closing line suggests; a release that cannot be had here
    (no copy, no network) is an error that says where to put it."""
    pd = pytest.importorskip("pandas")
    from gpu_als import datasets

    out = tmp_path / "ml.csv"
    assert main(["fetch", "movielens-100k", "--data-home", str(movielens.path), "-o",
                 str(out)]) == 0
    said = capsys.readouterr().err
    assert said == (f"100,000 ratings of MovieLens 100K (943 users, 1,682 items) to {out}; "
                    f"e.g. gpu-als evaluate {out} --value-col rating --min-value 4 "
                    f"--time-col timestamp\n")
    written = pd.read_csv(out)
    expected = datasets.load_movielens("100k", data_home=movielens.path)
    assert list(written.columns) == ["user", "item", "rating", "timestamp"]
    np.testing.assert_array_equal(written.to_numpy(np.float64), expected.to_numpy(np.float64))
    pytest.importorskip("pyarrow")
    table = tmp_path / "ml.parquet"
    assert main(["fetch", "movielens-100k", "--data-home", str(movielens.path), "-o",
                 str(table)]) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(pd.read_parquet(table), expected)
    assert main(["evaluate", str(table), "--value-col", "rating", "--min-value", "4",
                 "--time-col", "timestamp", "--iterations", "2", "--factors", "4",
                 "--no-auc", "--backend", "cpu"]) == 0
    assert "943 users x 1,613 items" in capsys.readouterr().out

    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["fetch", "movielens-1m"]) == 2
    assert "ml-1m.zip is not available locally and could not be downloaded" in \
        capsys.readouterr().err


def test_info_of_a_model_file_says_what_it_holds(trained, tmp_path, capsys):
    """gpu-als info MODEL: its hyperparameters (as saved, not the backend it loads onto
    here), its users and items with examples of their ids, its factors and its loss."""
    path, model = trained
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{path}: ALS(factors=4, iterations=3, random_state=42)",
        "users: 60 (ids of text, e.g. 'u0', 'u1', 'u10', ...)",
        "items: 30 (ids of integers, e.g. 100, 101, 102, ...)",
        "factors: 4 per user and item, float32, 1.4 KiB in all",  # (90 x 4 x 4 bytes)
        f"training loss: 3 iterations recorded, from {model.loss_history_[0]:.6g} to "
        f"{model.loss_history_[-1]:.6g}"]
    made = tmp_path / "made.npz"
    ALS.from_factors(np.ones((2000, 64)), np.ones((1000, 64)), dtype=np.float64,
                     regularization=0.5, backend="cpu").save(made)
    assert main(["info", str(made)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{made}: ALS(regularization=0.5, dtype=")
    assert lines[1:] == [
        "users: 2,000 (no ids: its factor rows are its ids)",
        "items: 1,000 (no ids: its factor rows are its ids)",
        "factors: 64 per user and item, float64, 1.5 MiB in all",  # (1,536,000 bytes)
        "training loss: none recorded (fitted with calculate_training_loss=False, or made of "
        "factors)"]
    assert main(["info", str(path), "--compile"]) == 2
    assert "--compile builds the kernels here: give it without a model file" in \
        capsys.readouterr().err
    assert main(["info", str(tmp_path / "none.npz")]) == 2
    assert "no model file at" in capsys.readouterr().err


def test_info_reports_versions_backends_and_builds_kernels(monkeypatch, capsys):
    from gpu_als.backends import _kernels, gpu

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no device (test)")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu-als ") and "numpy " in out and "CPU: " in out
    assert "GPU: not usable: no device (test)" in out
    # the optional packages, each with its version or "-" (not those of the first line)
    from gpu_als.benchmark import installed_version, versions

    optional = re.search(r"^optional packages: (.*)$", out, re.M)[1].split(", ")
    assert [entry.split()[0] for entry in optional] == [
        name for name in ("cupy", "pandas", "pyarrow", "fsspec", "polars", "matplotlib",
                          "dask", "nvtx", "implicit", "scikit-learn")
        if name not in versions()]
    assert "pandas" in out.splitlines()[1]
    assert f"pandas {installed_version('pandas') or '-'}" in optional
    assert "backend='auto' uses the CPU backend here" in out
    # each BLAS/OpenMP pool threadpoolctl finds, its version where it has one
    from gpu_als.backends import cpu

    for pools, said in (([{"internal_api": "openblas", "version": "0.3.30", "num_threads": 2},
                          {"internal_api": "openmp", "version": None, "num_threads": 4}],
                         "openblas 0.3.30 (2 threads), openmp (4 threads)"),
                        ([], "none found")):
        monkeypatch.setattr(cpu, "_thread_pools",
                            lambda pools=pools: type("Pools", (), {"info": lambda _: pools})())
        assert main(["info"]) == 0
        assert re.search(rf"^CPU: .* threads; BLAS/OpenMP: {re.escape(said)}$",
                         capsys.readouterr().out, re.M)
    # a device CuPy sees, whose details cannot be read (here: no CuPy): said, and used
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: None)
    monkeypatch.setattr(gpu, "GPUBackend", lambda: _raise(RuntimeError("driver too old")))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "GPU: usable, but its details could not be read: RuntimeError: driver too old\n" \
           "backend='auto' uses the GPU backend here\n" in out
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no device (test)")
    # --compile: every listed specialisation through NVRTC (one file here, for time)
    monkeypatch.setattr(_kernels, "SPECIALISATIONS",
                        {"loss.cu": _kernels.SPECIALISATIONS["loss.cu"]})
    try:
        _kernels._nvrtc_library()
    except ImportError:
        assert main(["info", "--compile"]) == 1
        assert "cannot compile here" in capsys.readouterr().out
        return
    assert main(["info", "--compile"]) == 0
    out = capsys.readouterr().out
    for cuda in _kernels.nvrtc_libraries():
        assert f"sm_75, sm_80, sm_90, sm_100 with NVRTC {_kernels.nvrtc_version(cuda)}" in out
    assert "\nloss.cu: 4 specialisations built for sm_75, sm_80, sm_90" in out
    monkeypatch.setattr(_kernels, "nvrtc_compile", lambda file, arch, cuda:
                        {"ok": False, "log": "loss.cu(3): error: oops"})
    assert main(["info", "--compile"]) == 1
    first = _kernels.nvrtc_version(min(_kernels.nvrtc_libraries()))
    assert (f"loss.cu: FAILED\nNVRTC {first}, sm_75:\nloss.cu(3): error: oops"
            in capsys.readouterr().out)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_evaluate_min_value_keeps_only_strong_test_interactions(csv_file, capsys, feedback):
    """--min-value: the ranking metrics (and AUC) count only the held-out values at or above
    it as relevant; explicit feedback's RMSE still scores every held-out rating."""
    pd = pytest.importorskip("pandas")
    from gpu_als.data import from_dataframe
    from gpu_als.evaluation import auc, ranking_metrics, train_test_split

    matrix, _, _ = from_dataframe(pd.read_csv(csv_file))
    threshold = float(np.median(matrix.data))
    train, test = train_test_split(matrix, test_fraction=0.2, random_state=42)
    strong = test.multiply(test >= threshold).tocsr()
    assert 0 < strong.nnz < test.nnz
    params = ["--factors", "3", "--iterations", "2", "--regularization", "0.1"]
    outs = []
    for extra in ([], ["--min-value", str(threshold)]):
        assert main(["evaluate", str(csv_file), *params, "--feedback", feedback,
                     "--backend", "cpu", *extra]) == 0
        outs.append(capsys.readouterr().out)
    assert f"/ {test.nnz} test interactions (20% of each user's, seed 42); trained" in outs[0]
    assert (f"/ {test.nnz} test interactions (20% of each user's, seed 42; {strong.nnz} of "
            f"them >= {threshold:g} count as relevant); trained") in outs[1]
    model = ALS(factors=3, iterations=2, regularization=0.1, feedback=feedback,
                backend="cpu", random_state=42, show_progress=False).fit(train)
    for out, relevant in zip(outs, (test, strong)):
        metrics = {**ranking_metrics(model, train, relevant, K=10, show_progress=False),
                   "auc": auc(model, train, relevant)}
        assert f"{'ALS':<12}" + "".join(f"{metrics[key]:>11.4f}" for key in (
            "precision", "recall", "ndcg", "map", "auc")) + "\n" in out
    rmse = [line for out in outs for line in out.splitlines() if line.startswith("RMSE")]
    assert len(rmse) == (2 if feedback == "explicit" else 0) and len(set(rmse)) <= 1
    # a bound at or below 0 keeps every stored entry, never the unstored ones (a sparse
    # comparison `>= 0` is True for all of them: a dense matrix of users x items)
    for bound in ("0", "-1"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", sp.SparseEfficiencyWarning)
            assert main(["evaluate", str(csv_file), *params, "--feedback", feedback,
                         "--backend", "cpu", "--min-value", bound]) == 0
        assert (f"/ {test.nnz} test interactions (20% of each user's, seed 42; {test.nnz} "
                f"of them >= {bound} count as relevant)") in capsys.readouterr().out
    assert main(["evaluate", str(csv_file), "--min-value", "nan"]) == 2
    assert "--min-value must be a finite number, got nan" in capsys.readouterr().err
    # nothing left to test: refused before training, not after
    assert main(["evaluate", str(csv_file), "--min-value", "1e9", "--backend", "cpu"]) == 2
    assert capsys.readouterr() == ("", "gpu-als evaluate: error: no held-out interaction has "
                                       "a value >= --min-value 1e+09: nothing to test\n")
    singles = csv_file.with_name("singles.csv")
    singles.write_text("user,item\na,1\nb,2\n")
    assert main(["evaluate", str(singles), "--backend", "cpu"]) == 2
    assert capsys.readouterr() == ("", f"gpu-als evaluate: error: {singles}: no user has 2 or "
                                       f"more interactions, so there is nothing to hold out "
                                       f"for testing\n")


def test_demo_into_a_file_is_refused_before_any_work(tmp_path, capsys):
    """(It trained and ranked first, then failed to make the folder: "File exists".)"""
    (tmp_path / "taken").write_text("mine")
    assert main(["demo", "--output", str(tmp_path / "taken")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"gpu-als demo: error: --output {tmp_path / 'taken'} is a "
                                 f"file: the demo writes its charts into a folder\n")
    assert (tmp_path / "taken").read_text() == "mine"


def test_demo_with_an_empty_output_is_refused_before_any_work(tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the charts went into the working folder)
    assert main(["demo", "--output", ""]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("gpu-als demo: error: --output is empty: give a folder for "
                                 "the charts\n")
    assert list(tmp_path.iterdir()) == []


def test_demo_at_one_factor_draws_the_loss_and_says_why_not_the_pca(tmp_path, capsys,
                                                                    monkeypatch):
    """(The PCA's "needs at least 2 columns" ended it with exit status 2, after the
    results.)"""
    pytest.importorskip("matplotlib")
    from gpu_als import datasets

    def unavailable(*args, **kwargs):  # (the synthetic set: faster, and the same path)
        raise FileNotFoundError("MovieLens 100K is not available locally (test)")

    monkeypatch.setattr(datasets, "load_movielens_100k", unavailable)
    assert main(["demo", "--backend", "cpu", "--iterations", "2", "--factors", "1",
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Recall@10" in out and out.endswith(
        f"\nPlot: {tmp_path / 'loss.png'} (training loss); no PCA of the item factors: "
        f"--factors 1 has one component, and the chart shows two\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def test_demo_without_movielens_runs_on_synthetic_data(tmp_path, monkeypatch, capsys):
    """Offline and without a copy (`make demo` on a fresh machine): it says so and goes on."""
    from gpu_als import datasets

    def unavailable(*args, **kwargs):
        raise FileNotFoundError("MovieLens 100K is not available locally (test)")

    monkeypatch.setattr(datasets, "load_movielens_100k", unavailable)
    assert main(["demo", "--backend", "cpu", "--iterations", "2", "--factors", "8",
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MovieLens 100K is not available locally (test)\nRunning on "
                          "synthetic power-law data instead")
    assert "Recall@10" in out and "Under this protocol the implicit library" not in out


def test_explain_splits_each_score_as_the_model_does(trained, csv_file, capsys):
    pd = pytest.importorskip("pandas")
    from gpu_als.data import from_dataframe

    path, model = trained
    matrix, users, items = from_dataframe(pd.read_csv(csv_file))
    u = row_of(users, "u3")
    assert main(["explain", str(path), str(csv_file), "--user", "u3", "--items", "105",
                 "101", "105", "--N", "2", "--backend", "cpu"]) == 0  # (each item once)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "user,item,score,because_item,contribution" and len(lines) == 5
    assert err == (f"4 contributions (up to 2 per item) for 2 items and user 'u3', from "
                   f"{matrix[u].nnz} interactions with the model's items, to standard "
                   f"output\n")
    for item, rows in ((105, lines[1:3]), (101, lines[3:5])):
        score, top, _ = model.explain(u, matrix, row_of(items, item), N=2)
        for line, (other, contribution) in zip(rows, top):
            user, shown, shown_score, because, value = line.split(",")
            assert (user, int(shown), int(because)) == ("u3", item, items[other])
            assert float(shown_score) == pytest.approx(score, rel=1e-5)
            assert float(value) == pytest.approx(contribution, rel=1e-5)
    assert main(["explain", str(path), str(csv_file), "--user", "u3", "--item", "101",
                 "--N", "2", "--backend", "cpu"]) == 0  # --item: --items (not ambiguous)
    out, err = capsys.readouterr()
    assert out.splitlines() == lines[:1] + lines[3:5]
    assert err.startswith("2 contributions (up to 2 per item) for 1 item and user 'u3'")
    assert main(["explain", str(path), str(csv_file), "--user", "nobody", "--items", "101",
                 "--backend", "cpu"]) == 2
    assert "no interactions of user 'nobody'" in capsys.readouterr().err
    first = str(model.item_ids_[0])  # (at row 0: the model has it)
    assert main(["explain", str(path), str(csv_file), "--user", "u3", "--items", first,
                 "7777", "--backend", "cpu"]) == 2
    assert "the model has no item '7777'\n" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    """`gpu-als similar model.npz | head -2`: the reader leaves early."""
    import subprocess
    import sys

    R = random_interactions(200, 3000, 0.01, seed=2)
    ALS(factors=4, iterations=1, backend="cpu", show_progress=False).fit(R).save(
        tmp_path / "m.npz")
    process = subprocess.Popen(
        [sys.executable, "-m", "gpu_als.cli", "similar", str(tmp_path / "m.npz"),
         "--backend", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"item,similar_item,rank,score\n"
    process.stdout.close()  # 30,000 rows are still to come: far more than a pipe buffers
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and b"Traceback" not in err, err.decode()[-2000:]


@pytest.mark.parametrize("command", [
    ["train", "{csv}", "--output", "{missing}/m.npz"],
    ["tune", "{csv}", "--trials", "{missing}/trials.csv"],
    ["tune", "{csv}", "--plot", "{missing}/tune.png"],
    ["recommend", "{model}", "{csv}", "--output", "{missing}/recs.csv"],
    ["fold-in", "{model}", "{csv}", "--output", "{missing}/m.npz"],
])
@pytest.mark.parametrize("wrong", ["a missing folder", "a folder", "empty"])
def test_an_output_in_a_missing_folder_is_refused_before_any_work(command, csv_file,
                                                                  tmp_path, capsys, wrong):
    """(Or an output that is a folder itself: the file could not be written there either;
    or an empty name, which read as the working folder: "--output  is a folder".)"""
    missing = tmp_path / "no" / "such"
    model = tmp_path / "m.npz"
    assert main(["train", str(csv_file), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(model)]) == 0
    capsys.readouterr()
    argv = [a.format(csv=csv_file, missing=missing, model=model) for a in command]
    if wrong != "a missing folder":
        argv = [(str(tmp_path) if wrong == "a folder" else "") if a.startswith(str(missing))
                else a for a in argv]
    try:
        assert main(argv + ["--backend", "cpu"]) == 2
    except SystemExit as exit_info:  # (an argparse type's refusal)
        assert exit_info.code == 2
    out, err = capsys.readouterr()
    if wrong == "a folder":
        assert f" {tmp_path} is a folder: give a file name" in err
    elif wrong == "empty":
        assert re.search(r"error: (argument (-o/)?)?--(output|trials|plot):? is empty: give a "
                         r"file name$", err.strip()), err
    else:
        assert f"there is no folder {missing}" in err
    assert out == ""  # nothing was trained or ranked


def test_an_operating_system_error_is_one_line(csv_file, tmp_path, capsys, monkeypatch):
    """A folder that refuses the model file (read-only; root, who runs CI, may write to
    any, hence the stand-in): an error line without "[Errno 13]", no traceback."""
    from gpu_als import _files

    def refuse(name, mode):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(_files, "open", refuse, raising=False)
    assert main(["train", str(csv_file), "--factors", "2", "--iterations", "1", "--backend",
                 "cpu", "--output", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert err == (f"gpu-als train: error: cannot save the model to {tmp_path / 'm.npz'}: "
                   f"Permission denied\n")
    assert main(["recommend", str(tmp_path / "m.npz"), str(csv_file)]) == 2  # not written
    assert capsys.readouterr().err == f"gpu-als recommend: error: no model file at " \
                                      f"{tmp_path / 'm.npz'}\n"


def test_too_little_memory_is_one_line(csv_file, tmp_path, capsys, monkeypatch):
    """A fit beyond the memory there is (gpu_als.data.check_memory's MemoryError, as
    CuPy's OutOfMemoryError is one): an error line and exit status 2, no traceback."""
    from gpu_als import data

    monkeypatch.setattr(data, "available_memory", lambda: 2**20)  # 1 MiB
    assert main(["train", str(csv_file), "--factors", "400", "--iterations", "1",
                 "--backend", "cpu", "--output", str(tmp_path / "m.npz")]) == 2
    assert re.fullmatch(r"gpu-als train: error: a fit of 60 users x 30 items at "
                        r"factors=400 needs at least \S+ MiB of memory and 1 MiB is "
                        r"available[^\n]*\n", capsys.readouterr().err)
    assert not (tmp_path / "m.npz").exists()


def test_a_model_without_ids_serves_rows_by_number(tmp_path, capsys):
    """A model saved from a matrix (no id maps): users and items are row numbers, the
    first of each included; a new user with a single interaction is folded in; similar
    with a large --N lists every other item; explain takes item 0."""
    pd = pytest.importorskip("pandas")
    R = random_interactions(20, 12, 0.3, seed=1)
    model = ALS(factors=3, iterations=2, backend="cpu", random_state=0,
                show_progress=False).fit(R)
    assert model.user_ids_ is None and model.item_ids_ is None
    path = tmp_path / "plain.npz"
    model.save(path)
    pd.DataFrame({"user": [0, 0, 25], "item": [1, 2, 0]}).to_csv(tmp_path / "q.csv",
                                                                  index=False)
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(path), str(tmp_path / "q.csv"), "--N", "3",
                 "--backend", "cpu", "--output", str(out)]) == 0
    assert "1 user known to the model; 1 folded in" in capsys.readouterr().err
    recs = read_ranking(out)
    first = recs[recs.user == "0"]
    user_0 = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 2])), shape=(1, 12))  # its file rows
    ids, scores = model.recommend(0, user_0, N=3)
    np.testing.assert_array_equal(first["item"], ids)
    np.testing.assert_allclose(first["score"], scores, rtol=1e-5)
    new = recs[recs.user == "25"]
    ids, scores = model.recommend(0, sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 12)), N=3,
                                  recalculate_user=True)
    np.testing.assert_array_equal(new["item"], ids)
    np.testing.assert_allclose(new["score"], scores, rtol=1e-5)
    assert main(["similar", str(path), "--items", "0", "--N", "1000", "--backend", "cpu",
                 "--output", str(out)]) == 0
    similar = read_ranking(out)
    assert sorted(similar["similar_item"]) == list(range(1, 12))
    assert capsys.readouterr().err == f"11 similar items (cosine of the factors, 11 per item) " \
                                      f"to {out}\n"
    assert main(["explain", str(path), str(tmp_path / "q.csv"), "--user", "0", "--items",
                 "0", "--backend", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    score, top, _ = model.explain(0, user_0, 0, N=10)
    assert [int(line.split(",")[3]) for line in lines[1:]] == [i for i, _ in top]
    assert float(lines[1].split(",")[2]) == pytest.approx(score, rel=1e-5)


def test_command_line_defaults_are_the_library_defaults():
    """`gpu-als train`'s hyperparameters, `tune`'s search settings and `evaluate`'s split
    and cut-off default to what the library's functions default to."""
    import inspect

    from gpu_als.cli import build_parser, held_out_fraction, make_model, model_params
    from gpu_als.evaluation import ranking_metrics, train_test_split
    from gpu_als.tune import tune

    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()}

    parser = build_parser()
    ours, library = make_model(parser.parse_args(["train", "f.csv"])).get_params(), \
        ALS().get_params()
    for name in ("factors", "regularization", "alpha", "iterations", "feedback",
                 "confidence", "epsilon", "solver", "cg_steps", "backend"):
        assert ours[name] == library[name], name
    assert np.dtype(ours["dtype"]) == np.dtype(library["dtype"])
    args, searched = parser.parse_args(["tune", "f.csv"]), defaults(tune)
    for name in ("metric", "K", "validation_fraction", "min_iterations", "reduction_factor"):
        assert getattr(args, name) == searched[name], name
    assert args.iterations == 20  # tune's base iterations (the reference settings)
    # the values ALS gets are plain int, float and str, not the options' marked defaults
    assert {type(v) for v in model_params(parser.parse_args(["train", "f.csv"])).values()} \
        == {int, float, str}
    args = parser.parse_args(["evaluate", "f.csv"])
    assert args.K == [defaults(ranking_metrics)["K"]]  # (a list: --K 5 10 20 takes several)
    assert held_out_fraction(args) == defaults(train_test_split)["test_fraction"]


@pytest.mark.parametrize("backend", [pytest.param("gpu", marks=needs_gpu)])
def test_every_model_command_answers_on_the_gpu_as_on_the_cpu(backend, csv_file, tmp_path,
                                                              capsys):
    """train, recommend, similar, explain, fold-in and evaluate with ``--backend gpu``:
    the CPU's results (the same ids in the same order, scores to float32 accuracy)."""
    pd = pytest.importorskip("pandas")
    query = tmp_path / "q.csv"
    pd.DataFrame({"user": ["u3", "u3", "new", "new"], "item": [100, 101, 102, 103],
                  "value": [1, 2, 3, 1]}).to_csv(query, index=False)
    outputs = {}
    for where in ("cpu", backend):
        model = tmp_path / f"{where}.npz"
        runs = {
            "train": ["train", str(csv_file), "--factors", "4", "--iterations", "3",
                      "--output", str(model)],
            "recommend": ["recommend", str(model), str(query), "--N", "4"],
            "similar": ["similar", str(model), "--items", "105", "101", "--N", "3"],
            "explain": ["explain", str(model), str(csv_file), "--user", "u3", "--items",
                        "105", "--N", "2"],
            "fold-in": ["fold-in", str(model), str(query), "--output",
                        str(tmp_path / f"{where}-grown.npz")],
            "evaluate": ["evaluate", str(csv_file), "--factors", "4", "--iterations", "2",
                         "--K", "5"],
        }
        for name, argv in runs.items():
            assert main([*argv, "--backend", where]) == 0, name
            outputs[where, name] = capsys.readouterr().out
        outputs[where, "factors"] = ALS.load(model, backend="cpu").user_factors_
        outputs[where, "grown"] = ALS.load(tmp_path / f"{where}-grown.npz",
                                           backend="cpu").user_factors_
    for name in ("factors", "grown"):
        np.testing.assert_allclose(outputs[backend, name], outputs["cpu", name],
                                   rtol=1e-3, atol=1e-4)
    numbers = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
    timed = re.compile(r"trained on '\w+' in [\d.]+ s")  # where and how long: differ
    for name in ("recommend", "similar", "explain", "evaluate"):
        cpu, gpu = (timed.sub("", outputs[where, name]) for where in ("cpu", backend))
        assert numbers.sub("#", gpu) == numbers.sub("#", cpu), name  # ids, order, words
        np.testing.assert_allclose([float(v) for v in numbers.findall(gpu)],
                                   [float(v) for v in numbers.findall(cpu)],
                                   rtol=1e-3, atol=1e-4, err_msg=name)


@pytest.fixture
def timed_csv(tmp_path):
    """Interactions with a column of dates: 40 users, 25 items, times over 30 days."""
    pd = pytest.importorskip("pandas")
    n = 600
    df = timed_interactions(n, 40, 25, seed=4)
    df.loc[n - 1, ["item", "when"]] = 99, pd.Timestamp("2024-01-31")  # an item new in test
    path = tmp_path / "timed.csv"
    df.to_csv(path, index=False)
    return path, df


@pytest.mark.parametrize("split", ["share", "latest", "cutoff"])
def test_evaluate_holds_out_by_time(timed_csv, capsys, split):
    """--time-col: the file split by temporal_split (each user's latest --test-fraction,
    or --latest K, or all at or after --cutoff), the test rows of items or users new to
    train and the pairs already in train left out and counted; the metrics are those of a
    model fitted on the train part."""
    from gpu_als.evaluation import ranking_metrics, temporal_split

    path, df = timed_csv
    extra, kwargs, held = {
        "share": (["--test-fraction", "0.25"], {"test_fraction": 0.25},
                  "each user's latest 25% by 'when'"),
        "latest": (["--latest", "4"], {"K": 4}, "each user's latest 4 interactions by 'when'"),
        "cutoff": (["--cutoff", "2024-01-24"], {"cutoff": "2024-01-24"},
                   "those at or after 2024-01-24 by 'when'")}[split]
    assert main(["evaluate", str(path), "--time-col", "when", "--factors", "3",
                 "--iterations", "2", "--backend", "cpu", "--no-auc", *extra]) == 0
    out = capsys.readouterr().out
    train_df, test_df = temporal_split(df, "when", **kwargs)
    train, users, items = from_dataframe(train_df)
    test, _, _ = from_dataframe(test_df, user_ids=users, item_ids=items, drop_unknown=True)
    new = int((~test_df["user"].isin(users) | ~test_df["item"].isin(items)).sum())
    shared = test.multiply(train != 0).tocsr()
    shared.eliminate_zeros()
    test = test - test.multiply(train != 0)
    test.eliminate_zeros()
    assert new == 1 and shared.nnz > 1  # the item 99
    assert (f"{train.shape[0]} users x {train.shape[1]} items; {train.nnz} train / {test.nnz} "
            f"test interactions ({held}; 1 interaction of new users or items and {shared.nnz} "
            f"pairs already in train left out); trained") in out
    model = ALS(factors=3, iterations=2, backend="cpu", random_state=42,
                show_progress=False).fit(train)
    metrics = ranking_metrics(model, train, test, K=10, show_progress=False)
    assert f"{'ALS':<12}" + "".join(f"{metrics[key]:>11.4f}" for key in (
        "precision", "recall", "ndcg", "map")) + "\n" in out


def test_evaluate_scores_a_given_test_file(timed_csv, tmp_path, capsys):
    """--test FILE: a split made beforehand. The model fits on the whole of FILE; the
    test file's rows of users or items new to it, and its pairs already in FILE, are left
    out and counted; the metrics are those of that model on the rest."""
    from gpu_als.evaluation import ranking_metrics

    path, df = timed_csv
    early = df["when"] < "2024-01-22"
    df[early].to_csv(tmp_path / "train.csv", index=False)
    df[~early].to_csv(tmp_path / "test.csv", index=False)
    assert main(["evaluate", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
                 "--factors", "3", "--iterations", "2", "--backend", "cpu", "--no-auc"]) == 0
    out = capsys.readouterr().out
    train, users, items = from_dataframe(df[early].drop(columns="when"))
    test, _, _ = from_dataframe(df[~early].drop(columns="when"), user_ids=users,
                                item_ids=items, drop_unknown=True)
    later = df[~early]
    new = int((~later["user"].isin(users) | ~later["item"].isin(items)).sum())
    shared = test.multiply(train != 0).tocsr()
    shared.eliminate_zeros()
    test = test - test.multiply(train != 0)
    test.eliminate_zeros()
    assert new >= 1 and shared.nnz > 1
    assert (f"{train.shape[0]} users x {train.shape[1]} items; {train.nnz} train / {test.nnz} "
            f"test interactions (the rows of {tmp_path / 'test.csv'}; {new} interaction"
            f"{'s' if new > 1 else ''} of new users or items and {shared.nnz} pairs already "
            f"in train left out); trained") in out
    model = ALS(factors=3, iterations=2, backend="cpu", random_state=42,
                show_progress=False).fit(train)
    metrics = ranking_metrics(model, train, test, K=10, show_progress=False)
    assert f"{'ALS':<12}" + "".join(f"{metrics[key]:>11.4f}" for key in (
        "precision", "recall", "ndcg", "map")) + "\n" in out

    common = ["evaluate", str(tmp_path / "train.csv"), "--backend", "cpu", "--iterations", "1"]
    for extra, says in (
            (["--test", str(tmp_path / "test.csv"), "--test-fraction", "0.1"],
             "--test-fraction and --test: give one way to hold out"),
            (["--test", str(tmp_path / "test.csv"), "--time-col", "when"],
             "--test and --time-col: the test file is the held-out part"),
            (["--test", str(tmp_path / "nowhere.csv")], "nowhere.csv")):
        assert main(common + extra) == 2
        assert says in capsys.readouterr().err
    unknown = df[~early].assign(user=df[~early]["user"] + 1000)
    unknown.to_csv(tmp_path / "strangers.csv", index=False)
    assert main(common + ["--test", str(tmp_path / "strangers.csv")]) == 2
    assert (f"every row of {tmp_path / 'strangers.csv'} names a user or item not in the "
            f"train part, or a pair already in it: nothing to test") in capsys.readouterr().err


def test_evaluate_scores_movielens_u1_test(movielens, capsys):
    """MovieLens' own split, u1.base and u1.test: the README's command and numbers."""
    assert main(["evaluate", str(movielens.path / "u1.base"), "--test",
                 str(movielens.path / "u1.test"), "--no-header", "--min-value", "4",
                 "--factors", "32", "--regularization", "0.1", "--iterations", "15",
                 "--backend", "cpu", "--no-auc"]) == 0
    out = capsys.readouterr().out
    assert ("943 users x 1,650 items; 80,000 train / 19,968 test interactions (the rows of "
            f"{movielens.path / 'u1.test'}; 32 interactions of new users or items left out; "
            "11,227 of them >= 4 count as relevant)") in out
    recall = {line.split()[0]: float(line.split()[2]) for line in out.splitlines()
              if line.split()[:1] in (["ALS"], ["Popularity"])}
    assert recall["ALS"] == pytest.approx(0.1757, abs=0.003)
    assert recall["Popularity"] == pytest.approx(0.1180, abs=0.0005)


def test_evaluate_by_time_reads_movielens_timestamps(movielens, capsys):
    """u.data without a header line: its fourth column is --time-col's; a --cutoff date
    for times in seconds is refused with the number it means."""
    u_data = str(movielens.path / "u.data")
    common = ["evaluate", u_data, "--no-header", "--time-col", "timestamp", "--factors", "4",
              "--iterations", "1", "--backend", "cpu", "--no-auc"]
    assert main(common) == 0
    assert ("943 users x 1,613 items; 80,000 train / 19,914 test interactions (each user's "
            "latest 20% by 'timestamp'; 86 interactions of new users or items left out)"
            in capsys.readouterr().out)
    assert main(common + ["--cutoff", "1998-03-01"]) == 2
    assert capsys.readouterr().err == (
        "gpu-als evaluate: error: --cutoff 1998-03-01: column 'timestamp' holds numbers, so "
        "give one (if they are Unix seconds, 1998-03-01 is 888710400)\n")
    assert main(common + ["--cutoff", "888710400"]) == 0
    assert ("736 users x 1,608 items; 77,985 train / 3,715 test interactions (those at or after "
            "888710400 by 'timestamp'; 18,300 interactions of new users or items left out)"
            in capsys.readouterr().out)


def test_evaluate_by_time_refuses_what_it_cannot_split(timed_csv, tmp_path, capsys):
    path, _ = timed_csv
    common = ["evaluate", str(path), "--backend", "cpu", "--iterations", "1"]
    cases = [
        (["--cutoff", "2024-01-24"], "--cutoff holds out by time: name the column of the "
                                     "times with --time-col"),
        (["--latest", "1"], "--latest holds out by time: name the column of the times with "
                            "--time-col"),
        (["--time-col", "when", "--cutoff", "2024-01-24", "--test-fraction", "0.1"],
         "--test-fraction and --cutoff: give one way to hold out (a share of each user's "
         "interactions, each user's latest K, all at or after a time, or a test file)"),
        (["--time-col", "when", "--latest", "1", "--test-fraction", "0.1"],
         "--test-fraction and --latest: give one way to hold out"),
        (["--time-col", "when", "--cutoff", "2025-01-01"],
         "--cutoff 2025-01-01 leaves the test part empty: column 'when' runs from "),
        (["--time-col", "when", "--cutoff", "soon"], "--cutoff soon is not a time"),
        (["--time-col", "time"], f"{path} has no column 'time' for --time-col; its columns "
                                 f"are ['user', 'item', 'value', 'when']"),
        (["--time-col", "value"], "--time-col and --value-col (by default 'value') both "
                                  "name 'value': name the column of the times"),
        (["--time-col", "user"], "--time-col and --user-col (by default 'user') both name "
                                 "'user'"),
    ]
    for extra, message in cases:
        assert main(common + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)
    text = tmp_path / "text.csv"
    text.write_text("user,item,when\na,1,soon\na,2,later\n")
    assert main(["evaluate", str(text), "--time-col", "when"]) == 2
    assert "--time-col when: its values are neither numbers nor dates and times" in \
        capsys.readouterr().err
    three = tmp_path / "three.tsv"
    three.write_text("1\t2\t3\n1\t3\t4\n")
    assert main(["evaluate", str(three), "--no-header", "--time-col", "t"]) == 2
    assert (f"{three} has no column 't' (with --no-header, the fourth) for --time-col"
            in capsys.readouterr().err)
    late = tmp_path / "late.csv"  # what comes after the cutoff is all new
    late.write_text("user,item,t\na,1,1\nb,2,2\n")
    assert main(["evaluate", str(late), "--time-col", "t", "--cutoff", "2"]) == 2
    assert "every held-out row names a user or item not in the train part, or a pair " \
           "already in it: nothing to test" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_evaluate_by_time_keeps_the_time_column_of_a_file_without_values(timed_csv, tmp_path,
                                                                          capsys, suffix):
    """A file without a value column counts each row as 1 and leaves its other columns
    out, with a warning that names them (one of numbers may hold the values): not the
    --time-col one, which is read."""
    pytest.importorskip("pyarrow")
    _, df = timed_csv
    df = df.drop(columns="value").assign(note=2.5)
    path = tmp_path / f"counts.{suffix}"
    df.to_csv(path, index=False) if suffix == "csv" else df.to_parquet(path)
    assert main(["evaluate", str(path), "--time-col", "when", "--factors", "2",
                 "--iterations", "1", "--backend", "cpu", "--no-auc"]) == 0
    out, err = capsys.readouterr()
    assert err == ("gpu-als evaluate: warning: no column 'value': every row counts 1, and "
                   "column(s) ['note'] are not used; name the values' column with --value-col "
                   "(e.g. --value-col note)\n")
    assert "test interactions (each user's latest 20% by 'when'; 1 interaction of new users " \
           "or items and" in out


def test_tune_validates_on_each_users_latest_interactions_by_time(timed_csv, tmp_path,
                                                                  capsys):
    """tune --time-col: the trials are scored on each user's latest --validation-fraction
    (as tune(..., validation=) scores them on those rows), and the best model, refitted on
    the whole file, has its ids."""
    pd = pytest.importorskip("pandas")
    from gpu_als.evaluation import temporal_split
    from gpu_als.tune import tune

    path, df = timed_csv
    trials, saved = tmp_path / "trials.csv", tmp_path / "best.npz"
    assert main(["tune", str(path), "--time-col", "when", "--validation-fraction", "0.3",
                 "--grid", "factors=2,3", "--grid", "regularization=0.1", "--iterations", "3",
                 "--no-halving", "--backend", "cpu", "--trials", str(trials), "-o",
                 str(saved)]) == 0
    out = capsys.readouterr().out
    earlier, later = temporal_split(df, "when", test_fraction=0.3)
    _, users, items = from_dataframe(df.drop(columns="when"))
    fit_part, validation = (from_dataframe(part.drop(columns="when"), user_ids=users,
                                           item_ids=items).matrix for part in (earlier, later))
    assert out.startswith(f"validating on each user's latest 30% by 'when': {len(later)} of "
                          f"the {len(df)} rows (1 interaction of new users or items and ")
    with pytest.warns(UserWarning, match="1 of users or items without interactions"):
        expected = tune(fit_part, {"factors": [2, 3], "regularization": [0.1]},
                        validation=validation, halving=False, random_state=42,
                        base_params={"iterations": 3, "backend": "cpu"}, show_progress=False)
    np.testing.assert_allclose(pd.read_csv(trials)["score"],
                               [t["score"] for t in expected.trials], rtol=1e-6)
    model = ALS.load(saved)
    np.testing.assert_array_equal(model.user_ids_, users)
    np.testing.assert_array_equal(model.item_ids_, items)
    np.testing.assert_allclose(model.item_factors_, expected.model.item_factors_, rtol=1e-5)
    once = tmp_path / "once.csv"  # no pair twice: none in both parts
    df.drop_duplicates(["user", "item"], keep="last").to_csv(once, index=False)
    assert main(["tune", str(once), "--time-col", "when", "--grid", "factors=2",
                 "--iterations", "1", "--backend", "cpu", "--trials", str(trials)]) == 0
    assert "rows (1 interaction of new users or items not scored)\n" in \
        capsys.readouterr().out


def test_train_with_early_stopping_validates_on_the_latest_interactions_by_time(
        timed_csv, tmp_path, capsys):
    """train --early-stopping --time-col: EarlyStopping on each user's latest
    --validation-fraction (the rows it can score) picks the count, then the model trains on
    every interaction; --time-col without --early-stopping is refused."""
    from gpu_als.evaluation import EarlyStopping, scorable_part, temporal_split

    path, df = timed_csv
    out = tmp_path / "m.npz"
    options = ["--factors", "4", "--regularization", "0.01", "--iterations", "25",
               "--backend", "cpu", "--seed", "5"]
    assert main(["train", str(path), *options, "--early-stopping", "2", "--time-col", "when",
                 "--validation-fraction", "0.25", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    earlier, later = temporal_split(df, "when", test_fraction=0.25)
    R, users, items = from_dataframe(df.drop(columns="when"))
    fit_part, validation = (from_dataframe(part.drop(columns="when"), user_ids=users,
                                           item_ids=items).matrix for part in (earlier, later))
    scored, new, shared = scorable_part(fit_part, validation)
    assert new == 1 and shared > 0
    assert said.startswith(f"validating on each user's latest 25% by 'when': {len(later)} of "
                           f"the {len(df)} rows (1 interaction of new users or items and "
                           f"{shared} pairs already in the rest not scored)\n")
    probe = ALS(factors=4, regularization=0.01, iterations=25, backend="cpu", random_state=5,
                show_progress=False)
    stop = EarlyStopping(probe, fit_part, scored, metric="recall", K=10, patience=2)
    probe.fit(fit_part, callback=stop)
    best = stop.best_iteration + 1
    assert (f"early stopping: recall@10 on each user's latest 25% by 'when' was best, "
            f"{stop.best_score:.4f}, after {best} iteration(s)") in said
    model = ALS.load(out, backend="cpu")
    whole = ALS(factors=4, regularization=0.01, iterations=best, backend="cpu",
                random_state=5, show_progress=False).fit(R)
    np.testing.assert_allclose(model.user_factors_, whole.user_factors_, rtol=1e-5, atol=1e-7)
    assert f"{R.shape[0]} users x {R.shape[1]} items, {R.nnz} interactions; trained" in said
    assert main(["train", str(path), "--time-col", "when", "--output", str(out)]) == 2
    assert "--time-col chooses --early-stopping's validation interactions (each user's " \
           "latest): give --early-stopping too" in capsys.readouterr().err
    repeats = tmp_path / "repeats.csv"  # each user's latest row repeats an earlier pair
    repeats.write_text("user,item,t\na,1,1\na,2,2\na,1,3\nb,2,1\nb,1,2\nb,2,3\n")
    assert main(["train", str(repeats), "--time-col", "t", "--early-stopping", "1",
                 "--validation-fraction", "0.3", "--backend", "cpu", "--output",
                 str(out)]) == 2
    assert capsys.readouterr() == (
        "validating on each user's latest 30% by 't': 2 of the 6 rows (2 pairs already in "
        "the rest not scored)\n",
        "gpu-als train: error: --early-stopping: no validation interaction can be scored "
        "(each is of a new user or item, or a pair already in the rest)\n")


def test_tune_and_early_stopping_validate_on_a_given_file(timed_csv, tmp_path, capsys):
    """--validation VALIDATION_FILE (tune, and train --early-stopping): the file is the part
    to fit on and the validation file the rows to score on (those a model of the file
    cannot be asked about counted, not scored), as tune(..., validation=) and
    EarlyStopping score them; the best model, or the trained one, fits on both files."""
    pd = pytest.importorskip("pandas")
    from gpu_als.evaluation import EarlyStopping, scorable_part
    from gpu_als.tune import tune

    path, df = timed_csv
    early = df["when"] < "2024-01-22"
    first, later = df[early].drop(columns="when"), df[~early].drop(columns="when")
    first.to_csv(tmp_path / "fit.csv", index=False)
    later.to_csv(tmp_path / "valid.csv", index=False)
    R, users, items = from_dataframe(pd.concat([first, later]))
    fit_part, validation = (from_dataframe(part, user_ids=users, item_ids=items).matrix
                            for part in (first, later))
    scored, new, shared = scorable_part(fit_part, validation)
    assert new >= 1 and shared > 1
    said = (f"validating on the rows of {tmp_path / 'valid.csv'}: {len(later)} of the "
            f"{len(df)} rows ({new} interaction{'s' if new > 1 else ''} of new users or items "
            f"and {shared} pairs already in the rest not scored)\n")

    trials, saved = tmp_path / "trials.csv", tmp_path / "best.npz"
    assert main(["tune", str(tmp_path / "fit.csv"), "--validation", str(tmp_path / "valid.csv"),
                 "--grid", "factors=2,3", "--grid", "regularization=0.1", "--iterations", "3",
                 "--no-halving", "--backend", "cpu", "--trials", str(trials), "-o",
                 str(saved)]) == 0
    assert capsys.readouterr().out.startswith(said)
    with pytest.warns(UserWarning, match="of users or items without interactions"):
        expected = tune(fit_part, {"factors": [2, 3], "regularization": [0.1]},
                        validation=validation, halving=False, random_state=42,
                        base_params={"iterations": 3, "backend": "cpu"}, show_progress=False)
    np.testing.assert_allclose(pd.read_csv(trials)["score"],
                               [t["score"] for t in expected.trials], rtol=1e-6)
    np.testing.assert_allclose(ALS.load(saved).item_factors_, expected.model.item_factors_,
                               rtol=1e-5)

    out = tmp_path / "m.npz"
    options = ["--factors", "4", "--regularization", "0.01", "--iterations", "25",
               "--backend", "cpu", "--seed", "5", "--output", str(out)]
    assert main(["train", str(tmp_path / "fit.csv"), *options, "--early-stopping", "2",
                 "--validation", str(tmp_path / "valid.csv")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(said)
    probe = ALS(factors=4, regularization=0.01, iterations=25, backend="cpu", random_state=5,
                show_progress=False)
    stop = EarlyStopping(probe, fit_part, scored, metric="recall", K=10, patience=2)
    probe.fit(fit_part, callback=stop)
    best = stop.best_iteration + 1
    assert (f"early stopping: recall@10 on the rows of {tmp_path / 'valid.csv'} was best, "
            f"{stop.best_score:.4f}, after {best} iteration(s)") in printed
    whole = ALS(factors=4, regularization=0.01, iterations=best, backend="cpu",
                random_state=5, show_progress=False).fit(R)
    np.testing.assert_allclose(ALS.load(out, backend="cpu").user_factors_,
                               whole.user_factors_, rtol=1e-5, atol=1e-7)

    for argv, says in (
            (["train", str(tmp_path / "fit.csv"), "--validation", str(tmp_path / "valid.csv")],
             "--validation holds --early-stopping's validation interactions: give "
             "--early-stopping too"),
            (["train", str(path), "--early-stopping", "2", "--validation",
              str(tmp_path / "valid.csv"), "--time-col", "when"],
             "--validation and --time-col: the validation file is the held-out part"),
            (["tune", str(path), "--validation", str(tmp_path / "valid.csv"), "--time-col",
              "when"], "--validation and --time-col")):
        assert main([*argv, "--backend", "cpu", "--output", str(out)]) == 2
        assert says in capsys.readouterr().err


def test_evaluate_by_time_reads_the_day_partitions_of_a_parquet_folder(tmp_path, capsys):
    """A Parquet folder partitioned by day (day=2024-01-03/, as Spark writes event logs):
    the partition key is --time-col's column, its text read as dates."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 30, 600), "item": rng.integers(0, 20, 600),
                       "day": rng.choice(["2024-01-01", "2024-01-02", "2024-01-03"], 600)})
    pq.write_to_dataset(pa.Table.from_pandas(df), tmp_path / "log", partition_cols=["day"])
    assert main(["evaluate", str(tmp_path / "log"), "--time-col", "day", "--cutoff",
                 "2024-01-03", "--backend", "cpu", "--iterations", "1", "--factors", "2",
                 "--no-auc"]) == 0
    earlier, later = df[df["day"] < "2024-01-03"], df[df["day"] >= "2024-01-03"]
    train, users, items = from_dataframe(earlier.drop(columns="day"))
    test, _, _ = from_dataframe(later.drop(columns="day"), user_ids=users, item_ids=items,
                                drop_unknown=True)
    shared = test.multiply(train != 0).nnz
    assert (f"{train.nnz} train / {test.nnz - shared} test interactions (those at or after "
            f"2024-01-03 by 'day'; {shared} pairs already in train left out)"
            in capsys.readouterr().out)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_event_weights_make_the_values_of_an_event_log(tmp_path, capsys, suffix):
    """--event-weights COLUMN=LABEL:WEIGHT,...: each row's value is its label's weight
    (summed over a pair's rows, as values are), rows of weight 0 are left out, and a label
    without a weight, a malformed option, --no-header and a file that has values already
    are refused."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(2)
    n = 400
    log = pd.DataFrame({"user_id": rng.integers(0, 40, n), "item_id": rng.integers(0, 30, n),
                        "event_type": rng.choice(["view", "cart", "purchase", "hover"], n),
                        "timestamp": rng.integers(0, 10**6, n)})
    path = tmp_path / f"events.{suffix}"
    log.to_csv(path, index=False) if suffix == "csv" else log.to_parquet(path)
    weights = {"view": 1.0, "cart": 3.0, "purchase": 5.0, "hover": 0.0}
    option = "event_type=" + ",".join(f"{label}:{w:g}" for label, w in weights.items())
    common = ["--user-col", "user_id", "--item-col", "item_id", "--event-weights", option]
    out = tmp_path / "m.npz"
    assert main(["train", str(path), *common, "--factors", "3", "--iterations", "2",
                 "--backend", "cpu", "--output", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # (the values are made, not counted)
    weighted = log.assign(value=log["event_type"].map(weights))
    weighted = weighted[weighted["value"] != 0]
    R, users, items = from_dataframe(weighted, "user_id", "item_id", "value")
    expected = ALS(factors=3, iterations=2, backend="cpu", random_state=42,
                   show_progress=False).fit(R, user_ids=users, item_ids=items)
    model = ALS.load(out)
    np.testing.assert_array_equal(model.item_ids_, items)
    np.testing.assert_allclose(model.item_factors_, expected.item_factors_, rtol=1e-5)
    assert main(["evaluate", str(path), *common, "--time-col", "timestamp", "--factors", "2",
                 "--iterations", "1", "--backend", "cpu", "--no-auc"]) == 0
    assert "each user's latest 20% by 'timestamp'" in capsys.readouterr().out
    for extra, message in (
            (["--event-weights", "event_type=view:1,cart:3"],
             "--event-weights gives no weight to 2 label(s) of column 'event_type': "),
            (["--event-weights", "event_type=view:0,cart:0,purchase:0,hover:0"],
             "--event-weights gives every row of"),
            ([*common, "--value-col", "timestamp"],
             "has a column 'timestamp' already: --event-weights makes the values from column "
             "'event_type'"),
            (["--event-weights", "event=view:1"],  # (named --time-col's before)
             "has no column 'event' for --event-weights; its columns are ['user_id', "
             "'item_id', 'event_type', 'timestamp']")):
        args = ["train", str(path), "--user-col", "user_id", "--item-col", "item_id",
                "--backend", "cpu", "--output", str(out), *extra]
        assert main(args) == 2, extra
        assert message in capsys.readouterr().err
    for bad, says in (("event_type", "expected COLUMN=LABEL:WEIGHT,..."),
                      ("=view:1", "expected COLUMN=LABEL:WEIGHT,..."),
                      ("event_type=view", "'view' is not LABEL:WEIGHT"),
                      ("event_type=view:x", "'view:x' is not LABEL:WEIGHT"),
                      ("event_type=a:1,a:2", "label 'a' is given twice")):
        with pytest.raises(SystemExit):
            main(["train", str(path), "--event-weights", bad])
        assert f"argument --event-weights: {says}" in capsys.readouterr().err, bad
    if suffix == "csv":
        assert main(["train", str(path), "--no-header", "--event-weights", option]) == 2
        assert "--event-weights names a column, and --no-header leaves the file's columns " \
               "unnamed" in capsys.readouterr().err


def test_info_checks_the_gpu_backend_against_the_cpu_backend(monkeypatch, capsys, trained):
    """``gpu-als info --check``: a line per case of gpu_als._selfcheck and their count;
    exit status 1 where a case disagrees, and an error where there is no GPU to check (an
    exit status of 1 there broke the command line's rule of 0 or 2, which its fuzz
    found). Here the emulated GPU backend stands in for the device, on cases small enough
    for it."""
    from gpu_als import _selfcheck
    from gpu_als.backends import gpu

    from .conftest import emulated_backend

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no device (test)")
    assert main(["info", "--check"]) == 2
    assert capsys.readouterr().err == "gpu-als info: error: --check: no GPU to check here " \
                                      "(no device (test))\n"
    assert main(["info", str(trained[0]), "--check"]) == 2
    assert "--check checks the GPU here: give it without a model file" in \
        capsys.readouterr().err
    stand_in = emulated_backend()
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: None)
    monkeypatch.setattr(gpu, "GPUBackend", lambda: stand_in)
    monkeypatch.setattr("gpu_als.cli._gpu_summary", lambda backend: "a stand-in")
    monkeypatch.setattr(_selfcheck, "CASES", (("implicit", "cholesky", 4, {}),
                                              ("explicit", "cg", 3, {}),
                                              ("implicit", "nnls", 4, {}),
                                              ("implicit", "cholesky", 4,
                                               {"scale_regularization": True})))
    monkeypatch.setattr(_selfcheck, "LONG_ROW", 40)  # (blocks of 24 entries, emulated)
    assert main(["info", "--check"]) == 0
    out = capsys.readouterr().out
    assert "check: the GPU backend's half-steps against the CPU backend's in float64 (rows " \
           "of every length, one of 40 entries):\n" in out
    assert re.search(r"\n  implicit exact k=4    float32 \d\.\de-\d\d \(limit 2e-04\)  "
                     r"float64 \d\.\de-\d\d \(limit 1e-09\)  ok\n  explicit CG    k=3    "
                     r"float64 \d\.\de-\d\d \(limit 1e-06\)  ok\n  implicit NNLS  k=4    "
                     r"float32 \d\.\de-\d\d \(limit 2e-04\)  float64 \d\.\de-\d\d \(limit "
                     r"1e-09\)  ok\n  implicit exact k=4    float32 \d\.\de-\d\d \(limit 2e-04\)  "
                     r"float64 \d\.\de-\d\d \(limit 1e-09\)  ok scale_regularization=True\n"
                     r"check: 4 of 4 cases agree "
                     r"\(\d+\.\d s, kernel builds included\)\n$", out)
    solve_rows = type(stand_in).solve_rows

    def off(self, rows, F, FtF, *, out, **kwargs):  # a kernel gone wrong: 1e-3 off
        solve_rows(self, rows, F, FtF, out=out, **kwargs)
        out += self.xp.asarray(1e-3, out.dtype)
        return out

    monkeypatch.setattr(type(stand_in), "solve_rows", off)
    assert main(["info", "--check"]) == 1
    out = capsys.readouterr().out
    assert "  FAILED scale_regularization=True\n" in out and out.endswith(")\n") and \
        "check: 0 of 4 cases agree" in out

    def nan(self, rows, F, FtF, *, out, **kwargs):  # a solve that says so by NaN
        out[...] = self.xp.nan
        return out

    monkeypatch.setattr(type(stand_in), "solve_rows", nan)
    assert main(["info", "--check"]) == 1
    assert "float32 inf (limit 2e-04)  float64 inf (limit 1e-09)  FAILED" in \
        capsys.readouterr().out

    def broken(self, rows, F, FtF, *, out, **kwargs):  # what CuPy raises of a bad kernel
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    monkeypatch.setattr(type(stand_in), "solve_rows", broken)
    assert main(["info", "--check"]) == 1  # each case said, not a traceback
    out = capsys.readouterr().out
    assert out.count("  FAILED: RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS\n") == 3
    assert "check: 0 of 4 cases agree" in out


def test_the_checks_rows_are_of_every_length_class():
    """gpu-als info --check's rows: empty, 1, 2, k - 1, k, k + 1, 2k + 3 and a long row (so
    that each of the GPU backend's paths has rows to solve), values 1 to 5, some
    negative, and a column no row has."""
    from gpu_als._selfcheck import rows_of_every_length

    R = rows_of_every_length(8, long_row=100)
    assert np.diff(R.indptr).tolist() == [0, 1, 2, 7, 8, 9, 19, 100, 5]
    assert R.shape[1] == 110 and R.getnnz(axis=0)[-1] == 0
    assert (R.data < 0).any() and set(np.abs(R.data)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert rows_of_every_length(64, long_row=100).shape == (9, 3 * 64 + 40)
