"""An AST encoder reads a one-channel spectrogram image (B, 1, T, mel), the way AV-MNIST stores its audio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_tiny

from mmdistill.batch import ModalitySpec
from mmdistill.models import build_model


def test_an_ast_encoder_reads_a_one_channel_spectrogram_image_as_its_filterbank(tmp_path):
    folder = hf_tiny.ast(tmp_path / "ast", frames=32, mels=16)
    flat, image = ModalitySpec("audio", (32, 16)), ModalitySpec("audio", (1, 32, 16))
    model_cfg = {"modalities": ["audio"], "encoders": {"audio": {"type": "hf", "path": str(folder)}}}
    torch.manual_seed(0)
    on_flat = build_model(model_cfg, [flat], 3, "teacher.model").eval()
    torch.manual_seed(0)
    on_image = build_model(model_cfg, [image], 3, "teacher.model").eval()
    x = torch.randn(2, 32, 16)
    with torch.no_grad():
        assert torch.equal(on_image({"audio": x[:, None]}), on_flat({"audio": x}))
