"""A user's own encoder, masking strategy, method and models, from a module outside the package, used from YAML.

The module (``own_plugins.py``) is copied into tmp_path as ``my_plugins`` and put on PYTHONPATH; the CLI runs
in a subprocess, so nothing registers it but the config's ``imports`` (or the ``factory`` import path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import cli, cli_env

from mmdistill.engine.system.checkpoint import load_tensors

PLUGINS = Path(__file__).resolve().parent / "own_plugins.py"

DATA = "data: {name: toy-two-modality, params: {n: 100, dim_a: 6, dim_b: 6}}"
TRAINER = "trainer: {epochs: 2, batch_size: 20, num_threads: 1}"


@pytest.fixture
def user_pkg(tmp_path):
    """(folder with my_plugins.py, environment with it on PYTHONPATH and a usage log)."""
    pkg = tmp_path / "user"
    pkg.mkdir()
    shutil.copy(PLUGINS, pkg / "my_plugins.py")
    env = cli_env()
    env["PYTHONPATH"] = f"{pkg}{os.pathsep}{env['PYTHONPATH']}"
    env["OWN_PLUGINS_LOG"] = str(tmp_path / "used.log")
    return pkg, env


def mmdistill(env, *args, ok=True, timeout=120):
    proc = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def used(tmp_path) -> list[str]:
    log = tmp_path / "used.log"
    return sorted(set(log.read_text().split("\n")) - {""}) if log.exists() else []


def test_registered_encoder_masker_and_method_work_from_yaml(tmp_path, user_pkg):
    _, env = user_pkg
    config = tmp_path / "plugins.yaml"
    config.write_text(f"""\
