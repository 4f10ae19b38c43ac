"""Time per training step of every distillation method, relative to Hinton KD.

One step = the student's forward (with hooks), the method's named losses, the weighted sum, backward
and an Adam step, with the teacher's outputs precomputed per batch (what the teacher cache serves).
Models: 1-D CNN encoders on the 64-dim toy vectors (so attention transfer has maps), teacher on both
modalities, student on one; feature methods use the second conv block of each. Set-up and
``prepare`` (e.g. MFH's Algorithm 1 scores, CRD's bank) are not in the step time. A teacher that learns alongside
("teacher learns": DML, C2KD with ``teacher.trainable``) runs in every step instead: its forward with gradients,
its backward and its share of the Adam step are in the step time ("kd (teacher online)": the frozen teacher's
forward without gradients in every step, as with augmented data). Runs alternate
between methods (every method once per round, ``--rounds`` rounds of ``--steps`` steps); the figure
is the median over rounds of each method's seconds per step, and its ratio to KD's median.

    python benchmarks/bench_methods.py [--threads 1] [--rounds 7] [--steps 20] [--batch 128]
        [--only rkd "crd (K=4096)"] [--clock cpu] [--floor] [--faults]

``--only``: time these methods (and KD, the reference) only; ``--faults``: also each method's median minor page faults
per step (memory the allocator handed back to the system and takes again); ``--clock cpu``: the process's CPU time per
step (``time.process_time``) instead of the wall clock, steadier on a machine shared with other jobs; ``--floor``: add
a row timing only CRD's two score products (every anchor against every bank row, forward and backward; at K >= N the
exact loss needs both), and one timing those with CRD's two embeddings (the linear maps of the student's and the
teacher's hooked features, forward and backward): the matrix products no exact CRD step can skip at these shapes. A CRD
step costs at least the KD step (the same student forward, backward and Adam step) plus the second row.
"""

from __future__ import annotations

import argparse
import functools
import platform
import resource
import statistics
import time

import torch

from mmdistill.batch import INDEX
from mmdistill.data import build_splits
from mmdistill.engine.api import build_method
from mmdistill.engine.teacher import teacher_outputs
from mmdistill.engine.trainer import DistillationModule, weighted_total
from mmdistill.masking import Masker
from mmdistill.models import EncoderConfig, ModelConfig, build_model

LAYERS = {"student_layer": "encoders.b.body.3", "teacher_layer": "encoders.a.body.3"}
METHODS = {
    "kd": ("kd", {"temperature": 4.0}),
    "dkd": ("dkd", {}),
    "dist": ("dist", {}),
    "logit_std_kd": ("logit_std_kd", {}),
    "hint": ("hint", LAYERS),
    "at (code)": ("at", {**LAYERS, "form": "code"}),
    "at (paper)": ("at", {**LAYERS, "form": "paper"}),
    "pkt": ("pkt", LAYERS),
    "rkd": ("rkd", LAYERS),
    "sp": ("sp", LAYERS),
    "crd (K=4096)": ("crd", LAYERS),
    "crd (K=1024)": ("crd", {**LAYERS, "nce_k": 1024}),
    "c2kd": ("c2kd", LAYERS),
    "mlld": ("mlld", {}),
    "fd_cmkd": ("fd_cmkd", LAYERS),
    "kd (teacher online)": ("kd", {"temperature": 4.0}),
    "dml (teacher learns)": ("dml", {}),
    "c2kd (teacher learns)": ("c2kd", LAYERS),
    "mfh_general": (
        "mfh_general",
        {"teacher_layer": "encoders.a.body.3", "salience_epochs": 20, "salience_examples": 512},
    ),
}


def make(label: str, data, masker, batch: int):
    name, params = METHODS[label]
    specs, n = data.train.specs(), data.num_classes
    torch.manual_seed(0)
    t_enc = EncoderConfig(type="cnn1d", channels=[16, 32], out_dim=64)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=t_enc), specs, n).eval()
    torch.manual_seed(1)
    s_enc = EncoderConfig(type="cnn1d", channels=[8, 16], out_dim=32)
    student = build_model(ModelConfig(modalities=["b"], encoder=s_enc), specs, n)
    method = build_method(name, params, masker)
    method.setup(data.train.__getitems__(range(8)), student, teacher)
    learns = method.teacher_learns = "teacher learns" in label
    for p in teacher.parameters():
        p.requires_grad_(learns)
    train = method.prepare(data.train, teacher, torch.device("cpu"))
    module = DistillationModule(student, method, teacher if learns else None).train()
    batches = [train.__getitems__(range(i, i + batch)) for i in range(0, len(train) - batch + 1, batch)]
    request = method.teacher_request()
    if learns or "teacher online" in label:  # the teacher runs in each step (with gradients when it learns)
        outs = [functools.partial(teacher_outputs, teacher, b, request, masker, learns) for b in batches]
    else:  # precomputed, as the teacher cache serves them
        cached = [teacher_outputs(teacher, b, request, masker) for b in batches]
        outs = [functools.partial(lambda out: out, out) for out in cached]
    return module, torch.optim.Adam(module.parameters(), lr=1e-3), batches, outs


