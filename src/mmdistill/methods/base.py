"""The contract between the trainer and a distillation method (after mdistiller's Distiller).

A method is an ``nn.Module`` (so it can own learnable parts such as a hint projector) that

1. says what it needs from the frozen teacher (:meth:`teacher_request`: logits, hooked
   features, modality-only views) — the trainer serves that from the teacher cache;
2. runs the student (:meth:`forward_student`, hooks included);
3. returns a dict of **named, unweighted** loss terms (:meth:`losses`), and the weight of
   each term (:meth:`loss_weights`; a term not listed weighs 1). A term is a scalar tensor, or a
   :class:`PerExample` (one value and one weight per example) where a method weights examples;
4. may update its own state once per training step in :meth:`before_step` (before the step's forward, e.g. MSD's
   meta step) or :meth:`after_step` (after the optimizer step, given the step and epoch: CRD's memory bank, DKD's
   warm-up count), never in :meth:`losses`, which only computes: the same call serves training, evaluation, the
   pre-flight check and tests. Random numbers come from :meth:`generator` (the run seeds it and checkpoints its
   state), never from the global RNG;
5. computes its supervised and KD terms with ``self.task`` (:mod:`mmdistill.tasks`: ``loss``, ``kd_loss``,
   ``kd_per_example``, ``saliency``), so the same method serves every task that gives what it needs: a method
   declares that in ``task_needs`` (:class:`~.params.TaskNeed`, e.g. one class distribution per example), and
   :meth:`Method.checked_params` refuses the other tasks and validates ``Params`` when the config is loaded.

One function, :func:`weighted_total`, turns terms and weights into the loss that is minimised::

    total = sum_k  w_k * value(term_k),   value(t) = t                         for a scalar tensor
                                          value(t) = mean_i(t.weights_i * t.values_i)   for a PerExample

The trainer and MSD's meta step both call it. The trainer logs ``value(term_k)`` for every term
(``train/<name>`` in ``metrics.csv``: per-example weights applied, ``w_k`` not) and the total (``train/loss``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from ..batch import LABEL, Batch, present_rows
from ..config import validate
from ..data.contracts.split import Split
from ..errors import ConfigError
from ..masking import Masker
from ..models.hooks import FeatureHooks
from ..tasks import Task, get_task
from .params import NoParams, TaskNeed


@dataclass(frozen=True)
class TeacherRequest:
    """What a method needs from the teacher for each batch."""

    features: tuple[str, ...] = ()  # teacher layer paths
    # modality sets kept (the rest removed by the masker), e.g. (("a",), ("b",))
    views: tuple[tuple[str, ...], ...] = ()


@dataclass
class TeacherOutputs:
    logits: Tensor  # (B, C) on the full input
    features: dict[str, Tensor] = field(default_factory=dict)
    view_logits: Tensor | None = None  # (V, B, C), V = len(request.views), in request order


@dataclass
class StudentOutputs:
    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    view_logits: Tensor | None = None  # (V, B, C) when a method runs the student on modality views


@dataclass  # not frozen: Lightning's output conversion rebuilds it
class PerExample:
    """A loss term given per example with a weight for each: it counts as ``mean_i(weights_i * values_i)``.

    ``values`` is the unweighted term of each example (B,); ``weights`` (B,) is data, computed by the method
    (MSD's saliency or meta-learned weights). Gradients flow through both as the caller built them.
    """

    values: Tensor
    weights: Tensor


LossTerm = Tensor | PerExample


def term_value(term: LossTerm) -> Tensor:
    """The scalar a term adds before its weight ``w_k``: itself, or the weighted mean of a :class:`PerExample`."""
    if isinstance(term, PerExample):
        return (term.weights * term.values).mean()
    return term


def weighted_total(terms: Mapping[str, LossTerm], weights: Mapping[str, float]) -> Tensor:
    """``sum_k w_k * value(term_k)``: the loss minimised (a term without a weight weighs 1)."""
    return sum(weights.get(k, 1.0) * term_value(v) for k, v in terms.items())  # type: ignore[return-value]


class Method(nn.Module):
    """Base class; subclasses set ``Params`` (a :class:`~.params.MethodParams` of their config), say what they need
    from a task (``task_needs``; nothing: every task) and implement :meth:`losses`."""

    Params: ClassVar[type[BaseModel]] = NoParams
    needs_teacher: ClassVar[bool] = True
    task_needs: ClassVar[tuple[TaskNeed, ...]] = ()
    # Partly paired data (rows that lack a teacher modality): whether the method's distillation terms use only the
    # rows where the teacher saw its input (:meth:`paired_rows`); a method that cannot is refused on such data.
    partly_paired: ClassVar[bool] = False
    paired_on: tuple[str, ...] | None = None  # the teacher's modalities (set by the run assembly; None: every one)
    # Whether the method gives a teacher that learns alongside (``teacher.trainable``) a loss of its own: "never"
    # (the teacher's outputs are targets only), "optional" (C2KD) or "required" (DML). ``teacher_learns`` is set by
    # the run assembly: True when this run's teacher learns.
    teacher_training: ClassVar[Literal["never", "optional", "required"]] = "never"
    teacher_learns: bool = False

    @classmethod
    def task_problem(cls, name: str, task: Task, params: Mapping[str, Any]) -> str | None:
        """Why method ``name`` with these (raw) ``params`` cannot run on ``task`` (a message starting with the config
        key), or None: the first of its :attr:`task_needs` that applies and that the task does not give."""
        for need in cls.task_needs:
            if not need.applies(dict(params)) or task.gives_to_methods(need.gives):
                continue
            what = f"it needs {need.gives}, which task {task.name!r} does not give: {need.why}"
            if need.param is None:
                return f"method.name: {name!r} does not carry over to task {task.name!r}: {what}"
            if need.value is None:
                return f"method.params.{need.param}: refused for task {task.name!r}: {need.why}; remove it"
            return f"method.params.{need.param}: {need.value!r} does not carry over to task {task.name!r}: {what}"
        return None

    @classmethod
    def checked_params(cls, name: str, params: Mapping[str, Any] | None, task: Task | str | Any = None) -> BaseModel:
        """The one check of a method for a run: the method and its parameters carry over to ``task``
        (:meth:`task_problem`), then ``params`` validated by ``Params``. Bad input is a ConfigError naming the key
        (``method.name``, ``method.params.<field>``); the config loader and the run assembly both call it."""
        task = get_task(task)
        problem = cls.task_problem(name, task, params or {})
        if problem:
            raise ConfigError(problem)
        return validate(cls.Params, dict(params or {}), prefix="method.params.")

    def __init__(self, params: BaseModel, masker: Masker | None = None, task: Task | str | None = None) -> None:
        super().__init__()
        self.params = params
        self.masker = masker
        self.task = get_task(task)  # build_method sets the run's task; the default is classification

    def paired_rows(self, batch: Batch) -> Tensor | None:
        """(B,) bool: the rows of ``batch`` that hold every modality the teacher reads (None: all rows do)."""
        return present_rows(batch, self.paired_on)

    def supervised_loss(self, batch: Batch, student_out: StudentOutputs) -> Tensor:
        """The task's supervised term on the full input (classification: ``F.cross_entropy``, as before tasks)."""
        return self.task.loss(student_out.logits, batch[LABEL])

    def kd_temperature(self, temperature: float) -> float:
        """``temperature`` for a task that softens probabilities; 1 for regression (no temperature there: its
        ``method.params.temperature`` is refused, and the default is not used)."""
        return temperature if self.task.uses_temperature else 1.0

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest()

    def student_feature_paths(self) -> tuple[str, ...]:
        return ()

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        """Build parts whose shapes depend on the models (called once, before the optimizer exists)."""

    def prepare(self, train: Split, teacher: nn.Module | None, device: torch.device) -> Split:
        """See the training split once before training (e.g. population statistics, a held-out part).

        Returns the examples to train on (by default all of ``train``).
        """
        return train

    def forward_student(self, student: nn.Module, batch: Batch) -> StudentOutputs:
        with FeatureHooks(student, self.student_feature_paths()) as feats:
            logits = student(batch)
        return StudentOutputs(logits, dict(feats))

    def before_step(self, student: nn.Module, batch: Batch, teacher_out: TeacherOutputs | None) -> None:
        """Update the method's own state from this training batch (default: nothing).

        The trainer calls it once per training step, after the teacher's outputs and before the student's
        forward, with the bare student (never the DDP wrapper); under DDP every process calls it on its own
        batch, so an update must be made the same on every rank (e.g. by an ``all_reduce``). Not called
        outside training. MSD's meta step is the example.
        """

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> Mapping[str, LossTerm]:
        """Named, unweighted loss terms of this batch; computes only (no state changes, no communication)."""
        raise NotImplementedError

    def after_step(self, step: int, epoch: int) -> None:
        """Apply this training step's change of the method's own state (default: nothing).

        The trainer calls it once per training step, after the optimizer step, with ``step`` the optimizer steps of
        the run so far (1 for the first; a resumed run continues the count) and ``epoch`` (from 1). CRD updates its
        memory bank here, DKD its warm-up count. Under DDP every process calls it (a collective is allowed here).
        """

    # -- the method's own random numbers ---------------------------------------------------------------------
    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The method's random stream on ``device``: a method never draws from the global RNG.

        The trainer seeds it from the run's seed (:meth:`seed_generators`) and keeps its state in every checkpoint
        (:meth:`generator_states`), so a resumed run draws the same numbers; outside a run it starts from seed 0.
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        generators: dict[str, torch.Generator] = self.__dict__.setdefault("_generators", {})
        if key not in generators:
            seed = self.__dict__.get("_generator_seed", 0)
            generators[key] = torch.Generator(device=key).manual_seed(seed + len(generators))
        return generators[key]

    def seed_generators(self, seed: int) -> None:
        """Start every random stream of the method afresh from ``seed`` (the trainer: from the run's seed)."""
        self.__dict__["_generator_seed"] = seed
        self.__dict__["_generators"] = {}

    def generator_states(self) -> dict[str, Tensor]:
        """The state of each random stream drawn from so far, by device (``cpu``, ``cuda:0``)."""
        return {key: g.get_state() for key, g in self.__dict__.get("_generators", {}).items()}

    def load_generator_states(self, states: Mapping[str, Tensor]) -> None:
        """Continue the random streams from saved states (:meth:`generator_states`)."""
        for key in sorted(states):
            self.generator(key).set_state(states[key])

    def loss_weights(self) -> dict[str, float]:
        """Weight of each named term in the total loss (terms not listed weigh 1)."""
        return {}
