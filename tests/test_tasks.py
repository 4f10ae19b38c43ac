"""Tasks: each loss and KD form against hand-worked values or an independent formula, the
per-example forms, ignored pixels, the target checks, and the ``task:`` key of the config."""

from __future__ import annotations

import math
import re

import pytest
import torch

from mmdistill.config import RunConfig, load_config, validate
from mmdistill.errors import BatchError, ConfigError, DataError, TargetError
from mmdistill.methods.kd import kd_loss
from mmdistill.methods.msd_saliency import saliency_from_logits
from mmdistill.tasks import TASKS, get_task, validate_labels

LN3 = math.log(3.0)
# s = (0, 0), t = (2 ln 3, 0), T = 2: p_t = (3/4, 1/4), p_s = (1/2, 1/2);
# T^2 KL(p_t || p_s) = 4 (3/4 ln(3/2) + 1/4 ln(1/2)) = 0.523248...
HAND_KD = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))


def test_the_four_tasks_are_registered_by_name():
    assert TASKS.names() == ["classification", "multilabel", "regression", "segmentation"]
    assert get_task(None).name == "classification"


# -- classification ------------------------------------------------------------------------------------------------
def test_classification_kd_is_methods_kd_loss_and_the_hand_value():
    task = get_task("classification")
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * LN3, 0.0]])
    assert task.kd_loss(s, t, 2.0).item() == pytest.approx(HAND_KD, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert torch.equal(task.kd_loss(s, t, 3.0), kd_loss(s, t, 3.0))
    assert task.kd_per_example(s, t, 3.0).mean().item() == pytest.approx(kd_loss(s, t, 3.0).item(), rel=1e-6)


def test_classification_loss_is_cross_entropy_by_hand():
    out, y = torch.tensor([[LN3, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    # -ln(3/4) and -ln(1/2)
    assert get_task("classification").loss(out, y).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)


def test_classification_saliency_is_msd_kl_saliency():
    g = torch.Generator().manual_seed(1)
    full, removed = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    expected = saliency_from_logits(full, removed[None], None, "kl")[0]
    assert torch.allclose(get_task("classification").saliency(full, removed), expected, atol=1e-6)


# -- multilabel -----------------------------------------------------------------------------------------------------
def binary_kl_by_hand(s: torch.Tensor, t: torch.Tensor, T: float) -> float:
    """T^2 * mean over examples and labels of q ln(q/p) + (1-q) ln((1-q)/(1-p)), q = sigmoid(t/T), p = sigmoid(s/T)."""
    total, n = 0.0, 0
    for s_row, t_row in zip(s.tolist(), t.tolist()):
        for a, b in zip(s_row, t_row):
            p, q = 1 / (1 + math.exp(-a / T)), 1 / (1 + math.exp(-b / T))
            total += q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
            n += 1
    return T * T * total / n


def test_multilabel_kd_is_the_mean_of_per_label_binary_kls():
    task = get_task("multilabel")
    # one label, q = sigmoid(ln 3) = 3/4, p = 1/2: the same number as the two-class softmax case
    assert task.kd_loss(torch.tensor([[0.0]]), torch.tensor([[2 * LN3]]), 2.0).item() == pytest.approx(
        HAND_KD, rel=1e-6
    )
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 5, generator=g) * 3, torch.randn(4, 5, generator=g) * 3
    for T in (1.0, 2.5):
        assert task.kd_loss(s, t, T).item() == pytest.approx(binary_kl_by_hand(s, t, T), rel=1e-5)
        per = task.kd_per_example(s, t, T)
        assert per.shape == (4,)
        assert per[1].item() == pytest.approx(binary_kl_by_hand(s[1:2], t[1:2], T), rel=1e-5)


def test_multilabel_loss_is_bce_with_logits_by_hand():
    out, y = torch.tensor([[LN3, 0.0]]), torch.tensor([[1.0, 0.0]])
    # -ln(sigmoid(ln 3)) = ln(4/3); -ln(1 - sigmoid(0)) = ln 2
    assert get_task("multilabel").loss(out, y).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)


# -- regression -----------------------------------------------------------------------------------------------------
def test_regression_loss_mse_and_l1_by_hand():
    out, y = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    assert get_task("regression").loss(out, y).item() == pytest.approx(2.5)  # (1 + 4) / 2
    assert get_task({"name": "regression", "params": {"loss": "l1"}}).loss(out, y).item() == pytest.approx(1.5)


def test_regression_pairs_a_one_column_output_with_a_flat_target_instead_of_broadcasting():
    out, y = torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 4.0])
    assert get_task("regression").loss(out, y).item() == pytest.approx(2.5)  # broadcasting (2,1) - (2,) would give 4.5
    with pytest.raises(BatchError, match=r"'label': shape \(2, 3\) does not match the model's output \(2, 2\)"):
        get_task("regression").loss(torch.zeros(2, 2), torch.zeros(2, 3))


