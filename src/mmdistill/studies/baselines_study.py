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

Options: ``several_teachers`` (``--teacher-rows``) adds the rows of :mod:`.baselines_teachers`, in a table of their
own (a teacher per modality, alone and combined; the multimodal one with them; MST-Distill; DML and C2KD with a
teacher that learns alongside), each after the seed's single-teacher rows, so those are unchanged; ``methods`` runs
only some single-teacher rows, ``temperatures`` replaces :data:`T_GRID`, ``train_size`` sets AV-MNIST's student rows
(the teacher's: 3x).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from ..config import CacheConfig, TrainerConfig
from ..data import Splits, build_splits
from ..engine.api import distill
from ..errors import ConfigError
from ..io import write_csv, write_text
from ..models import EncoderConfig, ModelConfig, build_model
from ..stats import format_summary, paired_difference, summarize
from .baselines_teachers import MULTIMODAL, teacher_rows, teachers_of, train_unimodal_teachers
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
        "fusion on image + audio ({teacher_rows:,} rows) -> audio LeNet ({student_rows:,} rows), SGD 0.1, 3 epochs",
    ),
}


def _model(setup: Setup, teacher: bool, data, modalities: list[str] | None = None):
    """The study's teacher (on ``modalities``, default the setup's) or student model."""
    modalities = modalities or (setup.modalities if teacher else setup.student_modalities or setup.modalities)
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


def _setup(name: str, train_size: int | None) -> Setup:
    """The dataset's setup; ``train_size`` (AV-MNIST only): the student's training rows, the teacher's 3x as many."""
    if name not in SETUPS:
        raise ConfigError(f"--dataset: baselines are set up for {', '.join(SETUPS)}; got {name!r}")
    setup = SETUPS[name]
    if train_size is None:
        return setup
    if not setup.lenet_rows:
        raise ConfigError(f"--train-size: only for --dataset avmnist; {name} trains on all its rows")
    return replace(setup, lenet_rows=(train_size, 3 * train_size))


def _trainer(setup: Setup, epochs: int | None, accelerator: str) -> TrainerConfig:
    if setup.lenet_rows:
        return multibench_trainer(epochs or setup.epochs, accelerator)
    return TrainerConfig(
        epochs=epochs or setup.epochs, batch_size=64, optimizer={"name": "adam", "lr": 3e-3}, accelerator=accelerator
    )


def _plan(setup: Setup, methods: list[str] | None) -> dict[str, tuple[str, dict, str | None]]:
    """The single-teacher rows to run: every one, or ``methods`` (labels) with ``nokd`` and ``kd`` always."""
    every = {**METHODS, **setup.extra}
    if methods is None:
        return every
    unknown = sorted(set(methods) - set(every))
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; the rows are {', '.join(every)}")
    return {label: v for label, v in every.items() if label in {"nokd", "kd", *methods}}


@dataclass
class _Seed:
    """What every student of one (dataset, seed) shares."""

    name: str
    seed: int
    work: Path
    setup: Setup
    data: Splits
    teacher_acc: float
    run: dict  # distill's trainer, cache, seed, quiet

    def row(self, label: str, temp: float | None, result, teachers: str, **extra) -> dict:
        return {
            "dataset": self.name,
            "seed": self.seed,
            "method": label,
            "temperature": temp if temp else "",
            "teachers": teachers,
            "val_acc": result.val["accuracy"] / 100,  # RunResult gives percent; the study keeps fractions
            "test_acc": result.test["accuracy"] / 100,
            "teacher_acc": self.teacher_acc,
            "sec_per_step": result.train_seconds / max(result.train_steps, 1),
            "train_rows": len(self.data.train),
            **extra,
        }

    def student(self, label: str, temp: float | None, teacher, method: str, params: dict, **kw):
        torch.manual_seed(self.seed)
        student = _model(self.setup, False, self.data)
        tag = label + (f"_T{temp:g}" if temp else "")
        return distill(student, teacher, self.data, self.work / tag, method, params, **self.run, **kw)


