"""MFH Table 2: rows, selections, Algorithm 1 precision, and the reproduce target's outputs."""

from __future__ import annotations

import csv

import pytest
import torch

from mmdistill.cli import main
from mmdistill.studies.mfh_table2 import ROW_FIELDS, SELECTIONS, contrast, summarize_table2, table2

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    return table2(settings=(5, 20), seeds=(0, 1), epochs=300, joint_epochs=300)


def test_one_row_per_setting_seed_and_selection_with_shared_no_kd_student(small):
    rows = small.rows
    assert len(rows) == 2 * 2 * len(SELECTIONS)
    assert {(r["setting"], r["seed"], r["selection"]) for r in rows} == {
        (f"xs2={x}", s, sel) for x in (5, 20) for s in (0, 1) for sel in SELECTIONS
    }
    for key in {(r["setting"], r["seed"]) for r in rows}:
        nokd = {r["nokd_acc"] for r in rows if (r["setting"], r["seed"]) == key}
        assert len(nokd) == 1  # one no-KD student per (setting, seed)
    assert all(r["gamma"] == pytest.approx(5 / 15) for r in rows if r["setting"] == "xs2=5")


def test_precision_is_empty_for_the_regular_teacher_and_one_for_the_ground_truth(small):
    for r in small.rows:
        if r["selection"] == "regular":
            assert r["salience_precision"] == ""
        elif r["selection"] == "ground-truth":
            assert r["salience_precision"] == 1.0
        elif r["selection"] == "algorithm1":
            assert r["salience_precision"] >= 0.9


def test_a_modality_general_teacher_is_less_accurate_than_the_regular_one(small):
    c = contrast(small.rows, "ground-truth")
    assert c["teacher"]["mean"] < -5  # paper: about 16 points less accurate
    summary = summarize_table2(small.rows)
    assert {s["selection"] for s in summary} == set(SELECTIONS)


def test_reproduce_mfh_table2_writes_results_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "t2"
    assert (
        main(["reproduce", "mfh-table2", "--seeds", "1", "--epochs", "50", "--joint-epochs", "50", "--out", str(out)])
        == 0
    )
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ROW_FIELDS and len(rows) == 6 * len(SELECTIONS)
    text = (out / "summary.md").read_text()
    assert "--joint-epochs 50" in text and "Algorithm 1 precision" in text and "| algorithm1 |" in text
    assert (out / "table2.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["reproduce", "mfh-table2", "--seeds", "1", "--out", str(out)]) == 2  # refuses to overwrite
