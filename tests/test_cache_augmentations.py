"""``cache.augmentations: K``: the teacher cache holds the teacher's outputs on K seeded augmentations of each example,
and each epoch the student reads one of them with the matching output; runs, workers and a SIGKILL + resume give the
same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data.contracts.item_dataset import VIEW, ItemDataset, seed_rngs, view_seed
from mmdistill.data.contracts.transforms import AdditiveNoise, Compose, RandomHorizontalFlip, transform_settings
from mmdistill.engine.api import distill
from mmdistill.engine.teacher import TeacherTable
from mmdistill.errors import ConfigError

K = 4


class Pictures(Dataset):
    """Tiny two-modality images with a fingerprint; random only through the train transform."""

    modalities = ("rgb", "depth")
    num_classes = 3

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 2, 6, 6, generator=g) + self.y.view(-1, 1, 1, 1).float()
        self.seed = seed

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"rgb": self.x[i, :1], "depth": self.x[i, 1:], "label": self.y[i]}

    def fingerprint(self) -> str:
        return f"pictures-{len(self)}-{self.seed}"


class Net(nn.Module):
    """Records every training batch it sees (the student) or every call (the teacher)."""

    def __init__(self, modalities, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.modalities = modalities
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(36 * len(modalities), 16), nn.ReLU(), nn.Linear(16, 3))
        self.seen: list[dict] = []

    def forward(self, batch):
        if self.training:
            self.seen.append({k: v.clone() for k, v in batch.items()})
        return self.body(torch.cat([batch[m] for m in self.modalities], 1))


def augment():
    return Compose([AdditiveNoise(["rgb", "depth"], 0.3), RandomHorizontalFlip(["rgb", "depth"])])


def splits():
    return {"train": Pictures(48, 0), "val": Pictures(24, 1), "test": Pictures(24, 2)}


def run(out: Path, cache_dir: Path, workers: int = 0, epochs: int = 3, resume: bool = False, **cache):
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    distill(
        student, teacher, **splits(), out_dir=out, transforms={"train": augment()}, quiet=True, resume=resume,
        trainer=TrainerConfig(epochs=epochs, batch_size=16, num_workers=workers, test_checkpoint="last"),
        cache=CacheConfig(dir=cache_dir, **{"augmentations": K, **cache}),
    )  # fmt: skip
    return student, teacher


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow  # about 6 s on 2 busy cores: two DataLoader workers start
def test_two_runs_with_four_cached_augmentations_give_identical_weights_with_or_without_workers(tmp_path):
    first, teacher = run(tmp_path / "a", tmp_path / "cache")
    assert len(teacher.seen) == 0 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    second, _ = run(tmp_path / "b", tmp_path / "cache", workers=2)
    assert same_weights(first, second)
    views = torch.stack([b[VIEW] for b in first.seen])
    assert set(views.unique().tolist()) == set(range(K)), "the epochs read every one of the K views"


def test_the_cached_output_of_a_batch_is_the_teachers_output_on_the_view_the_student_saw(tmp_path):
    student, teacher = run(tmp_path / "a", tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("*.safetensors")
    table, _ = TeacherTable.open(path)
    assert table.views == K and len(table.tensors["logits"]) == 48 * K
    for batch in student.seen[:3] + student.seen[-3:]:
        cached = table.lookup(batch, torch.device("cpu")).logits
        with torch.no_grad():
            direct = teacher.eval()(batch)
        torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-6)
    item = ItemDataset(Pictures(48, 0), "train", augment())
    batch = student.seen[0]
    i, k = int(batch["index"][0]), int(batch[VIEW][0])
    seed_rngs(view_seed(0, k, i))
    assert torch.equal(item.item(i)["rgb"], batch["rgb"][0]), "view k of example i is drawn from seed (seed, k, i)"
    by_epoch = [torch.cat([b[VIEW] for b in student.seen[e * 3 : e * 3 + 3]]) for e in range(3)]
    assert not torch.equal(by_epoch[0], by_epoch[1]), "each epoch picks its views anew"


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[4]))
import mmdistill.engine.trainer as trainer_module
from test_cache_augmentations import run

real_save = trainer_module.save_training_state

def save_then_die(*args, **kwargs):
    real_save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # right after epoch 1's checkpoint

trainer_module.save_training_state = save_then_die
run(Path(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.slow  # about 10 s on 2 busy cores: a fresh interpreter imports torch
def test_a_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    full, _ = run(tmp_path / "full", tmp_path / "cache")
    here = str(Path(__file__).parent)
    args = [here, str(tmp_path / "killed"), str(tmp_path / "cache"), str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, *args], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "killed" / "checkpoints" / "last.safetensors").is_file()
    assert not (tmp_path / "killed" / "student.safetensors").exists()
    resumed, _ = run(tmp_path / "killed", tmp_path / "cache", resume=True)
    assert same_weights(full, resumed)
    full_bytes = (tmp_path / "full" / "student.safetensors").read_bytes()
    assert full_bytes == (tmp_path / "killed" / "student.safetensors").read_bytes()


class NoisyPictures(Pictures):
    """Draws its own noise in ``__getitem__`` (``random = True``), no transform."""

    random = True

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        return {**item, "rgb": item["rgb"] + 0.3 * torch.randn(item["rgb"].shape)}


def test_a_dataset_that_draws_its_own_random_numbers_is_cached_as_k_views(tmp_path):
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    distill(
        student, teacher, train=NoisyPictures(48, 0), val=Pictures(24, 1), test=Pictures(24, 2),
        out_dir=tmp_path / "noisy", quiet=True, trainer=TrainerConfig(epochs=2, batch_size=16),
        cache=CacheConfig(dir=tmp_path / "cache", augmentations=K),
    )  # fmt: skip
    (path,) = (tmp_path / "cache").glob("*.safetensors")
    table, _ = TeacherTable.open(path)
    assert table.views == K
    batch = student.seen[-1]
    with torch.no_grad():
        direct = teacher.eval()(batch)
    torch.testing.assert_close(table.lookup(batch, torch.device("cpu")).logits, direct, rtol=1e-5, atol=1e-6)


def test_augmentations_on_data_without_a_random_transform_is_a_note_then_one_view(tmp_path, capsys):
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    distill(
        student, teacher, **splits(), out_dir=tmp_path / "fixed", quiet=True,
        trainer=TrainerConfig(epochs=1, batch_size=16), cache=CacheConfig(dir=tmp_path / "cache", augmentations=K),
    )  # fmt: skip
    assert "cache.augmentations: 4: the training data draw no random numbers" in capsys.readouterr().err
    (path,) = (tmp_path / "cache").glob("*.safetensors")
    table, _ = TeacherTable.open(path)
    assert table.views == 1 and len(table.tensors["logits"]) == 48
    assert all(VIEW not in b for b in student.seen)


def test_a_cache_file_of_another_k_under_this_key_is_rebuilt_naming_cache_augmentations(tmp_path, capsys):
    run(tmp_path / "two", tmp_path / "cache2", epochs=1, augmentations=2)
    run(tmp_path / "four", tmp_path / "cache4", epochs=1)
    (two,), (four,) = (tmp_path / "cache2").glob("*.safetensors"), (tmp_path / "cache4").glob("*.safetensors")
    assert two.name != four.name, "K is part of the cache key"
    two.replace(four)  # a K = 2 file copied under the K = 4 key
    capsys.readouterr()
    _, teacher = run(tmp_path / "again", tmp_path / "cache4", epochs=1)
    err = capsys.readouterr().err
    assert "cache.augmentations: the file holds 2 view(s) of each example, this run reads 4; rebuilding it" in err
    assert len(teacher.seen) == 0 and TeacherTable.open(four)[0].views == K


def test_a_transform_that_cannot_be_keyed_is_refused_naming_cache_augmentations(tmp_path):
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    noise = augment()
    with pytest.raises(ConfigError, match=r"^cache\.augmentations: cannot cache .*has no fingerprint\(\)"):
        distill(
            student, teacher, **splits(), out_dir=tmp_path / "lambda", quiet=True,
            transforms={"train": lambda item: noise(item)},
            trainer=TrainerConfig(epochs=1, batch_size=16), cache=CacheConfig(dir=tmp_path / "cache", augmentations=K),
        )  # fmt: skip
    assert not (tmp_path / "lambda").exists() and not (tmp_path / "cache").exists()


def test_a_transforms_settings_are_its_key():
    assert transform_settings(augment()) == transform_settings(augment())
    other = Compose([AdditiveNoise(["rgb", "depth"], 0.5), RandomHorizontalFlip(["rgb", "depth"])])
    assert transform_settings(other) != transform_settings(augment())
    assert transform_settings(lambda item: item) is None


def test_a_table_of_several_views_refuses_a_batch_that_does_not_say_its_view():
    table = TeacherTable({"logits": torch.zeros(8, 3)}, views=2)
    with pytest.raises(ConfigError, match=r"^cache\.augmentations: the teacher cache holds 2 views"):
        table.lookup({"index": torch.arange(2)}, torch.device("cpu"))
    out = table.rows_of({"index": torch.tensor([0, 3]), VIEW: torch.tensor([1, 0])})
    assert out.tolist() == [1, 6]
