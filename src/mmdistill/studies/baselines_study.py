"""``mmdistill reproduce baselines --dataset NAME``: every distillation method on one teacher/student pair, same budget.

Per seed: one teacher (trained once), then the same small student (same initialisation per
seed) trained with every method: no-KD, KD, DKD, DIST, logit-standardised KD, PKT, RKD, SP, CRD,
C2KD, MLLD (its own set of temperatures), FD-CMKD and MFH modality-general KD. Same data split, optimiser
(Adam 3e-3), batch 64 and epochs for all.
Methods with a temperature are run at each T of a small grid (:data:`T_GRID`); the T with the
best mean *validation* accuracy over the seeds is chosen and the *test* accuracy of the
best-validation epoch at that T is reported. Differences to KD are paired by seed (95% t-CI).
Step time: the trainer's training seconds per step, median over seeds, relative to KD's.
MFH modality-general KD reads its channel scores from a file (``scores_csv``) written once per seed:
Algorithm 1 on the teacher's ``head.0`` against that seed's no-KD student (the student trained alone by CE,
the algorithm's "separately pretrained" student), on the first :data:`SALIENCE_ROWS` training rows.
Feature methods read the fused features (``head.0``, the input of the classification layer) of
both models. Attention transfer needs spatial maps, which the MLPs of mfeat and AV-Digits do not have: it
runs on AV-MNIST only, between the audio LeNets of teacher and student.

AV-MNIST (``--data``, a built folder) is the MFH Table 1 pair (:mod:`.mfh_table1`): MultiBench's image + audio
late fusion teacher -> audio LeNet student, MultiBench's optimiser (SGD 0.1, batch 40), the teacher on 6,000 and
the student on 2,000 rows (the first rows of one fixed order), 500 validation and 2,000 test rows, 3 epochs; a
teacher per seed.
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
from .mfh_table1 import avmnist_splits, multibench_trainer, reference_model
from .progress import announce

T_GRID = (1.0, 2.0, 4.0)
SALIENCE_ROWS = 1000
LAYERS = {"student_layer": "head.0", "teacher_layer": "head.0"}
AUDIO_MAPS = "encoders.audio.body.11"  # the audio LeNet's third block: (B, 24, 14, 14) maps in teacher and student
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
    "mlld": ("mlld", {}, None),
    "fd_cmkd": ("fd_cmkd", LAYERS, None),
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
    extra: dict = field(default_factory=dict)  # more methods, as in METHODS (AT where the models have spatial maps)
    lenet_rows: tuple[int, int] | None = None  # AV-MNIST: MFH Table 1's LeNet pair on (student, teacher) rows


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
    "avmnist": Setup(
        "avmnist",
        {},
        ["image", "audio"],
        ["audio"],
        epochs=3,
        lenet_rows=(2000, 6000),
        extra={"at": ("at", {"student_layer": AUDIO_MAPS, "teacher_layer": AUDIO_MAPS}, None)},
        note="AV-MNIST rebuilt from MNIST + FSDD (`--data`), crossmodal, the MFH Table 1 pair: MultiBench's LeNet late "
        "fusion on image + audio (6,000 rows) -> audio LeNet (2,000 rows), SGD 0.1, 3 epochs",
    ),
}


def _model(setup: Setup, teacher: bool, data):
    modalities = setup.modalities if teacher else setup.student_modalities or setup.modalities
    if setup.lenet_rows:
        return build_model(reference_model(modalities), data.train.specs(), data.num_classes)
    hidden = setup.teacher_hidden if teacher else setup.student_hidden
    enc = EncoderConfig(type="mlp", hidden=[hidden], out_dim=hidden)
    return build_model(ModelConfig(modalities=modalities, encoder=enc), data.train.specs(), data.num_classes)


def _salience_csv(teacher: torch.nn.Module, student: torch.nn.Module, data, path: Path) -> Path:
    """Algorithm 1's scores of the teacher's ``head.0`` channels, in ``mmdistill salience``'s scores.csv form."""
    from ..mfh.algorithm1 import channel_salience

    layer = METHODS["mfh_general"][1]["teacher_layer"]
    teacher, student = copy.deepcopy(teacher).cpu(), copy.deepcopy(student).cpu()
    batch = data.train.__getitems__(range(min(SALIENCE_ROWS, len(data.train))))
    scores = channel_salience(teacher, student, batch, batch, layer, permutations=10, seed=0).scores
    return write_csv(path, [{"channel": c, "score": float(v)} for c, v in enumerate(scores)])


