"""MFH paper Table 1, AV-MNIST row: a more accurate multimodal teacher does not give a better student.

Xue et al., ICLR 2023, Table 1 (DESIGN.md 2.4): the student reads **audio**; it is trained without
KD, distilled from an audio teacher, and distilled from an image+audio teacher. Paper: no-KD 68.36;
audio teacher 84.57 -> student 70.10; image+audio teacher 91.61 -> student 69.73.

Here, on AV-MNIST rebuilt from MNIST + FSDD (:mod:`mmdistill.data.builders.avmnist_build`), with MultiBench's
AV-MNIST models (:class:`~mmdistill.models.encoders.LeNetEncoder`):

* student: audio LeNet [6, 12, 24, 48, 96, 192] + MLP head (192 -> 100 -> 10), on ``train_size`` rows;
* audio teacher: the same architecture trained on ``teacher_factor`` x as many rows (a superset of
  the student's), so it is more accurate than the no-KD student, as in the paper;
* image+audio teacher: MultiBench's late fusion (image LeNet [6, 12, 24, 48] and the audio LeNet,
  features concatenated, MLP 240 -> 100 -> 10) on the same rows as the audio teacher.

All are trained with MultiBench's optimiser (SGD, lr 0.1, weight decay 1e-4, batch 40) and tested
with the best-validation weights. The teachers are trained once (seed ``seeds[0]``) and frozen;
each seed trains the three students (its own initialisation and shuffle). KD is Hinton's
``(1 - lam) CE + lam T^2 KL(p_t || p_s)``. Paired statistics over seeds: each KD student minus the
no-KD student, and the image+audio-teacher student minus the audio-teacher student.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..batch import ModalitySpec
from ..config import CacheConfig, OptimizerConfig, TrainerConfig
from ..data.contracts.dataset import DataSplits
from ..engine.api import distill
from ..engine.protocol import _load_finished
from ..errors import ConfigError
from ..io import write_text
from ..models.encoders import EncoderConfig
from ..models.multimodal import ModelConfig, build_model
from ..stats import paired_difference, summarize

PAPER = {"nokd": 68.36, "audio_teacher": 84.57, "kd_audio": 70.10, "av_teacher": 91.61, "kd_av": 69.73}
IMAGE_LENET = EncoderConfig(type="lenet", channels=[6, 12, 24, 48])
AUDIO_LENET = EncoderConfig(type="lenet", channels=[6, 12, 24, 48, 96, 192])
ROW_FIELDS = ["seed", "model", "role", "train_rows", "test_acc", "val_acc", "best_epoch", "seconds"]


def run_dir(out: Path, name: str, seed: int) -> Path:
    """Where one model of a study is trained: ``out/runs/<name>/seed_<seed>/model`` (the reproduce layout)."""
    return out / "runs" / name / f"seed_{seed}" / "model"


def reference_model(modalities: Sequence[str]) -> ModelConfig:
    """MultiBench's AV-MNIST model on ``modalities``: LeNet encoders, concatenated, MLP head with 100 hidden units."""
    encoders = {"image": IMAGE_LENET, "audio": AUDIO_LENET}
    return ModelConfig(
        modalities=list(modalities), encoders={m: encoders[m] for m in modalities}, fusion="concat", head_hidden=[100]
    )


def multibench_trainer(epochs: int, accelerator: str = "cpu") -> TrainerConfig:
    return TrainerConfig(
        epochs=epochs,
        batch_size=40,
        optimizer=OptimizerConfig(name="sgd", lr=0.1, weight_decay=1e-4, momentum=0.0),
        test_checkpoint="best",
        accelerator=accelerator,
    )


