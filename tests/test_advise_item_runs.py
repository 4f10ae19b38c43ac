"""``advise --run`` on run folders whose data are a torch Dataset of dict items (a ``data.dataset`` factory) and on
``distill()`` folders: a prediction with the representation its probes read, or one line saying what is wrong.

This module is importable by name in the tests (``test_advise_item_runs:splits`` is a ``data.dataset`` factory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from mmdistill.cli import main

RUN_YAML = """\
seed: 0
data: {{dataset: "test_advise_item_runs:splits", params: {{n_train: {n_train}}}}}
teacher: {{model: {{modalities: [narrow, wide], encoder: {{hidden: [16], out_dim: 8}}}}}}
student: {{model: {{modalities: [{student}], encoder: {{hidden: [16], out_dim: 8}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 16, num_threads: 1}}
cache: {{dir: {cache}}}
"""


class Pairs(Dataset):
    """Three classes; ``narrow`` holds 12 values a row, ``wide`` 144 (wider than the advisor's 64-value projection)."""

    modalities = ("narrow", "wide")
    num_classes = 3

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.narrow = torch.randn(n, 12, generator=g) + 0.7 * self.y[:, None].float()
        self.wide = torch.randn(n, 144, generator=g) + 0.5 * self.y[:, None].float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"narrow": self.narrow[i], "wide": self.wide[i], "label": self.y[i]}


def splits(n_train: int = 90) -> dict:
    return {"train": Pairs(n_train, 0), "val": Pairs(30, 1), "test": Pairs(30, 2)}


def train_run(tmp_path: Path, student: str = "narrow", *extra: str, n_train: int = 90) -> Path:
    config = tmp_path / f"{student}.yaml"
    config.write_text(RUN_YAML.format(student=student, cache=tmp_path / "cache", n_train=n_train))
    run = tmp_path / f"run-{student}"
    assert main(["train", str(config), "--out", str(run), *extra]) == 0
    return run


def advise_json(run: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["advise", "--run", str(run), "--json", "--bootstrap", "2", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "student,representation",
    [("narrow", "narrow flattened"), ("wide", "wide flattened, projected on 64 principal components")],
)
def test_advise_run_on_a_dataset_factory_folder_says_what_its_probes_read(tmp_path, capsys, student, representation):
    out = advise_json(train_run(tmp_path, student), capsys)
    assert out["teacher"] == "seed_0/teacher logits" and out["student"] == student
    assert out["representation"] == f"teacher side: seed_0/teacher's logits; student side: {representation}"
    assert out["examples"] == 90 and out["features"]["d_b_per_n"] == min(144 if student == "wide" else 12, 64) / 90
    assert out["inputs_seconds"] >= 0


def test_advise_run_on_wide_items_reads_the_no_kd_students_logits(tmp_path, capsys, monkeypatch):
    """Inputs too wide to flatten (images, spectrograms) are represented by what the no-KD student reads off them."""
    import mmdistill.advisor.items as items

    monkeypatch.setattr(items, "FLAT_MAX", 100)  # 144 values a row count as wide
    out = advise_json(train_run(tmp_path, "wide"), capsys)
    assert out["representation"].endswith("student side: the no-KD student's logits")
    assert out["features"]["d_b_per_n"] == 3 / 90  # three classes: three logits


def test_advise_run_without_a_no_kd_student_projects_wide_items_at_random(tmp_path, capsys, monkeypatch):
    import mmdistill.advisor.items as items

    monkeypatch.setattr(items, "FLAT_MAX", 100)
    out = advise_json(train_run(tmp_path, "wide", "--no-baseline", n_train=300), capsys)  # two batches of items
    assert out["representation"].endswith("student side: wide as a random projection to 64 values")
    assert out["examples"] == 300 and out["features"]["d_b_per_n"] == 64 / 300


def test_advise_run_reads_a_bounded_seeded_subset_of_the_items(tmp_path, capsys):
    run = train_run(tmp_path)
    first, again = (advise_json(run, capsys, "--max-rows", "60") for _ in range(2))
    assert first["examples"] == 60 and first["predicted_gain"] == again["predicted_gain"]


def test_advise_run_on_a_distill_folder_of_factory_data(tmp_path, capsys):
    from mmdistill.config import DataConfig, TrainerConfig
    from mmdistill.data.contracts.item_dataset import load_data
    from mmdistill.engine.api import distill
    from mmdistill.models.multimodal import ModelConfig, build_model

    data = load_data(DataConfig(dataset="test_advise_item_runs:splits"))
    specs, trainer = data.train.specs(), TrainerConfig(epochs=1, batch_size=16, num_threads=1)
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["narrow", "wide"]), specs, 3)
    student = build_model(ModelConfig(modalities=["narrow"]), specs, 3)
    distill(teacher, None, data, tmp_path / "teacher", method="supervised", trainer=trainer)
    distill(student, teacher, data, tmp_path / "kd", trainer=trainer)
    out = advise_json(tmp_path / "kd", capsys)
    assert out["student"] == "narrow" and out["representation"].endswith("student side: narrow flattened")


class Captions(Dataset):
    """Three classes; ``narrow`` holds 12 values a row, ``words`` 4 token ids whose first names the class."""

    modalities = ("narrow", "words")
    num_classes = 3

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.narrow = torch.randn(n, 12, generator=g) + 0.7 * self.y[:, None].float()
        self.words = torch.cat([self.y[:, None] + 1, torch.randint(4, 20, (n, 3), generator=g)], 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"narrow": self.narrow[i], "words": self.words[i], "label": self.y[i]}


def caption_splits() -> dict:
    return {"train": Captions(90, 0), "val": Captions(30, 1), "test": Captions(30, 2)}


TOKENS_YAML = """\
seed: 0
data: {{dataset: "test_advise_item_runs:caption_splits"}}
teacher:
  model: {{modalities: [narrow, words], encoder: {{hidden: [16], out_dim: 8}},
          encoders: {{words: {{type: tokens, vocab_size: 20, out_dim: 8}}}}}}
student: {{model: {{modalities: [words], encoder: {{type: tokens, vocab_size: 20, out_dim: 8}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 16, num_threads: 1}}
cache: {{enabled: false}}
"""


@pytest.mark.parametrize("baseline", [True, False])
def test_advise_run_on_token_ids_reads_the_no_kd_students_logits_or_says_why_not(tmp_path, capsys, baseline):
    config = tmp_path / "tokens.yaml"
    config.write_text(TOKENS_YAML.format())
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), *([] if baseline else ["--no-baseline"])]) == 0
    if baseline:
        out = advise_json(run, capsys)
        assert out["representation"].endswith("student side: the no-KD student's logits")
        return
    capsys.readouterr()
    assert main(["advise", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'words' holds token ids or rows of different lengths" in err[0]
