"""Config files: strict YAML, strict bounded types, machine limits, bounded messages."""

from __future__ import annotations

import re
import time

import pytest

from mmdistill import strict_yaml
from mmdistill.config import RunConfig, dump_config, load_config, usable_cpus, visible_gpus
from mmdistill.errors import ConfigError


def _fails(path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path, overrides)
    return str(info.value)


# -- defect 7: strict YAML -----------------------------------------------------------------------


def test_duplicate_key_in_a_nested_mapping_is_named_with_its_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("student: {model: {modalities: [b]}}\ntrainer:\n  epochs: 3\n  batch_size: 8\n  epochs: 5\n")
    msg = _fails(p, [], r"line 5: duplicate key 'epochs' \(first at line 3\)")
    assert str(p) in msg


def test_a_second_top_level_section_is_refused(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("trainer: {epochs: 40}\nstudent: {model: {modalities: [b]}}\ntrainer: {batch_size: 8}\n")
    _fails(p, [], r"line 3: duplicate key 'trainer' \(first at line 1\)")


def test_merge_keys_are_not_duplicates(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text(
        "student: {model: {modalities: [b]}}\ntrainer: &t {epochs: 2, batch_size: 8}\n"
        "teacher: {model: {modalities: [a, b]}, trainer: {<<: *t, epochs: 3}}\n"
    )
    cfg = load_config(p)
    assert cfg.teacher.trainer.epochs == 3 and cfg.teacher.trainer.batch_size == 8


@pytest.mark.parametrize("value", ["010", "007", "-01", "0_1"])
def test_leading_zero_integers_are_refused_not_read_as_octal(tiny_config, value):
    _fails(tiny_config(), [f"trainer.epochs={value}"], r"trainer\.epochs.*leading zero")


def test_leading_zero_in_a_file_names_the_line(tmp_path):
    p = tmp_path / "octal.yaml"
    p.write_text("student: {model: {modalities: [b]}}\ntrainer:\n  epochs: 010\n")
    _fails(p, [], r"line 3: '010' has a leading zero")


def test_yaml_12_scalars(tiny_config):
    cfg = load_config(tiny_config(), ["trainer.optimizer.lr=1e-3", "trainer.epochs=10", "data.params.views=no"])
    assert cfg.trainer.optimizer.lr == 0.001 and cfg.trainer.epochs == 10
    assert cfg.data.params["views"] == "no"  # a string, not YAML 1.1's False
    assert strict_yaml.load("a: [1:30, 0x1f, 2024-01-01, on]") == {"a": ["1:30", "0x1f", "2024-01-01", "on"]}


@pytest.mark.parametrize(
    "key",
    [
        "trainer.epochs",
        "trainer.batch_size",
        "seed",
        "data.split_seed",
        "trainer.optimizer.lr",
        "trainer.early_stopping.patience",
        "student.model.encoder.out_dim",
        "student.model.encoder.dropout",
        "trainer.grad_clip",
    ],
)
@pytest.mark.parametrize("value", ["true", "false", "'3'"])
def test_no_bool_or_string_where_a_number_is_meant(tiny_config, key, value):
    _fails(tiny_config(), [f"{key}={value}"], re.escape(key) + r": Input should be a valid (integer|number)")


def test_cache_enabled_takes_a_boolean_only(tiny_config):
    _fails(tiny_config(), ["cache.enabled=1"], r"cache\.enabled: Input should be a valid boolean")


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.epochs=10000000", "trainer.epochs"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.optimizer.lr=0", "trainer.optimizer.lr"),
        ("trainer.optimizer.lr=1e300", "trainer.optimizer.lr"),
        ("trainer.optimizer.lr=.inf", "trainer.optimizer.lr"),
        ("trainer.optimizer.lr=.nan", "trainer.optimizer.lr"),
        ("trainer.optimizer.weight_decay=-1", "trainer.optimizer.weight_decay"),
        ("trainer.optimizer.momentum=1", "trainer.optimizer.momentum"),
        ("trainer.scheduler.gamma=2", "trainer.scheduler.gamma"),
        ("trainer.scheduler.step_size=0", "trainer.scheduler.step_size"),
        ("trainer.grad_clip=0", "trainer.grad_clip"),
        ("trainer.grad_clip=.nan", "trainer.grad_clip"),
        ("trainer.early_stopping.min_delta=.nan", "trainer.early_stopping.min_delta"),
        ("trainer.early_stopping.min_delta=-0.1", "trainer.early_stopping.min_delta"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience"),
        ("trainer.ddp_timeout_s=1e300", "trainer.ddp_timeout_s"),
        ("trainer.num_threads=0", "trainer.num_threads"),
        ("trainer.num_nodes=0", "trainer.num_nodes"),
        ("seed=-1", "seed"),
        ("seed=18446744073709551616", "seed"),
        ("data.split_seed=-1", "data.split_seed"),
        ("student.model.dropout=1", "student.model.dropout"),
        ("student.model.encoder.dropout=-0.5", "student.model.encoder.dropout"),
        ("student.model.encoder.out_dim=0", "student.model.encoder.out_dim"),
        ("student.model.encoder.hidden=[0]", "student.model.encoder.hidden.0"),
        ("student.model.encoder.kernel_size=0", "student.model.encoder.kernel_size"),
        ("student.model.modalities=[]", "student.model.modalities"),
    ],
)
def test_every_number_is_bounded_to_its_meaningful_range(tiny_config, override, key):
    _fails(tiny_config(), [override], re.escape(key) + ":")


