import csv

from mmdistill.cli import main
from mmdistill.studies.msd_study import METHODS


def test_reproduce_msd_writes_one_row_per_dataset_seed_method(tmp_path, capsys):
    out = tmp_path / "msd"
    assert main(["reproduce", "msd", "--dataset", "venn", "--seeds", "2", "--epochs", "2", "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["seed"], r["method"]) for r in rows} == {(str(s), m) for s in (0, 1) for m in METHODS}
    assert {"dataset", "seed", "method", "student_acc"} <= set(rows[0])
    assert all(0.0 <= float(r["student_acc"]) <= 1.0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| msd-learned |" in summary and "minus KD (paired)" in summary
    assert (out / "saliency_venn.png").is_file()
    salience = (out / "modalities_venn.md").read_text()
    assert "| a |" in salience and "| msd-instance | full |" in salience


def test_analyze_modalities_on_a_run(tmp_path, tiny_config, capsys):
    cfg = tiny_config(epochs=2)
    text = cfg.read_text().replace("modalities: [b]", "modalities: [a, b]").replace("name: kd", "name: msd")
    cfg.write_text(text)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["analyze", "modalities", str(tmp_path / "run")]) == 0
    md = (tmp_path / "run" / "analysis" / "modalities.md").read_text()
    assert "population S_m" in md and "| student | a |" in md and "| nokd | full |" in md
    assert (tmp_path / "run" / "analysis" / "saliency_hist.png").stat().st_size > 1000


def test_reproduce_msd_trains_the_teachers_with_the_given_modality_dropout(tmp_path, monkeypatch):
    from mmdistill.studies import msd_study

    seen = []
    real = msd_study.distill

    def spy(model, teacher, data, out, method, params=None, **kw):
        if out.name == "teacher":
            seen.append((method, params))
        return real(model, teacher, data, out, method, params, **kw)

    monkeypatch.setattr(msd_study, "distill", spy)
    argv = ["reproduce", "msd", "--dataset", "venn", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--teacher-modality-dropout", "0.5", "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert seen == [("supervised", {"modality_dropout": 0.5}), ("supervised", None)]
    assert "--teacher-modality-dropout 0.5" in (tmp_path / "a" / "summary.md").read_text()
    assert main([*argv, "--teacher-modality-dropout", "1", "--out", str(tmp_path / "c")]) == 2
