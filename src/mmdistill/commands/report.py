"""``mmdistill report DIR``: (re)build DIR/report.html and DIR/report.md from a run or sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build a self-contained HTML report from a run or sweep folder",
                       description="Collect every summary.md, figure and CSV under DIR (or DIR/report.json's sections).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--title", default="mmdistill report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    html_path, md_path = write_report(args.run_dir, args.title)
    print(f"wrote {html_path} and {md_path}")
    return 0
