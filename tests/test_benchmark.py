"""The benchmark (gpu_als/benchmark.py) on a tiny synthetic set: its rows, its shared
objective with the implicit library, its GPU phase profile (emulated), its charts."""

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gpu_als import ALS, benchmark
from gpu_als.backends import gpu
from gpu_als.cli import main as cli_main

from .conftest import emulated_backend, random_interactions, skip_or_fail

TINY = benchmark.Dataset("tiny", 300, 120, 4_000, iterations=4)

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def benchmark_script(name: str):
    """The module ``benchmarks/<name>.py`` (the folder is not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmark.DATASETS, "tiny", TINY)
    return str(benchmark.prepare(TINY, tmp_path))


def spec(path, library="gpu_als", backend="cpu", solver="cholesky", factors=8):
    return {"dataset": "tiny", "path": path, "factors": factors, "library": library,
            "backend": backend, "solver": solver, "iterations": 4}


def needs_implicit():
    try:
        import implicit.cpu.als  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"implicit is not installed: {exc}")


def test_a_row_has_every_field(tiny, monkeypatch):
    readings = iter([1000, 5000])  # the process's peak RSS, before the fit and after it
    monkeypatch.setattr(benchmark, "_max_rss_bytes", lambda: next(readings))
    started = time.perf_counter()
    row = benchmark.run_one(spec(tiny))
    wall = time.perf_counter() - started
    assert (row["users"], row["items"], row["nnz"]) == (300, 120, 4_000)
    assert row["seconds_per_iteration"] > 0 and row["first_iteration_seconds"] > 0
    assert row["seconds_per_iteration"] + row["first_iteration_seconds"] < wall
    # the benchmark's fit is a normal fit, and the shared loss function agrees with the
    # loss that fit reports
    fitted = ALS(factors=8, regularization=benchmark.REGULARIZATION, alpha=benchmark.ALPHA,
                 iterations=4, random_state=benchmark.SEED, backend="cpu",
                 show_progress=False).fit(benchmark._load(tiny)[0])
    assert row["final_loss"] == pytest.approx(fitted.loss_history_[-1], rel=1e-6)
    assert set(row["phases"]) == {"user", "item"}
    for side in row["phases"].values():
        assert set(side) == {"fixed_gram", "shared", "gram_build", "solve"}
        assert all(seconds >= 0 for seconds in side.values())
    assert sum(sum(side.values()) for side in row["phases"].values()) < wall
    assert row["gram_seconds"] == pytest.approx(
        sum(side["gram_build"] for side in row["phases"].values()))
    # 2 nnz k^2 FLOP per half-step, two half-steps
    assert row["gram_gflops"] == pytest.approx(4 * 4_000 * 8**2 / row["gram_seconds"] / 1e9)
    assert (row["host_before_fit_bytes"], row["host_peak_bytes"]) == (1000, 5000)
    assert row["setup_seconds"] > 0  # the CSR's both orientations, the initial factors
    assert row["device_peak_bytes"] is None
    assert row["csr_and_factors_bytes"] == 2 * (4_000 * 8 + 301 * 4) + 420 * 8 * 4
    json.dumps(row)  # goes to a JSON file as it is


def test_implicit_fed_our_confidences_solves_our_objective(tiny):
    """Same start, same objective: the exact solvers agree to float32 rounding, and CG
    (3 steps from the same start, both libraries) to its own approximation."""
    needs_implicit()
    ours = benchmark.run_one(spec(tiny))
    theirs = benchmark.run_one(spec(tiny, library="implicit"))
    assert theirs["final_loss"] == pytest.approx(ours["final_loss"], rel=1e-4)
    ours_cg = benchmark.run_one(spec(tiny, solver="cg"))
    theirs_cg = benchmark.run_one(spec(tiny, library="implicit", solver="cg"))
    assert theirs_cg["final_loss"] == pytest.approx(ours_cg["final_loss"], rel=1e-3)
    assert ours_cg["final_loss"] >= ours["final_loss"] * (1 - 1e-6)  # CG is no better
    # the factors themselves, after 2 iterations (where the losses of different starts, or
    # of CG and the exact solver, can still be close): float32 rounding apart for the exact
    # solvers, CG's own rounding apart for CG; CG and exact differ by percents
    R, _ = benchmark._load(tiny)
    factors = {}
    for library in ("gpu_als", "implicit"):
        fit = benchmark._fit_gpu_als if library == "gpu_als" else benchmark._fit_implicit
        for solver in ("cholesky", "cg"):
            done = fit(R, {**spec(tiny, library=library, solver=solver), "iterations": 2})
            factors[library, solver] = np.vstack([done["X"], done["Y"]])
    scale = np.abs(factors["gpu_als", "cholesky"]).max()
    for solver, tolerance in (("cholesky", 2e-5), ("cg", 5e-4)):
        np.testing.assert_allclose(factors["implicit", solver], factors["gpu_als", solver],
                                   atol=tolerance * scale, rtol=0)
    assert np.abs(factors["gpu_als", "cg"] - factors["gpu_als", "cholesky"]).max() > \
        0.01 * scale


def test_gpu_phases_are_profiled_on_both_gpu_paths(tiny, monkeypatch):
    """The GPU backend's profile, through the host emulation of the kernels: the fused
    path's phases, and the two-kernel path's Gram build and solve timed apart; no kernel
    is compiled inside a timed half-step (the plain copies' binaries are built first)."""
    from gpu_als.backends import gpu
    from gpu_als.datasets import make_power_law

    compiled_while_timed = []
    launch = gpu.GPUBackend._launch

    def watching(self, file, name, grid, args, shared=0, threads=None):
        if self.timer is not None and (file, self._defines) not in self.runtime._modules:
            compiled_while_timed.append((file, self._defines))
        return launch(self, file, name, grid, args, shared, threads)

    monkeypatch.setattr(gpu.GPUBackend, "_launch", watching)
    backend = emulated_backend()
    R = make_power_law(40, 30, 300, random_state=1, device="cpu")  # rows up to 30 > split 24
    fit_spec = {**spec(tiny, factors=6), "backend": backend, "iterations": 2}
    row = benchmark._fit_gpu_als(R, fit_spec)
    row.update(benchmark._profile_phases(row.pop("training"), fit_spec))
    assert compiled_while_timed == []
    assert not [key for key in row if key.startswith("phases") and "error" in row[key]]
    assert {key for key in row if key.startswith("phases")} == \
        {"phases", "phases_two_kernel", "phases_no_woodbury", "phases_woodbury25",
         "phases_woodbury100", "phases_threads128", "phases_threads256",
         "phases_plain_copies"}
    # k = 6: rows of up to 1 entry on the Woodbury path at 25 %, 3 by default, 6 at 100 %
    assert all(row["phases_woodbury100"][side]["woodbury"] > 0 for side in ("user", "item"))
    assert all(row[f"phases_threads{n}"][side]["fused"] > 0
               for n in (128, 256) for side in ("user", "item"))
    for side in ("user", "item"):
        assert {"fixed_gram", "shared", "fused"} <= set(row["phases"][side])
        two_kernel = row["phases_two_kernel"][side]
        # every row through gram.cu and cholesky.cu: none fused, none split apart
        assert set(two_kernel) == {"fixed_gram", "shared", "gram_build", "solve"}
        assert two_kernel["gram_build"] > 0 and two_kernel["solve"] > 0
    assert np.isfinite(row["X"]).all() and len(row["stamps"]) == 3
    # With the default tile (32 rows), the fused kernel is profiled with smaller ones too.
    wide = backend.with_options(tile_rows=32)
    assert wide.split_length == backend.split_length and wide.runtime is backend.runtime
    row = benchmark._fit_gpu_als(R, {**fit_spec, "backend": wide})
    profiled = benchmark._profile_phases(row.pop("training"), fit_spec)
    assert set(profiled) == {"phases", "phases_two_kernel", "phases_no_woodbury",
                             "phases_tile8", "phases_tile16", "phases_woodbury25",
                             "phases_woodbury100", "phases_threads128",
                             "phases_threads256", "phases_plain_copies"}
    assert all(profiled["phases_tile8"][side]["fused"] > 0 for side in ("user", "item"))
    assert not [key for key, phases in profiled.items() if "error" in phases]


@pytest.mark.parametrize(("name", "solver", "steps"), [
    ("cholesky", "cholesky", 3), ("cg", "cg", 3), ("pcg", "pcg", 3), ("pcg2", "pcg", 2),
    ("nnls", "nnls", 3)])
def test_each_implementation_fits_with_its_solver_and_steps(tiny, name, solver, steps):
    from gpu_als.datasets import make_power_law

    R = make_power_law(40, 30, 300, random_state=1, device="cpu")
    row = benchmark._fit_gpu_als(R, {**spec(tiny, solver=name), "iterations": 1})
    assert (row["training"].p["solver"], row["training"].p["cg_steps"]) == (solver, steps)
    assert set(benchmark.GPU_ALS_SOLVERS) == {
        i.solver for i in benchmark.IMPLEMENTATIONS.values() if i.library == "gpu_als"}


def test_the_cusolver_implementation_builds_with_the_kernels_and_solves_with_cusolver(tiny):
    """gpu_als-gpu-cusolver (emulated cuSOLVER): every row's system is built by gram.cu and
    solved by potrf/potrs; same solution as the kernels' exact solver."""
    from gpu_als.datasets import make_power_law

    R = make_power_law(40, 30, 300, random_state=1, device="cpu")
    rows = {}
    for solver in ("cholesky", "cusolver"):
        fit_spec = {**spec(tiny, factors=6, solver=solver), "backend": emulated_backend(),
                    "iterations": 2}
        rows[solver] = benchmark._fit_gpu_als(R, fit_spec)
        assert rows[solver]["training"].backend.cholesky == \
            ("cusolver" if solver == "cusolver" else "kernels")
        rows[solver].update(benchmark._profile_phases(rows[solver].pop("training"), fit_spec))
    phases = rows["cusolver"]["phases"]
    for side in ("user", "item"):
        assert {"fixed_gram", "shared", "gram_build", "solve"} == set(phases[side])
    assert "phases_two_kernel" not in rows["cusolver"]
    X = rows["cholesky"]["X"]  # float32, two iterations: the tolerance of test_solver
    np.testing.assert_allclose(rows["cusolver"]["X"], X, atol=2e-4 * np.abs(X).max())
    with pytest.raises(ValueError, match="needs the GPU backend"):
        benchmark._gpu_als_solver({**spec(tiny, solver="cusolver"), "backend": "cpu"})


def test_run_end_to_end_in_subprocesses(tiny, tmp_path):
    rows = []
    result = benchmark.run("quick", datasets=["tiny"], factors=[4, 8],
                           implementations=["gpu_als-cpu-cholesky", "gpu_als-cpu-cg",
                                            "gpu_als-gpu-cholesky"],
                           cache=tmp_path, on_row=rows.append)
    assert result["benchmarks"] == rows
    got = sorted((r["factors"], r["solver"]) for r in rows)
    if benchmark.unavailable(benchmark.IMPLEMENTATIONS["gpu_als-gpu-cholesky"]) is None:
        assert len(got) == 6
    else:  # the GPU implementation is skipped, not failed
        assert got == [(4, "cg"), (4, "cholesky"), (8, "cg"), (8, "cholesky")]
    assert not any("error" in r for r in rows)
    for key in ("commit", "date", "device", "host", "versions"):
        assert result[key]
    assert result["comparisons"] == []  # no implicit rows


def test_the_opt_in_implementations_run_only_when_named(tiny, tmp_path, monkeypatch,
                                                         capsys):
    """NNLS solves another problem than implicit's: timed when named, never by default."""
    opt_in = {"gpu_als-gpu-nnls", "gpu_als-cpu-nnls"}
    assert opt_in <= set(benchmark.IMPLEMENTATIONS)
    assert set(benchmark.IMPLEMENTATIONS) - set(benchmark.DEFAULT_IMPLEMENTATIONS) == opt_in
    available = benchmark.unavailable
    monkeypatch.setattr(benchmark, "unavailable", lambda implementation: "(test)")
    with pytest.raises(ValueError, match="none of the implementations"):
        benchmark.run("quick", datasets=["tiny"], factors=[4], cache=tmp_path)
    skipped = capsys.readouterr().out
    assert skipped.count("skipping ") == len(benchmark.DEFAULT_IMPLEMENTATIONS)
    assert "nnls" not in skipped
    monkeypatch.setattr(benchmark, "unavailable", available)
    rows = benchmark.run("quick", datasets=["tiny"], factors=[4], cache=tmp_path,
                         implementations=["gpu_als-cpu-nnls"])["benchmarks"]
    assert [(r["solver"], "error" in r) for r in rows] == [("nnls", False)]


def test_command_line_keeps_each_row_as_it_comes(tiny, tmp_path, monkeypatch):
    """`gpu-als bench` rewrites its JSON after every fit: a run cut short (a time limit on
    a GPU machine) keeps the rows it measured. --output may name a folder."""
    monkeypatch.setenv("GPU_ALS_BENCH_CACHE", str(Path(tiny).parent))
    real = benchmark._run_subprocess
    calls = []

    def cut_short(spec, timeout):
        calls.append(spec)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as a run killed after its first fit
        return real(spec, timeout)

    monkeypatch.setattr(benchmark, "_run_subprocess", cut_short)
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(["--full", "--datasets", "tiny", "--factors", "4", "8",
                        "--implementations", "gpu_als-cpu-cholesky", "--output", str(tmp_path)])
    [written] = tmp_path.glob("bench-*.json")
    document = json.loads(written.read_text())
    assert [(r["factors"], r["solver"]) for r in document["benchmarks"]] == [(4, "cholesky")]
    assert "error" not in document["benchmarks"][0] and document["device"]
    assert document["profile"] == "full"
    # without --output: into benchmarks/results/ under the working folder, made as needed
    calls.clear()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(["--full", "--datasets", "tiny", "--factors", "4", "8",
                        "--implementations", "gpu_als-cpu-cholesky"])
    [default] = (tmp_path / "elsewhere" / "benchmarks" / "results").glob("bench-*.json")
    assert default.name == written.name


def test_own_matrices_are_datasets_named_by_their_files(tmp_path, capsys):
    """--matrix: a users x items matrix saved by scipy.sparse.save_npz is timed as the
    synthetic sets are (its shape and entries in the rows, its own loss), alone where no
    dataset is named; a file that is not one, or whose name is taken, is refused before
    any fit."""
    import scipy.sparse as sp

    from gpu_als.datasets import make_power_law

    R = make_power_law(200, 80, 2_500, random_state=3)
    clicks = tmp_path / "clicks.npz"
    sp.save_npz(clicks, R)
    assert benchmark.matrix_dataset(clicks) == benchmark.Dataset("clicks", 200, 80, 2_500,
                                                                 file=str(clicks))
    rows = []
    result = benchmark.run("quick", factors=[4], implementations=["gpu_als-cpu-cholesky"],
                           matrices=[clicks], cache=tmp_path, on_row=rows.append)
    [row] = result["benchmarks"]
    assert (row["dataset"], row["users"], row["items"], row["nnz"]) == ("clicks", 200, 80,
                                                                        2_500)
    fitted = ALS(factors=4, regularization=benchmark.REGULARIZATION, alpha=benchmark.ALPHA,
                 iterations=row["iterations"], random_state=benchmark.SEED, backend="cpu",
                 show_progress=False).fit(R)
    assert row["final_loss"] == pytest.approx(fitted.loss_history_[-1], rel=1e-6)
    assert row["iterations"] == benchmark.PROFILES["quick"]["iterations"]
    assert [r["dataset"] for r in benchmark.run(
        "quick", datasets=["ml-100k"], factors=[4], implementations=["gpu_als-cpu-cholesky"],
        matrices=[clicks], cache=tmp_path, cpu_max_nnz=3_000)["benchmarks"]] == ["clicks"]
    assert "skipping ml-100k: nothing to run on it here" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"clicks: .* run up to 1 interaction\)"):
        benchmark.run("quick", factors=[4], implementations=["gpu_als-cpu-cholesky"],
                      matrices=[clicks], cache=tmp_path, cpu_max_nnz=1)
    (tmp_path / "table.csv").write_text("user,item\n1,2\n")
    (tmp_path / "folder.npz").mkdir()
    sp.save_npz(tmp_path / "empty.npz", sp.csr_matrix((3, 4)))
    (tmp_path / "ml-100k.npz").write_bytes(clicks.read_bytes())
    for name, error in (("table.csv", r"not a sparse matrix saved by scipy.sparse.save_npz"),
                        ("none.npz", "no such file"),
                        ("folder.npz", "a folder, not a file"),
                        ("empty.npz", r"a matrix of shape \(3, 4\) with 0 stored entries"),
                        ("ml-100k.npz", r"its name 'ml-100k' is taken")):
        with pytest.raises(ValueError, match=rf"--matrix .*{re.escape(name)}: {error}"):
            benchmark.run("quick", factors=[4], implementations=["gpu_als-cpu-cholesky"],
                          matrices=[tmp_path / name], cache=tmp_path)
    with pytest.raises(ValueError, match=r"its name 'clicks' is taken .*another --matrix"):
        benchmark.run("quick", matrices=[clicks, clicks], cache=tmp_path)


