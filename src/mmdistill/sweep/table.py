"""The sweep's final table: per method, the chosen settings re-run on the final seeds against its defaults.

For each method and variant (``tuned``, ``default``): the test metric over the final seeds (mean, std, 95%
t-interval), the paired differences to the no-KD student and to KD on the same seeds (:func:`mmdistill.stats.
paired_difference`), and the training cost per step. Written as ``final.csv`` and ``summary.md``; every trial as
``trials.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..io import write_csv, write_text
from ..stats import few_seeds_caution, format_summary, paired_difference, summarize
from .plan import mean_val
from .spec import SweepSpec


def test_values(record: dict, metric: str, seeds: list[int]) -> list[float] | None:
    test = record.get("test") or {}
    if record.get("status") != "done" or any(str(s) not in test for s in seeds):
        return None
    return [float(test[str(s)][metric]) for s in seeds]


def final_rows(spec: SweepSpec, finals: dict[str, dict], holder: dict, best: dict) -> list[dict]:
    """One row per method and variant; a variant whose runs failed has its error instead of numbers."""
    seeds, metric = spec.final_seeds, spec.metric
    refs = {ref: test_values(finals[holder[(ref, "reference")]], metric, seeds) for ref in ("nokd", "kd")}
    rows = []
    for m in spec.methods:
        for variant in ("tuned", "default"):
            if (m, variant) not in holder:
                continue
            record = finals[holder[(m, variant)]]
            values = test_values(record, metric, seeds)
            row: dict[str, Any] = {
                "method": m,
                "variant": variant,
                "params": json.dumps(record["params"], sort_keys=True),
            }
            row["val_tune"] = mean_val(best[m]) if variant == "tuned" else math.nan
            row["error"] = record.get("error", "") if values is None else ""
            steps = record.get("steps") or 0
            row["ms_per_step"] = 1000 * record["seconds"] / steps if steps else math.nan
            stat = summarize(values) if values else None
            for key in ("mean", "std", "ci_low", "ci_high"):
                row[f"test_{key}"] = stat[key] if stat else math.nan
            for ref, ref_values in refs.items():
                itself = holder[(m, variant)] == holder[(ref, "reference")]  # the reference run itself: no difference
                diff = paired_difference(values, ref_values) if values and ref_values and not itself else None
                for key in ("mean", "ci_low", "ci_high"):
                    row[f"minus_{ref}_{key}"] = diff[key] if diff else math.nan
            rows.append(row)
    return rows


def write_tables(spec: SweepSpec, out: Path, rows: list[dict], trials: list[dict], notes: list[str]) -> None:
    """``final.csv``, ``trials.csv`` and ``summary.md`` in ``out`` (atomic writes)."""
    write_csv(out / "final.csv", rows, float_format=".6g")
    write_trials(out, trials, spec.metric)
    write_text(out / "summary.md", summary_markdown(spec, rows, trials, notes))


def write_trials(out: Path, trials: list[dict], metric: str) -> None:
    fields = ["name", "method", "status", "params", f"val_{metric}", "seconds", "steps", "error"]
    rows = [
        {
            "name": r["name"],
            "method": r["method"],
            "status": r["status"],
            "params": json.dumps(r["params"], sort_keys=True),
            f"val_{metric}": mean_val(r),
            "seconds": r.get("seconds", 0.0),
            "steps": r.get("steps", 0),
            "error": r.get("error", ""),
        }
        for r in trials
    ]
    if rows:
        write_csv(out / "trials.csv", rows, fields, float_format=".6g")


def _cell(row: dict, prefix: str) -> str:
    """The test metric as mean ± std [95% CI], a difference as +mean [low, high]; "-" when there is none."""
    mean, low, high = row[f"{prefix}_mean"], row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    if math.isnan(mean):
        return "-"
    if prefix == "test":
        return format_summary({"mean": mean, "std": row["test_std"], "ci_low": low, "ci_high": high}, 1.0, 2)
    return f"{mean:+.2f}" if math.isnan(low) else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def summary_markdown(spec: SweepSpec, rows: list[dict], trials: list[dict], notes: list[str]) -> str:
    metric, seeds = spec.metric, spec.final_seeds
    counts = {s: sum(r["status"] == s for r in trials) for s in ("done", "pruned", "failed")}
    lines = [
        f"# Sweep: {', '.join(spec.methods)}",
        "",
        f"Search: {spec.kind}, {len(trials)} trials ({counts['done']} done, {counts['pruned']} pruned, "
        f"{counts['failed']} failed) on tune seeds {spec.tune_seeds}; settings chosen by validation {metric}; test "
        f"{metric} of the final runs on seeds {seeds} (mean ± std [95% t-CI]; differences paired by seed).",
        "",
    ]
    caution = few_seeds_caution(len(seeds))
    if caution:
        lines += [caution.replace("--seeds N", "seeds.final in the sweep file"), ""]
    header = f"| method | settings | val {metric} (tune) | test {metric} | - no-KD | - KD | ms/step |"
    for variant, title in (("tuned", "Tuned (best validation setting)"), ("default", "Defaults")):
        lines += [f"## {title}", "", header, "|---|---|---|---|---|---|---|"]
        for row in (r for r in rows if r["variant"] == variant):
            val = "-" if math.isnan(row["val_tune"]) else f"{row['val_tune']:.2f}"
            cost = "-" if math.isnan(row["ms_per_step"]) else f"{row['ms_per_step']:.2f}"
            test = f"failed: {row['error']}" if row["error"] else _cell(row, "test")
            lines.append(
                f"| {row['method']} | `{row['params']}` | {val} | {test} | {_cell(row, 'minus_nokd')} | "
                f"{_cell(row, 'minus_kd')} | {cost} |"
            )
        lines.append("")
    failed = [r for r in trials if r["status"] == "failed"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- {r['name']}: {r.get('error', '')}" for r in failed] + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
