"""Text as a modality (a pretrained tokenizer as a transform, the attention masking strategy removing text), the
Hateful Memes JSONL layout, and a pretrained model's processor as a transform."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_tiny

from mmdistill.config import DataConfig
from mmdistill.data.contracts.hf_transforms import HFProcessor, HFTokenizer
from mmdistill.data.contracts.item_dataset import ItemDataset, load_data
from mmdistill.errors import ConfigError, DataError
from mmdistill.masking import Masker
from mmdistill.models import build_model

SENTENCES = {
    0: ["love the cat", "a blue dog sat", "the mat is funny"],
    1: ["hate the dog", "hate a red meme", "not funny hate"],
}


def write_hateful_memes(root: Path, sizes=(("train", 16), ("dev_seen", 8), ("test_seen", 8)), seed: int = 0) -> Path:
    """The published layout: ``<split>.jsonl`` (id, img, label, text) and ``img/<id>.png``; hateful memes are
    reddish with hateful words, the others bluish."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    next_id = 100
    for split, n in sizes:
        lines = []
        for i in range(n):
            label = i % 2
            pixels = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
            pixels[..., 0 if label else 2] += 150
            Image.fromarray(pixels).save(root / "img" / f"{next_id}.png")
            text = SENTENCES[label][i % 3]
            lines.append(json.dumps({"id": next_id, "img": f"img/{next_id}.png", "label": label, "text": text}))
            next_id += 1
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_text")
    return {
        "bert": hf_tiny.bert(root / "bert"),
        "vit": hf_tiny.vit(root / "vit"),
        "ast": hf_tiny.ast(root / "ast"),
        "wav2vec2": hf_tiny.wav2vec2(root / "wav2vec2"),
        "memes": write_hateful_memes(root / "memes"),
    }


def memes(folders, **params):
    base = {"root": str(folders["memes"]), "tokenizer": str(folders["bert"]), "max_length": 12}
    return load_data(DataConfig(name="hateful-memes", params={**base, **params}))


def test_hateful_memes_items_hold_the_tokenizers_ids_its_mask_and_the_image(folders):
    from transformers import AutoTokenizer

    splits = memes(folders, image_size=16)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 8, 8) and splits.num_classes == 2
    record = json.loads((folders["memes"] / "train.jsonl").read_text().splitlines()[1])
    item = splits.train[1]
    reference = AutoTokenizer.from_pretrained(folders["bert"])(record["text"], padding="max_length", max_length=12)
    assert item["text"].tolist() == reference["input_ids"] and item["text_mask"].tolist() == reference["attention_mask"]
    assert item["image"].shape == (3, 16, 16) and item["label"].item() == record["label"] == 1
    specs = {s.name: s for s in splits.train.specs()}
    assert specs["text"].tokens and specs["text"].shape == (12,) and not specs["image"].tokens
    assert isinstance(splits.train, ItemDataset) and splits.train.cacheable  # deterministic: the teacher cache applies


