"""Datasets: the in-memory dataset and split types, and the registered builders."""

from __future__ import annotations

import inspect

import pydantic

from ..errors import ConfigError
from ..registry import DATASETS
from . import synthetic  # noqa: F401  (registers its builders)
from . import av_digits, loaders, mfeat  # noqa: F401  (register the real datasets and users' loaders)
from ..mfh import venn  # noqa: F401  (registers the "venn" dataset)
from .dataset import DataSplits, MultimodalDataset, splits_from_arrays, stratified_split

__all__ = ["DataSplits", "MultimodalDataset", "build_splits", "splits_from_arrays", "stratified_split"]


def build_splits(name: str, params: dict | None = None, seed: int = 0) -> DataSplits:
    """Build the registered dataset ``name`` with ``params``; unknown parameters are a ConfigError."""
    builder = DATASETS.get(name)
    params = dict(params or {})
    accepted = [p for p in inspect.signature(builder).parameters if p != "seed"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"data.params.{unknown[0]}: unknown parameter of dataset {name!r}; valid: {', '.join(accepted)}")
    try:  # the builder's annotations are the parameters' types: check them before the builder runs
        checked = pydantic.validate_call(builder, validate_return=False)
        return checked(seed=seed, **params)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"][-1:])
        raise ConfigError(f"data.params.{key}: {first['msg']} (got {first.get('input')!r}) for dataset {name!r}") from None
