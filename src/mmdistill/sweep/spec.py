"""A sweep file, read and checked before anything starts.

    base: my_pair.yaml                    # a run config (`mmdistill train`'s), relative to this file
    methods: [kd, dkd, {name: pkt, params: {student_layer: head.0, teacher_layer: head.0}}]   # fixed params
    space:
      method.params.temperature: [1, 2, 4, 8]                    # a list: values to try
      trainer.optimizer.lr: {low: 0.001, high: 0.1, log: true}   # a range (random, optuna); int: true for integers
      dkd: {method.params.beta: [1, 2, 4, 8]}                    # keys for one method only
    search: {kind: grid, trials: 40, seed: 0}                    # grid | random | optuna; trials per method
    seeds: {tune: 1, final: 5}                                   # counts (tune 0.., final after) or lists
    select: {metric: accuracy, split: val}
    logging: {mlflow: {tracking_uri: 'sqlite:///mlflow.db'}, tensorboard: true}   # both optional

Every key is checked: an unknown one is named with the nearest valid keys; every value of the space is put into the
base config and validated as a run config (so a temperature out of range is refused before any run).
"""

from __future__ import annotations

import copy
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..config import RunConfig, read_config_file, validate
from ..errors import ConfigError
from ..registry import METHODS, import_modules

TOP_KEYS = ("base", "methods", "space", "search", "seeds", "select", "logging")
KINDS = ("grid", "random", "optuna")
NO_KD = "supervised"  # the method that trains the student without distillation
KD = "kd"


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) interval to draw from: uniform, or log-uniform when ``log``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


Values = list | Range


@dataclass
class SweepSpec:
    """A checked sweep file. ``base``: the base run config as a plain mapping (its ``method`` section is replaced per
    method); ``space``: per method, dotted key -> values or range; seeds as lists."""

    base: dict
    methods: list[str]
    space: dict[str, dict[str, Values]]
    kind: str
    trials: int | None
    search_seed: int
    tune_seeds: list[int]
    final_seeds: list[int]
    metric: str
    higher_is_better: bool
    logging: dict = field(default_factory=dict)
    fixed: dict[str, dict] = field(default_factory=dict)  # per method: parameters every run of it gets
    source: dict = field(default_factory=dict)  # the file as read, with the base config resolved (for --resume)

    def grid(self, method: str) -> list[dict[str, Any]]:
        """Every combination of ``method``'s listed values, in the order of the keys (the last key varies fastest)."""
        settings: list[dict[str, Any]] = [{}]
        for key, values in self.space[method].items():
            assert isinstance(values, list)
            settings = [{**s, key: v} for s in settings for v in values]
        return settings

    def config(self, method: str, setting: dict[str, Any]) -> dict:
        """The run config (a mapping) of ``method`` with ``setting`` put into the base config."""
        return configured(self.base, method, setting, self.fixed.get(method))


def configured(base: dict, method: str, setting: dict[str, Any], fixed: dict | None = None) -> dict:
    """``base`` with the method ``method`` (its ``fixed`` parameters, else its defaults) and ``setting``'s keys set."""
    raw = copy.deepcopy(base)
    raw["method"] = {"name": method, "params": copy.deepcopy(fixed or {})}
    for key, value in setting.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return raw


def load_sweep(path: str | Path) -> SweepSpec:
    """The sweep file at ``path``, checked (:class:`~mmdistill.errors.ConfigError` naming the key otherwise)."""
    path = Path(path)
    raw = read_config_file(path)
    _unknown(raw, TOP_KEYS, "")
    for key in ("base", "methods", "space"):
        if key not in raw:
            raise ConfigError(f"sweep file {path}: '{key}' is missing (a sweep names {', '.join(TOP_KEYS[:4])}, ...)")
    base = _base(raw["base"], path.parent)
    methods, fixed = _methods(raw["methods"])
    search = _mapping(raw.get("search", {}), "search")
    _unknown(search, ("kind", "trials", "seed"), "search.")
    kind = search.get("kind", "grid")
    if kind not in KINDS:
        raise ConfigError(f"search.kind: {kind!r} is not a search; use one of {', '.join(KINDS)}")
    trials = _count(search["trials"], "search.trials") if "trials" in search else None
    if kind != "grid" and trials is None:
        raise ConfigError(f"search.trials: kind {kind} needs a number of trials per method (e.g. trials: 20)")
    space = _space(_mapping(raw["space"], "space"), methods, base, kind, fixed)
    tune, final = _seeds(raw.get("seeds", {}))
    metric, higher = _select(raw.get("select", {}), base)
    logging = _mapping(raw.get("logging", {}), "logging")
    _unknown(logging, ("mlflow", "tensorboard"), "logging.")
    if logging.get("mlflow") is not None:
        _unknown(_mapping(logging["mlflow"], "logging.mlflow"), ("tracking_uri", "experiment"), "logging.mlflow.")
    if not isinstance(logging.get("tensorboard", False), bool):
        raise ConfigError(f"logging.tensorboard: true or false, got {logging['tensorboard']!r}")
    spec = SweepSpec(
        base, methods, space, kind, trials, _integer(search.get("seed", 0), "search.seed"), tune, final, metric, higher
    )
    spec.logging, spec.fixed = logging, fixed
    spec.source = {**raw, "base": base}
    return spec


