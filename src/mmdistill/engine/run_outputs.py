"""What training writes into a run folder, declared to the run-folder code (:func:`.runfolder.register_layout`).

A model folder (``seed_N/teacher`` of a ``train`` run, a study's ``runs/.../seed_N/NAME``) holds what
:func:`.api.distill` and the trainer write: checkpoints, the metrics log, TensorBoard events, the weights used for
test and ``result.json``. A ``train`` folder (:mod:`.protocol`) holds its resolved ``config.yaml`` (written before any
work), one model folder per seed and model, and the summary over seeds; an interrupted one continues with ``--resume``.
"""

from __future__ import annotations

from .runfolder import PREPARED, Layout, register_layout

MODEL_OUTPUTS: Layout = {
    "checkpoints": {"last.safetensors": None, "best.safetensors": None},
    "metrics.csv": None,
    "metrics.csv.*": None,
    "tensorboard": {"events.out.tfevents.*": None},
    "student.safetensors": None,
    "result.json": None,
}
TRAIN_OUTPUTS: Layout = {
    "config.yaml": PREPARED,
    "metrics.json": None,
    "summary.md": None,
    "seed_*": {"teacher": MODEL_OUTPUTS, "student": MODEL_OUTPUTS, "nokd": MODEL_OUTPUTS},
}
register_layout("train", TRAIN_OUTPUTS, resumable=True)
