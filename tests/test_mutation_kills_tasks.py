"""The task contract's smaller promises, each pinned where a mutation test found no test that would notice it broken:
default temperatures, the exact target messages, the registry's checks, the per-metric specs, the split checks of
segmentation and the saliency's target."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from mmdistill.errors import BatchError, ConfigError, DataError, TargetError
from mmdistill.kl import kd_loss as hinton_kd_loss
from mmdistill.kl import kd_per_example as hinton_kd_per_example
from mmdistill.tasks import Task, _TaskRegistry, get_task, validate_labels
from mmdistill.tasks.base import PERCENT_BOUNDS, MetricSpec, percent, where
from mmdistill.tasks.segmentation import held_targets


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- losses ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "shape"), [("classification", (4, 3)), ("multilabel", (4, 3)), ("segmentation", (2, 3, 4, 4))]
)
def test_the_kd_terms_default_to_temperature_one(task, shape):
    t, s, te = get_task(task), logits(*shape), logits(*shape, seed=1)
    assert torch.equal(t.kd_loss(s, te), t.kd_loss(s, te, 1.0))
    assert torch.equal(t.kd_per_example(s, te), t.kd_per_example(s, te, 1.0))
    assert not torch.allclose(t.kd_loss(s, te), t.kd_loss(s, te, 2.0))


def test_segmentation_kd_without_a_target_uses_every_pixel():
    seg, s, te = get_task("segmentation"), logits(2, 3, 4, 4), logits(2, 3, 4, 4, seed=1)
    flat_s, flat_t = s.movedim(1, -1).reshape(-1, 3), te.movedim(1, -1).reshape(-1, 3)
    assert torch.allclose(seg.kd_loss(s, te, 2.0), hinton_kd_loss(flat_s, flat_t, 2.0))
    per_pixel = hinton_kd_per_example(s.movedim(1, -1), te.movedim(1, -1), 2.0).flatten(1)
    assert torch.allclose(seg.kd_per_example(s, te, 2.0), per_pixel.mean(1))


def test_the_saliency_leaves_out_the_pixels_the_target_ignores():
    seg = get_task("segmentation")
    full, removed = logits(2, 3, 4, 4), logits(2, 3, 4, 4, seed=1)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, :2] = 255  # the top half of each map unlabelled
    expected = seg.kd_per_example(removed, full, 1.0, target)
    assert torch.allclose(seg.saliency(full, removed, target), expected)
    assert not torch.allclose(seg.saliency(full, removed), expected)


@pytest.mark.parametrize("term", ["kd_loss", "kd_per_example"])
def test_a_regression_teacher_output_of_another_shape_is_named_as_the_teachers(term):
    with pytest.raises(BatchError) as err:
        getattr(get_task("regression"), term)(torch.zeros(4), torch.zeros(4, 2))
    assert str(err.value) == (
        "teacher output: shape (4, 2) does not match the model's output (4,) (task 'regression' expects (B,) or "
        "(B, D) for both)"
    )


def test_a_regression_target_of_one_column_pairs_with_an_output_of_none():
    reg, output, target = get_task("regression"), logits(4), logits(4, seed=1)
    expected = F.mse_loss(output, target)
    assert torch.equal(reg.loss(output, target[:, None]), expected)
    assert torch.equal(reg.loss(output[:, None], target), expected)


@pytest.mark.parametrize(("task", "target"), [("regression", torch.arange(4.0)), ("multilabel", torch.eye(4))])
def test_a_float64_target_gives_a_loss_in_the_outputs_dtype(task, target):
    output = logits(*target.shape)
    loss = get_task(task).loss(output, target.double())
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, get_task(task).loss(output, target))
    total, count = get_task(task).loss_sum(output, target.double())
    assert total.dtype == torch.float32 and count == 4


def test_regression_metrics_read_one_output_column_as_one_output():
    reg, output, target = get_task("regression"), logits(6), logits(6, seed=1)
    by_column, flat = reg.metrics(1), reg.metrics(1)
    reg.update_metrics(by_column, output[:, None], target[:, None])
    reg.update_metrics(flat, output, target)
    assert {k: float(v) for k, v in by_column.compute().items()} == {k: float(v) for k, v in flat.compute().items()}


# -- targets -----------------------------------------------------------------------------------------------------
def refusal(task: str, target, num_classes, index=None) -> str:
    with pytest.raises(TargetError) as err:
        get_task(task).check_target(target, num_classes, index)
    return str(err.value)


def test_classification_names_a_target_that_is_no_tensor():
    assert refusal("classification", [0, 1], 3) == (
        "'label': task 'classification' expects an int64 tensor of class indices (B,), got list"
    )


def test_classification_calls_a_one_hot_matrix_multi_hot_only_when_it_has_two_columns_or_more():
    one_hot = torch.eye(2)[[0, 1, 1]]
    message = refusal("classification", one_hot, 2)
    assert message.startswith("'label': task 'classification' expects one class index per example, int64 of shape (B,)")
    assert message.endswith("use task 'multilabel', or target.argmax(1) if each row has exactly one 1")
    one_column = torch.zeros(3, 1, dtype=torch.long)
    message = refusal("classification", one_column, 1)
    assert message.startswith("'label': task 'classification' expects a 1-D integer tensor of class indices (B,)")
    assert "multi-hot" not in message


def test_regression_and_multilabel_name_a_target_that_is_no_tensor():
    assert refusal("regression", [0.5], 1) == "'label': task 'regression' expects a float tensor (B,), got list"
    assert refusal("multilabel", [[0.0, 1.0]], 2) == (
        "'label': task 'multilabel' expects a float multi-hot tensor (B, 2), got list"
    )


def test_regression_says_what_to_do_with_an_integer_target():
    assert refusal("regression", torch.arange(4), 1).endswith(
        "got dtype torch.int64 (class indices? use task 'classification'; integer-valued scores: convert with .float())"
    )


def test_multilabel_says_what_to_do_with_class_indices():
    assert refusal("multilabel", torch.arange(4), 4).endswith(
        "class indices: use task 'classification', or F.one_hot(y, num_classes).float() for one label each"
    )


def test_before_the_output_count_is_known_a_target_sets_it_by_its_columns():
    get_task("regression").check_target(torch.zeros(4, 3), None)
    get_task("regression").check_target(torch.zeros(4), None)
    get_task("multilabel").check_target(torch.eye(3)[[0, 1, 2, 2]], None)


def test_a_regression_target_with_more_columns_than_outputs_is_refused():
    assert refusal("regression", torch.zeros(4, 3), 1).endswith(
        "expects a float tensor (B,) for a model with 1 output(s); got shape (4, 3)"
    )


def test_an_item_target_is_checked_against_the_class_count():
    with pytest.raises(TargetError, match=r"values must lie in \[0, 3\).*example index 4"):
        get_task("classification").check_item_target(torch.tensor(7), 3, 4)


def test_where_names_a_row_beyond_the_index_by_its_row():
    assert where(torch.tensor([5, 9]), 1) == "example index 9"
    assert where(torch.tensor([5]), 1) == "row 1 of the batch"
    assert where(None, 0) == "row 0 of the batch"


# -- what a task's metrics are -----------------------------------------------------------------------------------
def test_a_percent_metric_is_read_in_percent_with_two_digits():
    assert percent("mIoU") == MetricSpec("mIoU", True, percent=True, digits=2, bounds=PERCENT_BOUNDS, summary=True)
    assert percent("AUROC", summary=False).summary is False
    assert PERCENT_BOUNDS == (0.0, 100.0)


def test_a_task_defined_later_monitors_its_metrics_and_the_loss():
    class Ranked(Task):
        metric_specs: ClassVar = {"hits": percent("hits"), "rank": MetricSpec("rank", higher_is_better=False)}

    class RankedAgain(Ranked):  # no metric_specs of its own: the parent's monitors
        pass

    class NoMetrics(Task):
        pass

    assert Ranked.monitors == {"hits": True, "rank": False, "loss": False}
    assert RankedAgain.monitors == Ranked.monitors
    assert NoMetrics.monitors == {"loss": False}
    assert Ranked().units_note() == "hits in percent, rank as is"
    assert NoMetrics().units_note() == ""
    assert get_task("classification").units_note() == (
        "in percent; an interval past [0, 100] is shown clipped and marked (clipped)"
    )


def test_the_task_registry_sets_the_name_and_refuses_what_is_no_task_or_named_otherwise():
    registry = _TaskRegistry("task", "task.name")

    class Plain(Task):
        pass

    class SameName(Task):
        name = "same"

    class OtherName(Task):
        name = "other"

    assert registry.register("plain")(Plain) is Plain
    assert Plain.name == "plain"
    assert registry.get("plain") is Plain
    assert registry.register("same")(SameName) is SameName
    assert registry.get("same") is SameName
    with pytest.raises(TypeError, match=r"^task 'thing': register a subclass of mmdistill.tasks.Task, got <class"):
        registry.register("thing")(dict)
    with pytest.raises(TypeError, match="register a subclass"):
        registry.register("thing")(len)
    with pytest.raises(ValueError, match=r"^task 'renamed': the class says name = 'other'; use one name$"):
        registry.register("renamed")(OtherName)
    assert "thing" not in registry.names() and "renamed" not in registry.names()


# -- what a split declares and what the run completes ------------------------------------------------------------
class Split:
    """A split with only the attributes given."""

    def __init__(self, n: int = 4, **attributes) -> None:
        self.n = n
        self.name = "train"
        vars(self).update(attributes)

    def __len__(self) -> int:
        return self.n


def test_a_split_without_num_classes_is_named():
    for task in ("classification", "segmentation"):
        with pytest.raises(DataError, match=r"^data.train: the dataset has no num_classes attribute; set it \(task"):
            get_task(task).check_declared(Split(), "data.train")


@pytest.mark.parametrize("ignore", [0, 2, 4])
def test_an_ignore_index_among_the_declared_classes_is_refused(ignore):
    message = f"data.train: ignore_index {ignore} collides with real class {ignore} (classes are 0..4)"
    with pytest.raises(DataError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        get_task("segmentation").check_declared(Split(num_classes=5, ignore_index=ignore), "data.train")


def test_an_ignore_index_outside_the_declared_classes_or_none_is_accepted():
    seg = get_task("segmentation")
    for split in (Split(num_classes=5, ignore_index=5), Split(num_classes=5, ignore_index=-1), Split(num_classes=5)):
        seg.check_declared(split, "data.train")


def test_a_segmentation_task_takes_the_ignore_index_of_its_split():
    seg_type = type(get_task("segmentation"))
    assert seg_type.of_split(Split(ignore_index=-100)).ignore_index == -100
    assert seg_type.of_split(Split()).ignore_index == 255


def test_a_split_without_ignore_index_takes_the_tasks():
    split = Split()
    get_task({"name": "segmentation", "params": {"ignore_index": -1}}).complete_split(split)
    assert split.ignore_index == -1


def test_only_a_training_split_with_every_pixel_ignored_is_refused():
    seg = get_task("segmentation")
    unlabelled = torch.full((4, 2, 2), 255)
    seg.complete_split(Split(labels=unlabelled))  # an evaluation split: nothing to refuse
    with pytest.raises(TargetError) as err:
        seg.complete_split(Split(labels=unlabelled), training=True)
    assert str(err.value) == (
        "split 'train': every pixel of every label map is ignore_index 255, so training would learn nothing (loss 0) "
        "and the mIoU would be meaningless; label some pixels, or check task.params.ignore_index and how the label "
        "images are read"
    )


class Inner:
    def __init__(self, **attributes) -> None:
        vars(self).update(attributes)


def test_held_targets_are_the_splits_or_its_datasets_labels_or_targets_of_its_length():
    labels = torch.arange(4)
    assert torch.equal(held_targets(Split(labels=labels)), labels)
    assert torch.equal(held_targets(Split(dataset=Inner(labels=labels))), labels)
    assert torch.equal(held_targets(Split(dataset=Inner(targets=[0, 1, 2, 3]))), labels)
    assert held_targets(Split(dataset=Inner(labels=torch.arange(3)))) is None  # not one per item
    assert held_targets(Split(dataset=Inner())) is None
    assert held_targets(Split()) is None


def test_a_label_map_of_another_size_than_an_image_is_refused_naming_both():
    seg, target = get_task("segmentation"), torch.zeros(2, 4, 4, dtype=torch.long)
    seg.check_target_fits(target, {"rgb": torch.zeros(2, 3, 4, 4), "tokens": torch.zeros(2, 7, dtype=torch.long)})
    seg.check_target_fits(target, {"vector": torch.zeros(2, 5)})  # no image: nothing to compare
    with pytest.raises(TargetError) as err:
        seg.check_target_fits(
            target, {"rgb": torch.zeros(2, 3, 4, 4), "depth": torch.zeros(2, 1, 4, 5)}, torch.tensor([7, 8])
        )
    assert str(err.value) == (
        "'label': label map (4, 4) differs from image 'depth''s size (4, 5) at example index 7; a segmentation label "
        "needs one class per pixel"
    )


def test_a_task_without_its_own_loss_sum_sums_its_mean_loss_over_the_batch():
    class Mean(Task):
        def loss(self, output, target):
            return (output - target).abs().mean()

    total, count = Mean().loss_sum(torch.tensor([1.0, 2.0, 4.0]), torch.zeros(3))
    assert (float(total), count) == (7.0, 3)
    assert repr(get_task("regression")) == "Regression({'loss': 'mse'})"


def test_an_unknown_monitor_is_named_under_trainer_monitor():
    with pytest.raises(ConfigError) as err:
        get_task("classification").check_monitor("nope")
    assert str(err.value) == (
        "trainer.monitor: 'nope' is not a metric of task 'classification'; use one of accuracy, f1_macro, auroc, loss"
    )


class Items(Split):
    def __getitems__(self, rows):
        return {"label": self.labels[rows]}


def test_a_task_reading_its_output_count_off_the_targets_sets_it_once():
    reg = get_task("regression")
    for labels, expected in ((torch.zeros(1, 3), 3), (torch.zeros(1), 1)):
        split = Items(n=1, labels=labels)
        reg.complete_split(split)
        assert split.num_classes == expected
    declared = Items(n=1, labels=torch.zeros(1, 3), num_classes=5)
    reg.complete_split(declared)
    assert declared.num_classes == 5
    undeclared = Items(n=1, labels=torch.zeros(1, 3))
    get_task("classification").complete_split(undeclared)  # reads num_classes from the data, never the targets
    assert "num_classes" not in vars(undeclared)


def test_the_map_leaves_out_only_labels_without_a_positive_and_is_nan_without_any():
    ml = get_task("multilabel")
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.25], [0.6, 0.3], [0.2, 0.1]])
    target = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    )  # label 0: AP 1; label 1: one positive, AP 1/2
    metrics = ml.metrics(2)
    ml.update_metrics(metrics, logit(scores), target)
    assert float(metrics.compute()["map"]) == pytest.approx((1.0 + 0.5) / 2)
    metrics = ml.metrics(2)
    ml.update_metrics(metrics, logit(scores), torch.zeros(4, 2))
    assert torch.isnan(metrics.compute()["map"])


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


@pytest.mark.parametrize(
    ("ignore", "num_classes", "suggested"), [(3, 4, 255), (254, 255, 255), (255, 256, -1), (0, 300, -1)]
)
def test_an_ignore_index_that_is_a_class_is_refused_with_a_value_to_use(ignore, num_classes, suggested):
    seg = get_task({"name": "segmentation", "params": {"ignore_index": ignore}})
    with pytest.raises(ConfigError) as err:
        seg.check_classes(num_classes)
    assert str(err.value) == (
        f"task.params.ignore_index: {ignore} is a real class (the model predicts classes 0 .. {num_classes - 1}); "
        f"choose a value outside [0, {num_classes}), e.g. {suggested}"
    )
    get_task({"name": "segmentation", "params": {"ignore_index": num_classes}}).check_classes(num_classes)


def test_segmentation_names_what_is_wrong_with_a_label_map():
    assert refusal("segmentation", [[0]], 3) == (
        "'label': task 'segmentation' expects an int64 label map (B, H, W), got list"
    )
    assert refusal("segmentation", torch.zeros(1, 2, 2), 3).endswith(
        "(e.g. scaled to [0, 1]) no longer holds class ids: read it as integers"
    )
    assert refusal("segmentation", torch.zeros(1, 2, 2, dtype=torch.int32), 3).endswith(
        "got dtype torch.int32: convert it with .long()"
    )
    assert refusal("segmentation", torch.tensor([[[0, 3]]]), 3).endswith(
        "expects classes in [0, 3) or ignore_index 255; got 3 at row 0 of the batch"
    )


def test_a_batch_without_a_label_is_named():
    with pytest.raises(BatchError) as err:
        validate_labels({"a": torch.zeros(2)}, 3)
    assert str(err.value) == "the batch has no 'label' key"


def test_the_loss_and_an_undeclared_metric_are_read_as_is():
    cls = get_task("classification")
    assert cls.metric_spec("loss") == MetricSpec("loss", higher_is_better=False, digits=4, summary=False)
    assert cls.metric_spec("n") == MetricSpec("n", digits=4, summary=False)
    assert get_task({"params": {}}).name == "classification"


def trainer(monitor: str, min_delta: float | None = None):
    stopping = None if min_delta is None else SimpleNamespace(min_delta=min_delta)
    return SimpleNamespace(monitor=monitor, early_stopping=stopping)


def test_a_min_delta_as_wide_as_the_monitors_range_can_never_be_met():
    cls, reg = get_task("classification"), get_task("regression")
    assert cls.trainer_problem(trainer("accuracy", 1.0)) == (
        "trainer: early_stopping.min_delta 1 >= 1 can never be met by 'accuracy' (a fraction in [0, 1] here); use a "
        "value below 1"
    )
    assert cls.trainer_problem(trainer("accuracy", 0.99)) is None
    assert reg.trainer_problem(trainer("pearson", 2.0), "sweep.trainer") == (
        "sweep.trainer: early_stopping.min_delta 2 >= 2 can never be met by 'pearson' (a value in [-1, 1] here); use "
        "a value below 2"
    )
    assert reg.trainer_problem(trainer("pearson", 1.5)) is None
    assert reg.trainer_problem(trainer("mae", 1e9)) is None  # no bounds: any min_delta
    assert cls.trainer_problem(trainer("mae")) == (
        "trainer.monitor: 'mae' is not a metric of task 'classification'; use one of accuracy, f1_macro, auroc, loss"
    )
    with pytest.raises(ConfigError, match=r"^trainer: early_stopping.min_delta 1 >= 1"):
        cls.check_trainer(trainer("accuracy", 1.0))
    with pytest.raises(ConfigError, match=r"^sweep.trainer: early_stopping.min_delta 1 >= 1"):
        cls.check_trainer(trainer("accuracy", 1.0), "sweep.trainer")
    cls.check_trainer(trainer("accuracy", 0.5))


def test_an_unknown_task_is_named_under_the_key_asked_for():
    from mmdistill.tasks import TASKS

    with pytest.raises(ConfigError, match=r"^sweep.task: unknown task 'nope'; known: "):
        TASKS.get("nope", "sweep.task")


def test_bad_task_params_are_named_by_their_path_and_the_valid_keys():
    from pydantic import BaseModel, ConfigDict

    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 1

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inner: Inner = Inner()
        scale: float = 1.0

    class Nested(Task):
        pass

    Nested.Params = Params
    with pytest.raises(ConfigError, match=r"^task.params.colour: unknown key; valid keys: inner, scale$"):
        Nested({"colour": 1})
    with pytest.raises(ConfigError, match=r"^task.params.inner.size: "):
        Nested({"inner": {"size": "many"}})
