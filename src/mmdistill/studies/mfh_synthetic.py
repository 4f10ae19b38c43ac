"""The paper's synthetic studies of crossmodal KD on the modality Venn diagram, vectorised.

Xue et al., ICLR 2023 (official ``gauss/main.py``). For each (setting, seed): a teacher on x_a, a
student on x_b without KD, and a student on x_b with ``KD = w0 CE + w1 KL(t || s)`` at T = 1,
``[w0, w1] = [1, 1]``; linear models, full-batch SGD lr 0.1, 1000 epochs, n_train 200,
n_test 1000. All teachers train as one ensemble, then all students (no-KD and KD) as another.

* :func:`vary_gamma` -- Fig. 2: the KD gain rises with gamma.
* :func:`vary_alpha` -- Fig. 3: a teacher made better by a-specific features does not help.
* :func:`venn_plane` -- beyond the paper: the KD gain over the (gamma, alpha) triangle.

Model initialisation follows the official script too: after ``torch.manual_seed(seed + 1)`` the
teacher, the KD student and the no-KD student are built in that order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.generated.venn import VennSpec, draw, preset_settings, preset_spec, spec_from_ratios
from ..mfh.ensemble import Run, make_mlp, train_runs

ROW_FIELDS = ["setting", "gamma", "alpha", "beta", "seed", "teacher_acc", "nokd_acc", "kd_acc"]


@dataclass
class StudyResult:
    """One row per (setting, seed) (accuracies in [0, 1]) and what produced them."""

    name: str
    rows: list[dict]
    seconds: float
    runs: int
    protocol: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        return summarize(self.rows)


def crossmodal_kd_sweep(
    cells: Sequence[tuple[str, VennSpec]],
    seeds: Sequence[int],
    *,
    n_train: int = 200,
    n_test: int = 1000,
    epochs: int = 1000,
    lr: float = 0.1,
    kd_weights: tuple[float, float] = (1.0, 1.0),
    hidden: Sequence[int] = (),
) -> StudyResult:
    """Teacher / no-KD / KD accuracy for every (cell, seed), trained as two batched ensembles."""
    start = time.perf_counter()
    jobs = []
    # seed-major, so that the memoised draws of one seed serve every cell (rows come out cell-major)
    for seed in seeds:
        for label, spec in cells:
            data = draw(spec, seed, n_train=n_train, n_test=n_test)
            torch_seed = seed + 1 if spec.test_stream == "seed+1" else seed
            teacher, kd, nokd = _official_inits(
                torch_seed, (spec.dim_a, spec.dim_b, spec.dim_b), hidden, spec.num_classes
            )
            jobs.append((label, spec, seed, data, teacher, kd, nokd))
    cell_index = {label: i for i, (label, _) in enumerate(cells)}
    jobs.sort(key=lambda j: (cell_index[j[0]], list(seeds).index(j[2])))

    teachers = train_runs([Run(t, d.train.xa, d.train.y) for _, _, _, d, t, _, _ in jobs], lr=lr, epochs=epochs)
    probs = torch.softmax(teachers.logits([j[3].train.xa for j in jobs]), dim=-1)
    students = []
    for (_, _, _, d, _, kd, nokd), p in zip(jobs, probs):
        students.append(Run(nokd, d.train.xb, d.train.y))
        students.append(
            Run(kd, d.train.xb, d.train.y, soft_targets=p, ce_weight=kd_weights[0], kd_weight=kd_weights[1])
        )
    trained = train_runs(students, lr=lr, epochs=epochs)

    teacher_acc = teachers.accuracy([j[3].test.xa for j in jobs], [j[3].test.y for j in jobs])
    student_acc = trained.accuracy(
        [j[3].test.xb for j in jobs for _ in (0, 1)], [j[3].test.y for j in jobs for _ in (0, 1)]
    )
    rows = []
    for i, (label, spec, seed, *_rest) in enumerate(jobs):
        rows.append(
            {
                "setting": label,
                **spec.ratios(),
                "seed": seed,
                "teacher_acc": float(teacher_acc[i]),
                "nokd_acc": float(student_acc[2 * i]),
                "kd_acc": float(student_acc[2 * i + 1]),
            }
        )
    protocol = {
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "lr": lr,
        "kd_weights": list(kd_weights),
        "hidden": list(hidden),
        "seeds": list(seeds),
    }
    return StudyResult("sweep", rows, time.perf_counter() - start, 3 * len(jobs), protocol)


def _official_inits(torch_seed: int, in_dims: Sequence[int], hidden: Sequence[int], num_classes: int) -> list:
    """Models built in order right after ``torch.manual_seed(torch_seed)``, as the official script
    does; the global CPU generator is restored afterwards (seeded directly, which skips the
    accelerator bookkeeping of ``torch.manual_seed``)."""
    state = torch.random.get_rng_state()
    try:
        torch.random.default_generator.manual_seed(torch_seed)
        return [make_mlp(d, hidden, num_classes) for d in in_dims]
    finally:
        torch.random.set_rng_state(state)


def vary_gamma(seeds: Sequence[int] = range(10), **kwargs) -> StudyResult:
    """Paper Fig. 2: x_a 25 dims, x_b 50 dims, overlap o in {0, 2, ..., 10}, gamma = o / (20 - o)."""
    cells = [(f"o={o}", preset_spec("vary-gamma", o)) for o in preset_settings("vary-gamma")]
    result = crossmodal_kd_sweep(cells, list(seeds), **kwargs)
    result.name = "mfh-gamma"
    return result


def vary_alpha(seeds: Sequence[int] = range(10), **kwargs) -> StudyResult:
    """Paper Fig. 3: b holds latents 0..9, a holds 0..9+k, k in {0, 10, ..., 40}; alpha = k / (k + 10)."""
    cells = [(f"k={k}", preset_spec("vary-alpha", k)) for k in preset_settings("vary-alpha")]
    result = crossmodal_kd_sweep(cells, list(seeds), **kwargs)
    result.name = "mfh-alpha"
    return result


PLANE_GAMMAS = tuple(round(0.1 * i, 1) for i in range(1, 11))
PLANE_ALPHAS = tuple(round(0.1 * i, 1) for i in range(10))


def venn_plane(
    seeds: Sequence[int] = range(10),
    gammas: Sequence[float] = PLANE_GAMMAS,
    alphas: Sequence[float] = PLANE_ALPHAS,
    decisive: int = 40,
    dim_a: int = 50,
    dim_b: int = 50,
    **kwargs,
) -> StudyResult:
    """The KD gain over the (gamma, alpha) plane: every grid point with gamma <= 1 - alpha.

    ``decisive`` latents decide the label and every one is seen by a, b or both (no hidden
    latents); the realised ratios of each cell (after rounding to whole dims) are in the rows.
    """
    cells = []
    grid = []
    for g in gammas:
        for a in alphas:
            if g > 1.0 - a + 1e-9:
                continue
            spec = spec_from_ratios(g, a, decisive=decisive, dim_a=dim_a, dim_b=dim_b)
            label = f"g{g:.2f}/a{a:.2f}"
            cells.append((label, spec))
            grid.append(
                {"setting": label, "gamma_target": g, "alpha_target": a, "s0": spec.s0, "sa": spec.sa, "sb": spec.sb}
            )
    result = crossmodal_kd_sweep(cells, list(seeds), **kwargs)
    result.name = "mfh-plane"
    result.protocol.update({"decisive": decisive, "dim_a": dim_a, "dim_b": dim_b})
    by_setting = {s["setting"]: s for s in summarize(result.rows)}
    result.extra["grid"] = [
        {**cell, **{k: v for k, v in by_setting[cell["setting"]].items() if k != "setting"}} for cell in grid
    ]
    return result


# ---- summaries -----------------------------------------------------------------------------------


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per setting (first-seen order): ratios, and mean / std over seeds of the accuracies in points
    and of ``delta = kd - nokd``. Standard deviations are population std (``np.std``), as the
    official script prints them."""
    order: list[str] = []
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["setting"] not in groups:
            order.append(row["setting"])
        groups.setdefault(row["setting"], []).append(row)
    out = []
    for setting in order:
        rs = groups[setting]
        entry = {
            "setting": setting,
            "gamma": rs[0]["gamma"],
            "alpha": rs[0]["alpha"],
            "beta": rs[0]["beta"],
            "seeds": len(rs),
        }
        for key in ("teacher", "nokd", "kd"):
            v = 100.0 * np.array([r[f"{key}_acc"] for r in rs])
            entry[f"{key}_mean"], entry[f"{key}_std"] = float(v.mean()), float(v.std())
        delta = 100.0 * np.array([r["kd_acc"] - r["nokd_acc"] for r in rs])
        entry["delta_mean"], entry["delta_std"] = float(delta.mean()), float(delta.std())
        out.append(entry)
    return out
