"""Missing-modality tables and noise-robustness curves on a tiny hand-built model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.batch import ModalitySpec
from mmdistill.data import MultimodalDataset
from mmdistill.errors import ConfigError
from mmdistill.evaluation import (
    corrupt,
    evaluate_metrics,
    format_rows,
    missing_modality_table,
    modality_subsets,
    noise_curves,
    plot_noise_curves,
)
from mmdistill.masking import Masker

torch.set_num_threads(1)


class SignSum(nn.Module):
    """Predicts class 1 iff the sum of the first feature of each modality is positive."""

    modalities = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        s = self.scale * (batch["a"][:, 0] + batch["b"][:, 0])
        return torch.stack([-s, s], 1)


def dataset(n: int = 200) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    sign = (2 * y - 1).float()
    a = torch.stack([sign * 1.0, torch.randn(n, generator=g)], 1)  # a alone decides every example
    agree = (torch.rand(n, generator=g) < 0.7).float() * 2 - 1  # b points the right way 70% of the time
    b = torch.stack([0.5 * sign * agree, torch.zeros(n)], 1)
    return MultimodalDataset({"a": a, "b": b}, y, 2, "toy")


def masker() -> Masker:
    return Masker([ModalitySpec("a", (2,)), ModalitySpec("b", (2,))], strategy="zeros")


def test_subsets_are_all_non_empty_combinations_largest_first():
    assert modality_subsets(("a", "b", "c")) == [
        ("a", "b", "c"),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a",),
        ("b",),
        ("c",),
    ]


def test_missing_modality_table_has_one_row_per_subset_with_its_metric():
    data = dataset()
    rows = missing_modality_table(SignSum(), data, masker())
    by = {r["present"]: r for r in rows}
    assert list(by) == ["a+b", "a", "b"]
    assert by["a+b"]["removed"] == "-" and by["a"]["removed"] == "b"
    assert by["a"]["accuracy"] == 100.0  # a alone is perfect (percent)
    b_only = ((data.tensors["b"][:, 0] > 0).long() == data.labels).float().mean().item()
    assert by["b"]["accuracy"] == pytest.approx(100 * b_only)
    assert 0.0 < by["b"]["f1_macro"] <= 100.0 and by["b"]["n"] == 200


def test_mean_masking_is_honoured(tmp_path):
    data = dataset()
    m = Masker([ModalitySpec("a", (2,)), ModalitySpec("b", (2,))], strategy="mean").fit(
        {"a": torch.tensor([5.0, 0.0]), "b": torch.zeros(2)}
    )
    rows = missing_modality_table(SignSum(), data, m)
    assert {r["present"]: r["accuracy"] for r in rows}["b"] == 50.0  # a replaced by +5: always class 1


def test_evaluation_runs_in_eval_mode_without_gradients_and_restores_the_mode():
    seen = []

    class Recording(SignSum):
        def forward(self, batch):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(batch)

    model = Recording().train()
    evaluate_metrics(model, dataset())
    assert seen and all(mode == (False, False) for mode in seen)
    assert model.training and model.scale.grad is None


def test_noise_curves_cover_every_modality_kind_and_level_and_degrade():
    rows = noise_curves(SignSum(), dataset(), levels=[0.0, 0.5, 4.0], seed=0)
    assert len(rows) == 2 * 2 * 3
    acc = {(r["modality"], r["kind"], r["level"]): r["accuracy"] for r in rows}
    assert (
        acc[("a", "gaussian", 0.0)] == acc[("a", "dropout", 0.0)] == evaluate_metrics(SignSum(), dataset())["accuracy"]
    )
    assert acc[("a", "gaussian", 4.0)] < acc[("a", "gaussian", 0.0)]
    assert acc[("a", "dropout", 4.0)] < acc[("a", "dropout", 0.0)]  # p >= 1: every element dropped


def test_noise_curves_are_reproducible_for_a_seed_and_change_with_it():
    def run(seed):
        return [r["accuracy"] for r in noise_curves(SignSum(), dataset(), [1.0], seed=seed)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_gaussian_noise_is_relative_to_each_features_std():
    x = torch.zeros(10000, 2)
    sigma = torch.tensor([1.0, 10.0])
    noisy = corrupt({"a": x}, "a", "gaussian", 0.5, torch.Generator().manual_seed(0), sigma)["a"]
    assert torch.allclose(noisy.std(0), 0.5 * sigma, rtol=0.05)


def test_dropout_on_tokens_clears_attention_mask_entries():
    batch = {"t": torch.ones(4, 1000, dtype=torch.long), "t_mask": torch.ones(4, 1000, dtype=torch.long)}
    out = corrupt(batch, "t", "dropout", 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out["t"], batch["t"])
    assert abs(out["t_mask"].float().mean().item() - 0.7) < 0.03


def test_unknown_noise_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown noise kind 'blur'; known: gaussian, dropout"):
        noise_curves(SignSum(), dataset(), [0.1], kinds=("blur",))


def test_plot_writes_a_png_and_rows_format_as_markdown(tmp_path):
    rows = noise_curves(SignSum(), dataset(50), levels=[0.0, 1.0])
    path = plot_noise_curves(rows, tmp_path / "curves" / "noise.png", title="toy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_rows(rows, ["modality", "kind", "level", "accuracy"])
    assert table.splitlines()[0] == "| modality | kind | level | accuracy |" and len(table.splitlines()) == 2 + len(
        rows
    )
