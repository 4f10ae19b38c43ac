"""Degenerate labels found before training, reserved modality names,
MultiBench's AV-MNIST layout checked exactly, hint features checked, auroc and model size checked in preflight."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_loaders import write_avmnist, write_folder
from torch import nn

from mmdistill.cli import main
from mmdistill.config import load_config
from mmdistill.data import build_splits
from mmdistill.engine.protocol import preflight
from mmdistill.errors import ConfigError, DataError

torch.set_num_threads(1)

RUN = """\
data: {{name: folder, params: {{root: {root}}}}}
student: {{model: {{modalities: [a], encoder: {{hidden: [8], out_dim: 4}}}}}}
method: {{name: supervised}}
trainer: {{epochs: 1, batch_size: 8, num_threads: 1}}
cache: {{dir: {cache}}}
"""


def train_cli(tmp_path: Path, capsys, root: Path, *overrides: str) -> tuple[int, str, Path]:
    """``mmdistill train`` in-process on the folder dataset at ``root``: (exit code, stderr, output folder)."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.format(root=root, cache=tmp_path / "cache"))
    out = tmp_path / "out"
    code = main(["train", str(cfg), *overrides, "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err, out


def set_labels(root: Path, split: str, labels) -> None:
    np.save(root / split / "labels.npy", np.asarray(labels))


# -- degenerate labels ----------------------------------------------------------------------------


def test_single_class_data_is_refused_before_anything_is_written(tmp_path, capsys):
    root = tmp_path / "d"
    write_folder(root, classes=1)
    code, err, out = train_cli(tmp_path, capsys, root)
    assert code == 2 and "train/labels.npy: every label is 0: a single class" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_single_class_in_train_with_declared_classes_is_refused_in_preflight(tmp_path, capsys):
    root = tmp_path / "d"
    write_folder(root, classes=3)
    for split in ("train", "val", "test"):
        set_labels(root, split, np.full(len(np.load(root / split / "labels.npy")), 2))
    (root / "meta.json").write_text(json.dumps({"num_classes": 3}))
    code, err, out = train_cli(tmp_path, capsys, root)
    assert code == 2 and "every training example has label 2: a single class" in err, err
    assert not out.exists()


def test_one_training_row_is_refused(tmp_path, capsys):
    root = tmp_path / "d"
    write_folder(root, sizes=(("train", 1), ("val", 1), ("test", 1)))
    (root / "meta.json").write_text(json.dumps({"num_classes": 2}))
    code, err, out = train_cli(tmp_path, capsys, root)
    assert code == 2 and "1 training example; training needs at least 2" in err, err
    assert not out.exists()


def test_a_mistyped_label_is_named_with_file_and_row(tmp_path):
    root = tmp_path / "d"
    write_folder(root)
    labels = np.arange(30) % 3
    labels[17] = 100000
    set_labels(root, "train", labels)
    with pytest.raises(
        DataError,
        match=r"train/labels\.npy: labels must be 0\.\.K-1 .*label 100000 \(row 17\) makes "
        r"100001 classes, but only 4 distinct labels appear",
    ):
        build_splits("folder", {"root": str(root)})


def test_a_gap_in_the_labels_is_refused_unless_num_classes_is_declared(tmp_path):
    root = tmp_path / "d"
    write_folder(root)
    for split in ("train", "val", "test"):
        set_labels(root, split, np.load(root / split / "labels.npy") * 2)  # labels 0, 2, 4: classes 1 and 3 never occur
    with pytest.raises(DataError, match=r"no example of class\(es\) \[1, 3\]"):
        build_splits("folder", {"root": str(root)})
    assert build_splits("folder", {"root": str(root), "num_classes": 5}).num_classes == 5


def test_declared_num_classes_far_above_the_labels_is_refused_in_preflight(tmp_path, capsys):
    root = tmp_path / "d"
    write_folder(root)
    (root / "meta.json").write_text(json.dumps({"num_classes": 100001}))
    code, err, out = train_cli(tmp_path, capsys, root)
    assert code == 2 and "100001 classes (num_classes), but only 3 distinct labels occur in train" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "labels, pattern",
    [
        (lambda n: np.arange(n) % 3 - 1, r"train/labels\.npy: labels must be >= 0, got -1"),
        (lambda n: (np.arange(n) % 3) + 0.5, r"train/labels\.npy: labels must be integers, got 0\.5 at row 0"),
    ],
)
def test_negative_or_fractional_labels_name_the_file(tmp_path, labels, pattern):
    root = tmp_path / "d"
    write_folder(root)
    set_labels(root, "train", labels(30))
    with pytest.raises(DataError, match=pattern):
        build_splits("folder", {"root": str(root)})


# -- reserved names, AV-MNIST layout -------------------------------------------------------------


@pytest.mark.parametrize("name", ["index", "label"])
def test_a_modality_file_named_like_a_reserved_batch_key_is_refused(tmp_path, name):
    root = tmp_path / "d"
    write_folder(root)
    for split, n in (("train", 30), ("val", 10), ("test", 10)):
        np.save(root / split / f"{name}.npy", np.zeros((n, 2), np.float32))
    with pytest.raises(DataError, match=rf"train/{name}\.npy: a modality may not be named '{name}'"):
        build_splits("folder", {"root": str(root)})


def test_in_memory_datasets_refuse_reserved_names_too():
    from mmdistill.data import MultimodalDataset

    with pytest.raises(DataError, match="a modality may not be named 'index'"):
        MultimodalDataset({"index": torch.zeros(4, 2)}, torch.tensor([0, 1, 0, 1]), 2)


@pytest.mark.parametrize(
    "modality, shape, expected",
    [
        ("image", (24, 785), r"\(N, 784\) or \(N, 28, 28\)"),
        ("image", (24, 3, 28, 28), r"\(N, 784\) or \(N, 28, 28\)"),
        ("audio", (24, 20, 20), r"\(N, 12544\) or \(N, 112, 112\)"),
        ("audio", (24, 112), r"\(N, 12544\) or \(N, 112, 112\)"),
    ],
)
def test_avmnist_refuses_shapes_that_are_not_multibench_layout(tmp_path, modality, shape, expected):
    write_avmnist(tmp_path)
    np.save(tmp_path / modality / "train_data.npy", np.zeros(shape, np.float32))
    with pytest.raises(
        DataError,
        match=rf"{modality}/train_data\.npy: expected MultiBench's AV-MNIST {modality} layout "
        rf"{expected}, got shape {re.escape(str(shape))}",
    ):
        build_splits("avmnist", {"root": str(tmp_path)})


# -- preflight: auroc, model size, hint features -------------------------------------------------


def test_auroc_on_multiclass_data_is_refused_by_name(tiny_config, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["train", str(tiny_config(epochs=1)), "trainer.monitor=auroc", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trainer.monitor: 'auroc' is computed for two-class data only, and this dataset has 4 classes" in err
    assert not out.exists()


def test_auroc_on_two_class_data_passes_preflight(tiny_config):
    cfg = load_config(tiny_config(epochs=1), ["trainer.monitor=auroc", "data.params.num_classes=2"])
    preflight(cfg, build_splits(cfg.data.name, cfg.data.params))


def test_teacher_trainer_auroc_is_checked_too(tiny_config):
    cfg = load_config(tiny_config(epochs=1), ["teacher.trainer.monitor=auroc"])
    with pytest.raises(ConfigError, match=r"teacher\.trainer\.monitor: 'auroc'"):
        preflight(cfg, build_splits(cfg.data.name, cfg.data.params))


def test_a_model_too_large_for_memory_is_refused_before_allocation(tiny_config, monkeypatch):
    import mmdistill.models.multimodal as multimodal

    monkeypatch.setattr(multimodal, "available_memory", lambda: 1000)  # bytes: less than the tiny student needs
    cfg = load_config(tiny_config(epochs=1))
    with pytest.raises(ConfigError, match=r"student\.model: [\d,]+ parameters need about .* GiB to train"):
        preflight(cfg, build_splits(cfg.data.name, cfg.data.params))


def test_encoder_type_must_fit_the_modality(tiny_config):
    cfg = load_config(tiny_config(epochs=1), ["teacher.model.encoder.type=cnn2d"])
    with pytest.raises(ConfigError, match=r"teacher\.model\.encoder\.type: 'cnn2d' needs \(channels, height, width\)"):
        preflight(cfg, build_splits(cfg.data.name, cfg.data.params))


class _Tagged(nn.Module):
    """A model reading modality b whose layer ``ids`` outputs integers and ``flat`` a (batch,) vector."""

    modalities = ("b",)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(16, 8)
        self.ids = nn.Identity()
        self.flat = nn.Identity()
        self.head = nn.Linear(8, 4)

    def forward(self, batch):
        h = self.body(batch["b"])
        self.ids(h.long())
        self.flat(h.sum(1))
        return self.head(h)


@pytest.mark.parametrize(
    "layer, pattern",
    [
        ("ids", r"method\.params\.student_layer: layer 'ids' outputs dtype torch\.int64; a hint needs float features"),
        (
            "flat",
            r"method\.params\.student_layer: layer 'flat' output must be \(batch, channels, \.\.\.\), got shape \(8,\)",
        ),
    ],
)
def test_hint_checks_its_feature_layers_by_name(toy_splits, layer, pattern):
    from mmdistill.engine.api import build_method
    from mmdistill.masking import Masker

    hint = build_method("hint", {"student_layer": layer, "teacher_layer": "body"}, Masker(toy_splits.train.specs()))
    with pytest.raises(ConfigError, match=pattern):
        hint.setup(toy_splits.train.__getitems__(range(8)), _Tagged(), _Tagged())


def test_hint_beta_that_would_overflow_the_total_is_refused(tiny_config):
    # beta = 1e300 made the weighted total inf with every term finite: "loss term  is not finite ()"
    with pytest.raises(ConfigError, match=r"method\.params\.beta: Input should be less than or equal to 1000"):
        load_config(
            tiny_config(epochs=1),
            ["method.name=hint", "method.params={student_layer: head, teacher_layer: head, beta: 1e300}"],
        )
