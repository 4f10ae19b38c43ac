"""Whole processes, start to exit: start-up, a 1-epoch ``train``, ``evaluate --missing --noise``, and an MLP KD run
against a bare PyTorch script doing the same work.

Each figure is one process launched from here, ``--repeats`` times in turn (median); CPU is the child's user +
system time (``os.wait4``), wall its elapsed time. One thread everywhere (``OMP_NUM_THREADS=1``).

* ``import torch`` (``python -c "import torch"``), the floor; ``import mmdistill.engine.api``, what ``train`` imports;
* ``train``: ``mmdistill train <config> --seeds 1 trainer.epochs=1 trainer.num_threads=1 --quiet``; with
  ``MMDISTILL_TRACE_STARTUP=1`` the trainer prints the Unix time of its first step, so the seconds to the first
  training step are reported too;
* ``evaluate``: ``mmdistill evaluate <that run> --missing --noise``;
* ``bare KD script`` / ``mmdistill KD script``: the same KD run in two scripts (:data:`BARE_KD`, :data:`MMDISTILL_KD`):
  toy-two-modality-sized data (n = 20,000, 12,000 train, two 64-dim modalities, 4 classes), teacher MLP on a+b
  (random weights, its logits computed once), student MLP 64 -> 256 -> 256 -> 128 -> 4 on b, Adam, batch 64,
  3 epochs, loss 0.5 CE + 0.5 * 16 KL (T = 4), validation after every epoch, best weights kept, test accuracy at the
  end. The bare script writes the best weights once; mmdistill writes its run folder. Each writes into a new
  folder inside the folder given as its argument, so a run can be repeated.

Ratios (CPU): train / import torch, evaluate / import torch, mmdistill KD / bare KD, each the median of the
per-repeat ratios (pairs measured back to back).

Usage: ``PYTHONPATH=src python benchmarks/bench_startup.py [--repeats 3] [--config src/mmdistill/configs/demo.yaml]
[--json FILE]`` (``--json``: every measurement, for ``benchmarks/compare.py``)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = """
import torch
def toy_data(n=20000, dim=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    means = torch.randn(classes, 2 * dim, generator=g)
    x = means[y] + 2.0 * torch.randn(n, 2 * dim, generator=g)
    cut = [int(n * 0.6), int(n * 0.8)]
    parts = lambda t: (t[: cut[0]], t[cut[0] : cut[1]], t[cut[1] :])
    return parts(x[:, :dim].contiguous()), parts(x[:, dim:].contiguous()), parts(y)
"""

BARE_KD = (
    DATA
    + """
import sys, copy, tempfile, torch.nn.functional as F
torch.set_num_threads(1)
(a_tr, a_va, a_te), (b_tr, b_va, b_te), (y_tr, y_va, y_te) = toy_data()
def mlp(dims):
    layers = []
    for i in range(len(dims) - 1):
        layers += [torch.nn.Linear(dims[i], dims[i + 1]), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])
torch.manual_seed(0)
teacher = mlp([128, 256, 128, 4]).eval()
torch.manual_seed(1)
student = mlp([64, 256, 256, 128, 4])
with torch.no_grad():
    t_logits = teacher(torch.cat([a_tr, b_tr], 1))
opt = torch.optim.Adam(student.parameters(), lr=1e-3)
def kd(s, t, T=4.0):
    return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T
def accuracy(x, y):
    with torch.no_grad():
        return float((student(x).argmax(1) == y).float().mean())
