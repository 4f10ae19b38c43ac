"""Algorithm 1 on a dataset's teacher/student modality pair, as rows and a summary (what ``mmdistill salience``
prints and writes): two MLPs on the pair's features, the teacher layer's channels scored, ranked, and (on the Venn
data, where the truly shared channels are known) the precision of the top-k against them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .algorithm1 import INPUT, Salience, algorithm1, precision_at
from .ensemble import make_mlp
from .pairs import load_pairs


@dataclass
class PairScores:
    result: Salience
    rows: list[dict]  # one per channel: channel, score, raw, rank (1 = most modality-general) [, shared]
    report: dict  # dataset, modalities, layer, variant, top channels, timings [, precision_at_shared]
    title: str
    shared: set[int] | None


def default_layer(hidden: list[int]) -> str:
    """Input channels for a linear model, else the last hidden ReLU of ``make_mlp``'s Sequential."""
    return INPUT if not hidden else str(2 * len(hidden) - 1)


def score_pair(
    dataset: str,
    params: dict,
    teacher: str | None,
    student: str | None,
    hidden: list[int],
    layer: str | None = None,
    variant: str = "joint",
    permutations: int = 10,
    seed: int = 0,
    epochs: int = 300,
    lr: float = 0.01,
    batch_size: int | None = None,
) -> PairScores:
    """Score the teacher layer's channels of ``dataset``'s (teacher, student) pair with Algorithm 1."""
    pairs = load_pairs(dataset, params, teacher, student, seed=seed)
    tr = pairs.train
    torch.manual_seed(seed)
    t_model = make_mlp(tr.xa.shape[1], hidden, pairs.num_classes)
    s_model = make_mlp(tr.xb.shape[1], hidden, pairs.num_classes)
    layer = layer or default_layer(hidden)
    start = time.perf_counter()
    result = algorithm1(
        t_model,
        s_model,
        tr.xa,
        tr.xb,
        tr.y,
        layer,
        variant=variant,
        permutations=permutations,
        seed=seed,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - start
    order = torch.argsort(result.scores, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    shared = set(pairs.shared.tolist()) if pairs.shared is not None else None
    rows = []
    for c in range(len(order)):
        row = {"channel": c, "score": float(result.scores[c]), "raw": float(result.raw[c]), "rank": int(rank[c]) + 1}
        if shared is not None:
            row["shared"] = int(c in shared)
        rows.append(row)
    report = {
        "dataset": dataset,
        "teacher": pairs.teacher,
        "student": pairs.student,
        "layer": layer,
        "variant": variant,
        "channels": len(order),
        "permutations": permutations,
        "top": order[: min(10, len(order))].tolist(),
        "seconds_total": round(seconds, 3),
        "seconds_scoring": round(result.seconds, 4),
    }
    if shared is not None and pairs.shared is not None:
        report["precision_at_shared"] = precision_at(result.top(len(shared)), pairs.shared)
    title = f"{dataset}: teacher {pairs.teacher} -> student {pairs.student}, layer {layer} ({variant})"
    return PairScores(result, rows, report, title, shared)
