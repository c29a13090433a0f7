"""pytest plugin: each failed test's report, appended to a file as soon as it fails.

    GPU_ALS_FAILURE_LOG=failures.jsonl python -m pytest -p tests.failure_log ...

One JSON line per failure: ``test`` (the node id), ``outcome`` ("failure" in the test,
"error" in its set-up or tear-down) and ``text`` (the end of its report). ``make
gpu-check`` (benchmarks/gpu_check.py) uses it: JUnit's report is written only when the
whole run ends, and a run stopped by its time limit should still say what failed and why.
"""

import json
import os

#: The environment variable naming the file.
LOG = "GPU_ALS_FAILURE_LOG"
#: Characters kept of each report (its end: the assertion or the exception).
KEPT = 3000


def pytest_runtest_logreport(report):
    path = os.environ.get(LOG)
    if not path or not report.failed:
        return
    with open(path, "a") as log:
        log.write(json.dumps({"test": report.nodeid,
                              "outcome": "failure" if report.when == "call" else "error",
                              "text": report.longreprtext[-KEPT:]}) + "\n")
        log.flush()