def test_regression_kd_is_the_distance_to_the_teacher_and_refuses_a_temperature():
    task = get_task("regression")
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2)
    assert task.kd_loss(s, t).item() == pytest.approx(1.25)  # (1 + 4 + 0 + 0) / 4
    assert task.kd_per_example(s, t).tolist() == pytest.approx([2.5, 0.0])
    l1 = get_task({"name": "regression", "params": {"loss": "l1"}})
    assert l1.kd_per_example(s, t).tolist() == pytest.approx([1.5, 0.0])
    with pytest.raises(ConfigError, match=r"method\.params\.temperature: 4\.0 refused for task 'regression'"):
        task.kd_loss(s, t, 4.0)


# -- segmentation ---------------------------------------------------------------------------------------------------
def seg_case(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    y = torch.randint(0, 4, (2, 3, 5), generator=g)
    y[0, 0, :3] = 255
    y[1, 2, 4] = 255
    return s, t, y


def test_segmentation_kd_by_hand_on_one_valid_pixel():
    s = torch.tensor([[[[0.0, 5.0]], [[0.0, -5.0]]]])  # (1, 2, 1, 2): pixel 0 logits (0, 0), pixel 1 (5, -5)
    t = torch.tensor([[[[2 * LN3, -3.0]], [[0.0, 7.0]]]])
    y = torch.tensor([[[0, 255]]])
    task = get_task("segmentation")
    assert task.kd_loss(s, t, 2.0, y).item() == pytest.approx(HAND_KD, rel=1e-6)
    assert task.kd_per_example(s, t, 2.0, y).tolist() == pytest.approx([HAND_KD], rel=1e-6)
    # CE at pixel 0 with logits (ln 3, 0) and class 0: -ln(3/4); pixel 1 ignored
    out = torch.tensor([[[[LN3, 9.0]], [[0.0, -9.0]]]])
    assert task.loss(out, y).item() == pytest.approx(math.log(4 / 3), rel=1e-6)


def test_segmentation_kd_equals_classification_kd_on_the_valid_pixels_flattened():
    s, t, y = seg_case()
    task = get_task("segmentation")
    rows_s, rows_t = [], []
    for b in range(2):
        for i in range(3):
            for j in range(5):
                if y[b, i, j] != 255:
                    rows_s.append(s[b, :, i, j])
                    rows_t.append(t[b, :, i, j])
    flat = get_task("classification").kd_loss(torch.stack(rows_s), torch.stack(rows_t), 2.0)
    assert task.kd_loss(s, t, 2.0, y).item() == pytest.approx(flat.item(), rel=1e-6)
    # per example: the mean over that example's own valid pixels
    valid0 = (y[0] != 255).flatten()
    per_pixel0 = kd_loss(s[0].flatten(1).T[valid0], t[0].flatten(1).T[valid0], 2.0)
    assert task.kd_per_example(s, t, 2.0, y)[0].item() == pytest.approx(per_pixel0.item(), rel=1e-6)


def test_ignored_pixels_contribute_nothing():
    s, t, y = seg_case()
    task = get_task("segmentation")
    before = (task.loss(s, y), task.kd_loss(s, t, 2.0, y), task.kd_per_example(s, t, 2.0, y))
    ignored = (y == 255).unsqueeze(1).expand_as(s)
    s2, t2 = s.clone(), t.clone()
    s2[ignored], t2[ignored] = 50.0, -50.0
    after = (task.loss(s2, y), task.kd_loss(s2, t2, 2.0, y), task.kd_per_example(s2, t2, 2.0, y))
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    # and a pixel that is not ignored does count
    s2[0, :, 2, 4] += torch.tensor([9.0, 0.0, 0.0, -9.0])
    assert task.kd_loss(s2, t, 2.0, y) != before[1]


def test_a_batch_without_valid_pixels_gives_zero_not_nan():
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    y = torch.full((1, 2, 2), 255)
    task = get_task("segmentation")
    for value in (task.loss(s, y), task.kd_loss(s, s.detach() + 1, 2.0, y)):
        assert value.item() == 0.0
        value.backward()
    assert task.kd_per_example(s, s.detach() + 1, 2.0, y).tolist() == [0.0]


def test_a_label_map_whose_size_differs_from_the_output_is_named():
    with pytest.raises(BatchError, match=r"'label': label map of shape \(1, 4, 4\) does not match .* \(1, 3, 2, 2\)"):
        get_task("segmentation").loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long))


