"""The evaluation's smaller promises, each pinned where a mutation test found no test that would notice it broken:
how a distill() folder's result.json is read, which saved models a run folder should hold, and the Markdown table
of result rows."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmdistill.batch import ModalitySpec
from mmdistill.data import MultimodalDataset
from mmdistill.engine.system.runfolder import MARKER
from mmdistill.errors import ConfigError
from mmdistill.evaluation.modality_importance import importance_markdown, plot_saliency_histogram
from mmdistill.evaluation.robustness import corrupt, format_rows, noise_curves, plot_noise_curves
from mmdistill.evaluation.runs import _distill_result, evaluate_run, missing_models
from mmdistill.masking import Masker


# -- a distill() folder's result.json ----------------------------------------------------------------------------
def test_a_distill_folder_without_result_json_reads_as_an_empty_result(tmp_path):
    assert _distill_result(tmp_path / "result.json") == {}


def test_a_result_json_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "result.json").mkdir()
    with pytest.raises(ConfigError) as err:
        _distill_result(tmp_path / "result.json")
    assert str(err.value) == f"{tmp_path / 'result.json'}: not a regular file; distill() writes its result there"


def test_a_result_json_that_is_not_json_is_named_with_the_reason(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        _distill_result(path)
    assert str(err.value) == (
        f"{path}: not a readable result file of distill() (Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)); it is damaged"
    )


@pytest.mark.parametrize("result", [{"seed": -1}, {"seed": True}, {"seed": "1"}, {"seed": 1.0}, [0], "seed"])
def test_a_result_json_whose_seed_is_no_non_negative_integer_is_refused(tmp_path, result):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    with pytest.raises(ConfigError) as err:
        _distill_result(path)
    assert str(err.value) == (
        f"{path}: expected distill()'s result, a JSON object whose 'seed' is a non-negative integer; the file is "
        "damaged"
    )


@pytest.mark.parametrize("result", [{}, {"seed": 0}, {"seed": 3, "student": {"accuracy": 50.0}}])
def test_a_result_json_with_a_seed_or_none_is_read(tmp_path, result):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    assert _distill_result(path) == result


# -- the models a run folder should hold -------------------------------------------------------------------------
def run_config(method: str = "kd", teacher_checkpoint: str | None = None, teacher: bool = True):
    return SimpleNamespace(
        method=SimpleNamespace(name=method),
        teacher=SimpleNamespace(checkpoint=teacher_checkpoint) if teacher else None,
    )


def run_folder(tmp_path, marker: dict | None, seed_folders=()):
    if marker is not None:
        (tmp_path / MARKER).write_text(json.dumps({"mmdistill": "run folder", **marker}))
    for name in seed_folders:
        (tmp_path / name).mkdir()
    return tmp_path


def test_a_run_should_hold_teacher_student_and_no_kd_per_seed_of_its_marker_and_folders(tmp_path):
    run = run_folder(tmp_path, {"seeds": [0, 1]}, ["seed_0", "seed_10", "seed_x"])
    assert missing_models(run, run_config(), {"seed_0/teacher": 1, "seed_1/nokd": 1}) == [
        "seed_0/student",
        "seed_0/nokd",
        "seed_1/teacher",
        "seed_1/student",
        "seed_10/teacher",
        "seed_10/student",
        "seed_10/nokd",
    ]


def test_without_a_marker_the_seed_folders_say_the_seeds(tmp_path):
    run = run_folder(tmp_path, None, ["seed_2", "seed_"])
    assert missing_models(run, run_config(), {}) == ["seed_2/teacher", "seed_2/student", "seed_2/nokd"]


def test_a_distill_folder_misses_nothing(tmp_path):
    run = run_folder(tmp_path, {"command": "distill", "seeds": [0]}, ["seed_0"])
    assert missing_models(run, run_config(), {}) == []


def test_no_teacher_is_expected_from_a_checkpoint_or_a_method_without_one(tmp_path):
    run = run_folder(tmp_path, {"seeds": [0]})
    assert missing_models(run, run_config(teacher_checkpoint="t.safetensors"), {}) == ["seed_0/student", "seed_0/nokd"]
    assert missing_models(run, run_config(method="supervised"), {}) == ["seed_0/student"]
    assert missing_models(run, run_config(teacher=False), {}) == ["seed_0/student", "seed_0/nokd"]


def test_no_no_kd_student_is_expected_from_a_run_without_the_baseline(tmp_path):
    run = run_folder(tmp_path, {"seeds": [0], "baseline": False})
    assert missing_models(run, run_config(), {}) == ["seed_0/teacher", "seed_0/student"]


# -- result rows as Markdown -------------------------------------------------------------------------------------
def test_rows_format_each_metric_of_the_task_with_its_digits_and_the_rest_as_is():
    rows = [
        {"modality": "a", "level": 0.5, "mae": 0.123456, "pearson": 0.5, "n": 10},
        {"n": 12, "modality": "b", "level": 1.0, "mae": 2.0, "pearson": -0.25},
    ]
    assert format_rows(rows, task="regression") == (
        "| modality | level | mae | pearson | n |\n"
        "|---|---|---|---|---|\n"
        "| a | 0.5 | 0.1235 | 0.500 | 10 |\n"
        "| b | 1 | 2.0000 | -0.250 | 12 |"
    )
    assert (
        format_rows(rows, columns=["n", "mae"], task="regression")
        == "| n | mae |\n|---|---|\n| 10 | 0.1235 |\n| 12 | 2.0000 |"
    )
    assert format_rows([], task="regression") == ""


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("kinds", [["gaussian"], ["gaussian", "dropout"]])
def test_a_noise_plot_is_one_panel_of_4_5_by_3_5_inches_per_kind_at_120_dpi(tmp_path, kinds):
    rows = [
        {"modality": m, "kind": k, "level": level, "accuracy": 90.0 - 10 * level}
        for k in kinds
        for m in ("a", "b")
        for level in (0.0, 1.0)
    ]
    path = plot_noise_curves(rows, tmp_path / "plots" / "noise.png", title="t")
    assert png_size(path) == (round(4.5 * len(kinds) * 120), round(3.5 * 120))


# -- noise curves ----------------------------------------------------------------------------------------------
class Recorder(nn.Module):
    """Predicts nothing useful; keeps every batch it is given."""

    modalities = ("a", "t")

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.seen: list[dict] = []

    def forward(self, batch):
        self.seen.append({k: v.clone() for k, v in batch.items()})
        return torch.zeros(len(batch["a"]), 2) + self.bias


def test_noise_curves_corrupt_each_modality_with_its_seeded_noise_scaled_by_the_splits_std():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1])
    tokens = torch.randint(1, 50, (8, 6), generator=g)
    model = Recorder()
    rows = noise_curves(
        model, MultimodalDataset({"a": a, "t": tokens}, torch.arange(8) % 2, 2, "toy"), [0.5, 1.0], batch_size=4
    )
    runs = [("a", "gaussian", 0, 0), ("a", "dropout", 0, 1), ("t", "dropout", 1, 1)]  # no Gaussian noise on tokens
    assert [(r["modality"], r["kind"], r["level"]) for r in rows] == [
        (m, kind, level) for m, kind, _, _ in runs for level in (0.5, 1.0)
    ]
    seen = iter(model.seen)
    for m, kind, m_i, k_i in runs:
        for l_i, level in enumerate((0.5, 1.0)):
            noise = torch.Generator().manual_seed(m_i * 10_007 + k_i * 101 + l_i)  # seed 0
            for start in (0, 4):
                batch, x = next(seen), a[start : start + 4]
                if kind == "gaussian":
                    expected = x + level * a.std(0) * torch.randn(x.shape, generator=noise)
                    assert torch.allclose(batch["a"], expected)
                elif m == "a":
                    assert torch.equal(batch["a"], x * (torch.rand(x.shape, generator=noise) >= level))
                else:
                    assert torch.equal(batch["a"], x) and torch.equal(batch["t"], tokens[start : start + 4])
                    keep = (torch.rand((4, 6), generator=noise) >= level).long()
                    assert torch.equal(batch["t_mask"], keep)


def test_gaussian_noise_without_a_given_std_uses_the_batchs_per_feature_std():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2)) * torch.tensor([1.0, 10.0, 0.1])
    out = corrupt({"a": x}, "a", "gaussian", 0.5, torch.Generator().manual_seed(3))
    expected = x + 0.5 * x.std(0) * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out["a"], expected)
    with pytest.raises(ConfigError) as err:
        corrupt({"t": torch.ones(2, 3, dtype=torch.long)}, "t", "gaussian", 0.5, torch.Generator())
    assert str(err.value) == "gaussian noise needs a float modality; 't' holds tokens"


def test_dropout_keeps_each_element_with_its_seeded_draw():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    out = corrupt({"a": x}, "a", "dropout", 0.4, torch.Generator().manual_seed(5))
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) >= 0.4
    assert torch.equal(out["a"], x * keep)


def test_dropout_on_tokens_clears_entries_of_their_own_mask_or_of_a_full_one():
    tokens, mask = torch.ones(3, 5, dtype=torch.long), torch.tensor([[1, 1, 1, 0, 0]] * 3)
    keep = (torch.rand((3, 5), generator=torch.Generator().manual_seed(6)) >= 0.5).long()
    out = corrupt({"t": tokens, "t_mask": mask}, "t", "dropout", 0.5, torch.Generator().manual_seed(6))
    assert torch.equal(out["t_mask"], mask * keep) and torch.equal(out["t"], tokens)
    out = corrupt({"t": tokens}, "t", "dropout", 0.5, torch.Generator().manual_seed(6))
    assert out["t_mask"].dtype == torch.long and torch.equal(out["t_mask"], keep)


def test_corrupt_names_an_unknown_noise_kind():
    with pytest.raises(ConfigError) as err:
        corrupt({"a": torch.zeros(2, 2)}, "a", "blur", 0.5, torch.Generator())
    assert str(err.value) == "unknown noise kind 'blur'; known: gaussian, dropout"


def test_noise_levels_outside_zero_to_one_are_refused_before_the_folder_is_read(tmp_path):
    with pytest.raises(ConfigError) as err:
        evaluate_run(tmp_path, noise=True, levels=(0.5, 1.5))
    assert str(err.value) == (
        "--levels: noise levels must lie in [0, 1] (dropout probability; Gaussian std in units of the feature std), "
        "got [0.5, 1.5]"
    )
    with pytest.raises(ConfigError, match="is not a run folder"):  # levels are checked only for noise
        evaluate_run(tmp_path, levels=(0.5, 1.5))


# -- the modality analysis as Markdown ----------------------------------------------------------------------------
def test_the_modality_analysis_reads_as_two_tables():
    result = {
        "saliency_kind": "kl",
        "saliency": {
            "a": {"population": 0.123456, "median": 0.05, "share_most_salient": 0.756},
            "b": {"population": 0.01, "median": 0.00012, "share_most_salient": 0.244},
        },
        "task": "classification",
        "accuracy": [
            {"model": "teacher", "input": "full", "accuracy": 91.234, "f1_macro": 90.0},
            {"model": "seed_0/student", "input": "a", "accuracy": 50.0, "f1_macro": 33.333},
        ],
    }
    assert importance_markdown(result) == (
        "Teacher saliency (kl, training split):\n"
        "\n"
        "| modality | population S_m | median s_m(x) | share of examples where most salient |\n"
        "|---|---|---|---|\n"
        "| a | 0.1235 | 0.0500 | 0.76 |\n"
        "| b | 0.0100 | 0.0001 | 0.24 |\n"
        "\n"
        "Test accuracy on the full input and on each modality alone:\n"
        "\n"
        "| model | input | accuracy | macro-F1 |\n"
        "|---|---|---|---|\n"
        "| teacher | full | 91.23 | 90.00 |\n"
        "| seed_0/student | a | 50.00 | 33.33 |\n"
    )


def test_the_modality_analysis_of_another_task_shows_its_metrics_and_no_saliency_for_one_modality():
    result = {"task": "regression", "accuracy": [{"model": "teacher", "input": "full", "mae": 0.5, "pearson": 0.25}]}
    assert importance_markdown(result) == (
        "Test metrics on the full input and on each modality alone:\n"
        "\n"
        "| model | input | MAE | Pearson r |\n"
        "|---|---|---|---|\n"
        "| teacher | full | 0.5000 | 0.250 |\n"
    )


@pytest.mark.parametrize("kind", ["kl", "true_class"])
def test_the_saliency_histogram_is_5_5_by_3_5_inches_at_120_dpi(tmp_path, kind):
    instance = torch.rand(30, 2, generator=torch.Generator().manual_seed(7))
    result = {
        "instance": instance,
        "saliency_kind": kind,
        "modalities": ["a", "b"],
        "saliency": {"a": {"population": 0.5}, "b": {"population": 0.25}},
    }
    path = plot_saliency_histogram(result, tmp_path / "saliency.png")
    assert png_size(path) == (660, 420)


# -- which task and device an evaluation uses ---------------------------------------------------------------------
class Declared:
    """A split that declares only what is given."""

    def __init__(self, **attributes) -> None:
        vars(self).update(attributes)


def test_the_task_is_the_one_given_else_the_splits_own_else_classification():
    from mmdistill.evaluation.robustness import dataset_task
    from mmdistill.tasks import get_task

    own = get_task("regression")
    assert dataset_task(Declared(_task=own, task="multilabel"), "segmentation").name == "segmentation"
    assert dataset_task(Declared(_task=own, task="multilabel")) is own
    assert dataset_task(Declared(_task="regression", task="multilabel")).name == "multilabel"
    assert dataset_task(Declared(task="segmentation", ignore_index=-1)).ignore_index == -1
    assert dataset_task(Declared(task=None)).name == "classification"
    assert dataset_task(Declared()).name == "classification"


def test_the_device_is_the_models_parameters_or_the_cpu_without_any():
    from mmdistill.evaluation.robustness import _device

    assert _device(nn.Identity()) == torch.device("cpu")
    assert _device(nn.Linear(1, 1).to(torch.float64)) == torch.device("cpu")
    meta = nn.Linear(1, 1, device="meta")
    assert _device(meta) == torch.device("meta")


def test_metrics_are_for_the_task_given_over_every_example_and_read_in_percent():
    from mmdistill.evaluation.robustness import evaluate_metrics, missing_modality_table

    a = torch.tensor([[2.0], [-1.0], [3.0], [-2.0], [1.0]])
    data = MultimodalDataset({"a": a, "t": torch.ones(5, 2, dtype=torch.long)}, torch.tensor([1, 0, 0, 0, 1]), 2, "toy")

    class Sign(Recorder):
        def forward(self, batch):
            return torch.cat([-batch["a"], batch["a"]], 1) + self.bias

    row = evaluate_metrics(Sign(), data, batch_size=2)
    assert row["n"] == 5 and row["accuracy"] == pytest.approx(80.0)
    undeclared = MultimodalDataset(
        {"a": a, "t": torch.ones(5, 2, dtype=torch.long)}, torch.tensor([1, 0, 0, 0, 1]), 2, "toy"
    )
    undeclared.num_classes = None  # read off the model's output
    assert evaluate_metrics(Sign(), undeclared)["accuracy"] == pytest.approx(80.0)
    masker = Masker([ModalitySpec("a", (1,)), ModalitySpec("t", (2,), tokens=True)], strategy="zeros")
    rows = missing_modality_table(Sign(), data, masker, batch_size=2)
    assert [(r["present"], r["removed"], r["n"]) for r in rows] == [("a+t", "-", 5), ("a", "t", 5), ("t", "a", 5)]
