"""What the evaluation's plots draw: panels, lines, axis labels, titles, legends and grids (read from the figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from mmdistill.evaluation.modality_importance import plot_saliency_histogram
from mmdistill.evaluation.robustness import plot_noise_curves


@pytest.fixture
def closed_figures(monkeypatch):
    """The figures a plot closes, kept open for reading."""
    close = plt.close
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    for figure in figures:
        close(figure)


def noise_rows():
    """Two modalities under two noise kinds, levels given out of order; accuracy 90 - 10 * level, f1 one less."""
    return [
        {"modality": m, "kind": k, "level": level, "accuracy": 90.0 - 10 * level - (m == "b"), "f1": 1.0}
        for k in ("gaussian", "dropout")
        for m in ("a", "b")
        for level in (0.5, 0.0, 1.0)
    ]


def test_a_noise_plot_draws_a_line_per_modality_in_a_panel_per_kind(tmp_path, closed_figures):
    path = plot_noise_curves(noise_rows(), tmp_path / "nested" / "plots" / "noise.png", title="robustness")
    assert path == tmp_path / "nested" / "plots" / "noise.png" and path.is_file()
    (figure,) = closed_figures
    assert figure.get_suptitle() == "robustness"
    axes = figure.axes[:2]
    assert [ax.get_title() for ax in axes] == ["gaussian", "dropout"]
    assert [ax.get_xlabel() for ax in axes] == ["noise std / feature std", "drop probability"]
    assert [ax.get_ylabel() for ax in axes] == ["accuracy", "accuracy"]
    for ax in axes:
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["a", "b"]
        assert [line.get_marker() for line in lines] == ["o", "o"]
        assert [list(line.get_xdata()) for line in lines] == [[0.0, 0.5, 1.0]] * 2
        assert [list(line.get_ydata()) for line in lines] == [[90.0, 85.0, 80.0], [89.0, 84.0, 79.0]]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
        gridline = ax.xaxis.get_gridlines()[0]
        assert gridline.get_visible() and gridline.get_alpha() == pytest.approx(0.3)


def test_a_noise_plot_shows_the_metric_asked_for_and_no_title_without_one(tmp_path, closed_figures):
    plot_noise_curves(noise_rows()[:3], tmp_path / "noise.png", metric="f1")
    (figure,) = closed_figures
    assert figure.get_suptitle() == ""
    (ax,) = figure.axes[:1]
    assert ax.get_ylabel() == "f1"
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 1.0, 1.0]


def test_a_noise_plot_of_no_rows_is_one_empty_panel(tmp_path, closed_figures):
    path = plot_noise_curves([], tmp_path / "empty.png")
    assert path.is_file()
    (figure,) = closed_figures
    assert len(figure.axes) == 1 and figure.axes[0].get_lines() == []


def saliency_result(kind: str):
    instance = torch.tensor([[1e-7, 0.5], [2e-3, 0.25], [0.1, 3.0]])
    return {
        "instance": instance,
        "saliency_kind": kind,
        "modalities": ["a", "b"],
        "saliency": {"a": {"population": 0.12345}, "b": {"population": 2.0}},
    }


def bar_heights(ax) -> list[list[float]]:
    """The histogram's bar heights, one list per modality."""
    return [[patch.get_height() for patch in container.patches] for container in ax.containers]


def test_a_kl_saliency_histogram_bins_on_a_log_axis_from_1e_5(tmp_path, closed_figures):
    path = plot_saliency_histogram(saliency_result("kl"), tmp_path / "saliency.png")
    assert path.is_file()
    (figure,) = closed_figures
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "s_m(x) (kl; values below 1e-5 shown at 1e-5)"
    assert ax.get_ylabel() == "training examples"
    assert ax.get_title() == "instance saliency of each modality (teacher)"
    assert ax.title.get_fontsize() == 9
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a (S=0.123)", "b (S=2.000)"]
    assert legend.get_texts()[0].get_fontsize() == 8
    patches_a, patches_b = (container.patches for container in ax.containers)
    assert len(patches_a) == 49  # 50 edges from 1e-5 to 10 ** ceil(log10(max))
    assert patches_a[0].get_x() == pytest.approx(1e-5)
    assert patches_a[-1].get_x() + patches_a[-1].get_width() == pytest.approx(10.0)
    assert patches_a[0].get_height() == 1  # 1e-7 shown at 1e-5
    assert sum(bar_heights(ax)[0]) == 3 and sum(bar_heights(ax)[1]) == 3
    assert patches_a[0].get_alpha() == pytest.approx(0.6)


def test_a_true_class_saliency_histogram_has_40_linear_bins_and_the_title_given(tmp_path, closed_figures):
    result = saliency_result("true_class")
    result["instance"] = result["instance"] - 0.5  # true-class saliencies can be negative: shown as they are
    plot_saliency_histogram(result, tmp_path / "saliency.png", title="mine")
    (figure,) = closed_figures
    (ax,) = figure.axes
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "s_m(x) (true_class)"
    assert ax.get_title() == "mine"
    patches_a, _ = (container.patches for container in ax.containers)
    assert len(patches_a) == 40
    assert patches_a[0].get_x() == pytest.approx(1e-7 - 0.5)
