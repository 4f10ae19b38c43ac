"""What training writes into a run folder, declared to the run-folder code (:func:`.runfolder.register_layout`).

A model folder (``seed_N/teacher`` of a ``train`` run, a study's ``runs/.../seed_N/NAME``) holds what
:func:`.api.distill` and the trainer write: checkpoints, the metrics log, TensorBoard events, the weights used for
test and ``result.json``. A ``train`` folder (:mod:`.protocol`) holds its resolved ``config.yaml`` (written before any
work), one model folder per seed and model, and the summary over seeds; an interrupted one continues with ``--resume``.
A ``distill(out_dir=...)`` folder of its own is one model folder, with the config and teacher weights that let the
commands read it (:mod:`.run_record`).
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
DISTILL_OUTPUTS: Layout = {**MODEL_OUTPUTS, "config.yaml": None, "teacher.safetensors": None}  # run_record.py
register_layout("train", TRAIN_OUTPUTS, resumable=True, finished="metrics.json")
register_layout("distill", DISTILL_OUTPUTS, resumable=True, finished="result.json")
