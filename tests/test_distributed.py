"""gpu_als.distributed on a LocalCluster of 2 worker processes (CPU backend), and on a
worker of the GPU backend."""

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS
from gpu_als.datasets import make_power_law
from gpu_als.evaluation import binarize

from .conftest import ProgressBars, emulated_backend, needs_gpu, random_interactions, skip_or_fail


@pytest.fixture(scope="module")
def client():
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        skip_or_fail(f"dask.distributed is not installed: {exc}")
    import dask

    from gpu_als.distributed import WORKER_MALLOC

    dask.config.set(WORKER_MALLOC)
    # The tests that kill a worker wait for its nanny to start another. A LocalCluster
    # closes for good the nanny of a worker not back within lost-worker-timeout (15 s),
    # which a restart on a loaded 2-core machine can take (Dask 2024.1 did, now and then)
    dask.config.set({"distributed.deploy.lost-worker-timeout": "10 minutes"})
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(autouse=True)
def only_the_given_client(monkeypatch):
    """Every fit here with Dask's default client out of reach: fit_distributed works with
    the client it is given, which need not be the default one (gpu-als train --scheduler's
    is not; distributed.wait used the default client and failed with 'No clients
    found')."""
    try:
        import distributed.client
    except ImportError:
        return

    def no_default_client(*args, **kwargs):
        raise ValueError("No clients found (the default client was asked for)")

    monkeypatch.setattr(distributed.client, "default_client", no_default_client)


PARAMS = dict(factors=12, iterations=4, random_state=3, backend="cpu", show_progress=False,
              dtype=np.float64)


def fit_both(R, client, blocks_per_worker=1, **params):
    from gpu_als.distributed import fit_distributed

    params = {**PARAMS, **params}
    distributed = fit_distributed(ALS(**params), R, client,
                                  blocks_per_worker=blocks_per_worker)
    return distributed, ALS(**params).fit(R)


@pytest.mark.parametrize("feedback, solver", [("implicit", "cholesky"),
                                              ("explicit", "cholesky"), ("implicit", "cg"),
                                              ("implicit", "pcg"), ("implicit", "nnls")])
def test_equals_single_process_fit_on_synthetic_data(client, feedback, solver):
    """The same factors, also with CG, which starts each half-step from the current
    factors, and NNLS, whose first free sets are where they are positive (the workers
    are sent their blocks' share of them)."""
    R = make_power_law(1500, 600, 30_000, random_state=1)
    distributed, single = fit_both(R, client, feedback=feedback, regularization=0.05,
                                   solver=solver)
    np.testing.assert_allclose(distributed.item_factors_, single.item_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.loss_history_, single.loss_history_, rtol=1e-10)
    X, Y = single.user_factors_, single.item_factors_
    sent_current = solver in ("cg", "pcg", "nnls")  # CG and NNLS start from the factors
    assert distributed.bytes_moved_ == [(2 + 1 + sent_current) * (X.nbytes + Y.nbytes)] * 4


@pytest.mark.parametrize("solver", ["cholesky", "pcg"])
def test_equals_single_process_fit_with_a_scaled_penalty(client, solver):
    """Implicit feedback with ``scale_regularization``: the workers' half-steps (PCG's
    whitened in the eigenbasis each worker finds) and the driver's loss (its penalty by
    the positive entries' counts: dislikes here) as in one process."""
    R = make_power_law(800, 300, 12_000, random_state=3)
    R.data[::5] *= -1
    distributed, single = fit_both(R, client, regularization=0.05, scale_regularization=True,
                                   solver=solver)
    np.testing.assert_allclose(distributed.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.loss_history_, single.loss_history_, rtol=1e-10)
    plain, _ = fit_both(R, client, regularization=0.05, solver=solver)
    assert plain.loss_history_[-1] != pytest.approx(distributed.loss_history_[-1])


def test_equals_single_process_fit_on_movielens(client, movielens):
    distributed, single = fit_both(binarize(movielens.ratings, 4), client, blocks_per_worker=2,
                                   alpha=10.0, regularization=0.01)
    np.testing.assert_allclose(distributed.item_factors_, single.item_factors_, atol=1e-9)
    ids, _ = distributed.recommend(0, binarize(movielens.ratings, 4)[0], N=10)
    np.testing.assert_array_equal(ids, single.recommend(0, binarize(movielens.ratings,
                                                                    4)[0], N=10)[0])


