"""Pretrained Hugging Face models as encoders (``type: hf``) and as whole models (``model: {name: hf}``).

One encoder per modality, loaded by ``AutoModel.from_pretrained(path)`` (:mod:`mmdistill.pretrained`)::

    encoders:
      text:  {type: hf, path: bert-folder, pooling: cls, trainable: last_2}
      image: {type: hf, path: vit-folder, pooling: mean, trainable: none}

The model's main input reads the modality: token ids with their attention mask (BERT, DistilBERT, RoBERTa; the CLIP
text tower), ``pixel_values`` (ViT, DeiT, the CLIP vision tower), ``input_values`` (AST's (T, mel) filterbanks,
also given as a one-channel image (1, T, mel); wav2vec2's and HuBERT's waveforms). Its last hidden states (B, L, D)
become one vector per example:

* ``cls``     h_0, the first token's state (refused where the first token is no summary: wav2vec2, CLIP text)
* ``mean``    sum_t mask_t h_t / sum_t mask_t (the attention mask for text; every position otherwise)
* ``pooler``  the model's own ``pooler_output`` (BERT's tanh layer, CLIP's projected-before state, AST's mean of
              its two summary tokens); refused where the model has none (DistilBERT, wav2vec2)

A text example whose attention mask is all zero (the ``attention`` masking strategy removed the modality) gives the
zero vector whatever the pooling. ``trainable``: ``all``, ``none`` or ``last_N`` (the last N blocks of the model's
layer list and what follows them train; the embeddings and earlier blocks are frozen: no gradients, and held in
eval mode also after ``model.train()``).

A whole model whose towers read several modalities (CLIP: image and text) is
``model: {factory: "mmdistill.models.hf:hf_model", params: {path, inputs: {image: pixel_values, text: input_ids}}}``:
each modality goes to the model input it is mapped to, the per-tower embeddings (``image_embeds``, ``text_embeds``)
are concatenated and a linear head gives the logits.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ..batch import MASK_SUFFIX, ModalitySpec, validate_inputs
from ..errors import ConfigError
from ..pretrained import TOKENIZER_FILES, load_pretrained, transformers_module
from ..registry import ENCODERS

TEXT_INPUT = "input_ids"
NO_SUMMARY_TOKEN = ("clip_text_model", "siglip_text_model", "clap_text_model", "x_clip_text_model")
TOWERS = {"text": "text_model", "vision": "vision_model", "audio": "audio_model"}
EMBEDS = {"input_ids": "text_embeds", "pixel_values": "image_embeds", "input_features": "audio_embeds"}
Trainable = Field("all", pattern=r"^(all|none|last_[1-9][0-9]{0,3})$", description="all, none or last_N layers")


class HFParams(BaseModel):
    """Settings of the ``hf`` encoder (written beside ``type`` or under ``params``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="a folder written by save_pretrained, or a hub id")
    pooling: Literal["cls", "mean", "pooler"] = "mean"
    trainable: str = Trainable
    tower: Literal["auto", "text", "vision", "audio"] = Field(
        "auto",
        description="which tower of a multi-tower checkpoint (CLIP) reads the modality; auto: text for "
        "token ids, the other tower for floats",
    )


def _meta_device() -> bool:
    """Whether modules are being built on the meta device (a size count: no weights are read)."""
    return torch.empty(()).device.type == "meta"


def pretrained_model(path: str, key: str) -> nn.Module:
    """``AutoModel.from_pretrained(path)``; on the meta device the architecture only (``from_config``)."""
    if not _meta_device():
        return load_pretrained(path, key, "model")
    transformers = transformers_module()
    config = load_pretrained(path, key, "config")
    return transformers.AutoModel.from_config(config)


