"""MSD: modality-specific distillation (Jin, Sanjabi, Nie, Tan, Ren, Firooz; Findings of EMNLP 2021).

    L = (1 - lam) * CE(y, s(x))
        + lam * T^2 * KL(p_t(x; T) || p_s(x; T))
        + sum_m  mean_x[ w_m(x) * T^2 * KL(p_t(x^(m); T) || p_s(x^(m); T)) ]

``x^(m)`` keeps only modality m (the others removed by the masking strategy). The full input
and every ``x^(m)`` go through each model in one batched pass; the teacher's come from the
cache. Weighting schemes for the auxiliary terms (saliency ``s_m(x)``: :mod:`mmdistill.methods.msd_saliency`):

* ``uniform``     w_m = 1
* ``population``  w_m = S_m / mean_k S_k            (S_m = training-set mean saliency)
* ``instance``    w_m(x) = M * softmax_m(s_m(x) / tau)
* ``learned``     w(x) = M * softmax(g_phi([s(x), H(p_t(x))])): a small weight network whose
  parameters phi are meta-learned: one differentiable look-ahead SGD step of the student on
  the weighted loss, theta' = theta - alpha * grad_theta L(theta, phi), then phi takes an SGD
  step on the student's CE at theta' on a held-out part of the training split. This meta step
  runs in :meth:`before_step` (the trainer calls it before the step's forward), so the step's
  loss uses the updated phi, as in Meta-Weight-Net (Shu et al., NeurIPS 2019, Alg. 1). Cost per
  step: one extra student forward on the batch, one backward with a graph (double backward) and
  one forward on the held-out batch.

Terms (:meth:`losses`): ``ce``, ``kd`` and ``kd/{m}``, the last a :class:`~.base.PerExample` with
values ``T^2 * KL`` of each example and weights ``w_m(x)`` (detached); the trainer weighs them in
:func:`~.base.weighted_total` and logs ``kd/{m}`` as ``mean_x[w_m(x) * T^2 * KL]``.

Other tasks (:mod:`mmdistill.tasks`): CE, the KD term and its per-example form are the task's ``loss``,
``kd_loss`` and ``kd_per_example`` (segmentation: over each example's valid pixels; regression: no temperature),
the ``kl`` saliency is ``task.saliency``; ``learned`` weighting and ``true_class`` saliency are classification's
only (``task_needs``: refused when the config is loaded).

The paper's full text was not available to us: the loss form, the saliency-based schemes and
the meta-learning set-up are our reconstruction from its abstract (documented as such).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call

from ..batch import LABEL, Batch
from ..data.contracts.dataset import stratified_split
from ..data.contracts.split import Split
from ..errors import ConfigError
from ..masking import split_variants
from ..models.multimodal import model_modalities
from ..registry import METHODS
from .base import LossTerm, Method, PerExample, StudentOutputs, TeacherOutputs, TeacherRequest, weighted_total
from .msd_saliency import instance_saliency, removal_views, saliency_from_logits
from .params import (
    CLASS_DISTRIBUTION,
    TRUE_CLASS,
    Count,
    Fraction,
    MethodParams,
    Number,
    TaskNeed,
    Temperature,
    temperature_param,
)

WEIGHTINGS = ("uniform", "population", "instance", "learned")


class MSDParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T, in [0.05, 100]")
    lam: Fraction = Field(0.5, description="weight of the full-input KD term; CE gets 1 - lam")
    weighting: Literal["uniform", "population", "instance", "learned"] = "uniform"
    saliency: Literal["kl", "true_class"] = "kl"
    instance_temperature: Number = Field(
        1.0, ge=1e-3, le=1e3, description="tau of the instance softmax, in [1e-3, 1e3]"
    )
    heldout_fraction: Number = Field(
        0.0, ge=0, le=0.9, description="learned: share of train held out for the meta step"
    )
    inner_lr: Number = Field(0.1, gt=0, le=10, description="learned: look-ahead step size alpha")
    meta_lr: Number = Field(0.05, gt=0, le=10, description="learned: SGD step size of phi")
    weight_hidden: Count = Field(16, ge=1, le=4096, description="learned: hidden width of the weight network")


@METHODS.register("msd")
class ModalitySpecificDistillation(Method):
    Params = MSDParams
    params: MSDParams
    task_needs = (
        TaskNeed(
            CLASS_DISTRIBUTION,
            "its weight net reads the teacher's entropy; use uniform, population or instance",
            param="weighting",
            value="learned",
        ),
        TaskNeed(TRUE_CLASS, "use 'kl'", param="saliency", value="true_class"),
        temperature_param(),
    )

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        assert teacher is not None
        p = self.params
        self.modalities = tuple(m for m in model_modalities(student) if m in model_modalities(teacher))
        if len(self.modalities) < 2:
            raise ConfigError(
                "method 'msd' needs two or more modalities read by both teacher and student; "
                f"shared: {list(self.modalities)}"
            )
        if p.weighting == "learned" and p.heldout_fraction <= 0:
            raise ConfigError(
                "method.params.heldout_fraction: weighting 'learned' needs a held-out split; set it > 0 (e.g. 0.1)"
            )
        m = len(self.modalities)
        self.population_weights: Tensor
        self.register_buffer("population_weights", torch.ones(m))
        if p.weighting == "learned":
            first, last = nn.Linear(m + 1, p.weight_hidden), nn.Linear(p.weight_hidden, m)
            nn.init.zeros_(last.weight)  # start at uniform weights
            nn.init.zeros_(last.bias)
            self.weight_net = nn.Sequential(first, nn.Tanh(), last)
            for q in self.weight_net.parameters():
                q.requires_grad_(False)  # phi is updated by the meta step, never by the main optimizer
        self.heldout: Split | None = None

    # -- what the teacher must provide ------------------------------------------------------
    def _views(self) -> list[tuple[str, ...]]:
        only = [(m,) for m in self.modalities]
        removed = removal_views(self.modalities) if self.params.weighting in ("instance", "learned") else []
        return list(dict.fromkeys(only + removed))

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest(views=tuple(self._views()))

    def prepare(self, train: Split, teacher: nn.Module | None, device: torch.device) -> Split:
        p = self.params
        if p.weighting == "population":
            assert teacher is not None and self.masker is not None
            s = instance_saliency(
                teacher, train, self.masker, self.modalities, p.saliency, device=device, task=self.task
            )
            pop = s.mean(0).clamp(min=1e-8)
            self.population_weights.copy_(pop / pop.mean())
        if p.weighting == "learned":
            keep, held = stratified_split(train.labels.numpy(), [1 - p.heldout_fraction, p.heldout_fraction], seed=0)
            self.heldout = train.subset(held, f"{train.name}/heldout")
            return train.subset(keep, f"{train.name}/meta-train")
        return train

    # -- student: full input and every modality-only view in one pass -------------------------
    def forward_student(self, student: nn.Module, batch: Batch) -> StudentOutputs:
        assert self.masker is not None
        stacked = self.masker.variants(batch, [(m,) for m in self.modalities])
        views = split_variants(student(stacked), 1 + len(self.modalities))
        return StudentOutputs(views[0], {}, views[1:])

    # -- weights -------------------------------------------------------------------------------
    def _signals(self, batch: Batch, teacher_out: TeacherOutputs) -> Tensor:
        """(B, M + 1): saliency of each modality and the teacher's entropy, per example."""
        views, view_logits = self._views(), teacher_out.view_logits
        assert view_logits is not None
        removed = torch.stack([view_logits[views.index(v)] for v in removal_views(self.modalities)])
        s = saliency_from_logits(teacher_out.logits, removed, batch[LABEL], self.params.saliency, self.task).T
        log_p = F.log_softmax(teacher_out.logits.float(), -1)
        entropy = -(log_p.exp() * log_p).sum(-1, keepdim=True)
        return torch.cat([s, entropy], 1)

    def weights(self, batch: Batch, teacher_out: TeacherOutputs) -> Tensor:
        """(B, M) weight of each auxiliary term for each example."""
        p, m, b = self.params, len(self.modalities), teacher_out.logits.shape[0]
        if p.weighting == "uniform":
            return teacher_out.logits.new_ones(b, m)
        if p.weighting == "population":
            return self.population_weights.expand(b, m)
        signals = self._signals(batch, teacher_out)
        if p.weighting == "instance":
            return m * torch.softmax(signals[:, :m] / p.instance_temperature, dim=1)
        return m * torch.softmax(self.weight_net(signals), dim=1)

    def _terms(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs, w: Tensor
    ) -> dict[str, LossTerm]:
        """``ce``, ``kd`` and one :class:`PerExample` ``kd/{m}`` per modality, weighted per example by ``w[:, i]``."""
        T, task, y = self.kd_temperature(self.params.temperature), self.task, batch[LABEL]
        views = self._views()
        out: dict[str, LossTerm] = {
            "ce": self.supervised_loss(batch, student_out),
            "kd": task.kd_loss(student_out.logits, teacher_out.logits, T, y),
        }
        t_views, s_views = teacher_out.view_logits, student_out.view_logits
        assert t_views is not None and s_views is not None
        for i, m in enumerate(self.modalities):
            t_view = t_views[views.index((m,))]
            out[f"kd/{m}"] = PerExample(task.kd_per_example(s_views[i], t_view, T, y), w[:, i])
        return out

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, LossTerm]:
        assert teacher_out is not None and student_out.view_logits is not None
        return self._terms(batch, student_out, teacher_out, self.weights(batch, teacher_out).detach())

    def loss_weights(self) -> dict[str, float]:
        """``1 - lam``, ``lam`` and 1 for each ``kd/{m}`` (its weights are per example, in the term); after setup."""
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam, **{f"kd/{m}": 1.0 for m in self.modalities}}

    def before_step(self, student: nn.Module, batch: Batch, teacher_out: TeacherOutputs | None) -> None:
        """Learned weighting: one meta step of phi on this batch, so that this step's loss uses the updated weights."""
        if self.params.weighting == "learned":
            assert teacher_out is not None
            self.meta_step(student, batch, teacher_out)

    def meta_step(self, student: nn.Module, batch: Batch, teacher_out: TeacherOutputs) -> None:
        """phi <- phi - meta_lr * d/dphi CE_heldout(theta - inner_lr * grad_theta L(theta, phi)).

        ``L`` is the training loss on ``batch`` (:func:`weighted_total` of :meth:`losses`' terms with weights
        that keep their graph to phi); the held-out batch is drawn with the global torch RNG. Under DDP the
        gradient of phi is averaged over the processes, so phi stays the same on every rank.
        """
        names, params = zip(*[(n, q) for n, q in student.named_parameters() if q.requires_grad])
        phi = list(self.weight_net.parameters())
        for q in phi:
            q.requires_grad_(True)
        try:
            student_out = self.forward_student(student, batch)
            terms = self._terms(batch, student_out, teacher_out, self.weights(batch, teacher_out))
            inner = weighted_total(terms, self.loss_weights())
            grads = torch.autograd.grad(inner, params, create_graph=True, allow_unused=True)
            ahead = {n: q - self.params.inner_lr * g if g is not None else q for n, q, g in zip(names, params, grads)}
            held = self._heldout_batch(len(batch[LABEL]), batch[LABEL].device)
            held_loss = self.task.loss(functional_call(student, ahead, (held,)), held[LABEL])
            phi_grads = torch.autograd.grad(held_loss, phi, allow_unused=True)
        finally:
            for q in phi:
                q.requires_grad_(False)
        with torch.no_grad():
            for q, g in zip(phi, phi_grads):
                if g is None:
                    continue
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(g)
                    g /= torch.distributed.get_world_size()
                q.sub_(self.params.meta_lr * g)

    def _heldout_batch(self, size: int, device: torch.device) -> Batch:
        assert self.heldout is not None
        idx = torch.randint(len(self.heldout), (min(size, len(self.heldout)),), generator=self.generator("cpu"))
        return {k: v.to(device) for k, v in self.heldout.__getitems__(idx).items()}
