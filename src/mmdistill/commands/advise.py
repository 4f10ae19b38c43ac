"""``mmdistill advise``: will distilling a teacher on some modalities into a student on others help?

    mmdistill advise --dataset mfeat --teacher pix --student zer
    mmdistill advise --dataset av-digits --teacher image,audio --student audio     (a multimodal teacher)
    mmdistill advise --dataset venn --param s0=10 --param sa=5 --param sb=5 --json
    mmdistill advise --config run.yaml          (the teacher's and the student's modalities from a train config)
    mmdistill advise --run runs/my-run          (a trained teacher: its training-split logits vs the student)
    mmdistill advise --run out --data my_pkg.data:splits    (a distill() folder whose datasets were given in Python)

From the training split alone, before any student is distilled: a pilot distillation (small
cross-fitted teachers and KD / no-KD students), linear probes (gamma, the share of decisive
information both modalities hold; the CCH criterion I(T;S) > I(S;Y)) and moment estimates of the
shared label information, combined into a predicted KD gain with an 80% interval (calibrated on
synthetic modality-Venn suites; docs/advisor.md); where the inputs lie outside what that calibration covers,
it abstains, says why, and gives the cheap evidence it has. On multilabel or regression data (no calibration covers
them) it always abstains from an interval and gives the pilot's uncalibrated estimate in the task's monitored metric.
The advice's cost is printed with it.
From Python: ``mmdistill.advisor.predict.advise(x_teacher, x_student, y)`` on arrays, and
``mmdistill.advisor.advise_dataset(dataset, teacher=..., student=...)`` on a registered dataset or a torch Dataset.
"""

from __future__ import annotations

import argparse
import json
import time

from ..errors import ConfigError
from . import integer, positive_int, seed_int, threads


def _config_inputs(path: str, max_rows: int | None):
    """(advisor inputs, split seed) of a train config: the teacher's and the student's modalities, the data's training
    split. A user's own model (``{factory: ...}`` or ``{name: ...}``) declares its modalities on the built model: it
    is built once for that, from the config's data (the global RNG left as it was). A ``data.dataset`` factory's
    split is read as a torch Dataset (:func:`mmdistill.advisor.inputs.load_item_inputs`)."""
    from ..advisor.inputs import load_advisor_inputs, load_item_inputs
    from ..config import load_config
    from ..data.contracts.item_dataset import load_data
    from ..models.multimodal import declared_modalities

    cfg = load_config(path, check_machine=False)
    if cfg.teacher is None:
        raise ConfigError("advise --config: the config has no teacher; advise compares a teacher with a student")
    own = [role for role in ("teacher", "student") if not hasattr(getattr(cfg, role).model, "modalities")]
    data = None
    if own or cfg.data.dataset is not None:
        from ..engine.api import run_task

        data = load_data(cfg.data)
        run_task(cfg.task, data)  # the data take the run's task's settings (num_classes), as in training
    mods = {}
    for role in ("teacher", "student"):
        model = getattr(cfg, role).model
        if role in own:
            assert data is not None  # loaded above for the roles in own
            mods[role] = list(declared_modalities(model, data.train.specs(), data.num_classes, f"{role}.model"))
        else:
            mods[role] = list(model.modalities)
    seed = cfg.data.split_seed
    if data is not None and cfg.data.dataset is not None:
        k = data.num_classes
        return load_item_inputs(data.train, mods["teacher"], mods["student"], cfg.data.dataset, k, seed, max_rows), seed
    params = dict(cfg.data.params)
    return load_advisor_inputs(
        cfg.data.name, params, mods["teacher"], mods["student"], seed=seed, max_rows=max_rows
    ), seed


