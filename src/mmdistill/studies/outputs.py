"""What a study writes into its folder, in the terms of :func:`mmdistill.engine.system.runfolder.register_layout`.

Every study writes its tables, summary and figures at the top of its folder (:data:`TABLES`); a study that trains
models with ``distill()`` adds one model folder per configuration, seed and model under ``runs/``, with files of its
own beside them, and its teacher cache (:data:`TRAINED`). A target or demo step declares its study's layout from these
(``reproduce``'s ``Target.outputs``, ``demo``'s steps); this module imports nothing heavy, so the CLI can read it at
start-up.
"""

from __future__ import annotations

from ..engine.system.run_outputs import MODEL_OUTPUTS
from ..engine.system.runfolder import ALL, Layout

TABLES: Layout = {"results.csv": None, "summary.md": None, "*.csv": None, "*.md": None, "*.png": None}
TRAINED: Layout = {
    **TABLES,
    "runs": {"*": {"seed_*": {"*.csv": None, "*": MODEL_OUTPUTS}}},
    "cache": ALL,
}
