"""The command line under random options: each run ends with exit status 0, or 2 and a
one-line error in the options' words; never a traceback, a hang or Python's own words.

A seeded sweep of random sets of options (values drawn from numbers, ``nan``, ``inf``,
empty text, column and file names) for the commands that read files; a larger one-off
run of it found a 60 s hang (``--scheduler`` given a file name) and a ``--value-col``
named in the DataFrame's words (docs/testing.md, stop 67).
"""

import argparse
import contextlib
import io
import os
import random
import re
import warnings

import pytest

from gpu_als.cli import build_parser, main

from .conftest import timed_interactions

#: The values an option is given: each kind of mistake, and names that exist.
VALUES = ["0", "1", "-1", "2", "3", "0.5", "nan", "inf", "abc", "", "user", "item", "value",
          "when", "a.csv", "b.csv", "m.npz", "@items.txt", "1e9", "1e30", "10", "x=1",
          "factors=2,3", "alpha=uniform:1:5", "implicit", "explicit", "cpu"]
#: What options that write are given: never the inputs, which later runs read.
OUTPUTS = ["out.csv", "out.npz", "out.parquet", "out.png", "", "."]
WRITERS = {"--output", "--trials", "--plot"}
#: The commands' files (the ones that download or build kernels are left out).
FILES = {"train": [["a.csv"]], "evaluate": [["a.csv"]], "tune": [["a.csv"]],
         "recommend": [["m.npz", "a.csv"], ["m.npz"]], "similar": [["m.npz"], ["m.npz", "b.csv"]],
         "predict": [["m.npz", "pairs.csv"]], "explain": [["m.npz", "a.csv"]],
         "export": [["m.npz"]], "fold-in": [["m.npz", "b.csv"]],
         "recommend-users": [["m.npz"], ["m.npz", "b.csv"]], "info": [["m.npz"], []]}
REQUIRED = {"--output": ["out.npz"], "--user": ["1"], "--items": ["2", "3"]}
#: Words of Python's own errors, which no message of the command line should hold.
INTERNALS = re.compile(r"NoneType|not subscriptable|unsupported operand|object has no "
                       r"attribute|positional argument|unhashable|is out of bounds|cannot "
                       r"unpack|referenced before|not callable|object is not iterable|"
                       r"invalid literal|could not convert|only integer scalar|truth value|"
                       r"Traceback")


@pytest.fixture
def files(tmp_path, monkeypatch):
    df = timed_interactions(400, 30, 20, seed=0)
    monkeypatch.chdir(tmp_path)
    df.to_csv("a.csv", index=False)
    df.iloc[:80].assign(user=df["user"] + 100).to_csv("b.csv", index=False)  # new users
    df[["user", "item"]].to_csv("pairs.csv", index=False)
    (tmp_path / "items.txt").write_text("1\n2\n3\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "a.csv", "--factors", "4", "--iterations", "2", "--backend",
                     "cpu", "-o", "m.npz"]) == 0


def random_arguments(rnd: random.Random, commands, named=lambda name: name) -> list[str]:
    """A command, its files, and up to four of its options with random values (and the
    options it requires); ``named`` gives the file names as the command is given them
    (a URL, say)."""
    command = rnd.choice(sorted(FILES))
    parser = commands.choices[command]
    options = [a for a in parser._actions if a.option_strings
               and a.dest not in ("help", "compile")]  # (--compile: a minute of NVRTC)
    args = [command, *map(named, rnd.choice(FILES[command]))]
    for action in rnd.sample(options, min(len(options), rnd.randint(0, 4))):
        flag = action.option_strings[-1]
        if action.nargs == 0:
            args.append(flag)
            continue
        count = rnd.randint(1, 2) if action.nargs in ("+", "*") else 1
        pool = list(action.choices) if action.choices else \
            OUTPUTS if flag in WRITERS else VALUES
        args += [flag, *(named(str(rnd.choice(pool))) for _ in range(count))]
    for action in parser._actions:
        flag = action.option_strings[-1] if action.option_strings else None
        if action.required and flag and flag not in args:
            args += [flag, *map(named, REQUIRED.get(flag, ["1"]))]
    if command in ("train", "evaluate", "tune") and "--iterations" not in args:
        args += ["--iterations", "2"]
    return args


def test_random_options_end_with_a_result_or_a_one_line_error(files):
    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    rnd = random.Random(67)
    each_ends_with_a_result_or_a_one_line_error(
        random_arguments(rnd, commands) for _ in range(600))  # (about 6 s)


