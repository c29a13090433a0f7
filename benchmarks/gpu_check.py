"""`make gpu-check`: the one command to run on a GPU machine.

Runs the GPU tests (pytest -m gpu) and a short benchmark (ml20m-like at factors 64 and 128),
and writes benchmarks/results/gpu-check-<device>-<commit>.json with the test counts and
one row per benchmark; also copies it into $OUT when that is set (the device tool brings
back only what is written there). Needs python3 with cupy, numpy, scipy and pytest; run
from the repository root with PYTHONPATH=.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --commit abc1234
"""

from __future__ import annotations

import argparse
import datetime
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: ml20m-like: MovieLens 20M positives' shape (DESIGN.md / the GPU backend issue).
ML20M_LIKE = {"n_users": 138_000, "n_items": 27_000, "nnz": 10_000_000}


def run_tests(timeout: int) -> dict:
    report = Path(tempfile.mkdtemp()) / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", str(ROOT / "tests")]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(result.stdout[-4000:], result.stderr[-2000:], sep="\n", flush=True)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if report.exists():
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts = {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}
    counts["seconds"] = round(time.perf_counter() - started, 1)
    counts["exit_code"] = result.returncode
    return counts


def run_benchmarks(factor_list, iterations: int) -> list[dict]:
    from gpu_als import ALS
    from gpu_als.datasets import make_power_law

    started = time.perf_counter()
    R = make_power_law(**ML20M_LIKE, random_state=0)
    print(f"ml20m-like generated in {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    for k in factor_list:
        stamps = [0.0]
        model = ALS(factors=k, regularization=0.01, alpha=10.0, iterations=iterations,
                    backend="gpu", random_state=0, show_progress=False,
                    callback=lambda it, elapsed, loss, stamps=stamps: stamps.append(elapsed))
        model.fit(R)
        per_iteration = float(np.median(np.diff(stamps)[1:]))
        rows.append({
            "dataset": "ml20m-like", "users": R.shape[0], "items": R.shape[1], "nnz": R.nnz,
            "factors": k, "library": "gpu_als", "backend": "gpu",
            "seconds_per_iteration": per_iteration,
            "first_iteration_seconds": stamps[1],
            "final_loss": model.loss_history_[-1],
            "gram_gflops": 2 * 2 * R.nnz * k * k / per_iteration / 1e9,
        })
        print(f"ml20m-like k={k}: {per_iteration * 1e3:.1f} ms/iteration "
              f"(first {stamps[1]:.2f} s), loss {model.loss_history_[-1]:.6g}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default=None, help="commit being checked")
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--test-timeout", type=int, default=150)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)

    import cupy

    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    commit = args.commit or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip() or "unknown"
    tests = {"passed": 0, "failed": 0, "skipped": 0} if args.skip_tests \
        else run_tests(args.test_timeout)
    result = {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "versions": {"cupy": cupy.__version__, "numpy": np.__version__,
                     "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()},
        "tests": tests,
        "benchmarks": [],
    }
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    output = ROOT / "benchmarks" / "results" / f"gpu-check-{slug}-{commit}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        result["benchmarks"] = run_benchmarks(args.factors, args.iterations)
    finally:  # whatever was measured comes back, even when the benchmark fails
        output.write_text(json.dumps(result, indent=2) + "\n")
        if os.environ.get("OUT"):
            shutil.copy(output, Path(os.environ["OUT"]) / output.name)
        print(f"wrote {output}", flush=True)
    return 0 if tests["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