def _study_data(name: str, setup: Setup, data_dir: str | None):
    """(student data, teacher data): every row for both, or AV-MNIST's fixed row subsets."""
    if setup.lenet_rows:
        return avmnist_splits("reproduce baselines", data_dir, setup.lenet_rows)
    if data_dir is not None:
        raise ConfigError(f"--data: only for --dataset avmnist; {name} is bundled")
    data = build_splits(setup.data, setup.params, seed=0)
    return data, data


def run_dataset(
    name: str,
    seeds: list[int],
    out: Path,
    epochs: int | None = None,
    quiet: bool = True,
    data_dir: str | None = None,
    accelerator: str = "cpu",
) -> list[dict]:
    """One row per (seed, method, temperature): validation and test accuracy, seconds per training step."""
    if name not in SETUPS:
        raise ConfigError(f"--dataset: baselines are set up for {', '.join(SETUPS)}; got {name!r}")
    setup = SETUPS[name]
    data, teacher_data = _study_data(name, setup, data_dir)
    if setup.lenet_rows:
        trainer = multibench_trainer(epochs or setup.epochs, accelerator)
    else:
        trainer = TrainerConfig(
            epochs=epochs or setup.epochs,
            batch_size=64,
            optimizer={"name": "adam", "lr": 3e-3},
            accelerator=accelerator,
        )
    cache = CacheConfig(dir=out / "cache")
    rows = []
    for seed in seeds:
        work = out / "runs" / name / f"seed_{seed}"
        torch.manual_seed(seed)
        teacher = _model(setup, True, teacher_data)
        t = distill(
            teacher, None, teacher_data, work / "teacher", "supervised", trainer=trainer, seed=seed, quiet=quiet
        )
        nokd = None
        for label, (method, params, t_name) in {**METHODS, **setup.extra}.items():
            if method == "mfh_general":
                assert nokd is not None  # "nokd" comes first in METHODS: its student scores the channels
                params = dict(params, scores_csv=str(_salience_csv(teacher, nokd, data, work / "salience.csv")))
            for temp in T_GRID if t_name else (None,):
                torch.manual_seed(seed)
                student = _model(setup, False, data)
                p = dict(params, **({t_name: temp} if t_name else {}))
                # MFH modifies its teacher (a hook on the layer): give it a copy
                t_model = None if method == "supervised" else teacher
                if method == "mfh_general":
                    t_model = copy.deepcopy(teacher)
                tag = label + (f"_T{temp:g}" if temp else "")
                r = distill(
                    student, t_model, data, work / tag, method, p, trainer=trainer, cache=cache, seed=seed, quiet=quiet
                )
                if label == "nokd":
                    nokd = r.student
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "method": label,
                        "temperature": temp if temp else "",
                        "val_acc": r.val["accuracy"] / 100,  # RunResult gives percent; the study keeps fractions
                        "test_acc": r.test["accuracy"] / 100,
                        "teacher_acc": t.test["accuracy"] / 100,
                        "sec_per_step": r.train_seconds / max(r.train_steps, 1),
                    }
                )
        announce(f"{name} seed {seed}: teacher and {len({row['method'] for row in rows})} students trained")
    return rows


def chosen(rows: list[dict]) -> dict[str, list[dict]]:
    """Per method, the rows (one per seed, by seed) at the temperature with the best mean validation accuracy."""
    picked = {}
    for label in dict.fromkeys(r["method"] for r in rows):
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


def run_study(
    datasets: list[str],
    seeds: list[int],
    out: Path,
    command: str,
    epochs: int | None = None,
    data_dir: str | None = None,
    accelerator: str = "cpu",
) -> str:
    start = time.perf_counter()
    rows = []
    for name in datasets:
        rows += run_dataset(
            name, seeds, out, epochs, data_dir=data_dir if name == "avmnist" else None, accelerator=accelerator
        )
    write_text(out / "summary.md", summary_markdown(rows, command))
    write_csv(out / "results.csv", rows)  # last: its presence marks a finished study
    seconds = time.perf_counter() - start
    return f"baselines: {len(rows)} students in {seconds:.0f} s; wrote {out}/results.csv and summary.md"
