"""``mmdistill reproduce baselines --tune``: a sweep per dataset, the table of defaults against tuned with ranks."""

from __future__ import annotations

import csv

import pytest

from mmdistill.cli import main
from mmdistill.engine.system import runfolder
from mmdistill.studies import baselines_tuned


@pytest.mark.slow  # 25-55 s on 2 busy cores: 4 trials and 5 final jobs on mfeat
def test_tune_writes_default_against_tuned_with_ranks_and_overwrite_replaces_it(tmp_path, monkeypatch, capsys):
    small = {"kd": {"method.params.temperature": [1.0, 4.0]}, "pkt": {"method.params.beta": [3000.0, 30000.0]}}
    monkeypatch.setattr(baselines_tuned, "GRIDS", small)
    out = tmp_path / "tuned"
    argv = [
        "reproduce",
        "baselines",
        "--tune",
        "--dataset",
        "mfeat",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["variant"]) for r in rows} == {(m, v) for m in small for v in ("default", "tuned")}
    assert sorted(float(r["rank"]) for r in rows if r["variant"] == "tuned") == [1.0, 2.0]
    summary = (out / "summary.md").read_text()
    assert "--tune --workers 1" in summary and "| pkt |" in summary and "wall time" in summary
    assert (out / "sweep-mfeat" / "summary.md").is_file()
    plan = runfolder.check(out, "reproduce", "results.csv", overwrite=True)  # what --overwrite would remove
    assert {p.name for p in plan.doomed} >= {"sweep-mfeat", "tune-mfeat.yaml", "results.csv"}


def test_tune_on_a_dataset_without_a_sweep_is_one_line(tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = ["reproduce", "baselines", "--tune", "--dataset", "avmnist", "--data", str(tmp_path), "--out", str(out)]
    assert main(argv) == 2
    assert "--tune: sweeps are set up for mfeat, av-digits; not for avmnist" in capsys.readouterr().err
