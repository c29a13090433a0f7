"""Charts of benchmark results: one PNG per dataset, seconds per iteration against factors.

    python benchmarks/plot_bench.py benchmarks/results/bench-*.json --output docs/bench

Several result files (e.g. a GPU machine's and this machine's) are drawn into one chart
per dataset and device.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als.benchmark import slug  # noqa: E402
from gpu_als.plots import plot_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="result JSON files")
    parser.add_argument("--output", type=Path, default=Path("docs") / "bench")
    args = parser.parse_args(argv)
    for path in args.results:
        result = json.loads(path.read_text())
        folder = args.output / slug(result["device"])
        for chart in plot_benchmark(result, folder):
            print(f"wrote {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