def test_min_delta_of_one_or_more_cannot_be_met_by_accuracy(tiny_config):
    _fails(tiny_config(), ["trainer.early_stopping.min_delta=1.5"], r"trainer: .*min_delta 1\.5 >= 1")
    assert load_config(tiny_config(), ["trainer.early_stopping.min_delta=1.5", "trainer.monitor=loss"])


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"lam": True}, r"method\.params\.lam: Input should be a valid number"),
        ({"temperature": 1e-30}, r"method\.params\.temperature: Input should be greater than or equal to 0\.05"),
        ({"temperature": 1e300}, r"method\.params\.temperature: Input should be less than or equal to 100"),
        ({"temperature": float("nan")}, r"method\.params\.temperature: Input should be a finite number"),
        ({"lam": 1.5}, r"method\.params\.lam"),
    ],
)
def test_kd_params_are_strict_and_bounded(toy_splits, params, pattern):
    from mmdistill.engine.api import build_method
    from mmdistill.masking import Masker

    with pytest.raises(ConfigError, match=pattern):
        build_method("kd", params, Masker(toy_splits.train.specs()))


@pytest.mark.parametrize(
    "method, params, key",
    [
        ("msd", {"instance_temperature": 0}, "instance_temperature"),
        ("msd", {"heldout_fraction": 0.95}, "heldout_fraction"),
        ("msd", {"inner_lr": float("inf")}, "inner_lr"),
        ("msd", {"weight_hidden": True}, "weight_hidden"),
        ("hint", {"student_layer": "head", "teacher_layer": "head", "beta": 1e300}, "beta"),
        ("hint", {"student_layer": "", "teacher_layer": "head"}, "student_layer"),
    ],
)
def test_msd_and_hint_params_are_strict_and_bounded(toy_splits, method, params, key):
    from mmdistill.engine.api import build_method
    from mmdistill.masking import Masker

    with pytest.raises(ConfigError, match=rf"method\.params\.{key}:"):
        build_method(method, params, Masker(toy_splits.train.specs()))


@pytest.mark.parametrize(
    "params, key",
    [
        ({"n": True}, "n"),
        ({"n": "40"}, "n"),
        ({"n": 0}, "n"),
        ({"noise_a": float("nan")}, "noise_a"),
        ({"num_classes": 1}, "num_classes"),
        ({"data_seed": -1}, "data_seed"),
    ],
)
def test_dataset_params_are_strict_and_bounded(params, key):
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=rf"data\.params\.{key}:"):
        build_splits("toy-two-modality", params)


def test_split_fractions_are_shares(tmp_path):
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=r"data\.params\.fractions\.2: Input should be greater than 0"):
        build_splits("mfeat", {"fractions": [0.7, 0.4, -0.1]})
    with pytest.raises(ConfigError, match=r"data\.params\.fractions\.0: Input should be a valid number"):
        build_splits("mfeat", {"fractions": [True, 0.5, 0.5]})


@pytest.mark.parametrize("name", ["index", "label", "b_mask"])
def test_reserved_batch_keys_cannot_name_a_modality(tiny_config, name):
    _fails(
        tiny_config(),
        [f"student.model.modalities=[{name}]"],
        rf"student\.model\.modalities: .*{name!r} cannot name a modality",
    )


def test_dump_and_load_give_back_the_same_values(tiny_config):
    cfg = load_config(tiny_config(), ["data.params.views=['1e3', '010', 'yes', 'null']", "trainer.optimizer.lr=1e-05"])
    again = RunConfig.model_validate(strict_yaml.load(dump_config(cfg)))
    assert again == cfg and again.data.params["views"] == ["1e3", "010", "yes", "null"]


