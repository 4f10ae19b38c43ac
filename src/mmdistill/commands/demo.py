"""``mmdistill demo --out DIR``: the main job on bundled data, with a report.

Steps (each writes a folder under DIR; ``DIR/report.html`` gathers them):

1. ``kd-miniature``: crossmodal KD in miniature — a teacher on a+b, a student on b, with and
   without KD, 3 seeds (the ``toy-two-modality`` task; :mod:`mmdistill.engine.api`);
2. ``mfh-gamma``: the modality focusing hypothesis in one figure — KD gain against gamma on
   the paper's synthetic protocol, 10 seeds (:mod:`mmdistill.studies.mfh_synthetic`);
3. ``advise``: will crossmodal KD help? The advisor's prediction on several mfeat view pairs and
   the AV-Digits pair, next to the measured KD gain (:mod:`mmdistill.studies.demo_advice`);
4. ``mfh-removal``: the feature-removal experiment on one mfeat pair (:mod:`mmdistill.studies.mfh_removal`);
5. ``msd``: MSD against KD and no-KD on AV-Digits (image + audio), 3 seeds, with the
   modality-importance figure (:mod:`mmdistill.studies.msd_study`);
6. ``avmnist`` (only with ``--data-root DIR`` holding ``mnist/`` and ``fsdd/recordings/``): the MFH
   paper's Table 1 failure case on AV-MNIST rebuilt from MNIST + FSDD, in miniature (1,000 student
   rows, 2 epochs; :mod:`mmdistill.studies.mfh_table1`). Without ``--data-root`` the demo uses bundled data only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ..engine.system.runfolder import ALL, Layout, RunOf, register_layout
from ..errors import ConfigError
from ..studies.outputs import TABLES, TRAINED
from . import seeds_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo study on bundled data and write DIR/report.html",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--seeds",
        type=seeds_count,
        default=3,
        help="seeds of the trained-model steps (default 3; the MFH sweep uses 10)",
    )
    p.add_argument("--data-root", type=Path, help="folder with mnist/ and fsdd/recordings/: adds the AV-MNIST section")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _kd_miniature(out: Path, seeds: int, quiet: bool) -> dict:
    from ..config import load_config
    from ..engine.protocol import run_config

    cfg = load_config(str(resources.files("mmdistill") / "configs" / "demo.yaml"))
    run_config(cfg, out, list(range(seeds)), quiet=True)
    return {
        "title": "Crossmodal KD in miniature: teacher on a+b, student on b",
        "command": f"mmdistill train src/mmdistill/configs/demo.yaml --seeds {seeds} --out {out.name}",
        "intro": "A teacher that sees both modalities, distilled (Hinton KD, T=4, lam=0.7) into a small student that "
        "sees only the noisier modality b, against the same student trained alone.",
    }


def _mfh_gamma(out: Path, seeds: int, quiet: bool) -> dict:
    from ..studies import mfh_synthetic as studies
    from ..studies.mfh_report import write_study

    command = "mmdistill reproduce mfh-gamma --seeds 10 --out mfh-gamma"
    write_study(studies.vary_gamma(range(10)), out, command)
    return {
        "title": "The modality focusing hypothesis: KD gain against gamma (MFH paper, Fig. 2)",
        "command": command,
        "intro": "Synthetic modality Venn diagram data, the paper's protocol (linear models, 1000 full-batch SGD "
        "epochs). "
        "gamma is the share of decisive information both modalities hold; the hypothesis says the student's "
        "gain from KD grows with gamma, whatever the teacher's own accuracy.",
    }


def _advise(out: Path, seeds: int, quiet: bool) -> dict:
    from ..studies import demo_advice

    command = advise_command(out, seeds)
    demo_advice.write(demo_advice.advice_vs_measured(seeds=range(seeds)), out, command)
    return {
        "title": "Will crossmodal KD help? The advisor before distilling, against the measured gain",
        "command": command,
        "intro": "For each teacher-modality : student-modality pair the advisor estimates, from the data alone, "
        "how much "
        "decisive information the modalities share (gamma) and the CCH criterion, and predicts the KD gain; "
        "then teacher, KD student and no-KD student are trained and the gain measured. This section is made "
        f"by the demo; the advice for one pair alone: `{ADVISE_ONE_PAIR}`.",
    }


ADVISE_ONE_PAIR = "mmdistill advise --dataset mfeat --teacher pix --student zer"


def advise_command(out: Path, seeds: int) -> str:
    """A runnable command that makes the advise section: the demo itself (the section has no command of its own)."""
    return f"mmdistill demo --seeds {seeds} --out {out.parent.name}"


def _removal(out: Path, seeds: int, quiet: bool) -> dict:
    from ..studies.mfh_removal import feature_removal, write_removal

    command = f"mmdistill reproduce mfh-removal --dataset mfeat --pairs pix:zer --seeds {seeds} --out mfh-removal"
    write_removal(feature_removal("mfeat", pairs=["pix:zer"], seeds=range(seeds)), out, command)
    return {
        "title": "Feature removal (MFH): keep the teacher's modality-general, random or modality-specific channels",
        "command": command,
        "intro": "A teacher on mfeat's pixel view, its hidden channels scored by Algorithm 1; keeping a quarter "
        "of them "
        "(top-scored = modality-general, random, bottom-scored = modality-specific) and distilling a student on "
        "the Zernike view from each. The paper expects general > random > specific.",
    }


def _msd(out: Path, seeds: int, quiet: bool) -> dict:
    from ..studies.msd_study import run_study

    command = f"mmdistill reproduce msd --dataset av-digits --seeds {seeds} --out msd"
    run_study(["av-digits"], list(range(seeds)), out, command)
    return {
        "title": "MSD against KD and no-KD on AV-Digits (image + audio)",
        "command": command,
        "intro": "A large image+audio teacher distilled into a small image+audio student: plain KD, and MSD with "
        "each weighting of its modality-only terms. The modality-importance table shows how the teacher "
        "uses each modality and how each student does on each modality alone.",
    }


def _avmnist(out: Path, seeds: int, quiet: bool, data_root: Path) -> dict:
    from ..data import build_splits
    from ..data.builders.avmnist_build import MARKER, build_av_mnist
    from ..studies.mfh_table1 import table1, write_table1

    data = out / "avmnist"
    if not (data / MARKER).is_file():
        build_av_mnist(data_root / "mnist", data_root / "fsdd" / "recordings", data)
    size: dict[str, Any] = {
        "train_size": 1000,
        "teacher_factor": 3,
        "epochs": 2,
        "teacher_epochs": 2,
        "val_size": 300,
        "test_size": 1000,
    }
    command = (
        f"mmdistill reproduce mfh-table1 --data-root {data_root} --seeds {seeds} "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in size.items())
        + " --out avmnist"
    )
    result = table1(build_splits("avmnist", {"root": str(data)}), out, list(range(seeds)), log=lambda *a: None, **size)
    write_table1(result, out, command)
    return {
        "title": "MFH Table 1 on AV-MNIST (MNIST + FSDD): does a better image+audio teacher help an audio student?",
        "command": command,
        "intro": "AV-MNIST rebuilt from MNIST and the Free Spoken Digit Dataset (-6 dB noise on the audio), "
        "MultiBench's "
        "LeNet models. An audio student without KD, distilled from an audio teacher, and distilled from a more "
        "accurate image+audio teacher; the paper finds the second student no better than the first. A miniature "
        "of `mmdistill reproduce mfh-table1` (1,000 student rows, 2 epochs), so accuracies are low.",
    }


STEPS: list[tuple[str, Callable[..., dict], Layout | RunOf]] = [  # (folder, function, what it writes there)
    ("kd-miniature", _kd_miniature, RunOf("train")),
    ("mfh-gamma", _mfh_gamma, TABLES),
    ("advise", _advise, TABLES),
    ("mfh-removal", _removal, TABLES),
    ("msd", _msd, TRAINED),
]
AVMNIST_OUTPUTS = {**TRAINED, "avmnist": ALL}  # with --data-root: the study and the AV-MNIST arrays it builds
register_layout(
    "demo", {"report.json": None, **{name: outputs for name, _, outputs in STEPS}, "avmnist": AVMNIST_OUTPUTS}
)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.system.runfolder import owned

    torch.set_num_threads(1)  # the demo's models are small: one thread per process is fastest on 2 cores
    if args.data_root is not None and not (
        (args.data_root / "mnist").is_dir() and (args.data_root / "fsdd" / "recordings").is_dir()
    ):
        raise ConfigError(f"--data-root {args.data_root}: expected mnist/ and fsdd/recordings/ inside")
    with owned(args.out, "demo", "report.html", args.overwrite, info={"seeds": args.seeds}) as folder:
        html_path = _run_steps(folder.path, args)
    if not args.quiet:
        print(f"\nwrote {html_path}")
    return 0


def _run_steps(out: Path, args: argparse.Namespace) -> Path:
    from ..io import write_text
    from ..studies.demo_report import write_report
    from ..studies.progress import listening
    from .progress import part_lines, steps

    sections = []
    todo = [(name, step) for name, step, _ in STEPS]
    if args.data_root is not None:
        todo.append(("avmnist", lambda out, seeds, quiet: _avmnist(out, seeds, quiet, args.data_root)))
    for name, step in steps(todo, "demo", args.quiet):  # a bar on a terminal, one line per step in a batch job
        with listening(part_lines(f"demo {name}") if not args.quiet else lambda part: None):
            section = step(out / name, args.seeds, args.quiet)
        section["folder"] = name
        sections.append(section)
    write_text(out / "report.json", json.dumps(sections, indent=2))
    html_path, _ = write_report(out, "mmdistill demo")
    return html_path
