"""benchmarks/compare.py refuses a bad commit with a clear message before it starts anything."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


def load_compare():
    spec = importlib.util.spec_from_file_location("benchmark_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_name_that_is_no_commit_exits_2_with_a_message_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "no-such-commit-0123"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "'no-such-commit-0123' is not a commit" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["--", "-x"], ["HEAD", "no-such-commit-0123"]])
def test_every_commit_argument_is_checked(argv):
    compare = load_compare()
    with pytest.raises(compare.CompareError, match="is not a commit"):
        compare.parse_args(argv)


def test_a_commit_resolves_to_its_full_hash_and_repeats_must_be_positive():
    compare = load_compare()
    head = subprocess.run(
        ["git", "-C", str(SCRIPT.parent.parent), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    assert compare.parse_args(["HEAD", "--only", "startup"]).base == head
    with pytest.raises(compare.CompareError, match="--repeats must be at least 1"):
        compare.parse_args(["HEAD", "--repeats", "0"])
