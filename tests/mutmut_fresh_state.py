"""A pytest plugin for mutation runs only (``-p tests.mutmut_fresh_state`` in pyproject.toml's ``[tool.mutmut]``).

mutmut runs each mutant in a process forked from the one that ran the clean tests, so whatever that process left
behind is inherited: the evaluation's reused metric collections (``engine.metrics._reusable``), built by the
unmutated task code, so that a mutant of a task's ``metrics()`` would never run; and the teacher-cache folder
(tests/conftest.py sets ``MMDISTILL_CACHE`` once), holding tables the unmutated teacher code wrote, which a mutant
of it would read. Each test starts without the metric collections and each mutant's run with an empty cache folder,
as in a fresh ``pytest`` process.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_teacher_cache_folder(tmp_path_factory):
    os.environ["MMDISTILL_CACHE"] = str(tmp_path_factory.mktemp("mmdistill-cache"))


@pytest.fixture(autouse=True)
def _no_inherited_metric_collections():
    from mmdistill.engine.metrics import _reusable

    _reusable.cache_clear()
