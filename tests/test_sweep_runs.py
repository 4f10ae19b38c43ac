"""A sweep end to end: shared teachers, normal run folders, the final table, failures, resume and a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_sweep_file import BASE

from mmdistill.errors import ConfigError
from mmdistill.sweep import run_sweep

SWEEP = {
    "base": "base.yaml",
    "methods": ["kd", "dkd"],
    "space": {"method.params.temperature": [1, 4], "trainer.optimizer.lr": [0.003, 0.01]},
    "search": {"kind": "grid"},
    "seeds": {"tune": 1, "final": 2},
}


def write(folder: Path, sweep: dict | None = None, base: dict | None = None) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(base or BASE))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep or SWEEP))
    return folder / "sweep.yaml"


def final_table(out: Path) -> list[dict]:
    """final.csv without the timing column (a measurement, not a result)."""
    with open(out / "final.csv") as f:
        return [{k: v for k, v in row.items() if k != "ms_per_step"} for row in csv.DictReader(f)]


def test_one_teacher_per_seed_and_every_trial_a_train_folder(tmp_path, monkeypatch):
    from mmdistill.engine import protocol

    trained = []
    real = protocol.train_run
    monkeypatch.setattr(protocol, "train_run", lambda spec, **kw: trained.append(kw["desc"]) or real(spec, **kw))
    out = tmp_path / "sweep"
    result = run_sweep(write(tmp_path), out, quiet=True)
    seeds = [0, 1, 2]  # tune seed 0, final seeds 1 and 2
    assert sorted(p.name for p in (out / "teachers").iterdir()) == [f"seed_{s}" for s in seeds]
    assert not [d for d in trained if d.endswith("teacher")]  # no run trained a teacher of its own
    assert len(trained) == 3 + 8 + 5 * 2  # teachers, trials, final runs (kd/dkd tuned and default, no-KD) x 2 seeds
    for trial in (out / "trials").iterdir():
        cfg = yaml.safe_load((trial / "s0" / "config.yaml").read_text())
        assert cfg["teacher"]["checkpoint"].endswith("teachers/seed_0/s0/seed_0/student/student.safetensors")
        assert json.loads((trial / "s0" / "metrics.json").read_text())["seeds"] == [0]
        assert json.loads((trial / "trial.json").read_text())["test"] == {}  # selection never reads test
    rows = {(r["method"], r["variant"]): r for r in result["final"]}
    assert set(rows) == {("kd", "tuned"), ("kd", "default"), ("dkd", "tuned"), ("dkd", "default")}
    tuned = rows[("kd", "tuned")]
    best = max((r for r in result["trials"] if r["method"] == "kd"), key=lambda r: r["val"]["0"])
    assert json.loads(tuned["params"]) == best["params"]
    final = json.loads((out / "final" / "kd-tuned" / "trial.json").read_text())
    values = [final["test"][str(s)]["accuracy"] for s in (1, 2)]
    assert tuned["test_mean"] == pytest.approx(sum(values) / 2)
    nokd = json.loads((out / "final" / "supervised-default" / "trial.json").read_text())
    nokd_values = [nokd["test"][str(s)]["accuracy"] for s in (1, 2)]
    assert tuned["minus_nokd_mean"] == pytest.approx(sum(values) / 2 - sum(nokd_values) / 2)
    assert tuned["ms_per_step"] > 0
    summary = (out / "summary.md").read_text()
    assert "## Tuned" in summary and "## Defaults" in summary and "3 teachers trained" in summary
    from mmdistill.cli import main

    assert main(["report", str(out)]) == 0  # the final table is the report's first section, then each run
    report = (out / "report.md").read_text()
    assert report.index("#### Tuned (best validation setting)") < report.index("## final/kd-tuned/s1")


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # data.params is the dataset's own: n=5 passes the config check and fails when the trial loads its data
    sweep = {**SWEEP, "methods": ["kd"], "space": {"data.params.n": [120, 5]}, "seeds": {"tune": 1, "final": 1}}
    out = tmp_path / "sweep"
    result = run_sweep(write(tmp_path, sweep), out, quiet=True)
    status = {r["name"]: r["status"] for r in result["trials"]}
    assert status == {"kd-000": "done", "kd-001": "failed"}
    failed = json.loads((out / "trials" / "kd-001" / "trial.json").read_text())
    assert "data.params.n" in failed["error"]
    assert json.loads(result["final"][0]["params"]) == {"data.params.n": 120}
    assert "## Failed trials" in (out / "summary.md").read_text()


def test_resume_with_a_changed_file_is_refused_with_the_difference(tmp_path):
    sweep = {**SWEEP, "methods": ["kd"], "space": {"method.params.temperature": [1]}, "seeds": {"tune": 1, "final": 1}}
    out = tmp_path / "sweep"
    run_sweep(write(tmp_path, sweep), out, quiet=True)
    changed = {**sweep, "space": {"method.params.temperature": [2]}}
    with pytest.raises(ConfigError, match=r"space\.method\.params\.temperature: \[1\] -> \[2\]"):
        run_sweep(write(tmp_path, changed), out, resume=True, quiet=True)


@pytest.mark.slow  # about 60-90 s on 2 busy cores: two CLI sweeps with 2 spawned workers each
def test_a_killed_sweep_resumes_without_rerunning_and_ends_as_an_uninterrupted_one(tmp_path):
    base = {
        **BASE,
        "data": {"name": "toy-two-modality", "params": {"n": 400}},
        "trainer": {"epochs": 2, "batch_size": 16},
    }
    sweep = {**SWEEP, "seeds": {"tune": 1, "final": 1}}
    path = write(tmp_path, sweep, base)
    whole = tmp_path / "whole"
    run_sweep(path, whole, quiet=True)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mmdistill", "sweep", str(path), "--out", str(out), "--workers", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, start_new_session=True, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(out.glob("trials/*/trial.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("trials/*/trial.json")}
    assert 3 <= len(finished) < 8 and not (out / "summary.md").exists(), "the kill came before or after the trials"

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name, mtime in finished.items():  # finished trials were not run again
        assert (out / "trials" / name / "trial.json").stat().st_mtime_ns == mtime
    assert len(list(out.glob("trials/*/trial.json"))) == 8
    assert final_table(out) == final_table(whole)


def test_a_grid_larger_than_trials_says_so_and_runs_whole(tmp_path, capsys):
    sweep = {
        **SWEEP,
        "methods": ["kd"],
        "space": {"method.params.temperature": [1, 4]},
        "seeds": {"tune": 1, "final": 1},
    }
    sweep["search"] = {"kind": "grid", "trials": 1}
    result = run_sweep(write(tmp_path, sweep), tmp_path / "sweep")
    assert "search.trials: 1 per method, but the grid has more settings; the whole grid runs" in capsys.readouterr().err
    assert [r["name"] for r in result["trials"]] == ["kd-000", "kd-001"]
