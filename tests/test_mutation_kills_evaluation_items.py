"""noise_curves on a split that reads items (no whole columns, no num_classes): which modality gets which noise."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.batch import LABEL, ModalitySpec
from mmdistill.evaluation.robustness import evaluate_metrics, noise_curves


class Rows:
    """A split that only hands out rows (a float modality ``a``, token ids ``t``) and declares nothing else."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.rows = {
            "a": torch.randn(n, 2, generator=g),
            "t": torch.randint(1, 9, (n, 4), generator=g),
            LABEL: torch.arange(n) % 2,
        }

    def __len__(self) -> int:
        return len(self.rows[LABEL])

    def __getitems__(self, indices):
        return {k: v[list(indices)] for k, v in self.rows.items()}


class ItemSplit(Rows):
    """Rows that also declare their modalities: ``t`` holds tokens."""

    def specs(self):
        return [ModalitySpec("a", (2,)), ModalitySpec("t", (4,), tokens=True)]


class FirstFeature(nn.Module):
    """Logits (-s, s), s = a's first feature plus the share of t's tokens kept by its mask."""

    modalities = ("a", "t")

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        kept = batch.get("t_mask", torch.ones_like(batch["t"])).float().mean(1)
        s = self.scale * (batch["a"][:, 0] + kept - 0.5)
        return torch.stack([-s, s], 1)


def test_on_item_data_tokens_get_only_dropout_and_floats_both_kinds_with_the_batchs_own_std():
    split, model = ItemSplit(24), FirstFeature()
    rows = noise_curves(model, split, [0.0, 1.0], task="classification")
    assert [(r["modality"], r["kind"], r["level"]) for r in rows] == [
        ("a", "gaussian", 0.0),
        ("a", "gaussian", 1.0),
        ("a", "dropout", 0.0),
        ("a", "dropout", 1.0),
        ("t", "dropout", 0.0),
        ("t", "dropout", 1.0),
    ]
    clean = evaluate_metrics(model, split, task="classification")
    assert clean["n"] == 24
    for row in rows:
        assert row["n"] == 24
        if row["level"] == 0.0:
            assert row["accuracy"] == clean["accuracy"]
    assert rows[1]["accuracy"] != clean["accuracy"]  # gaussian noise at one std changes the predictions


def test_a_split_that_declares_no_modalities_is_read_as_it_comes():
    rows = noise_curves(FirstFeature(), Rows(8), [1.0], kinds=["dropout"], task="classification")
    assert [(r["modality"], r["kind"], r["n"]) for r in rows] == [("a", "dropout", 8), ("t", "dropout", 8)]
