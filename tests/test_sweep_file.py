"""The sweep file is checked before anything starts: each bad input is one line naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mmdistill.cli import main
from mmdistill.errors import ConfigError
from mmdistill.sweep import load_sweep, run_sweep
from mmdistill.sweep.plan import best_trials, drawn_settings

BASE = {
    "data": {"name": "toy-two-modality", "params": {"n": 120}},
    "teacher": {"model": {"modalities": ["a", "b"], "encoder": {"type": "mlp", "hidden": [8], "out_dim": 8}}},
    "student": {"model": {"modalities": ["b"], "encoder": {"type": "mlp", "hidden": [8], "out_dim": 8}}},
    "trainer": {"epochs": 1, "batch_size": 32},
}
GOOD = {
    "base": "base.yaml",
    "methods": ["kd", "dkd"],
    "space": {"method.params.temperature": [1, 4], "dkd": {"method.params.beta": [1.0, 2.0]}},
    "search": {"kind": "grid"},
    "seeds": {"tune": 1, "final": 2},
    "select": {"metric": "accuracy", "split": "val"},
}


def write_sweep(folder: Path, **changes) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    sweep = {**GOOD, **changes}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_good_file_gives_each_method_its_own_grid(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    assert spec.tune_seeds == [0] and spec.final_seeds == [1, 2]
    assert len(spec.grid("kd")) == 2 and len(spec.grid("dkd")) == 4  # dkd's own beta block on top
    assert spec.config("dkd", spec.grid("dkd")[3])["method"] == {
        "name": "dkd",
        "params": {"temperature": 4, "beta": 2.0},
    }


@pytest.mark.parametrize(
    "changes, names",
    [
        ({"space": {"trainer.optimizer.lrr": [0.1]}}, ["space.trainer.optimizer.lrr", "trainer.optimizer.lr"]),
        ({"space": {"method.params.temprature": [1]}}, ["method.params.temperature"]),
        (
            {"space": {"trainer.optimizer.lr": {"low": 0.1, "high": 0.01}}, "search": {"kind": "random", "trials": 2}},
            ["low 0.1 > high 0.01"],
        ),
        (
            {
                "space": {"trainer.optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}},
                "search": {"kind": "random", "trials": 2},
            },
            ["log: true needs low > 0"],
        ),
        ({"space": {"crd": {"method.params.temperature": [1]}}}, ["space.crd", "not in methods"]),
        ({"select": {"metric": "accuracy", "split": "test"}}, ["select.split", "optimistic"]),
        ({"space": {"trainer.optimizer.lr": {"low": 0.01, "high": 0.1}}}, ["random or optuna"]),
        ({"seeds": {"tune": [0, 1], "final": [1, 2]}}, ["seeds", "[1]"]),
        ({"serch": {"kind": "grid"}}, ["serch", "search"]),
        ({"search": {"kind": "bayes"}}, ["search.kind", "grid, random, optuna"]),
        ({"space": {"method.params.temperature": [0.0001]}}, ["method.params.temperature=0.0001", "temperature"]),
        ({"methods": ["kd", "dkdd"]}, ["methods", "dkd"]),
        ({"select": {"metric": "miou"}}, ["select.metric", "accuracy"]),
        ({"search": {"kind": "random"}}, ["search.trials"]),
        ({"logging": {"mlflow": {"tracking_url": "x"}}}, ["logging.mlflow.tracking_url", "tracking_uri"]),
    ],
)
def test_bad_input_is_one_line_naming_the_key(tmp_path, changes, names):
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, **changes))
    message = str(err.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_the_cli_refuses_bad_input_before_any_folder_exists(tmp_path, capsys):
    path = write_sweep(tmp_path, select={"metric": "accuracy", "split": "test"})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "select.split" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_more_workers_than_cores_is_refused(tmp_path):
    import os

    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(ConfigError, match="--workers"):
        run_sweep(write_sweep(tmp_path), tmp_path / "out", workers=too_many)
    assert not (tmp_path / "out").exists()


def test_a_random_search_draws_the_same_settings_again(tmp_path):
    path = write_sweep(
        tmp_path,
        space={"trainer.optimizer.lr": {"low": 0.001, "high": 0.1, "log": True}, "method.params.temperature": [1, 4]},
        search={"kind": "random", "trials": 5, "seed": 3},
    )
    first, again = load_sweep(path), load_sweep(path)
    drawn = drawn_settings(first, "kd")
    assert drawn == drawn_settings(again, "kd") and len(drawn) == 5
    assert all(0.001 <= s["trainer.optimizer.lr"] <= 0.1 for s in drawn)
    assert len({s["trainer.optimizer.lr"] for s in drawn}) == 5


def test_selection_reads_validation_only(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    records = [  # the better test score belongs to the worse validation score: validation decides
        {"name": "kd-000", "method": "kd", "status": "done", "val": {"0": 60.0}, "test": {"0": {"accuracy": 90.0}}},
        {"name": "kd-001", "method": "kd", "status": "done", "val": {"0": 70.0}, "test": {"0": {"accuracy": 10.0}}},
        {"name": "kd-002", "method": "kd", "status": "failed", "val": {}},
        {"name": "kd-003", "method": "kd", "status": "pruned", "val": {}},
    ]
    assert best_trials(spec, records)["kd"]["name"] == "kd-001"


def test_a_method_with_fixed_parameters_keeps_them_in_every_run(tmp_path):
    pkt = {"name": "pkt", "params": {"student_layer": "head.0", "teacher_layer": "head.0"}}
    spec = load_sweep(write_sweep(tmp_path, methods=["kd", pkt], space={"pkt": {"method.params.beta": [1000.0]}}))
    assert spec.config("pkt", {})["method"]["params"] == pkt["params"]  # its defaults
    assert spec.config("pkt", spec.grid("pkt")[0])["method"]["params"] == {**pkt["params"], "beta": 1000.0}
    assert spec.config("kd", {})["method"]["params"] == {}


def test_a_method_whose_defaults_miss_a_required_parameter_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"methods: 'pkt' at its defaults.*student_layer.*\{name: pkt, params"):
        load_sweep(write_sweep(tmp_path, methods=["kd", "pkt"], space={"method.params.temperature": [1]}))


@pytest.mark.parametrize(
    "module, changes, extra",
    [
        ("optuna", {"search": {"kind": "optuna", "trials": 2}}, "mmdistill[sweep]"),
        ("mlflow", {"logging": {"mlflow": {}}}, "mmdistill[mlflow]"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_before_any_folder(tmp_path, monkeypatch, module, changes, extra):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails
    with pytest.raises(ConfigError, match=re.escape(f"pip install '{extra}'")):
        run_sweep(write_sweep(tmp_path, **changes), tmp_path / "out")
    assert not (tmp_path / "out").exists()
