"""The ``mmdistill`` command: a thin layer over the Python API.

Each sub-command lives in ``mmdistill.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args; returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .engine.system.runfolder import read_marker
from .failures import debugging, explain, user_exit

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
    "mmdistill.commands.sweep",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser without prefix matching (``--seed 3`` must not silently mean ``--seeds 3``).

    Sub-command parsers are made by ``add_subparsers`` with the parent's class, so every parser is one of these.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def version_line() -> str:
    """``mmdistill 0.1.0 (torch 2.x, Python 3.x)``: read from the installed metadata, without importing torch."""
    import platform
    from importlib import metadata

    from . import __version__

    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    return f"mmdistill {__version__} (torch {torch}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mmdistill", description="Multimodal and crossmodal knowledge distillation.")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed by argparse
        return int(stop.code or 0)
    if extra:  # `key=value` overrides may also come after options (argparse stops collecting positionals there)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            try:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            except SystemExit as stop:
                return int(stop.code or 0)
    try:
        return int(args.func(args) or 0)
    except SystemExit as stop:  # the commands return their code: this one came from the user's code
        if debugging():
            raise
        code, message = user_exit(stop)
        print(f"mmdistill {args.command}: error: {message}", file=sys.stderr)
        return code
    except (Exception, KeyboardInterrupt) as err:  # one place: failures.explain (MMDISTILL_DEBUG=1 keeps the traceback)
        out = getattr(args, "out", None)
        where = f"writing to --out {out}" if out is not None else None
        resumable = out is not None and hasattr(args, "resume") and read_marker(Path(out)) is not None
        hint = f"continue the run in {out} with --resume" if resumable else None
        verdict = None if debugging() else explain(err, where, hint)
        if verdict is None:
            raise
        code, message = verdict
        print(f"mmdistill {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
