import pytest

from mmdistill.config import load_config
from mmdistill.engine.api import build_method
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker


def test_overrides_apply_and_resolve(tiny_config):
    cfg = load_config(
        tiny_config(), ["trainer.epochs=7", "method.params.temperature=1.5", "trainer.optimizer.name=sgd"]
    )
    assert cfg.trainer.epochs == 7 and cfg.method.params["temperature"] == 1.5 and cfg.trainer.optimizer.name == "sgd"


def test_unknown_key_names_it_and_lists_valid(tiny_config):
    with pytest.raises(ConfigError, match=r"trainer\.epoch: unknown key; valid keys: epochs, batch_size"):
        load_config(tiny_config(), ["trainer.epoch=3"])


def test_wrong_type_names_the_key(tiny_config):
    with pytest.raises(ConfigError, match=r"trainer\.batch_size: .*'many'"):
        load_config(tiny_config(), ["trainer.batch_size=many"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_missing_teacher_checkpoint_file(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        load_config(tiny_config(), [f"teacher.checkpoint={tmp_path / 'missing.safetensors'}"])


def test_unknown_method_param_lists_valid(toy_splits):
    masker = Masker(toy_splits.train.specs())
    with pytest.raises(ConfigError, match=r"method\.params\.temp: unknown key; valid keys: temperature, lam"):
        build_method("kd", {"temp": 2}, masker)


def test_unknown_method_lists_known(toy_splits):
    with pytest.raises(
        ConfigError, match="unknown method .vid.; known: at, c2kd, crd, dist, dkd, .*, hint, kd, .*, supervised"
    ):
        build_method("vid", {}, Masker(toy_splits.train.specs()))


def test_unknown_dataset_param(tiny_config):
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=r"data\.params\.size: unknown parameter.*n, num_classes"):
        build_splits("toy-two-modality", {"size": 3})


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("student: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
