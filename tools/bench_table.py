"""Render benchmark JSON lines as markdown, and refresh the table in benchmarks/README.md.

    .venv/bin/python tools/bench_table.py [PATHS...] [--readme benchmarks/README.md] [--print]

PATHS are JSONL files or folders (default: benchmarks/results). The last record of each setting
is shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxsep.bench.table import read_records, render_table, update_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("benchmarks/results")])
    parser.add_argument("--readme", type=Path, default=None, help="README with table markers")
    parser.add_argument("--print", action="store_true", help="print the table to stdout")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        sys.stderr.write(f"bench_table: error: no such file or folder: {', '.join(missing)}\n")
        return 2
    table = render_table(read_records(args.paths))
    if args.readme is not None:
        update_readme(args.readme, table)
    if args.print or args.readme is None:
        print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
