"""Charts and tables of benchmark results (gpu_als/benchmark.py).

    python benchmarks/plot_bench.py benchmarks/results/bench-*.json --output docs/bench
    python benchmarks/plot_bench.py RESULT.json --markdown     # the README's tables

Charts: one PNG per dataset, seconds per iteration against factors, one line per
implementation, into OUTPUT/<device>/.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als.benchmark import markdown_tables, slug  # noqa: E402
from gpu_als.plots import plot_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="result JSON files")
    parser.add_argument("--output", type=Path, default=Path("docs") / "bench")
    parser.add_argument("--markdown", action="store_true",
                        help="print Markdown tables instead of drawing charts")
    args = parser.parse_args(argv)
    for path in args.results:
        result = json.loads(path.read_text())
        if args.markdown:
            print(markdown_tables(result))
            continue
        folder = args.output / slug(result["device"])
        for chart in plot_benchmark(result, folder):
            print(f"wrote {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
