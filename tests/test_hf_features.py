"""Features from inside Hugging Face models: hooks on their module paths (tuple and ModelOutput outputs), the
nearest valid paths in a path error, and each feature method distilling from an HF layer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_tiny

from mmdistill.errors import ConfigError
from mmdistill.models import build_model
from mmdistill.models.hooks import FeatureHooks, find_module

TEXT_LAYER = "encoders.text.model.encoder.layer.1"
IMAGE_LAYER = "encoders.image.model.layers.1"  # ViT's blocks (transformers 5; encoder.layer.1 in 4.x)


class Memes(torch.utils.data.Dataset):
    """Image (3, 16, 16) + text ids (12,) with their mask; the class shows in both."""

    num_classes = 2

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        self.image = torch.rand(n, 3, 16, 16, generator=g) + 0.5 * self.labels.view(-1, 1, 1, 1)
        self.text = torch.randint(5, len(hf_tiny.VOCAB), (n, 12), generator=g)
        self.text[:, 1] = torch.where(self.labels == 1, 15, 16)  # "hate" / "love"
        self.mask = torch.ones(n, 12, dtype=torch.long)
        self.mask[::3, 9:] = 0
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image[i], "text": self.text[i], "text_mask": self.mask[i], "label": self.labels[i]}

    def fingerprint(self) -> str:
        return f"memes-{len(self)}-{self.seed}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_features")
    return {"bert": hf_tiny.bert(root / "bert"), "vit": hf_tiny.vit(root / "vit"), "clip": hf_tiny.clip(root / "clip")}


def teacher_config(folders) -> dict:
    return {
        "modalities": ["image", "text"],
        "encoders": {
            "image": {"type": "hf", "path": str(folders["vit"]), "pooling": "cls"},
            "text": {"type": "hf", "path": str(folders["bert"]), "pooling": "mean"},
        },
    }


def specs():
    from mmdistill.data.contracts.item_dataset import ItemDataset

    return ItemDataset(Memes(4, 0), "train").specs()


def batch(n: int = 4) -> dict:
    data = Memes(n, 1)
    return {"image": data.image, "text": data.text, "text_mask": data.mask}


def test_hooks_on_hf_paths_give_the_blocks_hidden_states(folders):
    model = build_model(teacher_config(folders), specs(), 2).eval()
    b = batch()
    with torch.no_grad(), FeatureHooks(model, [TEXT_LAYER, IMAGE_LAYER, "encoders.image.model"]) as feats:
        model(b)
        bert = model.encoders["text"].model(
            input_ids=b["text"], attention_mask=b["text_mask"], output_hidden_states=True
        )
        vit = model.encoders["image"].model(pixel_values=b["image"], output_hidden_states=True)
    torch.testing.assert_close(feats[TEXT_LAYER], bert.hidden_states[2])
    torch.testing.assert_close(feats[IMAGE_LAYER], vit.hidden_states[2])
    torch.testing.assert_close(feats["encoders.image.model"], vit.last_hidden_state)  # a ModelOutput's first tensor


def test_a_layer_returning_a_tuple_is_read_as_its_first_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[1]

    net, x = Net(), torch.ones(2, 3)
    with FeatureHooks(net, ["pair"]) as feats:
        net(x)
    assert torch.equal(feats["pair"], x * 2)


def test_a_bad_hf_path_names_the_nearest_valid_paths(folders):
    model = build_model(teacher_config(folders), specs(), 2)
    with pytest.raises(ConfigError) as err:
        find_module(model, "encoders.text.model.encoder.layer.9")
    message = str(err.value)
    assert "nearest: " in message and "encoders.text.model.encoder.layer.1" in message and "\n" not in message
    assert message.count(", ") < 10  # the nearest few, not every one of the model's layers
    clip = build_model(
        {
            "factory": "mmdistill.models.hf:hf_model",
            "params": {"path": str(folders["clip"]), "inputs": {"image": "pixel_values", "text": "input_ids"}},
        },
        specs(),
        2,
    )
    with pytest.raises(ConfigError, match=r"nearest: .*hf\.vision_model\.encoder\.layers\.0"):
        find_module(clip, "hf.vision_model.encoder.layers.3")
    with torch.no_grad(), FeatureHooks(clip, ["hf.vision_model.encoder.layers.0"]) as feats:
        clip(batch())
    assert feats["hf.vision_model.encoder.layers.0"].shape == (4, 5, 16)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("hint", {"student_layer": "encoders.image.body.0", "teacher_layer": IMAGE_LAYER}),
        ("at", {"student_layer": "encoders.image.body.0", "teacher_layer": IMAGE_LAYER}),
        ("rkd", {"student_layer": "encoders.text.embed", "teacher_layer": TEXT_LAYER}),
        ("pkt", {"student_layer": "encoders.text.embed", "teacher_layer": TEXT_LAYER}),
        ("sp", {"student_layer": "encoders.image.body.0", "teacher_layer": TEXT_LAYER}),
        ("crd", {"student_layer": "encoders.image.body.0", "teacher_layer": IMAGE_LAYER, "nce_k": 8, "feat_dim": 8}),
        ("mfh_general", {"teacher_layer": IMAGE_LAYER}),
    ],
)
def test_each_feature_method_distils_from_an_hf_layer(folders, tmp_path, method, params):
    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.engine.api import distill

    torch.manual_seed(0)
    teacher = build_model(teacher_config(folders), specs(), 2)
    student_cfg = {
        "modalities": ["image", "text"],
        "encoders": {
            "image": {"type": "cnn2d", "channels": [4], "out_dim": 8},
            "text": {"type": "tokens", "vocab_size": 32, "out_dim": 8},
        },
    }
    student = build_model(student_cfg, specs(), 2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = distill(
        student, teacher, out_dir=tmp_path / "run", method=method, method_params=params, quiet=True,
        train=Memes(24, 0), val=Memes(8, 1), test=Memes(8, 2),
        trainer=TrainerConfig(epochs=1, batch_size=8), cache=CacheConfig(dir=tmp_path / "cache"),
    )  # fmt: skip
    assert 0.0 <= result.test["accuracy"] <= 100.0
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
