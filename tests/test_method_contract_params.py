"""The method contract's parameters: one strict number type for every method, checked when the config is loaded;
a method (not a task) says which tasks it carries over to, and the docs' table is the registries'."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
import torch

from mmdistill.config import load_config
from mmdistill.errors import ConfigError
from mmdistill.registry import METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs"
BAD_NUMBERS = [True, "4", float("nan"), float("inf"), -float("inf")]


def _required(cls) -> dict:
    """Values for a method's required fields (layer paths): enough for its Params to validate."""
    return {k: "x" for k, f in cls.Params.model_fields.items() if f.is_required()}


def _numeric_fields(cls) -> list[str]:
    def numeric(annotation) -> bool:
        args = typing.get_args(annotation)
        return annotation in (int, float) or any(a in (int, float) for a in args)

    return [k for k, f in cls.Params.model_fields.items() if numeric(f.annotation)]


def _builtin_methods() -> list[str]:
    return [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("mmdistill.")]


@pytest.mark.parametrize("name", _builtin_methods())
def test_every_number_of_every_method_refuses_bool_string_nan_and_infinity(name):
    cls = METHODS.get(name)
    fields = _numeric_fields(cls)
    assert fields or name in ("supervised",), f"{name}: no numeric parameter found"
    for field in fields:
        for bad in BAD_NUMBERS:
            with pytest.raises(ConfigError, match=rf"method\.params\.{field}: Input should be a (valid|finite) "):
                cls.checked_params(name, {**_required(cls), field: bad})


@pytest.mark.parametrize("bad", [True, "4", math.inf, 1e-6, 101.0])
@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "logit_std_kd", "c2kd", "mfh_general", "msd"])
def test_a_temperature_has_the_same_bounds_in_every_method(name, bad):
    cls = METHODS.get(name)
    key = "tau" if name == "dist" else "temperature"
    with pytest.raises(ConfigError, match=rf"method\.params\.{key}:"):
        cls.checked_params(name, {**_required(cls), key: bad})
    for good in (0.05, 100):
        cls.checked_params(name, {**_required(cls), key: good})


def _yaml(tmp_path, method: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {name: toy-two-modality, params: {n: 40}}\n"
        "teacher: {model: {modalities: [a, b], encoder: {type: mlp, hidden: [4], out_dim: 4}}}\n"
        "student: {model: {modalities: [b], encoder: {type: mlp, hidden: [4], out_dim: 4}}}\n" + method
    )
    return path


@pytest.mark.parametrize("value", ["true", "'4'", ".inf", ".nan", "1.0e-6"])
def test_dkd_temperature_is_refused_when_the_config_is_loaded_as_kd_is(tmp_path, value):
    for name in ("kd", "dkd"):
        path = _yaml(tmp_path, f"method: {{name: {name}, params: {{temperature: {value}}}}}\n")
        with pytest.raises(ConfigError, match=r"method\.params\.temperature: Input should be"):
            load_config(path, check_machine=False)


def test_a_method_parameter_and_an_unknown_method_are_refused_when_the_config_is_loaded(tmp_path):
    with pytest.raises(ConfigError, match=r"method\.params\.student_layer: required key is missing"):
        load_config(_yaml(tmp_path, "method: {name: hint, params: {teacher_layer: x}}\n"), check_machine=False)
    with pytest.raises(ConfigError, match=r"method\.name: unknown method 'vid'"):
        load_config(_yaml(tmp_path, "method: {name: vid}\n"), check_machine=False)


def test_a_new_method_says_what_it_needs_and_no_task_lists_it():
    from mmdistill.methods.kd import HintonKD
    from mmdistill.methods.params import needs_class_distribution
    from mmdistill.tasks import get_task

    class NeedsDistributions(HintonKD):
        task_needs = (needs_class_distribution("it reads the softmax"),)

    METHODS.register("test_needs_distributions")(NeedsDistributions)
    try:
        get_task("classification").check_method("test_needs_distributions", {})
        for task in ("multilabel", "regression", "segmentation"):
            with pytest.raises(
                ConfigError,
                match=rf"method\.name: 'test_needs_distributions' does not carry over "
                rf"to task '{task}': it needs one class distribution per example",
            ):
                get_task(task).check_method("test_needs_distributions", {})
    finally:
        METHODS._entries.pop("test_needs_distributions")


def test_methods_md_and_tasks_md_hold_the_carry_over_table_of_the_registries():
    from mmdistill.methods.carry_over import carry_over_table, table_in

    table = carry_over_table()
    for doc in ("methods.md", "tasks.md"):
        assert table_in((DOCS / doc).read_text(encoding="utf-8")) == table, (
            f"docs/{doc}: the carry-over table differs from the registries; run python scripts/carry_over_table.py "
            "--write"
        )
    assert "| `dkd` | yes | **no** | **no** | **no** |" in table
    assert "| `kd` | yes | yes | yes, not `temperature` | yes |" in table


def test_crd_notes_negatives_at_least_as_many_as_the_training_rows(toy_splits, capsys):
    from mmdistill.engine.api import build_method
    from mmdistill.masking import Masker

    rows = len(toy_splits.train)
    layers = {"student_layer": "encoders.b.body.1", "teacher_layer": "encoders.a.body.1"}
    for nce_k, noted in ((rows, True), (rows - 1, False)):
        method = build_method("crd", {**layers, "nce_k": nce_k, "feat_dim": 2}, Masker(toy_splits.train.specs()))
        method.prepare(toy_splits.train, None, torch.device("cpu"))
        err = capsys.readouterr().err
        assert (f"method.params.nce_k: {nce_k} negatives per example from {rows} training rows" in err) == noted, err
