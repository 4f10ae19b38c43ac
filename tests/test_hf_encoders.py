"""The ``hf`` encoder and the whole-model ``hf`` form: tiny random Hugging Face models saved with save_pretrained
into temporary folders and loaded back only through ``from_pretrained(path)``."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_tiny

from mmdistill.batch import ModalitySpec
from mmdistill.errors import ConfigError
from mmdistill.models import build_model

TEXT = ModalitySpec("text", (12,), tokens=True)
IMAGE = ModalitySpec("image", (3, 16, 16))
AUDIO = ModalitySpec("audio", (32, 16))
WAVE = ModalitySpec("wave", (4000,))
SPECS = [TEXT, IMAGE, AUDIO, WAVE]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        name: getattr(hf_tiny, name)(root / name) for name in ("bert", "distilbert", "vit", "clip", "ast", "wav2vec2")
    }


def encoder_model(modality: str, **encoder) -> torch.nn.Module:
    return build_model(
        {"modalities": [modality], "encoders": {modality: {"type": "hf", **encoder}}}, SPECS, 3, "teacher.model"
    )


def text_batch(n: int = 2) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, len(hf_tiny.VOCAB), (n, 12))
    mask = torch.ones(n, 12, dtype=torch.long)
    mask[:, 8:] = 0
    return {"text": ids, "text_mask": mask}


def test_each_family_gives_one_vector_per_example(folders):
    from transformers import AutoModel

    cases = [
        ("text", "bert", {"text": torch.randint(5, 20, (2, 12)), "text_mask": torch.ones(2, 12, dtype=torch.long)}),
        ("text", "distilbert", text_batch()),
        ("image", "vit", {"image": torch.randn(2, 3, 16, 16)}),
        ("image", "clip", {"image": torch.randn(2, 3, 16, 16)}),
        ("audio", "ast", {"audio": torch.randn(2, 32, 16)}),
        ("wave", "wav2vec2", {"wave": torch.randn(2, 4000)}),
    ]
    for modality, name, batch in cases:
        model = encoder_model(modality, path=str(folders[name]), pooling="mean").eval()
        encoder = model.encoders[modality]
        feats = encoder(batch[modality], batch.get(f"{modality}_mask"))
        assert feats.shape == (2, encoder.out_dim) == (2, 16), name
        assert model(batch).shape == (2, 3)
    # cls pooling is the first token's last hidden state of the same weights
    model = encoder_model("image", path=str(folders["vit"]), pooling="cls").eval()
    x = torch.randn(2, 3, 16, 16)
    reference = AutoModel.from_pretrained(folders["vit"]).eval()(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(model.encoders["image"](x), reference)


def test_mean_pooling_reads_only_the_tokens_the_mask_keeps(folders):
    encoder = encoder_model("text", path=str(folders["bert"]), pooling="mean").eval().encoders["text"]
    batch = text_batch()
    changed = batch["text"].clone()
    changed[:, 8:] = 7  # padding positions only
    torch.testing.assert_close(encoder(batch["text"], batch["text_mask"]), encoder(changed, batch["text_mask"]))
    seq = encoder.model(input_ids=batch["text"], attention_mask=batch["text_mask"]).last_hidden_state
    torch.testing.assert_close(encoder(batch["text"], batch["text_mask"]), seq[:, :8].mean(1))


def test_a_text_example_with_its_whole_mask_removed_gives_the_zero_vector(folders):
    for pooling in ("cls", "mean", "pooler"):
        encoder = encoder_model("text", path=str(folders["bert"]), pooling=pooling).eval().encoders["text"]
        batch = text_batch()
        batch["text_mask"][0] = 0
        feats = encoder(batch["text"], batch["text_mask"])
        assert torch.equal(feats[0], torch.zeros(16)) and feats[1].abs().sum() > 0, pooling


def test_trainable_last_n_freezes_the_embeddings_and_earlier_layers_held_in_eval_mode(folders):
    model = encoder_model("text", path=str(folders["bert"]), pooling="cls", trainable="last_1")
    bert = model.encoders["text"].model
    model.train()
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())
    assert not bert.embeddings.training and not bert.encoder.layer[0].training and bert.encoder.layer[1].training
    batch = text_batch()
    model(batch).sum().backward()
    assert bert.embeddings.word_embeddings.weight.grad is None
    assert bert.encoder.layer[1].output.dense.weight.grad is not None


def test_trainable_none_runs_without_gradients_and_in_eval_mode_after_train(folders):
    model = encoder_model("text", path=str(folders["bert"]), pooling="mean", trainable="none").train()
    encoder, batch = model.encoders["text"], text_batch()
    assert not any(p.requires_grad for p in encoder.parameters())
    first, second = encoder(batch["text"], batch["text_mask"]), encoder(batch["text"], batch["text_mask"])
    assert torch.equal(first, second) and not first.requires_grad  # dropout off: the frozen model is in eval mode


def test_clip_towers_and_the_whole_model_form(folders):
    towers = build_model(
        {
            "modalities": ["image", "text"],
            "encoders": {
                m: {"type": "hf", "path": str(folders["clip"]), "pooling": "pooler"} for m in ("image", "text")
            },
        },
        SPECS,
        3,
        "teacher.model",
    )
    assert (
        type(towers.encoders["image"].model).__name__ == "CLIPVisionTransformer"
        or "Vision" in type(towers.encoders["image"].model).__name__
    )
    assert "Text" in type(towers.encoders["text"].model).__name__
    whole = build_model(
        {
            "factory": "mmdistill.models.hf:hf_model",
            "params": {"path": str(folders["clip"]), "inputs": {"image": "pixel_values", "text": "input_ids"}},
        },
        SPECS,
        3,
        "teacher.model",
    ).eval()
    batch = {"image": torch.randn(2, 3, 16, 16), **text_batch()}
    assert whole(batch).shape == (2, 3)
    out = whole.hf(pixel_values=batch["image"], input_ids=batch["text"], attention_mask=batch["text_mask"])
    torch.testing.assert_close(whole.features(batch), torch.cat([out.image_embeds, out.text_embeds], -1))
    assert "hf.vision_model.encoder.layers.0" in dict(whole.named_modules())


def test_the_flat_yaml_form_is_the_params_form_and_round_trips(folders):
    from mmdistill.models import EncoderConfig

    flat = EncoderConfig.model_validate({"type": "hf", "path": str(folders["bert"]), "pooling": "cls"})
    nested = EncoderConfig.model_validate({"type": "hf", "params": {"path": str(folders["bert"]), "pooling": "cls"}})
    assert flat == nested and flat.params["trainable"] == "all"
    assert EncoderConfig.model_validate(flat.model_dump(mode="json")) == flat


def test_bad_settings_are_one_line_naming_the_key(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders["bert"], no_weights)
    (no_weights / "model.safetensors").unlink()
    pickled = tmp_path / "pickled"
    shutil.copytree(no_weights, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    no_tokenizer = hf_tiny.bert(tmp_path / "no_tokenizer", tokenizer=False)
    key = "teacher.model.encoders"
    cases = [
        (
            "text",
            {"path": "bert-base-uncased"},
            f"{key}.text.path: 'bert-base-uncased' is no local folder",
            "huggingface-cli download bert-base-uncased --local-dir",
        ),
        (
            "text",
            {"path": str(no_config)},
            f"{key}.text.path: folder {no_config} has no config.json",
            "save_pretrained",
        ),
        ("text", {"path": str(no_weights)}, f"{key}.text.path: folder {no_weights} has no weights", "save_pretrained"),
        ("text", {"path": str(pickled)}, f"{key}.text.path: folder {pickled} holds only pickled", "never loads"),
        (
            "text",
            {"path": str(no_tokenizer)},
            f"{key}.text.path: folder {no_tokenizer} holds a text model but no tokenizer",
            "tokenizer.save_pretrained",
        ),
        ("text", {"path": str(folders["vit"])}, f"{key}.text.path: modality 'text' holds token ids", "float tensors"),
        ("image", {"path": str(folders["bert"])}, f"{key}.image.path: modality 'image' holds floats", "token ids"),
        (
            "audio",
            {"path": str(folders["vit"])},
            f"{key}.audio.path: ViTModel reads pixel_values; it cannot read examples of shape (32, 16)",
            "",
        ),
        (
            "text",
            {"path": str(folders["distilbert"]), "pooling": "pooler"},
            f"{key}.text.pooling: DistilBertModel gives no pooler_output",
            "use cls or mean",
        ),
        (
            "wave",
            {"path": str(folders["wav2vec2"]), "pooling": "cls"},
            f"{key}.wave.pooling: cls, but Wav2Vec2Model has no summary token",
            "use mean",
        ),
        (
            "text",
            {"path": str(folders["bert"]), "trainable": "last_99"},
            f"{key}.text.trainable: last_99, but BertModel has 2 layers (encoder.layer)",
            "last_1 ... last_2",
        ),
    ]
    for modality, settings, start, hint in cases:
        with pytest.raises(ConfigError) as err:
            encoder_model(modality, **settings)
        message = str(err.value)
        assert message.startswith(start) and hint in message and "\n" not in message, message
    with pytest.raises(
        ConfigError, match=r"^teacher\.model\.params\.inputs\.text: CLIPModel takes no input .input_values."
    ):
        build_model(
            {
                "factory": "mmdistill.models.hf:hf_model",
                "params": {"path": str(folders["clip"]), "inputs": {"text": "input_values"}},
            },
            SPECS,
            3,
            "teacher.model",
        )


def test_a_hub_id_is_refused_at_once_without_a_network(monkeypatch):
    import mmdistill.pretrained as pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(pretrained, "_in_hub_cache", lambda hub_id, filename: False)
    with pytest.raises(
        ConfigError, match=r"^x.path: 'google/vit-base-patch16-224' is no local folder .*snapshot_download"
    ):
        pretrained.load_pretrained("google/vit-base-patch16-224", "x.path")


def test_the_model_size_check_builds_hf_encoders_on_the_meta_device_from_the_config(folders):
    with torch.device("meta"):
        model = encoder_model("text", path=str(folders["bert"]))
    real = encoder_model("text", path=str(folders["bert"]))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in real.parameters())


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_the_timm_encoder_without_timm_says_what_to_install():
    with pytest.raises(ConfigError, match=r"^teacher\.model\.encoders\.image\.name: encoder type timm needs the timm"):
        build_model(
            {"modalities": ["image"], "encoders": {"image": {"type": "timm", "name": "resnet18"}}},
            SPECS,
            3,
            "teacher.model",
        )


@pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed (it needs a torchvision built for this torch)",
)
def test_the_timm_encoder_gives_pooled_features_and_freezes():
    model = build_model(
        {"modalities": ["image"], "encoders": {"image": {"type": "timm", "name": "resnet10t", "trainable": "none"}}},
        SPECS, 3, "teacher.model",
    ).train()  # fmt: skip
    encoder = model.encoders["image"]
    feats = encoder(torch.randn(2, 3, 16, 16))
    assert feats.shape == (2, encoder.out_dim) and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_a_missing_transformers_or_a_mismatched_torchvision_is_one_line(monkeypatch):
    import types

    import mmdistill.pretrained as pretrained

    class Broken(types.ModuleType):
        def __getattr__(self, name):
            raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setitem(sys.modules, "transformers", Broken("transformers"))
    with pytest.raises(ConfigError, match=r"^the installed torchvision does not match torch .*pip uninstall"):
        pretrained.transformers_module()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"need the transformers package: pip install 'mmdistill\[hf\]'"):
        pretrained.transformers_module()
