"""Charts and tables of benchmark results (gpu_als/benchmark.py).

    python benchmarks/plot_bench.py benchmarks/results/bench-*.json --output docs/bench
    python benchmarks/plot_bench.py RESULT.json --markdown     # the README's tables

Charts: one PNG per dataset, seconds per iteration against factors, one line per
implementation, into OUTPUT/<device>/. The files' rows are merged per device first, so a
benchmark run in pieces (a dataset or a factor size at a time) gives whole charts; a later
file's row replaces an earlier one for the same dataset, factors and implementation.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_als.benchmark import markdown_tables, merge_results, read_result, slug  # noqa: E402
from gpu_als.plots import plot_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="plot_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="result JSON files")
    parser.add_argument("--output", type=Path, default=Path("docs") / "bench")
    parser.add_argument("--markdown", action="store_true",
                        help="print Markdown tables instead of drawing charts")
    args = parser.parse_args(argv)
    try:
        documents = [read_result(path) for path in args.results]
    except (OSError, ValueError) as exc:  # no such file, not a result: what and where
        parser.error(str(exc))
    for result in merge_results(documents):
        if args.markdown:
            print(markdown_tables(result))
            continue
        folder = args.output / slug(result["device"])
        for chart in plot_benchmark(result, folder):
            print(f"wrote {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
