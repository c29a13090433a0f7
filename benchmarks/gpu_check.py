"""`make gpu-check`: the one command to run on a GPU machine.

Runs the GPU tests (pytest -m gpu) and the benchmark's quick profile (ml20m-like at
factors 64 and 128 on the GPU, against implicit's GPU ALS when its wheels are installed,
see benchmarks/fetch_gpu_wheels.sh; MovieLens 100K on every implementation), then, where
Nsight Compute (`ncu`) is installed, reads the fused kernel's counters in one ml20m-like
fit at k = 128 (benchmarks/profile_fused.py), and writes
benchmarks/results/gpu-check-<device>-<commit>.json with the test counts (and the end of
each failed test's traceback) and one row per fit, rewritten after each fit and copied
into $OUT when that is set (the device tool brings back only what is written there, also
when the command runs out of time). Needs python3 with cupy, numpy, scipy and pytest; run
from the repository root with PYTHONPATH=.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --commit abc1234
"""

from __future__ import annotations

import argparse
import csv
import glob
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_als import benchmark  # noqa: E402

#: Test files run first, so that a run cut short by its time limit has checked the
#: kernels' numbers (the rest follow in name order).
FIRST_TESTS = ("test_solver.py", "test_gpu.py", "test_woodbury.py", "test_cusolver.py",
               "test_large_offsets.py")


def test_files() -> list[str]:
    """The test files in the order run_tests runs them."""
    files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    first = [name for name in FIRST_TESTS if name in files]
    return [str(ROOT / "tests" / name) for name in first + [f for f in files if f not in first]]


def run_tests(timeout: int) -> dict:
    """pytest -m gpu: the counts, the failures' one-line summaries, and whether it ran out of
    time (then the counts are those of the tests that had finished)."""
    folder = Path(tempfile.mkdtemp())
    report, failure_log = folder / "gpu-tests.xml", folder / "failures.jsonl"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p",
               "no:cacheprovider", "-p", "tests.failure_log", f"--junitxml={report}",
               *test_files()]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout,
                              env={**os.environ, "GPU_ALS_FAILURE_LOG": str(failure_log)})
        stdout, stderr, exit_code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) \
            else expired.stdout or ""
        stderr, exit_code = f"timed out after {timeout} s", None
    print(stdout[-4000:], stderr[-2000:], sep="\n", flush=True)
    if exit_code is not None and report.exists():
        counts = counts_from_junit(report)
    else:
        counts = counts_from_progress(stdout)
    counts["failure_details"] = failure_details(failure_log)
    counts["failures"] = [line for line in stdout.splitlines()
                          if line.startswith(("FAILED ", "ERROR "))]
    counts["seconds"] = round(time.perf_counter() - started, 1)
    counts["exit_code"] = exit_code
    return counts


def counts_from_junit(report: Path) -> dict:
    """``passed``, ``failed`` (failures and errors) and ``skipped`` of a pytest JUnit XML
    report."""
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def failure_details(log: Path, most: int = 20) -> list[dict]:
    """The first ``most`` failures that tests/failure_log.py wrote to ``log`` as they
    happened (``test``, ``outcome``, the end of the traceback): what a fix needs once the
    GPU machine is gone, also after a run that ran out of time."""
    if not log.exists():
        return []
    with open(log) as lines:
        return [json.loads(line) for line in itertools.islice(lines, most)]


def counts_from_progress(stdout: str) -> dict:
    """The counts of a pytest run that ran out of time, from the progress characters of
    the tests that finished (``-q`` output); the test it was in counts as failed."""
    marks = "".join(line.split()[0] for line in stdout.splitlines()
                    if re.fullmatch(r"[.FEsxX]+\s+\[\s*\d+%\]", line.strip()))
    return {"passed": marks.count("."), "failed": marks.count("F") + marks.count("E") + 1,
            "skipped": marks.count("s"), "timed_out": True}


def info_text(timeout: int = 120) -> str:
    """What ``gpu-als info --check`` prints here: the device's limits as the backend sees
    them, and each GPU path's half-step against the CPU backend's (its kernels mostly
    built by the tests before, in CuPy's cache); ``gpu-als info`` without a GPU. In a
    process of its own, as the tests run: a kernel that hangs costs ``timeout`` seconds,
    not the benchmark after it."""
    check = ["--check"] if benchmark.device_name() is not None else []
    try:
        done = subprocess.run([sys.executable, "-m", "gpu_als", "info", *check], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:  # recorded, never fatal: the tests and
        printed = expired.stdout.decode() if isinstance(expired.stdout, bytes) \
            else expired.stdout or ""                # timings matter more
        return printed + f"gpu-als info --check timed out after {timeout} s\n"
    return done.stdout + (f"gpu-als info --check: exit status {done.returncode}\n"
                          f"{done.stderr[-2000:]}" if done.returncode else "")


#: Nsight Compute's sections read for the fused kernel: what bounds it (throughputs,
#: occupancy and what limits it, warp stalls, the pipes and shared memory it uses).
NCU_SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "WarpStateStats",
                "ComputeWorkloadAnalysis", "MemoryWorkloadAnalysis")
#: Of those, the metrics printed at the end of the run (all of them go to the JSON).
NCU_SUMMARY = ("Duration", "Compute (SM) Throughput", "Memory Throughput",
               "Registers Per Thread", "Block Limit Registers", "Block Limit Shared Mem",
               "Theoretical Occupancy", "Achieved Occupancy")


def find_ncu() -> str | None:
    """Nsight Compute's command line: on the PATH, else where CUDA's installers put it."""
    found = shutil.which("ncu")
    if found:
        return found
    candidates = sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu")) + \
        sorted(glob.glob("/usr/local/cuda*/bin/ncu"))
    return candidates[-1] if candidates else None


