"""Missing-modality and noise-robustness evaluation, the same harness for every model.

A model is any ``nn.Module`` with a ``modalities`` attribute whose ``forward(batch)`` returns
logits. Metrics: the engine's (:mod:`mmdistill.engine.metrics`, torchmetrics), with the same names, for the
task (:mod:`mmdistill.tasks`; by default the dataset's own: accuracy and macro-F1 for classification, micro/macro-F1
and mAP for multilabel, MAE and Pearson r for regression, mIoU and pixel accuracy for segmentation).

* :func:`missing_modality_table`: the metrics for every non-empty subset S of the model's
  modalities, the others removed by the configured :class:`~mmdistill.masking.Masker`
  (the "missing modality" protocol of MultiBench, Liang et al., 2021, Sec. 4).
* :func:`noise_curves`: the metrics as one modality at a time is corrupted at increasing
  levels (MultiBench's robustness curves):

  - ``gaussian`` at level ``s``:  x <- x + s * sigma * eps,  eps ~ N(0, I), where ``sigma``
    is the per-feature standard deviation of x over the evaluated split;
  - ``dropout`` at level ``p``:   each element of x is set to 0 with probability p (token
    modalities: each token's attention-mask entry), without rescaling.

Both are seeded, so a table is reproducible.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..batch import LABEL, MASK_SUFFIX, Batch
from ..errors import ConfigError
from ..masking import Masker
from ..models import model_modalities
from ..tasks import DEFAULT_TASK, TASKS, Task, get_task

NOISE_KINDS = ("gaussian", "dropout")


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def iter_batches(dataset, batch_size: int = 256) -> Iterator[Batch]:
    """Consecutive batches (dicts) of a split (:class:`~mmdistill.data.contracts.split.Split`), in order."""
    n = len(dataset)
    for start in range(0, n, batch_size):
        yield dataset.__getitems__(list(range(start, min(start + batch_size, n))))


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 256, transform=None) -> tuple[Tensor, Tensor]:
    """(logits, labels) over ``dataset``; ``transform(batch) -> batch`` is applied before the forward pass."""
    model.eval()
    device = _device(model)
    outs, labels = [], []
    for batch in iter_batches(dataset, batch_size):
        if transform is not None:
            batch = transform(batch)
        batch = {k: v.to(device) for k, v in batch.items()}
        outs.append(model(batch).float().cpu())
        labels.append(batch[LABEL].cpu())
    return torch.cat(outs), torch.cat(labels)


def dataset_task(dataset, task=None) -> Task:
    """``task`` (a name, spec or Task), else the dataset's own (``dataset.task``, with the params it carries, such as
    its ``ignore_index``)."""
    if task is not None:
        return get_task(task)
    own = getattr(dataset, "_task", None)
    if isinstance(own, Task):
        return own
    return TASKS.get(getattr(dataset, "task", None) or DEFAULT_TASK).of_split(dataset)


def evaluate_metrics(model: nn.Module, dataset, batch_size: int = 256, transform=None, task=None) -> dict[str, float]:
    """The engine's metrics (:func:`mmdistill.engine.metrics.evaluate`: same names, same numbers as training's
    evaluation) of ``model`` on ``dataset`` for ``task`` (:func:`dataset_task`), in eval mode, as people read them
    (``Task.for_people``: percent metrics in percent), plus ``n``, the number of examples."""
    from ..engine.metrics import evaluate

    num_classes = getattr(dataset, "num_classes", None) or _num_outputs(model, dataset)
    task = dataset_task(dataset, task)
    out = evaluate(model, iter_batches(dataset, batch_size), num_classes, _device(model), transform, task=task)
    return {**task.for_people(out), "n": len(dataset)}


def _num_outputs(model: nn.Module, dataset) -> int:
    with torch.no_grad():
        out = model.eval()(next(iter_batches(dataset, 2)))
    return int(out.shape[1]) if out.dim() > 1 else 1


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first, then in the models' modality order."""
    return [s for r in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, r)]


def missing_modality_table(model: nn.Module, dataset, masker: Masker, batch_size: int = 256, task=None) -> list[dict]:
    """One row per non-empty subset of ``model.modalities`` present (the rest removed by ``masker``).

    Row: ``{"present": "a+b", "removed": "c" or "-", <the task's metrics>, "loss", "n"}`` (classification:
    accuracy, f1_macro; ``task``: see :func:`evaluate_metrics`).
    """
    mods = model_modalities(model)
    rows = []
    for subset in modality_subsets(mods):
        removed = [m for m in mods if m not in subset]
        metrics = evaluate_metrics(
            model, dataset, batch_size, transform=lambda b, r=removed: masker.remove(b, r), task=task
        )
        rows.append({"present": "+".join(subset), "removed": "+".join(removed) or "-", **metrics})
    return rows