def test_a_dataframe_is_fitted_as_by_fit_with_its_ids(client):
    pd = pytest.importorskip("pandas")
    R = make_power_law(300, 120, 3000, random_state=2).tocoo()
    df = pd.DataFrame({"user": R.row * 7, "item": [f"i{c}" for c in R.col], "value": R.data})
    distributed, single = fit_both(df, client)
    np.testing.assert_allclose(distributed.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_array_equal(distributed.user_ids_, single.user_ids_)
    np.testing.assert_array_equal(distributed.item_ids_, single.item_ids_)
    assert distributed.item_ids_[0] == "i0" and distributed.user_ids_[1] == 7

    from gpu_als.data import from_dataframe
    from gpu_als.distributed import fit_distributed

    matrix, users, items = from_dataframe(df)
    with_ids = fit_distributed(ALS(**PARAMS), matrix, client, user_ids=users, item_ids=items)
    np.testing.assert_allclose(with_ids.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_array_equal(with_ids.item_ids_, single.item_ids_)
    with pytest.raises(ValueError, match=r"user_ids has shape \(3,\), expected"):
        fit_distributed(ALS(**PARAMS), matrix, client, user_ids=users[:3])
    with pytest.raises(TypeError, match="takes its ids from the DataFrame's"):
        fit_distributed(ALS(**PARAMS), df, client, item_ids=items)


def test_a_warm_start_continues_a_fit_as_in_fit(client):
    """2 iterations in this process, then 2 on the cluster from there: the 4-iteration fit
    (with CG, whose half-steps start from both sides' current factors)."""
    from gpu_als.distributed import fit_distributed

    R = make_power_law(400, 150, 5000, random_state=4)
    params = {**PARAMS, "solver": "cg", "iterations": 2, "warm_start": True}
    model = fit_distributed(ALS(**params).fit(R), R, client)
    whole = ALS(**{**params, "iterations": 4}).fit(R)
    np.testing.assert_allclose(model.user_factors_, whole.user_factors_, atol=1e-9)
    np.testing.assert_allclose(model.item_factors_, whole.item_factors_, atol=1e-9)


def test_each_iteration_is_logged_at_info_as_in_fit(client, caplog):
    from gpu_als.distributed import fit_distributed

    R = make_power_law(300, 120, 3000, random_state=4)
    with caplog.at_level("INFO", logger="gpu_als"):
        model = fit_distributed(ALS(**{**PARAMS, "iterations": 2}), R, client)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration")]
    assert [line.split(" s so far")[0].rsplit(", ", 1)[0] for line in lines] == [
        f"iteration {i + 1}: loss {loss:.6g}" for i, loss in enumerate(model.loss_history_)]


def test_the_callback_sees_the_model_so_far_and_a_failure_leaves_it_as_it_was(client):
    from gpu_als.distributed import fit_distributed

    R = make_power_law(300, 120, 3000, random_state=4)
    seen = []
    model = ALS(**PARAMS)
    model.callback = lambda *a: seen.append((model.user_factors_.copy(),
                                             model.recommend(0, R[0], N=3)[0]))
    fit_distributed(model, R, client)
    once = ALS(**{**PARAMS, "iterations": 1}).fit(R)
    np.testing.assert_allclose(seen[0][0], once.user_factors_, atol=1e-9)
    np.testing.assert_array_equal(seen[0][1], once.recommend(0, R[0], N=3)[0])
    np.testing.assert_array_equal(seen[-1][0], model.user_factors_)

    def stop(iteration, seconds, loss):
        if iteration == 1:
            raise KeyboardInterrupt

    failing = ALS(**PARAMS, callback=stop)
    with pytest.raises(KeyboardInterrupt):
        fit_distributed(failing, R, client)
    assert not hasattr(failing, "user_factors_")


def test_a_callback_returning_true_stops_the_distributed_fit(client):
    """As in fit: True stops after that iteration; EarlyStopping puts the best model back."""
    from gpu_als.distributed import fit_distributed
    from gpu_als.evaluation import EarlyStopping, ranking_metrics, train_test_split

    R = make_power_law(300, 120, 3000, random_state=4)
    model = fit_distributed(ALS(**PARAMS, callback=lambda iteration, *_: iteration == 1),
                            R, client)
    twice = ALS(**{**PARAMS, "iterations": 2}).fit(R)
    np.testing.assert_allclose(model.user_factors_, twice.user_factors_, atol=1e-9)
    assert model.loss_history_ == pytest.approx(twice.loss_history_, rel=1e-12)

    train, validation = train_test_split(R, test_fraction=0.2, random_state=0)
    model = ALS(**PARAMS)
    model.callback = stop = EarlyStopping(model, train, validation, patience=2,
                                          min_delta=1.0)  # no iteration beats the first by 1
    fit_distributed(model, train, client)
    once = ALS(**{**PARAMS, "iterations": 1}).fit(train)
    assert stop.stopped_iteration == 2 and len(model.loss_history_) == 1
    np.testing.assert_allclose(model.item_factors_, once.item_factors_, atol=1e-9)
    assert ranking_metrics(model, train, validation)["recall"] == stop.best_score


def test_progress_callback_and_loss_settings_act_as_in_fit(client, monkeypatch):
    """A progress bar over iterations (on a terminal) unless show_progress is False; the
    callback gets each iteration's loss, or None with calculate_training_loss=False, which
    also leaves loss_history_ empty and the factors as they were."""
    from gpu_als import distributed
    from gpu_als.distributed import fit_distributed

    progress = ProgressBars()
    bars = progress.bars
    monkeypatch.setattr(distributed, "tqdm", progress)
    R = make_power_law(300, 120, 3000, random_state=4)
    calls = []
    shown = fit_distributed(ALS(**{**PARAMS, "show_progress": True},
                                callback=lambda *a: calls.append(a)), R, client)
    assert bars[-1].iterable == [0, 1, 2, 3] and bars[-1].disable is None
    assert [c[2] for c in calls] == shown.loss_history_ and len(calls) == 4
    elapsed = [c[1] for c in calls]  # seconds since the fit started, as fit's callback
    assert 0 < elapsed[0] and elapsed == sorted(elapsed) and elapsed[-1] < 600
    assert [b["loss"] for b in bars[-1].postfixes] == [f"{v:.5g}" for v in
                                                      shown.loss_history_]
    calls.clear()
    quiet = fit_distributed(ALS(**PARAMS, calculate_training_loss=False,
                                callback=lambda *a: calls.append(a)), R, client)
    assert bars[-1].disable is True
    assert quiet.loss_history_ == [] and [c[2] for c in calls] == [None] * 4
    np.testing.assert_array_equal(quiet.item_factors_, shown.item_factors_)


@pytest.mark.parametrize("source", ["matrix", "dask frame"])
def test_a_worker_killed_mid_fit_is_survived(client, source):
    """The blocks are placed again: a matrix's scattered from the driver, a Dask
    DataFrame's (the workers' only copy) built again from the DataFrame."""
    from gpu_als.distributed import fit_distributed

    R = make_power_law(1500, 600, 30_000, random_state=2)
    fitted, given = (R, R) if source == "matrix" else (frame_of(R), dask_frame(frame_of(R), 5))
    killed = []

    def kill_one_worker(iteration, elapsed, loss):
        if iteration == 1 and not killed:
            worker = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[worker])[worker]
            os.kill(pid, signal.SIGKILL)  # its nanny starts a new worker
            killed.append(worker)
            time.sleep(1.0)  # let it die before the next half-step

    distributed = fit_distributed(ALS(**PARAMS, callback=kill_one_worker), given, client)
    assert killed
    np.testing.assert_allclose(distributed.item_factors_, ALS(**PARAMS).fit(fitted).item_factors_,
                               atol=1e-9)
    client.wait_for_workers(2, timeout=60)
    # The blocks of the failed half-step are released too (Dask keeps the exception of a
    # failed future; the frames in its traceback held them for the client's lifetime).
    assert cached_after_release(client) == 0


def test_an_error_on_the_workers_is_reported(client):
    from gpu_als.distributed import fit_distributed

    R = make_power_law(200, 100, 2_000, random_state=3)
    with pytest.raises(Exception, match="backend='gpu' cannot run"):
        fit_distributed(ALS(**{**PARAMS, "backend": "gpu"}), R, client)


def test_nan_factors_are_an_error_not_a_model(client, monkeypatch):
    """A half-step that returns NaN factors (here: every block's, made so) ends the fit
    with the single-process fit's FloatingPointError, and the model stays unfitted."""
    from gpu_als import distributed
    from gpu_als.exceptions import NotFittedError

    solve = distributed._solve_block

    def poisoned(*args):  # sent to the workers by value (a closure)
        factors, gram, loss = solve(*args)
        return np.full_like(factors, np.nan), gram, loss

    monkeypatch.setattr(distributed, "_solve_block", poisoned)
    model = ALS(**PARAMS)
    with pytest.raises(FloatingPointError, match=r"the user factors hold NaN or infinite "
                                                 r"values after the user half-step of "
                                                 r"iteration 0; the input \(confidences up "
                                                 r"to 11\)"):  # 1 + alpha x 1
        distributed.fit_distributed(model, make_power_law(200, 100, 2_000, random_state=3),
                                    client)
    with pytest.raises(NotFittedError):
        model.recommend(0, N=1, filter_already_liked_items=False)

    def diverging(*args):  # finite factors, too large for their loss
        factors, gram, loss = solve(*args)
        return np.full_like(factors, 1e30), gram, loss

    monkeypatch.setattr(distributed, "_solve_block", diverging)
    with pytest.raises(FloatingPointError, match="the factors grew so large"):
        distributed.fit_distributed(model, make_power_law(200, 100, 2_000, random_state=3),
                                    client)


def test_a_half_step_that_keeps_losing_workers_gives_up_after_max_retries(
        client, monkeypatch, caplog):
    """Each failure that looks like a lost worker is logged and retried, blocks scattered
    again; after max_retries retries a RuntimeError says why."""
    from gpu_als import distributed

    attempts = []

    def lost(*args):
        raise OSError("connection to the worker lost")

    def counted_place(*args, **kwargs):
        attempts.append(1)
        return original_scatter(*args, **kwargs)

    original_scatter, original_wait = client.scatter, distributed._running_workers
    waits = []  # for a worker: at the start, and before each retry (all may be gone)
    monkeypatch.setattr(distributed, "_running_workers",
                        lambda *args: waits.append(args[1]) or original_wait(*args))
    monkeypatch.setattr(distributed, "_solve_block", lost)
    monkeypatch.setattr(client, "scatter", counted_place)
    with caplog.at_level("WARNING", logger="gpu_als"), \
            pytest.raises(RuntimeError, match="a half-step failed 3 times, last with OSError: "
                                              "connection to the worker lost"):
        distributed.fit_distributed(ALS(**PARAMS), make_power_law(200, 100, 2_000,
                                                                  random_state=3),
                                    client, max_retries=2, worker_timeout=7)
    retries = [r for r in caplog.records
               if "placing the blocks on the workers again" in r.getMessage()]
    assert len(retries) == 2 and waits == [7.0, 7.0, 7.0]
    # the user and item blocks at the start and after each retry, and the fixed factors of
    # each of the 3 attempts
    assert len(attempts) == 2 + 2 * 2 + 3


def test_blocks_split_the_entries_about_evenly():
    """_split: contiguous blocks covering every row once, each ending at the first row
    boundary at or past its equal share of the entries."""
    from gpu_als.data import Prepared
    from gpu_als.distributed import _split

    users, _ = Prepared(make_power_law(1000, 300, 20_000, random_state=5)).rows(
        feedback="implicit", alpha=1.0, confidence="linear", epsilon=1.0)
    longest = int(np.diff(users.indptr).max())
    for n_blocks in (1, 3, 8):
        blocks = _split(users, n_blocks)
        assert len(blocks) == n_blocks
        assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]]
        assert blocks[-1][1] == users.n_rows
        share = users.indptr[-1] / n_blocks
        for first, last, block in blocks:
            assert block.n_rows == last - first
            np.testing.assert_array_equal(block.indices, users.indices[
                users.indptr[first]:users.indptr[last]])
            assert abs(block.indptr[-1] - share) <= longest
        for j, (_, last, _) in enumerate(blocks[:-1], start=1):  # the first row boundary
            assert users.indptr[last - 1] < j * share <= users.indptr[last]  # at its share
    # a row with most of the entries, and empty rows at the end: fewer blocks, none empty
    # (a task that solves nothing)
    import scipy.sparse as sp

    heavy = sp.csr_matrix((np.ones(120), (np.r_[np.zeros(100, int), np.arange(1, 21)],
                                          np.r_[np.arange(100), np.arange(20)])),
                          shape=(30, 100))
    users, _ = Prepared(heavy).rows(feedback="implicit", alpha=1.0)
    for n_blocks in (2, 5):
        blocks = _split(users, n_blocks)
        assert len(blocks) <= n_blocks and all(first < last for first, last, _ in blocks)
        assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]]
        assert blocks[-1][1] == 30 and blocks[0][1] == 1  # the heavy row alone


def test_bad_arguments_are_refused_before_any_work(client, monkeypatch):
    from gpu_als.backends import CPUBackend
    from gpu_als.distributed import _ClusterBlocks, fit_distributed

    R = make_power_law(200, 100, 2_000, random_state=3)
    with pytest.raises(ValueError, match="blocks_per_worker=0: must be >= 1"):
        fit_distributed(ALS(**PARAMS), R, client, blocks_per_worker=0)
    with pytest.raises(TypeError, match="needs a backend name"):
        fit_distributed(ALS(**{**PARAMS, "backend": CPUBackend()}), R, client)
    with pytest.raises(ValueError, match="max_retries=-1: must be >= 0"):
        fit_distributed(ALS(**PARAMS), R, client, max_retries=-1)
    with pytest.raises(TypeError, match="model must be a gpu_als.ALS, got dict"):
        fit_distributed(PARAMS, R, client)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client, got str"):
        fit_distributed(ALS(**PARAMS), R, "tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="worker_timeout=0.0: must be > 0"):
        fit_distributed(ALS(**PARAMS), R, client, worker_timeout=0)
    # settings that act on nothing: warned of before any work, as by fit
    with pytest.warns(UserWarning, match="^cg_steps=5 has no effect with solver='cholesky'"), \
            pytest.raises(ValueError, match="blocks_per_worker=0"):
        fit_distributed(ALS(**PARAMS, cg_steps=5), R, client, blocks_per_worker=0)
    # systems that are all singular, and a fit too large for memory, as fit refuses them
    # (with CG the workers solved the singular ones without a word before)
    few_items = R[:, :3]
    for solver in ("cholesky", "cg"):
        singular = ALS(**{**PARAMS, "regularization": 0.0, "solver": solver})
        with pytest.raises(ValueError, match="regularization=0 with factors=12 and 3 items: "
                                             "Y\\^T Y, and with it every user's"):
            fit_distributed(singular, few_items, client)
        assert not hasattr(singular, "user_factors_")
    # a Gram matrix that turns singular mid-fit (no positive value: the user half-step
    # zeroes X) is refused by the driver, as fit refuses it, before the item half-step is
    # sent to the workers (a GPU worker's Cholesky would make NaN of it)
    solved = []
    solve = _ClusterBlocks._solve
    monkeypatch.setattr(_ClusterBlocks, "_solve", lambda self, side, *args: (
        solved.append(side), solve(self, side, *args))[1])
    with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization \* "
                                         r"I is singular \(factors=12 with 200 fixed-side "
                                         r"rows\); use regularization > 0$"), \
            pytest.warns(UserWarning, match="user_items has no positive value"):
        fit_distributed(ALS(**{**PARAMS, "regularization": 0.0}), R * -1, client)
    assert solved == ["user"]
    with pytest.raises(MemoryError, match="a fit of 200 users x 10,000,000,000,000 items"):
        fit_distributed(ALS(**PARAMS), sp.csr_matrix((200, 10**13), dtype=np.float32), client)
    # more factors than items: warned of, as by fit
    with pytest.warns(UserWarning, match="^factors=12 with 3 items: the factors span at most "
                                         "3 dimensions"):
        fit_distributed(ALS(**{**PARAMS, "iterations": 1}), few_items, client)


