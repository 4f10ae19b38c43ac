"""A pretrained BERT + ViT teacher (tiny, random, saved with save_pretrained) from YAML ``type: hf``, distilled with
MSD into a small student from the command line on Hugging Face Memes' layout (the text removed by its attention
mask), then ``evaluate --missing --noise``, ``analyze modalities`` and ``report`` on the folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_tiny
from test_hf_text import write_hateful_memes

from mmdistill.cli import main

CONFIG = """\
seed: 0
data: {{name: hateful-memes, params: {{root: {memes}, tokenizer: {bert}, processor: {vit}, max_length: 12}}}}
teacher:
  model:
    modalities: [image, text]
    encoders:
      image: {{type: hf, path: {vit}, pooling: cls, trainable: last_1}}
      text: {{type: hf, path: {bert}, pooling: mean}}
student:
  model:
    modalities: [image, text]
    encoders:
      image: {{type: cnn2d, channels: [4], out_dim: 8}}
      text: {{type: tokens, vocab_size: 32, out_dim: 8}}
method: {{name: {method}, params: {params}}}
masking: {{strategy: attention}}
trainer: {{epochs: 1, batch_size: 8, num_threads: 1}}
cache: {{dir: {cache}}}
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_cli")
    return {
        "bert": hf_tiny.bert(root / "bert"),
        "vit": hf_tiny.vit(root / "vit"),
        "memes": write_hateful_memes(root / "memes", sizes=(("train", 24), ("dev_seen", 8), ("test_seen", 8))),
    }


def config(folders, tmp_path, method: str, params: str) -> Path:
    path = tmp_path / f"{method}.yaml"
    path.write_text(CONFIG.format(**folders, cache=tmp_path / "cache", method=method, params=params))
    return path


def test_an_hf_teacher_from_yaml_through_train_evaluate_analyze_and_report(folders, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["train", str(config(folders, tmp_path, "msd", "{weighting: uniform}")), "--out", str(run), "--quiet"])
        == 0
    )
    saved = (run / "config.yaml").read_text()
    assert "type: hf" in saved and str(folders["bert"]) in saved
    teacher = json.loads((run / "seed_0" / "teacher" / "result.json").read_text())
    assert 0 <= teacher["test"]["accuracy"] <= 100
    capsys.readouterr()
    assert main(["evaluate", str(run), "--missing", "--noise", "--levels", "0", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert not result["missing_models"] and "seed_0/teacher" in result["metrics"]
    missing = (run / "robustness" / "missing.csv").read_text()
    assert missing.count("seed_0/teacher") == 3  # {image}, {text}, {image, text}
    assert main(["analyze", "modalities", str(run)]) == 0
    analysis = (run / "analysis" / "modalities.md").read_text()
    assert "| text | " in analysis and "| image | " in analysis
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").is_file() and (run / "report.html").is_file()


def test_a_feature_method_on_an_hf_layer_from_yaml(folders, tmp_path):
    params = "{student_layer: encoders.text.embed, teacher_layer: encoders.text.model.encoder.layer.1}"
    run = tmp_path / "hint"
    assert (
        main(["train", str(config(folders, tmp_path, "hint", params)), "--out", str(run), "--quiet", "--no-baseline"])
        == 0
    )
    header = (run / "seed_0" / "student" / "metrics.csv").read_text().splitlines()[0]
    assert "train/hint" in header.split(",")


def test_msd_views_remove_the_text_of_the_hf_teacher_by_its_attention_mask(folders):
    from mmdistill.config import DataConfig
    from mmdistill.data.contracts.item_dataset import load_data
    from mmdistill.masking import Masker, split_variants
    from mmdistill.models import build_model

    params = {"root": str(folders["memes"]), "tokenizer": str(folders["bert"]), "max_length": 12, "image_size": 16}
    splits = load_data(DataConfig(name="hateful-memes", params=params))
    specs = splits.train.specs()
    teacher = build_model(
        {"modalities": ["image", "text"], "encoders": {"text": {"type": "hf", "path": str(folders["bert"])}}},
        specs, 2,
    ).eval()  # fmt: skip
    batch = splits.train.__getitems__(range(8))
    stacked = Masker(specs, "attention").variants(batch, ["image", "text"])
    with torch.no_grad():
        full, image_only, text_only = split_variants(teacher(stacked), 3)
        other_text = dict(batch, text=torch.randint(5, len(hf_tiny.VOCAB), batch["text"].shape))
        image_only_other = teacher(Masker(specs, "attention").keep_only(other_text, "image"))
    torch.testing.assert_close(image_only, image_only_other)  # the text is gone from the image-only view
    assert not torch.allclose(full, image_only) and not torch.allclose(full, text_only)