def test_a_failing_fit_is_a_row_with_its_error(tmp_path):
    row = benchmark._run_subprocess(spec(str(tmp_path / "missing.npz")), timeout=120)
    assert "error" in row and "missing.npz" in row["error"]
    assert row["error"].startswith("exit code 1: ") and row["error"].count(" | ") == 2
    assert row["dataset"] == "tiny" and row["factors"] == 8
    # the traceback too, where the error line alone would not say where it came from
    assert row["output_tail"].startswith("Traceback") and "run_one" in row["output_tail"]


def test_a_fit_that_runs_out_of_time_is_a_row_that_says_so(monkeypatch):
    def too_slow(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(benchmark.subprocess, "run", too_slow)
    row = benchmark._run_subprocess(spec("unused.npz"), timeout=60)
    assert row == {"dataset": "tiny", "factors": 8, "library": "gpu_als", "backend": "cpu",
                   "solver": "cholesky", "error": "timed out after 60 s"}
    assert benchmark._format_row(row) == \
        "        tiny k=8    gpu_als-cpu-cholesky  failed: timed out after 60 s"


def test_run_passes_its_limits_on_and_names_what_it_does_not_know(tiny, tmp_path,
                                                                   monkeypatch):
    """run()'s timeout reaches each fit; --cpu-max-nnz is inclusive (tiny has 4,000)."""
    timeouts = []

    def fake(spec, timeout):
        timeouts.append(timeout)
        return {**spec, "error": "not run (test)"}

    monkeypatch.setattr(benchmark, "_run_subprocess", fake)
    options = dict(datasets=["tiny"], factors=[4], implementations=["gpu_als-cpu-cholesky"],
                   cache=Path(tiny).parent)
    result = benchmark.run("quick", cpu_max_nnz=4_000, timeout=7, **options)
    assert timeouts == [7] and len(result["benchmarks"]) == 1
    with pytest.raises(ValueError, match=r"tiny: nothing to run on it here \(CPU "
                                         r"implementations run up to 3,999 interactions\)"):
        benchmark.run("quick", cpu_max_nnz=3_999, **options)
    with pytest.raises(ValueError, match=r"unknown datasets \['nope'\]: expected some of"):
        benchmark.run("quick", datasets=["nope"])
    with pytest.raises(ValueError, match=r"unknown implementations \['nope'\]"):
        benchmark.run("quick", datasets=["tiny"], implementations=["nope"])


@pytest.mark.parametrize("options, error, says", [
    (dict(profile="nope"), ValueError, "profile='nope': expected one of 'quick', 'full'"),
    (dict(datasets="ml-100k"), TypeError,
     "datasets must be a list, such as ['ml-100k'], got str 'ml-100k'"),
    (dict(datasets=[]), ValueError, "datasets=[]: give at least one, or None for the"),
    (dict(datasets=[3]), TypeError, "datasets must be a list of names, such as ['ml-100k'], "
                                    "got an item int 3"),
    (dict(implementations="gpu_als-cpu-cholesky"), TypeError, "implementations must be a "
                                                              "list, such as"),
    (dict(matrices="clicks.npz"), TypeError, "matrices must be a list, such as "
                                             "['clicks.npz'], got str"),
    (dict(matrices=[7]), TypeError, "path must be a str or a path-like object, got int 7"),
    (dict(factors=64), TypeError, "factors must be a list, such as [64, 128], got int 64"),
    (dict(factors=[64, 2.5]), TypeError, "factors must be a list of integers, such as "
                                         "[64, 128], got an item float 2.5"),
    (dict(factors=[True]), TypeError, "got an item bool True"),
    (dict(factors=[64, 0]), ValueError, "factors must be >= 1, got 0"),
    (dict(iterations=1), ValueError, "iterations must be >= 2 (the first is a warm-up), "
                                     "got 1"),
    (dict(iterations=5.0), TypeError, "iterations must be an integer, got float 5.0"),
    (dict(cpu_max_nnz=0), ValueError, "cpu_max_nnz must be >= 1, got 0"),
    (dict(timeout=0), ValueError, "timeout must be > 0 seconds, got 0"),
    (dict(timeout=-1.5), ValueError, "timeout must be > 0 seconds, got -1.5"),
    (dict(timeout=float("nan")), ValueError, "timeout must be > 0 seconds, got nan"),
    (dict(timeout=3e6), ValueError, "timeout must be at most 2,000,000 seconds (23 days), "
                                    "got 3e+06"),
    (dict(timeout="60"), TypeError, "timeout must be a number of seconds, got str '60'"),
    (dict(on_row=[]), TypeError, "on_row must be a function of the row, got list []"),
])
def test_run_refuses_what_it_cannot_take_before_anything_runs(options, error, says,
                                                              monkeypatch):
    """The Python API checks what the command line's parser does, naming the parameter
    (profile='nope' was a KeyError; datasets='ml-100k' was read letter by letter)."""
    def never(spec, timeout):
        raise AssertionError("a fit ran")

    monkeypatch.setattr(benchmark, "_run_subprocess", never)
    with pytest.raises(error) as raised:
        benchmark.run(**{"profile": "quick", **options})
    assert says in str(raised.value)


def test_run_takes_its_cache_as_a_str_and_refuses_what_is_no_path(tmp_path, monkeypatch):
    """(A str cache failed in Python's words, "unsupported operand type(s) for /", as the
    synthetic sets were generated into it.)"""
    monkeypatch.setitem(benchmark.DATASETS, "tiny", TINY)
    monkeypatch.setattr(benchmark, "_run_subprocess",
                        lambda spec, timeout: {**spec, "error": "not run (test)"})
    result = benchmark.run("quick", datasets=["tiny"], factors=[4],
                           implementations=["gpu_als-cpu-cholesky"], cache=str(tmp_path))
    assert result["benchmarks"][0]["path"].startswith(str(tmp_path))
    with pytest.raises(TypeError, match="^cache must be the path of a folder, got int 3$"):
        benchmark.run("quick", datasets=["tiny"], factors=[4],
                      implementations=["gpu_als-cpu-cholesky"], cache=3)


@pytest.mark.parametrize("timeout", [0.25, benchmark.MAX_TIMEOUT])
def test_run_takes_tuples_numpy_integers_and_timeouts_up_to_the_largest(timeout, tiny,
                                                                         monkeypatch):
    taken = []

    def fake(spec, timeout):
        taken.append((spec["factors"], spec["iterations"], timeout))
        return {**spec, "error": "not run (test)"}

    monkeypatch.setattr(benchmark, "_run_subprocess", fake)
    result = benchmark.run("quick", datasets=("tiny",), factors=(np.int64(4),),
                           implementations=("gpu_als-cpu-cholesky",), iterations=np.int32(2),
                           cpu_max_nnz=np.int64(4_000), timeout=timeout,
                           cache=Path(tiny).parent)
    assert taken == [(4, 2, timeout)] and len(result["benchmarks"]) == 1


def test_command_line_writes_where_asked_plots_and_fails_on_a_failed_fit(tmp_path,
                                                                       monkeypatch, capsys):
    """--output into folders it makes; --plots into FOLDER/<device>/, matplotlib checked
    before any fit; the comparisons kept with each row; exit status 1 if a fit failed."""
    pytest.importorskip("matplotlib")

    def row(library, seconds, **extra):
        return {"dataset": "d", "users": 10, "items": 5, "nnz": 20, "factors": 8,
                "library": library, "backend": "cpu", "solver": "cholesky",
                "seconds_per_iteration": seconds, "final_loss": 9.0, **extra}

    rows = [row("gpu_als", 1.0), row("implicit", 2.0)]
    kept = []

    def fake_run(profile, *, on_row, **options):
        for r in rows:
            on_row(r)
            kept.append(json.loads(output.read_text()))
        return benchmark.result_document(profile, rows)

    monkeypatch.setattr(benchmark, "run", fake_run)
    output = tmp_path / "new" / "folder" / "r.json"
    assert benchmark.main(["--output", str(output), "--plots", str(tmp_path / "charts")]) == 0
    assert [len(k["benchmarks"]) for k in kept] == [1, 2]
    assert [len(k["comparisons"]) for k in kept] == [0, 1]  # as each row came
    assert json.loads(output.read_text())["comparisons"][0]["speedup"] == 2.0
    device = benchmark.slug(json.loads(output.read_text())["device"])
    assert [p.name for p in (tmp_path / "charts" / device).iterdir()] == ["bench-d.png"]
    out = capsys.readouterr().out
    assert "implicit's s/iteration / gpu_als's" in out and f"wrote {output}" in out
    rows.append({**row("gpu_als", None), "error": "exit code 1: boom"})
    assert benchmark.main(["--output", str(output)]) == 1
    capsys.readouterr()
    kept.clear()
    from gpu_als import plots

    def no_matplotlib():
        raise ImportError("plots need matplotlib (test)")

    monkeypatch.setattr(plots, "check_matplotlib", no_matplotlib)
    with pytest.raises(ImportError, match="plots need matplotlib"):
        benchmark.main(["--output", str(output), "--plots", str(tmp_path / "charts")])
    assert kept == []  # before any fit
    benchmark.print_comparisons([])
    assert capsys.readouterr().out == ""


def test_prepare_generates_a_synthetic_set_once_and_leaves_movielens_to_each_fit(
        tmp_path, monkeypatch, movielens, capsys):
    """The cache: a second prepare reads the file the first wrote. MovieLens is loaded by
    each fit, split as DESIGN.md section 6 says, and scored by its Recall@10."""
    from gpu_als import datasets
    from gpu_als.evaluation import binarize, train_test_split

    calls = []
    real = datasets.make_power_law
    monkeypatch.setattr(datasets, "make_power_law",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    mini = benchmark.Dataset("mini", 40, 30, 300)
    started = time.perf_counter()
    first = benchmark.prepare(mini, tmp_path)
    wall = time.perf_counter() - started
    said = re.fullmatch(r"  generated mini on the CPU in (\d+\.\d) s\n", capsys.readouterr().out)
    assert said and float(said.group(1)) <= wall + 0.05  # (rounded to 0.1 s)
    assert benchmark.prepare(mini, tmp_path) == first and calls == [(40, 30, 300)]
    assert capsys.readouterr().out == ""  # read from the cache, without a word
    assert benchmark.prepare(benchmark.DATASETS["ml-100k"], tmp_path) is None
    assert list(tmp_path.iterdir()) == [first]
    row = benchmark.run_one({"dataset": "ml-100k", "path": None, "factors": 8,
                             "library": "gpu_als", "backend": "cpu", "solver": "cholesky",
                             "iterations": 3})
    train, test = train_test_split(binarize(movielens.ratings, threshold=4),
                                   test_fraction=0.2, random_state=42)
    assert (row["users"], row["items"], row["nnz"]) == (943, 1682, train.nnz)
    model = ALS(factors=8, regularization=benchmark.REGULARIZATION, alpha=benchmark.ALPHA,
                iterations=3, random_state=benchmark.SEED, backend="cpu",
                show_progress=False).fit(train)
    assert row["recall_at_10"] == pytest.approx(
        benchmark._recall_at_10(model.user_factors_, model.item_factors_, train, test),
        abs=0.01)


def test_a_profiled_setting_that_fails_costs_its_own_phases_only(tmp_path, monkeypatch,
                                                                  capsys):
    """A setting of the profile whose half-steps raise (as a kernel that does not compile
    or launch on a device would) is recorded as failed, named on stderr and in its table
    cell; the row keeps its timing, its loss and the other settings' phases, and its Gram
    rate comes from the as-run phases when the two-kernel path's failed."""
    from gpu_als.backends import gpu

    solve_rows = gpu.GPUBackend.solve_rows

    def failing(self, *args, **kwargs):
        if not self.async_copies or self.split_length == 0:  # plain copies, two-kernel
            raise RuntimeError("no kernel image is available for execution on the device")
        return solve_rows(self, *args, **kwargs)

    monkeypatch.setattr(gpu.GPUBackend, "solve_rows", failing)
    path = str(benchmark.prepare(benchmark.Dataset("mini", 40, 30, 300), tmp_path))
    row = benchmark.run_one({**spec(path, factors=6), "dataset": "mini",
                             "backend": emulated_backend(split_length=8), "iterations": 2})
    message = "RuntimeError: no kernel image is available for execution on the device"
    assert row["phases_plain_copies"] == row["phases_two_kernel"] == {"error": message}
    assert f"profiling phases_plain_copies failed: {message}" in capsys.readouterr().err
    assert row["seconds_per_iteration"] > 0 and np.isfinite(row["final_loss"])
    for key in ("phases", "phases_no_woodbury", "phases_threads256"):
        assert all(side["fused"] > 0 for side in row[key].values())
    assert benchmark.timed_phases(row, "phases_two_kernel") is None
    # the long rows (over split_length 8) are built apart on the default path too
    assert row["gram_seconds"] == pytest.approx(
        sum(side["gram_build"] for side in row["phases"].values()))
    tables = benchmark.markdown_tables({"device": "Test GPU", "commit": "abc",
                                        "date": "2026-12-04T10:00:00+00:00",
                                        "benchmarks": [row], "comparisons": []})
    assert "| failed | failed |" in tables  # plain copies, two-kernel: the last two cells


def test_a_gpu_rows_gram_rate_is_timed_on_the_two_kernel_path(tmp_path):
    """run_one on the (emulated) GPU backend: the Gram phase's seconds and FLOP/s are the
    two-kernel path's gram_build, where the build is timed apart from the solves."""
    path = str(benchmark.prepare(benchmark.Dataset("mini", 40, 30, 300), tmp_path))
    row = benchmark.run_one({**spec(path, factors=6), "dataset": "mini",
                             "backend": emulated_backend(), "iterations": 2})
    two_kernel = row["phases_two_kernel"]
    assert row["gram_seconds"] == pytest.approx(
        sum(side["gram_build"] for side in two_kernel.values()))
    assert row["gram_gflops"] == pytest.approx(4 * 300 * 6**2 / row["gram_seconds"] / 1e9)
    # CG builds no system (its long rows, here on both sides, over segments): no Gram rate
    backend = emulated_backend(split_length=8)
    row = benchmark.run_one({**spec(path, factors=6, solver="cg"), "dataset": "mini",
                             "backend": backend, "iterations": 2})
    assert all(side["cg"] > 0 and side["cg_long"] > 0 for side in row["phases"].values())
    assert "gram_gflops" not in row and "gram_seconds" not in row
    # and profiles every row in one cg_solve block, as before the long rows were built
    # apart, and CG's tile of 32 KiB beside the tile_rows rows run
    assert [set(side) for side in row["phases_cg_one_block"].values()] == \
        [{"fixed_gram", "shared", "cg"}] * 2
    assert {key for key in row if key.startswith("phases_")} == \
        {"phases_cg_one_block", "phases_cg_tile_bytes32768"}
    tables = benchmark.markdown_tables({"device": "Test GPU", "commit": "abc",
                                        "date": "2026-12-04T10:00:00+00:00",
                                        "benchmarks": [row], "comparisons": []})
    half_steps = [sum(sum(v for name, v in side.items() if name != "fixed_gram")
                      for side in row[key].values()) * 1e3
                  for key in ("phases", "phases_cg_one_block", "phases_cg_tile_bytes32768")]
    assert "| solver | CG half-steps, ms (user + item): as run | every row in one block | " \
        "tiles of tile_rows | tiles of 32 KiB |" in tables
    assert f"| mini | 6 | cg | {half_steps[0]:,.1f} | {half_steps[1]:,.1f} |  | " \
        f"{half_steps[2]:,.1f} |" in tables
    # run with tiles sized by bytes, the tiles of tile_rows rows are profiled instead
    row = benchmark.run_one({**spec(path, factors=6, solver="cg"), "dataset": "mini",
                             "backend": backend.with_options(cg_tile_bytes=512),
                             "iterations": 2})
    assert all(side["cg"] > 0 for side in row["phases_cg_tile_bytes0"].values())
    assert not [key for key in row if key.startswith("phases") and "error" in row[key]]
    # preconditioned CG: the same kernels (whitening in "shared"), the same variants
    row = benchmark.run_one({**spec(path, factors=6, solver="pcg"), "dataset": "mini",
                             "backend": backend, "iterations": 2})
    assert [set(side) for side in row["phases"].values()] == \
        [{"fixed_gram", "shared", "cg", "cg_long"}] * 2
    assert {key for key in row if key.startswith("phases_")} == \
        {"phases_cg_one_block", "phases_cg_tile_bytes32768"}
    assert not [key for key in row if key.startswith("phases") and "error" in row[key]]
    assert "gram_gflops" not in row and row["final_loss"] > 0
    assert "| mini | 6 | pcg | " in benchmark.markdown_tables(
        {"device": "Test GPU", "commit": "abc", "date": "2026-12-04T10:00:00+00:00",
         "benchmarks": [row], "comparisons": []})


def test_compare_and_plot(tmp_path):
    pytest.importorskip("matplotlib")

    def row(library, solver, seconds, loss, k=64, backend="gpu"):
        return {"dataset": "d", "users": 10, "items": 5, "nnz": 20, "factors": k,
                "library": library, "backend": backend, "solver": solver,
                "seconds_per_iteration": seconds, "final_loss": loss}

    def phases(user_ms, item_ms):  # fixed_gram is not part of the half-step's solve
        return {"user": {"fixed_gram": 1.0, "fused": user_ms / 1e3},
                "item": {"fixed_gram": 1.0, "gram_build": item_ms / 2e3,
                         "solve": item_ms / 2e3}}

    profiled = {"phases": phases(3, 5), "phases_no_woodbury": phases(5, 6),
                "phases_tile8": phases(4, 6), "phases_tile16": {"error": "RuntimeError: x"},
                "phases_woodbury100": phases(2, 3),
                "phases_threads256": phases(6, 7), "phases_plain_copies": phases(7, 9),
                "phases_two_kernel": phases(10, 20)}
    rows = [{**row("gpu_als", "cholesky", 0.01, 99.0), **profiled},
            row("implicit", "cg", 0.3, 100.0),
            {**row("gpu_als", "cholesky", 0.02, 50.0, k=128), "host_peak_bytes": 2**30,
             "device_peak_bytes": 2**31},
            row("implicit", "cg", 0.5, 52.0, k=128),
            row("gpu_als", "cholesky", 1.0, 99.0, backend="cpu"),
            {"dataset": "d", "factors": 256, "library": "implicit", "backend": "gpu",
             "solver": "cg", "error": "timed out"},
            {"dataset": "d", "factors": 64, "library": "gpu_als", "backend": "gpu",
             "solver": "cg", "error": "out of memory"}]
    comparisons = benchmark.compare(rows)
    assert len(comparisons) == 2  # per factors and device; the failed rows are left out
    assert comparisons[0]["speedup"] == pytest.approx(30.0)
    assert comparisons[0]["loss_ratio"] == pytest.approx(0.99)
    result = {"device": "Test GPU", "commit": "abc", "date": "2026-11-28T10:00:00+00:00",
              "benchmarks": rows, "comparisons": comparisons}
    tables = benchmark.markdown_tables(result)
    assert "| d | 64 | gpu_als-gpu-cholesky | 10.0 |  |  |  | 4.95000 |  |" in tables
    assert "| d | 128 | gpu_als-gpu-cholesky | 20.0 |  | 1,024 | 2,048 | 2.50000 |  |" in tables
    lines = tables.splitlines()
    for at, line in enumerate(lines):  # each table's separator has a cell per title
        if line.startswith("|---"):
            assert line.count("|") == lines[at - 1].count("|"), lines[at - 1]
    assert benchmark._format_row(rows[2]) == "           d k=128  gpu_als-gpu-cholesky     " \
        "  20.00 ms/it  loss/nnz 2.50000  device peak 2048 MiB"
    assert "| d | 256 | implicit-gpu-cg | failed: timed out |" in tables
    assert "| d | 64 | gpu | cholesky | cg | 30.00x | 0.9900 |" in tables
    # as run, without Woodbury, tile 8, tile 16 (failed), Woodbury to 25 % of k (not
    # profiled) and to 100 %, blocks of 128 threads (not profiled) and of 256, plain
    # copies, two-kernel
    assert "Woodbury to 25% of k | Woodbury to 100% of k | fused, 128 threads | fused, 256 " \
        "threads | plain copies | two-kernel |" in tables
    assert "| d | 64 | 8.0 | 11.0 | 10.0 | failed |  | 5.0 |  | 13.0 | 16.0 | 30.0 |" in tables
    # the half-steps as run, phase by phase (ms), only the phases some row has
    assert "| dataset | k | implementation | half-step | F^T F | fused | Gram build | solve " \
        "| total |" in tables
    assert "| d | 64 | gpu_als-gpu-cholesky | user | 1,000.00 | 3.00 |  |  | 1,003.00 |" \
        in tables
    assert "| d | 64 | gpu_als-gpu-cholesky | item | 1,000.00 |  | 2.50 | 2.50 | 1,005.00 |" \
        in tables
    paths = benchmark_plots(result, tmp_path)
    assert [p.name for p in paths] == ["bench-d.png"]
    assert paths[0].stat().st_size > 10_000


def test_iterations_slugs_and_a_rows_own_commit():
    """MovieLens runs its own iterations, a synthetic set what was asked, else the
    profile's, else its own; a device's slug has no dashes at its ends; a merged row keeps
    the commit it already names."""
    ml, synthetic = benchmark.DATASETS["ml-100k"], benchmark.DATASETS["ml20m-like"]
    assert benchmark._iterations(ml, {"iterations": 4}, 3) == ml.iterations == 15
    assert benchmark._iterations(synthetic, {"iterations": 4}, 3) == 3
    assert benchmark._iterations(synthetic, {"iterations": 4}, None) == 4
    assert benchmark._iterations(synthetic, {"iterations": None}, None) == 6
    assert benchmark.slug(" NVIDIA H200 (SXM) ") == "nvidia-h200-sxm"
    document = {"device": "X", "commit": "new", "date": "2026-11-28T10:00:00+00:00",
                "benchmarks": [{"dataset": "d", "factors": 8, "library": "gpu_als",
                                "backend": "cpu", "solver": "cholesky", "commit": "old"}]}
    assert benchmark.merge_results([document])[0]["benchmarks"][0]["commit"] == "old"


def test_the_commit_is_gits_unless_given(monkeypatch):
    """GPU_ALS_COMMIT (a checkout without git, as on the GPU machine), else git's short
    hash, else "unknown" when git fails (not a checkout) or is missing."""
    monkeypatch.setenv("GPU_ALS_COMMIT", "given1")
    assert benchmark._commit() == "given1"
    monkeypatch.delenv("GPU_ALS_COMMIT")
    for answer, commit in ((subprocess.CompletedProcess([], 0, "abc1234\n", ""), "abc1234"),
                           (subprocess.CompletedProcess([], 128, "", "not a git "
                                                        "repository"), "unknown"),
                           (FileNotFoundError("git"), "unknown")):
        def git(command, answer=answer, **kwargs):
            assert command == ["git", "rev-parse", "--short", "HEAD"]
            if isinstance(answer, Exception):
                raise answer
            return answer

        monkeypatch.setattr(benchmark.subprocess, "run", git)
        assert benchmark._commit() == commit


def test_seconds_per_iteration_are_the_median_after_the_first():
    """From the time at each iteration's end (0 first): the median of the steps after
    the first, and the first apart; one iteration is its own median."""
    assert benchmark._per_iteration([0.0, 5.0, 6.0, 8.0, 9.0]) == (1.0, 5.0)
    assert benchmark._per_iteration([0.0, 5.0, 6.0, 8.0]) == (1.5, 5.0)
    assert benchmark._per_iteration([0.0, 5.0, 6.0]) == (1.0, 5.0)
    assert benchmark._per_iteration([0.0, 5.0]) == (5.0, 5.0)


@pytest.mark.parametrize("content, says", [
    ("{", r"is not a JSON file \(Expecting property name"),
    ("[]", r"is not a benchmark result \(gpu-als bench, make gpu-check\): it holds a JSON "
           r"list, not an object"),
    ('{"device": "X", "commit": "c"}', r"it has no 'date', 'benchmarks'"),
    ('{"device": "X", "commit": "c", "date": "d", "benchmarks": {}}',
     r"its 'benchmarks' must be a list of rows"),
    ('{"device": "X", "commit": "c", "date": "d", "benchmarks": [{"dataset": "d"}]}',
     r"row 0 \(d\) has no 'factors', 'library', 'backend', 'solver'"),
    ('{"device": "X", "commit": "c", "date": "d", "benchmarks": [{"dataset": "d", '
     '"factors": 8, "library": "gpu_als", "backend": "cpu", "solver": "cg", "users": 1, '
     '"items": 1, "nnz": 1, "seconds_per_iteration": null, "final_loss": 2.0}]}',
     r"row 0 \(d\) holds a measure that is not a number: seconds_per_iteration=None"),
])
def test_plot_bench_names_a_file_it_cannot_read(tmp_path, capsys, content, says):
    """(A traceback before: JSONDecodeError, KeyError: 'date', TypeError.) A failed row
    needs no measures; every result file committed here reads."""
    plot_bench = benchmark_script("plot_bench")
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        plot_bench.main([str(tmp_path / "r.json"), "--markdown"])
    assert exit_info.value.code == 2
    assert re.search(f"plot_bench.py: error: {re.escape(str(tmp_path / 'r.json'))}.* {says}",
                     capsys.readouterr().err)
    failed = {"device": "X", "commit": "c", "date": "d", "benchmarks": [
        {"dataset": "d", "factors": 8, "library": "gpu_als", "backend": "cpu",
         "solver": "cg", "error": "timed out"}]}
    benchmark.check_result(failed)
    root = Path(benchmark.__file__).resolve().parent.parent
    for path in (root / "benchmarks" / "results").glob("*.json"):
        benchmark.read_result(path)


def test_runs_in_pieces_merge_per_device(tmp_path):
    """plot_bench.py draws one chart per dataset from several files: the rows of a device's
    runs together, a later run's row replacing an earlier one for the same fit."""
    pytest.importorskip("matplotlib")
    plot_bench = benchmark_script("plot_bench")

    def row(k, library, seconds):
        return {"dataset": "d", "users": 10, "items": 5, "nnz": 20, "factors": k,
                "library": library, "backend": "cpu", "solver": "cholesky",
                "seconds_per_iteration": seconds, "final_loss": 9.0}

    def document(device, commit, date, rows):
        return {"device": device, "commit": commit, "date": date, "benchmarks": rows,
                "comparisons": []}

    first = document("CPU A", "aaa", "2026-11-01", [row(64, "gpu_als", 1.0),
                                                    row(64, "implicit", 2.0)])
    second = document("CPU A", "bbb", "2026-11-02", [row(128, "gpu_als", 3.0),
                                                     row(128, "implicit", 12.0),
                                                     row(64, "implicit", 4.0)])
    other = document("GPU B", "ccc", "2026-11-03", [row(64, "gpu_als", 0.01)])
    merged = benchmark.merge_results([first, second, other])
    assert [m["device"] for m in merged] == ["CPU A", "GPU B"]
    a = merged[0]
    assert a["commit"] == "aaa + bbb" and a["date"] == "2026-11-02"
    assert [(r["factors"], r["library"], r["seconds_per_iteration"])
            for r in a["benchmarks"]] == [(64, "gpu_als", 1.0), (64, "implicit", 4.0),
                                          (128, "gpu_als", 3.0), (128, "implicit", 12.0)]
    assert [r["commit"] for r in a["benchmarks"]] == ["aaa", "bbb", "bbb", "bbb"]
    assert [c["speedup"] for c in a["comparisons"]] == [4.0, 4.0]
    assert merged[1]["commit"] == "ccc" and len(merged[1]["benchmarks"]) == 1
    assert first["commit"] == "aaa" and len(first["benchmarks"]) == 2  # inputs untouched
    assert benchmark.merge_results([other, second, first]) == merged  # by date, not order

    files = []
    for i, doc in enumerate((first, second)):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(doc))
    assert plot_bench.main([*map(str, files), "--output", str(tmp_path / "charts")]) == 0
    assert [p.name for p in (tmp_path / "charts" / "cpu-a").iterdir()] == ["bench-d.png"]


def benchmark_plots(result, folder):
    from gpu_als.plots import plot_benchmark

    return plot_benchmark(result, folder)


def test_implicit_gpu_is_checked_after_the_cuda_libraries_load():
    """`import implicit` imports implicit.gpu, which disables the GPU for the whole process
    when cuBLAS or RMM cannot load at that moment: checking the CPU implementations and
    reading the versions must not import it, and the GPU check must say why implicit's
    GPU ALS is off. Run in a fresh interpreter (this one may have imported implicit)."""
    pytest.importorskip("implicit")
    code = """
import sys
import textwrap
from gpu_als import benchmark
from gpu_als.backends import gpu
print(benchmark.unavailable(benchmark.IMPLEMENTATIONS["implicit-cpu-cholesky"]))
assert benchmark.versions()["implicit"]
print("implicit" in sys.modules)
gpu.unavailable_reason = lambda: None  # as on a GPU machine, to reach implicit's own check
print(benchmark.unavailable(benchmark.IMPLEMENTATIONS["implicit-gpu-cg"]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    cpu_reason, imported, gpu_reason = done.stdout.splitlines()
    assert cpu_reason == "None" and imported == "False"
    # No RMM here (CI), or no driver: either way the reason names the cause, not a guess.
    assert "RMM" in gpu_reason or "CUDA" in gpu_reason, gpu_reason


@pytest.mark.parametrize("has_rmm, has_cuda, reason", [
    (True, False, "implicit's GPU ALS is disabled: no CUDA extension in this build"),
    (False, False, "implicit's GPU ALS needs RMM (rmm-cu13, librmm-cu13, rapids-logger)"),
    (True, True, None)])
def test_implicit_gpu_problem_names_the_cause(monkeypatch, has_rmm, has_cuda, reason):
    """implicit.gpu's flags, read without a GPU: a build without its CUDA extension (no
    warning to quote) says so, rather than ending in an empty reason."""
    import types

    fake_gpu = types.ModuleType("implicit.gpu")
    fake_gpu.HAS_RMM, fake_gpu.HAS_CUDA = has_rmm, has_cuda
    fake = types.ModuleType("implicit")
    fake.gpu = fake_gpu
    monkeypatch.setitem(sys.modules, "implicit", fake)
    monkeypatch.setitem(sys.modules, "implicit.gpu", fake_gpu)
    monkeypatch.setattr(benchmark, "_preload_cuda_libraries", lambda: None)
    benchmark._implicit_gpu_problem.cache_clear()
    try:
        assert benchmark._implicit_gpu_problem() == reason
    finally:
        benchmark._implicit_gpu_problem.cache_clear()  # the real one for the other tests


def test_fp32_peak_from_the_device_attributes():
    """Against the vendors' published FP32 peaks: A100 SXM 19.5 TFLOP/s, H100 SXM 67."""
    assert benchmark.peak_gflops("80", {"MultiProcessorCount": 108, "ClockRate": 1_410_000}) \
        == pytest.approx(19_492, rel=1e-3)
    assert benchmark.peak_gflops("90", {"MultiProcessorCount": 132, "ClockRate": 1_980_000}) \
        == pytest.approx(66_908, rel=1e-3)
    assert benchmark.peak_gflops("90", {"MultiProcessorCount": 132}) is None  # no clock
    assert benchmark.peak_gflops("50", {"MultiProcessorCount": 1, "ClockRate": 1}) is None


