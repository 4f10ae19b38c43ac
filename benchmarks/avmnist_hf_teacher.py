"""AV-MNIST with a Hugging Face audio teacher: an AST-style transformer (small, random init) against the LeNet teacher.

Both teachers read the audio spectrogram and are distilled into the same student, MultiBench's audio LeNet
(:func:`mmdistill.studies.mfh_table1.reference_model`). The AST teacher is loaded the way a pretrained one is: an
``ASTModel`` written with ``save_pretrained`` into ``OUT/ast`` and read back by the ``type: hf`` encoder, pooled by
the mean over its patch tokens, with a 100-unit MLP head; its input is standardised as AST's feature extractor does,
``(x - mean) / (2 std)`` with the training rows' mean and std (a forward pre-hook on the encoder: on AV-MNIST's
[0, 1] spectrograms the unscaled patches give every example nearly the same features, and the teacher stays at
chance). Its weights are random: no pretrained checkpoint can be
downloaded here, so this shows the route (an HF encoder as a teacher on real data, cached, distilled), not what a
pretrained AST would give.

    python benchmarks/avmnist_hf_teacher.py --data AVMNIST_DIR --out OUT [--seeds 3]

AVMNIST_DIR is a ``mmdistill data build av-mnist`` folder. The teachers are trained once (seed 0, on
``--teacher-rows`` rows); each seed trains three audio students on ``--train-rows`` rows (a subset of the teachers'):
no KD, KD from the LeNet teacher, KD from the AST teacher (Hinton KD, T = 4, lam = 0.5, MultiBench's SGD). Writes
``results.csv`` and ``summary.md`` (test accuracy, mean and 95% interval over seeds, paired differences).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import subprocess
import time
from pathlib import Path

import torch

from mmdistill.config import CacheConfig, OptimizerConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill
from mmdistill.models.encoders import EncoderConfig
from mmdistill.models.multimodal import ModelConfig, build_model
from mmdistill.stats import paired_difference, summarize
from mmdistill.studies.mfh_table1 import multibench_trainer, reference_model, row_subsets

SIDE = 112  # AV-MNIST spectrograms: 112 time frames x 112 frequency bins


def write_ast(folder: Path, seed: int = 0) -> Path:
    """A small AST (2 layers, width 64, 16x16 patches without overlap: 49 tokens) with random weights."""
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(seed)
    config = ASTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_mel_bins=SIDE,
        max_length=SIDE,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
    )
    ASTModel(config).save_pretrained(folder)
    return folder


def ast_teacher_model(folder: Path) -> ModelConfig:
    return ModelConfig(
        modalities=["audio"],
        encoders={"audio": EncoderConfig(type="hf", params={"path": str(folder), "pooling": "mean"})},
        head_hidden=[100],
    )


def standardise_input(model: torch.nn.Module, rows) -> torch.nn.Module:
    """AST's feature-extractor normalisation, ``(x - mean) / (2 std)``, in front of the audio encoder."""
    audio = rows.__getitems__(range(min(len(rows), 2000)))["audio"]
    mean, scale = audio.mean().item(), 2 * audio.std().item()
    model.encoders["audio"].register_forward_pre_hook(lambda module, args: ((args[0] - mean) / scale, *args[1:]))
    return model


def ast_trainer(epochs: int) -> TrainerConfig:
    """AdamW for the transformer (MultiBench's SGD at lr 0.1 does not train it)."""
    return TrainerConfig(
        epochs=epochs,
        batch_size=40,
        optimizer=OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4),
        test_checkpoint="best",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a `mmdistill data build av-mnist` folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--teacher-rows", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    t0 = time.perf_counter()
    splits = build_splits("avmnist", {"root": args.data}, seed=0)
    student_data, teacher_data = row_subsets(splits, (args.train_rows, args.teacher_rows), 500, 2000)
    specs, classes = splits.train.specs(), splits.num_classes
    cache = CacheConfig(enabled=True, dir=out / "cache")
    rows: list[dict] = []

    def fit(name, model_cfg, data, seed, epochs, trainer, teacher=None, standardised=False):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = build_model(model_cfg, specs, classes)
        if standardised:
            standardise_input(model, data.train)
        res = distill(
            model,
            teacher,
            data,
            out / "runs" / name / f"seed_{seed}",
            method="kd" if teacher is not None else "supervised",
            method_params={"temperature": 4.0, "lam": 0.5} if teacher is not None else None,
            trainer=trainer,
            cache=cache,
            seed=seed,
            quiet=True,
        )
        row = {"model": name, "seed": seed, "test_acc": res.test["accuracy"], "val_acc": res.val["accuracy"]}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"{name} seed {seed}: test {row['test_acc']:.2f} val {row['val_acc']:.2f} in {row['seconds']} s")
        return res.student

    lenet_t = fit(
        "lenet_teacher",
        reference_model(["audio"]),
        teacher_data,
        0,
        args.teacher_epochs,
        multibench_trainer(args.teacher_epochs),
    )
    ast_t = fit(
        "ast_teacher",
        ast_teacher_model(write_ast(out / "ast")),
        teacher_data,
        0,
        args.teacher_epochs,
        ast_trainer(args.teacher_epochs),
        standardised=True,
    )
    student = reference_model(["audio"])
    for seed in range(args.seeds):
        fit("nokd", student, student_data, seed, args.epochs, multibench_trainer(args.epochs))
        fit("kd_lenet", student, student_data, seed, args.epochs, multibench_trainer(args.epochs), lenet_t)
        fit("kd_ast", student, student_data, seed, args.epochs, multibench_trainer(args.epochs), ast_t)
    write(out, rows, args, time.perf_counter() - t0)


def write(out: Path, rows: list[dict], args, seconds: float) -> None:
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    acc = {
        m: [r["test_acc"] for r in sorted(rows, key=lambda r: r["seed"]) if r["model"] == m]
        for m in dict.fromkeys(r["model"] for r in rows)
    }

    def ci(s):
        return (
            f"{s['mean']:.2f}"
            if s["n"] < 2 or math.isnan(s["ci_low"])
            else (f"{s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
        )

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    lines = [
        "# AV-MNIST: an AST-style HF audio teacher against the LeNet teacher, into the LeNet audio student",
        "",
        f"`python benchmarks/avmnist_hf_teacher.py --data {args.data} --seeds {args.seeds} --train-rows "
        f"{args.train_rows} --teacher-rows {args.teacher_rows} --epochs {args.epochs} --teacher-epochs "
        f"{args.teacher_epochs}`; commit {commit}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, 1 thread; {seconds:.0f} s in all. Test accuracy in %, mean [95% CI over seeds].",
        "",
        "| model | test accuracy |",
        "|---|---|",
    ]
    lines += [f"| {m} | {ci(summarize(v))} |" for m, v in acc.items()]
    lines += ["", "Paired differences over seeds (points):", ""]
    for a, b in (("kd_lenet", "nokd"), ("kd_ast", "nokd"), ("kd_ast", "kd_lenet")):
        d = paired_difference(acc[a], acc[b])
        lines.append(f"- {a} - {b}: {ci(d)}")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
