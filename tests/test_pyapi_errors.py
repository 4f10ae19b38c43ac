"""From Python, a bad value given to any entry point is one of mmdistill's errors naming the key, never pydantic's
ValidationError (with its URL) or a raw TypeError/AttributeError from deep inside."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mmdistill.batch import ModalitySpec
from mmdistill.config import (
    CacheConfig,
    DataConfig,
    MaskingConfig,
    MethodConfig,
    OptimizerConfig,
    RunConfig,
    TaskConfig,
    TrainerConfig,
    load_config,
)
from mmdistill.data import build_splits, splits_from_arrays
from mmdistill.data.contracts.item_dataset import load_data
from mmdistill.errors import ConfigError, DataError, MMDistillError
from mmdistill.methods.kd import KDParams
from mmdistill.models import CustomModelConfig, EncoderConfig, ModelConfig, build_model

CONFIG_MODELS = [
    (lambda: TrainerConfig(epochs="x"), r"^trainer\.epochs: Input should be a valid integer \(got 'x'\)$"),
    (lambda: TrainerConfig(epochs=True), r"^trainer\.epochs: "),
    (lambda: TrainerConfig(optimizer={"lr": -1}), r"^trainer\.optimizer\.lr: Input should be greater than 0"),
    (lambda: TrainerConfig(epoch=3), r"^trainer\.epoch: unknown key; valid keys: epochs, "),
    (lambda: OptimizerConfig(lr=float("nan")), r"^trainer\.optimizer\.lr: "),
    (lambda: MaskingConfig(strategy=3), r"^masking\.strategy: Input should be a valid string"),
    (lambda: MaskingConfig(per_modality=[1]), r"^masking\.per_modality: "),
    (lambda: CacheConfig(enabled="yes"), r"^cache\.enabled: Input should be a valid boolean"),
    (lambda: CacheConfig(dir="x" * 300), r"^cache\.dir: path part"),
    (lambda: MethodConfig(params=3), r"^method\.params: "),
    (lambda: TaskConfig(name=None), r"^task\.name: "),
    (lambda: DataConfig(dataset="not a path"), r"^data\.dataset: String should match pattern"),
    (lambda: ModelConfig(modalities=[]), r"^model\.modalities: List should have at least 1 item"),
    (lambda: ModelConfig(modalities=["label"]), r"^model\.modalities: 'label' cannot name a modality"),
    (lambda: EncoderConfig(out_dim=0), r"^model\.encoder\.out_dim: Input should be greater than or equal to 1"),
    (lambda: CustomModelConfig(factory="os:nothing"), r"^model\.factory: module 'os' has no attribute 'nothing'"),
    (lambda: CustomModelConfig(), r"^model: give exactly one of factory"),
    (lambda: TrainerConfig.model_validate({"epochs": "x"}), r"^trainer\.epochs: "),
    (lambda: KDParams(temperature="4"), r"^method\.params\.temperature: "),
    (lambda: KDParams(temp=4), r"^method\.params\.temp: unknown key; valid keys: temperature, lam"),
    (lambda: RunConfig.model_validate({"student": {"model": {"modalities": "a"}}}), r"^student\.model\.modalities: "),
]


@pytest.mark.parametrize("make,message", CONFIG_MODELS)
def test_config_models_built_from_python_raise_config_errors_naming_the_key(make, message):
    with pytest.raises(ConfigError, match=message) as err:
        make()
    assert not isinstance(err.value, ValidationError) and "pydantic.dev" not in str(err.value)
    assert "\n" not in str(err.value)


def test_a_config_nested_in_a_run_config_names_the_full_path():
    with pytest.raises(ConfigError, match=r"trainer\.optimizer\.lr: Input should be greater than 0"):
        RunConfig.model_validate({"student": {"model": {"modalities": ["a"]}}, "trainer": {"optimizer": {"lr": 0}}})
    assert TrainerConfig(epochs=3, optimizer={"lr": 0.5}).optimizer.lr == 0.5


X = {"a": np.random.default_rng(0).normal(size=(30, 4)).astype("float32")}
Y = np.arange(30) % 3
SPECS = [ModalitySpec("a", (4,))]

ENTRY_POINTS = [
    (lambda: build_model("x", SPECS, 3), ConfigError, r"^model: expected a ModelConfig or CustomModelConfig"),
    (lambda: build_model({"modalities": []}, SPECS, 3), ConfigError, r"^model\.modalities: List should have"),
    (lambda: build_model(ModelConfig(modalities=["a"]), "ab", 3), ConfigError, r"^specs: expected a list of"),
    (lambda: build_model(ModelConfig(modalities=["a"]), SPECS, 0), ConfigError, r"^num_classes: expected an int"),
    (lambda: build_model(ModelConfig(modalities=["a"]), SPECS, "3"), ConfigError, r"^num_classes: .*'3' \(str\)"),
    (lambda: splits_from_arrays([1, 2], Y, 3, 0), ConfigError, r"^modalities: expected a dict"),
    (lambda: splits_from_arrays(X, "abc", 3, 0), DataError, r"^labels: expected a numeric array"),
    (lambda: splits_from_arrays(X, Y, "3", 0), ConfigError, r"^num_classes: expected an integer"),
    (lambda: splits_from_arrays(X, Y, 3, -1), ConfigError, r"^seed: expected an integer in \[0, 4294967295\]"),
    (lambda: splits_from_arrays(X, Y, 3, "x"), ConfigError, r"^seed: "),
    (lambda: splits_from_arrays(X, Y, 3, 0, fractions="abc"), ConfigError, r"^fractions: expected three shares"),
    (lambda: splits_from_arrays(X, Y, 3, 0, fractions=(-1, 1, 1)), ConfigError, r"^fractions: each share"),
    (
        lambda: splits_from_arrays({"a": np.array([object()] * 30)}, Y, 3, 0),
        DataError,
        r"^modalities\['a'\]: expected a numeric array",
    ),
    (lambda: build_splits("toy-two-modality", "x"), ConfigError, r"^data\.params: expected a dict"),
    (lambda: build_splits("toy-two-modality", {}, seed=-1), ConfigError, r"^data\.split_seed: expected an integer"),
    (lambda: load_data({"name": "mfeat"}), ConfigError, r"^data: expected a mmdistill\.config\.DataConfig"),
    (lambda: load_config(3), ConfigError, r"^config: expected the path of a YAML file"),
    (lambda: load_config(b"run.yaml"), ConfigError, r"^config: expected the path of a YAML file"),
    (lambda: load_config(None, [3]), ConfigError, r"^overrides: expected a list of 'key=value' strings"),
    (lambda: load_config(None, "trainer.epochs=3"), ConfigError, r"^overrides: expected a list"),
]


@pytest.mark.parametrize("call,error,message", ENTRY_POINTS)
def test_python_entry_points_refuse_bad_values_naming_the_argument(call, error, message):
    with pytest.raises(MMDistillError, match=message) as err:
        call()
    assert isinstance(err.value, error)