def test_the_command_line_trains_on_a_cluster_as_it_does_here(client, tmp_path, capsys):
    """gpu-als train --scheduler: fit_distributed on that cluster, with early stopping's
    probe fit there too, and the same model as without it (its client is not Dask's
    default one: see only_the_given_client)."""
    pd = pytest.importorskip("pandas")
    from gpu_als.cli import main

    R = make_power_law(200, 100, 2_000, random_state=3).tocoo()
    file = tmp_path / "clicks.csv"
    pd.DataFrame({"user": R.row + 100, "item": R.col, "value": R.data}).to_csv(file,
                                                                              index=False)
    address = client.scheduler.address
    models, printed = [], []
    for where in ([], ["--scheduler", address]):
        out = tmp_path / f"m{len(models)}.npz"
        assert main(["train", str(file), "--factors", "6", "--iterations", "12",
                     "--early-stopping", "2", "--backend", "cpu", "--dtype", "float64",
                     "--output", str(out), *where]) == 0
        printed.append(capsys.readouterr().out)
        models.append(ALS.load(out, backend="cpu"))
    assert f"trained on the Dask cluster at {address} in" in printed[1]
    assert "trained on 'cpu' in" in printed[0]
    assert printed[0].splitlines()[0] == printed[1].splitlines()[0]  # the same stop
    np.testing.assert_allclose(models[1].item_factors_, models[0].item_factors_, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(models[1].user_ids_, models[0].user_ids_)


def test_a_scheduler_that_does_not_answer_is_named_with_how_to_start_one(tmp_path, capsys):
    """--scheduler at an address where none listens: Dask's connection timeout (1 s here),
    said with the command that starts a scheduler there."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    from gpu_als.cli import main

    file = tmp_path / "clicks.csv"  # (never read: the cluster is reached first)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["train", str(file), "--scheduler", "tcp://127.0.0.1:9",
                     "--output", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "error: --scheduler tcp://127.0.0.1:9: no Dask scheduler answered (Timed out " \
           "trying to connect" in err
    assert "start one there with `dask scheduler`, and its workers with `dask worker " \
           "tcp://127.0.0.1:9`" in err
    assert not (tmp_path / "m.npz").exists()


def test_without_dask_the_error_says_what_to_install(monkeypatch):
    import sys

    from gpu_als.distributed import fit_distributed

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"fit_distributed needs Dask \(.*\): pip install "
                                          r"gpu-als\[dist\]"):
        fit_distributed(ALS(**PARAMS), make_power_law(20, 10, 50, random_state=3), None)


def test_a_cluster_without_workers_or_a_closed_client_is_a_clear_error():
    """Dask's own errors were a KeyError ('workers') for a closed client, and a
    TimeoutError 'No valid workers found' after 30 s for a cluster without workers."""
    from dask.distributed import Client, LocalCluster

    from gpu_als.distributed import fit_distributed

    R = make_power_law(200, 100, 2_000, random_state=3)
    model = ALS(**PARAMS)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as empty:
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"the cluster has no worker \(waited 0.5 s"):
            fit_distributed(model, R, empty, worker_timeout=0.5)
        assert time.perf_counter() - start < 10
        assert not hasattr(model, "user_factors_") and not model.fit_in_progress
    with pytest.raises(ValueError, match="the Dask client is closed: fit_distributed needs a "
                                         "running Client"):
        fit_distributed(model, R, empty)


def test_blocks_arriving_unaligned_are_aligned_before_solving():
    """Dask may deserialize an array at any byte offset of a frame (seen: the fixed factors
    at an odd address); the worker aligns its inputs, and the solution is unchanged."""
    from gpu_als.data import Prepared
    from gpu_als.distributed import _aligned, _solve_block, _split

    def unaligned(a):
        raw = np.empty(a.nbytes + 1, np.uint8)[1:]
        moved = np.frombuffer(raw.data, a.dtype).reshape(a.shape)
        moved[...] = a
        return moved

    R = make_power_law(300, 80, 3000, random_state=1, device="cpu")
    users, _ = Prepared(R).rows(feedback="implicit", alpha=5.0)
    [(_, _, block)] = _split(users, 1)
    Y = np.random.default_rng(2).random((80, 8), dtype=np.float32)
    params = {"backend": "cpu", "regularization": 0.1, "feedback": "implicit",
              "solver": "cholesky", "cg_steps": 3,
              "scale_regularization": False}
    shifted = block.map_arrays(unaligned)
    assert not unaligned(Y).flags.aligned and not shifted.weight.flags.aligned
    assert _aligned(unaligned(Y)).flags.aligned and _aligned(Y) is Y
    want = _solve_block(block, Y, Y.T @ Y, params)
    got = _solve_block(shifted, unaligned(Y), Y.T @ Y, params)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # CG from the current factors: an in-process worker is handed the driver's own array,
    # which must stay as it was (a retried half-step starts from it again)
    current = np.random.default_rng(3).random((block.n_rows, 8), dtype=np.float32)
    kept = current.copy()
    _solve_block(block, Y, Y.T @ Y, {**params, "solver": "cg"}, start=current)
    np.testing.assert_array_equal(current, kept)


def test_a_block_is_put_on_its_backend_once_per_fit(monkeypatch):
    """A worker hands each block to its backend (for the GPU: a copy to the device) at the
    block's first half-step only, and forgets it when Dask releases the block."""
    import gc

    from gpu_als import distributed
    from gpu_als.backends.cpu import CPUBackend
    from gpu_als.data import Prepared

    puts = []
    original = CPUBackend.put
    monkeypatch.setattr(CPUBackend, "put", lambda self, rows: puts.append(rows) or
                        original(self, rows))
    R = make_power_law(300, 80, 3000, random_state=1, device="cpu")
    users, _ = Prepared(R).rows(feedback="implicit", alpha=5.0)
    [(_, _, block)] = distributed._split(users, 1)
    params = {"backend": "cpu", "regularization": 0.1, "feedback": "implicit",
              "solver": "cholesky", "cg_steps": 3,
              "scale_regularization": False}
    rng = np.random.default_rng(2)
    for _ in range(3):
        Y = rng.random((80, 8))
        got = distributed._solve_block(block, Y, Y.T @ Y, params)
        fresh = distributed._solve_block(block.map_arrays(np.copy), Y, Y.T @ Y, params)
        for a, b in zip(got, fresh):
            np.testing.assert_array_equal(a, b)
    assert len(puts) == 1 + 3  # the block once, each fresh copy once
    key = (id(block), "cpu")
    assert key in distributed._PUT_BLOCKS
    del block, puts[:]
    gc.collect()
    assert key not in distributed._PUT_BLOCKS


def _cached_blocks() -> int:
    from gpu_als import distributed

    return len(distributed._PUT_BLOCKS)


def cached_after_release(client) -> int:
    """Blocks the workers still hold for a backend, once released ones are dropped."""
    import gc

    gc.collect()  # futures of earlier fits may wait in reference cycles
    deadline = time.time() + 30  # generous: a loaded CI machine is slow to release
    while sum(client.run(_cached_blocks).values()) and time.time() < deadline:
        time.sleep(0.1)  # the workers drop released blocks asynchronously
    return sum(client.run(_cached_blocks).values())


def test_workers_keep_their_blocks_only_during_the_fit(client):
    from gpu_als.distributed import fit_distributed

    before = cached_after_release(client)
    assert before == 0, f"{before} blocks left on the workers by earlier tests"
    R = make_power_law(400, 150, 4000, random_state=4)
    during = []
    model = ALS(**PARAMS, callback=lambda *_: during.append(client.run(_cached_blocks)))
    fit_distributed(model, R, client, blocks_per_worker=2)
    # 2 workers x 2 blocks x 2 sides, each block on one worker only
    assert [sum(per_worker.values()) for per_worker in during] == \
        [8] * PARAMS["iterations"], during
    after = cached_after_release(client)
    assert after == 0, f"{after} blocks left on the workers after the fit"

    def interrupt(*_):
        raise KeyboardInterrupt

    # a failed fit too, while its exception (whose frames hold the fit's locals) is kept
    with pytest.raises(KeyboardInterrupt) as failure:
        fit_distributed(ALS(**PARAMS, callback=interrupt), R, client, blocks_per_worker=2)
    assert cached_after_release(client) == 0, failure.traceback


# ---- Dask DataFrames: read by the workers ------------------------------------------------


def dask_frame(df, npartitions):
    dd = pytest.importorskip("dask.dataframe")
    return dd.from_pandas(df, npartitions=npartitions)


def frame_of(R):
    """A pandas frame of the sparse matrix ``R``'s entries: user ids times 7, item ids
    as text."""
    pd = pytest.importorskip("pandas")
    R = R.tocoo()
    return pd.DataFrame({"user": R.row * 7, "item": [f"i{c}" for c in R.col],
                         "value": R.data})


def fits_with_warnings(fit):
    """``fit()``'s model, and the messages of every warning it gave."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit()
    return model, [str(w.message) for w in caught]


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_a_dask_dataframe_is_fitted_as_its_computed_frame(client, monkeypatch, feedback):
    """The workers read it: this process cannot (its from_dataframe fails), and the model
    is fit(df.compute())'s, ids, warnings and loss included. Pairs repeated across
    partitions are summed as fit sums them (with its warning for ratings), and an empty
    partition is no error."""
    from gpu_als import data
    from gpu_als.distributed import fit_distributed

    dd = pytest.importorskip("dask.dataframe")
    from dask import delayed

    df = frame_of(make_power_law(300, 120, 3000, random_state=2))
    # 52 pairs repeated in other partitions, and an empty partition
    parts = [df.iloc[:0], df.iloc[:1200], df.iloc[1200:], df.iloc[np.r_[0:50, 1500, 2900]]]
    ddf = dd.from_delayed([delayed(part) for part in parts], meta=df.iloc[:0])
    computed = ddf.compute(scheduler="sync")  # (not through the default client)
    assert len(computed) == len(df) + 52
    params = {**PARAMS, "feedback": feedback}
    single, said = fits_with_warnings(lambda: ALS(**params).fit(computed))

    def not_here(*args, **kwargs):
        raise AssertionError("the driver read the DataFrame")

    monkeypatch.setattr(data, "from_dataframe", not_here)  # the workers' own is not this
    distributed, warned = fits_with_warnings(
        lambda: fit_distributed(ALS(**params), ddf, client, blocks_per_worker=2))
    np.testing.assert_allclose(distributed.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.item_factors_, single.item_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.loss_history_, single.loss_history_, rtol=1e-10)
    for got, expected in ((distributed.user_ids_, single.user_ids_),
                          (distributed.item_ids_, single.item_ids_)):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    assert warned == said
    if feedback == "explicit":
        assert said == ["52 of the 3,052 rows repeat a (user, item) pair, and the ratings of "
                        "a pair are summed (two ratings of 4 train as one of 8); for "
                        "feedback='explicit' keep one rating per pair, e.g. with pandas "
                        "df.drop_duplicates(['user', 'item'], keep='last')"]


def test_a_dask_dataframe_with_a_scaled_penalty_counts_positive_entries(client):
    """``scale_regularization`` with dislikes: the driver's loss takes each row's count of
    positive entries from the workers' blocks, as fit counts them."""
    from gpu_als.distributed import fit_distributed

    df = frame_of(make_power_law(300, 120, 3000, random_state=2))
    df.loc[::4, "value"] *= -1
    params = {**PARAMS, "scale_regularization": True}
    single = ALS(**params).fit(df)
    distributed = fit_distributed(ALS(**params), dask_frame(df, 3), client,
                                  blocks_per_worker=2)
    np.testing.assert_allclose(distributed.user_factors_, single.user_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.loss_history_, single.loss_history_, rtol=1e-10)


def test_a_dask_dataframe_warns_and_refuses_as_fit_does_where_partitions_meet(client):
    """What only the whole frame shows: no positive value in any partition (fit's
    warning), and a pair whose values in two partitions sum beyond float32."""
    from dask import delayed

    from gpu_als.distributed import fit_distributed

    dd = pytest.importorskip("dask.dataframe")
    df = frame_of(make_power_law(100, 50, 800, random_state=3))
    halves = [df.iloc[:400], df.iloc[400:]]

    def in_partitions(*parts):
        return dd.from_delayed([delayed(part) for part in parts], meta=df.iloc[:0])

    negative = [half.assign(value=-half["value"]) for half in halves]
    single, said = fits_with_warnings(lambda: ALS(**PARAMS).fit(pd_concat(negative)))
    distributed, warned = fits_with_warnings(
        lambda: fit_distributed(ALS(**PARAMS), in_partitions(*negative), client))
    assert warned == said and len(said) == 1 and "has no positive value" in said[0]
    np.testing.assert_allclose(distributed.item_factors_, single.item_factors_, atol=1e-9)

    huge = [half.assign(value=np.where(half.index == 0, 3e38, half["value"]))
            for half in (df.iloc[:400], df.iloc[[0]])]  # (0 in both: 6e38 together)
    with pytest.raises(ValueError, match="beyond float32's range"):
        ALS(**{**PARAMS, "dtype": np.float32}).fit(pd_concat(huge))
    with pytest.raises(ValueError, match=r"^the values of a \(user, item\) pair repeated "
                                         r"across the DataFrame's partitions sum beyond "
                                         r"float32's range"):
        fit_distributed(ALS(**{**PARAMS, "dtype": np.float32}), in_partitions(*huge), client)


def pd_concat(parts):
    return pytest.importorskip("pandas").concat(parts)


def test_a_pair_repeated_across_partitions_is_summed_as_fit_sums_it(client):
    """In float64, rounded to the model's float32 once: 1 + 2^-24 + 2^-24 is float32's
    1 + 2^-23, where each partition's sum rounded first (1 + 2^-24 to 1) would give 1."""
    from dask import delayed

    from gpu_als import _dask_frames

    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    tiny = 2.0 ** -24
    first = pd.DataFrame({"user": [0, 0, 1], "item": [0, 0, 1], "value": [1.0, tiny, 2.0]})
    second = pd.DataFrame({"user": [0, 1], "item": [0, 0], "value": [tiny, 3.0]})
    ddf = dd.from_delayed([delayed(first), delayed(second)], meta=first.iloc[:0])
    p = ALS(**{**PARAMS, "factors": 1, "dtype": np.float32,
               "feedback": "explicit"})._check_params()  # (explicit: the targets are r)
    with pytest.warns(UserWarning, match="^2 of the 5 rows repeat a"):
        blocks = _dask_frames.FrameBlocks(client, ddf, p, n_blocks=1)
    users = client.gather(blocks.futures["user"])[0]
    expected = ALS(**{**PARAMS, "dtype": np.float32})._fit_input(pd.concat([first, second]),
                                                                  None, None)[0]
    assert expected.data.dtype == np.float32 and expected[0, 0] == np.float32(1 + 2 * tiny)
    np.testing.assert_array_equal(users.target, expected.data)
    np.testing.assert_array_equal(users.indices, expected.indices)
    blocks.release()


def test_a_warm_start_from_a_dask_dataframe_matches_the_ids(client):
    """2 iterations in this process on the pandas frame, then 2 on the cluster from a Dask
    DataFrame whose rows are in another order: the 4-iteration fit, each id's factors
    carried over to its row."""
    from gpu_als.distributed import fit_distributed

    df = frame_of(make_power_law(400, 150, 5000, random_state=4))
    params = {**PARAMS, "solver": "cg", "iterations": 2, "warm_start": True}
    model = fit_distributed(ALS(**params).fit(df),
                            dask_frame(df.iloc[::-1].reset_index(drop=True), 3), client)
    whole = ALS(**{**params, "iterations": 4}).fit(df)
    np.testing.assert_allclose(model.user_factors_, whole.user_factors_, atol=1e-9)
    np.testing.assert_allclose(model.item_factors_, whole.item_factors_, atol=1e-9)


def test_the_read_of_a_dask_dataframe_shows_its_progress(client, monkeypatch, caplog):
    """A bar over the partitions read (unless show_progress is False), and an INFO line
    for each step, for a batch job's log."""
    from gpu_als import _dask_frames
    from gpu_als.distributed import fit_distributed

    progress = ProgressBars()
    monkeypatch.setattr(_dask_frames, "tqdm", progress)
    df = frame_of(make_power_law(300, 120, 3000, random_state=2))
    with caplog.at_level("INFO", logger="gpu_als"):
        fit_distributed(ALS(**{**PARAMS, "show_progress": True}), dask_frame(df, 5), client,
                        blocks_per_worker=2)
    bar = progress.bars[0]
    assert (bar.total, bar.counted, bar.disable) == (5, 5, None)
    said = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(r"read 5 partitions on the workers: 3,000 rows, 300 users x "
                            r"120 items in [\d.]+ s", line) for line in said), said
    assert any(re.fullmatch(r"built 4 user and 4 item blocks of 3,000 interactions on the "
                            r"workers in [\d.]+ s", line) for line in said), said
    fit_distributed(ALS(**PARAMS), dask_frame(df, 5), client)
    assert progress.bars[-1].disable is True