def corrupt(
    batch: Batch, modality: str, kind: str, level: float, generator: torch.Generator, sigma: Tensor | None = None
) -> Batch:
    """A copy of ``batch`` with ``modality`` corrupted by ``kind`` noise at ``level`` (see the module docstring)."""
    out = dict(batch)
    x = batch[modality]
    if kind == "gaussian":
        if not x.is_floating_point():
            raise ConfigError(f"gaussian noise needs a float modality; {modality!r} holds tokens")
        scale = sigma if sigma is not None else x.std(0)
        out[modality] = x + level * scale * torch.randn(x.shape, generator=generator).to(x)
    elif kind == "dropout":
        if x.is_floating_point():
            keep = torch.rand(x.shape, generator=generator) >= level
            out[modality] = x * keep.to(x)
        else:
            key = modality + MASK_SUFFIX
            mask = batch.get(key, torch.ones(x.shape[:2], dtype=torch.long))
            out[key] = mask * (torch.rand(mask.shape, generator=generator) >= level).to(mask)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return out


def noise_curves(
    model: nn.Module,
    dataset,
    levels: Sequence[float],
    kinds: Sequence[str] = NOISE_KINDS,
    seed: int = 0,
    batch_size: int = 256,
    task=None,
) -> list[dict]:
    """Metrics with one modality corrupted at each level; one row per (modality, kind, level).

    Row: ``{"modality", "kind", "level", <the task's metrics>, "loss", "n"}``. Gaussian noise is
    skipped for token modalities. The noise of (modality, kind, level) is seeded from ``seed``.
    """
    for kind in kinds:
        if kind not in NOISE_KINDS:
            raise ConfigError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    rows = []
    tensors = dataset.tensors if getattr(dataset, "holds_columns", False) else {}  # whole columns at hand
    token_modalities = {s.name for s in dataset.specs() if s.tokens} if hasattr(dataset, "specs") else set()
    for m_i, m in enumerate(model_modalities(model)):
        x_all = tensors.get(m)
        sigma = x_all.float().std(0) if x_all is not None and x_all.is_floating_point() and len(x_all) > 1 else None
        for k_i, kind in enumerate(kinds):
            if kind == "gaussian" and (m in token_modalities or (x_all is not None and not x_all.is_floating_point())):
                continue
            for l_i, level in enumerate(levels):
                g = torch.Generator().manual_seed(seed * 1_000_003 + m_i * 10_007 + k_i * 101 + l_i)
                metrics = evaluate_metrics(
                    model,
                    dataset,
                    batch_size,
                    transform=lambda b, m=m, kind=kind, level=level, g=g, sigma=sigma: corrupt(
                        b, m, kind, float(level), g, sigma
                    ),
                    task=task,
                )
                rows.append({"modality": m, "kind": kind, "level": float(level), **metrics})
    return rows


def plot_noise_curves(
    rows: Sequence[dict], path: str | Path, metric: str = "accuracy", title: str | None = None
) -> Path:
    """PNG of ``metric`` against noise level: one panel per noise kind, one line per modality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.5 * max(len(kinds), 1), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for m in dict.fromkeys(r["modality"] for r in rows if r["kind"] == kind):
            pts = sorted((r["level"], r[metric]) for r in rows if r["kind"] == kind and r["modality"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xlabel("noise std / feature std" if kind == "gaussian" else "drop probability")
        ax.set_ylabel(metric)
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_rows(rows: Sequence[dict], columns: Sequence[str] | None = None, task=None) -> str:
    """A Markdown table of result rows (as :func:`evaluate_metrics` gives them: percent metrics already in percent),
    each metric of ``task`` (default: classification) with its digits."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    task = get_task(task)

    def fmt(k, v):
        if k in task.metric_specs and isinstance(v, float):
            return f"{v:.{task.metric_spec(k).digits}f}"
        return f"{v:g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(k, r[k]) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


__all__ = [
    "NOISE_KINDS",
    "corrupt",
    "evaluate_metrics",
    "format_rows",
    "iter_batches",
    "missing_modality_table",
    "modality_subsets",
    "noise_curves",
    "plot_noise_curves",
    "predict",
]
