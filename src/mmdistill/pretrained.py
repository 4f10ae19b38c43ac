"""Pretrained Hugging Face folders and hub ids, loaded by ``from_pretrained`` with one-line errors.

A ``path`` is either a local folder written by ``save_pretrained`` (``config.json`` and ``model.safetensors``,
plus the tokenizer or processor files the data need) or a hub id such as ``google/vit-base-patch16-224``. A hub id
is read from the local Hugging Face cache when it is there, else downloaded where the machine reaches the hub; on a
machine without a network it is one line saying how to download the folder elsewhere::

    huggingface-cli download google/vit-base-patch16-224 --local-dir vit-base     # on a networked machine

and then ``path: vit-base``. Weights are read from safetensors only: a folder holding only a pickled
``pytorch_model.bin`` is refused (mmdistill never unpickles files). Remote code (``trust_remote_code``) is never run.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
WHAT_FILES = {"tokenizer": TOKENIZER_FILES, "processor": PROCESSOR_FILES}
SAVE_HINT = {
    "model": "model.save_pretrained(folder)",
    "tokenizer": "tokenizer.save_pretrained(folder)",
    "processor": "processor.save_pretrained(folder) (the image processor or feature extractor)",
}


def transformers_module() -> ModuleType:
    """``transformers``, or one line saying what to install or remove (a torchvision built for another torch makes
    its import crash with ``operator torchvision::nms does not exist``)."""
    try:
        import transformers

        transformers.AutoModel  # noqa: B018  (the lazy import that fails with a mismatched torchvision)
    except ImportError as err:
        if "torchvision" in str(err):
            raise ConfigError(_torchvision_line(err)) from None
        raise ConfigError(
            "pretrained Hugging Face models need the transformers package: pip install 'mmdistill[hf]'"
        ) from None
    except RuntimeError as err:
        if "torchvision" not in str(err):
            raise
        raise ConfigError(_torchvision_line(err)) from None
    return transformers


def _torchvision_line(err: Exception) -> str:
    import torch

    return (
        f"the installed torchvision does not match torch {torch.__version__} ({str(err).splitlines()[0][:120]}); "
        "uninstall it (pip uninstall torchvision: mmdistill does not need it) or install the torchvision built "
        "for this torch"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers on its port (False at once under ``HF_HUB_OFFLINE=1``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def download_hint(hub_id: str, key: str) -> str:
    return (
        f"{key}: {hub_id!r} is no local folder and the Hugging Face hub cannot be reached from this machine; on a "
        f"machine with a network run `huggingface-cli download {hub_id} --local-dir DIR` (or "
        f"huggingface_hub.snapshot_download({hub_id!r}, local_dir='DIR')), copy DIR here and set {key} to it"
    )


def _in_hub_cache(hub_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(hub_id, filename)
    return isinstance(found, str)


def check_folder(folder: Path, key: str, what: str) -> None:
    """``folder`` holds what loading ``what`` (model, tokenizer, processor) reads, else a ConfigError naming ``key``."""
    hint = f"write it there with {SAVE_HINT[what]}"
    if what == "model":
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{key}: folder {folder} has no config.json; {hint}")
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
            if any(folder.glob("*.bin")):
                raise ConfigError(
                    f"{key}: folder {folder} holds only pickled *.bin weights, which mmdistill never loads; where "
                    "you trust the file, load the model and save it again with model.save_pretrained(folder) "
                    "(safetensors by default)"
                )
            raise ConfigError(f"{key}: folder {folder} has no weights (model.safetensors); {hint}")
        return
    if not any((folder / name).is_file() for name in WHAT_FILES[what]):
        listed = ", ".join(WHAT_FILES[what])
        raise ConfigError(f"{key}: folder {folder} has no {what} ({listed}); {hint}")


def source(path: Any, key: str, what: str = "model") -> tuple[str, bool]:
    """Where ``from_pretrained`` reads ``path`` from, and whether it may read the local cache only."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"{key}: expected a folder written by save_pretrained or a hub id, got {path!r:.80}")
    text = str(path)
    folder = Path(text).expanduser()
    if folder.is_dir():
        check_folder(folder, key, "model" if what == "config" else what)
        return str(folder), True
    if folder.exists():
        raise ConfigError(f"{key}: {text} is a file; expected a folder written by save_pretrained or a hub id")
    if not HUB_ID.match(text) or text.startswith(".") or os.sep in text.rstrip(os.sep).split("/", 1)[0]:
        raise ConfigError(f"{key}: no folder {text} (and it is no hub id such as 'google/vit-base-patch16-224')")
    probe = (
        "config.json"
        if what in ("model", "config")
        else PROCESSOR_FILES[0]
        if what == "processor"
        else "tokenizer_config.json"
    )
    if _in_hub_cache(text, probe):
        return text, True
    if not hub_reachable():
        raise ConfigError(download_hint(text, key))
    return text, False


def load_pretrained(path: Any, key: str, what: str = "model", **kwargs: Any) -> Any:
    """``from_pretrained(path)`` of ``AutoModel`` / ``AutoConfig`` / ``AutoTokenizer`` / the image processor or
    feature extractor (``what``: model, config, tokenizer, processor); any failure is one ConfigError naming ``key``."""
    where, local_only = source(path, key, what)
    transformers = transformers_module()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        if what == "model":
            return transformers.AutoModel.from_pretrained(
                where, local_files_only=local_only, use_safetensors=True, **kwargs
            )
        if what == "config":
            return transformers.AutoConfig.from_pretrained(where, local_files_only=local_only, **kwargs)
        if what == "tokenizer":
            return transformers.AutoTokenizer.from_pretrained(where, local_files_only=local_only, **kwargs)
        return _processor(transformers, where, local_only)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"{key}: loading the {what} from {path} failed: {first}") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _processor(transformers: ModuleType, where: str, local_only: bool) -> Any:
    """The folder's image processor (the Pillow/numpy one, no torchvision), else its feature extractor (audio)."""
    config = Path(where) / PROCESSOR_FILES[0]
    if config.is_file():
        import json

        saved = json.loads(config.read_text())
        if "feature_extractor_type" in saved and "image_processor_type" not in saved:
            return transformers.AutoFeatureExtractor.from_pretrained(where, local_files_only=local_only)
    return transformers.AutoImageProcessor.from_pretrained(where, local_files_only=local_only, use_fast=False)
