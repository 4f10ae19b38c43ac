"""Every task end to end through the engine: from Python ``distill()`` and from ``mmdistill train``.

The data and models live in one small module the tests write to ``tmp_path`` (``data.dataset: "tw_tasks:<factory>"``
in YAML); each test checks what its task changes: the supervised and KD terms at the first step (one full-batch
step per epoch, so ``train/*`` of epoch 1 are the terms at the initial weights, recomputed here by hand), the metrics,
the best-epoch rule, the refusals, and the missing-modality table.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import cli, cli_env

from mmdistill.config import TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.errors import ConfigError

MODULE = '''
import math

import torch
from torch import nn

from mmdistill.data.contracts.dataset import DataSplits, MultimodalDataset


def _splits(columns, y, n_out, task, name):
    n = len(y)
    cut = [0, int(0.6 * n), int(0.8 * n), n]
    return DataSplits(*[MultimodalDataset({k: v[cut[i]:cut[i + 1]] for k, v in columns.items()}, y[cut[i]:cut[i + 1]],
                                          n_out, f"{name}/{part}", task)
                        for i, part in enumerate(("train", "val", "test"))])


def multilabel(n: int = 200, labels: int = 4, seed: int = 0):
    """Labels c = [w_c . (a, b) > 0]: both modalities matter."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)
    y = (torch.cat([a, b], 1) @ torch.randn(12, labels, generator=g) > 0).float()
    return _splits({"a": a, "b": b}, y, labels, "multilabel", "ml")


def regression(n: int = 200, seed: int = 0):
    """y = a . w_a + b . w_b + noise, one real target per example."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)
    y = a @ torch.randn(6, generator=g) + b @ torch.randn(6, generator=g) + 0.1 * torch.randn(n, generator=g)
    return _splits({"a": a, "b": b}, y, 1, "regression", "reg")


def segmentation(n: int = 60, size: int = 6, ignore_index: int = 99, seed: int = 0):
    """3 classes per pixel: background where rgb[0] <= 0, else 1 (near, depth > 0) or 2 (far): depth disambiguates
    the two objects that look the same in rgb. The first row of every map is unlabelled (ignore_index)."""
    g = torch.Generator().manual_seed(seed)
    rgb, depth = torch.randn(n, 3, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)
    y = torch.where(rgb[:, 0] <= 0, 0, torch.where(depth[:, 0] > 0, 1, 2)).long()
    y[:, 0, :] = ignore_index
    task = {"name": "segmentation", "params": {"ignore_index": ignore_index}}
    return _splits({"rgb": rgb, "depth": depth}, y, 3, task, "seg")


class Tower(nn.Module):
    """MLP over the named vector modalities, concatenated."""

    def __init__(self, specs, num_classes, modalities=("a", "b"), hidden: int = 16):
        super().__init__()
        self.modalities = tuple(modalities)
        dim = sum(math.prod(s.shape) for s in specs if s.name in self.modalities)
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, batch):
        return self.head(self.body(torch.cat([batch[m].flatten(1) for m in self.modalities], 1)))


class PixelNet(nn.Module):
    """1x1 convolutions over the named image modalities' channels: (B, C, H, W) logits."""

    def __init__(self, specs, num_classes, modalities=("rgb", "depth"), hidden: int = 8):
        super().__init__()
        self.modalities = tuple(modalities)
        channels = sum(s.shape[0] for s in specs if s.name in self.modalities)
        self.body = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU())
        self.head = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, batch):
        return self.head(self.body(torch.cat([batch[m] for m in self.modalities], 1)))