def pick_tower(model: nn.Module, tower: str, tokens: bool, key: str) -> nn.Module:
    """The tower of a multi-tower model that reads the modality (the model itself when it has one tower)."""
    present = {name: attr for name, attr in TOWERS.items() if isinstance(getattr(model, attr, None), nn.Module)}
    if not present:
        if tower != "auto":
            raise ConfigError(f"{key}.tower: {type(model).__name__} has no towers; leave tower out (auto)")
        return model
    if tower == "auto":
        tower = "text" if tokens else next((t for t in present if t != "text"), "text")
    if tower not in present:
        raise ConfigError(f"{key}.tower: {type(model).__name__} has no {tower} tower; its towers: {', '.join(present)}")
    return getattr(model, present[tower])


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: its longest ``ModuleList`` named ``...layer`` or ``...layers``."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and re.search(r"(^|\.)(layer|layers)$", name)
    ]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no list of layers (a ModuleList named layer or layers)")
    return max(found, key=lambda item: len(item[1]))


def freeze(model: nn.Module, trainable: str, key: str) -> list[str]:
    """Freeze per ``trainable`` (all, none, last_N); the paths of the modules whose parameters are all frozen."""
    params = list(model.named_parameters())
    if trainable == "all":
        return []
    first = len(params)
    if trainable.startswith("last_"):
        n = int(trainable.removeprefix("last_"))
        name, layers = layer_list(model)
        if n > len(layers):
            raise ConfigError(
                f"{key}.trainable: {trainable}, but {type(model).__name__} has {len(layers)} layers ({name}); "
                f"use all, none or last_1 ... last_{len(layers)}"
            )
        start = f"{name}.{len(layers) - n}."
        first = next(i for i, (p_name, _) in enumerate(params) if p_name.startswith(start))
    for i, (_, p) in enumerate(params):
        p.requires_grad_(i >= first)
    return _frozen_paths(model)


