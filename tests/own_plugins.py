"""A user's package, as the tests install it: copied into tmp_path and put on PYTHONPATH (never imported from tests/).

It registers one of everything mmdistill lets a user add, and defines a teacher and a student of its own classes.
Each entry appends its name to the file ``$OWN_PLUGINS_LOG`` when used, so a test can see it ran; a model's
forward kills its process once ``$OWN_PLUGINS_KILL_WHEN`` exists (an interrupted run, at a known point).
"""

import math
import os
import signal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmdistill.batch import LABEL
from mmdistill.masking import NullValue
from mmdistill.methods.kd import HintonKD
from mmdistill.registry import ENCODERS, MASKERS, METHODS, MODELS


def used(name):
    path = os.environ.get("OWN_PLUGINS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


class ScaledParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0, le=10)


@ENCODERS.register("scaled_linear")
class ScaledLinear(nn.Module):
    """x -> relu(W (scale * x)): an encoder with a setting of its own (``encoder.params.scale``)."""

    Params = ScaledParams

    def __init__(self, shape, cfg, params):
        super().__init__()
        used(f"encoder scale={params.scale}")
        self.scale = params.scale
        self.scaled_linear = nn.Linear(math.prod(shape), cfg.out_dim)
        self.out_dim = cfg.out_dim

    def forward(self, x, mask=None):
        return torch.relu(self.scaled_linear(x.flatten(1) * self.scale))


@MASKERS.register("minus_one")
class MinusOne(NullValue):
    """x_m <- -1"""

    def forward(self, x):
        used("masker")
        return torch.full_like(x, -1.0)


@METHODS.register("kd_and_masked_ce")
class KDAndMaskedCE(HintonKD):
    """Hinton KD plus the cross-entropy of the student with its first modality removed by the masker."""

    def forward_student(self, student, batch):
        self._masked_logits = student(self.masker.remove(batch, [student.modalities[0]]))
        return super().forward_student(student, batch)

    def losses(self, batch, student_out, teacher_out):
        used("method")
        return {
            **super().losses(batch, student_out, teacher_out),
            "masked_ce": F.cross_entropy(self._masked_logits, batch[LABEL]),
        }

    def loss_weights(self):
        return {**super().loss_weights(), "masked_ce": 0.1}


def _maybe_die():
    path = os.environ.get("OWN_PLUGINS_KILL_WHEN")
    if path and os.path.exists(path):
        os.kill(os.getpid(), signal.SIGKILL)


class TwoTower(nn.Module):
    """A multimodal teacher of the user's own: one tower per modality, concatenated, a linear head."""

    def __init__(self, specs, num_classes, hidden=16):
        super().__init__()
        self.modalities = tuple(s.name for s in specs if not s.tokens)
        self.towers = nn.ModuleDict({s.name: nn.Linear(math.prod(s.shape), hidden) for s in specs if not s.tokens})
        self.head = nn.Linear(hidden * len(self.towers), num_classes)

    def forward(self, batch):
        _maybe_die()
        return self.head(torch.cat([torch.relu(self.towers[m](batch[m].flatten(1))) for m in self.modalities], 1))


def build_teacher(specs, num_classes, hidden: int = 16):
    return TwoTower(specs, num_classes, hidden)


@MODELS.register("one_tower")
class OneTower(nn.Module):
    """A unimodal student of the user's own, registered by name."""

    def __init__(self, num_classes, specs, modality="b", hidden=8):
        super().__init__()
        self.modalities = (modality,)
        dim = math.prod(next((s.shape for s in specs if s.name == modality), (1,)))
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, batch):
        _maybe_die()
        return self.body(batch[self.modalities[0]].flatten(1))


# Broken factories, for the bad-input tests
def returns_a_dict(num_classes):
    return {"not": "a module"}


def no_modalities(num_classes):
    return nn.Linear(4, num_classes)


def three_classes(specs):
    model = OneTower(3, specs)
    return model


NOT_CALLABLE = 42