def _single_teacher_rows(s: _Seed, teacher, plan: dict, temperatures: Sequence[float]) -> list[dict]:
    """The rows of ``plan``, each from the study's one (multimodal) teacher."""
    rows, nokd = [], None
    for label, (method, params, t_name) in plan.items():
        if method == "mfh_general":
            assert nokd is not None  # "nokd" comes first in METHODS: its student scores the channels
            params = dict(params, scores_csv=str(_salience_csv(teacher, nokd, s.data, s.work / "salience.csv")))
        for temp in temperatures if t_name else (None,):
            # MFH modifies its teacher (a hook on the layer): give it a copy
            t_model = None if method == "supervised" else teacher
            if method == "mfh_general":
                t_model = copy.deepcopy(teacher)
            r = s.student(label, temp, t_model, method, dict(params, **({t_name: temp} if t_name else {})))
            if label == "nokd":
                nokd = r.student
            rows.append(s.row(label, temp, r, "" if t_model is None else MULTIMODAL))
    return rows


def _several_teacher_rows(s: _Seed, teacher, teacher_data, temperatures: Sequence[float]) -> list[dict]:
    """The rows of :mod:`.baselines_teachers`: a teacher per modality trained first, then every row of them."""
    make = partial(_model, s.setup, True, teacher_data)
    run = {k: v for k, v in s.run.items() if k in ("trainer", "quiet")}
    unimodal = train_unimodal_teachers(s.setup.modalities, make, teacher_data, s.work, s.seed, **run)
    teachers = {MULTIMODAL: teacher, **{m: model for m, (model, _) in unimodal.items()}}
    accs = {f"teacher_{m}_acc": acc for m, (_, acc) in unimodal.items()}
    rows = []
    for label, row in teacher_rows(s.setup.modalities, LAYERS).items():
        for temp in temperatures if row.temperature else (None,):
            params = dict(row.params, **({row.temperature: temp} if row.temperature else {}))
            r = s.student(label, temp, teachers_of(row, teachers), row.method, params, teacher_trainable=row.online)
            rows.append(s.row(label, temp, r, "+".join(row.teachers), **accs))
    return rows


def run_dataset(
    name: str,
    seeds: list[int],
    out: Path,
    epochs: int | None = None,
    quiet: bool = True,
    data_dir: str | None = None,
    accelerator: str = "cpu",
    *,
    methods: list[str] | None = None,
    temperatures: Sequence[float] = T_GRID,
    several_teachers: bool = False,
    train_size: int | None = None,
) -> list[dict]:
    """One row per (seed, method, temperature): validation and test accuracy, seconds per training step.

    ``methods``: only these single-teacher rows (labels of :data:`METHODS`; ``nokd`` and ``kd`` always run);
    ``several_teachers``: also the rows of :mod:`.baselines_teachers`; ``temperatures``: the grid of T.
    """
    setup = _setup(name, train_size)
    plan = _plan(setup, methods)
    data, teacher_data = _study_data(name, setup, data_dir)
    trainer = _trainer(setup, epochs, accelerator)
    cache = CacheConfig(dir=out / "cache")
    rows = []
    for seed in seeds:
        work = out / "runs" / name / f"seed_{seed}"
        torch.manual_seed(seed)
        teacher = _model(setup, True, teacher_data)
        t = distill(
            teacher, None, teacher_data, work / "teacher", "supervised", trainer=trainer, seed=seed, quiet=quiet
        )
        run = {"trainer": trainer, "cache": cache, "seed": seed, "quiet": quiet}
        s = _Seed(name, seed, work, setup, data, t.test["accuracy"] / 100, run)
        rows += _single_teacher_rows(s, teacher, plan, temperatures)
        if several_teachers:
            rows += _several_teacher_rows(s, teacher, teacher_data, temperatures)
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


def _note(setup: Setup, rows: list[dict]) -> str:
    """The setup's note; AV-MNIST's names the rows its models trained on."""
    if not setup.lenet_rows:
        return setup.note
    student_rows = rows[0].get("train_rows") or setup.lenet_rows[0]
    return setup.note.format(student_rows=int(student_rows), teacher_rows=3 * int(student_rows))


def _temperatures(rows: list[dict]) -> list[float]:
    return sorted({r["temperature"] for r in rows if r["temperature"] != ""}) or list(T_GRID)


def _line(label: str, rs: list[dict], references: list[list[dict]], kd_step: float, teachers: bool = False) -> str:
    """A table row: T, validation and test accuracy, paired differences to each reference (its own: "—"), step."""
    acc = [r["test_acc"] for r in rs]
    diffs = [
        "—" if ref is rs else format_summary(paired_difference(acc, [r["test_acc"] for r in ref])) for ref in references
    ]
    step = statistics.median(r["sec_per_step"] for r in rs) / kd_step
    temp = rs[0]["temperature"]
    val = 100 * statistics.mean(r["val_acc"] for r in rs)
    named = f" {rs[0].get('teachers') or '—'} |" if teachers else ""
    return (
        f"| {label} |{named} {temp if temp != '' else '—'} | {val:.2f} | "
        f"{format_summary(summarize(acc))} | {' | '.join(diffs)} | {step:.2f} |"
    )


