"""Training batches of column data hold only what a step reads (``engine.parts._read_columns``): the student's
modalities, plus the teacher's when the teacher runs online. A cached teacher is looked up by row index, so a
crossmodal student (reads ``b``) never gathers the teacher's modality (``a``)."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill


class KeyRecorder(nn.Module):
    """A linear model on its modalities that records the batch keys of every training call."""

    def __init__(self, modalities: tuple[str, ...], dims: int) -> None:
        super().__init__()
        self.modalities = modalities
        self.linear = nn.Linear(dims * len(modalities), 4)
        self.keys_seen: set[str] = set()

    def forward(self, batch):
        if self.training:
            self.keys_seen |= set(batch)
        return self.linear(torch.cat([batch[m] for m in self.modalities], 1))


def run(tmp_path, cache_enabled: bool) -> tuple[set[str], set[str]]:
    torch.set_num_threads(1)
    data = build_splits("toy-two-modality", {"n": 200, "dim_a": 6, "dim_b": 6})
    torch.manual_seed(0)
    teacher, student = KeyRecorder(("a", "b"), 6), KeyRecorder(("b",), 6)
    distill(
        student,
        teacher,
        data,
        tmp_path / f"run-{cache_enabled}",
        "kd",
        {"temperature": 2.0, "lam": 0.5},
        trainer=TrainerConfig(epochs=1, batch_size=32),
        cache=CacheConfig(enabled=cache_enabled, dir=tmp_path / "cache"),
    )
    return student.keys_seen, teacher.keys_seen


def test_a_cached_teacher_leaves_its_modality_out_of_the_training_batches(tmp_path):
    student_keys, _ = run(tmp_path, cache_enabled=True)
    assert "b" in student_keys and "a" not in student_keys, student_keys


def test_an_online_teacher_gets_every_modality_it_reads(tmp_path):
    student_keys, _ = run(tmp_path, cache_enabled=False)
    assert {"a", "b"} <= student_keys, student_keys  # one batch serves both: it carries the teacher's modality