def time_steps(state, steps: int, cursor: int, clock=time.perf_counter) -> float:
    module, opt, batches, outs = state
    weights = module.method.loss_weights()
    start = clock()
    for i in range(steps):
        j = (cursor + i) % len(batches)
        teacher_out = outs[j]()
        module.method.before_step(module.student, batches[j], teacher_out)  # the trainer's order (a no-op here)
        _, losses = module(batches[j], teacher_out)
        total = weighted_total(losses, weights)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        module.method.after_step(i + 1, 0)  # the trainer's order: state changed after the step (CRD's bank, Z)
    return (clock() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--only", nargs="+", choices=list(METHODS), help="these methods (and kd) only")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--floor", action="store_true", help="add CRD's score products alone (K = 4096)")
    ap.add_argument("--faults", action="store_true", help="also each method's minor page faults per step")
    args = ap.parse_args()
    labels = [label for label in METHODS if not args.only or label == "kd" or label in args.only]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    data = build_splits("toy-two-modality", {"n": args.n, "dim_a": 64, "dim_b": 64})
    masker = Masker(data.train.specs(), "zeros").fit(data.train.feature_mean())
    states: dict = {label: make(label, data, masker, args.batch) for label in labels}
    if args.floor:
        crd_state = states.get("crd (K=4096)") or make("crd (K=4096)", data, masker, args.batch)
        states["crd (K=4096): score products only"] = functools.partial(time_score_products, crd_state)
        states["crd (K=4096): score and embedding products"] = functools.partial(time_crd_products, crd_state)
    faults: dict | None = {} if args.faults else None
    print_ratios(alternate(states, args.rounds, args.steps, clock, faults), "kd", args, args.clock, faults)


def time_score_products(state, steps: int, cursor: int, clock=time.perf_counter) -> float:
    """Seconds per step of CRD's score products alone: both anchors (2, B, d) against both banks (2, N, d), forward
    and the anchors' gradient, at the shapes of ``state``'s CRD (``make("crd (K=4096)", ...)``)."""
    method, batch = state[0].method, len(state[2][0][INDEX])
    banks = torch.stack([method.bank_t, method.bank_s])
    anchors = torch.randn(2, batch, banks.shape[2], requires_grad=True)
    start = clock()
    for _ in range(steps):
        scores = torch.bmm(anchors / method.params.nce_t, banks.transpose(1, 2))
        torch.autograd.grad(scores.sum(), anchors)
    return (clock() - start) / steps


def time_crd_products(state, steps: int, cursor: int, clock=time.perf_counter) -> float:
    """Seconds per step of CRD's matrix products alone: the two embeddings of the batch's hooked features (the
    student's with its input gradient, the teacher's without: its features are fixed) and the score products of
    :func:`time_score_products`, forward and backward, at the shapes of ``state``'s CRD."""
    module, batches, outs = state[0], state[2], state[3]
    method = module.method
    banks = torch.stack([method.bank_t, method.bank_s])
    student_in = torch.randn(len(batches[0][INDEX]), method.embed_s.in_features, requires_grad=True)
    teacher_in = outs[0]().features[method.params.teacher_layer].flatten(1)
    start = clock()
    for _ in range(steps):
        anchors = torch.stack([method.embed_s(student_in), method.embed_t(teacher_in)])
        scores = torch.bmm(anchors / method.params.nce_t, banks.transpose(1, 2))
        scores.sum().backward()
    return (clock() - start) / steps


def alternate(
    states: dict, rounds: int, steps: int, clock=time.perf_counter, faults: dict | None = None
) -> dict[str, list[float]]:
    """Seconds per step of each state's method, ``rounds`` times, every method once per round (after a warm-up).
    A state may also be a function ``(steps, cursor, clock) -> seconds per step``. With ``faults`` (a dict), each
    method's minor page faults per step in each round are put in it too (``getrusage``)."""
    timers = {label: s if callable(s) else functools.partial(time_steps, s) for label, s in states.items()}
    for timer in timers.values():
        timer(3, 0)
    times: dict[str, list[float]] = {label: [] for label in states}
    for r in range(rounds):
        for label, timer in timers.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[label].append(timer(steps, r * steps, clock))
            if faults is not None:
                after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                faults.setdefault(label, []).append((after - before) / steps)
    return times


def print_ratios(
    times: dict[str, list[float]], reference: str, args, clock_name: str = "wall", faults: dict | None = None
) -> None:
    """The Markdown table: each method's median ms per step and its ratio to ``reference``'s median (with ``faults``,
    also its median minor page faults per step)."""
    ref = statistics.median(times[reference])
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"batch {args.batch}, {args.rounds} rounds x {args.steps} steps, alternating; median ms/step "
        f"({clock_name} clock)"
    )
    extra = " minor page faults / step |" if faults else ""
    print("| method | ms / step | x KD |" + extra)
    print("|---|---|---|" + ("---|" if faults else ""))
    for label, values in times.items():
        med = statistics.median(values)
        cell = f" {statistics.median(faults[label]):.0f} |" if faults else ""
        print(f"| {label} | {1000 * med:.2f} | {med / ref:.2f} |" + cell)


if __name__ == "__main__":
    main()
