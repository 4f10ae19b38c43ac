"""MSD on real model code: a vision-language classifier with a Hugging Face BertModel text encoder.

The BertModel is built from a tiny config with random weights (no download); text is removed
through its attention mask (masking strategy ``attention``), images by zeros.
"""

import pytest
import torch
from torch import nn

from mmdistill.config import CacheConfig, MaskingConfig, TrainerConfig
from mmdistill.data import splits_from_arrays
from mmdistill.engine.api import distill
from mmdistill.masking import Masker

transformers = pytest.importorskip("transformers")


class VisionLanguageClassifier(nn.Module):
    modalities = ("image", "text")

    def __init__(self, hidden: int, num_classes: int = 3) -> None:
        super().__init__()
        cfg = transformers.BertConfig(
            vocab_size=40,
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=16,
        )
        self.text = transformers.BertModel(cfg)
        self.image = nn.Sequential(nn.Linear(8, hidden), nn.ReLU())
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, batch):
        text = self.text(input_ids=batch["text"], attention_mask=batch["text_mask"]).last_hidden_state[:, 0]
        return self.head(torch.cat([self.image(batch["image"]), text], dim=1))


def vl_splits(n=240):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    image = torch.randn(n, 8, generator=g) + y[:, None].float()
    text = torch.randint(3, 40, (n, 6), generator=g)
    text[:, 1] = y  # the label word
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[:, 5] = 0  # padding
    return splits_from_arrays({"image": image, "text": text, "text_mask": mask}, y, 3, seed=0, name="vl")


def test_attention_masking_removes_text_from_a_bert_encoder():
    splits = vl_splits()
    model = VisionLanguageClassifier(16).eval()
    masker = Masker(splits.train.specs(), "zeros", per_modality={"text": "attention"})
    batch = splits.train.__getitems__(range(8))
    removed = masker.remove(batch, ["text"])
    assert torch.equal(removed["text"], batch["text"]) and removed["text_mask"].sum() == 0
    with torch.no_grad():
        full, no_text = model(batch), model(removed)
    assert torch.isfinite(no_text).all() and not torch.allclose(full, no_text)


def test_msd_trains_a_bert_vision_language_student(tmp_path):
    torch.manual_seed(0)
    splits = vl_splits()
    teacher, student = VisionLanguageClassifier(32), VisionLanguageClassifier(16)
    trainer = TrainerConfig(epochs=2, batch_size=32)
    distill(teacher, None, splits, tmp_path / "t", "supervised", trainer=trainer)
    masking = MaskingConfig(strategy="zeros", per_modality={"text": "attention"})
    r = distill(
        student,
        teacher,
        splits,
        tmp_path / "s",
        "msd",
        {"weighting": "instance"},
        masking=masking,
        trainer=trainer,
        cache=CacheConfig(dir=tmp_path / "cache"),
    )
    header = (tmp_path / "s" / "metrics.csv").read_text().splitlines()[0]
    assert "train/kd/image" in header and "train/kd/text" in header
    rows = (tmp_path / "s" / "metrics.csv").read_text().splitlines()[1:]
    assert all("nan" not in row for row in rows)
    assert 0.0 <= r.test["accuracy"] <= 100.0  # percent
