"""The method contract at run time: the trainer hands each method the step and the epoch (``after_step``), and a
method draws its random numbers from its own generator, seeded by the run and kept in the checkpoint."""

from __future__ import annotations

import pytest
import torch

from mmdistill.batch import INDEX, LABEL
from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.crd import ContrastiveRD
from mmdistill.methods.kd import HintonKD
from mmdistill.models.multimodal import ModelConfig, build_model
from mmdistill.registry import METHODS

CALLS: list[tuple[int, int, int]] = []


class RecordsSteps(HintonKD):
    """KD that records each (step, epoch) it is handed, with one draw from its own generator."""

    def after_step(self, step: int, epoch: int) -> None:
        CALLS.append((step, epoch, int(torch.randint(1 << 30, (1,), generator=self.generator()))))


@pytest.fixture
def recording_method():
    METHODS.register("test_records_steps")(RecordsSteps)
    CALLS.clear()
    yield
    METHODS._entries.pop("test_records_steps")


def _run(data, out, epochs, tmp_path, resume=False):
    torch.manual_seed(0)
    enc = {"hidden": [8], "out_dim": 6}
    teacher = build_model(ModelConfig(modalities=["a"], encoder=enc), data.train.specs(), data.num_classes)
    student = build_model(ModelConfig(modalities=["b"], encoder=enc), data.train.specs(), data.num_classes)
    trainer = TrainerConfig(epochs=epochs, batch_size=16, num_threads=1)
    cache = CacheConfig(dir=tmp_path / "cache")
    distill(student, teacher, data, out, "test_records_steps", {}, trainer=trainer, resume=resume, cache=cache)


def test_the_trainer_hands_the_method_each_step_and_epoch_and_resume_continues_both(tmp_path, recording_method):
    data = build_splits("toy-two-modality", {"n": 80})
    _run(data, tmp_path / "full", 2, tmp_path)
    full = list(CALLS)
    per_epoch = len(full) // 2
    assert per_epoch >= 2, full
    assert [(s, e) for s, e, _ in full] == [(s, 1 + (s - 1) // per_epoch) for s in range(1, 2 * per_epoch + 1)]
    CALLS.clear()
    _run(data, tmp_path / "split", 1, tmp_path)
    _run(data, tmp_path / "split", 2, tmp_path, resume=True)
    assert CALLS == full, "a resumed run continues the step count and the method's random stream"
    last, _ = load_tensors(tmp_path / "full" / "checkpoints" / "last.safetensors")
    assert "rng.method.cpu" in last, "the method's generator state is in the checkpoint"


def _crd():
    p = ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=2, nce_k=3, nce_t=0.5, nce_m=0.25)
    method = ContrastiveRD(p).train()
    method.embed_s, method.embed_t = torch.nn.Identity(), torch.nn.Identity()
    for name in ("bank_s", "bank_t"):
        method.register_buffer(name, torch.nn.functional.normalize(torch.ones(6, 2), dim=1))
    method.register_buffer("z_s", torch.tensor(-1.0))
    method.register_buffer("z_t", torch.tensor(-1.0))
    return method


def test_crd_draws_its_negatives_from_its_own_generator_and_changes_its_bank_only_after_the_step():
    method = _crd()
    batch = {LABEL: torch.tensor([1]), INDEX: torch.tensor([2])}
    outputs = StudentOutputs(torch.zeros(1, 2), {"s": torch.tensor([[1.0, 0.0]])})
    teacher = TeacherOutputs(torch.zeros(1, 2), {"t": torch.tensor([[0.0, 1.0]])})
    global_rng, bank = torch.get_rng_state(), method.bank_s.clone()
    method.losses(batch, outputs, teacher)
    assert torch.equal(torch.get_rng_state(), global_rng), "CRD drew from the global RNG"
    assert torch.equal(method.bank_s, bank) and float(method.z_s) < 0, "losses changed the method's state"
    method.after_step(1, epoch=1)
    assert not torch.equal(method.bank_s, bank) and float(method.z_s) > 0