# -- defect 6: machine limits, bounded messages -------------------------------------------------


def test_devices_beyond_the_cpus_are_refused(tiny_config):
    _fails(
        tiny_config(),
        [f"trainer.devices={usable_cpus() + 1}"],
        rf"trainer\.devices: {usable_cpus() + 1} processes on CPU",
    )
    _fails(tiny_config(), ["trainer.devices=1000"], r"trainer\.devices")


def test_teacher_trainer_is_checked_too(tiny_config):
    _fails(tiny_config(), ["teacher.trainer.devices=1000"], r"teacher\.trainer\.devices")


def test_threads_beyond_four_per_cpu_are_refused(tiny_config):
    _fails(tiny_config(), ["trainer.num_threads=100000"], r"trainer\.num_threads")
    _fails(tiny_config(), [f"trainer.num_threads={4 * usable_cpus() + 1}"], r"trainer\.num_threads: .* use at most")


@pytest.mark.skipif(visible_gpus() > 0, reason="a GPU is visible")
@pytest.mark.parametrize("acc", ["gpu", "cuda"])
def test_gpu_without_a_gpu_is_refused(tiny_config, acc):
    _fails(tiny_config(), [f"trainer.accelerator={acc}"], rf"trainer\.accelerator: '{acc}' needs a GPU")


def test_ddp_spawn_is_not_offered(tiny_config):
    _fails(tiny_config(), ["trainer.strategy=ddp_spawn"], r"trainer\.strategy: Input should be 'auto' or 'ddp'")


def test_several_nodes_need_a_launcher(tiny_config, monkeypatch):
    for var in ("MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    _fails(tiny_config(), ["trainer.num_nodes=2"], r"trainer\.num_nodes: 2 nodes need a multi-node launcher")


def test_batch_size_must_split_over_the_processes(tiny_config):
    if usable_cpus() < 2:
        pytest.skip("needs 2 CPUs")
    _fails(tiny_config(), ["trainer.devices=2", "trainer.batch_size=7"], r"trainer\.batch_size: 7 must be divisible")


def test_quoted_values_are_cut_short(tiny_config):
    msg = _fails(tiny_config(), ["trainer.epochs=" + "x" * 100_000], r"trainer\.epochs")
    assert len(msg) < 400 and "..." in msg
    msg = _fails(tiny_config(), ["trainer.epochs=[" + ", ".join(["abcdefgh"] * 20_000) + "]"], r"trainer\.epochs")
    assert len(msg) < 400


def _bomb(levels: int) -> str:
    lines = ["student: {model: {modalities: [b]}}", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append(f"trainer: {{epochs: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb(10))  # 9**10 = 3.5e9 strings once expanded
    start = time.perf_counter()
    msg = _fails(p, [], r"expands to more than 100000 nodes")
    assert time.perf_counter() - start < 5 and len(msg) < 400


def test_a_small_alias_expansion_in_a_wrongly_typed_field_gives_a_short_message(tmp_path):
    p = tmp_path / "smallbomb.yaml"
    p.write_text(_bomb(4))  # 9**4 = 6561 strings: allowed by the loader, refused by the schema
    msg = _fails(p, [], r"trainer\.epochs: Input should be a valid integer")
    assert len(msg) < 1000  # the value quoted is cut to 80 characters


# -- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"\x00\x01\x02\x89PNG\x00\xff", r"holds NUL bytes, so it is not a text file"),
        (b"student: {model: {modalities: [b]}}\n\xff\xfe trainer", r"is not UTF-8 text \(byte 0xff at offset 36\)"),
        (
            "student: {model: {modalities: [b]}}\n".encode("utf-16"),
            r"is UTF-16 \(or UTF-32\) encoded; save it as UTF-8",
        ),
        (b"", r"is empty; expected a YAML mapping"),
        (b"# only a comment\n", r"is empty; expected a YAML mapping"),
        (b"- student\n- trainer\n", r"expected a mapping at the top level .*got a list"),
        (b"just a string\n", r"expected a mapping at the top level .*got a str"),
    ],
)
def test_config_files_that_are_not_yaml_mappings(tmp_path, content, pattern):
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    msg = _fails(p, [], pattern)
    assert str(p) in msg


def test_a_folder_given_as_config_is_named_as_a_folder(tmp_path):
    _fails(tmp_path, [], r"is a folder; expected a YAML file")


def test_utf8_with_bom_is_read(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes("student: {model: {modalities: [b]}}\n".encode("utf-8-sig"))
    assert load_config(p).student.model.modalities == ["b"]


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"\x00\x01binary", "not a text file"),
        ("student: {model: {modalities: [b]}}\n".encode("utf-16"), "UTF-16"),
        (
            b"trainer: {epochs: 2}\ntrainer: {epochs: 3}\nstudent: {model: {modalities: [b]}}\n",
            "duplicate key 'trainer'",
        ),
        (None, "is a folder; expected a YAML file"),
    ],
)
def test_cli_bad_config_files_exit_2_with_one_line_and_no_folder(tmp_path, capsys, content, pattern):
    from mmdistill.cli import main

    p = tmp_path / "bad.yaml"
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    out = tmp_path / "out"
    assert main(["train", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert pattern in err and "does not exist" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("mmdistill train: error: config file")
    assert not out.exists()


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("cache.dir=" + "x" * 300, r"cache\.dir: path part 'x+\.\.\.' is 300 bytes long; the OS allows 255"),
        ("teacher.checkpoint=" + "/a" * 3000, r"teacher\.checkpoint: path is 6000 bytes long"),
    ],
)
def test_paths_the_os_cannot_open_are_refused_by_key(tiny_config, override, pattern):
    # found by the CLI fuzz: cache.dir of 3,000 characters ended in "OSError: File name too long"
    _fails(tiny_config(), [override], pattern)


