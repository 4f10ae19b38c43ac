"""The pilot distillation for a task other than single-label classification (multilabel, regression).

The same cross-fitted experiment as :mod:`.pilot`, with the task's own loss, KD term and monitored metric read off
the task plugin (:class:`mmdistill.tasks.Task`: ``loss``, ``kd_loss``, ``monitor_value``, ``default_monitor``):
the training rows are split into K folds, R times over; on each split a linear teacher is trained on the other
folds' x_a, a no-KD and a KD student on their x_b,

    no-KD:  L = loss(s(x_b), y)
    KD:     L = w0 loss(s(x_b), y) + w1 kd_loss(s(x_b), t(x_a))      (T = 1)

(regression: MSE to the label, plus MSE to the teacher's prediction; multilabel: BCE, plus the per-label binary KL
to the teacher's sigmoid probabilities, whose gradient is that of BCE with those probabilities as soft targets),
full-batch Adam on all R x K runs at once. Targets that are not 0/1 indicators are standardised per column for
training and the predictions mapped back, so the step size does not depend on the target's units. Every model is
scored on its held-out fold with the task's ``default_monitor``; per repeat (each row held out once)

    gain = sign (metric(KD) - metric(no-KD)) x (100 for a percent metric),   sign = +1 if higher is better, else -1

so a positive gain is an improvement (regression: a lower MAE, in the target's units; multilabel: micro-F1 points).
Reported: its mean and standard error over the R repeats, and the teacher's, no-KD and KD students' metric. No
calibration maps it to the gain of a real run: it is evidence, not a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .pilot import cross_fit_splits

ADAM_LR = 0.05  # full-batch Adam on standardised inputs (and standardised real-valued targets)
EPOCHS = 200


@dataclass
class TaskPilotResult:
    metric: str  # the task's default_monitor
    higher_is_better: bool
    percent: bool  # gain in points (x 100) when True, else in the metric's own units
    gain: float  # the improvement KD brings, sign-adjusted (see the module docstring)
    gain_se: float
    teacher: float  # the metric as people read it (x 100 for a percent metric)
    no_kd: float
    kd: float
    models: int


def task_pilot(
    task,
    xa: Tensor,
    xb: Tensor,
    y: Tensor,
    *,
    folds: int = 5,
    repeats: int = 4,
    epochs: int = EPOCHS,
    lr: float = ADAM_LR,
    kd_weights: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> TaskPilotResult:
    """Cross-fitted pilot of no-KD vs KD linear students under ``task`` (a Task); ``y`` (N, C) float targets."""
    folds = max(2, min(folds, y.shape[0] // 4))
    splits = cross_fit_splits(y.shape[0], folds, repeats, seed)
    xa, xb, y = xa.float(), xb.float(), y.float()
    mu, sd = _target_scale(y)
    z = (y - mu) / sd
    train_rows = torch.stack([tr for tr, _ in splits])
    teacher = _fit(task, xa, z, train_rows, None, kd_weights, epochs, lr, seed)
    soft = torch.einsum("jmd,jdc->jmc", xa[train_rows], teacher[0]) + teacher[1][:, None]
    no_kd = _fit(task, xb, z, train_rows, None, kd_weights, epochs, lr, seed + 1)
    kd = _fit(task, xb, z, train_rows, soft.detach(), kd_weights, epochs, lr, seed + 1)
    spec = task.metric_spec(task.default_monitor)
    scale = 100.0 if spec.percent else 1.0
    scores = {key: torch.zeros(repeats) for key in ("teacher", "no_kd", "kd")}
    for r in range(repeats):
        held = [(j, splits[j][1]) for j in range(r * folds, (r + 1) * folds)]
        rows = torch.cat([h for _, h in held])
        for key, x, (w, b) in (("teacher", xa, teacher), ("no_kd", xb, no_kd), ("kd", xb, kd)):
            out = torch.cat([x[h] @ w[j] + b[j] for j, h in held]) * sd + mu
            scores[key][r] = scale * task.monitor_value(out, y[rows])
    sign = 1.0 if spec.higher_is_better else -1.0
    per_repeat = sign * (scores["kd"] - scores["no_kd"])
    se = float(per_repeat.std() / repeats**0.5) if repeats > 1 else float("nan")
    means = {key: float(v.mean()) for key, v in scores.items()}
    return TaskPilotResult(
        task.default_monitor, spec.higher_is_better, spec.percent, float(per_repeat.mean()), se,
        means["teacher"], means["no_kd"], means["kd"], 3 * len(splits),
    )  # fmt: skip


def _target_scale(y: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, sd) per column for real-valued targets; (0, 1) for 0/1 indicators (logits are trained as they are)."""
    if bool(((y == 0) | (y == 1)).all()):
        return torch.zeros(y.shape[1]), torch.ones(y.shape[1])
    return y.mean(0), y.std(0).clamp_min(1e-6)


def _fit(task, x: Tensor, z: Tensor, rows: Tensor, soft: Tensor | None, kd_weights, epochs: int, lr: float, seed: int):
    """(W (J, d, C), b (J, C)) of J linear models, model j trained on ``x[rows[j]]`` against ``z[rows[j]]`` (and
    the teacher's outputs ``soft[j]`` when given, weighted by ``kd_weights``), full-batch Adam. The task's losses
    are means over the stacked (J x m) rows, so they are multiplied by J: each model's gradient is its own mean's."""
    runs, m = rows.shape
    c = z.shape[1]
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(runs, x.shape[1], c, generator=g) / x.shape[1] ** 0.5 * 0.1).requires_grad_()
    b = torch.zeros(runs, c, requires_grad=True)
    xs, target = x[rows], z[rows].reshape(runs * m, c)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        out = (torch.einsum("jmd,jdc->jmc", xs, w) + b[:, None]).reshape(runs * m, c)
        loss = task.loss(out, target)
        if soft is not None:
            loss = kd_weights[0] * loss + kd_weights[1] * task.kd_loss(out, soft.reshape(runs * m, c), 1.0)
        (runs * loss).backward()
        opt.step()
    return w.detach(), b.detach()


def advised_task(task=None, where: str = "advise"):
    """``task`` (a name, a Task, a TaskConfig; None: classification) as a Task, refused in one line when its targets
    are not one per example (segmentation: a class per pixel), which the probes and the pilot need."""
    from ..errors import DataError
    from ..tasks import TASKS, get_task

    chosen = get_task(task)
    if not chosen.one_target_per_example:
        advisable = [name for name in TASKS.names() if TASKS.get(name).one_target_per_example]
        raise DataError(
            f"{where}: the data's task is {chosen.name!r}; its targets are not one per example, and the advisor "
            f"predicts the KD gain of single-label classification (calibrated) and gives an uncalibrated pilot "
            f"estimate for the other tasks with one target per example ({', '.join(advisable)}), so it cannot "
            "advise on these labels (for a class per pixel, advise from Python on pixel rows: "
            "mmdistill.advisor.pixels.pixel_rows)"
        )
    return chosen


def reads_class_labels(task) -> bool:
    """Whether the task gives one class distribution and one true class per example: the class-label probes (gamma,
    the CCH criterion) and the calibrated prediction apply."""
    from ..tasks.base import CLASS_DISTRIBUTION, TRUE_CLASS

    return {CLASS_DISTRIBUTION, TRUE_CLASS} <= task.gives
