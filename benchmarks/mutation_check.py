"""Do the tests catch a wrong line? Mutation testing of one module, a mutant at a time.

    python benchmarks/mutation_check.py gpu_als/evaluation.py tests/test_evaluation.py \
        --mutants 70 --seed 1 [--lines 800-1500] [--pytest-args "-k not slow"]

Copies the files git tracks into a temporary folder, then for each of ``--mutants``
places drawn at random (seeded) from the module's syntax tree changes that one place (a
comparison ``<`` / ``<=``, ``==`` / ``!=``, ``in`` / ``not in``, ``is`` / ``is not``; an
operator ``+`` / ``-``, ``*`` / ``/``, ``//`` to ``*``; ``and`` / ``or``; a constant 0, 1
or 2 plus one; a ``not`` dropped), runs the given tests on the copy (``pytest -x``) and
prints whether they failed ("killed") or passed ("SURVIVED"); a run past ``--timeout``
seconds counts as killed (the mutant made something loop). The tests run as under CI
(``CI=true``), where a test that would skip for a missing input (MovieLens, the compiler)
fails instead: a mutant that only makes a test skip is caught. A survivor is a place to look
at, not a verdict: many are equivalent (a bound on a block size, a heuristic that only
changes speed), and some are caught by tests outside the ones given. The tree itself is
never written to.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Each mutable node type and what it becomes.
SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.Add: ast.Sub, ast.Sub: ast.Add,
    ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult, ast.And: ast.Or,
    ast.Or: ast.And,
}


def mutation_sites(tree: ast.AST, lines: tuple[int, int] | None = None) -> list[tuple]:
    """Every place :func:`mutated_source` can change, as (kind, node, operand index)."""
    sites = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if lines is not None and (line is None or not lines[0] <= line <= lines[1]):
            continue
        if isinstance(node, ast.Compare):
            sites += [("compare", node, i) for i, op in enumerate(node.ops)
                      if type(op) in SWAPS]
        elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            sites.append(("operator", node, 0))
        elif isinstance(node, ast.Constant) and type(node.value) is int and \
                node.value in (0, 1, 2):
            sites.append(("constant", node, 0))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append(("not", node, 0))
    return sites


def mutated_source(tree: ast.AST, site: tuple) -> str:
    """The module's source with ``site`` changed (the tree is left as it was)."""
    kind, node, i = site
    if kind == "compare":
        ops = list(node.ops)
        ops[i] = SWAPS[type(ops[i])]()
        attribute, new = "ops", ops
    elif kind == "constant":
        attribute, new = "value", node.value + 1
    else:  # "not" is dropped (a unary +); an operator swapped
        attribute, new = "op", ast.UAdd() if kind == "not" else SWAPS[type(node.op)]()
    old = getattr(node, attribute)
    setattr(node, attribute, new)
    try:
        return ast.unparse(tree)
    finally:
        setattr(node, attribute, old)


def copy_tree(to: Path) -> None:
    """The files git tracks (as they are in the working tree) under ``to``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help="the module to mutate, e.g. gpu_als/evaluation.py")
    parser.add_argument("tests", nargs="+", help="the test files that should catch it")
    parser.add_argument("--mutants", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines", help="only places in these lines, e.g. 800-1500")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, e.g. "
                        "\"-k 'not sanitizer'\" (split as a shell would)")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    lines = None
    if args.lines:
        first, last = args.lines.split("-")
        lines = (int(first), int(last))
    source = (ROOT / args.module).read_text()
    tree = ast.parse(source)
    sites = mutation_sites(tree, lines)
    random.Random(args.seed).shuffle(sites)
    chosen = sites[:args.mutants]
    print(f"{args.module}: {len(sites)} places, {len(chosen)} mutants; tests: "
          f"{' '.join(args.tests)}", flush=True)
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="gpu_als_mutants_") as folder:
        copy = Path(folder)
        copy_tree(copy)
        env = {**os.environ, "PYTHONPATH": str(copy), "CI": "true"}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *args.tests, *shlex.split(args.pytest_args)]
        baseline = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
        if baseline.returncode != 0:  # else every mutant would look killed
            print(f"the tests fail on the unmutated copy:\n{baseline.stdout[-3000:]}"
                  f"{baseline.stderr[-2000:]}")
            return 1
        for number, site in enumerate(chosen):
            (copy / args.module).write_text(mutated_source(tree, site))
            started = time.perf_counter()
            try:
                killed = subprocess.run(command, cwd=copy, env=env, capture_output=True,
                                        timeout=args.timeout).returncode != 0
            except subprocess.TimeoutExpired:
                killed = True
            line = site[1].lineno
            survivors += not killed
            print(f"{number:3d} {'killed' if killed else 'SURVIVED'} {site[0]} line {line}: "
                  f"{source.splitlines()[line - 1].strip()[:100]} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} killed, {survivors} survived")
    return 0


if __name__ == "__main__":
    sys.exit(main())
