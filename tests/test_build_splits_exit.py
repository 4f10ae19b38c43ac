"""A registered dataset builder (a user's plugin) that calls ``sys.exit`` is one of mmdistill's errors from Python."""

from __future__ import annotations

import sys

import pytest

from mmdistill.data import build_splits
from mmdistill.errors import ConfigError
from mmdistill.registry import DATASETS


@pytest.mark.parametrize("code", [0, 3])
def test_a_builder_calling_sys_exit_is_a_config_error_naming_the_dataset(code):
    name = f"exits-{code}"

    @DATASETS.register(name)
    def exits(seed: int = 0):
        sys.exit(code)

    try:
        with pytest.raises(ConfigError, match=rf"data.name: dataset builder '{name}' raised SystemExit"):
            build_splits(name)
    finally:
        DATASETS._entries.pop(name, None)