# -- every task --------------------------------------------------------------------------------------------------
G = torch.Generator().manual_seed(5)
OUTPUTS = {  # (student, teacher, target); segmentation: every example has the same number of valid pixels
    "classification": (torch.randn(4, 3, generator=G), torch.randn(4, 3, generator=G), torch.tensor([0, 1, 2, 0])),
    "multilabel": (
        torch.randn(4, 3, generator=G),
        torch.randn(4, 3, generator=G),
        torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]),
    ),
    "regression": (torch.randn(4, 2, generator=G), torch.randn(4, 2, generator=G), torch.randn(4, 2, generator=G)),
    "segmentation": (
        torch.randn(4, 3, 2, 2, generator=G),
        torch.randn(4, 3, 2, 2, generator=G),
        torch.tensor([[[0, 1], [2, 255]]] * 4),
    ),
}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_kd_is_zero_at_the_teacher_and_the_mean_of_its_per_example_form(name):
    task = get_task(name)
    s, t, y = OUTPUTS[name]
    T = 1.0 if name == "regression" else 2.0
    assert task.kd_loss(t, t, T, y).item() == pytest.approx(0.0, abs=1e-6)
    assert task.kd_loss(s, t, T, y).item() > 0
    per = task.kd_per_example(s, t, T, y)
    assert per.shape == (4,)
    assert per.mean().item() == pytest.approx(task.kd_loss(s, t, T, y).item(), rel=1e-5)
    s = s.clone().requires_grad_(True)
    (task.kd_loss(s, t, T, y) + task.loss(s, y)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# -- targets of the wrong form ------------------------------------------------------------------------------------
BAD_TARGETS = [
    (
        "classification-multi-hot",
        "classification",
        torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
        3,
        r"'label': task 'classification' expects one class index per example.*multi-hot.*use task 'multilabel'",
    ),
    ("classification-float", "classification", torch.tensor([0.0, 1.0]), 3, r"1-D integer tensor.*torch\.float32"),
    (
        "multilabel-class-indices",
        "multilabel",
        torch.tensor([0, 2]),
        3,
        r"'label': task 'multilabel' expects a float multi-hot tensor \(B, 3\).*class indices: use task "
        r"'classification'",
    ),
    ("multilabel-int-multi-hot", "multilabel", torch.tensor([[1, 0, 1]]), 3, r"got dtype torch\.int64.*\.float\(\)"),
    ("multilabel-wrong-width", "multilabel", torch.zeros(2, 4), 3, r"\(B, 3\), one column per label; .*\(2, 4\)"),
    (
        "multilabel-not-0-1",
        "multilabel",
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]]),
        3,
        r"values 0 or 1; got 0\.5 for label 1 at example index 11",
    ),
    (
        "regression-int",
        "regression",
        torch.tensor([1, 2]),
        1,
        r"'label': task 'regression' expects a float tensor \(B,\)",
    ),
    (
        "regression-nan",
        "regression",
        torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]),
        2,
        r"non-finite.*example index 11",
    ),
    ("regression-wrong-width", "regression", torch.zeros(2, 3), 2, r"\(B, 2\) for a model with 2 output\(s\)"),
    (
        "segmentation-float",
        "segmentation",
        torch.zeros(2, 4, 4),
        3,
        r"'label': task 'segmentation' expects an int64 label map \(B, H, W\).*got dtype torch\.float32.*read it "
        r"as integers",
    ),
    ("segmentation-uint8", "segmentation", torch.zeros(2, 4, 4, dtype=torch.uint8), 3, r"torch\.uint8.*\.long\(\)"),
    (
        "segmentation-no-map",
        "segmentation",
        torch.zeros(2, dtype=torch.long),
        3,
        r"label map \(B, H, W\), got shape \(2,\)",
    ),
    (
        "segmentation-unknown-class",
        "segmentation",
        torch.tensor([[[0, 1]], [[255, 7]]]),
        3,
        r"classes in \[0, 3\) or ignore_index 255; got 7 at example index 11",
    ),
]


