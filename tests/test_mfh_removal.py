"""MFH feature removal: the removal hook, the kept sets, the experiment's rows and the reproduce target."""

from __future__ import annotations

import csv

import pytest
import torch

from mmdistill.cli import main
from mmdistill.errors import ConfigError
from mmdistill.mfh.ensemble import make_mlp
from mmdistill.studies.mfh_removal import (
    MODES,
    ROW_FIELDS,
    feature_removal,
    kept_channels,
    removed_channels,
    summarize_removal,
)

torch.set_num_threads(1)


def test_removed_channels_replace_the_others_by_the_fill_values_and_restore_the_model():
    torch.manual_seed(0)
    model = make_mlp(5, (4,), 3)
    x = torch.randn(7, 5)
    before = model(x)
    fill = torch.tensor([10.0, 20.0, 30.0, 40.0])
    with removed_channels(model, "1", torch.tensor([0, 2]), fill):
        out = model(x)
    h = torch.relu(model[0](x))
    h[:, 1], h[:, 3] = 20.0, 40.0
    assert torch.allclose(out, model[2](h))
    assert torch.equal(model(x), before)  # hook removed on exit


def test_kept_channels_are_the_top_bottom_or_a_random_set():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.0, 0.7, 0.3])
    assert sorted(kept_channels("general", scores, 2, 0).tolist()) == [1, 4]
    assert sorted(kept_channels("specific", scores, 2, 0).tolist()) == [0, 3]
    r = kept_channels("random", scores, 3, 0)
    assert len(set(r.tolist())) == 3 and torch.equal(r, kept_channels("random", scores, 3, 0))
    with pytest.raises(ConfigError, match="general, random, specific"):
        kept_channels("top", scores, 2, 0)


@pytest.fixture(scope="module")
def venn_run():
    return feature_removal("venn", seeds=(0, 1), hidden=16, epochs=60, permutations=3)


def test_rows_per_pair_seed_mode_and_teacher_accuracy_falls_after_removal(venn_run):
    rows = venn_run.rows
    assert [r["mode"] for r in rows[:5]] == list(MODES) and len(rows) == 2 * len(MODES)
    nokd = [r for r in rows if r["mode"] == "nokd"]
    assert all(r["teacher_acc"] == "" for r in nokd)
    for seed in (0, 1):
        rs = {r["mode"]: r for r in rows if r["seed"] == seed}
        assert rs["regular"]["kept"] == 16 and rs["general"]["kept"] == 4
        assert rs["specific"]["teacher_acc"] < rs["regular"]["teacher_acc"]
        assert all(r["nokd_acc"] == rs["nokd"]["student_acc"] for r in rs.values())
    summary = summarize_removal(rows)
    assert [s["mode"] for s in summary] == list(MODES[1:])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        feature_removal("venn", keep=1.5)
    with pytest.raises(ConfigError, match="TEACHER:STUDENT"):
        feature_removal("mfeat", pairs=["pix-zer"])


def test_reproduce_mfh_removal_on_mfeat_writes_results_summary_and_figure(tmp_path):
    out = tmp_path / "rm"
    code = main(
        [
            "reproduce",
            "mfh-removal",
            "--dataset",
            "mfeat",
            "--pairs",
            "fou:mor",
            "--seeds",
            "2",
            "--hidden",
            "8",
            "--epochs",
            "20",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ROW_FIELDS and len(rows) == 2 * len(MODES)
    text = (out / "summary.md").read_text()
    assert (
        "--pairs fou:mor" in text
        and "| fou:mor | general |" in text
        and "paper expects general > random > specific" in text
    )
    assert (out / "removal.png").read_bytes()[:4] == b"\x89PNG"