def test_the_blocks_of_a_dask_dataframe_take_tasks_per_worker_thread_not_per_partition(
        client):
    """Each block's piece is cut (a getitem task) from each group of partitions held by
    one worker thread, not from each partition: 24 partitions cut into 6 blocks a side
    took 24 x 6 x 2 = 288 such tasks, at about a millisecond of the scheduler's each."""
    from dask.distributed import get_task_stream
    from dask.utils import key_split

    from gpu_als.distributed import fit_distributed

    df = frame_of(make_power_law(300, 120, 3000, random_state=2))
    with get_task_stream(client) as stream:
        model = fit_distributed(ALS(**PARAMS), dask_frame(df, 24), client,
                                blocks_per_worker=3)
    tasks = [key_split(task["key"]) for task in stream.data]
    assert tasks.count("read_partition") == 24
    threads = sum(client.nthreads().values())
    assert 0 < tasks.count("getitem") <= 2 * (3 * 2) * threads  # sides x blocks x threads
    assert tasks.count("renumbered") <= threads
    np.testing.assert_allclose(model.item_factors_, ALS(**PARAMS).fit(df).item_factors_,
                               atol=1e-9)


def test_the_item_blocks_are_cut_once_the_user_blocks_are_built(client, monkeypatch):
    """A side at a time: a worker holds one side's pieces of its partitions at once
    (both sides' at once took its peak memory about 100 MB higher for 5M entries)."""
    from gpu_als import _dask_frames
    from gpu_als.distributed import fit_distributed

    blocks, built, done = _dask_frames._blocks, {}, []

    def recorded(client, entries, side, *args):
        done.extend(future.status for futures in built.values() for future in futures)
        built[side] = blocks(client, entries, side, *args)
        return built[side]

    monkeypatch.setattr(_dask_frames, "_blocks", recorded)
    df = frame_of(make_power_law(300, 120, 3000, random_state=2))
    fit_distributed(ALS(**PARAMS), dask_frame(df, 6), client, blocks_per_worker=2)
    assert list(built) == ["user", "item"] and done == ["finished"] * 4