@pytest.mark.parametrize("case,task,target,n,pattern", BAD_TARGETS, ids=[c[0] for c in BAD_TARGETS])
def test_a_target_of_the_wrong_form_is_refused_naming_key_and_form(case, task, target, n, pattern):
    with pytest.raises(TargetError, match=pattern) as err:
        validate_labels({"label": target, "index": torch.tensor([10, 11])}, n, task)
    assert isinstance(err.value, DataError) and isinstance(err.value, BatchError)


def test_good_targets_pass():
    validate_labels({"label": torch.tensor([0, 2])}, 3)
    validate_labels({"label": torch.tensor([[1.0, 0, 1], [0, 0, 0]])}, 3, "multilabel")
    validate_labels({"label": torch.tensor([0.5, -2.0])}, 1, "regression")
    validate_labels({"label": torch.tensor([[0.5, -2.0]])}, 2, "regression")
    validate_labels({"label": torch.tensor([[[0, 255], [2, 1]]])}, 3, "segmentation")


def test_classification_out_of_range_names_the_example_by_index_or_row():
    with pytest.raises(BatchError, match=r"values must lie in \[0, 3\), got min 0 and max 3 \(value 3 at row 1 of the"):
        validate_labels({"label": torch.tensor([0, 3])}, 3)
    with pytest.raises(BatchError, match=r"value -1 at example index 7"):
        validate_labels({"label": torch.tensor([-1, 2]), "index": torch.tensor([7, 8])}, 3)


@pytest.mark.parametrize("ignore_index,num_classes", [(2, 4), (0, 2), (255, 300)])
def test_an_ignore_index_that_is_a_real_class_is_refused(ignore_index, num_classes):
    task = get_task({"name": "segmentation", "params": {"ignore_index": ignore_index}})
    pattern = rf"task\.params\.ignore_index: {ignore_index} is a real class .*outside \[0, {num_classes}\)"
    with pytest.raises(ConfigError, match=pattern):
        task.check_target(torch.zeros(1, 2, 2, dtype=torch.long), num_classes)
    with pytest.raises(ConfigError, match=pattern):
        task.metrics(num_classes)
    get_task({"name": "segmentation", "params": {"ignore_index": -1}}).check_target(torch.zeros(1, 2, 2).long(), 300)


