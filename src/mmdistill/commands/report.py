"""``mmdistill report DIR``: (re)build DIR/report.html and DIR/report.md from a run or sweep folder.

In a folder mmdistill made (it holds the run marker) the two report files are its own and are
replaced. In any other folder an existing ``report.html`` / ``report.md`` is replaced only when it is a
report mmdistill wrote (its generator line); someone else's file of that name is never replaced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.system.runfolder import EVERY_RUN, register_layout
from ..errors import OutputExistsError

register_layout(EVERY_RUN, {"report.html": None, "report.md": None})  # a report may be written into any run folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="build a self-contained HTML report from a run or sweep folder",
        description=(
            "Collect every Markdown summary and figure under DIR, with the CSV files beside them (or "
            "DIR/report.json's sections): a run's summary.md, what 'evaluate --missing --noise' and 'analyze "
            "modalities' wrote into it (their CSVs as tables), and the result of a distill() folder."
        ),
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--title", default="mmdistill report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.system.runfolder import read_marker
    from ..studies.demo_report import is_mmdistill_report, write_report

    names = ("report.html", "report.md")
    foreign = [n for n in names if (args.run_dir / n).exists() and not is_mmdistill_report(args.run_dir / n)]
    if foreign and read_marker(args.run_dir) is None:
        raise OutputExistsError(
            f"{args.run_dir} holds {' and '.join(foreign)}, which mmdistill did not write, in a folder it did not "
            f"make; move or rename {'it' if len(foreign) == 1 else 'them'}, then run report again"
        )
    html_path, md_path = write_report(args.run_dir, args.title)
    print(f"wrote {html_path} and {md_path}")
    return 0
