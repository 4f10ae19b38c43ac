"""modality_importance on a hand-made teacher and students: the teacher's saliency summary and each model's rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.batch import ModalitySpec
from mmdistill.data import MultimodalDataset
from mmdistill.data.contracts.split import Splits
from mmdistill.errors import ConfigError
from mmdistill.evaluation.modality_importance import modality_importance
from mmdistill.evaluation.robustness import missing_modality_table
from mmdistill.masking import Masker
from mmdistill.methods.msd_saliency import instance_saliency
from mmdistill.tasks import get_task


class Weighted(nn.Module):
    """Logits (-s, s) with s = sum over its modalities of weight * first feature."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self.modalities = tuple(weights)
        self.weights = weights
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        s = self.scale * sum(w * batch[m][:, 0] for m, w in self.weights.items())
        return torch.stack([-s, s], 1)


def split(n: int, seed: int) -> MultimodalDataset:
    """a points to the class; b points to it 70% of the time, at half a's strength, with noise of its own."""
    g = torch.Generator().manual_seed(seed)
    sign = (2 * (torch.arange(n) % 2) - 1).float()
    agree = (torch.rand(n, generator=g) < 0.7).float() * 2 - 1
    a = torch.stack([sign * (0.5 + torch.rand(n, generator=g)), torch.randn(n, generator=g)], 1)
    b = torch.stack([0.5 * sign * agree + 0.3 * torch.randn(n, generator=g), torch.zeros(n)], 1)
    return MultimodalDataset({"a": a, "b": b}, torch.arange(n) % 2, 2, "toy")


def splits() -> Splits:
    return Splits(train=split(60, 1), val=split(20, 2), test=split(40, 3))


def masker() -> Masker:
    return Masker([ModalitySpec("a", (2,)), ModalitySpec("b", (2,))], strategy="zeros")


@pytest.mark.parametrize("kind", ["kl", "true_class"])
def test_the_teachers_saliency_is_summarised_per_modality_over_the_training_split(kind):
    data, teacher = splits(), Weighted({"a": 1.0, "b": 2.0})
    out = modality_importance(teacher, {}, data, masker(), kind=kind)
    assert out["modalities"] == ["a", "b"] and out["saliency_kind"] == kind and out["task"] == "classification"
    expected = instance_saliency(teacher, data.train, masker(), ["a", "b"], kind, task=get_task("classification"))
    assert torch.equal(out["instance"], expected)
    assert list(out["saliency"]) == ["a", "b"]
    for i, m in enumerate(["a", "b"]):
        column = expected[:, i]
        assert out["saliency"][m] == {
            "population": pytest.approx(float(column.mean())),
            "median": pytest.approx(float(column.median())),
            "share_most_salient": pytest.approx(float((expected.argmax(1) == i).float().mean())),
        }
    shares = [out["saliency"][m]["share_most_salient"] for m in ("a", "b")]
    assert 0 < shares[0] < 1 and shares[0] + shares[1] == pytest.approx(1.0)
    assert out["saliency"]["a"]["population"] != out["saliency"]["b"]["population"]


def test_each_model_gets_a_row_for_the_full_input_and_for_each_modality_alone_on_the_test_split():
    data, teacher = splits(), Weighted({"a": 1.0, "b": 2.0})
    students = {"seed_0/student": Weighted({"a": 1.0, "b": -1.0}), "seed_0/a_only": Weighted({"a": 1.0})}
    out = modality_importance(teacher, students, data, masker())
    table = {
        name: missing_modality_table(model, data.test, masker(), task=get_task("classification"))
        for name, model in {"teacher": teacher, **students}.items()
    }
    expected = []
    for name in ("teacher", "seed_0/student"):
        full, a_alone, b_alone = table[name]
        for present, row in (("full", full), ("a", a_alone), ("b", b_alone)):
            expected.append({"model": name, "input": present, "accuracy": row["accuracy"], "f1_macro": row["f1_macro"]})
    (only,) = table["seed_0/a_only"]
    expected.append(
        {"model": "seed_0/a_only", "input": "full", "accuracy": only["accuracy"], "f1_macro": only["f1_macro"]}
    )
    assert out["accuracy"] == expected
    assert len({row["accuracy"] for row in expected[:6]}) > 2  # the rows differ: each is its own evaluation


def test_a_one_modality_teacher_has_rows_but_no_saliency():
    data = splits()
    out = modality_importance(Weighted({"a": 1.0}), {}, data, masker())
    assert "saliency" not in out and "instance" not in out
    assert [row["input"] for row in out["accuracy"]] == ["full"]


def test_the_task_given_is_used_and_true_class_saliency_is_refused_without_a_true_class():
    data = splits()
    out = modality_importance(Weighted({"a": 1.0, "b": 1.0}), {}, data, masker(), task="classification")
    assert out["task"] == "classification"
    with pytest.raises(ConfigError, match="--saliency: 'true_class' needs one true class per example.*'multilabel'"):
        modality_importance(Weighted({"a": 1.0, "b": 1.0}), {}, data, masker(), kind="true_class", task="multilabel")


class ThreeWay(nn.Module):
    """Logits (-s, s) with s = a + b + c (first features)."""

    modalities = ("a", "b", "c")

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        s = self.scale * (batch["a"][:, 0] + batch["b"][:, 0] + batch["c"][:, 0])
        return torch.stack([-s, s], 1)


def three_modalities(n: int, seed: int) -> MultimodalDataset:
    base = split(n, seed)
    return MultimodalDataset({**base.tensors, "c": -base.tensors["b"]}, torch.arange(n) % 2, 2, "toy")


def test_of_three_modalities_the_rows_are_the_full_input_and_each_alone_and_the_tables_name_what_is_removed():
    data = Splits(train=three_modalities(30, 1), val=three_modalities(10, 2), test=three_modalities(20, 3))
    masker = Masker([ModalitySpec(m, (2,)) for m in "abc"], strategy="zeros")
    out = modality_importance(ThreeWay(), {}, data, masker)
    assert out["saliency_kind"] == "kl"  # the default
    assert [row["input"] for row in out["accuracy"]] == ["full", "a", "b", "c"]
    table = missing_modality_table(ThreeWay(), data.test, masker)
    assert [(r["present"], r["removed"]) for r in table] == [
        ("a+b+c", "-"),
        ("a+b", "c"),
        ("a+c", "b"),
        ("b+c", "a"),
        ("a", "b+c"),
        ("b", "a+c"),
        ("c", "a+b"),
    ]