def test_partitions_are_grouped_by_the_worker_thread_that_holds_them():
    """A worker's partitions in as many groups as it has threads (dealt in turn), the
    first holder of one held twice taken, and those that no worker holds (their worker
    just lost) in one group of their own."""
    from types import SimpleNamespace

    from gpu_als._dask_frames import _by_worker

    held = {"k0": ["a"], "k1": ["b"], "k2": ["a"], "k3": ["a", "b"], "k4": [], "k5": ["a"],
            "k6": ["b"], "k7": []}
    client = SimpleNamespace(who_has=lambda futures: held, nthreads=lambda: {"a": 2, "b": 4})
    groups = _by_worker(client, [SimpleNamespace(key=key) for key in held])
    assert [[future.key for future in group] for group in groups] == \
        [["k0", "k3"], ["k2", "k5"], ["k1"], ["k6"], ["k4", "k7"]]


def test_a_dask_dataframe_is_refused_as_fit_refuses_its_computed_frame(client):
    """The same errors as fit(df.compute()): the columns' from the frame's schema, before
    any work; the values' and ids' raised by the worker that reads them, which names the
    row in its partition, and its index."""
    from gpu_als.distributed import fit_distributed

    R = make_power_law(100, 50, 800, random_state=3)
    good = frame_of(R)
    bad_value = good.assign(value=good["value"].where(good.index != 700))  # a NaN
    bad_id = good.assign(user=good["user"].astype(float).where(good.index != 650))
    huge = good.assign(value=good["value"].astype(float).where(good.index != 300, 1e39))
    for df, changed in ((good.drop(columns="user"), {}),
                        (good.rename(columns={"value": "rating"}), {"feedback": "explicit"}),
                        (bad_value, {}), (bad_id, {}), (good.iloc[:0], {}),
                        (huge, {"dtype": np.float32})):  # (in a float64 partition)
        params = {**PARAMS, **changed}
        with pytest.raises((ValueError, TypeError)) as expected:
            ALS(**params).fit(df)
        # the row of the whole frame there; here the row of a partition, and its index;
        # and from_dataframe, which reads no Dask DataFrame, is not offered
        head, at_row, row = str(expected.value).replace(
            ", or use from_dataframe(df, user_col, item_col, value_col) and fit its matrix "
            "with user_ids= and item_ids=", "").rpartition("at row ")
        row, after = re.fullmatch(r"(\d*)(.*)", row, re.S).groups() if at_row else ("", row)
        said = re.escape(head + at_row) + rf"\d+ \(index {row}\)" + re.escape(after) \
            if at_row else re.escape(after)
        with pytest.raises(type(expected.value), match=f"^{said}$"):
            fit_distributed(ALS(**params), dask_frame(df, 3), client)
    with pytest.raises(TypeError, match="takes its ids from the DataFrame's"):
        fit_distributed(ALS(**PARAMS), dask_frame(good, 2), client, user_ids=np.arange(100))
    # a file that cannot be read: its error, not retried as a lost worker's
    dd = pytest.importorskip("dask.dataframe")
    from dask import delayed

    def gone():
        raise FileNotFoundError("events/part.1.parquet")

    unreadable = dd.from_delayed([delayed(good), delayed(gone)()], meta=good.iloc[:0])
    with pytest.raises(FileNotFoundError, match="^events/part.1.parquet$"):
        fit_distributed(ALS(**PARAMS), unreadable, client)
    # numbers in one partition, text in another: each reads, the two do not sort together
    # (where Dask leaves text as objects: by default it makes every such column text)
    import dask
    numbers = good.iloc[:400].assign(user=good["user"].iloc[:400].astype(object))
    text = good.iloc[400:].assign(user=good["user"].iloc[400:].astype(str).astype(object))
    with dask.config.set({"dataframe.convert-string": False}):
        mixed = dd.from_delayed([delayed(numbers), delayed(text)], meta=numbers.iloc[:0])
        with pytest.raises(TypeError, match="^column 'user' mixes ids of types int, str that "
                                            "cannot be sorted together; convert it first"):
            fit_distributed(ALS(**PARAMS), mixed, client)
    with pytest.raises(ValueError, match=r"this DataFrame has \['item', 'value'\] \('user' is "
                                         r"its index: pass df.reset_index\(\)\)$"):
        fit_distributed(ALS(**PARAMS), dask_frame(good.set_index("user"), 2), client)
    with pytest.warns(UserWarning, match=r"column\(s\) \['plays'\] are not used; to train on "
                                         r"one, name it 'value'"):
        fit_distributed(ALS(**PARAMS), dask_frame(good.rename(columns={"value": "plays"}), 2),
                        client)


def test_a_partition_that_fails_is_reported_while_the_others_are_read(client, tmp_path):
    """A partition with a NaN value fails the fit at once, not once every partition is
    read: here another partition's read waits until the fit has failed."""
    from dask import delayed

    from gpu_als.distributed import fit_distributed

    dd = pytest.importorskip("dask.dataframe")
    good = frame_of(make_power_law(100, 50, 800, random_state=3))
    bad = good.assign(value=good["value"].where(good.index != 5))
    marker = tmp_path / "failed"

    def slow():  # on a worker
        while not marker.exists():
            time.sleep(0.05)
        return good

    ddf = dd.from_delayed([delayed(slow, pure=False)(), delayed(bad)], meta=good.iloc[:0])
    failed = []

    def fit():
        try:
            fit_distributed(ALS(**PARAMS), ddf, client)
        except ValueError as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    try:
        thread.join(timeout=60)
    finally:
        marker.touch()
    assert failed and failed[0].startswith("column 'value' holds 1 missing, NaN or "
                                           "infinite value(s)"), failed


def test_a_worker_killed_while_a_dask_dataframe_is_read_is_survived(client, monkeypatch,
                                                                    tmp_path):
    """The read is started again: here a worker dies once the blocks are built, as it
    sums one up for the driver, and Dask, which has forgotten the partitions the blocks
    came from, cancels the rest ("already forgotten")."""
    from gpu_als import _dask_frames
    from gpu_als.distributed import fit_distributed

    totals, marker = _dask_frames._totals, str(tmp_path / "killed")

    def dies_once(*args):  # on a worker
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return totals(*args)

    monkeypatch.setattr(_dask_frames, "_totals", dies_once)
    df = frame_of(make_power_law(600, 200, 8_000, random_state=6))
    distributed = fit_distributed(ALS(**PARAMS), dask_frame(df, 6), client)
    assert os.path.exists(marker)
    np.testing.assert_allclose(distributed.item_factors_, ALS(**PARAMS).fit(df).item_factors_,
                               atol=1e-9)
    client.wait_for_workers(2, timeout=60)


def test_a_half_step_longer_than_the_watch_is_not_retried(client, monkeypatch, caplog):
    """The watch of the blocks' workers fires only for a worker that has left: half-steps
    that outlast many of its checks, their workers all there, run once each."""
    from gpu_als import distributed

    solve = distributed._solve_block

    def slow(*args):  # on a worker
        time.sleep(0.4)
        return solve(*args)

    monkeypatch.setattr(distributed, "_POLL_SECONDS", 0.05)
    monkeypatch.setattr(distributed, "_solve_block", slow)
    R = make_power_law(200, 100, 2_000, random_state=3)
    with caplog.at_level("WARNING", logger="gpu_als"):
        model = distributed.fit_distributed(ALS(**{**PARAMS, "iterations": 2}), R, client)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    np.testing.assert_allclose(model.item_factors_,
                               ALS(**{**PARAMS, "iterations": 2}).fit(R).item_factors_,
                               atol=1e-9)


def _given(block):
    return block


def _rows_of(block):
    return block.n_rows


def test_a_half_step_pinned_to_a_worker_that_left_is_retried_not_waited_for(
        client, monkeypatch, tmp_path):
    """A block that Dask can compute again (here: one sent in its task) is not lost with
    its worker, so Dask does not fail the tasks pinned to that worker: they would wait for
    it for ever. The half-step sees the worker gone and is retried."""
    from gpu_als import distributed

    place, solve = distributed._MatrixBlocks.place, distributed._solve_block

    def recomputable(self, client):
        placed = {side: [client.submit(_given, block, pure=False)
                         for (_, _, block) in self.blocks[side]] for side in place(self, client)}
        client.gather([client.submit(_rows_of, block) for blocks in placed.values()
                       for block in blocks])  # each on a worker
        return placed

    marker = str(tmp_path / "killed")

    def dies_once(*args):  # on a worker: the first block solved kills its worker
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return solve(*args)

    monkeypatch.setattr(distributed._MatrixBlocks, "place", recomputable)
    monkeypatch.setattr(distributed, "_solve_block", dies_once)
    R, fitted = make_power_law(600, 200, 8_000, random_state=5), []
    fit = threading.Thread(target=lambda: fitted.append(
        distributed.fit_distributed(ALS(**PARAMS), R, client)), daemon=True)
    fit.start()
    fit.join(timeout=60)
    assert os.path.exists(marker) and fitted, "the fit waited for a worker that had left"
    np.testing.assert_allclose(fitted[0].item_factors_, ALS(**PARAMS).fit(R).item_factors_,
                               atol=1e-9)
    client.wait_for_workers(2, timeout=60)


