"""Datasets: the in-memory dataset and split types, and the registered builders."""

from __future__ import annotations

import contextlib
import inspect
import math
import types
import typing
from pathlib import Path

import pydantic

from ..errors import ConfigError
from ..registry import DATASETS
from ..schema import SEED_MAX, checked_int, checked_mapping
from ..strict_yaml import cut, short
from ..usercode import failed, kept
from .contracts.dataset import DataSplits, MultimodalDataset, splits_from_arrays, stratified_split
from .contracts.item_dataset import ItemDataset, ItemSplits
from .contracts.split import Split, Splits
from .formats import av_digits, file_registry, loaders, mfeat  # noqa: F401  (register the real datasets and users' loaders)
from .generated import synthetic, venn  # noqa: F401  (register the real datasets and users' loaders)

__all__ = [
    "DataSplits",
    "ItemDataset",
    "ItemSplits",
    "MultimodalDataset",
    "Split",
    "Splits",
    "build_splits",
    "splits_from_arrays",
    "stratified_split",
]


def _record_origin(splits, data_config: dict) -> None:
    """Note on ``splits`` the data config that builds them again (what ``distill()`` writes into its config.yaml);
    splits that take no attribute (a NamedTuple) stay unnoted, and such a distill() folder says it cannot be
    rebuilt."""
    with contextlib.suppress(AttributeError):
        splits.mmdistill_data = data_config


def build_splits(name: str, params: dict | None = None, seed: int = 0) -> Splits:
    """Build the registered dataset ``name`` with ``params``; an unknown or mistyped parameter is a ConfigError.

    Column datasets give splits of :class:`MultimodalDataset`; the file-backed ones (:mod:`.file_registry`) of
    :class:`ItemDataset`."""
    builder = DATASETS.get(name)
    params = checked_mapping(params, "data.params")
    seed = checked_int(seed, "data.split_seed", ge=0, le=SEED_MAX)
    accepted = [p for p in inspect.signature(builder).parameters if p != "seed"]
    unknown = sorted(set(params) - set(accepted), key=str)
    if unknown:
        raise ConfigError(
            f"data.params.{cut(str(unknown[0]), 80)}: unknown parameter of dataset {name!r}; valid: "
            f"{', '.join(accepted)}"
        )
    hints = typing.get_type_hints(builder, include_extras=True)
    for key, value in params.items():
        _check_scalar(name, key, value, hints.get(key))
    try:  # the builder's annotations are the parameters' types and ranges: check them before the builder runs
        checked = pydantic.validate_call(validate_return=False)(builder)
        splits = checked(seed=seed, **params)
        _record_origin(splits, {"name": name, "params": params, "split_seed": seed})
        return splits
    except ConfigError as err:  # a builder's own check, e.g. "venn.s0: ...": name the config key
        text = str(err)
        if text.startswith(f"{name}."):
            raise ConfigError(f"data.params.{text[len(name) + 1 :]}") from None
        raise
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"data.params.{key}: {first['msg']} (got {short(first.get('input'))}) for dataset {name!r}"
        ) from None
    except SystemExit as err:  # a plugin's builder calling sys.exit() must not end the user's program silently
        raise failed(
            err,
            f"data.name: dataset builder {name!r} raised",
            advice="a builder returns its splits and must not call sys.exit",
        ) from kept(err)


def _kinds(annotation) -> set[type]:
    """The plain types an annotation admits (Optional/Union/Annotated unwrapped; containers as their origin)."""
    if annotation is None:
        return {object}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation)))
    if origin is not None:
        return {origin}
    return {annotation} if isinstance(annotation, type) else {object}


def _check_scalar(dataset: str, key: str, value, annotation) -> None:
    """No bool where a number is meant, no numeric string, no NaN/Inf (pydantic's lax mode would take them)."""
    kinds = _kinds(annotation)
    if object in kinds:
        return
    numeric = kinds & {int, float}
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(
            f"data.params.{key}: expected {'a number' if numeric else 'no boolean'}, got {value!r} "
            f"for dataset {dataset!r}"
        )
    if isinstance(value, str) and numeric and not kinds & {str, Path}:
        raise ConfigError(
            f"data.params.{key}: expected a number, got the string {short(value)} for dataset {dataset!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"data.params.{key}: expected a finite number, got {value!r} for dataset {dataset!r}")
