"""``mmdistill reproduce TARGET --out DIR``: re-run a paper's experiment and write its table and figure.

Every target shares ``--seeds``, ``--first-seed``, ``--out``, ``--overwrite`` and ``--threads``; a
target adds its own options through ``add_arguments``. A target is one entry of :data:`TARGETS`:
its help line, a function ``run(args, out) -> str`` that writes into ``out`` (atomically, with
``results.csv`` last) and returns a one-line summary, optionally ``add_arguments(parser)``, and the
layout of what it writes (``outputs``: :mod:`mmdistill.studies.outputs`; ``--overwrite`` replaces only
that). Adding a built-in target is one function and one dict entry.

A study of your own is one module outside the package, declared as an entry point of the group
``mmdistill.studies`` in your package's metadata (``[project.entry-points."mmdistill.studies"]``,
``my-study = "my_pkg.study:target"``). The entry point names a :class:`Target` (or a function returning one); it is
loaded when ``mmdistill reproduce`` is asked for a target it does not know, and runs like a built-in one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.system.runfolder import Layout, RunOf, register_layout
from ..errors import ConfigError
from ..studies.outputs import TABLES, TRAINED
from ..sweep import layout as _sweep_layout  # noqa: F401  (declares a sweep folder's layout: --tune writes them)
from ..usercode import failed, kept
from . import integer, number, positive_float, positive_int, seed_int, seeds_count, threads, width


@dataclass(frozen=True)
class Target:
    help: str
    run: Callable[[argparse.Namespace, Path], str]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    outputs: Layout = field(default_factory=lambda: TABLES)


# ---- MFH synthetic studies (Xue et al., ICLR 2023) ----------------------------------------------


def _mfh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=positive_int, default=1000, help="full-batch SGD steps per model (paper: 1000)"
    )
    parser.add_argument(
        "--hidden",
        type=width,
        nargs="*",
        default=[],
        metavar="H",
        help="hidden widths of MLP teachers/students (default: none, linear models as in the paper)",
    )


def _plane_arguments(parser: argparse.ArgumentParser) -> None:
    _mfh_arguments(parser)
    parser.add_argument(
        "--decisive",
        type=integer(1, 10_000),
        default=40,
        help="decisive latent dims s0 + sa + sb of every cell (default 40)",
    )


def _command(args: argparse.Namespace) -> str:
    parts = [f"mmdistill reproduce {args.target} --seeds {args.seeds}"]
    if args.first_seed:
        parts.append(f"--first-seed {args.first_seed}")
    if getattr(args, "epochs", 1000) != 1000:
        parts.append(f"--epochs {args.epochs}")
    if getattr(args, "hidden", None):
        parts.append("--hidden " + " ".join(map(str, args.hidden)))
    if getattr(args, "decisive", 40) != 40:
        parts.append(f"--decisive {args.decisive}")
    return " ".join(parts + [f"--out {args.out}"])


def _mfh_study(args: argparse.Namespace, out: Path) -> str:
    from ..studies import mfh_synthetic as studies
    from ..studies.mfh_report import write_study

    if args.epochs < 1:
        raise ConfigError(f"--epochs: must be a positive integer, got {args.epochs}")
    if any(h < 1 for h in args.hidden):
        raise ConfigError(f"--hidden: widths must be positive integers, got {args.hidden}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    common = {"epochs": args.epochs, "hidden": tuple(args.hidden)}
    if args.target == "mfh-gamma":
        result = studies.vary_gamma(seeds, **common)
    elif args.target == "mfh-alpha":
        result = studies.vary_alpha(seeds, **common)
    else:
        result = studies.venn_plane(seeds, decisive=args.decisive, **common)
    write_study(result, out, _command(args))
    return (
        f"{result.name}: {result.runs} models in {result.seconds:.2f} s; wrote {out}/results.csv, summary.md and the "
        "figure"
    )


# ---- MSD (Jin et al., Findings of EMNLP 2021) -------------------------------------------------


def _msd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["mfeat", "av-digits", "venn"],
        choices=["mfeat", "av-digits", "venn", "avmnist"],
        help="datasets (default: mfeat av-digits venn; avmnist needs --data)",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs per model (default: the dataset's setting, 30)"
    )
    parser.add_argument("--data", help="avmnist: a finished `mmdistill data build av-mnist` folder")
    parser.add_argument(
        "--lr", type=positive_float, default=None, help="learning rate of every model (default: the dataset's setting)"
    )
    parser.add_argument(
        "--teacher-modality-dropout",
        type=number(0.0, 1.0, below=True),
        default=0.0,
        metavar="P",
        help="train the teachers with modality dropout P (supervised's modality_dropout; default 0: none)",
    )


def _msd_study(args: argparse.Namespace, out: Path) -> str:
    from ..studies.msd_study import run_study

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    command = (
        f"mmdistill reproduce msd --dataset {' '.join(args.dataset)} --seeds {args.seeds}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + (f" --data {args.data}" if args.data else "")
        + (f" --lr {args.lr}" if args.lr is not None else "")
        + (f" --teacher-modality-dropout {args.teacher_modality_dropout}" if args.teacher_modality_dropout else "")
        + f" --out {args.out}"
    )
    if args.lr is not None and not 0 < args.lr <= 10:
        raise ConfigError(f"reproduce msd --lr: must lie in (0, 10], got {args.lr}")
    if not 0 <= args.teacher_modality_dropout < 1:
        raise ConfigError(
            f"reproduce msd --teacher-modality-dropout: must lie in [0, 1), got {args.teacher_modality_dropout}"
        )
    return run_study(
        args.dataset,
        seeds,
        out,
        command,
        args.epochs,
        data_dir=args.data,
        lr=args.lr,
        teacher_dropout=args.teacher_modality_dropout,
    )


# ---- distillation baselines -----------------------------------------------------------------------


def _baselines_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["mfeat"],
        choices=["mfeat", "av-digits", "avmnist"],
        help="datasets (default: mfeat; avmnist needs --data)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs per model (default: the dataset's setting, 20; avmnist 3)",
    )
    parser.add_argument("--data", help="avmnist: a finished `mmdistill data build av-mnist` folder")
    parser.add_argument(
        "--accelerator", choices=["cpu", "gpu"], default="cpu", help="device of every run (default cpu)"
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="tune every method on validation (a grid of T and its own weights per method, `mmdistill sweep`): "
        "default against tuned, on mfeat and av-digits; final seeds 1..N",
    )
    parser.add_argument("--workers", type=positive_int, default=1, help="--tune: trials in parallel (default 1)")
    parser.add_argument(
        "--teacher-rows",
        action="store_true",
        help="also the rows with several teachers (one per modality; the multimodal one plus them; MST-Distill) "
        "and with a teacher that learns alongside (DML, C2KD)",
    )
    parser.add_argument(
        "--methods", nargs="+", metavar="LABEL", help="only these rows of the single-teacher table (nokd, kd always)"
    )
    parser.add_argument(
        "--temperatures",
        type=number(0.05, 100.0),
        nargs="+",
        metavar="T",
        help="the grid of T each method with a temperature runs at (default 1 2 4)",
    )
    parser.add_argument(
        "--train-size", type=positive_int, help="avmnist: student training rows, the teacher's 3x (default 2000)"
    )


def _baselines_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The options beyond the single-teacher table, as they go on the command line and to ``run_study``."""
    options = {"several_teachers": args.teacher_rows, "methods": args.methods, "train_size": args.train_size}
    words = (" --teacher-rows" if args.teacher_rows else "") + (
        f" --methods {' '.join(args.methods)}" if args.methods else ""
    )
    if args.temperatures:
        options["temperatures"] = args.temperatures
        words += f" --temperatures {' '.join(f'{t:g}' for t in args.temperatures)}"
    if args.train_size:
        words += f" --train-size {args.train_size}"
    if args.tune and words:
        raise ConfigError(f"reproduce baselines --tune: tunes the single-teacher table only; drop{words}")
    return words, options


