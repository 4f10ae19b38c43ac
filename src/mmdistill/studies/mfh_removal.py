"""MFH feature removal on real data: distil from a teacher that keeps only some of its channels.

Xue et al., ICLR 2023, Sec. 4.2 (official code on RAVDESS / VGGSound; DESIGN.md 2.3). A teacher on
modality a and a student on modality b. Algorithm 1 (:mod:`.salience`) scores the teacher's
penultimate channels ``h`` (its hidden ReLU features); a fraction r of them is kept and every other
channel is replaced by its training mean (or zero)::

    h'_c = h_c            if c in K
    h'_c = mean_train(h_c) otherwise,        |K| = round(r * C)

by a forward hook, so the teacher's ``forward`` is untouched (:func:`removed_channels`). K is the
top-scored channels (**modality-general KD**), the bottom-scored (**modality-specific KD**) or a
random set; a student on b is distilled from each modified teacher and compared with regular KD
(the full teacher) and no KD. Expected by the paper: general > random > specific for the student,
while the teacher's own accuracy falls in all three.

Here teachers and students are one-hidden-layer MLPs trained by full-batch SGD as batched
ensembles (:mod:`.ensemble`); KD is ``CE + KL(t || s)`` at T = 1 (KL averaged per example).
Algorithm 1 uses the "separately pretrained" variant: the trained teacher and the no-KD student,
scored on the training split.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..mfh.algorithm1 import channel_salience
from ..mfh.ensemble import Run, TrainedRuns, make_mlp, train_runs
from ..mfh.pairs import DEFAULT_PCA, load_pairs
from ..models.hooks import find_module
from ..stats import paired_difference, summarize

MODES = ("nokd", "regular", "general", "random", "specific")
ROW_FIELDS = ["pair", "seed", "mode", "kept", "teacher_acc", "student_acc", "nokd_acc"]
DEFAULT_PAIRS = {"mfeat": ("pix:zer", "kar:fou"), "av-digits": ("image:audio", "audio:image"), "venn": ("a:b",)}


@contextlib.contextmanager
def removed_channels(model: nn.Module, layer: str, keep: Tensor, fill: Tensor):
    """Within the block, ``model``'s ``layer`` outputs ``fill`` (per channel) on every channel not in ``keep``."""
    module = find_module(model, layer)
    mask = torch.zeros_like(fill, dtype=torch.bool)
    mask[keep] = True

    def hook(mod, inputs, out):
        return torch.where(mask, out, fill.to(out.dtype))

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def kept_channels(mode: str, scores: Tensor, k: int, seed: int) -> Tensor:
    """The k channels a mode keeps: top-scored (general), bottom-scored (specific) or random."""
    if mode == "general":
        return torch.argsort(scores, descending=True, stable=True)[:k]
    if mode == "specific":
        return torch.argsort(scores, stable=True)[:k]
    if mode == "random":
        return torch.as_tensor(np.random.default_rng((seed, 3)).choice(len(scores), size=k, replace=False))
    raise ConfigError(f"removal mode: one of general, random, specific; got {mode!r}")


def _module(trained: TrainedRuns, r: int, in_features: int, hidden: int, k: int) -> nn.Sequential:
    model = cast(nn.Sequential, make_mlp(in_features, (hidden,), k))  # one hidden layer: Linear, ReLU, Linear
    with torch.no_grad():
        for lin, (w, b) in zip([model[0], model[2]], trained.layer_params(r, in_features)):
            assert isinstance(lin, nn.Linear)
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return model.eval()


@dataclass
class RemovalResult:
    dataset: str
    rows: list[dict]
    seconds: float
    protocol: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _parsed_pairs(dataset: str, pairs: Sequence[str] | None, keep: float, fill: str) -> tuple[list[str], list]:
    """The settings checked, and ``pairs`` (the dataset's defaults when None) as ``(pair, teacher, student)``."""
    if not 0.0 < keep < 1.0:
        raise ConfigError(f"removal keep fraction r: must lie in (0, 1), got {keep}")
    if fill not in ("mean", "zero"):
        raise ConfigError(f"removal fill: one of mean, zero; got {fill!r}")
    pairs = list(pairs or DEFAULT_PAIRS.get(dataset, ()))
    if not pairs:
        raise ConfigError(f"removal: name --pairs teacher:student for dataset {dataset!r}")
    parsed = []
    for p in pairs:
        a, sep, b = p.partition(":")
        if not sep or not a or not b:
            raise ConfigError(f"removal pair {p!r}: expected TEACHER:STUDENT, e.g. pix:zer")
        parsed.append((p, a, b))
    return pairs, parsed