def event_log_folder(tmp_path, n_files=3):
    """A folder of ``n_files`` Parquet files of an event log (columns uid, iid, plays,
    event) of 300 users x 120 items, and its whole frame."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    R = make_power_law(300, 120, 3000, random_state=2).tocoo()
    log = pd.DataFrame({"uid": R.row * 3, "iid": [f"i{c}" for c in R.col], "plays": R.data,
                        "event": np.random.default_rng(0).choice(["view", "buy", "skip"],
                                                                 R.nnz)})
    folder = tmp_path / "events"
    folder.mkdir()
    for k in range(n_files):
        log.iloc[k::n_files].to_parquet(folder / f"part-{k}.parquet")
    return folder, log


@pytest.mark.parametrize("values", [["--value-col", "plays"],
                                    ["--event-weights", "event=view:1,buy:4,skip:0"]])
def test_the_command_line_has_the_workers_read_a_parquet_folder(client, tmp_path, capsys,
                                                                monkeypatch, values):
    """train --read-on-workers: the model of the same command without it (which reads the
    file here), and --init goes on from a model as it does there; this process reads no
    row (its read of the file fails)."""
    from gpu_als import _tables
    from gpu_als.cli import main

    folder, _ = event_log_folder(tmp_path)
    common = ["train", str(folder), "--user-col", "uid", "--item-col", "iid", *values,
              "--factors", "4", "--iterations", "3", "--backend", "cpu", "--dtype",
              "float64", "--scheduler", client.scheduler.address]
    assert main([*common, "-o", str(tmp_path / "here.npz")]) == 0
    assert main([*common, "--init", str(tmp_path / "here.npz"), "-o",
                 str(tmp_path / "here2.npz")]) == 0
    here = capsys.readouterr().out.splitlines()[0]

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read by this process")

    monkeypatch.setattr(_tables, "_read_frame", no_read)
    assert main([*common, "--read-on-workers", "-o", str(tmp_path / "workers.npz")]) == 0
    assert main([*common, "--read-on-workers", "--init", str(tmp_path / "workers.npz"), "-o",
                 str(tmp_path / "workers2.npz")]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    users_items = here.split(", ")[0]  # "...events: 300 users x 120 items"
    assert printed.startswith(f"{users_items}; read and trained on the Dask cluster at "
                              f"{client.scheduler.address} in "), printed
    for name in ("", "2"):
        expected = ALS.load(tmp_path / f"here{name}.npz")
        model = ALS.load(tmp_path / f"workers{name}.npz")
        np.testing.assert_allclose(model.user_factors_, expected.user_factors_, atol=1e-12)
        np.testing.assert_allclose(model.item_factors_, expected.item_factors_, atol=1e-12)
        np.testing.assert_array_equal(model.user_ids_, expected.user_ids_)
        np.testing.assert_array_equal(model.item_ids_, expected.item_ids_)
        assert model.loss_history_ == pytest.approx(expected.loss_history_, rel=1e-12)


def test_the_command_line_stops_early_on_workers_that_read_the_file(client, tmp_path, capsys,
                                                                   monkeypatch):
    """train --read-on-workers --early-stopping --validation FILE: the iterations, the
    printed lines and the model of the same command without --read-on-workers, which
    reads both files here; only the validation users' rows come to this process (a
    validation pair among them is not scored, here as there); with --validation-users,
    --min-value, and a file without values. Without --validation, refused."""
    from gpu_als import _tables
    from gpu_als.cli import main

    folder, log = event_log_folder(tmp_path)
    rng = np.random.default_rng(5)
    held = log.sample(50, random_state=1)  # the same users and items (ids alike), most
    held = held.assign(iid=held["iid"].sample(frac=1, random_state=2).to_numpy(),  # pairs new
                       plays=rng.integers(1, 9, len(held)).astype(float))
    held.to_csv(tmp_path / "validation.csv", index=False)
    read, read_here = _tables._read_frame, []

    def only_the_validation_file(args):
        read_here.append(args.file)
        assert args.file == tmp_path / "validation.csv", args.file
        return read(args)

    for extra in ([], ["--min-value", "3"], ["--validation-users", "5", "--min-value", "3"],
                  ["--metric", "ndcg", "--event-weights", "event=view:1,buy:4,skip:0"]):
        values = ["--value-col", "plays"] if "--event-weights" not in extra else []
        if "--event-weights" in extra:  # a log of labels: a validation file of labels too
            held.drop(columns="plays").to_csv(tmp_path / "validation.csv", index=False)
        common = ["train", str(folder), "--user-col", "uid", "--item-col", "iid", *values,
                  "--factors", "4", "--iterations", "8", "--backend", "cpu", "--dtype",
                  "float64", "--scheduler", client.scheduler.address, "--early-stopping",
                  "2", "--validation", str(tmp_path / "validation.csv"), *extra]
        monkeypatch.setattr(_tables, "_read_frame", read)
        assert main([*common, "-o", str(tmp_path / "here.npz")]) == 0
        here = capsys.readouterr().out.splitlines()
        read_here.clear()
        monkeypatch.setattr(_tables, "_read_frame", only_the_validation_file)
        assert main([*common, "--read-on-workers", "-o", str(tmp_path / "workers.npz")]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert read_here == [tmp_path / "validation.csv"]
        # "validating on the rows of ...: 50 rows (4 pairs already in ... not scored)"
        # against "...: 50 of the 2,050 rows (...)"; then the same early stopping line
        model = ALS.load(tmp_path / "workers.npz")
        if "--validation-users" in extra:  # drawn before the pairs in the rest are left out
            # (only the drawn users' rows are fetched): another sample than here's
            assert re.fullmatch(r"validating on the rows of .*validation.csv: 50 rows \(\d+ "
                                r"pairs? already in the rest not scored of the users "
                                r"sampled\)", printed[0]), printed
            best = re.fullmatch(r"early stopping: recall@10 on the rows of .*validation.csv "
                                r"\(a sample of 5 users\) \(values >= 3 relevant\) was "
                                r"best, [\d.]+, after (\d) iteration\(s\) .*", printed[1])
            assert best and model.iterations == int(best[1]), printed
            continue
        assert printed[0] == re.sub(r" of the [\d,]+ rows", " rows", here[0])
        assert printed[1] == here[1]
        expected = ALS.load(tmp_path / "here.npz")
        assert model.iterations == expected.iterations
        np.testing.assert_array_equal(model.user_ids_, expected.user_ids_)
        np.testing.assert_allclose(model.item_factors_, expected.item_factors_, atol=1e-10)
    refused = ["train", str(folder), "--user-col", "uid", "--item-col", "iid", "--backend",
               "cpu", "--scheduler", client.scheduler.address, "--read-on-workers",
               "--early-stopping", "2"]
    monkeypatch.setattr(_tables, "_read_frame", read)
    assert main(refused) == 2
    assert "--read-on-workers with --early-stopping validates on the rows of a " \
           "--validation file" in capsys.readouterr().err
    log.iloc[:20].to_csv(tmp_path / "seen.csv", index=False)
    assert main([*refused, "--value-col", "plays", "--validation", str(tmp_path / "seen.csv"),
                 "--min-value", "2"]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: --early-stopping: no row of --validation {tmp_path / 'seen.csv'} can be "
        f"scored (each of a pair already in {folder}, or of a value below --min-value 2)\n")
    held.rename(columns={"plays": "value"}).to_csv(tmp_path / "valued.csv", index=False)
    assert main([*refused, "--validation", str(tmp_path / "valued.csv")]) == 2  # (FILE: none)
    assert capsys.readouterr().err.endswith(
        f"error: --validation {tmp_path / 'valued.csv'} has the columns ['item', 'user', "
        f"'value'] and {folder} ['item', 'user'] (as fit(df) names them): give both files "
        f"the same\n")


def test_the_python_example_of_early_stopping_on_a_dask_dataframe_runs(client):
    """docs/distributed.md's example: EarlyStopping of a fit of a Dask DataFrame, on a
    validation frame, given its users' training rows alone; then the model of both for
    the best number of iterations."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    text = (Path(__file__).parent.parent / "docs" / "distributed.md").read_text()
    start = text.index("In Python the same takes a few lines")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    R = make_power_law(200, 80, 3000, random_state=3).tocoo()
    frame = pd.DataFrame({"user": R.row, "item": R.col, "value": R.data.astype(np.float64)})
    held = frame.sample(300, random_state=0)
    ddf = dd.from_pandas(frame.drop(held.index), npartitions=3)
    names = {"client": client, "ddf": ddf, "validation": held}
    exec(block, names)
    stop, model = names["stop"], names["model"]
    assert stop.best_iteration is not None and len(stop.scores) >= 4  # (patience 3)
    assert model.iterations == stop.best_iteration + 1 and model.loss_history_
    np.testing.assert_array_equal(model.user_ids_, np.unique(frame["user"]))


def in_memory(folder, name):
    """The files of ``folder`` copied into fsspec's in-memory filesystem (this process's
    alone) as memory://name/...: the filesystem, and the folder's URL."""
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for file in folder.iterdir():
        memory.pipe(f"/{name}/{file.name}", file.read_bytes())
    return memory, f"memory://{name}"


def test_the_command_line_has_the_workers_read_a_url(client, tmp_path, capsys):
    """train --read-on-workers with the URL of a Parquet folder, read through fsspec by
    the workers: file:// by worker processes, and memory:// (a filesystem that only this
    process has) by workers in this process, each the model of the folder read here; by
    worker processes, memory:// cannot be read, and the error says how they read it."""
    from dask.distributed import LocalCluster

    from gpu_als.cli import main

    folder, _ = event_log_folder(tmp_path)
    common = ["--user-col", "uid", "--item-col", "iid", "--value-col", "plays", "--factors",
              "4", "--iterations", "3", "--backend", "cpu", "--dtype", "float64"]
    assert main(["train", str(folder), *common, "-o", str(tmp_path / "here.npz")]) == 0
    assert main(["train", f"file://{folder}", *common, "--scheduler",
                 client.scheduler.address, "--read-on-workers", "-o",
                 str(tmp_path / "file.npz")]) == 0
    memory, url = in_memory(folder, tmp_path.name)
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=":0") as cluster:
            assert main(["train", url, *common, "--scheduler", cluster.scheduler_address,
                         "--read-on-workers", "-o", str(tmp_path / "memory.npz")]) == 0
        capsys.readouterr()
        assert main(["train", url, *common, "--scheduler", client.scheduler.address,
                     "--read-on-workers", "-o", str(tmp_path / "not.npz")]) == 2
        err = capsys.readouterr().err
        assert f"error: a worker cannot read {url} (" in err
        assert "--read-on-workers has every worker read it through fsspec, as this process " \
               "does: give them its protocol's package and credentials" in err
    finally:
        memory.rm(f"/{tmp_path.name}", recursive=True)
    expected = ALS.load(tmp_path / "here.npz")
    for name in ("file", "memory"):
        model = ALS.load(tmp_path / f"{name}.npz")
        np.testing.assert_allclose(model.item_factors_, expected.item_factors_, atol=1e-12)
        np.testing.assert_array_equal(model.user_ids_, expected.user_ids_)
    assert not (tmp_path / "not.npz").exists()