def parse_ncu_csv(text: str) -> list[dict]:
    """The metric rows of ``ncu --csv --page details`` output, as ``launch``, ``kernel``,
    ``section``, ``metric``, ``unit`` and ``value`` (ncu's text, kept as printed);
    ncu's own messages and the program's output around the table are skipped."""
    lines = [line for line in text.splitlines() if not line.startswith("==")]
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    return [{"launch": record.get("ID"), "kernel": record.get("Kernel Name"),
             "section": record.get("Section Name"), "metric": record.get("Metric Name"),
             "unit": record.get("Metric Unit"), "value": record.get("Metric Value")}
            for record in csv.DictReader(lines[start:]) if record.get("Metric Name")]


def profile_kernels(timeout: int, factors: int = 128) -> dict:
    """Nsight Compute's counters for the fused kernel's first two launches (the user and
    the item half-step) in one ml20m-like fit: ``{"command", "factors", "metrics"}``, and
    ``"error"`` when there is no ncu, it failed or it ran out of time."""
    ncu = find_ncu()
    if ncu is None:
        return {"error": "Nsight Compute (ncu) not found"}
    sections = [arg for section in NCU_SECTIONS for arg in ("--section", section)]
    command = [ncu, "--kernel-name", "regex:fused_solve", "--launch-count", "2", "--csv",
               "--page", "details", *sections, sys.executable,
               str(ROOT / "benchmarks" / "profile_fused.py"), "--factors", str(factors)]
    result: dict = {"command": " ".join(["ncu", *command[1:]]), "factors": factors,
                    "metrics": []}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        result["error"] = f"timed out after {timeout} s"
        return result
    result["metrics"] = parse_ncu_csv(done.stdout)
    if done.returncode != 0 or not result["metrics"]:
        result["error"] = (f"ncu exited with status {done.returncode}: "
                           f"{(done.stderr.strip() or done.stdout.strip())[-1500:]}")
    return result


def print_profile(profile: dict) -> None:
    """The summary metrics of each profiled launch, one line each."""
    if "error" in profile:
        print(f"kernel profile: {profile['error']}", flush=True)
    for metric in profile.get("metrics", []):
        if metric["metric"] in NCU_SUMMARY:
            print(f"  launch {metric['launch']} {metric['metric']}: {metric['value']} "
                  f"{metric['unit'] or ''}".rstrip(), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default=None, help="commit being checked")
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=None,
                        help="per fit (default: the quick profile's)")
    parser.add_argument("--bench-timeout", type=float, default=60,
                        help="seconds per fit (a hung kernel costs at most this much)")
    # the GPU tests took 86 s on an H200 at b146964; more have come since (the plain-copies
    # builds compile every kernel again)
    parser.add_argument("--test-timeout", type=int, default=180,
                        help="seconds for the GPU tests (then the counts of those finished)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--profile-timeout", type=int, default=60,
                        help="seconds for the fused kernel's Nsight Compute profile")
    parser.add_argument("--skip-profile", action="store_true",
                        help="no Nsight Compute profile of the fused kernel")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for the result JSON")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without a GPU (to test this script: CPU rows only)")
    args = parser.parse_args(argv)

    if benchmark.device_name() is None and not args.allow_cpu:
        parser.error("no GPU here (pass --allow-cpu to check the script on the CPU)")
    if args.commit:
        os.environ["GPU_ALS_COMMIT"] = args.commit  # the benchmark's fits record it too
    tests = {"passed": 0, "failed": 0, "skipped": 0} if args.skip_tests \
        else run_tests(args.test_timeout)
    # The benchmark's document (commit, date, device, host, versions, rows, comparisons)
    # plus the test counts.
    result = {**benchmark.result_document("quick", []), "tests": tests,
              "info": info_text()}
    output = args.results / f"gpu-check-{benchmark.slug(result['device'])}-{result['commit']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)

    def save(row: dict | None = None) -> None:
        if row is not None:
            result["benchmarks"].append(row)
        output.write_text(json.dumps(result, indent=2) + "\n")
        if os.environ.get("OUT"):
            shutil.copy(output, Path(os.environ["OUT"]) / output.name)

    save()
    # The benchmark's quick profile (gpu_als/benchmark.py): ml20m-like on every GPU
    # implementation that can run here, MovieLens 100K on all of them.
    try:
        bench = benchmark.run("quick", factors=args.factors, iterations=args.iterations,
                              timeout=args.bench_timeout, on_row=save)
    except ValueError as exc:  # nothing could be measured: said in the file, not lost
        result["benchmark_error"] = str(exc)
        save()
        print(f"benchmark: {exc}\nwrote {output}", flush=True)
        return 1
    result["comparisons"] = bench["comparisons"]
    save()
    benchmark.print_comparisons(bench["comparisons"])
    if args.skip_profile or benchmark.device_name() is None:
        result["kernel_profile"] = {"error": "not asked for" if args.skip_profile
                                    else "no GPU here"}
    else:  # informative only: its failure fails nothing
        result["kernel_profile"] = profile_kernels(args.profile_timeout)
        print_profile(result["kernel_profile"])
    save()
    # every row and the half-steps by path, tile and block size, for the log's tail
    # (informative: the file is written, and a table that cannot be made fails nothing)
    try:
        print(benchmark.markdown_tables(result), flush=True)
    except (KeyError, TypeError, ValueError) as exc:
        print(f"the tables could not be made: {type(exc).__name__}: {exc}", flush=True)
    print(f"wrote {output}", flush=True)
    failed = [row for row in result["benchmarks"] if "error" in row]
    return 0 if tests["failed"] == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
