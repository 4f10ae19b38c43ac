"""Hateful Memes (Kiela et al., NeurIPS 2020) in its published JSONL layout: image + text, 2 classes.

    ROOT/train.jsonl                       one JSON object a line: {"id": 42953, "img": "img/42953.png",
    ROOT/dev_seen.jsonl  (or dev.jsonl)                               "label": 0, "text": "its caption"}
    ROOT/test_seen.jsonl (or test.jsonl)
    ROOT/img/42953.png ...

``img`` is relative to ROOT. The challenge's unlabelled test file (no ``label``) is refused: use ``test_seen.jsonl``.
Items: ``image`` (3, H, W) floats and ``text`` token ids (``max_length``) with ``text_mask``, label 0 (not hateful)
or 1. The text is tokenized by the tokenizer saved with the text model (``tokenizer``: its folder or hub id); the
image is resized to ``image_size`` x ``image_size`` in [0, 1], or prepared by the image model's processor
(``processor``: its folder). Both are deterministic, so a teacher's outputs on these items can be cached
(``fingerprint()`` covers the JSONL files, the tokenizer and the image settings).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ...batch import MASK_SUFFIX
from ...errors import DataError
from ..contracts.hf_transforms import HFProcessor, HFTokenizer
from .file_dataset import FileDataset, FileSplits, Item, member_path

SPLIT_FILES = {
    "train": ("train.jsonl",),
    "val": ("dev_seen.jsonl", "dev.jsonl"),
    "test": ("test_seen.jsonl", "test.jsonl"),
}
FIELDS = ("img", "label", "text")


def read_records(path: Path) -> list[dict]:
    """The JSONL file's records, each checked for ``img`` (a string), ``label`` (0 or 1) and ``text`` (a string)."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({err})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path} line {number}: not a JSON object ({err})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: expected a JSON object with {', '.join(FIELDS)}")
        if "label" not in record:
            raise DataError(
                f"{path} line {number}: no 'label' (the challenge's unlabelled test file?); use a labelled file "
                "such as test_seen.jsonl"
            )
        if not isinstance(record.get("img"), str) or not isinstance(record.get("text"), str):
            raise DataError(f"{path} line {number}: 'img' and 'text' must be strings")
        if record["label"] not in (0, 1) or isinstance(record["label"], bool):
            raise DataError(f"{path} line {number}: 'label' must be 0 or 1, got {record['label']!r:.40}")
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records (one JSON object a line)")
    return records


def _read_rgb(path: Path, size: int | None) -> np.ndarray:
    """The image as (H, W, 3) uint8, resized to ``size`` x ``size`` when given (Pillow, bilinear)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if size is not None:
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image, or truncated ({type(err).__name__}: {err})") from None


class HatefulMemes(FileDataset):
    """One split of Hateful Memes: the records of one JSONL file, their images and tokenized texts."""

    modalities = ("image", "text")
    num_classes = 2

    def __init__(
        self,
        root: Path,
        file: Path,
        tokenizer: HFTokenizer,
        processor: HFProcessor | None = None,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        self.root, self.file, self.records = root, file, read_records(file)
        self.tokenizer, self.processor, self.image_size = tokenizer, processor, image_size
        self.images = [member_path(root, r["img"], f"{file}") for r in self.records]
        self.labels = torch.tensor([r["label"] for r in self.records], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> Item:
        record = self.records[index]
        if self.processor is not None:
            image = self.processor.processed(_read_rgb(self.images[index], None), "image")
        else:
            pixels = _read_rgb(self.images[index], self.image_size)
            image = torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255.0
        ids, mask = self.tokenizer.tokens(record["text"], "text")
        return {"image": image, "text": ids, "text" + MASK_SUFFIX: mask, "label": self.labels[index]}

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.file.read_bytes())
        digest.update(self.tokenizer.fingerprint().encode())
        digest.update((self.processor.fingerprint() if self.processor else f"resize {self.image_size}").encode())
        return digest.hexdigest()[:32]


def split_file(root: Path, split: str) -> Path:
    for name in SPLIT_FILES[split]:
        if (root / name).is_file():
            return root / name
    raise DataError(f"root: {root} has no {' or '.join(SPLIT_FILES[split])} (the {split} split)")


def hateful_memes_splits(
    root: str | Path,
    tokenizer: str,
    processor: str | None = None,
    image_size: int = 64,
    max_length: int = 32,
) -> FileSplits:
    """The train / dev / test splits under ``root``; ``tokenizer`` and ``processor`` name pretrained folders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"root: {root} is not a folder (expected train.jsonl, dev_seen.jsonl, test_seen.jsonl, img/)")
    files = {split: split_file(root, split) for split in SPLIT_FILES}
    text = HFTokenizer(tokenizer, keys="text", max_length=max_length, key="tokenizer")
    image = HFProcessor(processor, keys="image", key="processor") if processor else None
    return FileSplits(*(HatefulMemes(root, files[s], text, image, image_size) for s in SPLIT_FILES))
