"""The ``mmdistill`` command: a thin layer over the Python API.

Each sub-command lives in ``mmdistill.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args; returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MMDistillError

COMMAND_MODULES = [
    "mmdistill.commands.train",
    "mmdistill.commands.evaluate",
    "mmdistill.commands.demo",
    "mmdistill.commands.data",
    "mmdistill.commands.reproduce",
    "mmdistill.commands.analyze",
    "mmdistill.commands.report",
    "mmdistill.commands.salience",
    "mmdistill.commands.advise",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmdistill", description="Multimodal and crossmodal knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides may also come after options (argparse stops collecting positionals there)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except MMDistillError as err:
        print(f"mmdistill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if "closed by peer" not in str(err) and "remote worker" not in str(err):
            raise
        print(f"mmdistill {args.command}: error: another DDP process of this run died, so the run stopped "
              f"(resume it with --resume). Distributed backend said: {str(err).splitlines()[0][:300]}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
