"""Checks made before a run claims a folder or trains: is a ``--resume`` compatible, is the teacher cache usable.

Resuming with a different configuration would mix settings inside one run (a teacher trained for
40 epochs, a student for 12; a changed ``data.split_seed`` even leaks test examples into training)
and leave a ``config.yaml`` that misdescribes the folder. So ``--resume`` compares the new resolved
configuration with the saved one and refuses any change, listing the dotted keys (old -> new),
except the keys in :data:`RESUME_MAY_CHANGE`, which cannot change a result:

* ``cache.dir``: where the teacher-output cache lives; entries are keyed by teacher weights,
  data, request and masking, so another folder gives the same outputs (rebuilt or read);
* ``trainer.ddp_timeout_s`` / ``teacher.trainer.ddp_timeout_s``: only how long a stuck collective waits;
* ``trainer.checkpoint_every`` / ``teacher.trainer.checkpoint_every``: only how often a resumable checkpoint is
  written (a resume from any of them is bitwise);
* the DataLoader options ``num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``,
  ``worker_timeout_s`` (of ``trainer`` and ``teacher.trainer``): each batch's random draws are seeded by (seed,
  epoch, batch), so the number of workers cannot change a result.

Keys a newer mmdistill added (absent from an older run's ``config.yaml``) compare at their defaults.

Not allowed, though they look harmless: ``trainer.num_threads`` (the number of threads changes the
order of floating-point sums, so a resumed run would no longer be bitwise equal to an uninterrupted
one) and ``cache.enabled`` (cached outputs equal fresh ones only to rounding). The saved
``config.yaml`` is never rewritten on resume.

Seeds: a resume may add seeds (``--seeds 5`` on a run of 3 trains seeds 3 and 4, also on a finished
run, whose ``metrics.json`` is then replaced by the larger one), never drop one the run has started.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .. import strict_yaml
from ..config import CacheConfig, RunConfig
from ..data.contracts.split import Split
from ..errors import ConfigError, MachineError, OutputExistsError
from ..usercode import call

_LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "worker_timeout_s")
_CACHE_FILE = re.compile(r"[0-9a-f]{32}\.safetensors")  # a teacher-cache file: its key, then .safetensors
RESUME_MAY_CHANGE = (
    "cache.dir",
    "trainer.ddp_timeout_s",
    "teacher.trainer.ddp_timeout_s",
    "trainer.checkpoint_every",
    "teacher.trainer.checkpoint_every",
    *(f"{s}.{k}" for s in ("trainer", "teacher.trainer") for k in _LOADER_KEYS),
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping stays a value."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every key that differs; a missing key shows as ``<absent>``."""
    old_flat, new_flat = flatten(saved), flatten(new)
    absent = "<absent>"
    return [
        (k, old_flat.get(k, absent), new_flat.get(k, absent))
        for k in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(k, absent) != new_flat.get(k, absent)
    ]