# -- the task: key of the config ----------------------------------------------------------------------------------
BASE = """\
student: {model: {modalities: [a]}}
"""


def config(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(BASE + text)
    return load_config(path, check_machine=False)


def test_task_default_plain_string_and_mapping(tmp_path):
    assert config(tmp_path, "").task.name == "classification"
    cfg = config(tmp_path, "task: regression\n")
    assert (cfg.task.name, cfg.trainer.monitor) == ("regression", "mae")  # the task's monitor when none is named
    cfg = config(tmp_path, "task: {name: segmentation, params: {ignore_index: -1}}\ntrainer: {monitor: loss}\n")
    assert (cfg.task.params, cfg.trainer.monitor) == ({"ignore_index": -1}, "loss")
    assert validate(RunConfig, cfg.model_dump(mode="json")) == cfg  # config.yaml reads back the same


CONFIG_ERRORS = [
    (
        "unknown-task",
        "task: detection\n",
        r"task\.name: unknown task 'detection'; known: classification, multilabel, regression, segmentation",
    ),
    (
        "unknown-task-param",
        "task: {name: segmentation, params: {ignore: 3}}\n",
        r"task\.params\.ignore: unknown key; valid keys: ignore_index",
    ),
    ("bad-task-param", "task: {name: regression, params: {loss: huber}}\n", r"task\.params\.loss: .*'mse' or 'l1'"),
    (
        "monitor-not-of-the-task",
        "task: regression\ntrainer: {monitor: accuracy}\n",
        r"trainer\.monitor: 'accuracy' is not a metric of task 'regression'; use one of mae, pearson, loss",
    ),
    (
        "monitor-of-another-task",
        "trainer: {monitor: miou}\n",
        r"trainer\.monitor: 'miou' is not a metric of task 'classification'; use one of accuracy, f1_macro, "
        r"auroc, loss",
    ),
    (
        "teacher-monitor",
        "task: multilabel\nteacher: {model: {modalities: [a]}, trainer: {monitor: accuracy}}\n",
        r"teacher\.trainer\.monitor: 'accuracy' is not a metric of task 'multilabel'",
    ),
    (
        "method-needs-classes",
        "task: multilabel\nmethod: {name: dkd}\n",
        r"method\.name: 'dkd' does not carry over to task 'multilabel'",
    ),
    ("dist-on-segmentation", "task: segmentation\nmethod: {name: dist}\n", r"method\.name: 'dist' does not carry over"),
    (
        "regression-temperature",
        "task: regression\nmethod: {name: kd, params: {temperature: 4.0}}\n",
        r"method\.params\.temperature: refused for task 'regression'.*remove it",
    ),
    (
        "msd-learned",
        "task: segmentation\nmethod: {name: msd, params: {weighting: learned}}\n",
        r"method\.params\.weighting: 'learned' does not carry over to task 'segmentation'",
    ),
    (
        "msd-true-class",
        "task: multilabel\nmethod: {name: msd, params: {saliency: true_class}}\n",
        r"method\.params\.saliency: 'true_class' does not carry over to task 'multilabel': it needs one true class",
    ),
]


@pytest.mark.parametrize("case,text,pattern", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_bad_task_settings_in_yaml_are_refused_by_key(tmp_path, case, text, pattern):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, text)
    message = str(err.value)
    assert re.search(pattern, message), message
    assert "(got {" not in message  # the cross-field checks name their key, not the whole config


def test_the_cli_refuses_an_unknown_task_before_writing_anything(tmp_path, tiny_config, capsys):
    from mmdistill.cli import main

    out = tmp_path / "out"
    assert main(["train", str(tiny_config()), "task=detection", "--out", str(out), "--quiet"]) == 2
    assert re.search(r"task\.name: unknown task 'detection'; known: classification", capsys.readouterr().err)
    assert not out.exists()
