"""``mmdistill reproduce msd``: MSD against KD and no-KD, a large multimodal teacher -> a small student on the same
modalities.

Per dataset and seed: one teacher (trained once), then the same small student trained six
ways on the same seed: ``nokd``, ``kd`` and ``msd-{uniform,population,instance,learned}``.
All runs share data split, initialisation (per seed), optimiser and epochs; the test
accuracy of the best-validation epoch is reported. Differences are paired by seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import CacheConfig, TrainerConfig
from ..data import build_splits
from ..engine.api import distill
from ..evaluation.modality_importance import importance_markdown, modality_importance, plot_saliency_histogram
from ..io import write_csv, write_text
from ..masking import Masker
from ..models import EncoderConfig, ModelConfig, build_model
from ..stats import format_summary, paired_difference, summarize
from .progress import announce

METHODS = ["nokd", "kd", "msd-uniform", "msd-population", "msd-instance", "msd-learned"]


@dataclass
class StudySetup:
    data: str
    params: dict
    modalities: list[str]
    teacher_hidden: int = 256
    student_hidden: int = 16
    epochs: int = 30
    note: str = ""
    kd: dict = field(default_factory=lambda: {"temperature": 4.0, "lam": 0.5})
    lenet: bool = False  # AV-MNIST: MultiBench's LeNet late fusion (teacher) and a half-width one (student)
    rows: tuple[int, int] = (0, 0)  # (student, teacher) training rows of a fixed random order; 0: every row


# AV-MNIST: the teacher is MultiBench's late fusion (image LeNet [6..48] + audio LeNet [6..192], MLP 100),
# trained on 3x the student's rows (a superset); the student the same design at half the channel widths (MLP 50).
# MultiBench's optimiser (SGD lr 0.1, wd 1e-4, batch 40), 3 epochs, 500 validation and 2,000 test rows: the
# budget of `reproduce mfh-table1`, so that five seeds fit a CPU.
AVMNIST_STUDENT_ROWS, AVMNIST_TEACHER_ROWS, AVMNIST_EPOCHS = 2000, 6000, 3


SETUPS = {
    "mfeat": StudySetup(
        "mfeat",
        {"views": ["fou", "zer", "mor"]},
        ["fou", "zer", "mor"],
        note="UCI mfeat, three of its weaker views (Fourier, Zernike, morphological)",
    ),
    "av-digits": StudySetup("av-digits", {}, ["image", "audio"], note="AV-Digits, image + audio"),
    "avmnist": StudySetup(
        "avmnist",
        {},
        ["image", "audio"],
        epochs=AVMNIST_EPOCHS,
        lenet=True,
        rows=(AVMNIST_STUDENT_ROWS, AVMNIST_TEACHER_ROWS),
        note=(
            "AV-MNIST rebuilt from MNIST + FSDD (`--data`), image + audio; LeNet late fusion teacher (6,000 rows) -> "
            "half-width student (2,000 rows), 3 epochs of SGD"
        ),
    ),
    "venn": StudySetup(
        "venn",
        {"s0": 4, "sa": 16, "sb": 2, "num_classes": 4, "n_train": 1500, "n_val": 500, "n_test": 2000},
        ["a", "b"],
        note="modality Venn diagram, a far more salient than b (s0=4, sa=16, sb=2), 4 classes",
    ),
}


def _model(setup: StudySetup, teacher: bool, data):
    if setup.lenet:
        return _lenet_model(teacher, data)
    hidden = setup.teacher_hidden if teacher else setup.student_hidden
    enc = EncoderConfig(type="mlp", hidden=[hidden], out_dim=hidden)
    return build_model(ModelConfig(modalities=setup.modalities, encoder=enc), data.train.specs(), data.num_classes)


def _lenet_model(teacher: bool, data):
    """MultiBench's AV-MNIST late fusion (teacher), or the same at half the channel widths (student)."""
    from .mfh_table1 import half_width_model, reference_model

    config = (reference_model if teacher else half_width_model)(["image", "audio"])
    return build_model(config, data.train.specs(), data.num_classes)


def _study_data(setup: StudySetup, data_dir: str | None):
    """(teacher data, student data): every row for both, or AV-MNIST's fixed subsets (mfh_table1.row_subsets)."""
    if not setup.lenet:
        data = build_splits(setup.data, setup.params, seed=0)
        return data, data
    from .mfh_table1 import avmnist_splits

    student, teacher = avmnist_splits("reproduce msd", data_dir, setup.rows)
    return teacher, student


def _student_method(method: str, kd: dict) -> tuple[str, dict | None]:
    """The ``distill()`` method and params of the study's student ``method`` (``nokd``, ``kd``, ``msd-WEIGHTING``)."""
    if method == "nokd":
        return "supervised", None
    if method == "kd":
        return "kd", kd
    weighting = method.split("-")[1]
    return "msd", {**kd, "weighting": weighting, "heldout_fraction": 0.1 if method.endswith("learned") else 0.0}


