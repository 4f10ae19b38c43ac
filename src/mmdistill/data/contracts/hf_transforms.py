"""A pretrained model's own preprocessing as item transforms: its tokenizer and its image processor or feature
extractor, loaded from the model's folder (or hub id) with ``from_pretrained`` (:mod:`mmdistill.pretrained`).

* :class:`HFTokenizer`  a text string -> token ids (int64, ``max_length``) and the attention mask ``<key>_mask``
  (1 = real token), padded to ``max_length`` so every item has the same shape;
* :class:`HFProcessor`  an image (a (C, H, W) float tensor in [0, 1] or an (H, W, C) uint8 array) -> the model's
  ``pixel_values``; a waveform (1-D floats) -> its ``input_values`` (AST's (T, mel) filterbank, wav2vec2's normalised
  waveform). Pillow and numpy only (the slow processors; no torchvision).

Both are deterministic (``random = False``). From YAML, per split::

    data:
      transforms:
        train: {factory: "mmdistill.data.contracts.hf_transforms:HFTokenizer", params: {path: bert, keys: [text]}}

A bad setting is a ConfigError that starts with the argument's name (``path: folder F has no tokenizer ...``);
from YAML, :func:`~mmdistill.data.contracts.item_dataset.load_data` names it by its full config key
(``data.transforms.train.params.path: ...``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...batch import MASK_SUFFIX
from ...errors import ConfigError, DataError
from ...pretrained import load_pretrained

MAX_TOKENS = 8192


def _keys(keys: Sequence[str] | str, what: str) -> tuple[str, ...]:
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"keys: {what} expected a non-empty list of modality names, got {keys!r:.80}")
    return keys


class HFTokenizer:
    """Text -> ``(max_length,)`` token ids and their attention mask, by the tokenizer saved in ``path``."""

    random = False

    def __init__(self, path: str, keys: Sequence[str] | str = "text", max_length: int = 32, key: str = "path") -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_TOKENS:
            raise ConfigError(f"max_length: expected an integer in [1, {MAX_TOKENS}], got {max_length!r:.40}")
        self.path, self.keys, self.max_length = str(path), _keys(keys, "HFTokenizer"), max_length
        self.tokenizer = load_pretrained(path, key, "tokenizer")

    def tokens(self, text: Any, key: str) -> tuple[Tensor, Tensor]:
        if not isinstance(text, str):
            raise DataError(f"HFTokenizer: modality {key!r} holds a {type(text).__name__}; expected a text string")
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.max_length)
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        return ids, torch.tensor(enc["attention_mask"], dtype=torch.long)

    def __call__(self, item: dict) -> dict:
        out = dict(item)
        for k in self.keys:
            if k not in item:
                raise DataError(f"HFTokenizer: item has no modality {k!r}; it has {', '.join(map(repr, item))}")
            out[k], out[k + MASK_SUFFIX] = self.tokens(item[k], k)
        return out

    def fingerprint(self) -> str:
        """Changes when the vocabulary or the settings change (part of a dataset's cache key)."""
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return hashlib.sha256(f"{vocab}|{self.max_length}|{self.keys}".encode()).hexdigest()[:16]


class HFProcessor:
    """An image or a waveform -> the tensor the model in ``path`` reads, by the processor saved there."""

    random = False

    def __init__(
        self, path: str, keys: Sequence[str] | str = "image", sampling_rate: int | None = None, key: str = "path"
    ) -> None:
        self.path, self.keys = str(path), _keys(keys, "HFProcessor")
        self.processor = load_pretrained(path, key, "processor")
        self.image = hasattr(self.processor, "image_mean") or "ImageProcessor" in type(self.processor).__name__
        self.sampling_rate = sampling_rate or getattr(self.processor, "sampling_rate", None)

    def processed(self, value: Any, key: str) -> Tensor:
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if self.image:
            if array.ndim != 3:
                raise DataError(f"HFProcessor: image {key!r} has shape {array.shape}; expected (C, H, W) or (H, W, C)")
            if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):  # (C, H, W): the processors read (H, W, C)
                array = array.transpose(1, 2, 0)
            if array.shape[-1] == 1:
                array = np.repeat(array, 3, axis=-1)
            scaled = array.dtype.kind == "f"  # floats in [0, 1]; integers are 0-255 pixels, rescaled by the processor
            pixels = self.processor(images=array, return_tensors="np", do_rescale=not scaled)["pixel_values"]
            return torch.from_numpy(np.ascontiguousarray(pixels[0])).float()
        if array.ndim != 1:
            raise DataError(f"HFProcessor: waveform {key!r} has shape {array.shape}; expected 1-D samples")
        values = self.processor(array.astype(np.float32), sampling_rate=self.sampling_rate, return_tensors="np")
        return torch.from_numpy(np.ascontiguousarray(values["input_values"][0])).float()

    def __call__(self, item: dict) -> dict:
        out = dict(item)
        for k in self.keys:
            if k not in item:
                raise DataError(f"HFProcessor: item has no modality {k!r}; it has {', '.join(map(repr, item))}")
            out[k] = self.processed(item[k], k)
        return out

    def fingerprint(self) -> str:
        settings = json.dumps(self.processor.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(f"{settings}|{self.keys}|{self.sampling_rate}".encode()).hexdigest()[:16]
