"""``mmdistill salience``: scores CSV and plot; bad layers and modalities are one-line errors."""

from __future__ import annotations

import csv
import json

import torch

from mmdistill.cli import main

torch.set_num_threads(1)


def test_salience_command_writes_scores_and_a_plot_and_finds_the_shared_channels(tmp_path, capsys):
    out = tmp_path / "sal"
    code = main(
        [
            "salience",
            "--dataset",
            "venn",
            "--preset",
            "modify-gamma",
            "--setting",
            "5",
            "--epochs",
            "150",
            "--json",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["channels"] == 50 and report["layer"] == "input" and report["precision_at_shared"] >= 0.8
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["channel"] for r in rows] == [str(c) for c in range(50)]
    assert sum(int(r["shared"]) for r in rows) == 5
    scores = [float(r["score"]) for r in rows]
    assert min(scores) == 0.0 and max(scores) == 1.0
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 51))
    assert (out / "salience.png").read_bytes()[:4] == b"\x89PNG"


def test_salience_command_on_mfeat_penultimate_features(tmp_path, capsys):
    code = main(
        [
            "salience",
            "--dataset",
            "mfeat",
            "--teacher",
            "fou",
            "--student",
            "mor",
            "--hidden",
            "8",
            "--epochs",
            "5",
            "--permutations",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "teacher fou -> student mor, layer 1" in capsys.readouterr().out
    with open(tmp_path / "scores.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_salience_command_errors_name_the_layers_and_the_modalities(tmp_path, capsys):
    code = main(["salience", "--dataset", "venn", "--layer", "head.3", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "'head.3' not found in Linear; layers:" in capsys.readouterr().err
    code = main(["salience", "--dataset", "mfeat", "--teacher", "pixels", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "pixels" in err and "pix" in err
