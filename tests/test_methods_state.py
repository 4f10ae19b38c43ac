"""Parameters of the new methods are validated; CRD's memory bank survives resume bitwise, one bank under DDP."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.api import build_method, distill
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker
from mmdistill.models.multimodal import ModelConfig, build_model

LAYERS = {"student_layer": "encoders.b.body.1", "teacher_layer": "encoders.a.body.1"}


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("dkd", {"temperature": 0}, "temperature"),
        ("dkd", {"warmup_steps": -1}, "warmup_steps"),
        ("dist", {"tau": -1.0}, "tau"),
        ("logit_std_kd", {"lam": 1.5}, "lam"),
        ("at", {**LAYERS, "form": "both"}, "form"),
        ("pkt", {"teacher_layer": "x"}, "student_layer"),
        ("rkd", {**LAYERS, "dist_factor": -1}, "dist_factor"),
        ("sp", {**LAYERS, "gamma": -3}, "gamma"),
        ("crd", {**LAYERS, "nce_m": 1.0}, "nce_m"),
        ("crd", {**LAYERS, "nce_t": 0}, "nce_t"),
        ("c2kd", {**LAYERS, "krc_threshold": 1.0}, "krc_threshold"),
        ("mfh_general", {"teacher_layer": "x", "keep_ratio": 0}, "keep_ratio"),
        ("mfh_general", {"teacher_layer": "x", "tempreature": 2}, "tempreature"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_field(toy_splits, name, params, field):
    masker = Masker(toy_splits.train.specs(), "zeros")
    with pytest.raises(ConfigError, match=f"method.params.{field}"):
        build_method(name, params, masker)


def _models(data, hidden=8):
    specs = data.train.specs()
    enc = {"hidden": [hidden], "out_dim": 6}
    teacher = build_model(ModelConfig(modalities=["a"], encoder=enc), specs, data.num_classes)
    student = build_model(ModelConfig(modalities=["b"], encoder=enc), specs, data.num_classes)
    return teacher, student


def test_attention_transfer_refuses_a_layer_without_spatial_axes(toy_splits):
    teacher, student = _models(toy_splits)
    method = build_method("at", LAYERS, Masker(toy_splits.train.specs(), "zeros"))
    with pytest.raises(ConfigError, match="method.params.student_layer: layer output must be .* spatial"):
        method.setup(toy_splits.train.__getitems__(range(4)), student, teacher)


def test_crd_resume_is_bitwise_equal_to_an_uninterrupted_run(toy_splits, tmp_path):
    torch.manual_seed(0)
    teacher, _ = _models(toy_splits)
    params = {**LAYERS, "feat_dim": 4, "nce_k": 16}

    def run(out, epochs, resume=False):
        torch.manual_seed(1)
        _, student = _models(toy_splits)
        trainer = TrainerConfig(epochs=epochs, batch_size=50, num_threads=1)
        distill(
            student,
            teacher,
            toy_splits,
            out,
            "crd",
            params,
            trainer=trainer,
            resume=resume,
            cache=CacheConfig(dir=tmp_path / "cache"),
        )
        return load_tensors(out / "checkpoints" / "last.safetensors")[0]

    full = run(tmp_path / "full", 2)
    first = run(tmp_path / "split", 1)
    resumed = run(tmp_path / "split", 2, resume=True)
    assert not torch.equal(first["module.method.bank_s"], full["module.method.bank_s"])  # epoch 2 moved the bank
    for k, v in full.items():
        if k.startswith("module."):
            assert torch.equal(v, resumed[k]), k
    assert float(full["module.method.z_s"]) > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from mmdistill.batch import INDEX, LABEL
    from mmdistill.methods.base import StudentOutputs, TeacherOutputs
    from mmdistill.methods.crd import ContrastiveRD

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    method = ContrastiveRD(ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=3, nce_k=4)).train()
    torch.manual_seed(0)
    method.embed_s, method.embed_t = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    for name in ("bank_s", "bank_t"):
        method.register_buffer(name, torch.zeros(0, 3))
    method.register_buffer("z_s", torch.tensor(-1.0))
    method.register_buffer("z_t", torch.tensor(-1.0))

    class Rows:
        def __len__(self):
            return 10

    method.prepare(Rows(), None, torch.device("cpu"))
    torch.manual_seed(100 + rank)  # each rank its own batch
    rows = torch.tensor([[0, 1], [2, 3]][rank])
    hs, ht = torch.randn(2, 5), torch.randn(2, 5)
    method.losses(
        {LABEL: torch.tensor([0, 1]), INDEX: rows},
        StudentOutputs(torch.zeros(2, 2), {"s": hs}),
        TeacherOutputs(torch.zeros(2, 2), {"t": ht}),
    )
    method.after_step(1, epoch=1)  # every rank, after the optimizer step: the all-gathered bank update
    v_s = torch.nn.functional.normalize(method.embed_s(hs), dim=1)
    torch.save({"bank_s": method.bank_s, "z_s": method.z_s, "rows": rows, "v_s": v_s}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_crd_bank_is_one_global_bank_under_ddp(tmp_path):
    """2 gloo processes, each a different batch: both apply every rank's update, so the banks stay identical."""
    import torch.multiprocessing as mp

    # fork, not spawn: the children need not import torch and the tests again (seconds instead of tens)
    ctx = mp.start_processes(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):  # raises if a worker failed
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2 DDP workers did not finish within 120 s")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["bank_s"], r1["bank_s"]) and torch.equal(r0["z_s"], r1["z_s"])
    g = torch.Generator().manual_seed(0)
    a = 1.0 / (3 / 3) ** 0.5
    init = torch.rand(10, 3, generator=g) * 2 * a - a  # as prepare() draws it
    for r in (r0, r1):  # each rank's rows moved half-way to that rank's embeddings
        expected = torch.nn.functional.normalize(0.5 * init[r["rows"]] + 0.5 * r["v_s"], dim=1)
        torch.testing.assert_close(r0["bank_s"][r["rows"]], expected)
    torch.testing.assert_close(r0["bank_s"][4:], init[4:])