def _several_teachers_table(name: str, picked: dict[str, list[dict]]) -> list[str]:
    """The second table: KD from the multimodal teacher, then each row of :mod:`.baselines_teachers`."""
    setup = SETUPS[name]
    labels = [label for label in teacher_rows(setup.modalities, LAYERS) if label in picked]
    if not labels:
        return []
    kd = picked["kd"]
    own = [f"kd_{m}_teacher" for m in setup.student_modalities or [] if f"kd_{m}_teacher" in picked][:1]
    references = [kd, *(picked[label] for label in own)]
    first = picked[labels[0]]
    accs = "; ".join(
        f"{m} {format_summary(summarize([r[key] for r in first]))}"
        for m, key in [(MULTIMODAL, "teacher_acc"), *((m, f"teacher_{m}_acc") for m in setup.modalities)]
        if key in first[0]
    )
    kd_step = statistics.median(r["sec_per_step"] for r in kd)
    return [
        "### Several teachers, and a teacher that learns alongside",
        "",
        f"Teachers (test accuracy): {accs}. `teachers`: the ones each row read (`multimodal`: the teacher of the "
        "table above; a modality: the teacher of that modality alone); `_online`: that teacher learns alongside.",
        "",
        "| method | teachers | T | val accuracy | test accuracy | minus KD (paired) |"
        + "".join(f" minus {label} (paired) |" for label in own)
        + " step time / KD |",
        "|---|---|---|---|---|---|" + "---|" * len(own) + "---|",
        *(_line(label, picked[label], references, kd_step, teachers=True) for label in ["kd", *labels]),
        "",
    ]


def summary_markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"# Distillation baselines, same teacher/student and budget\n\nCommand: `{command}`. "
        f"Test accuracy (points) of the best-validation epoch; temperature chosen from {_temperatures(rows)} "
        "by mean validation accuracy over the seeds; "
        "mean ± std [95% t-CI] over seeds; differences to KD paired by seed; step time = median over seeds of the "
        "trainer's seconds per training step, relative to KD.\n"
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        picked = chosen(sub)
        several = set(teacher_rows(SETUPS[name].modalities, LAYERS))
        seeds = [r["seed"] for r in picked["kd"]]
        teacher = summarize([r["teacher_acc"] for r in picked["nokd"]])
        kd_step = statistics.median(r["sec_per_step"] for r in picked["kd"])
        lines += [
            f"## {name}: {_note(SETUPS[name], sub)}",
            "",
            f"Seeds {seeds}; teacher {format_summary(teacher)}.",
            "",
            "| method | T | val accuracy | test accuracy | minus KD (paired) | step time / KD |",
            "|---|---|---|---|---|---|",
            *(_line(label, rs, [picked["kd"]], kd_step) for label, rs in picked.items() if label not in several),
            "",
            *_several_teachers_table(name, picked),
        ]
    return "\n".join(lines)


def run_study(
    datasets: list[str],
    seeds: list[int],
    out: Path,
    command: str,
    epochs: int | None = None,
    data_dir: str | None = None,
    accelerator: str = "cpu",
    **options,
) -> str:
    """Every dataset's rows into ``out/results.csv`` and ``out/summary.md``; ``options``: :func:`run_dataset`'s
    ``methods``, ``temperatures``, ``several_teachers`` and ``train_size``."""
    start = time.perf_counter()
    rows = []
    for name in datasets:
        avmnist = name == "avmnist"  # --data and --train-size are AV-MNIST's
        own = {k: v for k, v in options.items() if avmnist or k != "train_size"}
        rows += run_dataset(
            name, seeds, out, epochs, data_dir=data_dir if avmnist else None, accelerator=accelerator, **own
        )
    write_text(out / "summary.md", summary_markdown(rows, command))
    fields = list(dict.fromkeys(key for row in rows for key in row))  # the per-modality teachers' columns too
    write_csv(out / "results.csv", rows, fields)  # last: its presence marks a finished study
    seconds = time.perf_counter() - start
    return f"baselines: {len(rows)} students in {seconds:.0f} s; wrote {out}/results.csv and summary.md"
