"""Tutorial: your own data in the generic folder format, then crossmodal KD on it.

Run:  python examples/tutorial_own_data.py

Export each modality of each split to ``<root>/<split>/<modality>.npy`` (example axis
first) with ``<root>/<split>/labels.npy`` beside them; ``val/`` may be left out (a seeded,
stratified part of train is used). Then the dataset is ``folder`` with ``root`` set — from
Python as below, or in a YAML config as ``data: {name: folder, params: {root: ...}}``.
Files are memory-mapped and never unpickled. See docs/datasets.md for unpaired data and the
optional ``meta.json``.
"""

import os
from pathlib import Path

import numpy as np
import torch

from mmdistill.config import TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill
from mmdistill.models import ModelConfig, build_model

OUT = Path(os.environ.get("MMDISTILL_TUTORIAL_OUT", "runs/tutorial-own-data"))


def export_example_arrays(root: Path) -> None:
    """Stand-in for your own export: two sensor views of 3 classes, 'accel' informative, 'gyro' weak."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 600), ("test", 300)):
        y = rng.integers(0, 3, n)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "accel.npy", (rng.normal(size=(n, 12)) + y[:, None]).astype(np.float32))
        np.save(root / split / "gyro.npy", (rng.normal(size=(n, 6)) * 3 + y[:, None]).astype(np.float32))
        np.save(root / split / "labels.npy", y)


def main() -> None:
    torch.set_num_threads(1)
    export_example_arrays(OUT / "data")
    data = build_splits("folder", {"root": str(OUT / "data")})
    print(data.describe())
    specs, n = data.train.specs(), data.num_classes
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["accel", "gyro"]), specs, n)  # sees both sensors
    student = build_model(ModelConfig(modalities=["gyro"]), specs, n)  # deployed with the gyroscope only
    trainer = TrainerConfig(epochs=10, batch_size=64)
    distill(teacher, None, data, OUT / "teacher", "supervised", trainer=trainer)
    r = distill(student, teacher, data, OUT / "student", "kd", {"temperature": 2.0, "lam": 0.5}, trainer=trainer)
    print(f"gyro-only student distilled from an accel+gyro teacher: test accuracy {r.test['accuracy']:.2f}%")


if __name__ == "__main__":
    main()
