"""MFH feature removal on AV-MNIST with MultiBench's CNNs (Xue et al., ICLR 2023, Sec. 4.2; DESIGN.md 2.3).

A teacher on modality a (default audio: the audio LeNet + MLP head) and a student on modality b
(default image: the image LeNet + MLP head), MultiBench's models (:mod:`.table1`). Algorithm 1
(:func:`.salience.channel_salience`, the separately-trained variant: the trained teacher and a
no-KD student, M permutations, on ``score_rows`` training rows) scores the teacher's penultimate
channels, the 100 hidden ReLU units of its head (layer ``head.0``). A fraction ``keep`` of them is
kept and the others are replaced by their training mean by a forward hook
(:func:`.removal.removed_channels`): the top-scored (**general**), random, or the bottom-scored
(**specific**) channels. A student is distilled from each modified teacher and compared with
regular KD (the full teacher) and no KD; the paper expects general > random > specific. The
teacher is trained once (seed ``seeds[0]``); seeds vary the students. The teacher cache is off
(a hook changes outputs without changing the weights the cache keys on).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..batch import ModalitySpec
from ..config import CacheConfig
from ..data.contracts.dataset import DataSplits
from ..engine.api import distill
from ..io import write_text
from ..mfh.algorithm1 import channel_salience
from ..models.multimodal import build_model
from ..stats import paired_difference, summarize
from .mfh_removal import kept_channels, removed_channels
from .mfh_table1 import multibench_trainer, reference_model, run_dir, subsets

LAYER = "head.0"  # the head's hidden Linear + ReLU: the teacher's penultimate features (N, 100)
MODES = ("nokd", "regular", "general", "random", "specific")
ROW_FIELDS = ["seed", "mode", "kept", "teacher_acc", "student_acc"]


def _batch(dataset, modality: str, rows: int) -> dict:
    b = dataset.__getitems__(range(min(rows, len(dataset))))
    return {modality: b[modality]}


NO_CACHE = CacheConfig(enabled=False)


@dataclass(frozen=True)
class _RemovalPlan:
    """What every student of the study shares: where it writes, its training rows, model specs and trainer."""

    out: Path
    data: DataSplits
    specs: list[ModalitySpec]
    num_classes: int
    epochs: int
    student_lr: float
    teacher_modality: str
    student_modality: str
    temperature: float
    permutations: int
    score_rows: int

    def model(self, modality: str, seed: int) -> torch.nn.Module:
        """The reference LeNet on ``modality``, initialised from ``seed``."""
        torch.manual_seed(seed)
        return build_model(reference_model([modality]), self.specs, self.num_classes)

    def fit(self, student, teacher, mode: str, seed: int, kd_params: dict | None = None):
        """Train ``student`` (supervised without a teacher, else KD with ``kd_params``) into ``runs/MODE/seed_N``."""
        trainer = multibench_trainer(self.epochs)
        trainer.optimizer.lr = self.student_lr
        return distill(
            student,
            teacher,
            self.data,
            run_dir(self.out, mode, seed),
            method="supervised" if teacher is None else "kd",
            method_params=kd_params,
            trainer=trainer,
            cache=NO_CACHE,
            quiet=True,  # the study logs its own lines
            seed=seed,
        )


def _channel_means(teacher: torch.nn.Module, train, batch: int = 200) -> torch.Tensor:
    """The mean over the training rows of each channel of the teacher's penultimate layer."""
    with torch.no_grad():
        feats = []
        head = cast(torch.nn.Sequential, teacher.head)
        handle = head[0].register_forward_hook(lambda m, i, o: feats.append(o))
        for a in range(0, len(train), batch):
            teacher(train.__getitems__(range(a, min(a + batch, len(train)))))
        handle.remove()
        return torch.cat(feats).mean(0)


def _students(plan: _RemovalPlan, teacher, train, fill: torch.Tensor, test, seeds: Sequence[int], k: int, log):
    """Per seed the no-KD student, then one KD student per mode from the teacher with ``k`` channels kept (scored
    once by Algorithm 1 with the first seed's no-KD student): the rows and the channel scores."""
    rows, scores = [], None
    for seed in seeds:
        student = plan.model(plan.student_modality, seed)
        s_res = plan.fit(student, None, "nokd", seed)
        rows.append(
            {
                "seed": seed,
                "mode": "nokd",
                "kept": len(fill),
                "teacher_acc": float("nan"),
                "student_acc": s_res.test["accuracy"],
            }
        )
        if scores is None:  # Algorithm 1 once, with the first seed's no-KD student
            sal = channel_salience(
                teacher,
                student,
                _batch(train, plan.teacher_modality, plan.score_rows),
                _batch(train, plan.student_modality, plan.score_rows),
                LAYER,
                permutations=plan.permutations,
                seed=seeds[0],
            )
            scores = sal.scores
        for mode in MODES[1:]:
            keep_idx = torch.arange(len(fill)) if mode == "regular" else kept_channels(mode, scores, k, seed)
            with removed_channels(teacher, LAYER, keep_idx, fill) if mode != "regular" else contextlib.nullcontext():
                t_acc = _accuracy(teacher, test)
                res = plan.fit(
                    plan.model(plan.student_modality, seed),
                    teacher,
                    mode,
                    seed,
                    {"temperature": plan.temperature, "lam": 0.5},
                )
            rows.append(
                {
                    "seed": seed,
                    "mode": mode,
                    "kept": len(keep_idx),
                    "teacher_acc": t_acc,
                    "student_acc": res.test["accuracy"],
                }
            )
            log(f"  seed {seed} {mode}: teacher {t_acc:.2f}, student {rows[-1]['student_acc']:.2f}")
    return rows, scores


