"""Modality saliency: how much the teacher's prediction depends on each modality.

MSD (Jin et al., Findings of EMNLP 2021, Sec. 3): the saliency of modality m for example x is
the change of the teacher's prediction when m is removed (by the masking strategy),

    kl:          s_m(x) = KL(p_t(x) || p_t(x^(-m)))
    true_class:  s_m(x) = p_t(y | x) - p_t(y | x^(-m))      (the drop of the true-class probability)

and the population saliency is its mean over the training set, ``S_m = mean_x s_m(x)``.
``x^(-m)`` keeps every modality of the teacher except m. (The paper's full text was not
available to us; these two forms follow its abstract and the design brief.) Other tasks (docs/tasks.md): ``kl``
is ``task.saliency`` (multilabel: mean over labels of the binary KL; regression: the distance between the two
outputs; segmentation: the mean over the example's valid pixels); ``true_class`` is classification's only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import LABEL
from ..data.contracts.split import Split
from ..kl import kd_per_example
from ..masking import Masker, split_variants
from ..tasks import Task
from ..tasks.base import CLASS_DISTRIBUTION

SaliencyKind = Literal["kl", "true_class"]


def removal_views(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """For each m, the modality set that keeps everything but m (``x^(-m)``)."""
    return [tuple(o for o in modalities if o != m) for m in modalities]


def saliency_from_logits(
    full: Tensor, removed: Tensor, labels: Tensor | None, kind: SaliencyKind = "kl", task: Task | None = None
) -> Tensor:
    """(M, B) saliencies from the teacher's outputs on x (B, ...) and on each x^(-m) (M, B, ...).

    ``task`` (:mod:`mmdistill.tasks`; None: classification) gives the ``kl`` form of other tasks:
    ``task.saliency(full, removed_m, labels)``, the per-example KD at T = 1 from x^(-m)'s output towards x's."""
    if kind == "kl" and task is not None and not task.gives_to_methods(CLASS_DISTRIBUTION):  # no one softmax per row
        return torch.stack([task.saliency(full.float(), r.float(), labels) for r in removed])
    if kind == "kl":
        return kd_per_example(removed.float(), full.float())  # KD at T = 1 is KL(p_t(x) || p_t(x^(-m)))
    log_p = F.log_softmax(full.float(), -1)
    log_q = F.log_softmax(removed.float(), -1)
    if labels is None:
        raise ValueError("true_class saliency needs the labels")
    idx = labels.view(1, -1, 1).expand(removed.shape[0], -1, 1)
    return log_p.exp().gather(-1, labels.view(-1, 1)).squeeze(-1) - log_q.exp().gather(-1, idx).squeeze(-1)


MAX_PASS_ELEMENTS = 1 << 22  # input values in one teacher pass (rows x variants): bounds a conv teacher's activations


def rows_per_pass(dataset: Split, variants: int, batch_size: int) -> int:
    """``batch_size``, or fewer rows where ``variants`` copies of a row's float inputs would exceed
    :data:`MAX_PASS_ELEMENTS` (AV-MNIST's 112x112 spectrograms: 104 rows of 3 variants, about 0.3 GB of activations
    in the first LeNet block instead of 1.5 GB at 512 rows); small feature vectors keep ``batch_size``."""
    per_row = sum(math.prod(spec.shape) for spec in dataset.specs() if not spec.tokens)
    return max(1, min(batch_size, MAX_PASS_ELEMENTS // max(1, variants * per_row)))


@torch.no_grad()
def instance_saliency(
    teacher: nn.Module,
    dataset: Split,
    masker: Masker,
    modalities: Sequence[str],
    kind: SaliencyKind = "kl",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    task: Task | None = None,
) -> Tensor:
    """(N, M) saliency of each modality for every example of ``dataset`` (teacher in eval mode), ``batch_size`` rows
    per pass or fewer for large inputs (:func:`rows_per_pass`)."""
    teacher.eval()
    views = removal_views(modalities)
    out = []
    batch_size = rows_per_pass(dataset, 1 + len(views), batch_size)
    for start in range(0, len(dataset), batch_size):
        batch = {
            k: v.to(device)
            for k, v in dataset.__getitems__(range(start, min(start + batch_size, len(dataset)))).items()
        }
        logits = split_variants(teacher(masker.variants(batch, views)), 1 + len(views))
        out.append(saliency_from_logits(logits[0], logits[1:], batch[LABEL], kind, task).T.cpu())
    return torch.cat(out)