imports: [my_plugins]
{DATA}
teacher: {{model: {{modalities: [a, b], encoder: {{hidden: [8], out_dim: 8}}}}}}
student: {{model: {{modalities: [b], encoder: {{type: scaled_linear, out_dim: 8, params: {{scale: 2.0}}}}}}}}
method: {{name: kd_and_masked_ce}}
masking: {{strategy: minus_one}}
{TRAINER}
cache: {{dir: {tmp_path / "cache"}}}
""")
    mmdistill(env, "train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline")
    assert used(tmp_path) == ["encoder scale=2.0", "masker", "method"]
    weights = load_tensors(tmp_path / "run" / "seed_0" / "student" / "student.safetensors")[0]
    assert "encoders.b.scaled_linear.weight" in weights
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "imports:\n- my_plugins" in saved and "scale: 2.0" in saved
    header = (tmp_path / "run" / "seed_0" / "student" / "metrics.csv").read_text().splitlines()[0]
    assert "masked_ce" in header


OWN_MODELS = f"""\
imports: [my_plugins]
seed: 0
{DATA}
teacher: {{model: {{factory: "my_plugins:build_teacher", params: {{hidden: 12}}}}}}
student: {{model: {{name: one_tower, params: {{hidden: 6}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
{TRAINER}
"""


def test_own_teacher_and_student_through_every_command(tmp_path, user_pkg):
    """User classes from YAML through train --seeds 3, a killed run resumed, evaluate, analyze, report."""
    _, env = user_pkg
    config = tmp_path / "own.yaml"
    config.write_text(OWN_MODELS + f"cache: {{dir: {tmp_path / 'cache'}}}\n")
    run = tmp_path / "run"
    kill_when = run / "seed_1" / "student" / "checkpoints" / "last.safetensors"
    killed = mmdistill(
        dict(env, OWN_PLUGINS_KILL_WHEN=str(kill_when)),
        "train",
        str(config),
        "--seeds",
        "3",
        "--out",
        str(run),
        "--quiet",
        ok=False,
    )
    assert killed.returncode == -9 and kill_when.exists() and not (run / "metrics.json").exists()
    finished = run / "seed_0" / "student" / "student.safetensors"
    before = finished.stat().st_mtime_ns

    mmdistill(env, "train", str(config), "--seeds", "3", "--out", str(run), "--quiet", "--resume")
    assert finished.stat().st_mtime_ns == before, "--resume retrained a finished part"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1, 2] and set(metrics["summary"]) >= {
        "teacher.accuracy",
        "student.accuracy",
        "nokd.accuracy",
    }
    teacher = load_tensors(run / "seed_2" / "teacher" / "student.safetensors")[0]
    assert teacher["towers.a.weight"].shape == (12, 6)  # the user's class, with the YAML's params

    out = mmdistill(env, "evaluate", str(run), "--missing", "--noise", "--levels", "0", "1", "--json")
    result = json.loads(out.stdout)
    assert len(result["metrics"]) == 9 and not result["missing_models"]
    assert (run / "robustness" / "missing.csv").read_text().count("seed_0/teacher") == 3  # {a}, {b}, {a, b}
    assert (run / "robustness" / "noise.csv").is_file()
    mmdistill(env, "analyze", "modalities", str(run))
    analysis = (run / "analysis" / "modalities.md").read_text()
    assert "| a | " in analysis and "| b | " in analysis and "| student | full |" in analysis
    mmdistill(env, "report", str(run))
    assert "Paired difference student - nokd" in (run / "report.md").read_text() and (run / "report.html").is_file()


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """my_plugins importable in this process; the registries and sys.modules restored afterwards."""
    import sys

    from mmdistill.registry import ENCODERS, MASKERS, METHODS, MODELS

    pkg = tmp_path / "inproc"
    pkg.mkdir()
    shutil.copy(PLUGINS, pkg / "my_plugins.py")
    monkeypatch.syspath_prepend(str(pkg))
    registries = (ENCODERS, MASKERS, METHODS, MODELS)
    saved = {r: (r.names(), dict(r._entries))[1] for r in registries}  # built-ins loaded first
    config = tmp_path / "own.yaml"
    config.write_text(OWN_MODELS + "cache: {enabled: false}\n")
    yield config
    for registry, entries in saved.items():
        registry._entries = entries
    sys.modules.pop("my_plugins", None)


def preflight_of(config, overrides):
    from mmdistill.config import load_config
    from mmdistill.data import build_splits
    from mmdistill.engine.protocol import preflight

    cfg = load_config(config, overrides)
    data = build_splits(cfg.data.name, cfg.data.params, seed=cfg.data.split_seed)
    preflight(cfg, data)
    return cfg, data


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["teacher.model.factory=nope_pkg.models:build"],
            (
                r"^invalid config: teacher\.model\.factory: cannot import module 'nope_pkg\.models' "
                r"\(No module named 'nope_pkg'\)"
            ),
        ),
        (
            ["teacher.model.factory=my_plugins:build_nothing"],
            r"teacher\.model\.factory: module 'my_plugins' has no attribute 'build_nothing'",
        ),
        (
            ["teacher.model.factory=my_plugins:NOT_CALLABLE"],
            r"teacher\.model\.factory: .*NOT_CALLABLE.* is a int, not a",
        ),
        (
            ["teacher.model.factory=my_plugins.build_teacher"],
            r"teacher\.model\.factory: expected 'package\.module:callable'",
        ),
        (
            ["teacher.model={factory: 'my_plugins:returns_a_dict'}"],
            r"^teacher\.model\.factory: factory 'my_plugins:returns_a_dict' returned a dict, expected a "
            r"torch\.nn\.Module",
        ),
        (
            ["teacher.model={factory: 'my_plugins:no_modalities'}"],
            r"^teacher\.model: the model from factory 'my_plugins:no_modalities' \(Linear\) must declare the "
            r"modalities",
        ),
        (
            ["student.model={factory: 'my_plugins:three_classes'}"],
            r"^student\.model: the model predicts 3 classes but the dataset has 4",
        ),
        (["student.model.name=nope"], r"^invalid config: student\.model\.name: unknown model 'nope'; known: one_tower"),
        (
            ["student.model.params.modality=c"],
            r"^student\.model: the model from name 'one_tower' reads modality 'c', which the dataset does not have",
        ),
        (
            ["student.model.params.depth=3"],
            r"student\.model: params\.depth: unknown parameter of the factory; valid: modality, hidden",
        ),
        (
            ["student.model.params.num_classes=3"],
            r"student\.model: params\.num_classes: set by mmdistill from the data",
        ),
        (
            ["student.model.factory=my_plugins:build_teacher"],
            r"student\.model: give exactly one of factory .* and name",
        ),
        (["student.model.fusion=sum"], r"student\.model\.fusion: unknown key; valid keys: factory, name, params"),
        (["imports=[nope_plugins]"], r"^imports\[0\]: cannot import module 'nope_plugins'"),
        (
            ["student.model={modalities: [b], encoder: {type: scaled_linear, params: {scale: 0, depth: 3}}}"],
            (
                r"student\.model\.encoder\.params: scale: Input should be greater than 0; depth: unknown key; "
                r"valid keys: "
                r"scale \(encoder 'scaled_linear'\)"
            ),
        ),
        (
            [
                "student.model={modalities: [b], encoder: {type: scaled_linear}}",
                "teacher.model={modalities: [a]}",
                "imports=[]",
            ],
            r"student\.model\.encoder\.type: unknown encoder 'scaled_linear'; known: cnn1d, cnn2d, hf, lenet, mlp, "
            r"resnet, spec_cnn, timm, tokens \(",
        ),
        (
            ["masking.strategy=nope"],
            r"masking\.strategy: unknown masking strategy 'nope'; known: attention, learned, mean, minus_one, zeros$",
        ),
        (["method.name=kd_and_masked_ce", "method.params={lam: 2}"], r"method\.params\.lam: Input should be less than"),
    ],
)
def test_bad_own_model_input_is_one_config_error_naming_the_key(in_process, overrides, message):
    from mmdistill.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        preflight_of(in_process, overrides)


def test_teacher_checkpoint_of_an_own_model_is_loaded_or_refused_by_key(in_process, tmp_path):
    from mmdistill.engine.assembly import load_teacher_weights
    from mmdistill.engine.system.checkpoint import save_tensors
    from mmdistill.errors import CheckpointError
    from mmdistill.models import build_model

    cfg, data = preflight_of(in_process, [])
    teacher = build_model(cfg.teacher.model, data.train.specs(), data.num_classes, "teacher.model")
    student = build_model(cfg.student.model, data.train.specs(), data.num_classes, "student.model")
    save_tensors(tmp_path / "teacher.safetensors", teacher.state_dict(), {})
    save_tensors(tmp_path / "other.safetensors", student.state_dict(), {})
    preflight_of(in_process, [f"teacher.checkpoint={tmp_path / 'teacher.safetensors'}"])
    pattern = (
        r"teacher\.checkpoint: .* does not fit teacher\.model: missing keys \['towers\.a\.weight'.*"
        r"unexpected keys \['body\.0\.bias', 'body\.0\.weight'"
    )
    with pytest.raises(CheckpointError, match=pattern):
        preflight_of(in_process, [f"teacher.checkpoint={tmp_path / 'other.safetensors'}"])
    loaded = build_model(cfg.teacher.model, data.train.specs(), data.num_classes, "teacher.model")
    load_teacher_weights(loaded, tmp_path / "teacher.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values()))


def test_distill_from_python_writes_a_folder_that_evaluate_and_analyze_read(in_process, user_pkg, tmp_path):
    """A distill() call with the user's own models (factory and registered name, built by
    mmdistill.models.build_model) leaves a folder that the CLI reads like a one-seed train run."""
    import importlib

    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data import build_splits
    from mmdistill.engine.api import distill
    from mmdistill.models import build_model
    from mmdistill.models.custom import CustomModelConfig

    _, env = user_pkg
    importlib.import_module("my_plugins")
    torch.set_num_threads(1)
    data = build_splits("toy-two-modality", {"n": 100, "dim_a": 6, "dim_b": 6})
    specs, n = data.train.specs(), data.num_classes
    teacher = build_model(CustomModelConfig(factory="my_plugins:build_teacher", params={"hidden": 12}), specs, n)
    student = build_model(CustomModelConfig(name="one_tower", params={"hidden": 6}), specs, n)
    trainer = TrainerConfig(epochs=2, batch_size=20, num_threads=1)
    distill(teacher, None, data, tmp_path / "teacher", "supervised", trainer=trainer)
    kd = tmp_path / "kd"
    cache = CacheConfig(dir=tmp_path / "cache")
    result = distill(student, teacher, data, kd, "kd", {"temperature": 2.0, "lam": 0.5}, trainer=trainer, cache=cache)
    saved = (kd / "config.yaml").read_text()
    assert "my_plugins:build_teacher" in saved and "name: one_tower" in saved and "- my_plugins" in saved

    report = json.loads(mmdistill(env, "evaluate", str(kd), "--missing", "--json").stdout)
    assert report["metrics"]["seed_0/student"]["accuracy"] == pytest.approx(result.test["accuracy"])
    assert "seed_0/teacher" in report["metrics"] and report["missing"] and report["missing_models"] == []
    mmdistill(env, "analyze", "modalities", str(kd))
    assert "student" in (kd / "analysis" / "modalities.md").read_text()


def test_a_distill_folder_of_a_model_built_in_python_is_refused_with_the_reason(tmp_path, user_pkg):
    from mmdistill.config import TrainerConfig
    from mmdistill.data import build_splits
    from mmdistill.engine.api import distill

    _, env = user_pkg
    torch.set_num_threads(1)
    data = build_splits("toy-two-modality", {"n": 100, "dim_a": 6, "dim_b": 6})

    class Plain(torch.nn.Module):
        modalities = ("b",)

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(6, data.num_classes)

        def forward(self, batch):
            return self.linear(batch["b"])

    distill(Plain(), None, data, tmp_path / "plain", "supervised", trainer=TrainerConfig(epochs=1, batch_size=20))
    assert not (tmp_path / "plain" / "config.yaml").exists()
    proc = mmdistill(env, "evaluate", str(tmp_path / "plain"), ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the student is a Plain built in Python" in proc.stderr and "build_model" in proc.stderr


def test_advise_config_reads_the_modalities_an_own_model_declares(tmp_path, user_pkg):
    """advise --config with a factory teacher (reads every modality) and a registered student."""
    _, env = user_pkg
    config = tmp_path / "own.yaml"
    config.write_text(OWN_MODELS + f"cache: {{dir: {tmp_path / 'cache'}}}\n")
    proc = mmdistill(env, "advise", "--config", str(config), "--json", "--bootstrap", "5", timeout=300)
    advice = json.loads(proc.stdout)
    assert (advice["teacher"], advice["student"]) == ("a+b", "b"), advice
    assert "predicted_gain" in json.dumps(advice)
