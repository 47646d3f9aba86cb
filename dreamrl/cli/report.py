"""``dreamrl report``: one self-contained HTML page of one or more run dirs
(:func:`dreamrl.report.write_report`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamrl.rundir import REPORT


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of one or more run dirs"
    )
    p.add_argument("--logdir", required=True, type=Path, nargs="+", metavar="DIR", help="run dirs")
    p.add_argument("--out", type=Path, help=f"HTML file to write (default: <first run dir>/{REPORT})")
    return p


def report(run_dirs: Sequence[Path], out: Path | None = None) -> int:
    """Write the page, print the aggregates and, last, the page's path; 2 (and nothing
    written) when a run dir does not exist."""
    from dreamrl.report import write_report

    missing = [p for p in run_dirs if not p.is_dir()]
    if missing:
        print(f"error: no such run dir: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    path, lines = write_report(run_dirs, out)
    for line in lines:
        print(line)
    print(f"Report: {path.resolve()}")
    return 0


def run(args: argparse.Namespace) -> int:
    return report(args.logdir, args.out)
