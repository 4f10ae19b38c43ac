"""``mmdistill reproduce baselines --tune``: the baselines pair of :mod:`.baselines_study`, every method tuned.

One sweep (:mod:`mmdistill.sweep`) per dataset on the same teacher/student pair, optimiser (Adam 3e-3), batch 64 and
epochs as the default table. Per method a grid over its temperature and its own weights (:data:`GRIDS`: KD's lambda,
DKD's alpha and beta, DIST's beta, the feature losses' weights), chosen by validation accuracy on tune seed 0 and re-run
on the final seeds beside the method at the study's settings (:data:`.baselines_study.METHODS`, the library's
default temperature). The table ranks the methods by mean test accuracy at their defaults and tuned: whether tuning
changes the ranking. MFH modality-general KD (its channel scores come from a file per seed) and AV-MNIST (the LeNet
pair, ``--data``) are not tuned here.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from ..io import write_csv, write_text
from ..stats import average_ranks
from .baselines_study import METHODS, SETUPS, Setup

TUNABLE = ("mfeat", "av-digits")
GRIDS: dict[str, dict[str, list]] = {
    "kd": {"method.params.temperature": [1.0, 2.0, 4.0, 8.0], "method.params.lam": [0.5, 0.9]},
    "dkd": {
        "method.params.temperature": [1.0, 4.0],
        "method.params.alpha": [0.5, 1.0],
        "method.params.beta": [1.0, 4.0, 8.0],
    },
    "dist": {"method.params.tau": [1.0, 2.0, 4.0], "method.params.beta": [1.0, 2.0]},
    "logit_std_kd": {"method.params.temperature": [1.0, 2.0, 4.0], "method.params.lam": [0.5, 0.9]},
    "pkt": {"method.params.beta": [3000.0, 30000.0, 300000.0]},
    "rkd": {"method.params.dist_factor": [5.0, 25.0], "method.params.angle_factor": [10.0, 50.0]},
    "sp": {"method.params.gamma": [300.0, 3000.0, 30000.0]},
    "crd": {"method.params.beta": [0.2, 0.8, 2.0]},
    "c2kd": {"method.params.temperature": [1.0, 2.0, 4.0], "method.params.kd_weight": [1.0, 2.0]},
}


def _model(setup: Setup, teacher: bool) -> dict:
    modalities = setup.modalities if teacher else setup.student_modalities or setup.modalities
    hidden = setup.teacher_hidden if teacher else setup.student_hidden
    return {"modalities": list(modalities), "encoder": {"type": "mlp", "hidden": [hidden], "out_dim": hidden}}


def sweep_file(name: str, final_seeds: int, epochs: int | None) -> dict:
    """The sweep of dataset ``name``: the study's pair as a base config, the methods with the study's fixed
    parameters, a grid per method; tune seed 0, final seeds 1..``final_seeds``."""
    setup = SETUPS[name]
    base = {
        "data": {"name": setup.data, "params": dict(setup.params)},
        "teacher": {"model": _model(setup, True)},
        "student": {"model": _model(setup, False)},
        "trainer": {"epochs": epochs or setup.epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3}},
    }
    methods = [{"name": method, "params": dict(params)} for method, params, _ in (METHODS[m] for m in GRIDS)]
    return {
        "base": base,
        "methods": methods,
        "space": dict(GRIDS),
        "search": {"kind": "grid"},
        "seeds": {"tune": 1, "final": final_seeds},
        "select": {"metric": "accuracy", "split": "val"},
    }


def run_tuned(datasets: list[str], seeds: int, out: Path, command: str, epochs: int | None, workers: int) -> str:
    """Sweep each dataset into ``out/sweep-<name>``; write ``summary.md`` and ``results.csv`` (last)."""
    from ..strict_yaml import dump
    from ..sweep import run_sweep

    refused = [d for d in datasets if d not in TUNABLE]
    if refused:
        raise ConfigError(f"--tune: sweeps are set up for {', '.join(TUNABLE)}; not for {', '.join(refused)}")
    rows, timings = [], {}
    for name in datasets:
        path = write_text(out / f"tune-{name}.yaml", dump(sweep_file(name, seeds, epochs)))
        start = time.perf_counter()
        result = run_sweep(path, out / f"sweep-{name}", workers=workers)
        timings[name] = time.perf_counter() - start
        rows += [{"dataset": name, **row} for row in ranked(result["final"])]
    write_text(out / "summary.md", summary_markdown(rows, command, timings))
    write_csv(out / "results.csv", rows, float_format=".6g")  # last: its presence marks a finished study
    return f"wrote {out / 'summary.md'}"


def ranked(final: list[dict]) -> list[dict]:
    """The final rows with ``rank``: 1 = the best mean test accuracy among the methods of the same variant."""
    out = [dict(r) for r in final]
    for variant in ("default", "tuned"):
        rows = [r for r in out if r["variant"] == variant and not r["error"]]
        for row, rank in zip(rows, average_ranks([-r["test_mean"] for r in rows])):
            row["rank"] = float(rank)
    return out


def summary_markdown(rows: list[dict], command: str, timings: dict[str, float]) -> str:
    lines = [
        "# Distillation baselines, every method tuned on validation\n",
        f"Command: `{command}`. Per method a grid (T and the method's own weights) on tune seed 0, chosen by "
        "validation accuracy, then re-run on the final seeds beside the method at the study's settings; test "
        "accuracy mean ± std [95% t-CI]; differences to KD (tuned) paired by seed; rank 1 = best mean.\n",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines += [
            f"## {name}: {SETUPS[name].note} (wall time {timings[name] / 60:.1f} min)",
            "",
            "| method | default: test | rank | tuned: test | rank | minus KD (tuned) | tuned settings |",
            "|---|---|---|---|---|---|---|",
        ]
        by = {(r["method"], r["variant"]): r for r in rows if r["dataset"] == name}
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == name):
            d, t = by.get((method, "default")), by.get((method, "tuned"))
            lines.append(
                f"| {method} | {_test(d)} | {_rank(d)} | {_test(t)} | {_rank(t)} | {_diff(t)} | "
                f"`{t['params'] if t else '-'}` |"
            )
        lines.append("")
    return "\n".join(lines)


def _test(row: dict | None) -> str:
    if row is None or row["error"]:
        return "failed" if row else "-"
    return f"{row['test_mean']:.2f} ± {row['test_std']:.2f} [{row['test_ci_low']:.2f}, {row['test_ci_high']:.2f}]"


def _rank(row: dict | None) -> str:
    return "-" if row is None or row["error"] else f"{row['rank']:g}"


def _diff(row: dict | None) -> str:
    if row is None or row["error"] or row["minus_kd_mean"] != row["minus_kd_mean"]:
        return "—"
    return f"{row['minus_kd_mean']:+.2f} [{row['minus_kd_ci_low']:+.2f}, {row['minus_kd_ci_high']:+.2f}]"
