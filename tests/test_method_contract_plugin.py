"""A method from outside the package, one file (``own_method_plugin.py``), runs from YAML with ``mmdistill train``
and gets the same checks as the built-in methods: its typed parameters and the tasks it carries over to."""

from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path

import pytest

from mmdistill.cli import main
from mmdistill.registry import METHODS

PLUGIN = Path(__file__).resolve().parent / "own_method_plugin.py"


def config_text(tmp_path: Path, method: str, task: str = "") -> str:
    return (
        "imports: [my_method]\n"
        "data: {name: toy-two-modality, params: {n: 80, dim_a: 4, dim_b: 4}}\n"
        "teacher: {model: {modalities: [a, b], encoder: {hidden: [6], out_dim: 6}}}\n"
        "student: {model: {modalities: [b], encoder: {hidden: [4], out_dim: 4}}}\n"
        f"method: {method}\n{task}"
        "trainer: {epochs: 1, batch_size: 20, num_threads: 1}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
    )


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``my_method`` importable from a folder outside the package, as a user's PYTHONPATH would make it."""
    pkg = tmp_path / "user"
    pkg.mkdir()
    shutil.copy(PLUGIN, pkg / "my_method.py")
    monkeypatch.syspath_prepend(str(pkg))
    yield
    sys.modules.pop("my_method", None)
    METHODS._entries.pop("reverse_kd", None)


def train(tmp_path, text: str) -> int:
    """``mmdistill train CONFIG`` (the CLI's entry point, in this process)."""
    config = tmp_path / "run.yaml"
    config.write_text(text)
    return main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline"])


def test_a_method_from_one_outside_file_trains_from_yaml(tmp_path, user_module):
    assert train(tmp_path, config_text(tmp_path, "{name: reverse_kd, params: {temperature: 2.0, lam: 0.7}}")) == 0
    with open(tmp_path / "run" / "seed_0" / "student" / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert math.isfinite(float(row["train/reverse_kd"])) and float(row["train/reverse_kd"]) >= 0
    assert "name: reverse_kd" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("method", "task", "message"),
    [
        ("{name: reverse_kd, params: {temperature: true}}", "", r"method.params.temperature: Input should be a valid"),
        (
            "{name: reverse_kd, params: {temperature: 1.0e-6}}",
            "",
            r"method.params.temperature: Input should be greater",
        ),
        (
            "{name: reverse_kd}",
            "task: multilabel\n",
            r"method.name: 'reverse_kd' does not carry over to task 'multilabel': it needs one class distribution",
        ),
    ],
)
def test_an_outside_method_is_checked_like_a_built_in_one_before_anything_is_written(
    tmp_path, user_module, capsys, method, task, message
):
    assert train(tmp_path, config_text(tmp_path, method, task)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "run").exists()