@pytest.mark.gpu
@pytest.mark.skipif(not benchmark.device_name(), reason="no GPU")
def test_device_readings_on_a_gpu():
    """The CuPy calls behind the GPU rows' device fields (attribute names, properties)."""
    assert benchmark.device_name()
    assert benchmark.fp32_peak_gflops() > 10_000
    assert benchmark.versions()["cuda_runtime"] > 0
    from gpu_als.backends.gpu import CudaRuntime

    runtime = CudaRuntime()
    assert runtime.max_shared_memory >= 160 * 1024 and runtime.free_memory() > 0


def test_command_line_refuses_unknown_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--datasets", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["bench", "--iterations", "1"])
    assert "--iterations must be >= 2" in capsys.readouterr().err
    for argv, says in ((["--factors", "64", "0"], "--factors must be >= 1, got 0"),
                       (["--cpu-max-nnz", "0"], "--cpu-max-nnz must be >= 1, got 0"),
                       (["--timeout", "-3"], "--timeout must be > 0 seconds, got -3"),
                       (["--timeout", "nan"], "--timeout must be > 0 seconds, got nan"),
                       (["--timeout", "inf"],
                        "--timeout must be at most 2,000,000 seconds (23 days), got inf"),
                       (["--timeout", "1e9"], "at most 2,000,000 seconds (23 days), got 1e+09"),
                       (["--child", "3"], "--child, the option of the benchmark's own"),
                       (["--child", "{"], "takes a JSON object of dataset, path, factors"),
                       (["--child", '{"dataset": "x"}'], "a JSON object of dataset")):
        with pytest.raises(SystemExit):
            cli_main(["bench", *argv])
        assert says in capsys.readouterr().err
    # the smallest allowed values pass (the bad --timeout after them is what is refused)
    with pytest.raises(SystemExit):
        cli_main(["bench", "--factors", "1", "--cpu-max-nnz", "1", "--timeout", "0"])
    assert capsys.readouterr().err.endswith("error: --timeout must be > 0 seconds, got 0\n")
    with pytest.raises(SystemExit):
        cli_main(["bench", "--quick", "--full"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_folders_that_cannot_be_written_are_named_before_any_fit(tmp_path, monkeypatch,
                                                                 capsys):
    """(--plots naming a file failed with NotADirectoryError after the last fit.)"""
    monkeypatch.setattr(benchmark, "run", lambda *a, **k: pytest.fail("ran the benchmark"))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    pytest.importorskip("matplotlib")
    for argv, says in ((["--plots", str(a_file)], f"--plots: {a_file} is a file, not a "
                                                  f"folder"),
                       (["--output", str(a_file / "b.json")], f"--output: {a_file} is a "
                                                               f"file, not a folder"),
                       (["--plots", str(a_file / "charts")], "--plots: cannot make the "
                                                            "folder"),
                       # a table's name: it was overwritten with the JSON
                       (["--output", str(tmp_path / "r.csv")], f"--output {tmp_path}/r.csv: "
                                                              f"the result is JSON; name the "
                                                              f"file r.json, or give a "
                                                              f"folder for it")):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["bench", *argv])
        assert exit_info.value.code == 2
        assert says in capsys.readouterr().err
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    if not os.access(read_only, os.W_OK):  # (root may write anywhere)
        with pytest.raises(SystemExit):
            cli_main(["bench", "--output", str(read_only)])
        assert f"--output: cannot write in the folder {read_only}" in capsys.readouterr().err


def test_a_run_of_nothing_that_can_run_here_is_an_error_not_an_empty_result(
        tmp_path, monkeypatch, capsys):
    """(It wrote an empty file, exit status 0, each dataset "skipped" for its size.)"""
    monkeypatch.setattr(benchmark, "unavailable", lambda implementation: "no such card")
    argv = ["bench", "--implementations", "gpu_als-gpu-cholesky", "implicit-gpu-cg",
            "--datasets", "ml-100k", "--output", str(tmp_path / "b.json")]
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == (
        "gpu-als bench: error: none of the implementations asked for can run here "
        "(gpu_als-gpu-cholesky: no such card; implicit-gpu-cg: no such card)\n")
    assert not (tmp_path / "b.json").exists()


def test_a_run_whose_every_dataset_is_skipped_is_an_error_not_an_empty_result(
        tmp_path, monkeypatch, capsys):
    """(Without MovieLens and offline, it wrote a file without a row, exit status 0.)"""
    def offline(dataset, cache):
        raise FileNotFoundError("MovieLens 100K is not available locally")

    monkeypatch.setattr(benchmark, "prepare", offline)
    argv = ["bench", "--implementations", "gpu_als-cpu-cholesky", "--datasets", "ml-100k",
            "ml20m-like", "--cpu-max-nnz", "1000000", "--output", str(tmp_path / "b.json")]
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == (
        "gpu-als bench: error: nothing was measured: ml-100k: MovieLens 100K is not "
        "available locally; ml20m-like: nothing to run on it here (CPU implementations run "
        "up to 1,000,000 interactions)\n")
    assert not (tmp_path / "b.json").exists()


def test_gpu_check_script_runs_end_to_end_without_a_gpu(tmp_path):
    """`make gpu-check`'s script (benchmarks/gpu_check.py), with --allow-cpu: the device
    minutes it is written for are too scarce to find its bugs there."""
    root = Path(benchmark.__file__).resolve().parent.parent
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "gpu_check.py"),
         "--allow-cpu", "--commit", "test", "--factors", "4", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=root,
        env={**os.environ, "OUT": str(out),
             "GPU_ALS_BENCH_CACHE": str(tmp_path / "cache")})
    written = list(tmp_path.glob("gpu-check-*-test.json"))
    assert len(written) == 1 and (out / written[0].name).exists()  # and the $OUT copy
    result = benchmark.read_result(written[0])  # (what plot_bench.py --markdown reads)
    # without MovieLens (offline, no copy) nothing can be measured on the CPU: said in the
    # file (test_gpu_check_records_a_benchmark_that_measured_nothing), status 1
    measured = bool(result["benchmarks"])
    assert done.returncode == (0 if measured else 1), \
        done.stdout[-2000:] + done.stderr[-2000:]
    assert measured or os.environ.get("GPU_ALS_DATA") is None
    assert result["commit"] == "test"
    tests = result["tests"]  # pytest -m gpu: every GPU test skipped here, none failed
    assert tests["failed"] == 0 and tests["skipped"] > 0 and tests["failures"] == []
    assert {"date", "device", "host", "versions", "benchmarks", "comparisons"} <= set(result)
    assert result["info"].startswith("gpu-als ") and "\nGPU: " in result["info"]
    assert "\ncheck: " not in result["info"]  # (gpu-als info --check: where there is a GPU)
    if measured:
        assert result["kernel_profile"] == {"error": "no GPU here"}
    for row in result["benchmarks"]:  # ML-100K's CPU rows when the data is here
        assert row["dataset"] == "ml-100k" and row["factors"] == 4 and "error" not in row
    if measured:
        assert len(result["benchmarks"]) >= 2 and "benchmark_error" not in result
        # the tables at the end of the log, as plot_bench.py --markdown prints them
        assert benchmark.markdown_tables(result) in done.stdout
    else:
        assert result["benchmark_error"].startswith("nothing was measured: ml-100k: ")


