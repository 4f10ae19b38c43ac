"""MFH modality-general KD: distil from a teacher that keeps only its modality-general channels.

Xue, Gao, Ren, Zhao; ICLR 2023, "The Modality Focusing Hypothesis: Towards Understanding Crossmodal
Knowledge Distillation", Sec. 4.2. Algorithm 1 (:mod:`mmdistill.mfh.algorithm1`) scores each channel c
of a teacher layer by how much permuting it across examples moves the teacher's output away from a
student's on the paired other modality; the top ``r`` share is kept and every other channel is set
to zero (``fill: zero``, as the brief of the method) or to its mean on the scored examples
(``fill: mean``, as the study code :mod:`mmdistill.studies.mfh_removal`), by a forward hook on the layer::

    h'_c = h_c if c in K else fill_c,        K = top round(r * C) channels by score
    L    = (1 - lam) * CE(y, s(x)) + lam * T^2 * KL(p_t'(x; T) || p_s(x; T))      (Hinton KD from t')

Scores come from ``scores_csv`` (``mmdistill salience``'s ``scores.csv``: columns channel, score) or
are computed in :meth:`prepare` on up to ``salience_examples`` training examples with the
"separately pretrained" variant of Algorithm 1: the trained teacher as given, and a copy of the
(untrained) student trained alone by CE (full-batch SGD, lr ``salience_lr``, momentum 0.9,
``salience_epochs`` steps; the global RNG is left untouched).

:meth:`prepare` modifies the teacher in place: a forward hook on the layer and a buffer
``mfh_keep_mask`` on it (so the teacher's hash, and with it the teacher-cache key, changes with
the kept set). :meth:`restore_teacher` removes both. Tasks: any task whose outputs teacher and
student share (the distance of Algorithm 1 compares outputs); the KD term here is the
classification one.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..batch import LABEL, Batch
from ..data.contracts.split import Split
from ..errors import ConfigError
from ..models.hooks import FeatureHooks, find_module
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import Count, Fraction, MethodParams, Number, Temperature, temperature_param

MAX_STEPS = 1_000_000

MASK_BUFFER = "mfh_keep_mask"


class MFHGeneralParams(MethodParams):
    teacher_layer: str = Field(description="dotted module path of the teacher layer whose channels are scored")
    keep_ratio: Number = Field(0.5, gt=0, le=1, description="share r of the channels kept (top-scored)")
    scores_csv: str | None = Field(None, description="scores.csv from `mmdistill salience`; none: compute in prepare()")
    fill: Literal["zero", "mean"] = "zero"
    temperature: Temperature = 4.0
    lam: Fraction = Field(0.5, description="weight of the KD term; CE gets 1 - lam")
    salience_epochs: Count = Field(200, ge=1, le=MAX_STEPS, description="CE steps of the student copy for Algorithm 1")
    salience_lr: Number = Field(0.01, gt=0, le=10)
    salience_examples: Count = Field(
        2000, ge=2, le=1 << 40, description="training examples used to score (the first ones)"
    )
    permutations: Count = Field(10, ge=1, le=MAX_STEPS, description="Algorithm 1's permutations per channel")
    seed: Count = Field(0, ge=0, le=2**32 - 1, description="permutation seed")


def read_scores(path: str, channels: int) -> Tensor:
    """The ``score`` column of a salience CSV, ordered by ``channel``; a ConfigError names what is wrong."""
    where = f"method.params.scores_csv: {path}"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where} does not exist")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"channel", "score"} <= set(rows[0]):
        raise ConfigError(f"{where} needs the columns channel and score (as `mmdistill salience` writes)")
    try:
        pairs = sorted((int(r["channel"]), float(r["score"])) for r in rows)
    except ValueError as err:
        raise ConfigError(f"{where}: a channel or score is not a number ({err})") from None
    if [c for c, _ in pairs] != list(range(channels)):
        raise ConfigError(f"{where} scores {len(pairs)} channels 0..{len(pairs) - 1}; the teacher layer has {channels}")
    return torch.tensor([s for _, s in pairs])


@METHODS.register("mfh_general")
class ModalityGeneralKD(Method):
    Params = MFHGeneralParams
    params: MFHGeneralParams
    task_needs = (temperature_param(),)
    scores: Tensor  # buffers made in setup (declared for the type checker: nn.Module types them Tensor | Module)
    keep_mask: Tensor

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        assert teacher is not None
        layer = self.params.teacher_layer
        with torch.no_grad(), FeatureHooks(teacher, [layer]) as ft:
            teacher(sample_batch)
        h = ft.get(layer)
        if h is None or h.dim() < 2:
            raise ConfigError(
                f"method.params.teacher_layer: {layer!r} must output (batch, channels, ...), "
                f"got {None if h is None else tuple(h.shape)}"
            )
        self.channels = h.shape[1]
        self.file_scores = read_scores(self.params.scores_csv, self.channels) if self.params.scores_csv else None
        self.register_buffer("scores", torch.zeros(self.channels))
        self.register_buffer("keep_mask", torch.zeros(self.channels, dtype=torch.bool))
        self._student = [student]  # not a submodule: the trainer owns the student
        self._handle: RemovableHandle | None = None

    def compute_scores(self, train: Split, teacher: nn.Module, device: torch.device) -> Tensor:
        from ..mfh.algorithm1 import channel_salience

        p = self.params
        batch = {k: v.to(device) for k, v in train.__getitems__(range(min(p.salience_examples, len(train)))).items()}
        student = copy.deepcopy(self._student[0]).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            opt = torch.optim.SGD(student.parameters(), lr=p.salience_lr, momentum=0.9)
            student.train()
            for _ in range(p.salience_epochs):
                loss = self.task.loss(student(batch), batch[LABEL])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        result = channel_salience(
            teacher, student, batch, batch, p.teacher_layer, permutations=p.permutations, seed=p.seed
        )
        return result.scores

    def prepare(self, train: Split, teacher: nn.Module | None, device: torch.device) -> Split:
        assert teacher is not None
        p = self.params
        self.restore_teacher(teacher)
        scores = self.file_scores if self.file_scores is not None else self.compute_scores(train, teacher, device)
        k = max(1, round(p.keep_ratio * self.channels))
        keep = torch.zeros(self.channels, dtype=torch.bool)
        keep[torch.argsort(scores.cpu(), descending=True, stable=True)[:k]] = True
        self.scores.copy_(scores), self.keep_mask.copy_(keep)
        fill = torch.zeros(self.channels, device=device)
        if p.fill == "mean":
            rows = range(min(p.salience_examples, len(train)))
            batch = {k_: v.to(device) for k_, v in train.__getitems__(rows).items()}
            with torch.no_grad(), FeatureHooks(teacher, [p.teacher_layer]) as ft:
                teacher(batch)
            fill = ft[p.teacher_layer].transpose(0, 1).flatten(1).mean(1)
        module = find_module(teacher, p.teacher_layer)
        module.register_buffer(MASK_BUFFER, keep.to(device))
        self._fill = fill

        def hook(mod: nn.Module, inputs, out: Tensor) -> Tensor:
            shape = (-1,) + (1,) * (out.dim() - 2)
            return torch.where(getattr(mod, MASK_BUFFER).view(shape), out, self._fill.view(shape).to(out.dtype))

        self._handle = module.register_forward_hook(hook)
        return train

    def restore_teacher(self, teacher: nn.Module) -> None:
        """Remove the hook and the mask buffer that :meth:`prepare` put on the teacher."""
        handle = getattr(self, "_handle", None)  # None before setup
        if handle is not None:
            handle.remove()
            self._handle = None
        module = find_module(teacher, self.params.teacher_layer)
        if MASK_BUFFER in module._buffers:
            del module._buffers[MASK_BUFFER]

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        T = self.kd_temperature(self.params.temperature)
        return {
            "ce": self.supervised_loss(batch, student_out),
            "kd": self.task.kd_loss(student_out.logits, teacher_out.logits, T, batch[LABEL]),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam}
