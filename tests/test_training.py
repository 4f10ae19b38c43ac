"""The engine end to end on tiny data: determinism, cache equivalence, failures that stop cleanly."""

import json

import pytest
import torch
from torch import nn

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.engine.protocol import run_config
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.engine.teacher import cached_table
from mmdistill.errors import ConfigError, OutputExistsError, TrainingError
from mmdistill.methods.base import TeacherRequest
from mmdistill.models import EncoderConfig, ModelConfig, build_model

TRAINER = TrainerConfig(epochs=3, batch_size=32)


def models(splits, seed=0):
    specs, n = splits.train.specs(), splits.num_classes
    torch.manual_seed(seed)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[32], out_dim=16)), specs, n)
    student = build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[16], out_dim=8)), specs, n)
    return teacher, student


def test_same_seed_same_weights(toy_splits, tmp_path):
    finals = []
    for run in range(2):
        teacher, student = models(toy_splits)
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / f"r{run}",
            "kd",
            trainer=TRAINER,
            cache=CacheConfig(dir=tmp_path / "c"),
        )
        finals.append(student.state_dict())
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_kd_changes_training_and_logs_named_terms(toy_splits, tmp_path):
    teacher, student = models(toy_splits)
    distill(
        student,
        teacher,
        toy_splits,
        tmp_path / "kd",
        "kd",
        {"lam": 0.9},
        trainer=TRAINER,
        cache=CacheConfig(dir=tmp_path / "c"),
    )
    header = (tmp_path / "kd" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/ce", "train/kd", "train/loss", "val/accuracy", "val/f1_macro"} <= set(header)
    assert list((tmp_path / "kd" / "tensorboard").glob("events.out.tfevents.*"))
    _, plain = models(toy_splits)
    distill(plain, None, toy_splits, tmp_path / "sup", "supervised", trainer=TRAINER)
    assert not torch.equal(plain.state_dict()["head.1.weight"], student.state_dict()["head.1.weight"])


def test_cache_does_not_change_results(toy_splits, tmp_path):
    results = {}
    for enabled in (True, False):
        teacher, student = models(toy_splits)
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / str(enabled),
            "kd",
            trainer=TRAINER,
            cache=CacheConfig(enabled=enabled, dir=tmp_path / "c"),
        )
        results[enabled] = student.state_dict()
    for k in results[True]:
        torch.testing.assert_close(results[True][k], results[False][k], rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1


@pytest.mark.parametrize("budget_mb", ["0", "256"])
def test_cache_hits_and_invalidates(toy_splits, tmp_path, monkeypatch, budget_mb):
    monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", budget_mb)
    teacher, _ = models(toy_splits)
    req = TeacherRequest()
    args = (tmp_path, 64, torch.device("cpu"))
    t1, hit = cached_table(teacher, toy_splits.train, req, None, *args)
    assert not hit
    t2, hit = cached_table(teacher, toy_splits.train, req, None, *args)
    assert hit and torch.equal(t1.tensors["logits"], t2.tensors["logits"])
    on_disk = not isinstance(t2.columns["logits"], torch.Tensor)
    assert on_disk == (budget_mb == "0"), "a table over the memory budget is read row by row from the file, else held"
    batch = toy_splits.train.__getitems__([5, 0, 5, 17])
    torch.testing.assert_close(
        t2.lookup(batch, torch.device("cpu")).logits, t1.tensors["logits"][[5, 0, 5, 17]], rtol=0, atol=0
    )
    with torch.no_grad():
        teacher.head[1].bias.add_(1.0)
    _, hit = cached_table(teacher, toy_splits.train, req, None, *args)
    assert not hit, "changed teacher weights must miss the cache"
    _, hit = cached_table(teacher, toy_splits.val, req, None, *args)
    assert not hit, "other data must miss the cache"
    with torch.no_grad():
        expected = teacher.eval()(toy_splits.train.__getitems__(range(len(toy_splits.train))))
    table, _ = cached_table(teacher, toy_splits.train, req, None, *args)
    torch.testing.assert_close(table.tensors["logits"], expected)


def test_corrupt_cache_is_rebuilt(toy_splits, tmp_path):
    teacher, _ = models(toy_splits)
    args = (tmp_path, 64, torch.device("cpu"))
    cached_table(teacher, toy_splits.train, TeacherRequest(), None, *args)
    (path,) = tmp_path.glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    table, hit = cached_table(teacher, toy_splits.train, TeacherRequest(), None, *args)
    assert not hit and table.tensors["logits"].shape[0] == len(toy_splits.train)


def test_hint_method_trains_projector(toy_splits, tmp_path):
    teacher, student = models(toy_splits)
    r = distill(
        student,
        teacher,
        toy_splits,
        tmp_path / "h",
        "hint",
        {"student_layer": "encoders.b.body.2", "teacher_layer": "encoders.a.body.2", "beta": 0.5},
        trainer=TRAINER,
        cache=CacheConfig(dir=tmp_path / "c"),
    )
    import csv

    with open(tmp_path / "h" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    hint = [float(row["train/hint"]) for row in rows]
    assert hint[-1] < hint[0], f"the projector must learn to match the teacher's features: {hint}"
    assert set(r.test) >= {"accuracy", "f1_macro"}
    weights, _ = load_tensors(tmp_path / "h" / "checkpoints" / "last.safetensors")
    assert weights["module.method.projector.weight"].shape == (16, 8)


class NanStudent(nn.Module):
    modalities = ("b",)

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        out = self.lin(batch["b"])
        return out * float("nan") if self.training and self.calls > 12 else out


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_checkpoint(toy_splits, tmp_path):
    teacher, _ = models(toy_splits)
    with pytest.raises(TrainingError, match=r"epoch 2, step \d+: loss term 'ce', 'kd' is not finite.*last.safetensors"):
        distill(
            NanStudent(), teacher, toy_splits, tmp_path / "n", "kd", trainer=TRAINER, cache=CacheConfig(enabled=False)
        )
    _, state = load_tensors(tmp_path / "n" / "checkpoints" / "last.safetensors")
    assert state["epoch"] == 1


def test_teacher_and_student_class_counts_must_agree(toy_splits, tmp_path):
    teacher, student = models(toy_splits)
    teacher.head[1] = nn.Linear(teacher.head[1].in_features, 7)
    with pytest.raises(ConfigError, match="teacher predicts 7 classes but the student predicts 4"):
        distill(student, teacher, toy_splits, tmp_path / "x", "kd", trainer=TRAINER)


def test_finished_output_is_refused_without_overwrite(tiny_config, tmp_path):
    from mmdistill.config import load_config

    cfg = load_config(tiny_config(epochs=1))
    run_config(cfg, tmp_path / "run", quiet=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_checkpoint"] == "best" and metrics["seeds"] == [0]
    assert "student-nokd.accuracy" in metrics["paired"]
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_config(cfg, tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / "metrics.json").read_text()
    assert before == json.dumps(metrics, indent=2) + "\n", "a refused run must leave the finished one untouched"
    run_config(cfg, tmp_path / "run", quiet=True, overwrite=True)


def test_early_stopping_and_last_checkpoint_choice(toy_splits, tmp_path):
    _, student = models(toy_splits)
    cfg = TrainerConfig(
        epochs=30, batch_size=32, optimizer={"lr": 1e-12}, early_stopping={"patience": 2}, test_checkpoint="last"
    )
    r = distill(student, None, toy_splits, tmp_path / "e", "supervised", trainer=cfg)
    assert r.stopped_early and r.epochs_run == 3 and r.best_epoch == 1 and r.test_checkpoint == "last"


def test_bf16_mixed_precision_runs_on_cpu(toy_splits, tmp_path):
    teacher, student = models(toy_splits)
    cfg = TrainerConfig(epochs=1, batch_size=32, precision="bf16-mixed")
    r = distill(
        student, teacher, toy_splits, tmp_path / "bf16", "kd", trainer=cfg, cache=CacheConfig(dir=tmp_path / "c")
    )
    assert 0.0 <= r.test["accuracy"] <= 100.0 and student.head[1].weight.dtype == torch.float32


def test_binary_tasks_report_auroc(tmp_path):
    from mmdistill.data import build_splits

    data = build_splits("toy-two-modality", {"n": 300, "num_classes": 2})
    _, student = models(data)
    r = distill(student, None, data, tmp_path / "bin", "supervised", trainer=TrainerConfig(epochs=2, batch_size=32))
    assert 50.0 < r.test["auroc"] <= 100.0  # percent


def test_a_foreign_folder_is_never_deleted(tiny_config, tmp_path):
    from mmdistill.config import load_config

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not an mmdistill run"):
        run_config(load_config(tiny_config(epochs=1)), precious, quiet=True, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
