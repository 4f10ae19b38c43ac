"""``mmdistill advise``: will distilling a teacher on one modality into a student on another help?

    mmdistill advise --dataset mfeat --teacher pix --student zer
    mmdistill advise --dataset venn --param s0=10 --param sa=5 --param sb=5 --json
    mmdistill advise --config run.yaml          (the teacher's and the student's modalities from a train config)

Estimates gamma (the share of decisive information both modalities hold), the CCH criterion
I(T;S) > I(S;Y) and a rough KD gain, with bootstrap intervals, from the training split alone;
no student is trained. From Python: ``mmdistill.mfh.advisor.advise(x_teacher, x_student, y)``.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError


def _modalities_from_config(path: str) -> tuple[str, dict, int, list[str], list[str]]:
    from ..config import load_config

    cfg = load_config(path)
    return cfg.data.name, dict(cfg.data.params), cfg.data.split_seed, list(cfg.teacher.model.modalities), list(cfg.student.model.modalities)


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..mfh.advisor import advise
    from ..mfh.pairs import load_pairs
    from .data import _params

    torch.set_num_threads(args.threads)
    if args.config:
        dataset, params, seed, t_mods, s_mods = _modalities_from_config(args.config)
        if len(t_mods) != 1 or len(s_mods) != 1:
            raise ConfigError(f"advise --config: needs one teacher and one student modality, got {t_mods} and {s_mods}")
        teacher, student = t_mods[0], s_mods[0]
    else:
        if not args.dataset:
            raise ConfigError("advise: give --dataset (with --teacher/--student) or --config")
        dataset, params, seed, teacher, student = args.dataset, _params(args.param), args.seed, args.teacher, args.student
    pairs = load_pairs(dataset, params, teacher, student, seed=seed)
    advice = advise(pairs.train.xa, pairs.train.xb, pairs.train.y, num_classes=pairs.num_classes, seed=seed,
                    bootstrap=args.bootstrap)
    if args.json:
        print(json.dumps({"dataset": dataset, "teacher": pairs.teacher, "student": pairs.student, **advice.to_dict()}))
    else:
        print(f"{dataset}: teacher {pairs.teacher} -> student {pairs.student}: {advice.text()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("advise", help="estimate whether crossmodal KD will help, before distilling",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a train config: dataset, teacher and student modalities from it")
    p.add_argument("--dataset", help="registered dataset (venn, mfeat, av-digits, ...)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="dataset parameter (repeatable, YAML value)")
    p.add_argument("--teacher", help="teacher modality (default: venn a, mfeat pix, av-digits image)")
    p.add_argument("--student", help="student modality (default: venn b, mfeat zer, av-digits audio)")
    p.add_argument("--seed", type=int, default=0, help="split and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples for the intervals (default 50)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)
