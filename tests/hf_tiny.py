"""Tiny random Hugging Face models, tokenizers and processors written with ``save_pretrained`` (tests only).

Each builder writes one folder and returns it; the tests load them back only through ``from_pretrained(path)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "red", "blue", "meme", "hate", "love", "is", "not", "funny"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
TEXT_LAYERS = 2


def _seeded(seed: int):
    torch.manual_seed(seed)


def save_tokenizer(folder: Path) -> None:
    """A WordPiece tokenizer over :data:`VOCAB` saved into ``folder`` (transformers 5 and 4 spell it differently)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    else:
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)


def bert(folder: Path, layers: int = TEXT_LAYERS, tokenizer: bool = True, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel

    _seeded(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    if tokenizer:
        save_tokenizer(folder)
    return folder


def distilbert(folder: Path, seed: int = 0) -> Path:
    from transformers import DistilBertConfig, DistilBertModel

    _seeded(seed)
    config = DistilBertConfig(
        vocab_size=len(VOCAB), dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64
    )
    DistilBertModel(config).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def vit(folder: Path, image_size: int = 16, seed: int = 0, processor: bool = True) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    _seeded(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    ViTModel(config).save_pretrained(folder)
    if processor:
        ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def clip(folder: Path, image_size: int = 16, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPModel

    _seeded(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(VOCAB),
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 64,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": 8,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def ast(folder: Path, frames: int = 32, mels: int = 16, seed: int = 0) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    _seeded(seed)
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=mels,
        max_length=frames,
        patch_size=16,
        frequency_stride=8,
        time_stride=8,
    )
    ASTModel(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=mels, max_length=frames).save_pretrained(folder)
    return folder


def wav2vec2(folder: Path, seed: int = 0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    _seeded(seed)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        num_feat_extract_layers=2,
    )
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder
