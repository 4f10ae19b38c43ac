"""The trainer's parts against their specification: optimizer and scheduler construction, the epoch means, the
improvement rule, the step functions, the non-finite error, resume, the stale-file sweep and the fit result.

Small and fast (a few seconds in all): this file is in the mutation-testing selection (docs/architecture.md).
"""

import math
import os
import re
import socket
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmdistill.batch import INDEX, LABEL
from mmdistill.config import TrainerConfig
from mmdistill.engine import trainer as tr
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.engine.system.launch import make_fabric
from mmdistill.engine.trainer import DistillationModule, EpochMeans, fit
from mmdistill.errors import ConfigError, TrainingError
from mmdistill.methods.base import Method, NoParams, TeacherOutputs

torch.set_num_threads(1)


class LinearOnA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 4)
        self.modes: list[bool] = []

    def forward(self, batch):
        self.modes.append(self.training)
        return self.lin(batch["a"])


class CE(Method):
    """Plain cross-entropy as one term ``ce``; counts its calls."""

    needs_teacher = False

    def __init__(self) -> None:
        super().__init__(NoParams())
        self.calls = 0

    def losses(self, batch, student_out, teacher_out):
        self.calls += 1
        return {"ce": nn.functional.cross_entropy(student_out.logits, batch[LABEL])}


def cfg_of(**kw) -> TrainerConfig:
    base = {"epochs": 3, "batch_size": 100, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.0}}
    return TrainerConfig(**{**base, **kw})


def run_fit(splits, out, student=None, resume=False, **kw):
    cfg = cfg_of(**kw)
    torch.manual_seed(0)
    student = student or LinearOnA()
    module = DistillationModule(student, CE())
    result = fit(
        make_fabric(cfg), module, splits.train, splits.val, cfg, seed=0, out_dir=out, resume=resume, quiet=True
    )
    return result, module


# ----- optimizer and scheduler --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opt, cls, expect",
    [
        ({"name": "sgd", "lr": 0.3, "momentum": 0.7, "weight_decay": 0.01}, torch.optim.SGD, {"momentum": 0.7}),
        ({"name": "adam", "lr": 0.02, "weight_decay": 0.05}, torch.optim.Adam, {}),
        ({"name": "adamw", "lr": 0.02, "weight_decay": 0.05}, torch.optim.AdamW, {}),
    ],
)
def test_make_optimizer_builds_the_named_optimizer_with_its_settings(opt, cls, expect):
    cfg = TrainerConfig(optimizer=opt)
    o = tr.make_optimizer([nn.Parameter(torch.zeros(2))], cfg)
    assert type(o) is cls
    group = o.param_groups[0]
    assert group["lr"] == opt["lr"] and group["weight_decay"] == opt["weight_decay"]
    for k, v in expect.items():
        assert group[k] == v


def test_make_scheduler_none_gives_no_scheduler_and_cosine_anneals_over_the_epochs():
    p = [nn.Parameter(torch.zeros(1))]
    assert tr.make_scheduler(torch.optim.SGD(p, lr=1.0), TrainerConfig(epochs=4)) is None
    opt = torch.optim.SGD(p, lr=1.0)
    s = tr.make_scheduler(opt, TrainerConfig(epochs=4, scheduler={"name": "cosine"}))
    assert isinstance(s, torch.optim.lr_scheduler.CosineAnnealingLR) and s.T_max == 4
    opt = torch.optim.SGD(p, lr=1.0)
    s = tr.make_scheduler(opt, TrainerConfig(scheduler={"name": "step", "step_size": 3, "gamma": 0.25}))
    assert isinstance(s, torch.optim.lr_scheduler.StepLR) and (s.step_size, s.gamma) == (3, 0.25)


# ----- the epoch's means and the improvement rule ----------------------------------------------------------------


def test_epoch_means_are_example_weighted_per_name_and_empty_without_steps():
    m = EpochMeans()
    assert m.result() == {} and m.steps == 0
    m.add(torch.tensor(1.0), {"ce": torch.tensor(2.0), "kd": torch.tensor(4.0)}, examples=3)
    m.add(torch.tensor(5.0), {"ce": torch.tensor(6.0), "kd": torch.tensor(0.0)}, examples=1)
    assert m.steps == 2
    assert m.result() == pytest.approx({"loss": (3 * 1 + 5) / 4, "ce": (3 * 2 + 6) / 4, "kd": (3 * 4 + 0) / 4})


def test_epoch_means_of_bfloat16_values_are_float():
    m = EpochMeans()
    m.add(torch.tensor(1.5, dtype=torch.bfloat16), {"t": torch.tensor(0.5, dtype=torch.bfloat16)}, examples=2)
    assert m.result() == {"loss": 1.5, "t": 0.5}


@pytest.mark.parametrize(
    "value, best, higher, delta, better",
    [
        (0.5, None, True, 0.0, True),
        (0.5, None, False, 0.0, True),
        (0.6, 0.5, True, 0.0, True),
        (0.5, 0.5, True, 0.0, False),  # equal is no improvement
        (0.4, 0.5, True, 0.0, False),
        (0.4, 0.5, False, 0.0, True),
        (0.5, 0.5, False, 0.0, False),
        (0.6, 0.5, True, 0.1, False),  # exactly min_delta better is not more than min_delta
        (0.61, 0.5, True, 0.1, True),
        (0.4, 0.5, False, 0.1, False),
        (0.39, 0.5, False, 0.1, True),
        (math.nan, 0.5, True, 0.0, False),  # a NaN never improves
        (0.1, math.nan, True, 0.0, True),  # any number improves on a NaN
        (0.1, math.nan, False, 0.0, True),
        (math.nan, math.nan, True, 0.0, False),
    ],
)
def test_better_is_strictly_more_than_min_delta_in_the_monitors_direction(value, best, higher, delta, better):
    assert tr._better(value, best, higher, delta) is better


# ----- step functions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "world, device, precision, plain",
    [(1, "cpu", "32-true", True), (2, "cpu", "32-true", False), (1, "cuda", "32-true", False),
     (1, "cpu", "bf16-mixed", False)],
)  # fmt: skip
def test_plain_pytorch_step_only_for_one_cpu_process_in_full_precision(world, device, precision, plain):
    fabric = SimpleNamespace(world_size=world, device=torch.device(device))
    assert tr._plain_pytorch_step(fabric, SimpleNamespace(precision=precision)) is plain


def test_plain_step_clips_the_global_l2_norm_and_refuses_a_non_finite_gradient():
    cfg = cfg_of()
    fabric = make_fabric(cfg)
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    module = nn.Linear(1, 1)
    opt = torch.optim.SGD([a, b], lr=1.0)
    fns = tr._step_functions(fabric, module, opt, cfg)
    assert fns.forward is module
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global L2 norm 5 (L1 7, Linf 4)
    fns.clip(1.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.0])) and torch.allclose(b.grad, torch.tensor([0.8]))
    fns.optimizer_step()
    assert torch.allclose(a.detach(), torch.tensor([-0.6, 0.0]))
    a.grad = torch.tensor([math.inf, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        fns.clip(1.0)


# ----- the non-finite loss error ------------------------------------------------------------------------------------


def _batch():
    return {INDEX: torch.tensor([0, 1]), LABEL: torch.tensor([0, 1])}


def test_not_finite_names_the_bad_term_its_weight_and_the_last_checkpoint(tmp_path):
    last = tmp_path / "last.safetensors"
    losses = {"ce": torch.tensor(1.25), "kd": torch.tensor(math.nan)}
    err = tr._not_finite(losses, {"kd": 0.5}, torch.tensor(math.nan), None, _batch(), "train", 3, 7, last)
    msg = str(err)
    assert isinstance(err, TrainingError)
    assert msg.startswith("epoch 3, step 7: loss term 'kd' is not finite;")
    assert "; terms: ce=1.25 (weight 1), kd=nan (weight 0.5); " in msg
    assert msg.endswith("the last good checkpoint is none (failed in the first epoch)")
    last.write_bytes(b"x")
    msg = str(tr._not_finite(losses, {}, torch.tensor(math.nan), None, _batch(), "train", 3, 7, last))
    assert msg.endswith(f"the last good checkpoint is {last}")


def test_not_finite_says_when_only_the_weighted_sum_overflows(tmp_path):
    losses = {"ce": torch.tensor(3e38), "kd": torch.tensor(3e38)}
    msg = str(tr._not_finite(losses, {}, torch.tensor(math.inf), None, _batch(), "train", 1, 0, tmp_path / "x"))
    assert "the weighted sum of the loss terms is not finite (inf) although every term is" in msg
    assert "is not finite;" not in msg.split("although")[0].replace("not finite (inf)", "")


def test_not_finite_blames_a_non_finite_teacher_before_the_terms(tmp_path):
    teacher = TeacherOutputs(logits=torch.tensor([[0.0, math.nan], [1.0, 2.0]]))
    losses = {"kd": torch.tensor(math.nan)}
    msg = str(tr._not_finite(losses, {}, torch.tensor(math.nan), teacher, _batch(), "mydata", 2, 5, tmp_path / "x"))
    assert msg.startswith("epoch 2, step 5: ") and "teacher" in msg and "loss term" not in msg
    assert "on split 'mydata'" in msg
    teacher = TeacherOutputs(logits=torch.zeros(2, 2))  # a finite teacher: the terms are blamed
    msg = str(tr._not_finite(losses, {}, torch.tensor(math.nan), teacher, _batch(), "mydata", 2, 5, tmp_path / "x"))
    assert msg.startswith("epoch 2, step 5: loss term 'kd' is not finite")


def test_no_terms_are_reported_as_none(tmp_path):
    msg = str(tr._not_finite({}, {}, torch.tensor(math.nan), None, _batch(), "t", 1, 1, tmp_path / "x"))
    assert "terms: none;" in msg


def test_first_step_trace_prints_once_only_when_asked(monkeypatch, capsys):
    monkeypatch.setattr(tr, "_TRACED", [])
    monkeypatch.delenv("MMDISTILL_TRACE_STARTUP", raising=False)
    tr._trace_first_step()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MMDISTILL_TRACE_STARTUP", "1")
    tr._trace_first_step()
    tr._trace_first_step()
    err = capsys.readouterr().err
    assert err.count("first training step at unix time") == 1
    assert re.fullmatch(r"mmdistill: first training step at unix time \d+\.\d{3}\n", err)


# ----- a whole fit ---------------------------------------------------------------------------------------------------


def test_a_batch_size_not_divisible_by_the_processes_is_a_config_error(toy_splits, tmp_path):
    fabric = SimpleNamespace(world_size=3, global_rank=0)
    cfg = cfg_of(batch_size=100)
    with pytest.raises(
        ConfigError, match=r"trainer\.batch_size: 100 must be divisible by the number of processes \(3\)"
    ):
        tr._Training(fabric, DistillationModule(LinearOnA(), CE()), toy_splits.train, toy_splits.val, cfg, 0,
                     tmp_path, None, True, "train")  # fmt: skip


def test_fit_result_history_and_files(toy_splits, tmp_path):
    result, module = run_fit(toy_splits, tmp_path, epochs=3)
    n_train = len(toy_splits.train)
    steps = math.ceil(n_train / 100)
    assert (result.epochs_run, result.stopped_early, result.test_checkpoint) == (3, False, "best")
    assert result.train_steps == 3 * steps and module.method.calls == 3 * steps
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(h["train_steps"] == steps and h["train_seconds"] > 0 for h in result.history)
    assert result.train_seconds == pytest.approx(sum(h["train_seconds"] for h in result.history))
    assert all(h["lr"] == 0.5 for h in result.history)
    assert {"train/loss", "train/ce", "val/accuracy", "val/loss"} <= set(result.history[0])
    assert all(h["train/loss"] == h["train/ce"] for h in result.history)
    accs = [h["val/accuracy"] for h in result.history]
    assert result.best_value == max(accs) and result.best_epoch == 1 + accs.index(max(accs))
    best, meta = load_tensors(tmp_path / "checkpoints" / "best.safetensors")
    assert meta["epoch"] == result.best_epoch and meta["accuracy"] == result.best_value
    assert all(torch.equal(module.state_dict()[k], v) for k, v in best.items()), "test weights are the best epoch's"
    _, state = load_tensors(tmp_path / "checkpoints" / "last.safetensors")
    assert state["epoch"] == 3 and state["best_epoch"] == result.best_epoch
    # the student was in training mode in every training step, after each epoch's validation in eval mode
    modes = module.student.modes
    assert modes.count(True) == 3 * steps and False in modes


def test_test_checkpoint_last_keeps_the_last_epochs_weights(toy_splits, tmp_path):
    result, module = run_fit(toy_splits, tmp_path, epochs=2, test_checkpoint="last")
    last, _ = load_tensors(tmp_path / "checkpoints" / "last.safetensors")
    weights = {k[len("module.") :]: v for k, v in last.items() if k.startswith("module.")}
    assert all(torch.equal(module.state_dict()[k], v) for k, v in weights.items())
    assert result.test_checkpoint == "last"


def test_monitor_loss_selects_the_least_validation_loss(toy_splits, tmp_path):
    result, _ = run_fit(toy_splits, tmp_path, epochs=3, monitor="loss", optimizer={"name": "sgd", "lr": 5.0})
    losses = [h["val/loss"] for h in result.history]
    assert result.best_value == min(losses) and result.best_epoch == 1 + losses.index(min(losses))


def test_early_stopping_stops_after_patience_epochs_without_improvement(toy_splits, tmp_path):
    # lr 0 on the model: the validation accuracy never changes after epoch 1, so epochs 2 and 3 are bad ones
    result, _ = run_fit(
        toy_splits, tmp_path, epochs=6, optimizer={"name": "sgd", "lr": 1e-12}, early_stopping={"patience": 2}
    )
    assert (result.epochs_run, result.best_epoch, result.stopped_early) == (3, 1, True)
    assert len(result.history) == 3


def test_resume_continues_to_the_weights_and_history_of_an_uninterrupted_run(toy_splits, tmp_path):
    full, full_module = run_fit(toy_splits, tmp_path / "full", epochs=4, test_checkpoint="last")
    run_fit(toy_splits, tmp_path / "cut", epochs=2, test_checkpoint="last")
    resumed, module = run_fit(toy_splits, tmp_path / "cut", epochs=4, resume=True, test_checkpoint="last")
    assert [h["epoch"] for h in resumed.history] == [3, 4] and resumed.epochs_run == 4
    assert resumed.train_steps == 2 * math.ceil(len(toy_splits.train) / 100)
    for k, v in full_module.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k
    assert [h["val/accuracy"] for h in resumed.history] == [h["val/accuracy"] for h in full.history[2:]]
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


def test_resume_without_a_checkpoint_starts_from_scratch(toy_splits, tmp_path):
    a, ma = run_fit(toy_splits, tmp_path / "a", epochs=2)
    b, mb = run_fit(toy_splits, tmp_path / "b", epochs=2, resume=True)
    assert [h["epoch"] for h in b.history] == [1, 2]
    assert all(torch.equal(ma.state_dict()[k], v) for k, v in mb.state_dict().items())


def test_a_run_that_stopped_early_does_not_train_again_on_resume(toy_splits, tmp_path):
    kw = {"optimizer": {"name": "sgd", "lr": 1e-12}, "early_stopping": {"patience": 1}}
    first, _ = run_fit(toy_splits, tmp_path, epochs=5, **kw)
    assert first.stopped_early and first.epochs_run == 2
    again, module = run_fit(toy_splits, tmp_path, epochs=5, resume=True, **kw)
    assert again.history == [] and again.epochs_run == 2 and again.stopped_early and module.method.calls == 0


def test_fit_sweeps_stale_temp_files_of_dead_writers_and_nothing_else(toy_splits, tmp_path):
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:64]
    dead = 2**22 + 12345  # beyond the default pid_max: no such process
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir(parents=True)
    stale = [d / f".last.safetensors.mmdistill-{host}-{dead}-abc.tmp" for d in (tmp_path, ckpt)]
    keep = [tmp_path / "notes.txt", ckpt / ".last.safetensors.other.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert not os.path.exists(f"/proc/{dead}")
    run_fit(toy_splits, tmp_path, epochs=1)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_each_epoch_draws_one_int64_from_the_global_rng(toy_splits):
    cfg = cfg_of()
    batches = tr.TrainingBatches(toy_splits.train, cfg, 0, 0, 1, torch.device("cpu"))
    torch.manual_seed(7)
    batches.epoch(1)
    after = torch.rand(3)
    torch.manual_seed(7)
    torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(after, torch.rand(3))


def test_the_epochs_shuffle_depends_on_the_epoch_and_not_on_the_global_rng(toy_splits):
    cfg = cfg_of(batch_size=50)
    batches = tr.TrainingBatches(toy_splits.train, cfg, 0, 0, 1, torch.device("cpu"))
    torch.manual_seed(1)
    e1 = torch.cat([b[INDEX] for b in batches.epoch(1)])
    torch.manual_seed(2)
    e1_again = torch.cat([b[INDEX] for b in batches.epoch(1)])
    e2 = torch.cat([b[INDEX] for b in batches.epoch(2)])
    assert torch.equal(e1, e1_again) and not torch.equal(e1, e2)
    assert sorted(e1.tolist()) == sorted(e2.tolist()) == list(range(len(toy_splits.train)))


def test_fit_defaults_start_afresh_and_log_a_train_line_per_epoch(toy_splits, tmp_path, capsys):
    """Without ``resume`` an existing checkpoint is not continued; without ``quiet`` (stderr not a terminal) each
    epoch prints one line headed by ``desc``, which defaults to ``train``."""
    cfg = cfg_of(epochs=2)
    for _ in range(2):
        torch.manual_seed(0)
        module = DistillationModule(LinearOnA(), CE())
        result = fit(make_fabric(cfg), module, toy_splits.train, toy_splits.val, cfg, seed=0, out_dir=tmp_path)
        assert [h["epoch"] for h in result.history] == [1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("train: epoch 1/2 loss ") for line in lines) == 2
    fit(make_fabric(cfg), module, toy_splits.train, toy_splits.val, cfg, 0, tmp_path / "t", desc="seed 3 teacher")
    assert capsys.readouterr().err.startswith("seed 3 teacher: epoch 1/2 loss ")


# ----- what the first mutation run of the trainer showed untested ---------------------------------------------------


def test_epoch_means_of_a_single_example_are_its_values():
    m = EpochMeans()
    m.add(torch.tensor(3.0), {"ce": torch.tensor(5.0)}, examples=1)
    assert m.result() == {"loss": 3.0, "ce": 5.0}


def _ranked_fabric(rank: int, world: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world, global_rank=rank, device=torch.device("cpu"), is_global_zero=rank == 0)


def test_each_process_trains_on_its_own_share_and_only_rank_zero_logs(toy_splits, tmp_path):
    cfg = cfg_of(batch_size=50)
    shares = []
    for rank in (0, 1):
        run = tr._Training(_ranked_fabric(rank, 2), DistillationModule(LinearOnA(), CE()), toy_splits.train,
                           toy_splits.val, cfg, 0, tmp_path / f"r{rank}", None, True, "train")  # fmt: skip
        batches = list(run.batches.epoch(1))
        assert len(batches[0][INDEX]) == 25, "the global batch is split over the processes"
        shares.append(set(torch.cat([b[INDEX] for b in batches]).tolist()))
        assert run.logger.enabled is (rank == 0)
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(len(toy_splits.train)))


def test_quiet_prints_nothing(toy_splits, tmp_path, capsys):
    run_fit(toy_splits, tmp_path, epochs=2)  # run_fit passes quiet=True
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("scheduler", [{"name": "cosine"}, {"name": "step", "step_size": 3, "gamma": 0.1}])
def test_resume_restores_the_schedulers_position(toy_splits, tmp_path, scheduler):
    """Two of four epochs, then ``--resume``: the learning rates and weights of an uninterrupted run (the scheduler's
    state is saved with each checkpoint and loaded on resume; a fresh cosine or step schedule would differ)."""
    kw = {"test_checkpoint": "last", "scheduler": scheduler}
    full, full_module = run_fit(toy_splits, tmp_path / "full", epochs=4, **kw)
    cut, cfg = tmp_path / "cut", cfg_of(epochs=4, **kw)
    torch.manual_seed(0)
    module = DistillationModule(LinearOnA(), CE())
    run = tr._Training(make_fabric(cfg), module, toy_splits.train, toy_splits.val, cfg, 0, cut, None, True, "train")
    run.start(False)
    for epoch in (1, 2):  # the first two epochs of fit(), then the process "dies"
        run.end_epoch(epoch, *run.train_epoch(epoch))
    run.logger.close()
    resumed, module = run_fit(toy_splits, cut, epochs=4, resume=True, **kw)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history[2:]]
    for k, v in full_module.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k


class TeacherTerm(Method):
    """``ce`` and a ``kd`` term that adds the teacher's logits (so a NaN teacher makes it NaN), weighted ``w``."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__(NoParams())
        self.w = w

    def loss_weights(self):
        return {"ce": 1.0, "kd": self.w}

    def losses(self, batch, student_out, teacher_out):
        return {
            "ce": nn.functional.cross_entropy(student_out.logits, batch[LABEL]),
            "kd": (student_out.logits - teacher_out.logits).square().mean() + 1e30,
        }


def _fit_with_teacher(splits, out, teacher_logits, w=1.0):
    cfg = cfg_of(epochs=1)
    torch.manual_seed(0)
    module = DistillationModule(LinearOnA(), TeacherTerm(w))
    source = lambda batch: TeacherOutputs(logits=teacher_logits.expand(len(batch[LABEL]), -1))  # noqa: E731
    return fit(make_fabric(cfg), module, splits.train, splits.val, cfg, 0, out, teacher_source=source, quiet=True)


def test_a_nan_teacher_in_training_is_named_with_the_split(toy_splits, tmp_path):
    with pytest.raises(TrainingError) as err:
        _fit_with_teacher(toy_splits, tmp_path, torch.tensor([0.0, math.nan, 0.0, 0.0]))
    msg = str(err.value)
    assert msg.startswith("epoch 1, step 0: the teacher's logits are not finite")
    assert f"on split {toy_splits.train.name!r}" in msg


def test_a_weighted_sum_that_overflows_in_training_is_reported_as_such(toy_splits, tmp_path):
    with pytest.raises(TrainingError, match=r"the weighted sum of the loss terms is not finite \(inf\) although"):
        _fit_with_teacher(toy_splits, tmp_path, torch.zeros(4), w=1e9)  # kd ~1e30 x 1e9 overflows float32


class FirstStepOnly(LinearOnA):
    """A parameter ``extra`` that takes part in the first training forward pass only."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Parameter(torch.zeros(4))
        self.training_calls = 0

    def forward(self, batch):
        out = super().forward(batch)
        if self.training:
            self.training_calls += 1
            if self.training_calls == 1:
                out = out + self.extra
        return out


def test_gradients_are_reset_to_none_so_an_unused_parameter_is_not_stepped(toy_splits, tmp_path):
    """Adam skips a parameter whose ``grad`` is None; a zeroed grad would move it again by Adam's momentum."""
    student = FirstStepOnly()
    cfg = cfg_of(epochs=1, batch_size=50, optimizer={"name": "adam", "lr": 0.1})
    torch.manual_seed(0)
    module = DistillationModule(student, CE())
    after_first: list = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        out = orig(self, *a, **k)
        if not after_first:
            after_first.append(student.extra.detach().clone())
        return out

    torch.optim.Adam.step = step
    try:
        fit(make_fabric(cfg), module, toy_splits.train, toy_splits.val, cfg, 0, tmp_path, quiet=True)
    finally:
        torch.optim.Adam.step = orig
    assert student.training_calls > 2 and not torch.equal(after_first[0], torch.zeros(4))
    assert torch.equal(student.extra.detach(), after_first[0])


def test_train_seconds_are_the_time_spent_in_the_epochs_steps(toy_splits, tmp_path):
    import time

    start = time.perf_counter()
    result, _ = run_fit(toy_splits, tmp_path, epochs=2)
    wall = time.perf_counter() - start
    assert 0 < result.train_seconds <= wall
    assert all(0 < h["train_seconds"] <= wall for h in result.history)


def test_an_improvement_resets_the_count_of_bad_epochs(toy_splits, tmp_path):
    cfg = cfg_of(epochs=9, early_stopping={"patience": 2})
    run = tr._Training(
        _ranked_fabric(1, 2),
        DistillationModule(LinearOnA(), CE()),
        toy_splits.train,
        toy_splits.val,
        cfg,
        0,
        tmp_path,
        None,
        True,
        "train",
    )  # fmt: skip (rank 1: writes nothing)
    for epoch, acc in enumerate([0.5, 0.4, 0.6, 0.5], start=1):  # bad, better, bad: never two bad in a row
        run.select(epoch, acc)
    expected = {"epoch": 4, "step": 0, "best_value": 0.6, "best_epoch": 3, "bad_epochs": 1, "stopped_early": False}
    assert run.state == expected
    run.select(5, 0.6)  # equal is not better: the second bad epoch in a row
    assert run.state["stopped_early"] and run.state["bad_epochs"] == 2
