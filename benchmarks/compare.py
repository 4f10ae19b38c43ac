"""Compare two commits side by side: the KD step, the whole-process runs and start-up, with the ratios new / base.

    python benchmarks/compare.py BASE_COMMIT [NEW_COMMIT] [--repeats 3] [--only startup|kd-step]

Each commit is checked out in a git worktree in a temporary folder (``git worktree add --detach``, removed at the
end); NEW_COMMIT defaults to the working tree of this checkout (its ``src``, uncommitted changes included). The
benchmark scripts are this checkout's (``benchmarks/bench_kd_step.py --threads 1 --batch 64`` and
``benchmarks/bench_startup.py``), run with ``PYTHONPATH=<worktree>/src``, which comes before the editable install's
path, so each run imports its commit's mmdistill. The two sides alternate, base then new, ``--repeats`` times, and
each ratio is the median over the repeats of new / base (CPU seconds for the whole processes; the trainer's own
step time for the KD step). Ratios above 1 are slower.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KD_STEP_FIGURES = {  # the line of bench_kd_step.py's output -> the figure's name
    r"^mmdistill\s+([0-9.]+) ms/step": "KD step, mmdistill ms/step (epoch min)",
    r"^bare loop\s+([0-9.]+) ms/step": "KD step, bare loop ms/step (epoch min)",
    r"whole distill\(\).*: ([0-9.]+) ms/step": "KD step, whole distill() ms/step",
    r"ratio mmdistill / bare, training steps = ([0-9.]+)": "KD step, ratio mmdistill / bare loop",
}


class CompareError(Exception):
    """A bad argument or a failed git command: :func:`main` prints the message and exits with status 2."""


def resolve_commit(name: str) -> str:
    """The full hash of ``name`` in this repository; a :class:`CompareError` saying so if it names no commit."""
    if name.startswith("-") or not name.strip():
        raise CompareError(f"{name!r} is not a commit (give a hash, a branch or a tag, e.g. HEAD~3)")
    proc = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise CompareError(f"{name!r} is not a commit of the repository at {REPO} (git rev-parse found none)")
    return proc.stdout.strip()


def add_worktree(commit: str, folder: Path) -> Path:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), commit], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise CompareError(f"git worktree add for {commit[:12]} failed: {proc.stderr.strip()}")
    return folder


def remove_worktree(folder: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)], capture_output=True)


def run_bench(script: str, args: list[str], src: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, str(REPO / "benchmarks" / script), *args]
    proc = subprocess.run(command, cwd=src.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"{script} with PYTHONPATH={src} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def kd_step_figures(src: Path) -> dict[str, float]:
    out = run_bench("bench_kd_step.py", ["--threads", "1", "--repeats", "1", "--batch", "64"], src)
    figures = {}
    for pattern, name in KD_STEP_FIGURES.items():
        found = re.search(pattern, out, re.MULTILINE)
        if found:
            figures[name] = float(found.group(1))
    return figures


def startup_figures(src: Path, tmp: Path) -> dict[str, float]:
    out = tmp / "startup.json"
    config = src / "mmdistill" / "configs" / "demo.yaml"
    run_bench("bench_startup.py", ["--repeats", "1", "--config", str(config), "--json", str(out)], src)
    written = json.loads(out.read_text())
    (measured,) = written["rounds"]
    figures = {f"{name}, CPU s": values["cpu"] for name, values in measured.items()}
    figures.update({f"CPU ratio {name}": value for name, value in written["ratios"].items()})
    return figures


def one_side(src: Path, tmp: Path, only: str | None) -> dict[str, float]:
    figures: dict[str, float] = {}
    if only in (None, "kd-step"):
        figures.update(kd_step_figures(src))
    if only in (None, "startup"):
        figures.update(startup_figures(src, tmp))
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", metavar="BASE_COMMIT")
    parser.add_argument("new", metavar="NEW_COMMIT", nargs="?", help="default: this checkout's working tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["startup", "kd-step"])
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise CompareError(f"--repeats must be at least 1, got {args.repeats}")
    args.base = resolve_commit(args.base)
    args.new = resolve_commit(args.new) if args.new else None
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        compare(parse_args(argv))
    except CompareError as err:
        print(f"compare.py: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mmdistill-compare-") as tmp_name:
        tmp = Path(tmp_name)
        trees = [add_worktree(args.base, tmp / "base")]
        try:
            new_src = REPO / "src"
            if args.new:
                trees.append(add_worktree(args.new, tmp / "new"))
                new_src = trees[-1] / "src"
            sides: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
            for r in range(args.repeats):
                sides["base"].append(one_side(trees[0] / "src", tmp, args.only))
                sides["new"].append(one_side(new_src, tmp, args.only))
                print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        finally:
            for tree in trees:
                remove_worktree(tree)
    new_name = args.new[:12] if args.new else "working tree"
    print(f"base {args.base[:12]}, new {new_name}; medians of {args.repeats} repeats; ratio = median of new / base")
    print(f"{'figure':56s} {'base':>9s} {'new':>9s} {'ratio':>7s}")
    for name in sides["base"][0]:
        base = [s[name] for s in sides["base"]]
        new = [s.get(name, float("nan")) for s in sides["new"]]
        ratio = statistics.median(n / b for n, b in zip(new, base))
        print(f"{name:56s} {statistics.median(base):9.3f} {statistics.median(new):9.3f} {ratio:7.3f}")


if __name__ == "__main__":
    main()
