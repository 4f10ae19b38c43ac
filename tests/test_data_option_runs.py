"""A ``distill(train=..., val=..., test=...)`` folder: its datasets were given in Python, so the commands that read
it (``evaluate``, ``analyze modalities``, ``advise --run``) take the data's source as ``--data pkg.mod:factory``, and
without it say so in one line, leaving the folder as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_advise_item_runs import Pairs

from mmdistill.cli import main

FACTORY = "test_advise_item_runs:splits"  # returns the same three splits as the datasets given below


@pytest.fixture(scope="module")
def python_data_run(tmp_path_factory) -> Path:
    from mmdistill.config import TrainerConfig
    from mmdistill.data.contracts.item_dataset import ItemDataset
    from mmdistill.engine.api import distill
    from mmdistill.models.multimodal import ModelConfig, build_model

    out = tmp_path_factory.mktemp("python-data")
    datasets = {"train": Pairs(90, 0), "val": Pairs(30, 1), "test": Pairs(30, 2)}
    specs, trainer = ItemDataset(datasets["train"]).specs(), TrainerConfig(epochs=1, batch_size=16, num_threads=1)
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["narrow", "wide"]), specs, 3)
    student = build_model(ModelConfig(modalities=["narrow"]), specs, 3)
    distill(teacher, None, **datasets, out_dir=out / "teacher", method="supervised", trainer=trainer)
    distill(student, teacher, **datasets, out_dir=out / "kd", trainer=trainer)
    return out / "kd"


COMMANDS = {
    "evaluate": ["evaluate", "{run}", "--json"],
    "evaluate-robustness": ["evaluate", "{run}", "--missing", "--noise", "--levels", "0", "1"],
    "analyze": ["analyze", "modalities", "{run}"],
    "advise": ["advise", "--run", "{run}", "--bootstrap", "2"],
}


def folder_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_without_data_each_command_says_in_one_line_what_to_pass(python_data_run, capsys, command):
    before = folder_state(python_data_run)
    capsys.readouterr()
    assert main([a.format(run=python_data_run) for a in COMMANDS[command]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given to distill() in Python" in err[0] and "pass --data pkg.mod:factory" in err[0]
    assert folder_state(python_data_run) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_with_data_each_command_reads_the_folder(python_data_run, capsys, command):
    capsys.readouterr()
    assert main([a.format(run=python_data_run) for a in COMMANDS[command]] + ["--data", FACTORY]) == 0
    out = capsys.readouterr().out
    if command == "evaluate":
        assert set(json.loads(out)["metrics"]) == {"seed_0/teacher", "seed_0/student"}
    if command == "analyze":
        assert (python_data_run / "analysis" / "modalities.md").is_file()
    if command == "advise":
        assert "probes read: teacher side: seed_0/teacher's logits; student side: narrow flattened" in out


def test_the_evaluation_with_data_equals_the_one_distill_reported(python_data_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(python_data_run), "--json", "--data", FACTORY]) == 0
    from mmdistill.tasks import stored_in_percent

    metrics = json.loads(capsys.readouterr().out)["metrics"]["seed_0/student"]
    result = json.loads((python_data_run / "result.json").read_text())
    reported = result["test"]["accuracy"] * (1 if stored_in_percent(result) else 100)  # evaluate gives percent
    assert metrics["accuracy"] == pytest.approx(reported)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("no_such_module_xyz:splits", r"--data no_such_module_xyz:splits: data.dataset: cannot import module"),
        ("not a path", r"--data: .*String should match pattern"),
        ("test_advise_item_runs:Pairs", r"--data test_advise_item_runs:Pairs: data\.\w+: .*does not take"),
    ],
)
def test_a_bad_data_source_is_one_line_naming_the_option(python_data_run, capsys, source, expected):
    import re

    capsys.readouterr()
    assert main(["evaluate", str(python_data_run), "--data", source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(expected, err[0]), err


def test_advise_data_without_run_is_refused(capsys):
    assert main(["advise", "--dataset", "venn", "--data", FACTORY]) == 2
    assert "advise --data: gives the data of a run folder (with --run DIR)" in capsys.readouterr().err


def test_report_reads_the_folder_without_data(python_data_run, capsys):
    """report reads only the folder's files (result.json's metrics), never the data, so it needs no --data."""
    capsys.readouterr()
    assert main(["report", str(python_data_run)]) == 0
    assert "distill() result" in (python_data_run / "report.md").read_text()
