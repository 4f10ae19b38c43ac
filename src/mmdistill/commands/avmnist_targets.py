"""``mmdistill reproduce mfh-table1``: the MFH paper's Table 1 AV-MNIST failure case on MNIST + FSDD.

Kept out of ``reproduce.py`` (one registration line there). AV-MNIST is built from ``--data-root``
(``mnist/`` and ``fsdd/recordings/``) into ``OUT/avmnist`` unless ``--data`` names a finished build.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.system.runfolder import ALL
from ..errors import ConfigError
from ..studies.outputs import TRAINED
from . import fraction, integer, number, positive_float, positive_int


def _table1_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="folder holding mnist/ (IDX .gz files) and fsdd/recordings/ (FSDD WAVs)")
    parser.add_argument(
        "--data", help="a finished `mmdistill data build av-mnist` folder (default: OUT/avmnist, built if absent)"
    )
    parser.add_argument(
        "--train-size", type=positive_int, default=2000, help="student training rows (default 2000 of 55,000)"
    )
    parser.add_argument(
        "--teacher-factor",
        type=integer(1, 1000),
        default=3,
        help="teachers train on this many times the rows (default 3)",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=3, help="student epochs (default 3; MultiBench: 20-30 on all rows)"
    )
    parser.add_argument("--teacher-epochs", type=positive_int, default=3, help="teacher epochs (default 3)")
    parser.add_argument(
        "--val-size", type=positive_int, default=500, help="validation rows used for model selection (default 500)"
    )
    parser.add_argument("--test-size", type=positive_int, default=2000, help="test rows (default 2000 of 10,000)")
    parser.add_argument("--temperature", type=number(0.05, 100.0), default=4.0, help="KD temperature (default 4)")
    parser.add_argument("--lam", type=number(0.0, 1.0), default=0.5, help="KD weight; CE gets 1 - lam (default 0.5)")
    parser.add_argument(
        "--teachers", help="output folder of an earlier mfh-table1 run: load its two teachers instead of training"
    )
    parser.add_argument(
        "--accelerator", choices=["cpu", "gpu"], default="cpu", help="device of every run (default cpu)"
    )


def _table1_run(args: argparse.Namespace, out: Path) -> str:
    from ..data import build_splits
    from ..data.builders.avmnist_build import MARKER, build_av_mnist
    from ..studies.mfh_table1 import table1, write_table1

    for name in ("train_size", "teacher_factor", "epochs", "teacher_epochs", "val_size", "test_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
    data = Path(args.data) if args.data else out / "avmnist"
    if not (data / MARKER).is_file() and not (args.data and (data / "train_labels.npy").is_file()):
        if not args.data_root:
            raise ConfigError(
                f"no AV-MNIST build at {data}; give --data-root (with mnist/ and fsdd/recordings/) to build it"
            )
        root = Path(args.data_root)
        print(f"building AV-MNIST from {root} into {data} ...", flush=True)
        build_av_mnist(root / "mnist", root / "fsdd" / "recordings", data)
    splits = build_splits("avmnist", {"root": str(data)})
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    result = table1(
        splits,
        out,
        seeds,
        train_size=args.train_size,
        teacher_factor=args.teacher_factor,
        epochs=args.epochs,
        teacher_epochs=args.teacher_epochs,
        val_size=args.val_size,
        test_size=args.test_size,
        temperature=args.temperature,
        lam=args.lam,
        accelerator=args.accelerator,
        teachers_from=Path(args.teachers) if args.teachers else None,
    )
    command = f"mmdistill reproduce mfh-table1 --seeds {args.seeds}"
    command += f" --first-seed {args.first_seed}" if args.first_seed else ""
    command += f" --data-root {args.data_root}" if args.data_root else ""
    command += f" --data {args.data}" if args.data else ""
    command += f" --teachers {args.teachers}" if args.teachers else ""
    for name, default in (
        ("train_size", 2000),
        ("teacher_factor", 3),
        ("epochs", 3),
        ("teacher_epochs", 3),
        ("val_size", 500),
        ("test_size", 2000),
        ("temperature", 4.0),
        ("lam", 0.5),
        ("accelerator", "cpu"),
    ):
        if getattr(args, name) != default:
            command += f" --{name.replace('_', '-')} {getattr(args, name)}"
    write_table1(result, out, f"{command} --out {args.out}")
    return (
        f"mfh-table1: {len(result.rows)} models in {result.seconds:.0f} s; wrote {out}/results.csv, summary.md, "
        "table1.png"
    )


def _removal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a finished `mmdistill data build av-mnist` folder")
    parser.add_argument(
        "--teacher", choices=["audio", "image"], default="audio", help="teacher modality (default audio)"
    )
    parser.add_argument("--train-size", type=positive_int, default=2000, help="student training rows (default 2000)")
    parser.add_argument("--epochs", type=positive_int, default=3, help="student and teacher epochs (default 3)")
    parser.add_argument(
        "--keep", type=fraction, default=0.25, help="fraction of the teacher's channels kept (default 0.25)"
    )
    parser.add_argument(
        "--student-lr", type=positive_float, default=0.1, help="students' SGD learning rate (MultiBench image: 0.01)"
    )


def _removal_run(args: argparse.Namespace, out: Path) -> str:
    from ..data import build_splits
    from ..studies.mfh_removal_avmnist import removal_avmnist, write_removal_avmnist

    if args.train_size < 1 or args.epochs < 1 or not 0 < args.keep <= 1:
        raise ConfigError(
            f"--train-size, --epochs: positive integers, --keep in (0, 1]; got {args.train_size}, {args.epochs}, "
            f"{args.keep}"
        )
    student = "image" if args.teacher == "audio" else "audio"
    result = removal_avmnist(
        build_splits("avmnist", {"root": args.data}),
        out,
        list(range(args.first_seed, args.first_seed + args.seeds)),
        teacher_modality=args.teacher,
        student_modality=student,
        train_size=args.train_size,
        epochs=args.epochs,
        teacher_epochs=args.epochs,
        keep=args.keep,
        student_lr=args.student_lr,
    )
    command = (
        f"mmdistill reproduce mfh-removal-avmnist --data {args.data} --teacher {args.teacher} --seeds {args.seeds} "
        f"--train-size {args.train_size} --epochs {args.epochs} --keep {args.keep} --student-lr {args.student_lr} "
        f"--out {args.out}"
    )
    write_removal_avmnist(result, out, command)
    return (
        f"mfh-removal-avmnist: {len(result['rows'])} students in {result['seconds']:.0f} s; wrote {out}/results.csv, "
        "summary.md"
    )


def targets(target_class) -> dict:
    """The entries for ``reproduce.TARGETS``."""
    return {
        "mfh-table1": target_class(
            "MFH paper Table 1, AV-MNIST (MNIST + FSDD): audio student, audio vs image+audio teacher",
            _table1_run,
            _table1_arguments,
            {**TRAINED, "avmnist": ALL},  # the AV-MNIST arrays it builds from MNIST + FSDD
        ),
        "mfh-removal-avmnist": target_class(
            "MFH feature removal on AV-MNIST: Algorithm 1 on a LeNet teacher's penultimate "
            "channels, keep top / random / bottom",
            _removal_run,
            _removal_arguments,
            TRAINED,
        ),
    }