'''


@pytest.fixture
def tw(tmp_path, monkeypatch):
    """The data/model module, importable as ``tw_tasks`` (here and in the CLI's subprocess)."""
    (tmp_path / "tw_tasks.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tw_tasks", None)
    return importlib.import_module("tw_tasks")


def epoch_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("epoch")]


def one_step_trainer(n_train: int, epochs: int = 1, **kw) -> TrainerConfig:
    """One full-batch step per epoch: ``train/*`` of epoch 1 are the loss terms at the initial weights."""
    return TrainerConfig(epochs=epochs, batch_size=n_train, num_threads=1, **kw)


def train_teacher(tw, splits, model, out: Path, task, epochs: int = 30):
    torch.manual_seed(0)
    result = distill(
        model,
        None,
        splits,
        out,
        "supervised",
        trainer=TrainerConfig(epochs=epochs, batch_size=32, num_threads=1, optimizer={"lr": 0.01}),
        task=task,
    )
    return result.student.eval()


def full_batch(split):
    return split.__getitems__(range(len(split)))


# -- multilabel ------------------------------------------------------------------------------------------------------


def binary_kl(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * mean over examples and labels of KL(Bern(q) || Bern(p)), q = sigmoid(t/T), p = sigmoid(s/T), written out:
    q (log q - log p) + (1 - q) (log(1 - q) - log(1 - p)), the logs as logsigmoid (finite where sigmoid rounds to 1)."""
    log_q, log_1q = F.logsigmoid(t / T), F.logsigmoid(-t / T)
    log_p, log_1p = F.logsigmoid(s / T), F.logsigmoid(-s / T)
    return T**2 * (log_q.exp() * (log_q - log_p) + log_1q.exp() * (log_1q - log_1p)).mean()


def test_multilabel_kd_from_python_uses_the_per_label_binary_kl_and_reports_f1_and_map(tw, tmp_path):
    data = tw.multilabel()
    specs = data.train.specs()
    teacher = train_teacher(tw, data, tw.Tower(specs, 4), tmp_path / "teacher", "multilabel")
    torch.manual_seed(1)
    student = tw.Tower(specs, 4, modalities=("b",))
    start = copy.deepcopy(student)
    result = distill(
        student,
        teacher,
        data,
        tmp_path / "kd",
        "kd",
        {"temperature": 2.0, "lam": 0.5},
        trainer=one_step_trainer(len(data.train), epochs=3),
        task="multilabel",
    )
    assert set(result.test) == {"f1_micro", "f1_macro", "map", "loss"}
    assert all(0.0 <= result.test[k] <= 100.0 for k in ("f1_micro", "f1_macro", "map"))  # percent
    first = epoch_rows(tmp_path / "kd")[0]
    batch = full_batch(data.train)
    with torch.no_grad():
        s, t = start(batch), teacher(batch)
    assert float(first["train/kd"]) == pytest.approx(float(binary_kl(s, t, 2.0)), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits(s, batch["label"])
    assert float(first["train/ce"]) == pytest.approx(float(bce), rel=1e-5)
    assert "val/f1_micro" in first and "val/map" in first  # the trainer's validation uses the task's metrics


def test_msd_on_multilabel_weights_its_per_modality_binary_kl_terms_by_the_task_saliency(tw, tmp_path):
    from mmdistill.masking import Masker

    data = tw.multilabel()
    specs = data.train.specs()
    teacher = train_teacher(tw, data, tw.Tower(specs, 4), tmp_path / "teacher", "multilabel")
    torch.manual_seed(1)
    student = tw.Tower(specs, 4)
    start = copy.deepcopy(student)
    params = {"weighting": "population", "temperature": 2.0, "lam": 0.5}
    result = distill(
        student,
        teacher,
        data,
        tmp_path / "msd",
        "msd",
        params,
        trainer=one_step_trainer(len(data.train)),
        task="multilabel",
    )
    assert {"f1_micro", "f1_macro", "map"} <= set(result.test)
    first = epoch_rows(tmp_path / "msd")[0]
    batch, masker = full_batch(data.train), Masker(specs)
    with torch.no_grad():  # S_m: mean over examples and labels of the binary KL of the teacher on x^(-m) -> on x
        full = teacher(batch)
        pop = torch.stack([binary_kl(teacher(masker.keep_only(batch, other)), full, 1.0) for other in ("b", "a")])
    weights = pop / pop.mean()
    assert not torch.allclose(weights, torch.ones(2), atol=1e-3)  # the two modalities matter differently
    with torch.no_grad():
        for i, m in enumerate(("a", "b")):
            view = masker.variants(batch, [(m,)])
            n = len(batch["label"])
            s_m, t_m = start(view)[n:], teacher(view)[n:]
            expected = weights[i] * binary_kl(s_m, t_m, 2.0)
            assert float(first[f"train/kd/{m}"]) == pytest.approx(float(expected), rel=1e-4)


# -- regression ------------------------------------------------------------------------------------------------------


def test_regression_kd_from_python_regresses_to_the_teacher_and_keeps_the_epoch_of_least_mae(tw, tmp_path):
    data = tw.regression()
    specs = data.train.specs()
    teacher = train_teacher(tw, data, tw.Tower(specs, 1), tmp_path / "teacher", "regression")
    torch.manual_seed(1)
    student = tw.Tower(specs, 1, modalities=("b",))
    start = copy.deepcopy(student)
    result = distill(
        student,
        teacher,
        data,
        tmp_path / "kd",
        "kd",
        {"lam": 0.5},
        trainer=one_step_trainer(len(data.train), epochs=8, optimizer={"lr": 0.03}),
        task="regression",
    )
    assert set(result.test) == {"mae", "pearson", "loss"}
    rows = epoch_rows(tmp_path / "kd")
    batch = full_batch(data.train)
    with torch.no_grad():
        s, t = start(batch)[:, 0], teacher(batch)[:, 0]
    assert float(rows[0]["train/kd"]) == pytest.approx(float(F.mse_loss(s, t)), rel=1e-5)  # no temperature
    assert float(rows[0]["train/ce"]) == pytest.approx(float(F.mse_loss(s, batch["label"])), rel=1e-5)
    maes = [float(r["val/mae"]) for r in rows]
    assert maes.index(min(maes)) != maes.index(max(maes))
    assert result.best_epoch == maes.index(min(maes)) + 1  # mae: lower is better
    from mmdistill.evaluation.robustness import noise_curves

    curves = noise_curves(teacher, data.test, [0.0, 2.0], kinds=("gaussian",))  # with the dataset's task
    clean, noisy = (r for r in curves if r["modality"] == "a")
    assert {"mae", "pearson", "loss"} <= set(clean) and "accuracy" not in clean
    test = full_batch(data.test)
    with torch.no_grad():
        mae = (teacher(test)[:, 0] - test["label"]).abs().mean()
    assert clean["mae"] == pytest.approx(float(mae), rel=1e-5) and noisy["mae"] > clean["mae"]


@pytest.mark.parametrize(
    "method, params, key",
    [
        ("kd", {"temperature": 2.0}, "method.params.temperature"),
        ("dkd", {}, "method.name: 'dkd'"),
    ],
)
def test_regression_refuses_what_does_not_carry_over_by_name_from_python(tw, tmp_path, method, params, key):
    data = tw.regression(n=40)
    specs = data.train.specs()
    with pytest.raises(ConfigError, match=key):
        distill(
            tw.Tower(specs, 1, modalities=("b",)),
            tw.Tower(specs, 1),
            data,
            tmp_path / "x",
            method,
            params,
            task="regression",
        )
    with pytest.raises(ConfigError, match="trainer.monitor: 'accuracy' is not a metric of task 'regression'"):
        distill(
            tw.Tower(specs, 1, modalities=("b",)),
            tw.Tower(specs, 1),
            data,
            tmp_path / "y",
            "kd",
            trainer=TrainerConfig(monitor="accuracy"),
            task="regression",
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# -- segmentation ----------------------------------------------------------------------------------------------------


def test_segmentation_kd_from_python_leaves_ignored_pixels_out_of_losses_and_metrics(tw, tmp_path):
    task = {"name": "segmentation", "params": {"ignore_index": 99}}
    data = tw.segmentation()
    specs = data.train.specs()
    teacher = train_teacher(tw, data, tw.PixelNet(specs, 3), tmp_path / "teacher", task, epochs=15)
    torch.manual_seed(1)
    student = tw.PixelNet(specs, 3, modalities=("rgb",))
    start = copy.deepcopy(student)
    result = distill(
        student,
        teacher,
        data,
        tmp_path / "kd",
        "kd",
        {"temperature": 2.0},
        trainer=one_step_trainer(len(data.train), epochs=3),
        task=task,
    )
    assert set(result.test) == {"miou", "pixel_accuracy", "loss"}
    batch = full_batch(data.train)
    valid = batch["label"] != 99
    with torch.no_grad():
        s, t = start(batch).movedim(1, -1)[valid], teacher(batch).movedim(1, -1)[valid]  # (valid pixels, C)
    kl = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
    first = epoch_rows(tmp_path / "kd")[0]
    assert float(first["train/kd"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(first["train/ce"]) == pytest.approx(float(F.cross_entropy(s, batch["label"][valid])), rel=1e-5)
    test = full_batch(data.test)
    with torch.no_grad():
        pred = result.student.eval()(test).argmax(1)
    keep = test["label"] != 99
    assert result.test["pixel_accuracy"] == pytest.approx(
        100 * float((pred[keep] == test["label"][keep]).float().mean())
    )
    ious = [
        ((pred[keep] == c) & (test["label"][keep] == c)).sum() / ((pred[keep] == c) | (test["label"][keep] == c)).sum()
        for c in range(3)
    ]
    assert result.test["miou"] == pytest.approx(
        100 * float(torch.stack([i for i in ious if not i.isnan()]).mean()), rel=1e-5
    )


def test_segmentation_feature_hint_at_a_decoder_layer(tw, tmp_path):
    """FitNets on (B, C, H, W) decoder features through the hooks; its supervised term is the per-pixel CE."""
    task = {"name": "segmentation", "params": {"ignore_index": 99}}
    data = tw.segmentation(n=30)
    specs = data.train.specs()
    torch.manual_seed(0)
    teacher, student = tw.PixelNet(specs, 3), tw.PixelNet(specs, 3, modalities=("rgb",))
    start = copy.deepcopy(student)
    params = {"student_layer": "body", "teacher_layer": "body", "beta": 0.5}
    result = distill(
        student, teacher, data, tmp_path / "hint", "hint", params, trainer=one_step_trainer(len(data.train)), task=task
    )
    assert {"miou", "pixel_accuracy"} <= set(result.test)
    batch, first = full_batch(data.train), epoch_rows(tmp_path / "hint")[0]
    valid = batch["label"] != 99
    with torch.no_grad():
        ce = F.cross_entropy(start(batch).movedim(1, -1)[valid], batch["label"][valid])
    assert float(first["train/ce"]) == pytest.approx(float(ce), rel=1e-5) and float(first["train/hint"]) > 0


@pytest.mark.parametrize("task", ["segmentation", "regression"])
def test_the_teacher_cache_holds_segmentation_maps_and_regression_outputs(tw, tmp_path, task):
    """The cache stores (N, C, H, W) / (N, D) teacher outputs; a run from the cache trains like one online."""
    from mmdistill.config import CacheConfig

    if task == "segmentation":
        task, data, model, one = (
            {"name": task, "params": {"ignore_index": 99}},
            tw.segmentation(n=30),
            tw.PixelNet,
            "rgb",
        )
        out = 3
    else:
        data, model, one, out = tw.regression(n=60), tw.Tower, "b", 1
    specs = data.train.specs()
    torch.manual_seed(0)
    teacher = model(specs, out)
    results = {}
    for mode in ("cache", "online"):
        torch.manual_seed(1)
        cache = CacheConfig(enabled=mode == "cache", dir=tmp_path / "tcache")
        results[mode] = distill(
            model(specs, out, modalities=(one,)),
            teacher,
            data,
            tmp_path / mode,
            "kd",
            trainer=one_step_trainer(len(data.train), epochs=2),
            cache=cache,
            task=task,
        )
    assert len(list((tmp_path / "tcache").glob("*.safetensors"))) == 1
    for k in results["online"].test:
        assert results["cache"].test[k] == pytest.approx(results["online"].test[k], rel=1e-4, abs=1e-6)


def test_model_outputs_that_do_not_fit_the_task_are_refused_before_training(tw, tmp_path):
    class Cropped(torch.nn.Module):  # logits one row short of the label map
        def __init__(self, net):
            super().__init__()
            self.net, self.modalities = net, net.modalities

        def forward(self, batch):
            return self.net(batch)[:, :, 1:]

    task = {"name": "segmentation", "params": {"ignore_index": 99}}
    data = tw.segmentation(n=20)
    specs = data.train.specs()
    with pytest.raises(
        ConfigError, match=r"student.model: task 'segmentation' needs logits \(B, C, H, W\) at the label"
    ):
        distill(
            Cropped(tw.PixelNet(specs, 3, modalities=("rgb",))),
            tw.PixelNet(specs, 3),
            data,
            tmp_path / "a",
            "kd",
            task=task,
        )
    with pytest.raises(
        ConfigError,
        match=r"task.params.ignore_index: 255, but split 'seg/train' marks unlabelled "
        r"pixels with 99; set task.params.ignore_index: 99",
    ):
        distill(tw.PixelNet(specs, 3), None, data, tmp_path / "d", "supervised", task="segmentation")
    reg = tw.regression(n=20)
    with pytest.raises(ConfigError, match="models predict 2 outputs but the dataset has 1"):
        distill(tw.Tower(reg.train.specs(), 2), None, reg, tmp_path / "b", "supervised", task="regression")
    with pytest.raises(
        ConfigError, match="task: the run's task is 'classification' but split 'reg/train' holds 'regression' targets"
    ):
        distill(tw.Tower(reg.train.specs(), 1), None, reg, tmp_path / "c", "supervised", task="classification")


class PlainItems(torch.utils.data.Dataset):
    """A user's map-style dataset of dict items with no ``task`` or ``num_classes`` attribute."""

    def __init__(self, splits, part):
        self.split = splits.split(part)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        item = self.split[i]
        return {"a": item["a"], "b": item["b"], "label": item["label"]}


def test_a_plain_item_dataset_trains_for_the_task_given_to_distill(tw, tmp_path):
    data = tw.regression(n=60)
    specs = data.train.specs()
    torch.manual_seed(0)
    result = distill(
        tw.Tower(specs, 1),
        None,
        out_dir=tmp_path / "run",
        method="supervised",
        task="regression",
        train=PlainItems(data, "train"),
        val=PlainItems(data, "val"),
        test=PlainItems(data, "test"),
        trainer=TrainerConfig(epochs=2, batch_size=16, num_threads=1),
    )
    assert set(result.test) == {"mae", "pearson", "loss"}


# -- from YAML: mmdistill train / evaluate ---------------------------------------------------------------------------

YAML = """\
data: {{dataset: "tw_tasks:{factory}"}}
task: {task}
teacher: {{model: {{factory: "tw_tasks:{model}", params: {{modalities: {both}}}}}}}
student: {{model: {{factory: "tw_tasks:{model}", params: {{modalities: [{one}]}}}}}}
method: {{name: {method}, params: {params}}}
trainer: {{epochs: {epochs}, batch_size: 32, num_threads: 1, optimizer: {{lr: 0.01}}}}
cache: {{dir: {cache}}}
"""


def train_cli(tmp_path: Path, name: str, **fields) -> tuple[Path, dict]:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(YAML.format(cache=tmp_path / "cache", **fields))
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = tmp_path / f"run_{name}"
    proc = subprocess.run(
        cli("train", str(cfg), "--out", str(out)), env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    first = {"regression": "mae", "multilabel": "f1_micro", "segmentation": "miou"}[metrics["task"]]
    assert f"student  test {first} " in proc.stdout  # the task's first metric, printed after the run
    return out, metrics


def test_regression_kd_from_the_cli_and_evaluate_missing_report_mae_and_pearson(tw, tmp_path):
    out, metrics = train_cli(
        tmp_path,
        "reg",
        factory="regression",
        task="regression",
        model="Tower",
        both="[a, b]",
        one="b",
        method="kd",
        params="{lam: 0.5}",
        epochs=6,
    )
    assert metrics["task"] == "regression"
    assert {"student.mae", "student.pearson", "nokd.mae", "teacher.mae"} <= set(metrics["summary"])
    assert "accuracy" not in json.dumps(metrics["summary"])
    summary = (out / "summary.md").read_text()
    assert "| model | MAE | Pearson r |" in summary and "accuracy" not in summary
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    proc = subprocess.run(
        cli("evaluate", str(out), "--missing", "--json"), env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    teacher_rows = {r["present"]: r for r in result["missing"] if r["model"] == "seed_0/teacher"}
    assert set(teacher_rows) == {"a+b", "a", "b"}
    assert {"mae", "pearson", "loss", "n"} <= set(teacher_rows["a+b"]) and "accuracy" not in teacher_rows["a+b"]
    assert teacher_rows["a+b"]["mae"] == pytest.approx(metrics["runs"][0]["teacher"]["mae"], rel=1e-6)
    assert teacher_rows["a+b"]["mae"] < teacher_rows["a"]["mae"]  # removing b hurts a teacher that needs it
    with open(out / "robustness" / "missing.csv", newline="") as f:
        assert {"mae", "pearson"} <= set(next(csv.DictReader(f)))
    proc = subprocess.run(cli("analyze", "modalities", str(out)), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| model | input | MAE | Pearson r |" in (out / "analysis" / "modalities.md").read_text()


def test_multilabel_and_segmentation_kd_from_the_cli(tw, tmp_path):
    _, ml = train_cli(
        tmp_path,
        "ml",
        factory="multilabel",
        task="multilabel",
        model="Tower",
        both="[a, b]",
        one="b",
        method="kd",
        params="{temperature: 2.0}",
        epochs=3,
    )
    assert {"student.f1_micro", "student.f1_macro", "student.map", "nokd.map"} <= set(ml["summary"])
    seg_task = "{name: segmentation, params: {ignore_index: 99}}"
    out, seg = train_cli(
        tmp_path,
        "seg",
        factory="segmentation",
        task=seg_task,
        model="PixelNet",
        both="[rgb, depth]",
        one="rgb",
        method="kd",
        params="{temperature: 2.0}",
        epochs=3,
    )
    assert {"teacher.miou", "student.miou", "nokd.pixel_accuracy"} <= set(seg["summary"])
    assert "| model | mIoU | pixel accuracy |" in (out / "summary.md").read_text()


def test_a_multilabel_kd_run_resumes_bit_for_bit(tw, tmp_path):
    """Interrupted after 2 of 4 epochs and resumed: the same weights and test metrics as the straight run."""
    data = tw.multilabel(n=120)
    specs = data.train.specs()
    torch.manual_seed(0)
    teacher = tw.Tower(specs, 4)
    results = {}
    for name, legs in (("straight", [4]), ("resumed", [2, 4])):
        for epochs in legs:
            torch.manual_seed(1)
            trainer = TrainerConfig(epochs=epochs, batch_size=16, num_threads=1, monitor="map")
            results[name] = distill(
                tw.Tower(specs, 4, modalities=("b",)),
                teacher,
                data,
                tmp_path / name,
                "kd",
                trainer=trainer,
                task="multilabel",
                resume=epochs != legs[0],
            )
    straight, resumed = results["straight"], results["resumed"]
    assert resumed.test == straight.test and resumed.best_epoch == straight.best_epoch
    assert resumed.train_steps == straight.train_steps // 2  # the second leg ran epochs 3 and 4 only
    for k, v in straight.student.state_dict().items():
        assert torch.equal(v, resumed.student.state_dict()[k]), k
