"""Time per training step of the several-teacher methods, relative to Hinton KD from one teacher.

The set-up of ``bench_methods.py``: 1-D CNN encoders on the 64-dim toy vectors, the student on modality b; one step =
the student's forward, the method's named losses, the weighted sum, backward and an Adam step, with the teachers'
outputs precomputed per batch (what the teacher cache serves, one table per teacher). KD distils from the teacher on
both modalities; the several-teacher methods from that teacher and one on modality a alone (K = 2). Runs alternate
between methods (every method once per round, ``--rounds`` rounds of ``--steps`` steps, the step of
``bench_methods.py``); the figure is the median over rounds of each method's seconds per step, and its ratio to KD's
median.

    python benchmarks/bench_multi_teacher.py [--threads 1] [--rounds 7] [--steps 20] [--batch 128]
"""

from __future__ import annotations

import argparse
import functools

import torch
from bench_methods import alternate, print_ratios

from mmdistill.data import build_splits
from mmdistill.engine.api import build_method
from mmdistill.engine.teacher import TeacherGroup, teacher_outputs
from mmdistill.engine.trainer import DistillationModule
from mmdistill.masking import Masker
from mmdistill.models import EncoderConfig, ModelConfig, build_model

METHODS = {
    "kd (one teacher)": ("kd", {"temperature": 4.0}),
    "multi_teacher_kd": ("multi_teacher_kd", {}),
    "multi_teacher_adaptive (confidence)": ("multi_teacher_adaptive", {"weighting": "confidence"}),
    "multi_teacher_adaptive (entropy)": ("multi_teacher_adaptive", {"weighting": "entropy"}),
    "mst_distill (top_k 1)": ("mst_distill", {}),
    "mst_distill (top_k 2)": ("mst_distill", {"top_k": 2}),
}


def teachers(data):
    specs, n = data.train.specs(), data.num_classes
    enc = EncoderConfig(type="cnn1d", channels=[16, 32], out_dim=64)
    torch.manual_seed(0)
    both = build_model(ModelConfig(modalities=["a", "b"], encoder=enc), specs, n).eval()
    torch.manual_seed(2)
    one = build_model(ModelConfig(modalities=["a"], encoder=enc), specs, n).eval()
    for p in [*both.parameters(), *one.parameters()]:
        p.requires_grad_(False)
    return both, TeacherGroup({"both": both, "a": one}).eval()


def make(label: str, data, masker, batch: int, single, group):
    name, params = METHODS[label]
    teacher = single if name == "kd" else group
    torch.manual_seed(1)
    s_enc = EncoderConfig(type="cnn1d", channels=[8, 16], out_dim=32)
    student = build_model(ModelConfig(modalities=["b"], encoder=s_enc), data.train.specs(), data.num_classes)
    method = build_method(name, params, masker)
    method.setup(data.train.__getitems__(range(8)), student, teacher)
    module = DistillationModule(student, method).train()
    batches = [data.train.__getitems__(range(i, i + batch)) for i in range(0, len(data.train) - batch + 1, batch)]
    cached = [teacher_outputs(teacher, b, method.teacher_request(), masker) for b in batches]
    outs = [functools.partial(lambda out: out, out) for out in cached]  # what bench_methods' step calls
    return module, torch.optim.Adam(module.parameters(), lr=1e-3), batches, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = build_splits("toy-two-modality", {"n": args.n, "dim_a": 64, "dim_b": 64})
    masker = Masker(data.train.specs(), "zeros").fit(data.train.feature_mean())
    single, group = teachers(data)
    states = {label: make(label, data, masker, args.batch, single, group) for label in METHODS}
    print_ratios(alternate(states, args.rounds, args.steps), "kd (one teacher)", args)


if __name__ == "__main__":
    main()