def test_random_options_on_urls_end_with_a_result_or_a_one_line_error(files, tmp_path):
    """The same sweep with every file, output and ``@FILE`` a URL of fsspec's in-memory
    filesystem (an output sometimes its root folder, or of a protocol fsspec does not
    know). ``GPU_ALS_FUZZ_SEED`` and ``GPU_ALS_FUZZ_RUNS`` make a larger one-off sweep
    (stop 77: seeds 1 to 5, 2,400 runs, found nothing)."""
    fsspec = pytest.importorskip("fsspec")
    memory, root = fsspec.filesystem("memory"), f"/{tmp_path.name}"
    for path in tmp_path.iterdir():
        memory.pipe(f"{root}/{path.name}", path.read_bytes())
    odd = {"": "", ".": f"memory:/{root}", "out.png": "nope://bucket/out.png"}

    def named(name: str) -> str:
        if name.startswith("@"):
            return f"@memory:/{root}/{name[1:]}"
        if name in odd:
            return odd[name]
        return f"memory:/{root}/{name}" if "." in name and name[0] != "." and \
            not name[0].isdigit() else name

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    rnd = random.Random(int(os.environ.get("GPU_ALS_FUZZ_SEED", 77)))
    try:
        each_ends_with_a_result_or_a_one_line_error(
            random_arguments(rnd, commands, named)
            for _ in range(int(os.environ.get("GPU_ALS_FUZZ_RUNS", 150))))  # (about 12 s)
    finally:
        memory.rm(root, recursive=True)


def each_ends_with_a_result_or_a_one_line_error(runs) -> None:
    """``main(args)`` for each ``args`` of ``runs`` (drawn as they are run): each ends with
    exit status 0, or 2 and one line ``gpu-als COMMAND: error: ...`` without Python's own
    words; and both ends are reached."""
    wrong, statuses = [], []
    for args in runs:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                status = main(args)
        except SystemExit as exc:  # argparse's errors
            status = exc.code
        except Exception as exc:  # noqa: BLE001 - what the sweep looks for
            wrong.append((args, f"raised {type(exc).__name__}: {exc}"))
            continue
        text = err.getvalue()
        errors = [line for line in text.splitlines()
                  if line.startswith(f"gpu-als {args[0]}: error: ")]
        statuses.append(status)
        if status not in (0, 2) or (status == 2 and len(errors) != 1) or \
                INTERNALS.search(text):
            wrong.append((args, status, text[-500:]))
    assert not wrong, "\n".join(map(repr, wrong))
    assert 0.1 < statuses.count(0) / len(statuses) < 0.9


def test_bench_under_random_options_ends_with_a_result_or_a_one_line_error(
        tmp_path, monkeypatch):
    """``gpu-als bench`` (its own parser) on a small matrix of one's own, under up to four
    random options (no named dataset: MovieLens 100K takes seconds a fit, the synthetic
    ones minutes to generate). It found a ``--timeout`` too long for ``subprocess`` and a
    ``--child`` (the subprocesses' own option) of JSON other than an object raising
    Python's errors, and a folder given as ``--matrix`` called "not a sparse matrix saved
    by scipy.sparse.save_npz" (docs/testing.md, stop 70)."""
    import numpy as np
    import scipy.sparse as sp

    from gpu_als import benchmark

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPU_ALS_BENCH_CACHE", str(tmp_path / "cache"))
    # each fit in this process, not in one of its own (a second of imports each; the
    # subprocesses are test_benchmark's)
    monkeypatch.setattr(benchmark, "_run_subprocess", lambda spec, timeout:
                        benchmark.run_one(spec))
    R = sp.random(60, 40, density=0.2, random_state=1, format="csr")
    R.data = np.ceil(R.data * 5)
    sp.save_npz("m.npz", R)
    sp.save_npz("empty.npz", sp.csr_matrix((5, 4)))
    (tmp_path / "table.csv").write_text("user,item\n1,2\n")
    (tmp_path / "folder").mkdir()
    values = [*VALUES, "m.npz", "empty.npz", "table.csv", "folder", "res.json"]
    options = [a for a in benchmark.build_parser()._actions
               if a.option_strings and a.dest != "help"]
    rnd = random.Random(70)

    def draws():
        for _ in range(150):  # (about 2 s)
            chosen = {a.option_strings[-1]: a for a in rnd.sample(options, rnd.randint(1, 4))}
            given = {"--matrix": ["m.npz"], "--factors": ["2"], "--iterations": ["2"],
                     "--implementations": ["gpu_als-cpu-cg"], "--output": ["res.json"]}
            for flag, action in chosen.items():
                if action.nargs == 0:
                    given[flag] = []
                    continue
                pool = values if action.dest == "datasets" else action.choices or values
                given[flag] = [str(rnd.choice(list(pool)))
                               for _ in range(rnd.choice([0, 1, 1, 2]) if action.nargs == "+"
                                              else 1)]
            yield ["bench", *(part for flag, parts in given.items() for part in (flag, *parts))]

    each_ends_with_a_result_or_a_one_line_error(draws())
