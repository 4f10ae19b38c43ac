"""The data section of a run whose datasets were handed to ``distill()`` as Python objects.

Datasets passed as ``train=``, ``val=``, ``test=`` (or splits that mmdistill did not build) cannot be built again
from a config. A ``distill()`` folder records :data:`SOURCE` as its ``data.dataset`` instead of guessing: the
commands that read the folder (``evaluate``, ``analyze``, ``advise``, ``report``) then ask for the data's source,
``--data pkg.mod:factory`` (a function returning the train/val/test datasets, as ``data.dataset`` in YAML), and
loading that config's data anywhere else says the same.
"""

from __future__ import annotations

from ...errors import ConfigError

SOURCE = "mmdistill.data.contracts.python_data:given_in_python"
WHAT_TO_PASS = (
    "pass --data pkg.mod:factory, a function returning the same train/val/test datasets "
    "(as data.dataset in YAML; docs/tutorial_own_dataset.md)"
)


def given_in_python(**params):
    """Stands for data given to ``distill()`` in Python: refuses to build them, saying what to give instead."""
    raise ConfigError(
        "data.dataset: this run's datasets were given to distill() in Python (train=, val=, test=), so mmdistill "
        f"cannot build them again; {WHAT_TO_PASS}"
    )
