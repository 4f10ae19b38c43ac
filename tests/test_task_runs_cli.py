"""End to end from the CLI on data the tests make, small enough for the default suite:

* RGB+depth teacher -> RGB student segmentation KD on procedural RGB-D scenes, with the shipped config
  (configs/rgbd_scenes_seg.yaml, shrunk by overrides): teacher, no-KD and KD students scored by mIoU;
* text+image teacher -> text student multi-label KD on a file in MultiBench's MM-IMDB layout.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from conftest import cli, cli_env
from test_data_mmimdb import write_mmimdb

SEG_CONFIG = Path(__file__).resolve().parents[1] / "src" / "mmdistill" / "configs" / "rgbd_scenes_seg.yaml"
PARTS = ("teacher", "nokd", "student")


def train(*args: str, cwd: Path) -> dict:
    proc = subprocess.run(
        cli("train", *args), env=cli_env(), cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(args[args.index("--out") + 1])
    return json.loads((cwd / out / "metrics.json").read_text())


SEG_SMALL = [  # the shipped segmentation config shrunk for the suite
    "data.params.n_scenes=24",
    "data.params.size=16",
    "trainer.epochs=2",
    "trainer.batch_size=8",
    "teacher.model.params.widths=[8,16]",
    "student.model.params.widths=[8,16]",
]


def test_rgbd_segmentation_kd_from_the_cli_scores_teacher_nokd_and_kd_by_miou(tmp_path):
    metrics = train(str(SEG_CONFIG), *SEG_SMALL, "--seeds", "1", "--out", "runs/seg", cwd=tmp_path)
    run = metrics["runs"][0]
    for part in PARTS:
        for key in ("miou", "pixel_accuracy"):
            assert 0.0 <= run[part][key] <= 100.0, (part, key, run[part])  # percent
    assert "student-nokd.miou" in metrics["paired"]
    config = (tmp_path / "runs" / "seg" / "config.yaml").read_text()
    assert "name: segmentation" in config and "rgbd-scenes" in config
    # the teacher read depth and the students did not: their saved weights say which encoders they have
    from mmdistill.engine.system.checkpoint import load_tensors

    seed = tmp_path / "runs" / "seg" / "seed_0"
    teacher, _ = load_tensors(seed / "teacher" / "student.safetensors")
    assert any(k.startswith("encoders.depth.") for k in teacher)
    for part in ("student", "nokd"):
        student, _ = load_tensors(seed / part / "student.safetensors")
        assert not any("depth" in k for k in student) and any(k.startswith("encoders.rgb.") for k in student)


MULTILABEL_YAML = """\
seed: 0
data: {{name: mm-imdb, params: {{root: {root}, boundaries: [48, 64, 80]}}}}
task: multilabel
teacher:
  model: {{modalities: [text, image], encoder: {{type: mlp, hidden: [32], out_dim: 16}}}}
student:
  model: {{modalities: [text], encoder: {{type: mlp, hidden: [32], out_dim: 16}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 3, batch_size: 16, num_threads: 1}}
"""


def test_multilabel_kd_on_an_mmimdb_layout_file_from_the_cli(tmp_path):
    n = 80
    rng = np.random.default_rng(1)
    genres = (rng.random((n, 23)) < 0.25).astype(np.int64)
    genres[:, 0] = 1
    text = (genres[:, :12] @ rng.normal(size=(12, 300)) + 0.5 * rng.normal(size=(n, 300))).astype(np.float32)
    image = (genres[:, 12:] @ rng.normal(size=(11, 4096)) + 0.5 * rng.normal(size=(n, 4096))).astype(np.float32)
    path = tmp_path / "multimodal_imdb.hdf5"  # the published keys: features, vgg_features, images, genres
    write_mmimdb(path, n, features=text, vgg_features=image, genres=genres)
    (tmp_path / "imdb.yaml").write_text(MULTILABEL_YAML.format(root=path))
    metrics = train("imdb.yaml", "--seeds", "1", "--out", "runs/imdb", cwd=tmp_path)
    run = metrics["runs"][0]
    for part in PARTS:
        for key in ("f1_micro", "f1_macro", "map"):
            assert 0.0 <= run[part][key] <= 100.0, (part, key, run[part])  # percent
    assert "student-nokd.f1_micro" in metrics["paired"]


def test_a_multilabel_file_trained_as_classification_is_refused_naming_both_tasks(tmp_path):
    path = tmp_path / "multimodal_imdb.hdf5"
    write_mmimdb(path, 40)
    text = MULTILABEL_YAML.format(root=path).replace("[48, 64, 80]", "[24, 32, 40]")
    (tmp_path / "imdb.yaml").write_text(text.replace("task: multilabel", "task: classification"))
    proc = subprocess.run(
        cli("train", "imdb.yaml", "--out", "runs/x"),
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    message = "the run's task is 'classification' but split 'train' holds 'multilabel' targets"
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "runs" / "x").exists()
