"""Fuzz: the commands that read a run folder (``advise --run``, ``report``, ``analyze modalities``, ``evaluate``) on
damaged and foreign folders.

The cases are generated, not hand-picked: every damage below applied to every file of a finished ``train`` folder
and of a ``distill()`` folder (truncated, emptied, garbled, deleted, replaced by a folder, JSON or YAML of the
wrong type), plus folders mmdistill did not create. Each command runs in-process (``mmdistill.cli.main``). The
promise checked for every case:

* exit 0, or exit 1 / 2 with exactly one line ``mmdistill COMMAND: error: ...``; never an uncaught exception
  (the test fails on one, showing the traceback), never another exit code;
* a failed command changes nothing in the folder (every file's bytes, no file added or removed); a command that
  succeeds adds only its own outputs (``report.html`` / ``report.md``, ``analysis/``, ``robustness/``);
* no hang: each command gets :data:`CASE_SECONDS` (SIGALRM).

The default suite runs a fixed sample of :data:`DEFAULT_CASES` cases (seeded); ``MMDISTILL_FUZZ_ALL=1`` runs all.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import traceback
from pathlib import Path

import pytest

from mmdistill.cli import main

CASE_SECONDS = 30
DEFAULT_CASES = 24  # foreign folders, one case of each defect found, and a seeded sample of the rest

TINY = """\
seed: 0
data: {{name: toy-two-modality, params: {{n: 120, dim_a: 6, dim_b: 6}}}}
teacher: {{model: {{modalities: [a, b], encoder: {{hidden: [8], out_dim: 4}}}}}}
student: {{model: {{modalities: [b], encoder: {{hidden: [8], out_dim: 4}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 16, num_threads: 1}}
cache: {{dir: {cache}}}
"""

COMMANDS = {
    "advise": ["advise", "--run", "{dir}", "--bootstrap", "2"],
    "report": ["report", "{dir}"],
    "analyze": ["analyze", "modalities", "{dir}"],
    "evaluate": ["evaluate", "{dir}"],
}
OUTPUTS = ("report.html", "report.md", "analysis", "robustness")  # what the commands may add when they succeed


def _write(path: Path, data: bytes) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _as_folder(path: Path) -> None:
    _delete(path)
    path.mkdir(parents=True)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "deleted": _delete,
    "emptied": lambda p: _write(p, b""),
    "truncated": lambda p: _write(p, p.read_bytes()[: len(p.read_bytes()) // 2]),
    "garbled": lambda p: _write(p, random.Random(str(p)).randbytes(200)),
    "bytes-flipped": _flip,
    "a-folder": _as_folder,
    "json-list": lambda p: _write(p, b"[1, 2, 3]\n"),
    "json-null": lambda p: _write(p, b"null\n"),
    "json-number": lambda p: _write(p, b"17\n"),
    "json-wrong-types": lambda p: _write(
        p, b'{"command": 5, "seeds": "x", "seed": "zero", "test": [1], "val": "bad", "method": {"a": 1}}\n'
    ),
    "yaml-wrong-types": lambda p: _write(p, b"seed: x\ndata: 5\nstudent: [1, 2]\nteacher: {model: 3}\n"),
    "not-utf8": lambda p: _write(p, b"\xff\xfe\x00bad\x00\n" * 4),
    "a-fifo": lambda p: (_delete(p), os.mkfifo(p)),  # reading it would block forever
}

TRAIN_FILES = [
    "config.yaml",
    ".mmdistill-run.json",
    "metrics.json",
    "summary.md",
    "seed_0/teacher/student.safetensors",
    "seed_0/student/student.safetensors",
    "seed_0/nokd/student.safetensors",
    "seed_0/student/metrics.csv",
    "robustness/missing.csv",
    "analysis/modalities.md",
    "report.json",
]
DISTILL_FILES = ["config.yaml", "result.json", "teacher.safetensors", "student.safetensors", ".mmdistill-run.json"]


def _foreign(kind: str, root: Path) -> Path:
    """A folder (or path) that mmdistill did not create."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"foreign-{kind}"
    if kind == "missing":
        return folder
    if kind == "a-file":
        folder.write_text("not a folder\n")
        return folder
    folder.mkdir()
    if kind == "user-files":
        (folder / "notes.txt").write_text("my notes\n")
        (folder / "config.yaml").write_text("learning_rate: 3\nlayers: [1, 2]\n")
    elif kind == "user-results":
        (folder / "result.json").write_text('{"accuracy": 0.5}\n')
        (folder / "student.safetensors").write_bytes(b"\x00" * 64)
    elif kind == "json-folder":
        (folder / "report.json").write_text('[{"title": 5}]\n')
    return folder


FOREIGN = ["missing", "a-file", "empty", "user-files", "user-results", "json-folder"]


def all_cases() -> list[tuple[str, str, str]]:
    """(kind of folder, file, damage) for every generated case; kind "foreign" has no damage."""
    cases = [("train", f, d) for f in TRAIN_FILES for d in DAMAGES]
    cases += [("distill", f, d) for f in DISTILL_FILES for d in DAMAGES]
    return cases + [("foreign", kind, "-") for kind in FOREIGN]


# One case of each defect the generated cases found (each was a traceback); always in the default sample.
FOUND = [
    ("distill", "result.json", "json-wrong-types"),  # evaluate/analyze/advise: a seed that is not an integer
    ("distill", "result.json", "json-list"),  # evaluate/analyze/advise and report: not a JSON object
    ("distill", "result.json", "truncated"),  # report: not JSON
    ("train", "report.json", "json-number"),  # report: a section index that is not a list of sections
    ("train", "report.json", "garbled"),  # report: not JSON, not UTF-8
    ("train", "summary.md", "not-utf8"),  # report: Markdown that is not UTF-8 text
    ("train", "summary.md", "a-fifo"),  # report: hung reading a FIFO named like a summary
    ("distill", "result.json", "a-fifo"),  # evaluate/analyze/advise: hung reading a FIFO as distill()'s result
]


def selected_cases() -> list[tuple[str, str, str]]:
    cases = all_cases()
    if os.environ.get("MMDISTILL_FUZZ_ALL"):
        return cases
    always = [c for c in cases if c[0] == "foreign"] + FOUND
    rest = [c for c in cases if c not in always]
    return always + random.Random(0).sample(rest, DEFAULT_CASES - len(always))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    return make_finished(tmp_path_factory.mktemp("fuzz-runs"))


def make_finished(root: Path) -> dict[str, Path]:
    """A finished ``train`` folder and a ``distill()`` folder (data and models that mmdistill can describe)."""
    import torch

    from mmdistill.config import TrainerConfig
    from mmdistill.data.contracts.item_dataset import load_data
    from mmdistill.engine.api import distill
    from mmdistill.models.multimodal import ModelConfig, build_model

    config = root / "tiny.yaml"
    config.write_text(TINY.format(cache=root / "cache"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", str(config), "--out", str(root / "train")]) == 0
        assert main(["evaluate", str(root / "train"), "--missing"]) == 0  # files that report reads
        assert main(["analyze", "modalities", str(root / "train")]) == 0
    from mmdistill.config import load_config

    data = load_data(load_config(config).data)
    specs, trainer = data.train.specs(), TrainerConfig(epochs=1, batch_size=16, num_threads=1)
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["a", "b"]), specs, data.num_classes)
    student = build_model(ModelConfig(modalities=["b"]), specs, data.num_classes)
    distill(teacher, None, data, root / "distill-teacher", method="supervised", trainer=trainer)
    distill(student, teacher, data, root / "distill", trainer=trainer)
    return {"train": root / "train", "distill": root / "distill"}


def state(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder, the mode of a FIFO); {} when ``folder`` is not
    a folder."""

    def content(p: Path) -> bytes | None:
        return p.read_bytes() if p.is_file() else None if p.is_dir() else f"<{p.stat().st_mode:o}>".encode()

    if not folder.is_dir():
        return {"<file>": folder.read_bytes()} if folder.is_file() else {}
    return {str(p.relative_to(folder)): content(p) for p in sorted(folder.rglob("*"))}


class _Hang(Exception):
    pass


def run_command(argv: list[str]) -> tuple[int | str, str]:
    """(exit code, stderr) of ``mmdistill ARGV`` in-process; an uncaught exception or a hang (past CASE_SECONDS)
    gives, instead of the exit code, where it was raised and what it said."""

    def alarm(signum, frame):
        raise _Hang(f"{' '.join(argv)} ran past {CASE_SECONDS} s")

    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(argv)
    except (Exception, _Hang) as exc:  # noqa: BLE001 - the very thing the test looks for
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        code = f"uncaught {type(exc).__name__}: {str(exc)[:120]} ({Path(frame.filename).name}:{frame.lineno})"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def check_case(case: tuple[str, str, str], finished: dict[str, Path], root: Path) -> list[str]:
    """Run every command on the case's folder; the broken promises (empty: none)."""
    kind, target, damage = case
    broken = []
    for name, template in COMMANDS.items():
        if kind == "foreign":
            folder = _foreign(target, root / name)
        else:
            folder = root / name / kind
            shutil.copytree(finished[kind], folder, symlinks=True)
            if not (folder / target).exists():  # a file the folder may hold (report.json): a valid one, then damaged
                (folder / target).write_text('[{"title": "run", "folder": "."}]\n')
            DAMAGES[damage](folder / target)
        before = state(folder)
        code, err = run_command([a.format(dir=folder) for a in template])
        lines = err.strip().splitlines()
        after = state(folder)
        own = {k for k in after.keys() | before.keys() if code == 0 and k.split("/")[0] in OUTPUTS}
        added = after.keys() - before.keys() - own
        changed = {k for k in before.keys() & after.keys() - own if before[k] != after[k]}
        if code not in (0, 1, 2):
            broken.append(f"{name}: {code if isinstance(code, str) else f'exit {code}'}")
            continue
        if code != 0 and (len(lines) != 1 or not lines[0].startswith(f"mmdistill {template[0]}: error: ")):
            broken.append(f"{name}: exit {code} without one error line: {err[-300:]!r}")
        if code != 0 and after != before or changed or before.keys() - after.keys() - own or added:
            broken.append(f"{name}: exit {code} changed the folder: {sorted(changed | added)}")
    return broken


@pytest.mark.parametrize("case", selected_cases(), ids="-".join)
def test_commands_on_a_damaged_or_foreign_folder_end_in_one_line_and_change_nothing(case, finished, tmp_path):
    assert check_case(case, finished, tmp_path) == []
