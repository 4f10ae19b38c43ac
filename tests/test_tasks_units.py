"""One unit rule: a metric the task marks as percent (accuracy, F1, mAP, mIoU, pixel accuracy) is given in percent
wherever a person reads it (RunResult, result.json, metrics.json, evaluate and its JSON, the logs, summary.md);
loss, MAE and Pearson r as they are. The trainer monitors the fractions."""

from __future__ import annotations

import csv
import json

import pytest

from mmdistill.config import TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.engine.metrics import evaluate
from mmdistill.engine.trainer import eval_batches
from mmdistill.models import EncoderConfig, ModelConfig, build_model
from mmdistill.tasks import get_task


def student_for(splits):
    specs, n = splits.train.specs(), splits.num_classes
    return build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)


@pytest.fixture
def supervised_run(toy_splits, tmp_path):
    student = student_for(toy_splits)
    trainer = TrainerConfig(epochs=2, batch_size=64)
    result = distill(student, None, toy_splits, tmp_path / "run", "supervised", trainer=trainer)
    return result, student, toy_splits, tmp_path / "run"


def test_run_result_and_result_json_give_percent_metrics_in_percent_and_the_loss_as_is(supervised_run):
    result, student, splits, out = supervised_run
    fractions = evaluate(student, eval_batches(splits.test, 256), splits.num_classes)
    assert 0.0 < fractions["accuracy"] < 1.0
    assert result.test["accuracy"] == pytest.approx(100 * fractions["accuracy"])
    assert result.test["f1_macro"] == pytest.approx(100 * fractions["f1_macro"])
    assert result.test["loss"] == pytest.approx(fractions["loss"])
    stored = json.loads((out / "result.json").read_text())
    assert stored["test"] == pytest.approx(result.test) and stored["units"] == "percent"


def test_the_epoch_log_gives_validation_accuracy_in_percent(supervised_run):
    result, student, splits, out = supervised_run
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = float(rows[result.best_epoch - 1]["val/accuracy"])
    fraction = evaluate(student, eval_batches(splits.val, 256), splits.num_classes)["accuracy"]  # best weights
    assert best == pytest.approx(100 * fraction, abs=1e-3)
    assert best == pytest.approx(result.val["accuracy"], abs=1e-3)  # the number RunResult.val gives


def test_a_result_json_in_fractions_from_an_older_mmdistill_is_read_in_percent(supervised_run):
    from mmdistill.engine.protocol import _load_finished

    result, student, _, out = supervised_run
    old = json.loads((out / "result.json").read_text())
    old.pop("units")
    old["test"] = get_task("classification").from_people(old["test"])
    (out / "result.json").write_text(json.dumps(old))
    assert _load_finished(out, student).test == pytest.approx(result.test)


def test_summary_columns_read_old_and_new_metrics_files_alike():
    from mmdistill.engine.protocol import summary_markdown

    def metrics(acc, units):
        s = {"mean": acc, "std": float("nan"), "ci_low": acc, "ci_high": acc, "n": 1}
        doc = {"method": "kd", "seeds": [0], "reporting": "r", "summary": {"student.accuracy": s}, "paired": {}}
        doc["summary"]["student.f1_macro"] = s
        return {**doc, **({"units": units} if units else {})}

    new, old = summary_markdown(metrics(57.33, "percent")), summary_markdown(metrics(0.5733, None))
    assert "| student | 57.33 | 57.33 |" in new and new == old


def test_every_percent_metric_of_a_task_is_bounded_and_the_rest_are_as_is():
    for name, percent, as_is in [
        ("classification", {"accuracy", "f1_macro", "auroc"}, set()),
        ("multilabel", {"f1_micro", "f1_macro", "map"}, set()),
        ("regression", set(), {"mae", "pearson"}),
        ("segmentation", {"miou", "pixel_accuracy"}, set()),
    ]:
        task = get_task(name)
        assert {k for k, s in task.metric_specs.items() if s.percent} == percent, name
        assert {k for k, s in task.metric_specs.items() if not s.percent} == as_is, name
        shown = task.for_people({**dict.fromkeys(task.metric_specs, 0.25), "loss": 0.25})
        assert shown == {**dict.fromkeys(percent, 25.0), **dict.fromkeys(as_is, 0.25), "loss": 0.25}


def test_min_delta_is_in_the_monitors_own_units_and_refused_past_its_range(toy_splits, tmp_path):
    from mmdistill.errors import ConfigError

    trainer = TrainerConfig(epochs=1, early_stopping={"patience": 2, "min_delta": 1.5})  # accuracy: a fraction
    with pytest.raises(ConfigError, match=r"trainer: early_stopping.min_delta 1.5 >= 1 can never be met by 'accuracy'"):
        distill(student_for(toy_splits), None, toy_splits, tmp_path / "run", "supervised", trainer=trainer)
    assert not (tmp_path / "run").exists()
    regression = get_task("regression")
    wide = TrainerConfig(monitor="pearson", early_stopping={"patience": 2, "min_delta": 2.5})
    assert "can never be met by 'pearson'" in regression.trainer_problem(wide)
    assert regression.trainer_problem(wide.model_copy(update={"monitor": "mae"})) is None  # MAE is unbounded