def run_dataset(
    name: str,
    seeds: list[int],
    out: Path,
    epochs: int | None = None,
    quiet: bool = True,
    data_dir: str | None = None,
    lr: float | None = None,
    teacher_dropout: float = 0.0,
) -> tuple[list[dict], dict]:
    """Rows ``{dataset, seed, method, student_acc, student_f1, teacher_acc}`` and the seed-0 modality analysis.

    ``teacher_dropout``: the teachers are trained with ``supervised``'s ``modality_dropout`` (a controlled variation:
    a teacher that can predict from each modality alone gives MSD's modality-only terms useful targets)."""
    setup = SETUPS[name]
    teacher_data, data = _study_data(setup, data_dir)
    if setup.lenet:
        from .mfh_table1 import multibench_trainer

        trainer = multibench_trainer(epochs or setup.epochs)
    else:
        trainer = TrainerConfig(epochs=epochs or setup.epochs, batch_size=64, optimizer={"name": "adam", "lr": 3e-3})
    if lr is not None:  # a controlled variation: the same study at another learning rate
        trainer = trainer.model_copy(update={"optimizer": trainer.optimizer.model_copy(update={"lr": lr})})
    cache = CacheConfig(dir=out / "cache")
    rows, analysis = [], {}
    for seed in seeds:
        work = out / "runs" / name / f"seed_{seed}"
        torch.manual_seed(seed)
        teacher = _model(setup, True, data)
        t = distill(
            teacher,
            None,
            teacher_data,
            work / "teacher",
            "supervised",
            {"modality_dropout": teacher_dropout} if teacher_dropout else None,
            trainer=trainer,
            seed=seed,
            quiet=quiet,
        )
        students = {}
        for method in METHODS:
            torch.manual_seed(seed)
            student = _model(setup, False, data)
            how, params = _student_method(method, setup.kd)
            r = distill(
                student,
                None if how == "supervised" else teacher,
                data,
                work / method,
                how,
                params,
                trainer=trainer,
                cache=cache,
                seed=seed,
                quiet=quiet,
            )
            students[method] = student
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "method": method,
                    "student_acc": r.test["accuracy"] / 100,  # RunResult gives percent; the study keeps fractions
                    "student_f1": r.test["f1_macro"] / 100,
                    "teacher_acc": t.test["accuracy"] / 100,
                    "train_seconds": r.train_seconds,
                    "train_steps": r.train_steps,
                }
            )
        announce(f"{name} seed {seed}: teacher and {len(students)} students trained")
        if seed == seeds[0]:
            masker = Masker(data.train.specs(), "zeros").fit(data.train.feature_mean())
            analysis = modality_importance(
                teacher, {m: students[m] for m in ("nokd", "kd", "msd-instance")}, data, masker
            )
    return rows, analysis


def summary_markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"# MSD vs KD vs no-KD\n\nCommand: `{command}`. Test accuracy (points) of the best-validation epoch; "
        "mean ± std [95% t-CI] over seeds; differences paired by seed.\n"
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        seeds = sorted({r["seed"] for r in sub})
        acc = {m: [r["student_acc"] for r in sorted(sub, key=lambda r: r["seed"]) if r["method"] == m] for m in METHODS}
        teacher = summarize([r["teacher_acc"] for r in sub if r["method"] == "nokd"])
        lines += [
            f"## {name}: {SETUPS[name].note}",
            "",
            f"Seeds {seeds}; teacher {format_summary(teacher)}.",
            "",
            "| method | student accuracy | minus KD (paired) | minus no-KD (paired) |",
            "|---|---|---|---|",
        ]
        for m in METHODS:
            vs_kd = format_summary(paired_difference(acc[m], acc["kd"])) if m != "kd" else "—"
            vs_nokd = format_summary(paired_difference(acc[m], acc["nokd"])) if m != "nokd" else "—"
            lines.append(f"| {m} | {format_summary(summarize(acc[m]))} | {vs_kd} | {vs_nokd} |")
        lines.append("")
    return "\n".join(lines)


def write_study(rows: list[dict], analyses: dict, out: Path, command: str) -> None:
    for name, analysis in analyses.items():
        if "instance" in analysis:
            plot_saliency_histogram(
                analysis, out / f"saliency_{name}.png", title=f"{name}: teacher's instance saliency"
            )
        write_text(
            out / f"modalities_{name}.md",
            f"# Modality importance: {name} (seed {rows[0]['seed']})\n\n" + importance_markdown(analysis),
        )
    write_text(out / "summary.md", summary_markdown(rows, command))
    write_csv(out / "results.csv", rows)  # last: its presence marks a finished study


def run_study(
    datasets: list[str],
    seeds: list[int],
    out: Path,
    command: str,
    epochs: int | None = None,
    data_dir=None,
    lr=None,
    teacher_dropout: float = 0.0,
) -> str:
    start = time.perf_counter()
    rows, analyses = [], {}
    for name in datasets:
        r, a = run_dataset(name, seeds, out, epochs, data_dir=data_dir, lr=lr, teacher_dropout=teacher_dropout)
        rows += r
        analyses[name] = a
    write_study(rows, analyses, out, command)
    return f"msd: {len(rows)} students in {time.perf_counter() - start:.0f} s; wrote {out}/results.csv and summary.md"
