"""``mmdistill reproduce mfh-*``: the files it writes, and refusing to overwrite a finished run."""

from __future__ import annotations

import csv

import torch

from mmdistill.cli import main

torch.set_num_threads(1)

COLUMNS = ["setting", "gamma", "alpha", "beta", "seed", "teacher_acc", "nokd_acc", "kd_acc"]


def _rows(path):
    with open(path) as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_mfh_gamma_writes_results_summary_and_figure(tmp_path):
    out = tmp_path / "gamma"
    assert main(["reproduce", "mfh-gamma", "--seeds", "2", "--epochs", "100", "--out", str(out)]) == 0
    fields, rows = _rows(out / "results.csv")
    assert fields == COLUMNS
    assert len(rows) == 12 and {r["seed"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in COLUMNS[5:])
    summary = (out / "summary.md").read_text()
    assert "| o=10 | 1.00 | 0.00 | 0.00 |" in summary and "Spearman" in summary
    assert "mmdistill reproduce mfh-gamma --seeds 2 --epochs 100" in summary
    assert (out / "mfh-gamma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = [".mmdistill-lock", ".mmdistill-run.json", "mfh-gamma.png", "results.csv", "summary.md"]  # marker, lock
    assert sorted(p.name for p in out.iterdir()) == expected  # and no temp files


def test_a_finished_run_is_not_overwritten_without_the_flag(tmp_path, capsys):
    out = tmp_path / "alpha"
    args = ["reproduce", "mfh-alpha", "--seeds", "1", "--epochs", "20", "--out", str(out)]
    assert main(args) == 0
    before = (out / "results.csv").read_text()
    (out / "results.csv").write_text(before + "# marker\n")
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.csv").read_text().endswith("# marker\n")
    assert main(args + ["--overwrite"]) == 0
    assert (out / "results.csv").read_text() == before


def test_mfh_plane_writes_the_grid_csv_and_heatmap(tmp_path):
    out = tmp_path / "plane"
    assert (
        main(["reproduce", "mfh-plane", "--seeds", "1", "--epochs", "20", "--decisive", "20", "--out", str(out)]) == 0
    )
    fields, grid = _rows(out / "plane.csv")
    assert {"gamma_target", "alpha_target", "delta_mean", "delta_std", "s0", "sa", "sb"} <= set(fields)
    assert len(grid) == 55  # gamma 0.1..1.0 x alpha 0.0..0.9 with gamma <= 1 - alpha
    assert all(float(c["gamma_target"]) <= 1 - float(c["alpha_target"]) + 1e-9 for c in grid)
    assert _rows(out / "results.csv")[0] == COLUMNS
    assert (out / "plane.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_are_errors(tmp_path, capsys):
    assert main(["reproduce", "mfh-gamma", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["reproduce", "mfh-gamma", "--epochs", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--epochs" in capsys.readouterr().err
