"""evaluate_run and load_run_models on run folders written by hand: a config and each part's saved weights."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from mmdistill.config import load_config
from mmdistill.data.contracts.item_dataset import load_data
from mmdistill.engine.api import run_task
from mmdistill.engine.assembly import build_run_model
from mmdistill.engine.metrics import evaluate
from mmdistill.engine.system.checkpoint import save_tensors
from mmdistill.engine.system.run_record import TEACHER_WEIGHTS
from mmdistill.engine.trainer import eval_batches
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.evaluation.robustness import missing_modality_table, noise_curves
from mmdistill.evaluation.runs import evaluate_run, load_run_models
from mmdistill.masking import fit_masker
from mmdistill.tasks import PERCENT, UNITS_KEY, get_task

# devices: more processes than any CPU machine has, so that the machine check, were it run, would refuse it
CONFIG = """\
seed: 0
data: {name: toy-two-modality, params: {n: 120}}
teacher:
  model: {modalities: [a, b], encoder: {type: mlp, hidden: [8], out_dim: 4}}
student:
  model: {modalities: [b], encoder: {type: mlp, hidden: [8], out_dim: 4}}
method: {name: kd, params: {temperature: 2.0, lam: 0.5}}
trainer: {epochs: 1, batch_size: 32, num_threads: 1, accelerator: cpu, devices: 4096}
"""
PARTS = {"seed_0/teacher": "teacher", "seed_0/nokd": "student", "seed_0/student": "student"}  # in reading order


def write_config(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(CONFIG)


def fresh_models(folder: Path) -> tuple:
    cfg = load_config(folder / "config.yaml", check_machine=False)
    data = load_data(cfg.data)
    run_task(cfg.task, data)
    torch.manual_seed(3)
    return cfg, data, {key: build_run_model(cfg, role, data).eval() for key, role in PARTS.items()}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> tuple[Path, dict]:
    """A run folder of seed 0 with a teacher, a student and a no-KD student, each with weights of its own."""
    folder = tmp_path_factory.mktemp("run") / "run"
    write_config(folder)
    _, _, models = fresh_models(folder)
    for key, model in models.items():
        (folder / key).mkdir(parents=True)
        save_tensors(folder / key / "student.safetensors", model.state_dict())
    return folder, models


def metrics_of(models: dict, data, split: str) -> dict:
    task = get_task("classification")
    dataset = data.split(split)
    return {
        k: task.for_people(evaluate(m, eval_batches(dataset, 256), data.num_classes, task=task))
        for k, m in models.items()
    }


def copy_of(run_folder, tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(run_folder[0], folder)
    return folder


def test_each_saved_model_is_evaluated_on_the_split_asked_for(run_folder, tmp_path):
    folder = copy_of(run_folder, tmp_path)
    _, data, _ = fresh_models(folder)
    out = evaluate_run(folder)
    assert list(out) == ["metrics", "missing_models", "task", UNITS_KEY]
    assert out["task"] == "classification" and out[UNITS_KEY] == PERCENT and out["missing_models"] == []
    assert out["metrics"] == metrics_of(run_folder[1], data, "test")
    val = evaluate_run(folder, split="val")["metrics"]
    assert val == metrics_of(run_folder[1], data, "val") and val != out["metrics"]
    assert len({m["accuracy"] for m in out["metrics"].values()}) > 1  # each model is its own
    assert not (folder / "robustness").exists()


def test_the_missing_modality_tables_of_every_model_are_returned_and_written(run_folder, tmp_path):
    folder = copy_of(run_folder, tmp_path)
    cfg, data, _ = fresh_models(folder)
    out = evaluate_run(folder, missing=True)
    masker, task = fit_masker(cfg.masking, data.train), get_task("classification")
    expected = [
        {"model": k, **r}
        for k, m in run_folder[1].items()
        for r in missing_modality_table(m, data.test, masker, task=task)
    ]
    assert out["missing"] == expected and "noise" not in out
    with open(folder / "robustness" / "missing.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["present"]) for r in rows] == [(r["model"], r["present"]) for r in expected]
    assert not (folder / "robustness" / "noise.csv").exists()


def test_the_noise_curves_of_every_model_are_returned_written_and_plotted_under_its_name(
    run_folder, tmp_path, monkeypatch
):
    folder = copy_of(run_folder, tmp_path)
    _, data, _ = fresh_models(folder)
    close, figures = plt.close, []
    monkeypatch.setattr(plt, "close", figures.append)
    try:
        out = evaluate_run(folder, noise=True, levels=(0.0, 1.0))
    finally:
        for figure in figures:
            close(figure)
    task = get_task("classification")
    expected = [
        {"model": k, **r} for k, m in run_folder[1].items() for r in noise_curves(m, data.test, [0.0, 1.0], task=task)
    ]
    assert out["noise"] == expected and "missing" not in out
    assert [f.get_suptitle() for f in figures] == list(PARTS)
    assert sorted(p.name for p in (folder / "robustness").glob("*.png")) == [
        "noise_seed_0_nokd.png",
        "noise_seed_0_student.png",
        "noise_seed_0_teacher.png",
    ]
    with open(folder / "robustness" / "noise.csv") as f:
        assert [r["model"] for r in csv.DictReader(f)] == [r["model"] for r in expected]


def test_noise_levels_outside_zero_to_one_are_refused_only_when_noise_is_asked_for(run_folder, tmp_path):
    folder = copy_of(run_folder, tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"--levels: noise levels must lie in \[0, 1\] \(dropout probability; "
        r"Gaussian std in units of the feature std\), got \[0.0, 1.5\]",
    ):
        evaluate_run(folder, noise=True, levels=(0.0, 1.5))
    assert "noise" not in evaluate_run(folder, levels=(0.0, 1.5))


def test_a_folder_without_a_config_or_without_models_is_named(run_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"is not a run folder \(no config.yaml\)"):
        load_run_models(tmp_path)
    write_config(tmp_path / "empty")
    with pytest.raises(
        ConfigError, match=r"empty: no saved model found \(expected seed_\*/<part>/student.safetensors\)"
    ):
        load_run_models(tmp_path / "empty")


def test_weights_that_do_not_fit_the_config_are_named_with_the_first_line_of_the_reason(run_folder, tmp_path):
    folder = copy_of(run_folder, tmp_path)
    save_tensors(folder / "seed_0" / "nokd" / "student.safetensors", {"head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError) as caught:
        load_run_models(folder)
    message = str(caught.value)
    assert message.startswith(
        f"{folder / 'seed_0' / 'nokd' / 'student.safetensors'}: the saved weights do not fit "
        "the model that config.yaml and the data describe (Error(s) in loading state_dict"
    )
    assert message.endswith("); the folder's files do not belong together, or the data differ")


def test_the_config_is_read_without_checking_this_machine(run_folder, tmp_path):
    cfg, _, models = load_run_models(copy_of(run_folder, tmp_path))
    assert cfg.trainer.devices == 4096 and list(models) == list(PARTS)
    with pytest.raises(ConfigError, match="trainer.devices"):
        load_config(run_folder[0] / "config.yaml")  # the check the reading leaves out


def test_a_data_source_that_is_no_factory_is_named_as_the_data_option(run_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"^invalid config: --data: dataset: "):
        load_run_models(copy_of(run_folder, tmp_path), data_source="")


def distill_folder(run_folder, tmp_path, result: dict | None) -> Path:
    folder = tmp_path / "distilled"
    write_config(folder)
    shutil.copy(run_folder[0] / "seed_0" / "student" / "student.safetensors", folder / "student.safetensors")
    shutil.copy(run_folder[0] / "seed_0" / "teacher" / "student.safetensors", folder / TEACHER_WEIGHTS)
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    return folder


@pytest.mark.parametrize(("result", "seed"), [(None, 0), ({}, 0), ({"seed": 3}, 3)])
def test_a_distill_folder_reads_as_the_seed_of_its_result(run_folder, tmp_path, result, seed):
    _, _, models = load_run_models(distill_folder(run_folder, tmp_path, result))
    assert list(models) == [f"seed_{seed}/teacher", f"seed_{seed}/student"]
    for part in ("teacher", "student"):
        expected = run_folder[1][f"seed_0/{part}"].state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in models[f"seed_{seed}/{part}"].state_dict().items())


GUIDE = (
    ". Build the models with mmdistill.models.build_model (a built-in model config or "
    "CustomModelConfig(factory='pkg.mod:fn', params=...)) and the data with mmdistill.data.build_splits or "
    "load_data, or run the whole protocol with mmdistill.engine.protocol.run_config (docs/tutorial_own_models.md)"
)


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"not_a_run_folder": "its teacher was given as an object"}, "its teacher was given as an object"),
        ({"seed": 1}, "it has no config.yaml (written by an older mmdistill, or not finished)"),
    ],
)
def test_a_distill_folder_without_a_config_says_why_and_how_to_rebuild(run_folder, tmp_path, result, why):
    folder = distill_folder(run_folder, tmp_path, result)
    (folder / "config.yaml").unlink()
    with pytest.raises(ConfigError) as caught:
        load_run_models(folder)
    assert str(caught.value) == f"{folder}: a distill() folder that mmdistill cannot read back: {why}{GUIDE}"