def _baselines_study(args: argparse.Namespace, out: Path) -> str:
    from ..studies.baselines_study import run_study

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    command = (
        f"mmdistill reproduce baselines --dataset {' '.join(args.dataset)} --seeds {args.seeds}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + (f" --data {args.data}" if args.data else "")
        + (" --accelerator gpu" if args.accelerator == "gpu" else "")
        + f" --out {args.out}"
    )
    if args.data and "avmnist" not in args.dataset:
        raise ConfigError("reproduce baselines --data: only read for --dataset avmnist; the others are bundled")
    if args.train_size and "avmnist" not in args.dataset:
        raise ConfigError("reproduce baselines --train-size: only read for --dataset avmnist; the others use every row")
    words, options = _baselines_options(args)
    command = command.replace(" --out", f"{words} --out")
    if args.tune:
        from ..studies.baselines_tuned import run_tuned

        tuned = command.replace(" --out", f" --tune --workers {args.workers} --out")
        return run_tuned(args.dataset, args.seeds, out, tuned, args.epochs, args.workers)
    return run_study(
        args.dataset, seeds, out, command, args.epochs, data_dir=args.data, accelerator=args.accelerator, **options
    )


TARGETS: dict[str, Target] = {
    "mfh-gamma": Target(
        "MFH paper Fig. 2: KD gain against gamma (synthetic Gaussian data)", _mfh_study, _mfh_arguments
    ),
    "mfh-alpha": Target(
        "MFH paper Fig. 3: better teacher via a-specific features, no student gain", _mfh_study, _mfh_arguments
    ),
    "mfh-plane": Target(
        "beyond MFH: KD gain over the whole (gamma, alpha) Venn plane, heatmap + CSV", _mfh_study, _plane_arguments
    ),
    "msd": Target(
        "MSD paper: MSD (4 weightings) vs KD vs no-KD, large -> small multimodal student",
        _msd_study,
        _msd_arguments,
        TRAINED,
    ),
    "baselines": Target(
        "every distillation method on one teacher/student pair, same budget, T tuned on validation",
        _baselines_study,
        _baselines_arguments,
        {**TRAINED, "sweep-*": RunOf("sweep"), "tune-*.yaml": None},  # --tune: a sweep (and its file) per dataset
    ),
}