def check_resume(cfg: RunConfig, out: Path, seeds: list[int], marker: dict | None) -> None:
    """Refuse a ``--resume`` whose configuration or seeds would mix results inside ``out``."""
    saved_path = out / "config.yaml"
    if saved_path.is_file():
        try:
            saved = strict_yaml.load(saved_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"--resume: {saved_path} is not readable YAML ({str(err).splitlines()[0]}); "
                f"it was not written by mmdistill or was damaged"
            ) from None
        new = json.loads(json.dumps(cfg.model_dump(mode="json")))
        saved = saved if isinstance(saved, dict) else {}
        # the saved config with today's defaults filled in (a key added since it was written is not a change); one
        # not valid today is compared as written (the diff names what differs)
        with contextlib.suppress(Exception):
            saved = json.loads(json.dumps(RunConfig.model_validate(saved).model_dump(mode="json")))
        changes = [c for c in config_changes(saved, new) if c[0] not in RESUME_MAY_CHANGE]
        if changes:
            shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:10])
            more = f" (and {len(changes) - 10} more)" if len(changes) > 10 else ""
            raise ConfigError(
                f"--resume: the config differs from the run's {saved_path}: {shown}{more}. A resumed run "
                f"must keep its settings (only {', '.join(RESUME_MAY_CHANGE)} may change); start a new "
                f"run with another --out, or pass --overwrite instead of --resume to replace this one"
            )
    started = set((marker or {}).get("seeds") or [])
    started |= {int(p.name[5:]) for p in out.glob("seed_*") if p.name[5:].isdigit()}
    dropped = sorted(started - set(seeds))
    if dropped:
        raise ConfigError(
            f"--seeds: the run in {out} has started seed(s) {dropped}; resume with --seeds covering them "
            f"(seeds 0..N-1 with N > {max(dropped)}); adding seeds is allowed, dropping them is not"
        )
    finished = out / "metrics.json"
    if finished.is_file():
        try:
            done = set(json.loads(finished.read_text()).get("seeds", []))
        except (OSError, ValueError, AttributeError):
            done = set()
        if set(seeds) <= done:
            raise OutputExistsError(
                f"{out} already holds a finished run (metrics.json) with seeds {sorted(done)}; "
                f"pass --overwrite to replace it, or --resume with more --seeds to add seeds"
            )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_cache_dir(path: Path) -> None:
    """``cache.dir`` must be a folder (or creatable as one) where this process can write, without anything that is
    not a cache file under a cache file's name (``KEY.safetensors``, which a write would have to replace); nothing
    is left behind."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"cache.dir: {probe} is a file, not a folder; set cache.dir to a folder (or cache.enabled=false)"
        )
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".mmdistill-probe-"):
            pass
    except OSError as err:
        raise MachineError(
            f"cache.dir: cannot write in {probe} ({err.strerror}); make it writable, set cache.dir to "
            f"a writable folder, or set cache.enabled=false"
        ) from None
    in_the_way = [e for e in (path.iterdir() if path.is_dir() else ()) if _CACHE_FILE.fullmatch(e.name)]
    in_the_way = [e for e in in_the_way if e.is_symlink() or not e.is_file()]
    if in_the_way:
        raise ConfigError(
            f"cache.dir: {in_the_way[0]} is not a teacher-cache file but has a cache file's name (KEY.safetensors), "
            "and mmdistill never replaces what it did not write: move it away, or set cache.dir to another folder"
        )


def check_cache_settings(cache: CacheConfig, train: Split) -> None:
    """Before any training, what the teacher cache of ``train`` (a training split) will need, when it is used (on,
    and the data neither random nor without a fingerprint): a usable ``cache.dir`` (:func:`check_cache_dir`), a
    valid ``MMDISTILL_CACHE_MEMORY_MB``, and a ``fingerprint()`` that gives a string (the cache's key for the data)."""
    from .teacher import cached_views, default_cache_dir, memory_budget_bytes

    if not cache.enabled or not (train.cacheable or cached_views(cache.augmentations, train) > 1):
        return  # a random split is cacheable only as seeded augmentations (cache.augmentations)

    memory_budget_bytes()
    check_cache_dir(Path(cache.dir) if cache.dir else default_cache_dir())
    source = getattr(train, "dataset", None)  # the user's dataset an item split wraps
    own = getattr(source, "fingerprint", None)
    if not callable(own):  # column data: mmdistill's own hash of the values
        return
    value = call(own, "data", f"{type(source).__name__}.fingerprint()")
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"data: the training dataset's fingerprint() returned {_short(value)}, not a string; it must return a "
            "string that changes when the data change (the teacher cache's key for them). Fix it, or remove "
            "fingerprint() (the teacher then runs online) or set cache.enabled=false"
        )


def check_eval_rows(data: Any) -> None:
    """Read the validation and test examples once before any training (``Split.check_rows``: item data read every
    item, once per split object; column data were checked when they were built), so that an item that cannot be
    read or holds NaN/Inf (the collate names it) is refused before a model trains, not after."""
    for split in (data.val, data.test):
        split.check_rows()