def removal_avmnist(
    splits: DataSplits,
    out: Path,
    seeds: Sequence[int],
    teacher_modality: str = "audio",
    student_modality: str = "image",
    train_size: int = 2000,
    teacher_factor: int = 3,
    epochs: int = 3,
    teacher_epochs: int = 3,
    val_size: int = 500,
    test_size: int = 2000,
    keep: float = 0.25,
    permutations: int = 10,
    score_rows: int = 1000,
    temperature: float = 4.0,
    student_lr: float = 0.1,
    log=print,
) -> dict:
    """Rows (seed, mode, kept, teacher_acc, student_acc), the scores and the protocol."""
    t0 = time.perf_counter()
    order, held = subsets(splits, train_size * teacher_factor, val_size, test_size)
    n_teacher = min(len(order), train_size * teacher_factor)
    data = {
        n: DataSplits(splits.train.subset(torch.from_numpy(np.sort(order[:n]))), held["val"], held["test"])
        for n in (train_size, n_teacher)
    }
    plan = _RemovalPlan(
        out,
        data[train_size],
        splits.train.specs(),
        splits.num_classes,
        epochs,
        student_lr,
        teacher_modality,
        student_modality,
        temperature,
        permutations,
        score_rows,
    )
    teacher = plan.model(teacher_modality, seeds[0])
    t_res = distill(
        teacher,
        None,
        data[n_teacher],
        run_dir(out, "teacher", seeds[0]),
        method="supervised",
        trainer=multibench_trainer(teacher_epochs),
        cache=NO_CACHE,
        quiet=True,  # the study logs its own lines
        seed=seeds[0],
    )
    teacher.eval()
    log(f"  teacher ({teacher_modality}): test {t_res.test['accuracy']:.2f}")  # RunResult: in percent
    train = data[train_size].train
    fill = _channel_means(teacher, train)  # the fill value of removed channels
    k = max(1, round(keep * len(fill)))
    rows, scores = _students(plan, teacher, train, fill, held["test"], seeds, k, log)
    protocol = {
        "teacher": teacher_modality,
        "student": student_modality,
        "train_size": train_size,
        "teacher_rows": n_teacher,
        "epochs": epochs,
        "teacher_epochs": teacher_epochs,
        "keep": keep,
        "kept": k,
        "channels": len(fill),
        "permutations": permutations,
        "score_rows": score_rows,
        "temperature": temperature,
        "seeds": list(seeds),
        "student_lr": student_lr,
        "test_size": len(held["test"]),
    }
    return {"rows": rows, "scores": scores.tolist(), "protocol": protocol, "seconds": time.perf_counter() - t0}


def _accuracy(model, dataset, batch: int = 200) -> float:
    right = 0
    with torch.no_grad():
        for a in range(0, len(dataset), batch):
            b = dataset.__getitems__(range(a, min(a + batch, len(dataset))))
            right += int((model(b).argmax(1) == b["label"]).sum())
    return 100 * right / len(dataset)


def summary_markdown(result: dict, command: str = "") -> str:
    rows, p = result["rows"], result["protocol"]
    seeds = p["seeds"]
    acc = {m: [next(r["student_acc"] for r in rows if r["seed"] == s and r["mode"] == m) for s in seeds] for m in MODES}
    teach = {m: float(np.mean([r["teacher_acc"] for r in rows if r["mode"] == m])) for m in MODES[1:]}
    lines = [f"# MFH feature removal on AV-MNIST (MNIST + FSDD): {p['teacher']} teacher -> {p['student']} student", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Seeds {seeds}; students {p['train_size']} rows x {p['epochs']} epochs; teacher {p['teacher_rows']} rows x "
        f"{p['teacher_epochs']} epochs (once); Algorithm 1 on the teacher's {p['channels']} penultimate channels "
        f"(layer {LAYER}, M = {p['permutations']}, {p['score_rows']} training rows); keep {p['kept']} "
        f"(r = {p['keep']}), the rest set to their training mean; KD T = {p['temperature']}, lam = 0.5; student SGD lr "
        f"{p['student_lr']}; test "
        f"{p['test_size']} rows; {result['seconds']:.0f} s. Accuracy %, mean [95% CI]; differences paired by seed.",
        "",
        "| mode | teacher acc. | student acc. | student - no KD | student - regular KD |",
        "|---|---|---|---|---|",
    ]
    for m in MODES:
        s = summarize(acc[m])
        cell = f"{s['mean']:.2f}" + ("" if s["n"] < 2 else f" [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
        d0 = "" if m == "nokd" else _diff(acc[m], acc["nokd"])
        d1 = "" if m in ("nokd", "regular") else _diff(acc[m], acc["regular"])
        lines.append(f"| {m} | {'-' if m == 'nokd' else f'{teach[m]:.2f}'} | {cell} | {d0} | {d1} |")
    order = sorted(("general", "random", "specific"), key=lambda m: -float(np.mean(acc[m])))
    lines += ["", f"Student ordering: {' > '.join(order)} (the paper expects general > random > specific)."]
    return "\n".join(lines) + "\n"


def _diff(a, b) -> str:
    d = paired_difference(a, b)
    return f"{d['mean']:+.2f}" + ("" if d["n"] < 2 else f" [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]")


def write_removal_avmnist(result: dict, out: Path, command: str = "") -> list[Path]:
    """``summary.md``, ``scores.csv`` and, last, ``results.csv`` (atomically)."""
    from ..io import csv_text

    paths = [
        write_text(out / "summary.md", summary_markdown(result, command)),
        write_text(
            out / "scores.csv", "channel,score\n" + "".join(f"{i},{s:.6g}\n" for i, s in enumerate(result["scores"]))
        ),
    ]
    paths.append(write_text(out / "results.csv", csv_text(result["rows"], ROW_FIELDS, ".6g")))
    return paths
