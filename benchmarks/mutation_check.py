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

A kernel file (``kernels/*.cu``, ``*.cuh``) is mutated the same way, token by token, with
``+=`` / ``-=`` and ``*=`` / ``/=`` too, outside comments, strings and preprocessor
lines:

    python benchmarks/mutation_check.py kernels/solve.cu tests/test_kernels.py \
        tests/test_solver.py tests/test_woodbury.py tests/test_cusolver.py --timeout 900 \
        --pytest-args "-k 'not sanitizer and not nvrtc and not standing_in'"

The tests see a kernel mutant through the host emulation (tests/emulation.py), which
compiles the kernels with g++. A mutant that g++ does not compile (``*`` of a pointer
declaration made ``/``, ``<`` of a template made ``<=``), and one in code that only the
GPU compiles (the host's preprocessed source is unchanged: ``cp.async``), are passed over
and counted apart: the tests could not see them here. ``--mutants`` counts the mutants
tested.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import random
import re
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


#: Each mutable C++ operator and what it becomes (SWAPS, and the compound assignments).
CUDA_SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==",
              "+": "-", "-": "+", "*": "/", "/": "*", "+=": "-=", "-=": "+=",
              "*=": "/=", "/=": "*=", "&&": "||", "||": "&&"}
#: A C++ token this script may change, the longer operators first so that ``<<``, ``->``
#: and ``++`` (left alone) are not read as ``<``, ``-`` and ``+``; an integer 0, 1 or 2
#: that is not part of a name or of a number such as ``2.0f`` or ``0x7f``.
CUDA_TOKEN = re.compile(r"<<=|>>=|<<|>>|->|\+\+|--|&&|\|\||[-+*/<>=!]=|[-+*/<>!]"
                        r"|(?<![\w.])[0-2](?![\w.])")
#: Comments, string and character literals and preprocessor lines (with their
#: continuations): never mutated.
CUDA_NOT_CODE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"'
                           r"|'(?:\\.|[^'\\\n])*'"
                           r"|^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.DOTALL | re.MULTILINE)


def cuda_sites(source: str, lines: tuple[int, int] | None = None) -> list[tuple]:
    """Every place :func:`cuda_mutated_source` can change in a C++ source, as (kind,
    offset, token, line)."""
    code = CUDA_NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)
    sites = []
    for match in CUDA_TOKEN.finditer(code):
        token, line = match.group(), code.count("\n", 0, match.start()) + 1
        if lines is not None and not lines[0] <= line <= lines[1]:
            continue
        if token.isdigit():
            sites.append(("constant", match.start(), token, line))
        elif token == "!":
            sites.append(("not", match.start(), token, line))
        elif token in CUDA_SWAPS:
            kind = "compare" if token in ("<", "<=", ">", ">=", "==", "!=") else "operator"
            sites.append((kind, match.start(), token, line))
    return sites


def cuda_mutated_source(source: str, site: tuple) -> str:
    """``source`` with ``site`` (from :func:`cuda_sites`) changed: an operator swapped, a
    constant plus one, a ``!`` dropped."""
    kind, offset, token, _ = site
    if kind == "constant":
        new = str(int(token) + 1)
    else:
        new = "" if kind == "not" else CUDA_SWAPS[token]
    return source[:offset] + new + source[offset + len(token):]


#: Run in the copy: for each kernel file, a digest of what the host compiler sees of it,
#: then, for those whose digest differs from the one given as an argument ("file=digest"),
#: the emulation library, into GPU_ALS_EMULATION_CACHE, where the tests find it.
HOST_BUILD = """
import hashlib, sys
from tests import emulation
before = dict(argument.split("=") for argument in sys.argv[1:])
for file in emulation._kernels.SPECIALISATIONS:
    digest = hashlib.sha256(emulation.host_source(file).encode()).hexdigest()
    print(file, digest, flush=True)
    if before and before[file] != digest:
        emulation.build(file)
"""


def host_build(copy: Path, env: dict, before: dict[str, str] | None = None
               ) -> tuple[dict[str, str], bool]:
    """Each kernel file's digest of what the host compiler sees of it (those it did not
    reach: missing), and whether all went well; given the digests ``before``, the
    emulation libraries of the files whose digest changed are built too."""
    arguments = [f"{file}={digest}" for file, digest in (before or {}).items()]
    result = subprocess.run([sys.executable, "-c", HOST_BUILD, *arguments], cwd=copy,
                            env=env, capture_output=True, text=True)
    return dict(line.split() for line in result.stdout.splitlines()), result.returncode == 0


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
    parser.add_argument("module", help="the module to mutate, e.g. gpu_als/evaluation.py, "
                        "or a kernel file, e.g. kernels/solve.cu")
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
    kernel = Path(args.module).suffix in (".cu", ".cuh")
    if kernel:  # (kind, line, the mutant's source when called)
        mutants = [(site[0], site[3], functools.partial(cuda_mutated_source, source, site))
                   for site in cuda_sites(source, lines)]
    else:
        tree = ast.parse(source)
        mutants = [(site[0], site[1].lineno, functools.partial(mutated_source, tree, site))
                   for site in mutation_sites(tree, lines)]
    random.Random(args.seed).shuffle(mutants)
    print(f"{args.module}: {len(mutants)} places, {min(args.mutants, len(mutants))} mutants; "
          f"tests: {' '.join(args.tests)}", flush=True)
    tested = survivors = not_compiled = device_only = 0
    with tempfile.TemporaryDirectory(prefix="gpu_als_mutants_") as folder:
        copy = Path(folder)
        copy_tree(copy)
        env = {**os.environ, "PYTHONPATH": str(copy), "CI": "true",
               "GPU_ALS_EMULATION_CACHE": str(copy / ".emulation")}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *args.tests, *shlex.split(args.pytest_args)]
        baseline = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
        if baseline.returncode != 0:  # else every mutant would look killed
            print(f"the tests fail on the unmutated copy:\n{baseline.stdout[-3000:]}"
                  f"{baseline.stderr[-2000:]}")
            return 1
        host, ok = host_build(copy, env) if kernel else ({}, True)
        if not ok:
            print("the kernels cannot be preprocessed for the host emulation")
            return 1
        for kind, line, mutant in mutants:
            if tested == args.mutants:
                break
            mutated = mutant()
            (copy / args.module).write_text(mutated)
            # a kernel mutant keeps every line where it was: its own line shows the change
            shown = (mutated if kernel else source).splitlines()[line - 1].strip()
            text = f"{kind} line {line}: {shown[:100]}"
            if kernel:  # the tests see only what the host compiler sees and compiles
                seen, ok = host_build(copy, env, host)
                if ok and seen == host:
                    device_only += 1
                    print(f"    passed over (the host does not compile it) {text}", flush=True)
                    continue
                if not ok:
                    not_compiled += 1
                    print(f"    passed over (does not compile) {text}", flush=True)
                    continue
            started = time.perf_counter()
            try:
                killed = subprocess.run(command, cwd=copy, env=env, capture_output=True,
                                        timeout=args.timeout).returncode != 0
            except subprocess.TimeoutExpired:
                killed = True
            survivors += not killed
            print(f"{tested:3d} {'killed' if killed else 'SURVIVED'} {text} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            tested += 1
    passed_over = (f"; passed over: {not_compiled} that do not compile, {device_only} "
                   f"in code only the GPU compiles" if kernel else "")
    print(f"{tested - survivors} of {tested} killed, {survivors} survived{passed_over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