def _frozen_paths(module: nn.Module, prefix: str = "") -> list[str]:
    """The outermost modules whose parameters are all frozen (a module without parameters follows its parent)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [prefix]
    paths = []
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            paths += _frozen_paths(child, f"{prefix}.{name}" if prefix else name)
    return paths


def _has_summary_token(model: nn.Module, text: bool) -> bool:
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if text:
        return model_type not in NO_SUMMARY_TOKEN
    return any(("cls_token" in n or "class_embedding" in n) for n, _ in model.named_parameters())


def pooled(out: Any, pooling: str, mask: Tensor | None, key: str, who: str) -> Tensor:
    """One vector per example from a model output (see the module docstring); a masked-out text example -> 0."""
    if pooling == "pooler":
        h = getattr(out, "pooler_output", None)
        if h is None:
            raise ConfigError(f"{key}.pooling: {who} gives no pooler_output; use cls or mean")
    else:
        seq = out[0] if isinstance(out, tuple) else out.last_hidden_state
        if pooling == "cls":
            h = seq[:, 0]
        elif mask is not None and mask.shape == seq.shape[:2]:
            m = mask.to(seq.dtype).unsqueeze(-1)
            h = (seq * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            h = seq.mean(1)
    if mask is not None:
        h = h * (mask.sum(1) > 0).to(h.dtype).unsqueeze(-1)
    return h


@ENCODERS.register("hf")
class HFEncoder(nn.Module):
    """A pretrained Hugging Face model reading one modality, pooled to one vector per example."""

    Params = HFParams

    def __init__(self, shape: tuple[int, ...], cfg: Any, params: HFParams) -> None:
        super().__init__()
        key = "params"
        tokens = len(shape) == 1 and params.tower in ("auto", "text")
        self.model = pick_tower(pretrained_model(params.path, f"{key}.path"), params.tower, tokens, key)
        self.input_name = str(getattr(self.model, "main_input_name", TEXT_INPUT))
        self.text = self.input_name == TEXT_INPUT
        self.takes_mask = "attention_mask" in inspect.signature(self.model.forward).parameters
        self.pooling, self.key, self.shape = params.pooling, key, tuple(shape)
        if self.text:
            _check_tokenizer(params.path, f"{key}.path")
        if params.pooling == "cls" and not _has_summary_token(self.model, self.text):
            raise ConfigError(
                f"{key}.pooling: cls, but {type(self.model).__name__} has no summary token first; use mean or pooler"
            )
        self.all_frozen = params.trainable == "none"
        self.out_dim = int(getattr(self.model.config, "hidden_size", 0) or 0)
        if not _meta_device():
            self.out_dim = self._probe(shape)
        self.frozen_paths = freeze(self.model, params.trainable, key)
        self.train(self.training)

    def _probe(self, shape: tuple[int, ...]) -> int:
        """One forward pass on a zero example: the feature width, and a clear error when the input cannot fit."""
        dtype = torch.long if self.text else torch.float32
        example = torch.zeros((1, *shape), dtype=dtype)
        mask = torch.ones((1, *shape), dtype=torch.long) if self.text else None
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                feature = self._features(example, mask)
        except ConfigError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise ConfigError(
                f"{self.key}.path: {type(self.model).__name__} reads {self.input_name}; it cannot read examples of "
                f"shape {tuple(shape)} ({first})"
            ) from None
        finally:
            self.model.train(was)
        return int(feature.shape[-1])

    def train(self, mode: bool = True) -> HFEncoder:
        super().train(mode)
        for path in self.frozen_paths:
            self.model.get_submodule(path).eval()
        return self

    def _features(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.input_name == "input_values" and x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]  # a one-channel spectrogram image (B, 1, T, mel), as AV-MNIST stores it: AST's (B, T, mel)
        inputs = {self.input_name: x}
        text_mask = mask if self.text else None
        if text_mask is not None and self.takes_mask:
            inputs["attention_mask"] = text_mask
        with torch.no_grad() if self.all_frozen else nullcontext():
            out = self.model(**inputs)
        return pooled(out, self.pooling, text_mask, self.key, type(self.model).__name__)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._features(x, mask)

    @classmethod
    def check_fits(cls, spec: ModalitySpec, params: dict, key: str) -> None:
        """The modality's kind suits the model's input: token ids for a text model, floats otherwise."""
        wants_tokens = _reads_tokens(params, key)
        if wants_tokens is not None and wants_tokens != spec.tokens:
            kind = "token ids" if spec.tokens else f"floats of shape {tuple(spec.shape)}"
            need = "token ids (a tokenizer transform)" if wants_tokens else "float tensors (images or audio)"
            raise ConfigError(
                f"{key}.path: modality {spec.name!r} holds {kind}, but the model at this path reads {need}"
            )


def _check_tokenizer(path: str, key: str) -> None:
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{key}: folder {folder} holds a text model but no tokenizer ({', '.join(TOKENIZER_FILES)}); save the "
            "tokenizer it was trained with there (tokenizer.save_pretrained(folder))"
        )


def _reads_tokens(params: dict, key: str) -> bool | None:
    """Whether the model at ``params['path']`` reads token ids (None: not known before loading it)."""
    folder = Path(str(params.get("path", ""))).expanduser()
    if not (folder / "config.json").is_file():
        return None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}.path: {folder}/config.json cannot be read: {err}") from None
    tower = params.get("tower", "auto")
    if "text_config" in config and ("vision_config" in config or "audio_config" in config):
        return None if tower == "auto" else tower == "text"
    transformers = transformers_module()
    config_class = transformers.AutoConfig.for_model(config.get("model_type", ""))
    model_class = transformers.AutoModel._model_mapping.get(type(config_class), None)
    return None if model_class is None else model_class.main_input_name == TEXT_INPUT


class HFMultimodalModel(nn.Module):
    """A multi-tower Hugging Face model (CLIP) over several modalities: per-tower embeddings -> concat -> Linear."""

    def __init__(
        self, hf: nn.Module, inputs: dict[str, str], specs: Sequence[ModalitySpec], num_classes: int, key: str
    ) -> None:
        super().__init__()
        self.hf, self.inputs, self.key = hf, dict(inputs), key
        self.modalities = tuple(inputs)
        self.input_specs = list(specs)
        self.frozen_paths: list[str] = []
        with torch.no_grad():
            feats = self.features(_zero_batch(specs))
        self.out_dim = int(feats.shape[-1])
        self.head = nn.Linear(self.out_dim, num_classes)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        kwargs: dict[str, Tensor] = {}
        for m, name in self.inputs.items():
            kwargs[name] = batch[m]
            if name == TEXT_INPUT and m + MASK_SUFFIX in batch:
                kwargs["attention_mask"] = batch[m + MASK_SUFFIX]
        out = self.hf(**kwargs)
        parts = []
        for m, name in self.inputs.items():
            h = getattr(out, EMBEDS.get(name, ""), None)
            if h is None:
                raise ConfigError(
                    f"{self.key}.params.inputs.{m}: {type(self.hf).__name__} gives no per-tower embedding for "
                    f"{name}; use one encoder per modality (encoders: {{{m}: {{type: hf, path: ...}}}})"
                )
            mask = batch.get(m + MASK_SUFFIX) if name == TEXT_INPUT else None
            parts.append(h if mask is None else h * (mask.sum(1) > 0).to(h.dtype).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def train(self, mode: bool = True) -> HFMultimodalModel:
        super().train(mode)
        for path in self.frozen_paths:
            self.hf.get_submodule(path).eval()
        return self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        validate_inputs(batch, self.input_specs, who=type(self).__name__)
        return self.head(self.features(batch))


def _zero_batch(specs: Sequence[ModalitySpec]) -> dict[str, Tensor]:
    batch: dict[str, Tensor] = {}
    for s in specs:
        batch[s.name] = torch.zeros((1, *s.shape), dtype=torch.long if s.tokens else torch.float32)
        if s.tokens:
            batch[s.name + MASK_SUFFIX] = torch.ones((1, *s.shape), dtype=torch.long)
    return batch


def hf_model(
    path: str,
    inputs: dict[str, str],
    num_classes: int,
    specs: Sequence[ModalitySpec],
    trainable: str = "all",
) -> HFMultimodalModel:
    """The whole-model form: ``inputs`` maps each modality to an input of the model's ``forward``."""
    key = "params"  # errors name the factory's params; the model's key is put before them (models.custom)
    if trainable not in ("all", "none"):
        raise ConfigError(
            f"{key}.trainable: the whole-model form takes all or none, got {trainable!r:.40}; to train the "
            "last layers of one tower, give each modality its own encoder (type: hf, trainable: last_N)"
        )
    if not isinstance(inputs, dict) or not inputs:
        raise ConfigError(f"{key}.inputs: expected a mapping modality -> model input, e.g. {{image: pixel_values}}")
    hf = pretrained_model(path, f"{key}.path")
    takes = [p for p in inspect.signature(hf.forward).parameters if p not in ("self", "kwargs")]
    by_name = {s.name: s for s in specs}
    for m, name in inputs.items():
        if m not in by_name:
            raise ConfigError(f"{key}.inputs.{m}: the data have no modality {m!r}; they have {', '.join(by_name)}")
        if name not in takes:
            raise ConfigError(
                f"{key}.inputs.{m}: {type(hf).__name__} takes no input {name!r}; its inputs: {', '.join(takes)}"
            )
        if (name == TEXT_INPUT) != by_name[m].tokens:
            raise ConfigError(
                f"{key}.inputs.{m}: modality {m!r} holds {'token ids' if by_name[m].tokens else 'floats'}, "
                f"which {name!r} does not take"
            )
    model = HFMultimodalModel(hf, inputs, [by_name[m] for m in inputs], num_classes, "model")
    model.frozen_paths = freeze(hf, trainable, key)
    model.train(model.training)
    return model