def _removed_teachers(
    job: tuple,
    teacher_at: tuple[TrainedRuns, int],
    nokd_at: tuple[TrainedRuns, int],
    hidden: int,
    keep: float,
    fill: str,
    permutations: int,
) -> tuple[list, list[dict], float]:
    """One job's Algorithm 1 scores, then per mode its modified teacher's soft labels: (KD student runs, rows,
    seconds of scoring). The no-KD row comes first, with its accuracy; the others carry their test split."""
    name, seed, d, nets = job
    k = d.num_classes
    teacher = _module(*teacher_at, d.train.xa.shape[1], hidden, k)
    nokd = _module(*nokd_at, d.train.xb.shape[1], hidden, k)
    sal = channel_salience(teacher, nokd, d.train.xa, d.train.xb, "1", permutations=permutations, seed=seed)
    runs, meta = [], []
    with torch.no_grad():
        h = torch.relu(teacher[0](d.train.xa))
        values = h.mean(0) if fill == "mean" else torch.zeros(hidden)
        n_keep = max(1, int(round(keep * hidden)))
        row = {"pair": name, "seed": seed}
        nokd_acc = float((nokd(d.test.xb).argmax(1) == d.test.y).float().mean())
        meta.append({**row, "mode": "nokd", "kept": "", "teacher_acc": "", "student_acc": nokd_acc})
        for i, mode in enumerate(MODES[1:]):
            kept = torch.arange(hidden) if mode == "regular" else kept_channels(mode, sal.scores, n_keep, seed)
            with removed_channels(teacher, "1", kept, values):
                soft = torch.softmax(teacher(d.train.xa), dim=-1)
                t_acc = float((teacher(d.test.xa).argmax(1) == d.test.y).float().mean())
            runs.append(Run(nets[2 + i], d.train.xb, d.train.y, soft_targets=soft, ce_weight=1.0, kd_weight=float(k)))
            meta.append({**row, "mode": mode, "kept": len(kept), "teacher_acc": t_acc, "_test": (d.test.xb, d.test.y)})
    return runs, meta, sal.seconds


def _student_accuracies(students: list, tests: list[tuple]) -> list[float]:
    """Test accuracy of every KD student, in order: one ensemble, or one per job of four."""
    if len(students) == 1:
        return students[0].accuracy([t[0] for t in tests], [t[1] for t in tests]).tolist()
    return [
        a
        for j, s in enumerate(students)
        for a in s.accuracy([t[0] for t in tests[4 * j : 4 * j + 4]], [t[1] for t in tests[4 * j : 4 * j + 4]]).tolist()
    ]


def _with_nokd(meta: list[dict], acc: list[float]) -> list[dict]:
    """The rows with each KD student's accuracy filled in and its job's no-KD accuracy beside it."""
    rows, it = [], iter(acc)
    for m in meta:
        if m["mode"] == "nokd":
            nokd_acc = m["student_acc"]
        else:
            m["student_acc"] = next(it)
        m["nokd_acc"] = nokd_acc
        rows.append(m)
    return rows


def feature_removal(
    dataset: str,
    pairs: Sequence[str] | None = None,
    seeds: Sequence[int] = range(5),
    *,
    keep: float = 0.25,
    fill: str = "mean",
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 0.3,
    permutations: int = 10,
    pca: int | None = -1,
) -> RemovalResult:
    """Rows ``(pair, seed, mode)`` with teacher accuracy after removal and student accuracy (test split).

    ``pairs``: "teacher:student" modality names; the split seed and the init seed are the run seed.
    ``pca=-1`` picks the dataset's default (:data:`DEFAULT_PCA`), ``None`` turns it off.
    """
    pairs, parsed = _parsed_pairs(dataset, pairs, keep, fill)
    pca = DEFAULT_PCA.get(dataset) if pca == -1 else pca
    start = time.perf_counter()
    jobs = []
    for name, a, b in parsed:
        for seed in seeds:
            data = load_pairs(dataset, {}, a, b, seed=seed, pca=pca)
            torch.manual_seed(seed)
            nets = [make_mlp(data.train.xa.shape[1], (hidden,), data.num_classes)] + [
                make_mlp(data.train.xb.shape[1], (hidden,), data.num_classes) for _ in MODES
            ]
            jobs.append((name, seed, data, nets))
    # stage 1: every teacher and every no-KD student as one ensemble (same shapes but the input width)
    stage1 = [
        r for _, _, d, nets in jobs for r in (Run(nets[0], d.train.xa, d.train.y), Run(nets[1], d.train.xb, d.train.y))
    ]
    sizes = {len(r.y) for r in stage1}
    if len(sizes) > 1:  # splits of different sizes per seed: one ensemble per job
        trained1 = [train_runs(stage1[2 * j : 2 * j + 2], lr=lr, epochs=epochs) for j in range(len(jobs))]
        locate = lambda j, i: (trained1[j], i)  # noqa: E731
    else:
        trained_all = train_runs(stage1, lr=lr, epochs=epochs)
        locate = lambda j, i: (trained_all, 2 * j + i)  # noqa: E731
    # Algorithm 1 on each teacher, then the modified teachers' soft labels
    stage2, meta, salience_s = [], [], 0.0
    for j, job in enumerate(jobs):
        runs, job_rows, seconds = _removed_teachers(job, locate(j, 0), locate(j, 1), hidden, keep, fill, permutations)
        stage2 += runs
        meta += job_rows
        salience_s += seconds
    # stage 2: every KD student as one ensemble
    students = (
        [train_runs(stage2[4 * j : 4 * j + 4], lr=lr, epochs=epochs) for j in range(len(jobs))]
        if len(sizes) > 1
        else [train_runs(stage2, lr=lr, epochs=epochs)]
    )
    tests = [m.pop("_test") for m in meta if "_test" in m]
    rows = _with_nokd(meta, _student_accuracies(students, tests))
    protocol = {
        "pairs": pairs,
        "seeds": list(seeds),
        "keep": keep,
        "fill": fill,
        "hidden": hidden,
        "epochs": epochs,
        "lr": lr,
        "permutations": permutations,
        "pca": pca,
    }
    return RemovalResult(
        dataset,
        rows,
        time.perf_counter() - start,
        protocol,
        {"models": len(stage1) + len(stage2), "salience_scoring_s": salience_s},
    )