def test_gpu_check_records_a_benchmark_that_measured_nothing(tmp_path, monkeypatch, capsys):
    """Its file keeps the reason (and the test counts); status 1, not a traceback."""
    gpu_check = benchmark_script("gpu_check")

    def nothing(*args, **kwargs):
        raise ValueError("nothing was measured: ml-100k: not here")

    monkeypatch.setattr(benchmark, "run", nothing)
    monkeypatch.setenv("OUT", str(tmp_path))
    results = tmp_path / "results"
    assert gpu_check.main(["--allow-cpu", "--skip-tests", "--commit", "t", "--results",
                           str(results)]) == 1
    written = list(results.glob("gpu-check-*-t.json"))
    assert len(written) == 1 and (tmp_path / written[0].name).exists()  # and the $OUT copy
    result = json.loads(written[0].read_text())
    assert result["benchmark_error"] == "nothing was measured: ml-100k: not here"
    assert result["benchmarks"] == [] and result["tests"]["failed"] == 0
    assert "benchmark: nothing was measured" in capsys.readouterr().out


def test_gpu_check_counts_the_tests_from_the_report_or_from_the_progress(tmp_path):
    """From pytest's JUnit report (failures and errors both fail), and, for a run cut short
    by its time limit, from the progress characters of the tests that finished (the one
    it was in counts as failed)."""
    gpu_check = benchmark_script("gpu_check")
    report = tmp_path / "report.xml"
    for wrapped in (True, False):  # pytest writes <testsuites><testsuite>, or the suite
        suite = '<testsuite tests="10" failures="2" errors="1" skipped="3"></testsuite>'
        report.write_text(f"<testsuites>{suite}</testsuites>" if wrapped else suite)
        assert gpu_check.counts_from_junit(report) == {"passed": 4, "failed": 3,
                                                       "skipped": 3}
    stdout = ("..s.F..E" + " " * 60 + "[ 10%]\nss.x" + " " * 60 + "[ 12%]\n"
              "FAILED tests/test_gpu.py::test_one - AssertionError\n")
    assert gpu_check.counts_from_progress(stdout) == {
        "passed": 6, "failed": 3, "skipped": 3, "timed_out": True}
    assert gpu_check.counts_from_progress("") == {"passed": 0, "failed": 1, "skipped": 0,
                                                  "timed_out": True}


