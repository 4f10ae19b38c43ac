"""A tokenizer or processor given as a per-split transform in YAML: every bad setting is named by its full config key
(``data.transforms.<split>.params.<name>``), from the Python config API and from the command line alike."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_tiny

from mmdistill.config import DataConfig
from mmdistill.data.contracts.item_dataset import load_data
from mmdistill.errors import ConfigError

TOKENIZER = "mmdistill.data.contracts.hf_transforms:HFTokenizer"
PROCESSOR = "mmdistill.data.contracts.hf_transforms:HFProcessor"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_keys")
    return {"bert": hf_tiny.bert(root / "bert"), "vit": hf_tiny.vit(root / "vit")}


def load(split: str, factory: str, **params):
    cfg = DataConfig(name="toy-two-modality", transforms={split: {"factory": factory, "params": params}})
    return load_data(cfg)


@pytest.mark.parametrize(
    ("split", "factory", "params", "message"),
    [
        ("train", TOKENIZER, {"path": "{tmp}/nowhere"}, r"^data\.transforms\.train\.params\.path: "),
        ("val", TOKENIZER, {"path": "{vit}"}, r"^data\.transforms\.val\.params\.path: .*tokenizer"),
        ("train", TOKENIZER, {"path": "{bert}", "max_length": 0}, r"^data\.transforms\.train\.params\.max_length: "),
        ("test", TOKENIZER, {"path": "{bert}", "keys": []}, r"^data\.transforms\.test\.params\.keys: "),
        ("train", PROCESSOR, {"path": "{bert}"}, r"^data\.transforms\.train\.params\.path: .*processor"),
        ("val", PROCESSOR, {"path": "{vit}", "keys": [""]}, r"^data\.transforms\.val\.params\.keys: "),
    ],
    ids=["no-folder", "no-tokenizer", "max-length", "no-keys", "no-processor", "empty-key"],
)
def test_a_bad_transform_setting_is_named_by_its_full_config_key(folders, tmp_path, split, factory, params, message):
    filled = {k: v.format(tmp=tmp_path, **folders) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(ConfigError, match=message):
        load(split, factory, **filled)


def test_the_python_constructor_names_the_argument(folders, tmp_path):
    from mmdistill.data.contracts.hf_transforms import HFTokenizer

    with pytest.raises(ConfigError, match=r"^max_length: "):
        HFTokenizer(str(folders["bert"]), max_length=0)
    with pytest.raises(ConfigError, match=r"^path: "):
        HFTokenizer(str(tmp_path / "nowhere"))