def _mapping(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {str(value)[:60]!r}")
    return value


def _unknown(section: dict, known: typing.Sequence[str], prefix: str) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key{_nearest(str(key), known)}")


def _nearest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(known)[:12])}"


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value


def _count(value: Any, key: str) -> int:
    if _integer(value, key) < 1:
        raise ConfigError(f"{key}: expected at least 1, got {value!r}")
    return value


def _base(value: Any, folder: Path) -> dict:
    """The base run config, validated as ``mmdistill train`` would (plugins imported first), as a plain mapping."""
    if isinstance(value, str):
        raw = read_config_file(folder / value)
        where = f"base ({folder / value})"
    elif isinstance(value, dict):
        raw, where = value, "base"
    else:
        raise ConfigError(f"base: expected a run config file (a path) or a mapping, got {type(value).__name__}")
    import_modules(raw.get("imports") or [])
    try:
        cfg = validate(RunConfig, raw)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg.model_dump(mode="json")


def _methods(value: Any) -> tuple[list[str], dict[str, dict]]:
    """The method names, and the fixed parameters of those given as ``{name: pkt, params: {...}}``."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"methods: expected a non-empty list of method names, got {value!r}")
    names, fixed = [], {}
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            _unknown(entry, ("name", "params"), f"methods[{i}].")
            name, params = entry.get("name"), _mapping(entry.get("params", {}), f"methods[{i}].params")
        else:
            name, params = entry, {}
        if not isinstance(name, str):
            raise ConfigError(f"methods[{i}]: expected a method name or {{name, params}}, got {entry!r}")
        if name not in METHODS:
            raise ConfigError(f"methods: {name!r} is not a method{_nearest(name, METHODS.names())}")
        if name in names:
            raise ConfigError(f"methods: {name!r} is named twice")
        names.append(name)
        if params:
            fixed[name] = params
    return names, fixed


def valid_keys(base: dict, method: str) -> set[str]:
    """Every dotted key a space may vary for ``method``: the run config's fields (optional sections too) and the
    method's own parameters; keys under a free-form ``params`` mapping (data, task, models) are checked by value."""
    from ..engine.run_checks import flatten

    keys = _model_keys(RunConfig, "") | set(flatten(base))
    keys = {k for k in keys if not k.startswith("method.")}
    params = getattr(METHODS.get(method), "Params", None)
    if params is not None:
        keys |= {f"method.params.{name}" for name in params.model_fields}
    return keys