from .crossmodal_targets import targets as _crossmodal_targets  # noqa: E402  (MFH Algorithm 1 targets)

TARGETS.update(_crossmodal_targets(Target))
from .avmnist_targets import targets as _avmnist_targets  # noqa: E402  (MFH Table 1 on AV-MNIST)

TARGETS.update(_avmnist_targets(Target))
for _target in TARGETS.values():
    register_layout("reproduce", _target.outputs)


# ---- targets of other packages ------------------------------------------------------------------

ENTRY_POINT_GROUP = "mmdistill.studies"


def register_target(name: str, target: Target) -> None:
    """Add ``target`` as ``mmdistill reproduce NAME`` (its output layout declared to the run-folder code)."""
    if not isinstance(target, Target):
        raise ConfigError(
            f"{ENTRY_POINT_GROUP}: {name!r} must be a mmdistill.commands.reproduce.Target, got {type(target).__name__}"
        )
    if name in TARGETS:
        raise ConfigError(f"{ENTRY_POINT_GROUP}: a target {name!r} already exists; give the entry point another name")
    TARGETS[name] = target
    register_layout("reproduce", target.outputs)


def plugin_targets() -> dict[str, Target]:
    """The targets other packages declare under the ``mmdistill.studies`` entry point group (loaded, not yet added).

    A plugin that fails to import is a ConfigError naming the entry point, not a traceback."""
    from importlib.metadata import entry_points

    found = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in TARGETS or point.name in found:
            continue
        try:
            loaded = point.load()
            target = loaded if isinstance(loaded, Target) or not callable(loaded) else loaded()
        except Exception as err:  # noqa: BLE001  a plugin's import may raise anything: one line naming it
            raise failed(err, f"{ENTRY_POINT_GROUP}: entry point {point.name} = {point.value!r} raised") from kept(err)
        found[point.name] = target
    return found


class _TargetChoices(dict):
    """The ``TARGET`` sub-parsers by name; a name it does not hold first loads the targets other packages declare.

    Loading entry points scans every installed distribution (about 0.1 s), so a built-in target never pays it. A
    plugin that fails to load is argparse's usage error naming the entry point (exit 2)."""

    def __init__(self, action: argparse._SubParsersAction) -> None:
        super().__init__(action.choices)
        self.action = action
        self.loaded = False

    def __contains__(self, name: object) -> bool:
        if not super().__contains__(name) and isinstance(name, str) and not self.loaded:
            self.loaded = True
            try:
                for plugin_name, target in plugin_targets().items():
                    register_target(plugin_name, target)
                    _add_target(self.action, plugin_name, target)
            except ConfigError as err:
                raise argparse.ArgumentError(self.action, str(err)) from None
        return super().__contains__(name)


# ---- the command ---------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="re-run a paper experiment; writes results.csv, summary.md, a figure"
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name, target in TARGETS.items():
        _add_target(targets, name, target)
    targets.choices = targets._name_parser_map = _TargetChoices(targets)


def _add_target(targets: argparse._SubParsersAction, name: str, target: Target) -> None:
    sub = targets.add_parser(name, help=target.help, description=target.help)
    sub.add_argument("--seeds", type=seeds_count, default=10, help="number of seeds (default 10)")
    sub.add_argument("--first-seed", type=seed_int, default=0, help="seeds run from here (default 0)")
    sub.add_argument("--out", required=True, help="output folder")
    sub.add_argument("--overwrite", action="store_true", help="replace the outputs of a finished run in --out")
    sub.add_argument(
        "--threads",
        type=threads,
        default=1,
        help="torch intra-op threads (default 1: the models are tiny, threads only add overhead)",
    )
    if target.add_arguments is not None:
        target.add_arguments(sub)
    sub.set_defaults(func=run_target)


def run_target(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be a positive integer, got {args.seeds}")
    if args.threads < 1:
        raise ConfigError(f"--threads: must be a positive integer, got {args.threads}")
    from ..engine.system.runfolder import owned

    if args.first_seed + args.seeds > 2**32:
        raise ConfigError(f"--first-seed {args.first_seed} --seeds {args.seeds}: seeds must stay below 2**32")
    import torch

    torch.set_num_threads(args.threads)
    from ..studies.progress import listening
    from .progress import part_lines

    with (
        owned(args.out, "reproduce", "results.csv", args.overwrite, info={"target": args.target}) as folder,
        listening(part_lines(f"reproduce {args.target}")),  # one stderr line per seed of a long study
    ):
        summary = TARGETS[args.target].run(args, folder.path)
    print(summary)
    return 0