def test_gpu_check_keeps_the_failures_tracebacks_as_they_happen(tmp_path):
    """tests/failure_log.py writes each failure (the end of its traceback) when it
    happens, so that a run stopped by its time limit still says why; gpu-check puts the
    first ones in its result. Passed and skipped tests add nothing."""
    gpu_check = benchmark_script("gpu_check")
    (tmp_path / "test_some.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("boom")

        def test_ok():
            pass

        def test_skip():
            pytest.skip("no")

        def test_fails():
            assert 1 == 2, "x" * 5000

        def test_errors(broken):
            pass
    """))
    log = tmp_path / "failures.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "tests.failure_log", str(tmp_path / "test_some.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GPU_ALS_FAILURE_LOG": str(log)})
    assert done.returncode == 1, done.stdout[-2000:]
    details = gpu_check.failure_details(log)
    assert [(d["test"].split("::")[1], d["outcome"]) for d in details] == [
        ("test_fails", "failure"), ("test_errors", "error")]
    assert len(details[0]["text"]) == 3000 and "assert 1 == 2" in details[0]["text"]
    assert "RuntimeError: boom" in details[1]["text"]
    assert gpu_check.failure_details(log, most=1) == details[:1]
    assert gpu_check.failure_details(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("failed_tests, row_error, status", [
    (0, False, 0), (1, False, 1), (0, True, 1)])
def test_gpu_check_fails_on_a_failed_test_or_fit_and_writes_out_either_way(
        tmp_path, monkeypatch, capsys, failed_tests, row_error, status):
    """Its exit status is 1 when a GPU test failed or a fit did; the JSON, in the results
    folder and copied into $OUT, has the tests' counts and every row either way."""
    gpu_check = benchmark_script("gpu_check")
    row = {"dataset": "ml20m-like", "factors": 64, "library": "gpu_als", "backend": "gpu",
           "solver": "cholesky", **({"error": "timed out after 60 s"} if row_error else
                                    {"seconds_per_iteration": 0.02, "final_loss": 1.0,
                                     "users": 3, "items": 2, "nnz": 4})}

    comparison = {"dataset": "ml20m-like", "factors": 64, "backend": "gpu",
                  "gpu_als": "cholesky", "implicit": "cg", "speedup": 12.5, "loss_ratio": 0.99}

    def fake_run(profile, *, factors, iterations, timeout, on_row):
        assert (profile, factors, timeout) == ("quick", [64], 60)
        on_row(row)
        return {"comparisons": [comparison]}

    monkeypatch.setattr(gpu_check, "run_tests", lambda timeout: {
        "passed": 5, "failed": failed_tests, "skipped": 0, "failures": []})
    monkeypatch.setattr(gpu_check.benchmark, "run", fake_run)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    assert gpu_check.main(["--allow-cpu", "--commit", "abc", "--factors", "64",
                           "--results", str(tmp_path / "results")]) == status
    (written,) = (tmp_path / "results").glob("gpu-check-*-abc.json")
    result = json.loads(written.read_text())
    assert result["tests"]["failed"] == failed_tests and result["benchmarks"] == [row]
    assert result["comparisons"] == [comparison]
    assert json.loads((out / written.name).read_text()) == result
    printed = capsys.readouterr().out  # the tables end the log, before "wrote ..."
    assert "| ml20m-like | 64 | gpu_als-gpu-cholesky | " + \
        ("failed: timed out after 60 s |" if row_error else "20.0 |") in printed
    if not row_error:  # a row the tables cannot show: said, and the status is the same
        del row["nnz"]
        assert gpu_check.main(["--allow-cpu", "--commit", "abc", "--factors", "64",
                               "--results", str(tmp_path / "results")]) == status
        assert "the tables could not be made: KeyError: 'nnz'" in capsys.readouterr().out


def test_gpu_check_has_written_the_test_counts_before_the_benchmark_starts(tmp_path,
                                                                          monkeypatch):
    """A run killed during the benchmark (its time limit) still leaves the tests' counts
    in the results folder and in $OUT."""
    gpu_check = benchmark_script("gpu_check")

    asked = {}

    def killed(profile, **kwargs):
        asked.update(kwargs)
        raise KeyboardInterrupt  # as the time limit's signal would stop it

    monkeypatch.setattr(gpu_check, "run_tests", lambda timeout: {
        "passed": 7, "failed": 0, "skipped": 1, "failures": []})
    monkeypatch.setattr(gpu_check.benchmark, "run", killed)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--allow-cpu", "--commit", "abc", "--results", str(tmp_path)])
    (copied,) = out.glob("gpu-check-*-abc.json")
    result = json.loads(copied.read_text())
    assert result["tests"]["passed"] == 7 and result["benchmarks"] == []
    assert (asked["factors"], asked["timeout"]) == ([64, 128], 60)  # the defaults


def test_gpu_check_refuses_to_run_without_a_gpu_unless_asked(monkeypatch, capsys):
    gpu_check = benchmark_script("gpu_check")
    monkeypatch.setattr(gpu_check.benchmark, "device_name", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--skip-tests"])
    assert exit_info.value.code == 2
    assert "no GPU here (pass --allow-cpu" in capsys.readouterr().err


def test_gpu_check_runs_the_kernel_parity_tests_first():
    """A GPU run cut short by its time limit has checked the numbers first; every test
    file runs once."""
    gpu_check = benchmark_script("gpu_check")
    names = [Path(f).name for f in gpu_check.test_files()]
    assert names[:len(gpu_check.FIRST_TESTS)] == list(gpu_check.FIRST_TESTS)
    assert sorted(names) == sorted(p.name for p in BENCHMARKS.parent.glob("tests/test_*.py"))


def test_thread_scaling_script_runs(capsys):
    """benchmarks/cpu_thread_scaling.py (its numbers in docs/cpu-backend.md), on a small set."""
    cpu_thread_scaling = benchmark_script("cpu_thread_scaling")
    assert cpu_thread_scaling.main(["--users", "300", "--items", "80", "--nnz", "5000",
                                    "--factors", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "300 users x 80 items, 5,000 interactions; solver cg, factors 4" in out
    assert re.search(r"run 1 gpu_als +1 thread: +\d+ ms \(1.00x\)  2 threads: +\d+ ms", out)
    # the median of the iterations after the first, from the time at each one's end (the
    # difference of a 4- and a 1-iteration fit, before, came out negative under load)
    assert cpu_thread_scaling.per_iteration(lambda n: [5.0, 6.0, 8.0, 9.0][:n]) == 1.0
    assert cpu_thread_scaling.main(["--calls"]) == 0
    out = capsys.readouterr().out
    assert out.count("us per call on 1 thread") == 3


def test_warm_start_script_runs(movielens, capsys):
    """benchmarks/warm_start.py (its numbers in docs/command-line.md): a refit from the model of
    before ends lower than one from scratch after as many iterations."""
    assert benchmark_script("warm_start").main([]) == 0
    rows = {int(line.split()[0]): [float(v.replace(",", "")) for v in line.split()[1:]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert sorted(rows) == [1, 2, 3, 5, 15] and len(rows[15]) == 2
    for n in (1, 2, 3, 5):
        warm_loss, _, cold_loss, _ = rows[n]
        assert warm_loss < cold_loss
    assert rows[3][0] < 1.02 * rows[15][0]  # 3 warm iterations: near 15 from scratch


def test_preconditioned_cg_script_runs(movielens, capsys):
    """benchmarks/preconditioned_cg.py (its numbers in its docstring): with as many steps,
    CG preconditioned by the shared part ends every iteration below gpu-als's CG and near
    the exact solve, on MovieLens 100K."""
    assert benchmark_script("preconditioned_cg").main(["--iterations", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [[float(v) for v in line.split()[1:]] for line in lines[2:6]]
    assert [line.split()[0] for line in lines[2:7]] == ["1", "2", "3", "4", "ms/iter"]
    assert all(preconditioned < cg for _, cg, preconditioned in rows)
    exact, cg, preconditioned = rows[-1]
    assert preconditioned < 1.005 * exact < cg
    # --pcg-steps: the preconditioned column takes its own number of steps
    assert benchmark_script("preconditioned_cg").main(["--iterations", "2",
                                                       "--pcg-steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "3 CG steps (preconditioned: 1)" in lines[0]
    exact_2, cg_2, one_step_2 = (float(v) for v in lines[3].split()[1:])
    assert (exact_2, cg_2) == pytest.approx(rows[1][:2], rel=1e-6)  # as many steps as before
    assert one_step_2 > rows[1][2]  # 1 preconditioned step: above 3 of them
    # --scale-regularization: another objective (its own loss), where each row's own
    # shared part preconditions it
    assert benchmark_script("preconditioned_cg").main(["--iterations", "2",
                                                       "--scale-regularization"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "alpha 10, scaled penalty; loss per entry" in lines[0]
    exact_s, cg_s, preconditioned_s = (float(v) for v in lines[3].split()[1:])
    assert exact_s < preconditioned_s < cg_s and abs(exact_s / exact_2 - 1) > 0.01


def test_preconditioned_cg_script_on_play_counts(capsys):
    """The docstring's counts rows: after 10 iterations at factors 32, preconditioned CG
    ends below CG with alpha 1 and above it with alpha 40 (13.8 % above the exact loss,
    CG 3.6 %), as the docstrings of the script and of ALS's solver say."""
    ends = {}
    for alpha in ("1", "40"):
        assert benchmark_script("preconditioned_cg").main(
            ["--dataset", "counts", "--factors", "32", "--alpha", alpha]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "linear confidence, alpha " + alpha in lines[0]
        assert lines[11].split()[0] == "10"
        ends[alpha] = [float(v) for v in lines[11].split()[1:]]
    exact, cg, preconditioned = ends["1"]
    assert preconditioned < cg
    exact, cg, preconditioned = ends["40"]
    assert preconditioned / exact == pytest.approx(1.138, abs=0.01)
    assert cg / exact == pytest.approx(1.036, abs=0.01)


@pytest.mark.slow
def test_tune_script_splits_movielens_by_time(movielens, monkeypatch, capsys):
    """benchmarks/tune_movielens.py --split time (its numbers in docs/guide.md): validation
    and test are each user's latest positives, and the best found beats the reference
    settings on the test part (0.1311 against 0.1239 when measured)."""
    pytest.importorskip("pandas")
    script = benchmark_script("tune_movielens")
    train, test, searched = script.split_by_time(movielens.path / "u.data")
    fit_part, validation = searched["user_items"], searched["validation"]
    assert (fit_part + validation != train).nnz == 0 and fit_part.multiply(validation).nnz == 0
    assert (train.nnz, test.nnz) == (44296, 10939)
    assert script.main(["--split", "time"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found, reference = (float(re.search(r"Recall@10 ([\d.]+)", line)[1]) for line in lines[2:4])
    assert lines[2].startswith("test, best found") and found == pytest.approx(0.1311, abs=3e-3)
    assert reference == pytest.approx(0.1239, abs=3e-3) and found > reference


def test_tune_script_draws_from_its_ranges(movielens, capsys):
    """benchmarks/tune_movielens.py --random N (its numbers in the README): N
    configurations drawn from RANGES, each value in its range."""
    script = benchmark_script("tune_movielens")
    assert script.main(["--random", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 configurations (")
    best = eval(re.search(r"best on validation: (\{.*\}), recall", lines[1])[1])
    assert best["factors"] in (32, 64, 128) and 0.001 <= best["regularization"] <= 1
    assert 1 <= best["alpha"] <= 40
    assert lines[3].startswith("test, reference settings: Recall@10 0.1941")


def test_ids_benchmark_script_runs(capsys):
    """benchmarks/bench_ids.py (its numbers in docs/guide.md and docstrings), small: every
    call timed, first and median."""
    assert benchmark_script("bench_ids").main(["--users", "3000", "--factors", "8",
                                               "--calls", "5"]) == 0
    out = capsys.readouterr().out
    assert "3,000 users with string ids x 2,000 items, factors 8, 5 calls each" in out
    for call in ("partial_fit_users by row", "partial_fit_users by id",
                 "partial_fit_users(df)", "user_rows", "id_positions",
                 "recommend_frame([id])", "recommend_frame(df)", "predict_frame(df)"):
        assert re.search(rf"^{re.escape(call)} +[\d.]+ +[\d.]+$", out, re.M), call


def test_evaluate_benchmark_script_runs(capsys):
    """benchmarks/bench_evaluate.py (its numbers in docs/guide.md and the notes), small:
    each model's ranking and AUC, and ALS at several K in one call and apart, the same."""
    script = benchmark_script("bench_evaluate")
    small = ["--users", "300", "--items", "80", "--nnz", "4000"]
    assert script.main(small) == 0
    out = capsys.readouterr().out
    for name in ("Random", "Popularity", "ALS"):
        assert re.search(rf"^{name} +ranking +[\d.]+ s \(Recall@10 [\d.]+\) +auc", out, re.M)
    assert script.main([*small, "--K", "5", "20"]) == 0
    assert re.search(r"^K = \[5, 20\]: one call +[\d.]+ s, a call per K +[\d.]+ s "
                     r"\(Recall @5 [\d.]+, @20 [\d.]+; the same apart: True\)$",
                     capsys.readouterr().out, re.M)


def test_recommend_benchmark_script_runs(capsys):
    """benchmarks/bench_recommend.py (its README numbers), on a small set: both libraries
    return the same items."""
    bench_recommend = benchmark_script("bench_recommend")
    assert bench_recommend.main(["--shape", "600", "900", "12000", "--users", "500",
                                 "--repeats", "1", "--listed", "300"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^recommend: gpu-als [\d.]+ s", out, re.M)
    assert "similar_items, 200 items one at a time: gpu-als" in out
    assert "recommend(filter_items=<300 items>), 200 users one at a time: gpu-als" in out
    if "no comparison" not in out:  # the batch and the five one-at-a-time parts
        same = re.findall(r"same items for ([\d.]+)% of the (\w+)", out)
        assert [of for _, of in same] == ["users", "items"] + ["users"] * 4
        assert all(share == "100.00" for share, _ in same), out
    on_gpu = ["--shape", "600", "900", "12000", "--users", "500", "--repeats", "1",
              "--backend", "gpu"]
    if gpu.unavailable_reason():
        with pytest.raises(SystemExit):
            bench_recommend.main(on_gpu)
        assert f"--backend gpu: {gpu.unavailable_reason()}" in capsys.readouterr().err
        return
    assert bench_recommend.main(on_gpu) == 0
    out = capsys.readouterr().out
    assert "liked items filtered, on NVIDIA" in out
    assert re.search(r"^recommend: gpu-als [\d.]+ s", out, re.M)
    if "no comparison" not in out:
        assert "same items for 100.00% of the users" in out


def test_per_iteration_times_and_recall_at_10():
    """Seconds per iteration: the median after the first (warm-up) iteration, and the
    first apart; a row's Recall@10 is ranking_metrics' at K = 10; peak host memory is
    about the kernel's high-water mark, in bytes (getrusage counts a little apart)."""
    assert benchmark._per_iteration([0.0, 5.0, 6.0, 8.0, 9.0]) == (1.0, 5.0)
    assert benchmark._per_iteration([0.0, 2.0]) == (2.0, 2.0)
    from gpu_als.evaluation import ranking_metrics, train_test_split

    train, test = train_test_split(random_interactions(200, 80, 0.1, seed=4))
    model = ALS(factors=4, iterations=3, backend="cpu", random_state=0,
                show_progress=False).fit(train)
    recall = benchmark._recall_at_10(model.user_factors_, model.item_factors_, train, test)
    assert recall == ranking_metrics(model, train, test, K=10)["recall"]
    assert recall != ranking_metrics(model, train, test, K=11)["recall"]

    def high_water_mark():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status
                        if line.startswith("VmHWM:"))

    assert benchmark._max_rss_bytes() == pytest.approx(high_water_mark(), rel=0.1)


_NCU_KERNEL = ('"void fused_solve<float, int>(const long long *, const int *)","1","7",'
               '"(128, 1, 1)"')
NCU_OUTPUT = "\n".join([
    "==PROF== Connected to process 4242 (/usr/bin/python3.12)",
    '==PROF== Profiling "fused_solve": 0%....50%....100% - 9 passes',
    '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
    '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
    '"Metric Value"',
    f'"0","4242","python3.12","127.0.0.1",{_NCU_KERNEL},"(48686, 1, 1)","0","9.0",'
    '"GPU Speed Of Light Throughput","Duration","msecond","48.21"',
    f'"0","4242","python3.12","127.0.0.1",{_NCU_KERNEL},"(48686, 1, 1)","0","9.0",'
    '"Occupancy","Achieved Occupancy","%","17.93"',
    f'"1","4242","python3.12","127.0.0.1",{_NCU_KERNEL},"(19983, 1, 1)","0","9.0",'
    '"Launch Statistics","Registers Per Thread","register/thread","95"',
    "==PROF== Disconnected from process 4242", ""])


def test_the_kernel_profile_reads_ncus_table(tmp_path, monkeypatch, capsys):
    """gpu_check's Nsight Compute step, with a stand-in ncu on the PATH: the command it
    runs (the fused kernel's first two launches, benchmarks/profile_fused.py at k = 128),
    the metrics of its CSV table, and what it says when ncu fails, hangs or is missing."""
    gpu_check = benchmark_script("gpu_check")
    assert gpu_check.parse_ncu_csv(NCU_OUTPUT) == [
        {"launch": "0", "kernel": "void fused_solve<float, int>(const long long *, "
         "const int *)", "section": "GPU Speed Of Light Throughput", "metric": "Duration",
         "unit": "msecond", "value": "48.21"},
        {"launch": "0", "kernel": "void fused_solve<float, int>(const long long *, "
         "const int *)", "section": "Occupancy", "metric": "Achieved Occupancy", "unit": "%",
         "value": "17.93"},
        {"launch": "1", "kernel": "void fused_solve<float, int>(const long long *, "
         "const int *)", "section": "Launch Statistics", "metric": "Registers Per Thread",
         "unit": "register/thread", "value": "95"}]
    assert gpu_check.parse_ncu_csv("==PROF== no kernels were profiled\n") == []

    (tmp_path / "ncu.out").write_text(NCU_OUTPUT)
    ncu = tmp_path / "ncu"
    ncu.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n'
                   f'[ -n "$NCU_SLEEP" ] && sleep "$NCU_SLEEP"\n'
                   f'cat {tmp_path}/ncu.out\nexit "${{NCU_STATUS:-0}}"\n')
    ncu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    profile = gpu_check.profile_kernels(timeout=30)
    assert "error" not in profile and profile["factors"] == 128
    assert len(profile["metrics"]) == 3
    args = (tmp_path / "args").read_text().split()
    assert args[:4] == ["--kernel-name", "regex:fused_solve", "--launch-count", "2"]
    assert args[-3:] == [str(Path(gpu_check.ROOT) / "benchmarks" / "profile_fused.py"),
                         "--factors", "128"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--section"] == \
        list(gpu_check.NCU_SECTIONS)
    gpu_check.print_profile(profile)
    assert capsys.readouterr().out.splitlines() == [
        "  launch 0 Duration: 48.21 msecond", "  launch 0 Achieved Occupancy: 17.93 %",
        "  launch 1 Registers Per Thread: 95 register/thread"]

    monkeypatch.setenv("NCU_STATUS", "3")
    profile = gpu_check.profile_kernels(timeout=30)
    assert profile["error"].startswith("ncu exited with status 3: ==PROF== Connected")
    assert len(profile["metrics"]) == 3  # kept: what was read before the failure
    (tmp_path / "ncu.out").write_text("==ERROR== the profiler could not start\n")
    monkeypatch.setenv("NCU_STATUS", "0")
    assert gpu_check.profile_kernels(timeout=30)["error"] == \
        "ncu exited with status 0: ==ERROR== the profiler could not start"
    monkeypatch.setenv("NCU_SLEEP", "5")
    assert gpu_check.profile_kernels(timeout=1)["error"] == "timed out after 1 s"
    monkeypatch.setattr(gpu_check, "find_ncu", lambda: None)
    assert gpu_check.profile_kernels(timeout=1) == {"error": "Nsight Compute (ncu) not found"}


def test_mutation_check_changes_one_place_and_reports_who_caught_it(capsys):
    """benchmarks/mutation_check.py: each mutant differs from the module in exactly the one
    place drawn; a run on a copy of the tree says which mutants the tests caught."""
    import ast

    mutation = benchmark_script("mutation_check")
    source = "def f(a, b):\n    return a + 1 if a < b and not b else a * 2\n"
    tree = ast.parse(source)
    sites = mutation.mutation_sites(tree)
    assert sorted(kind for kind, _, _ in sites) == [
        "compare", "constant", "constant", "not", "operator", "operator", "operator"]

    def dumped(sources):  # compared as syntax trees: unparse's parentheses vary
        return {ast.dump(ast.parse(text)) for text in sources}

    mutants = [mutation.mutated_source(tree, site) for site in sites]
    assert ast.dump(tree) == ast.dump(ast.parse(source))  # left as it was
    assert dumped(mutants) == dumped(f"def f(a, b):\n    return {body}\n" for body in (
        "a - 1 if a < b and not b else a * 2", "a + 2 if a < b and not b else a * 2",
        "a + 1 if a <= b and not b else a * 2", "a + 1 if a < b or not b else a * 2",
        "a + 1 if a < b and +b else a * 2", "a + 1 if a < b and not b else a / 2",
        "a + 1 if a < b and not b else a * 3"))
    # end to end, on a module whose tests are quick: the tests catch the mutant, and the
    # working tree is never written to
    weighting = ROOT / "gpu_als" / "weighting.py"
    before = weighting.read_text()
    assert mutation.main(["gpu_als/weighting.py", "tests/test_weighting.py", "--mutants",
                          "1", "--seed", "0"]) == 0
    assert weighting.read_text() == before
    out = capsys.readouterr().out
    # the row names the mutant's place by its line, as the module has it (seed 0 draws
    # some place of it: which one moves with the module's code)
    found = re.search(r"\n  0 killed \w+ line (\d+): (.+) \(\d+ s\)\n", out)
    assert found, out
    assert before.splitlines()[int(found[1]) - 1].strip() == found[2]
    assert out.endswith("1 of 1 killed, 0 survived\n")


def test_mutation_check_changes_cuda_operators_outside_comments_strings_and_directives():
    """In a kernel file, the places are C++ operators and the integers 0, 1, 2 of the code:
    not those of comments, strings, #define lines, ``<<``, ``->``, ``++`` or numbers such as
    ``2.0f``; each mutant changes one of them and nothing else."""
    mutation = benchmark_script("mutation_check")
    source = textwrap.dedent("""\
        // a < b + 1
        #define LIMIT (1 + 2) \\
            * 2
        /* a multi-line
           comment, a * b */
        float f(const float* v, int a, int b) {
            const char* s = "a < b && 1";
            if (a != 0 && !(b >= 2)) return v[a] * 2.0f - v[b] / a;
            for (int i = 0; i < b; ++i) a += v->x << 1;
            return a > b || a == 1e-6;
        }
        """)
    sites = mutation.cuda_sites(source)
    found = [(line, kind, token) for kind, _, token, line in sites]
    assert found == [
        (6, "operator", "*"),
        (7, "operator", "*"),
        (8, "compare", "!="), (8, "constant", "0"), (8, "operator", "&&"), (8, "not", "!"),
        (8, "compare", ">="), (8, "constant", "2"), (8, "operator", "*"),
        (8, "operator", "-"), (8, "operator", "/"),
        (9, "constant", "0"), (9, "compare", "<"), (9, "operator", "+="),
        (9, "constant", "1"),
        (10, "compare", ">"), (10, "operator", "||"), (10, "compare", "=="),
        (10, "operator", "-")]
    assert mutation.cuda_sites(source, (9, 9)) == [s for s in sites if s[3] == 9]
    changed = {}
    for site in sites:
        mutant = mutation.cuda_mutated_source(source, site)
        differing = [(old, new) for old, new in zip(source.splitlines(), mutant.splitlines())
                     if old != new]
        assert len(mutant.splitlines()) == len(source.splitlines()) and len(differing) == 1
        changed[site[3], site[2], site[1]] = differing[0][1].strip()
    line8, line9 = source.splitlines()[7].strip(), source.splitlines()[8].strip()
    by_token = {(line, token): text for (line, token, _), text in changed.items()}
    assert by_token[8, "!"] == line8.replace("!(b", "(b")
    assert by_token[8, "&&"] == line8.replace("&&", "||")
    assert by_token[8, "2"] == line8.replace(">= 2", ">= 3")
    assert by_token[8, "-"] == line8.replace(" - ", " + ")
    assert by_token[9, "+="] == line9.replace("+=", "-=")
    assert by_token[9, "<"] == line9.replace("i < b", "i <= b")
    assert by_token[9, "1"] == line9.replace("<< 1", "<< 2")
    assert changed[10, "-", source.index("1e-6") + 2] == "return a > b || a == 1e+6;"


def test_mutation_check_tests_kernel_mutants_through_the_emulation(capsys):
    """A kernel mutant runs the tests against the emulation built from it; mutants that g++
    does not compile, and those in code that only the GPU compiles, are passed over and
    counted apart (no test could see them here)."""
    mutation = benchmark_script("mutation_check")

    def line_of(file, text):
        return next(number for number, line in enumerate(
            (ROOT / "kernels" / file).read_text().splitlines(), 1) if text in line)

    quick = ["tests/test_kernels.py", "--pytest-args", "-k every_kernel_file_is_listed"]
    # the loss of each entry: every mutant of it changes the loss
    line = line_of("loss.cu", "sum += (double)weight[e] * s * s")
    assert mutation.main(["kernels/loss.cu", "tests/test_solver.py", "--lines",
                          f"{line}-{line}", "--mutants", "1", "--pytest-args",
                          "-k 'loss_matches_dense_definition and emulated'"]) == 0
    out = capsys.readouterr().out
    source = (ROOT / "kernels" / "loss.cu").read_text()
    mutants = {mutation.cuda_mutated_source(source, site).splitlines()[line - 1].strip()
               for site in mutation.cuda_sites(source, (line, line))}
    assert len(mutants) == 6  # the line's four *, its - and its +=
    assert re.search(rf"^  0 killed operator line {line}: (.*) \(\d+ s\)$", out, re.M)[1] \
        in mutants  # the mutant's line, as it was tested
    assert out.endswith("1 of 1 killed, 0 survived; passed over: 0 that do not compile, "
                        "0 in code only the GPU compiles\n")
    # the pointers of the kernel's signature: "T/ weight" is no C++
    line = line_of("loss.cu", "loss_terms(const I* indptr")
    assert mutation.main(["kernels/loss.cu", quick[0], "--lines", f"{line}-{line}", *quick[1:]]
                         ) == 0
    out = capsys.readouterr().out
    assert out.count(f"passed over (does not compile) operator line {line}:") == 3
    assert out.endswith("0 of 0 killed, 0 survived; passed over: 3 that do not compile, "
                        "0 in code only the GPU compiles\n")
    # load4's vector load, which the host emulation replaces by a memcpy
    line = line_of("common.cuh", "const Quad q = *reinterpret_cast<const Quad*>(p);")
    assert mutation.main(["kernels/common.cuh", quick[0], "--lines", f"{line}-{line}",
                          *quick[1:]]) == 0
    out = capsys.readouterr().out
    assert out.count("passed over (the host does not compile it)") == 4  # * < * >
    assert out.endswith("0 of 0 killed, 0 survived; passed over: 0 that do not compile, "
                        "4 in code only the GPU compiles\n")


def test_mutation_check_counts_a_mutant_that_only_makes_a_test_skip_as_caught(
        capsys, movielens):
    """The mutant runs its tests as CI does: a MovieLens test that would skip (the loader
    reporting every file missing) fails instead, so the mutant is reported killed."""
    mutation = benchmark_script("mutation_check")
    line = next(number for number, text in enumerate(
        (ROOT / "gpu_als" / "datasets.py").read_text().splitlines(), 1)
        if "if not file.is_file():" in text)
    assert mutation.main(["gpu_als/datasets.py", "tests/test_datasets.py", "--lines",
                          f"{line}-{line}", "--pytest-args", "-k local_copy"]) == 0
    out = capsys.readouterr().out
    assert f"  0 killed not line {line}: if not file.is_file():" in out
    assert out.endswith("1 of 1 killed, 0 survived\n")


def test_splits_benchmark_script_runs(capsys):
    """benchmarks/bench_splits.py (its numbers in a closing note), small: a line per split."""
    pytest.importorskip("pandas")
    assert benchmark_script("bench_splits").main(["--rows", "20000", "--users", "500",
                                                  "--items", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "20,000 rows of 500 users x 300 items"
    assert [line.split("  ")[0] for line in lines[1:]] == [
        "temporal_split, each user's latest 20 %", "temporal_split, each user's latest row "
        "(K=1)", "temporal_split at a cutoff", "from_dataframe (for the matrix below)",
        "train_test_split of the matrix, 20 %", "train_test_split of the DataFrame, 20 %"]
    assert all(float(line.split()[-2]) >= 0 for line in lines[1:])


def test_spark_parity_script_says_what_it_needs_without_pyspark(monkeypatch):
    """benchmarks/spark_parity.py (`make spark-check`) compares with Spark MLlib, which
    gpu-als does not install: without pyspark it says what to run, not a traceback."""
    monkeypatch.setitem(sys.modules, "pyspark", None)  # (import pyspark: ImportError)
    script = benchmark_script("spark_parity")
    with pytest.raises(SystemExit, match=r"^spark_parity.py needs pyspark \(.*\): `make "
                                         r"spark-check` installs it in a venv of its own"):
        script.main([])
    assert set(script.CASES) == {"explicit", "implicit", "explicit-nonnegative",
                                 "implicit-nonnegative", "implicit, dislikes",
                                 "implicit, plain penalty"}