def test_unknown_registry_names_name_the_key_and_are_cut_short(tiny_config):
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=r"^data\.name: unknown dataset 'x{76}\.\.\.; known: ") as info:
        build_splits("x" * 3000)
    from mmdistill.registry import DATASETS

    assert len(str(info.value)) < 120 + len(", ".join(DATASETS.names()))  # the name cut to 80, the known list whole


def test_a_huge_shared_value_from_python_is_quoted_without_rendering_it():
    from mmdistill.config import validate

    bomb = ["lol"] * 9
    for _ in range(12):  # 9**13 strings if rendered in full
        bomb = [bomb] * 9
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"trainer\.epochs: Input should be a valid integer") as info:
        validate(RunConfig, {"student": {"model": {"modalities": ["b"]}}, "trainer": {"epochs": bomb}})
    assert time.perf_counter() - start < 5 and len(str(info.value)) < 300


@pytest.mark.parametrize(
    "name, params, pattern",
    [
        ("toy-two-modality", {"n": 1}, r"data\.params\.n: 1 examples for 4 classes leave a split without examples"),
        ("mfeat", {"fractions": [0.998, 0.001, 0.001]}, r"data\.params\.fractions: .* leaves the val split empty"),
    ],
)
def test_too_few_examples_for_the_split_name_the_parameter(name, params, pattern):
    # found by the CLI fuzz: data.params.n=1 gave "toy-two-modality/val: the split is empty", naming no key
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=pattern):
        build_splits(name, params)


def test_long_modality_and_layer_names_are_cut_short(tiny_config, toy_splits):
    from mmdistill.engine.protocol import preflight

    cfg = load_config(tiny_config(), [f"student.model.modalities=[{'m' * 5000}]"])
    with pytest.raises(ConfigError, match=r"student\.model\.modalities: dataset has no modality 'm+\.\.\.") as info:
        preflight(cfg, toy_splits)
    assert len(str(info.value)) < 300


def test_precision_64_true_is_not_offered(tiny_config):
    # found by the CLI fuzz: 64-true trained in float64 but evaluated float32 inputs:
    # "mat1 and mat2 must have the same dtype"
    _fails(
        tiny_config(), ["trainer.precision=64-true"], r"trainer\.precision: Input should be '32-true', 'bf16-mixed' or"
    )


@pytest.mark.skipif(visible_gpus() > 0, reason="a GPU is visible")
def test_fp16_on_cpu_is_refused_not_silently_replaced_by_bf16(tiny_config):
    _fails(tiny_config(), ["trainer.precision=16-mixed"], r"trainer\.precision: '16-mixed' \(fp16 AMP\) needs a GPU")


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"n_train": 10**9}, r"data\.params\.n_train: Input should be less than or equal to 1000000"),
        ({"hidden": True}, r"data\.params\.hidden: expected a number, got True"),
        ({"dim_a": 0}, r"data\.params\.dim_a: must be a positive integer"),
    ],
)
def test_venn_params_are_bounded_and_named_as_config_keys(params, pattern):
    from mmdistill.data import build_splits

    with pytest.raises(ConfigError, match=pattern):
        build_splits("venn", params)