def test_the_fingerprint_follows_the_records_and_the_tokenizer_settings(folders, tmp_path):
    first = memes(folders).train.fingerprint()
    assert memes(folders).train.fingerprint() == first
    assert memes(folders, max_length=10).train.fingerprint() != first
    copy = write_hateful_memes(tmp_path / "memes")
    lines = (copy / "train.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace('"label": 0', '"label": 1')
    (copy / "train.jsonl").write_text("\n".join(lines) + "\n")
    other = load_data(
        DataConfig(
            name="hateful-memes", params={"root": str(copy), "tokenizer": str(folders["bert"]), "max_length": 12}
        )
    )
    assert other.train.fingerprint() != first


def test_the_attention_strategy_removes_text_and_the_model_no_longer_reads_it(folders):
    splits = memes(folders, image_size=16)
    batch = splits.train.__getitems__(range(6))
    masker = Masker(splits.train.specs(), "attention")
    removed = masker.remove(batch, ["text"])
    assert torch.equal(removed["text_mask"], torch.zeros_like(batch["text_mask"]))
    assert torch.equal(removed["image"], batch["image"]) and torch.equal(removed["text"], batch["text"])
    model = build_model(
        {
            "modalities": ["image", "text"],
            "encoders": {
                "text": {"type": "hf", "path": str(folders["bert"])},
                "image": {"type": "hf", "path": str(folders["vit"])},
            },
        },
        splits.train.specs(),
        2,
        "teacher.model",
    ).eval()
    other_words = dict(removed, text=torch.randint(5, len(hf_tiny.VOCAB), removed["text"].shape))
    with torch.no_grad():
        assert torch.equal(model.encoders["text"](removed["text"], removed["text_mask"]), torch.zeros(6, 16))
        torch.testing.assert_close(model(removed), model(other_words))
        assert not torch.allclose(model(batch), model(removed))


def test_bad_hateful_memes_input_is_one_line_naming_the_key(folders, tmp_path):
    no_tokenizer = hf_tiny.bert(tmp_path / "bare", tokenizer=False)
    with pytest.raises(ConfigError, match=r"^data\.params\.tokenizer: folder .*bare has no tokenizer"):
        memes(folders, tokenizer=str(no_tokenizer))
    unlabelled = write_hateful_memes(tmp_path / "unlabelled")
    (unlabelled / "test_seen.jsonl").unlink()
    (unlabelled / "test.jsonl").write_text(json.dumps({"id": 1, "img": "img/100.png", "text": "the cat"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl line 1: no 'label' .*test_seen\.jsonl"):
        memes(folders, root=str(unlabelled))
    (unlabelled / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"^data\.params\.root: .* has no test_seen\.jsonl or test\.jsonl"):
        memes(folders, root=str(unlabelled))
    with pytest.raises(ConfigError, match=r"data\.params\.tokenizer: required"):
        load_data(DataConfig(name="hateful-memes", params={"root": str(folders["memes"])}))


def test_a_tokenizer_transform_on_a_users_text_dataset(folders):
    class Captions(torch.utils.data.Dataset):
        num_classes = 2

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"text": SENTENCES[i % 2][i % 3], "label": torch.tensor(i % 2)}

    split = ItemDataset(Captions(), "train", transform=HFTokenizer(str(folders["bert"]), max_length=8))
    batch = split.__getitems__(range(4))
    assert batch["text"].shape == batch["text_mask"].shape == (4, 8) and batch["text"].dtype == torch.long
    assert not split.random and split.specs()[0].tokens
    with pytest.raises(DataError, match="HFTokenizer: modality 'text' holds a Tensor; expected a text string"):
        HFTokenizer(str(folders["bert"]))({"text": torch.zeros(3), "label": torch.tensor(0)})


def test_processors_turn_raw_images_and_waveforms_into_the_models_inputs(folders):
    from transformers import AutoFeatureExtractor

    from mmdistill.batch import ModalitySpec

    image = torch.rand(3, 20, 24)
    pixels = HFProcessor(str(folders["vit"]))({"image": image})["image"]
    assert pixels.shape == (3, 16, 16)
    uint8 = HFProcessor(str(folders["vit"]))({"image": (image * 255).round().byte().permute(1, 2, 0).numpy()})["image"]
    torch.testing.assert_close(pixels, uint8, atol=0.02, rtol=0)  # the same picture as floats or 0-255 pixels
    wave = np.sin(np.linspace(0, 400, 8000)).astype(np.float32)
    fbank = HFProcessor(str(folders["ast"]), keys="audio")({"audio": torch.from_numpy(wave)})["audio"]
    expected = AutoFeatureExtractor.from_pretrained(folders["ast"])(wave, sampling_rate=16000, return_tensors="np")
    torch.testing.assert_close(fbank, torch.from_numpy(expected["input_values"][0]))
    normalised = HFProcessor(str(folders["wav2vec2"]), keys="audio")({"audio": wave})["audio"]
    assert (
        normalised.shape == (8000,) and abs(float(normalised.mean())) < 1e-3 and abs(float(normalised.std()) - 1) < 1e-2
    )
    specs = [ModalitySpec("image", tuple(pixels.shape)), ModalitySpec("audio", tuple(fbank.shape))]
    model = build_model(
        {
            "modalities": ["image", "audio"],
            "encoders": {
                "image": {"type": "hf", "path": str(folders["vit"])},
                "audio": {"type": "hf", "path": str(folders["ast"])},
            },
        },
        specs,
        2,
    )
    assert model({"image": pixels[None], "audio": fbank[None]}).shape == (1, 2)
    with pytest.raises(ConfigError, match=r"has no processor \(preprocessor_config.json"):
        HFProcessor(str(folders["bert"]))