def test_the_command_line_refuses_what_the_workers_cannot_read(client, tmp_path, capsys,
                                                               monkeypatch):
    """train --read-on-workers: each file and option refused with why, before any worker
    reads (the file's footers are read here), or from the worker that found it (a label
    without a weight, a file it cannot find)."""
    from gpu_als import _tables, cli
    from gpu_als.cli import main

    folder, log = event_log_folder(tmp_path)
    csv = tmp_path / "events.csv"
    log.to_csv(csv, index=False)
    empty = tmp_path / "empty.parquet"
    log.iloc[:0].to_parquet(empty)
    address = client.scheduler.address
    ids = ["--user-col", "uid", "--item-col", "iid"]

    def refused(*args):
        assert main(["train", *map(str, args), "--backend", "cpu", "--read-on-workers",
                     "-o", str(tmp_path / "m.npz")]) == 2, args
        return capsys.readouterr().err

    assert "--read-on-workers has the workers of a Dask cluster read the file: give the " \
           "cluster's --scheduler too" in refused(folder, *ids)
    assert "--read-on-workers with --early-stopping validates on the rows of a --validation " \
           "file" in refused(folder, *ids, "--scheduler", address, "--early-stopping", "2")
    assert f"--read-on-workers reads Parquet, and {csv} is read as CSV: write it as " \
           f"Parquet" in refused(csv, *ids, "--scheduler", address)
    assert "standard input has none: name a Parquet file or folder" in refused(
        "-", *ids, "--scheduler", address)
    assert f"{folder} has no column 'user'; its columns are ['uid', 'iid', 'plays', " \
           f"'event']. Name the id columns with --user-col and --item-col (e.g. --user-col " \
           f"uid --item-col iid)" in refused(folder, "--scheduler", address)
    assert f"{folder} has no column 'play' for --value-col; its columns are ['uid', 'iid', " \
           f"'plays', 'event'] (did you mean --value-col plays?)" in refused(
               folder, *ids, "--value-col", "play", "--scheduler", address)
    assert f"{folder} has no column 'value': --feedback explicit learns ratings" in refused(
        folder, *ids, "--feedback", "explicit", "--scheduler", address)
    assert f"{folder} has no column 'kind' for --event-weights" in refused(
        folder, *ids, "--event-weights", "kind=view:1", "--scheduler", address)
    assert f"--event-weights gives every row of {folder} the weight 0" in refused(
        folder, *ids, "--event-weights", "event=view:0,buy:0,skip:0", "--scheduler", address)
    assert f"{folder} has a column 'plays' already: --event-weights makes the values" in \
        refused(folder, *ids, "--event-weights", "event=view:1", "--value-col", "plays",
                "--scheduler", address)
    assert f"{empty} has no rows" in refused(empty, *ids, "--scheduler", address)
    # found by a worker, a partition at a time
    err = refused(folder, *ids, "--event-weights", "event=view:1,buy:4", "--scheduler",
                  address)
    assert re.search(r"error: --event-weights gives no weight to 1 label\(s\) of column "
                     r"'event': 'skip' \(\d+ rows in the partition a worker read\)", err), err
    real = _tables.dask_frame

    def then_gone(args, feedback):  # the file where this process sees it, not the workers
        frame = real(args, feedback)
        for file in folder.iterdir():
            file.unlink()
        return frame

    monkeypatch.setattr(cli, "dask_frame", then_gone)
    err = refused(folder, *ids, "--scheduler", address)
    assert f"error: a worker cannot read {folder} (" in err
    assert f"--read-on-workers has every worker read it at {folder.resolve()}, as this " \
           f"process does (a shared file system)" in err
    assert not (tmp_path / "m.npz").exists()


def tuned_with_warnings(tune_call):
    """``tune_call()``'s result, and its warnings' messages, sorted (a cluster's trials
    end, and warn, in any order)."""
    result, said = fits_with_warnings(tune_call)
    return result, sorted(said)


def test_tune_on_a_cluster_finds_what_tune_finds_here(client):
    """tune(client=...): the trials (scores, rungs reached, errors), the warnings, the best
    and the refitted model of the search in this process. Halving runs 3 rungs. A value of
    1e39 fails the float32 trials before training (beyond float32's range) and some
    float64 ones in training (their factors overflow); 400 factors without
    regularization fail before training (a singular Gram matrix)."""
    from gpu_als.tune import tune

    R = make_power_law(400, 300, 8000, random_state=4).astype(np.float64)
    R[0, R[0].indices[0]] = 1e39  # beyond float32's range
    grid = [{"factors": [4, 8], "regularization": [0.01, 0.1], "alpha": [1.0, 20.0],
             "dtype": ["float32", "float64"]},
            {"factors": [400], "regularization": [0.0], "dtype": ["float64"]}]
    kw = dict(base_params={"backend": "cpu", "iterations": 9}, show_progress=False,
              min_iterations=1)
    here, said_here = tuned_with_warnings(lambda: tune(R, grid, **kw))
    there, said_there = tuned_with_warnings(lambda: tune(R, grid, client=client, **kw))
    assert said_there == said_here
    assert sum("failed before training: ValueError" in message for message in said_here) \
        == 9
    assert any("failed training to 1 iterations: FloatingPointError" in message
               for message in said_here)
    assert len(there.trials) == len(here.trials) == 17
    trained = [t["seconds"] for t in there.trials if t["iterations_trained"]]
    assert trained and all(0 < seconds < 60 for seconds in trained)  # (timed on a worker)
    assert {t["iterations_trained"] for t in here.trials} == {0, 1, 3, 9}
    for a, b in zip(there.trials, here.trials):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k not in ("score", "seconds")} == \
            {k: v for k, v in b.items() if k not in ("score", "seconds")}
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-9)
    assert there.best_params == here.best_params and there.backend == here.backend == "cpu"
    np.testing.assert_allclose(there.model.item_factors_, here.model.item_factors_,
                               atol=1e-9)
    assert there.model.backend == "cpu"


@pytest.mark.parametrize("workers", [2, 1])
def test_tune_survives_a_worker_killed_in_a_later_rung(client, monkeypatch, tmp_path,
                                                       workers):
    """A worker dies at the start of the second rung, with first rungs in its memory: the
    search ends as in this process, whether Dask computes the lost rungs again or cancels
    them (Dask 2024.1 does: then the trials are trained again from the start). On a
    cluster of one worker, the training and validation parts die with it, and are sent
    again to the worker its nanny starts."""
    from gpu_als import tune as tune_module

    rung, marker = tune_module._trial_rung, str(tmp_path / "killed")

    def dies_once(params, fit_part, validation, previous, *args):  # on a worker
        if previous is not None and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return rung(params, fit_part, validation, previous, *args)

    R = make_power_law(300, 200, 5000, random_state=5)
    kw = dict(param_grid={"factors": [4, 8, 16], "alpha": [1.0, 10.0, 40.0]},
              base_params={"backend": "cpu", "iterations": 9, "dtype": "float64"},
              show_progress=False, refit=False)
    here = tune_module.tune(R, **kw)
    monkeypatch.setattr(tune_module, "_trial_rung", dies_once)
    with contextlib.ExitStack() as stack:
        if workers == 1:
            from dask.distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"))
            on = stack.enter_context(Client(cluster))
        else:
            on = client
        there = tune_module.tune(R, client=on, **kw)
    assert os.path.exists(marker)
    assert [t["score"] for t in there.trials] == pytest.approx(
        [t["score"] for t in here.trials], rel=1e-9)
    assert there.best_params == here.best_params
    client.wait_for_workers(2, timeout=60)


def test_a_trial_whose_rung_was_lost_is_trained_again_from_the_start(monkeypatch, caplog):
    """A rung's future cancelled, as Dask 2024.1 cancels one whose last rung was lost with
    its worker (the rungs before it are forgotten, so that Dask cannot compute it
    again): the trial is trained again from the start to that rung, the same model,
    and the search fails once a trial has lost its worker 4 times. In-process workers,
    so that the patched scoring is theirs."""
    import logging
    from concurrent.futures import CancelledError

    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        pytest.skip(f"dask.distributed is not installed: {exc}")
    from gpu_als import tune as tune_module

    score, calls = tune_module.validation_score, []

    def cancelled_at(when):
        def scored(*args):  # (looked up in the module as a rung runs: this very object)
            calls.append(1)
            if when(len(calls)):
                raise CancelledError("a rung lost with its worker")
            return score(*args)
        return scored

    R = make_power_law(300, 200, 5000, random_state=5)
    kw = dict(param_grid={"factors": [4, 8, 16], "alpha": [1.0, 10.0, 40.0]},
              base_params={"backend": "cpu", "iterations": 9, "dtype": "float64"},
              show_progress=False, refit=False)
    here = tune_module.tune(R, **kw)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        # the first trial scored at the second rung (9 trials at the first)
        monkeypatch.setattr(tune_module, "validation_score", cancelled_at(lambda n: n == 10))
        with caplog.at_level(logging.WARNING, logger="gpu_als"):
            there = tune_module.tune(R, client=client, **kw)
        assert len(calls) == 9 + 3 + 1  # 9 trials, the best 3, the lost one again
        assert [t["score"] for t in there.trials] == pytest.approx(
            [t["score"] for t in here.trials], rel=1e-9)
        assert re.search(r"tune: trial \d lost its worker \(CancelledError: a rung lost "
                         r"with its worker\); training it again from the start", caplog.text)
        calls.clear()  # now every trial at the second rung, every time
        monkeypatch.setattr(tune_module, "validation_score", cancelled_at(lambda n: n > 9))
        with pytest.raises(RuntimeError, match=r"tune on a cluster: trial \d lost its "
                                               r"worker 4 times, last with CancelledError"):
            tune_module.tune(R, client=client, **kw)