best, best_state = -1.0, None
for epoch in range(3):
    student.train()
    perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(epoch))
    for i in range(0, len(perm), 64):
        idx = perm[i : i + 64]
        logits = student(b_tr[idx])
        loss = 0.5 * F.cross_entropy(logits, y_tr[idx]) + 0.5 * kd(logits, t_logits[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    student.eval()
    acc = accuracy(b_va, y_va)
    if acc > best:
        best, best_state = acc, copy.deepcopy(student.state_dict())
student.load_state_dict(best_state)
torch.save(best_state, tempfile.mkdtemp(dir=sys.argv[1]) + "/student.pt")
print("test accuracy", accuracy(b_te, y_te))
"""
)

MMDISTILL_KD = (
    DATA
    + """
import sys, tempfile, torch
from mmdistill.engine.api import distill
from mmdistill.batch import ModalitySpec
from mmdistill.config import TrainerConfig
try:
    from mmdistill.data.contracts.dataset import MultimodalDataset
except ImportError:  # commits before data/ was split into rooms
    from mmdistill.data.dataset import MultimodalDataset
from mmdistill.models import EncoderConfig, ModelConfig, build_model
(a_tr, a_va, a_te), (b_tr, b_va, b_te), (y_tr, y_va, y_te) = toy_data()
split = lambda a, b, y: MultimodalDataset({"a": a, "b": b}, y, 4)
torch.manual_seed(0)
specs = [ModalitySpec("a", (64,)), ModalitySpec("b", (64,))]
teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[256], out_dim=128)), specs, 4)
torch.manual_seed(1)
student = build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[256, 256], out_dim=128)), specs, 4)
out = tempfile.mkdtemp(dir=sys.argv[1]) + "/run"
result = distill(
    student, teacher.eval(), None, out, "kd", {"temperature": 4.0, "lam": 0.5},
    trainer=TrainerConfig(epochs=3, batch_size=64, num_threads=1, optimizer={"name": "adam", "lr": 1e-3}),
    train=split(a_tr, b_tr, y_tr), val=split(a_va, b_va, y_va), test=split(a_te, b_te, y_te), quiet=True,
)
print("test accuracy", result.test["accuracy"])
"""
)


def run_process(cmd: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Launch ``cmd``; its wall and CPU seconds (user + system, from ``wait4``) and its stderr."""
    launched = time.time()
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "stderr": stderr, "launched": launched}


def one_round(py: str, config: str, env: dict[str, str], tmp: Path, r: int) -> dict[str, dict[str, float]]:
    """One repeat of every measurement: {name: {"wall": s, "cpu": s[, "first_step": s]}}."""
    out: dict[str, dict[str, float]] = {}
    keep = ("wall", "cpu")
    for module in ("torch", "mmdistill.engine.api"):
        name = f"import {module}"
        got = run_process([py, "-c", name], env)
        out[name] = {k: float(got[k]) for k in keep}
    run = tmp / f"train{r}"
    train = [py, "-m", "mmdistill", "train", config, "--seeds", "1", "trainer.epochs=1", "trainer.num_threads=1"]
    got = run_process([*train, "--out", str(run), "--quiet"], env)
    found = re.search(r"first training step at unix time ([0-9.]+)", str(got["stderr"]))
    if found is None:
        raise SystemExit(f"no start-up trace line on stderr:\n{str(got['stderr'])[-2000:]}")
    out["train"] = {k: float(got[k]) for k in keep}
    out["train"]["first_step"] = float(found.group(1)) - float(got["launched"])
    got = run_process([py, "-m", "mmdistill", "evaluate", str(run), "--missing", "--noise"], env)
    out["evaluate --missing --noise"] = {k: float(got[k]) for k in keep}
    for name, script in (("bare KD script", BARE_KD), ("mmdistill KD script", MMDISTILL_KD)):
        folder = tmp / f"{name.split()[0]}{r}"
        folder.mkdir()
        got = run_process([py, "-c", script, str(folder)], env)
        out[name] = {k: float(got[k]) for k in keep}
    return out


RATIOS = {  # name: (numerator, denominator), CPU seconds
    "train / import torch": ("train", "import torch"),
    "evaluate --missing --noise / import torch": ("evaluate --missing --noise", "import torch"),
    "mmdistill KD script / bare KD script": ("mmdistill KD script", "bare KD script"),
}


def ratios(rounds: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Median over the repeats of each CPU ratio (numerator and denominator of one repeat)."""
    return {
        name: statistics.median(r[num]["cpu"] / r[den]["cpu"] for r in rounds) for name, (num, den) in RATIOS.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="src/mmdistill/configs/demo.yaml")
    parser.add_argument("--json", help="write every measurement and the ratios to this file")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MMDISTILL_TRACE_STARTUP="1")
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [one_round(sys.executable, args.config, env, Path(tmp), r) for r in range(args.repeats)]
    print(f"{'what':34s} {'CPU s':>7s} {'wall s':>7s}  (median of {args.repeats}; CPU of each run)")
    for name in rounds[0]:
        cpu = [r[name]["cpu"] for r in rounds]
        wall = statistics.median(r[name]["wall"] for r in rounds)
        print(f"{name:34s} {statistics.median(cpu):7.2f} {wall:7.2f}  " + " ".join(f"{v:.2f}" for v in cpu))
    first = statistics.median(r["train"]["first_step"] for r in rounds)
    print(f"{'train: first training step (wall)':34s} {'':7s} {first:7.2f}")
    summary = ratios(rounds)
    for name, value in summary.items():
        print(f"CPU ratio {name}: {value:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "ratios": summary}, indent=1))


if __name__ == "__main__":
    main()
