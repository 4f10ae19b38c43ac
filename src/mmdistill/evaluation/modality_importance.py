"""How much each modality matters, to the teacher and to its students (MSD's empirical study).

For a teacher and any number of students on the same data:

* population saliency S_m of each of the teacher's modalities and the distribution of the
  instance saliency s_m(x) (:mod:`mmdistill.methods.msd_saliency`), as a table and a histogram PNG;
* every model's accuracy on the full input and on each modality alone (the others removed by
  the masking strategy), in the same harness as missing-modality evaluation; for another task
  (:mod:`mmdistill.tasks`) its metrics (``summary.md``'s columns) and its ``kl`` saliency (``task.saliency``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..data.contracts.split import Splits
from ..errors import ConfigError
from ..io import atomic_write
from ..masking import Masker
from ..methods.msd_saliency import SaliencyKind, instance_saliency
from ..models.multimodal import model_modalities
from ..tasks import DEFAULT_TASK, get_task
from ..tasks.base import TRUE_CLASS
from .robustness import dataset_task, missing_modality_table


def modality_importance(
    teacher: nn.Module,
    students: Mapping[str, nn.Module],
    data: Splits,
    masker: Masker,
    kind: SaliencyKind = "kl",
    task=None,
) -> dict:
    """``{"saliency": {m: {...}}, "instance": (N, M) tensor, "accuracy": [rows]}`` on train (saliency) and test
    (the rows: the task's metrics; ``task`` None: the data's own)."""
    task = dataset_task(data.train, task)
    if kind == "true_class" and not task.gives_to_methods(TRUE_CLASS):
        raise ConfigError(
            f"--saliency: 'true_class' needs one true class per example, which task {task.name!r} does not have; use kl"
        )
    mods = list(model_modalities(teacher))
    out: dict = {"modalities": mods, "saliency_kind": kind, "task": task.name}
    if len(mods) >= 2:
        s = instance_saliency(teacher, data.train, masker, mods, kind, task=task)
        out["instance"] = s
        out["saliency"] = {
            m: {
                "population": float(s[:, i].mean()),
                "median": float(s[:, i].median()),
                "share_most_salient": float((s.argmax(1) == i).float().mean()),
            }
            for i, m in enumerate(mods)
        }
    rows = []
    for name, model in {"teacher": teacher, **students}.items():
        model_mods = model_modalities(model)
        for r in missing_modality_table(model, data.test, masker, task=task):
            if r["present"].count("+") in (0, len(model_mods) - 1):  # each modality alone, and the full input
                rows.append(
                    {
                        "model": name,
                        "input": r["present"] if r["removed"] != "-" else "full",
                        **{key: r[key] for key, _ in task.summary_columns()},
                    }
                )
    out["accuracy"] = rows
    return out


def plot_saliency_histogram(
    result: dict, path: str | Path, title: str = "instance saliency of each modality (teacher)"
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s: torch.Tensor = result["instance"]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    log = result["saliency_kind"] == "kl"  # KL saliencies span decades: bins on a log axis
    values = s.clamp(min=1e-5) if log else s
    bins = torch.logspace(-5, float(values.max().log10().ceil()), 50).tolist() if log else 40
    for i, m in enumerate(result["modalities"]):
        ax.hist(values[:, i].numpy(), bins=bins, alpha=0.6, label=f"{m} (S={result['saliency'][m]['population']:.3f})")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"s_m(x) ({result['saliency_kind']}{'; values below 1e-5 shown at 1e-5' if log else ''})")
    ax.set_ylabel("training examples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def importance_markdown(result: dict) -> str:
    lines = []
    if "saliency" in result:
        lines += [
            f"Teacher saliency ({result['saliency_kind']}, training split):",
            "",
            "| modality | population S_m | median s_m(x) | share of examples where most salient |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {v['population']:.4f} | {v['median']:.4f} | {v['share_most_salient']:.2f} |"
            for m, v in result["saliency"].items()
        ]
        lines.append("")
    task = get_task(result.get("task", DEFAULT_TASK))
    columns = task.summary_columns()
    what = "accuracy" if task.name == DEFAULT_TASK else "metrics"
    lines += [
        f"Test {what} on the full input and on each modality alone:",
        "",
        "| model | input | " + " | ".join(spec.title for _, spec in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for r in result["accuracy"]:  # the rows hold the metrics as people read them (percent metrics in percent)
        cells = [f"{r[key]:.{spec.digits}f}" for key, spec in columns]
        lines.append(f"| {r['model']} | {r['input']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