def test_tune_on_a_cluster_refuses_what_it_cannot_send(client):
    """A client that is none, a backend that is no name, data that no trial can take."""
    from gpu_als.backends import get_backend
    from gpu_als.tune import tune

    R = make_power_law(40, 30, 300, random_state=4)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client, got str"):
        tune(R, client="tcp://127.0.0.1:8786")
    with pytest.raises(TypeError, match="tune on a cluster needs a backend name"):
        tune(R, base_params={"backend": get_backend("cpu")}, client=client)
    # every trial's dtype refused before any trains, as in one process (found by a fuzz:
    # each trial failed on its worker, and the search with "every trial failed")
    R = R.astype(np.float64)
    R.data[0] = 1e39
    with pytest.raises(ValueError, match="^user_items holds 1 value.s. beyond float32's"):
        tune(R, client=client)


def test_a_refit_that_fails_on_its_worker_raises_here_after_its_warnings(monkeypatch):
    """The refit's error is raised in this process, and the warnings it gave first are
    given too, as a refit in this process gives them (a fuzz found them lost). In-process
    workers, so that the patched fit is theirs."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        pytest.skip(f"dask.distributed is not installed: {exc}")
    from gpu_als.tune import tune

    def failing_fit(self, *args, **kwargs):  # (the trials train through Training)
        import warnings

        warnings.warn("said before failing", UserWarning, stacklevel=2)
        raise ValueError("the refit failed")

    monkeypatch.setattr(ALS, "fit", failing_fit)
    R = make_power_law(40, 30, 300, random_state=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        with pytest.warns(UserWarning, match="said before failing"), \
                pytest.raises(ValueError, match="the refit failed"):
            tune(R, {"factors": [2, 3]}, base_params={"backend": "cpu", "iterations": 2},
                 show_progress=False, client=client)


def test_the_command_line_tunes_on_a_cluster_as_it_does_here(client, tmp_path, capsys):
    """gpu-als tune --scheduler: the trials file and the best model of the command
    without it."""
    pd = pytest.importorskip("pandas")
    from gpu_als.cli import main

    R = make_power_law(200, 100, 3000, random_state=3).tocoo()
    file = tmp_path / "clicks.csv"
    pd.DataFrame({"user": R.row, "item": R.col, "value": R.data}).to_csv(file, index=False)
    address = client.scheduler.address
    trials, models = [], []
    for k, where in enumerate(([], ["--scheduler", address])):
        assert main(["tune", str(file), "--grid", "factors=4,8", "--grid",
                     "regularization=0.01,0.1", "--iterations", "6", "--backend", "cpu",
                     "--trials", str(tmp_path / f"t{k}.csv"), "-o",
                     str(tmp_path / f"m{k}.npz"), *where]) == 0
        trials.append(pd.read_csv(tmp_path / f"t{k}.csv").drop(columns="seconds"))
        models.append(ALS.load(tmp_path / f"m{k}.npz", backend="cpu"))
    out = capsys.readouterr().out
    assert f"on 'cpu' workers of the Dask cluster at {address}" in out
    pd.testing.assert_frame_equal(trials[1], trials[0], rtol=1e-5)
    np.testing.assert_allclose(models[1].item_factors_, models[0].item_factors_, atol=1e-5)
    np.testing.assert_array_equal(models[1].user_ids_, models[0].user_ids_)


def test_a_gpu_workers_numerically_singular_shared_part_is_named_as_fit_names_it(
        monkeypatch):
    """8 factors of 5 users, regularization 1e-6: X^T X + lambda I turns numerically
    singular after the first user half-step. A CPU worker refuses it; a GPU worker's
    Cholesky made NaN of it, which the driver named "numerically unstable in float32;
    use dtype=float64". Now the driver checks the Gram matrix it sent and says what the
    single-process fit says (on the emulated GPU worker, in this process)."""
    import warnings

    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        pytest.skip(f"dask.distributed is not installed: {exc}")
    from gpu_als import distributed as distributed_module
    from gpu_als.distributed import fit_distributed

    gpu_named_emulated(monkeypatch, [distributed_module], distributed_module)
    R = random_interactions(5, 20, 0.5, seed=1)
    params = {**PARAMS, "factors": 8, "regularization": 1e-6, "backend": "gpu",
              "dtype": np.float32, "random_state": 0}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (more factors than users)
        with pytest.raises(ValueError, match=r"^regularization=1e-06: Y\^T Y \+ "
                                             r"regularization \* I is numerically singular "
                                             r"\(factors=8 with 5 fixed-side rows\)"):
            fit_distributed(ALS(**params), R, client)


def gpu_named_emulated(monkeypatch, modules: list, or_cpu_in):
    """The emulated GPU backend, which the name "gpu" resolves to in ``modules`` (their
    ``get_backend``) and ``or_cpu_in`` (its ``get_backend_or_cpu``), for in-process
    workers; and the list of the rows put on it."""
    from gpu_als.backends import get_backend

    emulated, puts = emulated_backend(), []
    put = emulated.put
    monkeypatch.setattr(emulated, "put", lambda rows: puts.append(rows) or put(rows))
    for module in modules:
        monkeypatch.setattr(module, "get_backend",
                            lambda name: emulated if name == "gpu" else get_backend(name))
    monkeypatch.setattr(or_cpu_in, "get_backend_or_cpu",
                        lambda name, what: emulated if name == "gpu" else get_backend(name))
    return emulated, puts


@pytest.mark.parametrize("source", ["matrix", "dask frame"])
@pytest.mark.parametrize("backend", ["gpu-emulated", pytest.param("gpu", marks=needs_gpu)])
def test_a_gpu_worker_fits_as_the_gpu_backend_does(backend, source, monkeypatch):
    """Workers on the GPU backend: the blocks put on the device once, the factors and Grams
    copied back to the driver; the model of ``ALS(backend="gpu").fit``, a GPU model in the
    driver. One worker thread in this process (a GPU is one device; without one, the name
    "gpu" resolves to the emulated backend here, which worker processes would not see)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # the GPU machine has Dask only from the carried wheels
        pytest.skip(f"dask.distributed is not installed: {exc}")
    from gpu_als import distributed as distributed_module
    from gpu_als.distributed import fit_distributed

    single_backend, puts = "gpu", []
    if backend == "gpu-emulated":
        single_backend, puts = gpu_named_emulated(monkeypatch, [distributed_module],
                                                  distributed_module)
    R = make_power_law(60, 30, 400, random_state=5, device="cpu")
    if source == "dask frame":  # the same matrix: user and item ids 0..n-1
        R = R.tocoo()
        given = dask_frame(frame_of(R).assign(user=R.row, item=R.col), 3)
        R = R.tocsr()
    else:
        given = R
    params = {**PARAMS, "backend": "gpu", "iterations": 2}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        distributed = fit_distributed(ALS(**params), given, client)
    if backend == "gpu-emulated":
        assert len(puts) == 2  # each side's one block, once for the whole fit
    single = ALS(**{**params, "backend": single_backend}).fit(R)
    assert distributed.backend_ == single.backend_ == "gpu"
    np.testing.assert_allclose(distributed.to_cpu().item_factors_,
                               single.to_cpu().item_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.to_cpu().user_factors_,
                               single.to_cpu().user_factors_, atol=1e-9)
    np.testing.assert_allclose(distributed.loss_history_, single.loss_history_, rtol=1e-9)
    ids, _ = distributed.recommend(np.arange(5), R[:5], N=4)
    np.testing.assert_array_equal(ids, single.recommend(np.arange(5), R[:5], N=4)[0])



@pytest.mark.parametrize("backend", ["gpu-emulated", pytest.param("gpu", marks=needs_gpu)])
def test_tune_on_a_gpu_worker_finds_what_tune_finds_here(backend, monkeypatch):
    """tune(client=...) with workers on the GPU backend: each trial's factors go from
    the device to the host and back between rungs (Training.state and resume), the
    training part is put on the device once per worker, dtype and weighting, and the
    search, its scores and its refitted model (a GPU model here) are those of tune on
    the GPU in this process. One worker thread in this process, as above."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        pytest.skip(f"dask.distributed is not installed: {exc}")
    from gpu_als import tune as tune_module

    here_backend, puts = "gpu", []
    if backend == "gpu-emulated":
        from gpu_als import _training, model

        here_backend, puts = gpu_named_emulated(monkeypatch, [tune_module, _training, model],
                                                tune_module)
    R = make_power_law(60, 30, 400, random_state=5, device="cpu")
    kw = dict(param_grid={"factors": [3, 5], "alpha": [1.0, 10.0]}, min_iterations=1,
              show_progress=False)
    base = {"iterations": 3, "dtype": "float64"}
    here = tune_module.tune(R, base_params={**base, "backend": here_backend}, **kw)
    puts.clear()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        there = tune_module.tune(R, base_params={**base, "backend": "gpu"}, client=client,
                                 **kw)
    if backend == "gpu-emulated":  # each alpha's two sides once (not at each of the 2
        assert len(puts) == 2 * 2 + 2  # rungs), then the refit's
    assert there.backend == "gpu" and there.model.backend_ == "gpu"
    assert [t["iterations_trained"] for t in there.trials] == \
        [t["iterations_trained"] for t in here.trials]
    assert [t["score"] for t in there.trials] == pytest.approx(
        [t["score"] for t in here.trials], rel=1e-9)
    np.testing.assert_allclose(there.model.to_cpu().item_factors_,
                               here.model.to_cpu().item_factors_, atol=1e-9)