def summarize_removal(rows: Sequence[dict]) -> list[dict]:
    """Per (pair, mode): teacher and student means (points), student - no KD and student - regular KD,
    paired over seeds with 95% CIs."""
    out = []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        by_mode = {
            m: sorted((r for r in rows if r["pair"] == pair and r["mode"] == m), key=lambda r: r["seed"]) for m in MODES
        }
        for mode in MODES[1:]:
            rs = by_mode[mode]
            gain = paired_difference([r["student_acc"] for r in rs], [r["nokd_acc"] for r in rs])
            vs_reg = paired_difference([r["student_acc"] for r in rs], [r["student_acc"] for r in by_mode["regular"]])
            out.append(
                {
                    "pair": pair,
                    "mode": mode,
                    "seeds": len(rs),
                    "kept": rs[0]["kept"],
                    "teacher_mean": 100 * summarize([r["teacher_acc"] for r in rs])["mean"],
                    "student_mean": 100 * summarize([r["student_acc"] for r in rs])["mean"],
                    "nokd_mean": 100 * summarize([r["nokd_acc"] for r in rs])["mean"],
                    "gain_mean": 100 * gain["mean"],
                    "gain_half": 100 * (gain["ci_high"] - gain["mean"]),
                    "vs_regular_mean": 100 * vs_reg["mean"],
                    "vs_regular_lo": 100 * vs_reg["ci_low"],
                    "vs_regular_hi": 100 * vs_reg["ci_high"],
                }
            )
    return out


def summary_markdown(result: RemovalResult, command: str = "") -> str:
    p = result.protocol
    lines = [f"# MFH feature removal on {result.dataset}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    pca = p["pca"]
    pca_text = f"; inputs wider than {pca} values projected on {pca} principal components" if pca else ""
    lines += [
        f"Teacher and student: MLP (one hidden layer of {p['hidden']}), full-batch SGD lr {p['lr']}, "
        f"{p['epochs']} epochs"
        f"{pca_text}; "
        f"Algorithm 1 (separate variant, M = {p['permutations']}) on the teacher's {p['hidden']} hidden channels; "
        f"keep r = {p['keep']}, "
        f"the rest set to their training {p['fill']}; KD = CE + KL (T = 1). Seeds {p['seeds']} (split and init). "
        f"{result.timings['models']} models in {result.seconds:.1f} s.",
        "",
        "Accuracy in points, mean over seeds; differences paired by seed, mean [95% CI].",
        "",
        "| teacher:student | mode | teacher acc. | student acc. | student − no KD | student − regular KD |",
        "|---|---|---|---|---|---|",
    ]
    summary = summarize_removal(result.rows)
    for r in summary:
        vs = (
            ""
            if r["mode"] == "regular"
            else f"{r['vs_regular_mean']:+.2f} [{r['vs_regular_lo']:+.2f}, {r['vs_regular_hi']:+.2f}]"
        )
        lines.append(
            f"| {r['pair']} | {r['mode']} | {r['teacher_mean']:.2f} | {r['student_mean']:.2f} | "
            f"{r['gain_mean']:+.2f} ± {r['gain_half']:.2f} | {vs} |"
        )
    lines += [
        "",
        "No-KD student: "
        + ", ".join(f"{r['pair']} {r['nokd_mean']:.2f}" for r in summary if r["mode"] == "regular")
        + ".",
        "",
    ]
    for pair in dict.fromkeys(r["pair"] for r in summary):
        s = {r["mode"]: r["student_mean"] for r in summary if r["pair"] == pair}
        order = sorted(("general", "random", "specific"), key=lambda m: -s[m])
        lines.append(f"- {pair}: student ordering {' > '.join(order)} (paper expects general > random > specific).")
    return "\n".join(lines) + "\n"


def write_removal(result: RemovalResult, out: Path, command: str = "") -> list[Path]:
    """``summary.md``, ``removal.png`` and, last, ``results.csv`` (atomically)."""
    from ..io import csv_text, write_text
    from .mfh_crossmodal_plots import plot_removal

    out = Path(out)
    paths = [
        write_text(out / "summary.md", summary_markdown(result, command)),
        plot_removal(
            summarize_removal(result.rows),
            out / "removal.png",
            f"MFH feature removal on {result.dataset} (keep r = {result.protocol['keep']})",
        ),
    ]
    paths.append(write_text(out / "results.csv", csv_text(result.rows, ROW_FIELDS, ".6g")))
    return paths
