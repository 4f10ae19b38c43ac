"""``reproduce baselines --teacher-rows``: the rows with several teachers and with a learning teacher appear, and
each read the teachers it claims (checked against the run's own config.yaml)."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from mmdistill.cli import main
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import ConfigError
from mmdistill.studies import baselines_study
from mmdistill.studies.baselines_study import Setup, run_dataset, summary_markdown
from mmdistill.studies.baselines_teachers import teacher_rows

TINY = Setup("toy-two-modality", {"n": 60}, ["a", "b"], ["b"], teacher_hidden=8, student_hidden=4, epochs=1)
CLAIMED = {
    "kd_a_teacher": "a",
    "kd_b_teacher": "b",
    "mtkd_unimodal": "a+b",
    "mtkd_confidence_unimodal": "a+b",
    "mtkd_all": "multimodal+a+b",
    "mst_distill_all": "multimodal+a+b",
    "dml_online": "multimodal",
    "c2kd_online": "multimodal",
}


@pytest.fixture
def tiny(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setitem(baselines_study.SETUPS, "tiny", TINY)


def _teachers_read(run_dir) -> tuple[dict[str, list[str]], bool]:
    """{teacher name: its modalities} from the run's own config.yaml, and whether the teacher learned (its weights
    are in the run's checkpoint only then)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    checkpoint = load_tensors(run_dir / "checkpoints" / "last.safetensors")[0]
    learned = any(k.startswith("module.teacher.") for k in checkpoint)
    if config.get("teachers"):
        return {name: t["model"]["modalities"] for name, t in config["teachers"].items()}, learned
    return {"one": config["teacher"]["model"]["modalities"]}, learned


def test_the_teacher_rows_read_the_teachers_they_claim(tiny, tmp_path):
    rows = run_dataset("tiny", [0], tmp_path, methods=[], temperatures=[2.0], several_teachers=True)
    claimed = {r["method"]: r["teachers"] for r in rows}
    assert claimed == {"nokd": "", "kd": "multimodal", **CLAIMED}
    modalities = {"multimodal": ["a", "b"], "a": ["a"], "b": ["b"]}
    for label in teacher_rows(["a", "b"], baselines_study.LAYERS):
        read, learns = _teachers_read(tmp_path / "runs" / "tiny" / "seed_0" / f"{label}_T2")
        names = claimed[label].split("+")
        if len(names) == 1:
            assert read == {"one": modalities[names[0]]} and learns == label.endswith("_online"), label
        else:
            assert read == {name: modalities[name] for name in names} and not learns, label
    assert all(0 <= r["teacher_a_acc"] <= 1 and 0 <= r["teacher_b_acc"] <= 1 for r in rows if r["method"] in CLAIMED)
    text = summary_markdown(rows, "cmd")
    several = text[text.index("### Several teachers") :]
    assert "| mst_distill_all | multimodal+a+b | 2.0 |" in several
    multimodal, a, b = (100 * rows[-1][key] for key in ("teacher_acc", "teacher_a_acc", "teacher_b_acc"))
    assert f"Teachers (test accuracy): multimodal {multimodal:.2f}; a {a:.2f}; b {b:.2f}." in several
    assert "minus kd_b_teacher (paired)" in several  # the student's own-modality teacher as a second reference
    single = text[: text.index("### Several teachers")]
    assert "mtkd_all" not in single and "| kd | 2.0 |" in single


def test_the_teacher_rows_leave_the_single_teacher_rows_as_they_were(tiny, tmp_path):
    def numbers(rows):
        return [(r["method"], r["temperature"], r["val_acc"], r["test_acc"], r["teacher_acc"]) for r in rows]

    alone = run_dataset("tiny", [0], tmp_path / "alone", methods=["pkt"], temperatures=[2.0])
    both = run_dataset("tiny", [0], tmp_path / "both", methods=["pkt"], temperatures=[2.0], several_teachers=True)
    assert numbers(both)[: len(alone)] == numbers(alone) and len(both) == len(alone) + len(CLAIMED)


def test_reproduce_baselines_takes_the_teacher_rows_from_the_command_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(baselines_study, "run_dataset", _fake_run_dataset)
    argv = ["reproduce", "baselines", "--dataset", "av-digits", "--seeds", "1", "--teacher-rows", "--methods", "pkt"]
    assert main([*argv, "--temperatures", "4", "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert rows[0]["options"] == "{'methods': ['pkt'], 'temperatures': [4.0], 'several_teachers': True}"
    assert "--teacher-rows --methods pkt --temperatures 4 --out" in (tmp_path / "out" / "summary.md").read_text()
    refused = ["reproduce", "baselines", "--dataset", "av-digits", "--train-size", "100", "--out", str(tmp_path / "n")]
    assert main(refused) == 2
    assert "--train-size: only read for --dataset avmnist" in capsys.readouterr().err
    tuned = ["reproduce", "baselines", "--dataset", "av-digits", "--tune", "--teacher-rows"]
    tuned += ["--out", str(tmp_path / "t")]
    assert main(tuned) == 2
    assert "--tune: tunes the single-teacher table only; drop --teacher-rows" in capsys.readouterr().err
    assert not (tmp_path / "n").exists() and not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match=r"^--methods: unknown nope"):
        run_dataset("tiny", [0], tmp_path / "x", methods=["nope"])


def _fake_run_dataset(name, seeds, out, epochs, data_dir=None, accelerator="cpu", **options):
    """A stand-in that records what the command passed (the real rows are tested above)."""
    keep = {k: options[k] for k in ("methods", "temperatures", "several_teachers")}
    base = {"dataset": name, "seed": 0, "temperature": "", "teachers": "", "val_acc": 0.5, "test_acc": 0.5}
    base.update(teacher_acc=0.9, sec_per_step=0.01, options=str(keep))
    return [dict(base, method="nokd"), dict(base, method="kd")]
