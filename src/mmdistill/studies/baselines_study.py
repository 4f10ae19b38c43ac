"""``mmdistill reproduce baselines --dataset NAME``: every distillation method on one teacher/student pair, same budget.

Per seed: one teacher (trained once), then the same small student (same initialisation per
seed) trained with every method: no-KD, KD, DKD, DIST, logit-standardised KD, PKT, RKD, SP, CRD,
C2KD and MFH modality-general KD. Same data split, optimiser (Adam 3e-3), batch 64 and epochs for all.
Methods with a temperature are run at each T of a small grid (:data:`T_GRID`); the T with the
best mean *validation* accuracy over the seeds is chosen and the *test* accuracy of the
best-validation epoch at that T is reported. Differences to KD are paired by seed (95% t-CI).
Step time: the trainer's training seconds per step, median over seeds, relative to KD's.
Feature methods read the fused features (``head.0``, the input of the classification layer) of
both models. Attention transfer needs spatial maps, which these MLPs do not have: not run.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import CacheConfig, TrainerConfig
from ..data import build_splits
from ..engine.api import distill
from ..errors import ConfigError
from ..io import write_csv, write_text
from ..models import EncoderConfig, ModelConfig, build_model
from ..stats import format_summary, paired_difference, summarize

T_GRID = (1.0, 2.0, 4.0)
LAYERS = {"student_layer": "head.0", "teacher_layer": "head.0"}
# method label -> (registered name, fixed params, name of its temperature parameter or None)
METHODS: dict[str, tuple[str, dict, str | None]] = {
    "nokd": ("supervised", {}, None),
    "kd": ("kd", {"lam": 0.5}, "temperature"),
    "dkd": ("dkd", {"alpha": 1.0, "beta": 8.0}, "temperature"),
    "dist": ("dist", {}, "tau"),
    "logit_std_kd": ("logit_std_kd", {"lam": 0.5}, "temperature"),
    "pkt": ("pkt", LAYERS, None),
    "rkd": ("rkd", LAYERS, None),
    "sp": ("sp", LAYERS, None),
    "crd": ("crd", {**LAYERS, "nce_k": 1024}, None),
    "c2kd": ("c2kd", LAYERS, "temperature"),
    "mfh_general": ("mfh_general", {"teacher_layer": "head.0", "keep_ratio": 0.5, "lam": 0.5}, "temperature"),
}


@dataclass
class Setup:
    data: str
    params: dict
    modalities: list[str]  # the teacher's
    student_modalities: list[str] | None = None  # None: the teacher's (a smaller student); else crossmodal
    teacher_hidden: int = 256
    student_hidden: int = 16
    epochs: int = 20
    note: str = ""
    extra: dict = field(default_factory=dict)


SETUPS = {
    "mfeat": Setup(
        "mfeat",
        {"views": ["fou", "zer", "mor"]},
        ["fou", "zer", "mor"],
        note="UCI mfeat, views fou + zer + mor; teacher MLP 256 per view, student MLP 16 per view",
    ),
    "av-digits": Setup(
        "av-digits",
        {},
        ["image", "audio"],
        ["audio"],
        teacher_hidden=128,
        student_hidden=32,
        note="AV-Digits (bundled), crossmodal: teacher MLP 128 per modality on image + audio, "
        "student MLP 32 on audio alone",
    ),
}


def _model(setup: Setup, hidden: int, data, modalities: list[str] | None = None):
    enc = EncoderConfig(type="mlp", hidden=[hidden], out_dim=hidden)
    return build_model(
        ModelConfig(modalities=modalities or setup.modalities, encoder=enc), data.train.specs(), data.num_classes
    )


def run_dataset(name: str, seeds: list[int], out: Path, epochs: int | None = None, quiet: bool = True) -> list[dict]:
    """One row per (seed, method, temperature): validation and test accuracy, seconds per training step."""
    if name not in SETUPS:
        raise ConfigError(f"--dataset: baselines are set up for {', '.join(SETUPS)}; got {name!r}")
    setup = SETUPS[name]
    data = build_splits(setup.data, setup.params, seed=0)
    trainer = TrainerConfig(epochs=epochs or setup.epochs, batch_size=64, optimizer={"name": "adam", "lr": 3e-3})
    cache = CacheConfig(dir=out / "cache")
    rows = []
    for seed in seeds:
        work = out / "runs" / name / f"seed_{seed}"
        torch.manual_seed(seed)
        teacher = _model(setup, setup.teacher_hidden, data)
        t = distill(teacher, None, data, work / "teacher", "supervised", trainer=trainer, seed=seed, quiet=quiet)
        for label, (method, params, t_name) in METHODS.items():
            for temp in T_GRID if t_name else (None,):
                torch.manual_seed(seed)
                student = _model(setup, setup.student_hidden, data, setup.student_modalities)
                p = dict(params, **({t_name: temp} if t_name else {}))
                # MFH modifies its teacher (a hook on the layer): give it a copy
                t_model = None if method == "supervised" else teacher
                if method == "mfh_general":
                    t_model = copy.deepcopy(teacher)
                tag = label + (f"_T{temp:g}" if temp else "")
                r = distill(
                    student, t_model, data, work / tag, method, p, trainer=trainer, cache=cache, seed=seed, quiet=quiet
                )
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "method": label,
                        "temperature": temp if temp else "",
                        "val_acc": r.val["accuracy"],
                        "test_acc": r.test["accuracy"],
                        "teacher_acc": t.test["accuracy"],
                        "sec_per_step": r.train_seconds / max(r.train_steps, 1),
                    }
                )
    return rows


def chosen(rows: list[dict]) -> dict[str, list[dict]]:
    """Per method, the rows (one per seed, by seed) at the temperature with the best mean validation accuracy."""
    picked = {}
    for label in METHODS:
        sub = [r for r in rows if r["method"] == label]
        temps = list(dict.fromkeys(r["temperature"] for r in sub))
        best = max(temps, key=lambda t: statistics.mean(r["val_acc"] for r in sub if r["temperature"] == t))
        picked[label] = sorted((r for r in sub if r["temperature"] == best), key=lambda r: r["seed"])
    return picked


def summary_markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"# Distillation baselines, same teacher/student and budget\n\nCommand: `{command}`. "
        f"Test accuracy (points) of the best-validation epoch; temperature chosen from {list(T_GRID)} "
        "by mean validation accuracy over the seeds; "
        "mean ± std [95% t-CI] over seeds; differences to KD paired by seed; step time = median over seeds of the "
        "trainer's seconds per training step, relative to KD.\n"
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        picked = chosen(sub)
        seeds = [r["seed"] for r in picked["kd"]]
        teacher = summarize([r["teacher_acc"] for r in picked["nokd"]])
        kd_acc = [r["test_acc"] for r in picked["kd"]]
        kd_step = statistics.median(r["sec_per_step"] for r in picked["kd"])
        lines += [
            f"## {name}: {SETUPS[name].note}",
            "",
            f"Seeds {seeds}; teacher {format_summary(teacher)}.",
            "",
            "| method | T | val accuracy | test accuracy | minus KD (paired) | step time / KD |",
            "|---|---|---|---|---|---|",
        ]
        for label, rs in picked.items():
            acc = [r["test_acc"] for r in rs]
            diff = format_summary(paired_difference(acc, kd_acc)) if label != "kd" else "—"
            step = statistics.median(r["sec_per_step"] for r in rs) / kd_step
            temp = rs[0]["temperature"]
            val = 100 * statistics.mean(r["val_acc"] for r in rs)
            lines.append(
                f"| {label} | {temp if temp != '' else '—'} | {val:.2f} | "
                f"{format_summary(summarize(acc))} | {diff} | {step:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def run_study(datasets: list[str], seeds: list[int], out: Path, command: str, epochs: int | None = None) -> str:
    start = time.perf_counter()
    rows = []
    for name in datasets:
        rows += run_dataset(name, seeds, out, epochs)
    write_text(out / "summary.md", summary_markdown(rows, command))
    write_csv(out / "results.csv", rows)  # last: its presence marks a finished study
    seconds = time.perf_counter() - start
    return f"baselines: {len(rows)} students in {seconds:.0f} s; wrote {out}/results.csv and summary.md"
