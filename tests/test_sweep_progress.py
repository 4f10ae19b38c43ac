"""`mmdistill sweep`'s progress: one line per finished job in a log, one redrawn line on a terminal, none with quiet."""

from __future__ import annotations

import io
import re
import sys

import yaml
from test_sweep_file import BASE

from mmdistill.sweep import run_sweep
from mmdistill.sweep.run import Progress
from mmdistill.sweep.spec import load_sweep

SWEEP = {
    "base": "base.yaml",
    "methods": ["kd"],
    "space": {"method.params.temperature": [1, 4, 8]},
    "search": {"kind": "grid"},
    "seeds": {"tune": 1, "final": 1},
}


def write(folder):
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    return folder / "sweep.yaml"


def record(name: str, value: float | None) -> dict:
    if value is None:
        return {"name": name, "status": "failed", "error": "non-finite loss", "wall_s": 0.5}
    return {"name": name, "status": "done", "val": {"0": value}, "wall_s": 1.0}


def test_without_a_terminal_each_finished_job_is_one_line_with_counts_best_elapsed_and_eta(tmp_path, capsys):
    run_sweep(write(tmp_path), tmp_path / "sweep")
    err = capsys.readouterr().err
    assert "mmdistill sweep: teachers: 2 to run\nmmdistill sweep: trials: 3 to run\n" in err
    assert "mmdistill sweep: final runs: 3 to run\n" in err  # kd tuned, kd default, no-KD
    trials = [line for line in err.splitlines() if line.startswith("mmdistill sweep: trials ")]
    assert len(trials) == 3  # one line per finished trial
    for n, line in enumerate(trials, 1):
        assert re.match(rf"mmdistill sweep: trials {n}/3: kd-00{n - 1} val accuracy \d+\.\d\d ", line), line
        assert re.search(r"best kd-00\d \(val accuracy \d+\.\d\d\)", line), line
        assert re.search(r"\[\d+ s, ETA ~\d+ s\]$", line), line  # a rough time left while jobs remain
    jobs = [line for line in err.splitlines() if re.match(r"mmdistill sweep: (teachers|trials|final runs) \d", line)]
    assert len(jobs) == 2 + 3 + 3 and "final runs 3/3" in jobs[-1] and "ETA" not in jobs[-1]  # none left at the end
    assert "\r" not in err  # no redraws in a log


def test_the_best_so_far_follows_the_validation_score_and_failures_are_counted(tmp_path, capsys):
    spec = load_sweep(write(tmp_path))
    progress = Progress(spec, quiet=False)
    progress.track({"teacher": 0, "trial": 4, "final": 0}, {"teacher": 0, "trial": 0, "final": 0})
    for name, value in (("kd-000", 60.0), ("kd-001", 75.5), ("kd-002", None), ("kd-003", 70.0)):
        progress.finished({"kind": "trial", "name": name}, record(name, value), running=0)
    lines = capsys.readouterr().err.splitlines()[1:]
    assert "best kd-000 (val accuracy 60.00)" in lines[0]
    assert "trials 3/4: kd-002 failed: non-finite loss" in lines[2] and "1 failed" in lines[2]
    assert "2 done" in lines[2] and "best kd-001 (val accuracy 75.50)" in lines[3]
    assert "4/4" in lines[3] and "ETA" not in lines[3]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_redrawn_in_place(tmp_path, monkeypatch):
    spec = load_sweep(write(tmp_path))
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    progress = Progress(spec, quiet=False)
    progress.track({"teacher": 1, "trial": 3, "final": 2}, {"teacher": 1, "trial": 0, "final": 0})
    for name, value in (("kd-000", 60.0), ("kd-001", 75.5)):
        progress.finished({"kind": "trial", "name": name}, record(name, value), running=1)
    progress.close()
    text = screen.getvalue()
    assert "\r" in text  # redrawn, not a line per trial
    live = (
        r"sweep teachers 1/1, trials 2/3, final runs 0/2: 2 done, 1 running, 0 failed; best kd-001 "
        r"\(val accuracy 75\.50\) \[\d+ s, ETA ~\d+ s\]"
    )
    assert re.search(live, text), text
    assert text.count("\n") <= 4  # a note per kind, and the line left when it closes


def test_quiet_prints_nothing(tmp_path, capsys):
    run_sweep(write(tmp_path), tmp_path / "sweep", quiet=True)
    assert capsys.readouterr().err == ""
