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
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import CacheConfig
from ..data.dataset import DataSplits
from ..engine.api import distill
from ..io import write_text
from ..models.multimodal import build_model
from ..stats import paired_difference, summarize
from .mfh_removal import kept_channels, removed_channels
from ..mfh.algorithm1 import channel_salience
from .mfh_table1 import multibench_trainer, reference_model, run_dir, subsets

LAYER = "head.0"  # the head's hidden Linear + ReLU: the teacher's penultimate features (N, 100)
MODES = ("nokd", "regular", "general", "random", "specific")
ROW_FIELDS = ["seed", "mode", "kept", "teacher_acc", "student_acc"]


def _batch(dataset, modality: str, rows: int) -> dict:
    b = dataset.__getitems__(range(min(rows, len(dataset))))
    return {modality: b[modality]}


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
    specs, no_cache = splits.train.specs(), CacheConfig(enabled=False)

    def student_trainer():
        trainer = multibench_trainer(epochs)
        trainer.optimizer.lr = student_lr
        return trainer

    def model(mod: str, seed: int):
        torch.manual_seed(seed)
        return build_model(reference_model([mod]), specs, splits.num_classes)

    teacher = model(teacher_modality, seeds[0])
    t_res = distill(
        teacher,
        None,
        data[n_teacher],
        run_dir(out, "teacher", seeds[0]),
        method="supervised",
        trainer=multibench_trainer(teacher_epochs),
        cache=no_cache,
        quiet=True,  # the study logs its own lines
        seed=seeds[0],
    )
    teacher.eval()
    log(f"  teacher ({teacher_modality}): test {t_res.test['accuracy']:.2f}")  # RunResult: in percent
    train = data[train_size].train
    with torch.no_grad():  # training mean of each penultimate channel: the fill value of removed channels
        feats = []
        handle = teacher.head[0].register_forward_hook(lambda m, i, o: feats.append(o))
        for a in range(0, len(train), 200):
            teacher(train.__getitems__(range(a, min(a + 200, len(train)))))
        handle.remove()
        fill = torch.cat(feats).mean(0)
    rows, scores = [], None
    k = max(1, round(keep * len(fill)))
    for seed in seeds:
        student = model(student_modality, seed)
        s_res = distill(
            student,
            None,
            data[train_size],
            run_dir(out, "nokd", seed),
            method="supervised",
            trainer=student_trainer(),
            cache=no_cache,
            quiet=True,  # the study logs its own lines
            seed=seed,
        )
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
                _batch(train, teacher_modality, score_rows),
                _batch(train, student_modality, score_rows),
                LAYER,
                permutations=permutations,
                seed=seeds[0],
            )
            scores = sal.scores
        for mode in MODES[1:]:
            keep_idx = torch.arange(len(fill)) if mode == "regular" else kept_channels(mode, scores, k, seed)
            with removed_channels(teacher, LAYER, keep_idx, fill) if mode != "regular" else contextlib.nullcontext():
                t_acc = _accuracy(teacher, held["test"])
                res = distill(
                    model(student_modality, seed),
                    teacher,
                    data[train_size],
                    run_dir(out, mode, seed),
                    method="kd",
                    method_params={"temperature": temperature, "lam": 0.5},
                    trainer=student_trainer(),
                    cache=no_cache,
                    quiet=True,  # the study logs its own lines
                    seed=seed,
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