def _inputs(args: argparse.Namespace):
    """(advisor inputs, seed) from --run, --config or --dataset/--teacher/--student."""
    from ..advisor.inputs import load_advisor_inputs, load_run_inputs
    from .data import _params

    given = [f"--{k}" for k in ("dataset", "teacher", "student", "param") if getattr(args, k)]
    if args.run and (args.config or given):
        raise ConfigError(
            "advise --run: takes the data, the trained teacher and the student's modalities from the "
            f"run folder; drop {', '.join((['--config'] if args.config else []) + given)}"
        )
    if args.data and not args.run:
        raise ConfigError("advise --data: gives the data of a run folder (with --run DIR); drop --data")
    if args.run:
        return load_run_inputs(args.run, args.data, args.max_rows, args.seed), args.seed
    if args.config:
        if given:
            raise ConfigError(
                f"advise --config: takes the dataset and modalities from the config; drop {', '.join(given)}"
            )
        return _config_inputs(args.config, args.max_rows)
    if not args.dataset:
        raise ConfigError("advise: give --dataset (with --teacher/--student), --config or --run")
    inputs = load_advisor_inputs(
        args.dataset, _params(args.param), args.teacher, args.student, seed=args.seed, max_rows=args.max_rows
    )
    return inputs, args.seed


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..advisor.predict import advise

    if args.threads < 1:
        raise ConfigError(f"advise --threads: must be a positive integer, got {args.threads}")
    if args.bootstrap < 1:
        raise ConfigError(f"advise --bootstrap: must be a positive integer, got {args.bootstrap}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    inputs, seed = _inputs(args)
    read = {"inputs_seconds": round(time.perf_counter() - start, 2)}  # reading the data and the models, features
    advice = advise(
        inputs.xa,
        inputs.xb,
        inputs.y,
        num_classes=inputs.num_classes,
        seed=seed,
        bootstrap=args.bootstrap,
        train_rows=inputs.train_rows,
        task=inputs.task,
    )
    advice.teacher_accuracy_student_modalities = inputs.teacher_accuracy_student_modalities
    t, s = "+".join(inputs.teacher), "+".join(inputs.student)
    if args.json:
        described = {"representation": inputs.representation} if inputs.representation else {}
        print(
            json.dumps({"dataset": inputs.dataset, "teacher": t, "student": s, **described, **read, **advice.to_dict()})
        )
    else:
        print(f"{inputs.dataset}: teacher {t} -> student {s}: {advice.text()}")
        print(f"  inputs: {read['inputs_seconds']:.2f} s to read the data and make the feature rows")
        if inputs.representation:
            print(f"  probes read: {inputs.representation}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "advise",
        help="estimate whether crossmodal KD will help, before distilling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="a train config: dataset, teacher and student modalities from it")
    p.add_argument(
        "--run",
        help="a run folder (mmdistill train, or a distill() folder): its trained teacher (first seed) and the "
        "student's modalities",
    )
    p.add_argument(
        "--data",
        metavar="PKG.MOD:FACTORY",
        help="with --run: the run's data, a function returning train/val/test datasets (as data.dataset in YAML); "
        "needed for a distill() folder whose datasets were given in Python",
    )
    p.add_argument("--dataset", help="registered dataset (venn, mfeat, av-digits, ...)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="dataset parameter (repeatable, YAML value)")
    p.add_argument(
        "--teacher",
        help="teacher modality, or several separated by commas (default: venn a, mfeat pix, av-digits image)",
    )
    p.add_argument(
        "--student",
        help="student modality, or several separated by commas (default: venn b, mfeat zer, av-digits audio)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="split and estimation seed")
    p.add_argument(
        "--bootstrap",
        type=integer(1, 10_000),
        default=10,
        help="bootstrap resamples for the gamma/CCH intervals (default 10)",
    )
    p.add_argument(
        "--max-rows",
        type=positive_int,
        default=None,
        help="read at most this many training rows, a seeded random subset (default: all rows of column data, "
        "1,000 of a torch Dataset's items): for large data such as AV-MNIST, whose audio is 12,544 floats a row",
    )
    p.add_argument("--threads", type=threads, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)