def _model_keys(model: type[BaseModel], prefix: str) -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        sub = next((a for a in [info.annotation, *typing.get_args(info.annotation)] if _is_model(a)), None)
        keys |= _model_keys(sub, f"{prefix}{name}.") if sub is not None else {f"{prefix}{name}"}
    return keys


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _free_form(key: str, base: dict) -> bool:
    """A key inside a ``params`` mapping of the base config (data.params.n, student.model.params.width, ...)."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "params" and parts[0] != "method":
            node: Any = base
            for p in parts[:i]:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict) and isinstance(node.get("params", {}), dict):
                return True
    return False


def _space(raw: dict, methods: list[str], base: dict, kind: str, fixed: dict) -> dict[str, dict[str, Values]]:
    shared = {k: v for k, v in raw.items() if "." in str(k)}
    blocks = {k: v for k, v in raw.items() if "." not in str(k)}
    for name, block in blocks.items():
        if name not in METHODS:
            every = set().union(*(valid_keys(base, m) for m in methods)) | set(methods)
            raise ConfigError(f"space.{name}: unknown key{_nearest(str(name), every)}")
        if name not in methods:
            raise ConfigError(
                f"space.{name}: a block for method {name!r}, which is not in methods {methods}; add it to methods "
                "or remove the block"
            )
        _mapping(block, f"space.{name}")
    space: dict[str, dict[str, Values]] = {}
    for m in methods:
        keys = valid_keys(base, m)
        own = {}
        for key, values in shared.items():
            if key.startswith("method.params.") and key not in keys:
                continue  # a parameter of other methods: this one does not have it
            own[key] = values
        own.update(blocks.get(m, {}))
        space[m] = {
            key: _values(key, values, kind, f"space.{m}." if key in blocks.get(m, {}) else "space.")
            for key, values in own.items()
        }
        for key in space[m]:
            _check_key(key, keys, base, m, f"space.{m}." if key in blocks.get(m, {}) else "space.")
        _check_values(base, m, space[m], fixed.get(m))
    for key in shared:
        if key.startswith("method.params.") and not any(key in space[m] for m in methods):
            every = set().union(*(valid_keys(base, m) for m in methods))
            raise ConfigError(f"space.{key}: no method in {methods} has this parameter{_nearest(key, every)}")
    return space


def _check_key(key: str, keys: set[str], base: dict, method: str, prefix: str) -> None:
    if key in keys or _free_form(key, base):
        return
    raise ConfigError(f"{prefix}{key}: unknown key for method {method!r}{_nearest(key, keys)}")


def _values(key: str, values: Any, kind: str, prefix: str) -> Values:
    where = f"{prefix}{key}"
    if isinstance(values, list):
        if not values:
            raise ConfigError(f"{where}: an empty list; give at least one value")
        return values
    if isinstance(values, dict) and {"low", "high"} <= set(values):
        _unknown(values, ("low", "high", "log", "int"), f"{where}.")
        low, high, log, integer = values["low"], values["high"], values.get("log", False), values.get("int", False)
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}.{name}: expected a finite number, got {v!r}")
        if not isinstance(log, bool) or not isinstance(integer, bool):
            raise ConfigError(f"{where}: log and int are true or false")
        if low > high:
            raise ConfigError(f"{where}: low {low} > high {high}; give low <= high")
        if log and low <= 0:
            raise ConfigError(f"{where}: log: true needs low > 0 (got low {low}); a log scale has no 0 or negatives")
        if kind == "grid":
            raise ConfigError(f"{where}: a range needs search.kind random or optuna; for a grid give a list of values")
        return Range(float(low), float(high), log, integer)
    raise ConfigError(f"{where}: expected a list of values or a range {{low, high, log}}, got {values!r}")


def _check_values(base: dict, method: str, space: dict[str, Values], fixed: dict | None) -> None:
    """The method's defaults (with its fixed parameters), then each value (each end of a range) put into the base
    config and validated, one key at a time."""
    try:
        validate(RunConfig, configured(base, method, {}, fixed))
    except ConfigError as err:
        raise ConfigError(
            f"methods: {method!r} at its defaults is not a valid run config ({err}); give the parameters it needs "
            f"as {{name: {method}, params: {{...}}}}"
        ) from None
    for key, values in space.items():
        tried = [values.low, values.high] if isinstance(values, Range) else values
        for v in tried:
            if isinstance(values, Range) and values.integer:
                v = int(v)
            try:
                validate(RunConfig, configured(base, method, {key: v}, fixed))
            except ConfigError as err:
                raise ConfigError(
                    f"space: {key}={v!r} for method {method!r} is not a valid run config: {err}"
                ) from None


def _seeds(raw: Any) -> tuple[list[int], list[int]]:
    raw = _mapping(raw, "seeds")
    _unknown(raw, ("tune", "final"), "seeds.")
    tune_raw, final_raw = raw.get("tune", 1), raw.get("final", 3)
    tune = _seed_list(tune_raw, "seeds.tune", 0)
    final = _seed_list(final_raw, "seeds.final", len(tune) if isinstance(tune_raw, int) else 0)
    shared = sorted(set(tune) & set(final))
    if shared:
        raise ConfigError(
            f"seeds: seeds {shared} are both tune and final seeds; the final runs need seeds the selection did not "
            "see (a seed whose validation score chose the settings gives an optimistic test score)"
        )
    return tune, final


def _seed_list(value: Any, key: str, start: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(start, start + _count(value, key)))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value) or min(value) < 0:
            raise ConfigError(f"{key}: {value}: seeds are distinct whole numbers >= 0")
        return list(value)
    raise ConfigError(f"{key}: expected a number of seeds or a list of seeds, got {value!r}")


def _select(raw: Any, base: dict) -> tuple[str, bool]:
    from ..tasks import get_task

    raw = _mapping(raw, "select")
    _unknown(raw, ("metric", "split"), "select.")
    split = raw.get("split", "val")
    if split == "test":
        raise ConfigError(
            "select.split: 'test' is refused: settings chosen by the test split make the reported test metric "
            "optimistic (it chose them); the sweep selects on val and reads the test split once, in the final runs"
        )
    if split != "val":
        raise ConfigError(f"select.split: {split!r}; the sweep selects on the validation split (val)")
    task = get_task(RunConfig.model_validate(base).task)
    metric = raw.get("metric", task.default_monitor)
    if metric not in task.monitors:
        raise ConfigError(
            f"select.metric: {metric!r} is not a metric of task {task.name!r}; use one of {', '.join(task.monitors)}"
        )
    return metric, task.higher_is_better(metric)