def subsets(
    splits: DataSplits, train_rows: int, val_rows: int, test_rows: int, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """A fixed random order of the training rows (the first ``n`` are any run's ``n`` rows) and val/test subsets."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(splits.train))
    pick = {s: np.sort(rng.permutation(len(splits.split(s)))[:n]) for s, n in (("val", val_rows), ("test", test_rows))}
    return order, {s: splits.split(s).subset(torch.from_numpy(r)) for s, r in pick.items()}


def row_subsets(splits: DataSplits, sizes: Sequence[int], val_rows: int = 500, test_rows: int = 2000) -> list:
    """``[splits with the first n training rows of one fixed order for n in sizes]``: the smaller are subsets.

    Every entry shares the same fixed validation and test subsets; an ``n`` above the training rows gets them all.
    """
    order, held = subsets(splits, max(sizes), val_rows, test_rows)
    return [
        DataSplits(
            splits.train.subset(torch.from_numpy(np.sort(order[:n]))),
            held["val"],
            held["test"],
            description=f"avmnist, {min(n, len(order))} training rows",
        )
        for n in sizes
    ]


def avmnist_splits(command: str, data_dir: str | Path | None, rows: Sequence[int]) -> list:
    """:func:`row_subsets` of a built AV-MNIST folder (``--data``) for each size in ``rows``."""
    if data_dir is None:
        raise ConfigError(
            f"{command} --dataset avmnist: give --data DIR, a `mmdistill data build av-mnist` folder (built from "
            "MNIST and FSDD, which are not bundled)"
        )
    from ..data import build_splits

    return row_subsets(build_splits("avmnist", {"root": str(data_dir)}, seed=0), rows)


def half_width_model(modalities: Sequence[str]) -> ModelConfig:
    """:func:`reference_model` at half the channel widths and half the head (a smaller same-design student)."""
    encoders = {
        "image": EncoderConfig(type="lenet", channels=[3, 6, 12, 24]),
        "audio": EncoderConfig(type="lenet", channels=[3, 6, 12, 24, 48, 96]),
    }
    return ModelConfig(
        modalities=list(modalities), encoders={m: encoders[m] for m in modalities}, fusion="concat", head_hidden=[50]
    )


@dataclass
class Table1Result:
    rows: list[dict]
    protocol: dict
    seconds: float
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Table1Plan:
    """What every model of one Table 1 run shares: where it writes, the data by training rows, the KD settings."""

    out: Path
    specs: list[ModalitySpec]
    num_classes: int
    data: dict
    cache: CacheConfig
    temperature: float
    lam: float
    accelerator: str
    teachers_from: Path | None


def _fit(plan: _Table1Plan, name: str, role: str, mods: Sequence[str], n: int, seed: int, ep: int, teacher, method):
    """Train model ``name`` (the reference LeNet on ``mods``, seeded) on the first ``n`` rows, or load the teacher of
    an earlier run (``teachers_from``); its RunResult."""
    torch.manual_seed(seed)
    model = build_model(reference_model(mods), plan.specs, plan.num_classes)
    params = {"temperature": plan.temperature, "lam": plan.lam} if method == "kd" else None
    if role == "teacher" and plan.teachers_from is not None:
        res = _load_finished(run_dir(Path(plan.teachers_from), name, seed), model)
        if res is None:
            raise ConfigError(
                f"--teachers {plan.teachers_from}: no finished {name} run at "
                f"{run_dir(Path(plan.teachers_from), name, seed)} (result.json and student.safetensors)"
            )
        return res
    return distill(
        model,
        teacher,
        plan.data[n],
        run_dir(plan.out, name, seed),
        method=method,
        method_params=params,
        trainer=multibench_trainer(ep, plan.accelerator),
        cache=plan.cache,
        seed=seed,
        desc=name,
        quiet=True,  # the study logs its own lines
    )


def table1(
    splits: DataSplits,
    out: Path,
    seeds: Sequence[int],
    train_size: int = 2000,
    teacher_factor: int = 3,
    epochs: int = 3,
    teacher_epochs: int = 3,
    val_size: int = 500,
    test_size: int = 2000,
    temperature: float = 4.0,
    lam: float = 0.5,
    accelerator: str = "cpu",
    teachers_from: Path | None = None,
    log=print,
) -> Table1Result:
    """Train the two teachers once, then per seed the no-KD and the two distilled audio students.

    ``teachers_from``: the output folder of an earlier run whose two teachers are loaded instead of
    trained (a controlled variation: same teachers, other KD settings).
    """
    t0 = time.perf_counter()
    student_data, teacher_data = row_subsets(splits, (train_size, train_size * teacher_factor), val_size, test_size)
    data = {train_size: student_data, len(teacher_data.train): teacher_data}
    n_teacher = len(teacher_data.train)
    specs = splits.train.specs()
    cache = CacheConfig(enabled=True, dir=out / "cache")
    rows: list[dict] = []

    plan = _Table1Plan(out, specs, splits.num_classes, data, cache, temperature, lam, accelerator, teachers_from)

    def run(
        name: str, role: str, mods: Sequence[str], n: int, seed: int, ep: int, teacher=None, method="supervised"
    ) -> torch.nn.Module:
        start = time.perf_counter()
        res = _fit(plan, name, role, mods, n, seed, ep, teacher, method)
        row = {
            "seed": seed,
            "model": name,
            "role": role,
            "train_rows": n,
            "test_acc": res.test["accuracy"],  # RunResult: accuracy in percent
            "val_acc": res.val["accuracy"],
            "best_epoch": res.best_epoch,
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        log(
            f"  {name} seed {seed}: test {row['test_acc']:.2f} (val {row['val_acc']:.2f}, best epoch {res.best_epoch}) "
            f"in {row['seconds']:.0f} s"
        )
        return res.student

    t_seed = seeds[0]
    audio_teacher = run("audio_teacher", "teacher", ["audio"], n_teacher, t_seed, teacher_epochs)
    av_teacher = run("av_teacher", "teacher", ["image", "audio"], n_teacher, t_seed, teacher_epochs)
    for seed in seeds:
        run("nokd", "student", ["audio"], train_size, seed, epochs)
        run("kd_audio", "student", ["audio"], train_size, seed, epochs, audio_teacher, "kd")
        run("kd_av", "student", ["audio"], train_size, seed, epochs, av_teacher, "kd")
    protocol = {
        "train_size": train_size,
        "teacher_rows": n_teacher,
        "epochs": epochs,
        "teacher_epochs": teacher_epochs,
        "val_size": len(student_data.val),
        "test_size": len(student_data.test),
        "temperature": temperature,
        "lam": lam,
        "seeds": list(seeds),
        "accelerator": accelerator,
        "teachers_from": str(teachers_from) if teachers_from else None,
    }
    result = Table1Result(rows, protocol, time.perf_counter() - t0)
    result.summary = summarize_table1(rows)
    return result


def summarize_table1(rows: Sequence[dict]) -> dict:
    """Per model: accuracy summary over seeds; paired differences between the students."""
    by_seed = sorted(rows, key=lambda r: r["seed"])
    acc = {m: [r["test_acc"] for r in by_seed if r["model"] == m] for m in dict.fromkeys(r["model"] for r in rows)}
    out = {"models": {m: summarize(v) for m, v in acc.items()}}
    out["paired"] = {
        "kd_audio - nokd": paired_difference(acc["kd_audio"], acc["nokd"]),
        "kd_av - nokd": paired_difference(acc["kd_av"], acc["nokd"]),
        "kd_av - kd_audio": paired_difference(acc["kd_av"], acc["kd_audio"]),
    }
    return out


def _ci(s: dict) -> str:
    return f"{s['mean']:.2f}" if s["n"] < 2 else f"{s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def summary_markdown(result: Table1Result, command: str = "") -> str:
    m, p = result.summary["models"], result.summary["paired"]
    lines = ["# MFH Table 1, AV-MNIST (MNIST + FSDD): audio student", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    pr = result.protocol
    lines += [
        f"Seeds {pr['seeds']}; student {pr['train_size']} training rows x {pr['epochs']} epochs; teachers "
        f"{pr['teacher_rows']} rows x {pr['teacher_epochs']} epochs (trained once, seed {pr['seeds'][0]}"
        f"{'; loaded from ' + pr['teachers_from'] if pr['teachers_from'] else ''}); "
        f"val {pr['val_size']}, test {pr['test_size']} rows; KD T = {pr['temperature']}, lam = {pr['lam']}; "
        f"{result.seconds:.0f} s in all. Accuracy in %, mean [95% CI over seeds].",
        "",
        "| | teacher | student (ours) | paper teacher | paper student |",
        "|---|---|---|---|---|",
        f"| no KD | - | {_ci(m['nokd'])} | - | {PAPER['nokd']:.2f} |",
        f"| audio teacher | {_ci(m['audio_teacher'])} | {_ci(m['kd_audio'])} | "
        f"{PAPER['audio_teacher']:.2f} | {PAPER['kd_audio']:.2f} |",
        f"| image+audio teacher | {_ci(m['av_teacher'])} | {_ci(m['kd_av'])} | {PAPER['av_teacher']:.2f} | "
        f"{PAPER['kd_av']:.2f} |",
        "",
        "Paired differences (points, mean [95% CI]):",
        "",
    ]
    lines += [
        f"- {k}: {s['mean']:+.2f}"
        + (" (one seed: no interval)" if math.isnan(s["ci_low"]) else f" [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]")
        for k, s in p.items()
    ]
    better_teacher = m["av_teacher"]["mean"] > m["audio_teacher"]["mean"]
    d = p["kd_av - kd_audio"]
    if math.isnan(d["ci_low"]) or math.isnan(d["ci_high"]):  # one seed: no interval, no verdict
        verdict = f"{d['mean']:+.2f} points from the audio teacher's student on one seed (no interval, no verdict)"
    elif d["ci_high"] >= 0 >= d["ci_low"] or d["ci_high"] < 0:
        verdict = "not better (CI includes 0 or is below) than the audio teacher's student"
    else:
        verdict = "better (CI above 0) than the audio teacher's student"
    lines += [
        "",
        f"Reading: the image+audio teacher is {'more' if better_teacher else 'less'} accurate than the audio teacher; "
        f"its student is {verdict}. The paper's failure case needs both: "
        "a more accurate multimodal teacher whose student is no better.",
    ]
    return "\n".join(lines) + "\n"


def write_table1(result: Table1Result, out: Path, command: str = "") -> list[Path]:
    """``summary.md``, ``table1.png`` and, last, ``results.csv`` (atomically)."""
    from ..io import csv_text
    from .mfh_plots import _pyplot, _save

    paths = [write_text(out / "summary.md", summary_markdown(result, command))]
    plt = _pyplot()
    m = result.summary["models"]
    names = ["nokd", "audio_teacher", "kd_audio", "av_teacher", "kd_av"]
    labels = ["no KD", "audio\nteacher", "student\n(audio T)", "image+audio\nteacher", "student\n(image+audio T)"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(names))
    half = [0 if m[n]["n"] < 2 else m[n]["mean"] - m[n]["ci_low"] for n in names]
    ax.bar(x - 0.2, [m[n]["mean"] for n in names], 0.4, yerr=half, capsize=3, label="ours (MNIST + FSDD)")
    ax.bar(x + 0.2, [PAPER[n] for n in names], 0.4, label="paper (AV-MNIST)", color="tab:gray")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("MFH Table 1, AV-MNIST: audio student", fontsize=9)
    fig.tight_layout()
    paths.append(_save(fig, out / "table1.png"))
    paths.append(write_text(out / "results.csv", csv_text(result.rows, ROW_FIELDS, ".6g")))
    return paths
