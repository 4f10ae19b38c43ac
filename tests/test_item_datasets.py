"""Any map-style torch Dataset through distill(): workers, seeded augmentation, the online teacher, bitwise resume,
a worker that raises, the cache refused under augmentation, DataLoader options in the config, YAML factories."""

import multiprocessing

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

import mmdistill.engine.trainer as trainer_module
from mmdistill.config import (
    CacheConfig,
    DataConfig,
    MaskingConfig,
    TrainerConfig,
    validate,
)
from mmdistill.data.contracts.item_dataset import ItemSplits, load_data
from mmdistill.engine.api import distill
from mmdistill.errors import ConfigError, DataError


class Scenes(Dataset):
    """Tiny two-modality images; random noise and flips on every read when ``augment``."""

    modalities = ("rgb", "depth")
    num_classes = 3

    def __init__(self, n: int, seed: int, augment: bool = False, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 2, 6, 6, generator=g) + self.y.view(-1, 1, 1, 1).float()
        self.random, self.fail_at = augment, fail_at

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise ValueError(f"cannot decode file {i}.png")
        x = self.x[i]
        if self.random:
            x = x + 0.3 * torch.randn(x.shape)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return {"rgb": x[:1], "depth": x[1:], "label": self.y[i]}


class Net(nn.Module):
    def __init__(self, modalities, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.modalities = modalities
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(36 * len(modalities), 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
        )
        self.seen: list[tuple[torch.Tensor, bool, bool]] = []  # (rgb, training, grad enabled) per call
        self.indices: list[torch.Tensor] = []

    def forward(self, batch):
        x = torch.cat([batch[m] for m in self.modalities], 1)
        self.seen.append((batch["rgb"].clone(), self.training, torch.is_grad_enabled()))
        self.indices.append(batch["index"].clone())
        return self.body(x)


def splits(augment=True, **kw):
    return {"train": Scenes(48, 0, augment, **kw), "val": Scenes(24, 1), "test": Scenes(24, 2)}


def run(tmp_path, name, workers=0, epochs=2, resume=False, loader=None, **kw):
    data = kw.pop("data", None) or splits()
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    cfg = TrainerConfig(
        epochs=epochs,
        batch_size=16,
        num_workers=workers,
        scheduler={"name": "cosine"},
        test_checkpoint="last",
        **(loader or {}),
    )  # the last weights: what a resume must reproduce
    result = distill(student, teacher, **data, out_dir=tmp_path / name, trainer=cfg, resume=resume, **kw)
    return result, student, teacher


def weights(student):
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_custom_dataset_with_augmentation_and_two_workers_trains_with_the_online_teacher(tmp_path, capsys):
    result, student, teacher = run(tmp_path, "w2", workers=2)
    assert "teacher runs online" in capsys.readouterr().err
    assert set(result.test) >= {"accuracy", "f1_macro", "loss"} and result.epochs_run == 2
    train_steps = [s for s in student.seen if s[1]]
    online = teacher.seen[-len(train_steps) :]  # the teacher's calls during training, one per step
    assert len(train_steps) == 2 * 3
    for (x_s, _, _), (x_t, t_training, t_grad) in zip(train_steps, online):
        assert torch.equal(x_s, x_t), "the teacher must see the same augmented batch as the student"
        assert not t_training and not t_grad, "the online teacher runs in eval mode without gradients"
    assert not multiprocessing.active_children(), "the DataLoader workers must be gone after the run"


def test_augmentation_depends_on_seed_epoch_index_not_on_workers(tmp_path):
    """The same augmented batches with 0 and 2 workers: so worker count and resume cannot change a result."""
    _, s0, _ = run(tmp_path, "w0", workers=0)
    _, s2, _ = run(tmp_path, "w2", workers=2)
    a, b = weights(s0), weights(s2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(x, i) for (x, training, _), i in zip(s0.seen, s0.indices) if training]
    epoch1 = {int(i): x for xs, idx in rows[:3] for x, i in zip(xs, idx)}
    epoch2 = {int(i): x for xs, idx in rows[3:] for x, i in zip(xs, idx)}
    assert sorted(epoch1) == sorted(epoch2) == list(range(48))
    assert not any(torch.equal(epoch1[i], epoch2[i]) for i in epoch1), "each epoch draws new augmentations"


def test_worker_pipeline_interrupted_after_epoch_1_resumes_bitwise(tmp_path, monkeypatch):
    """Also: persistent workers with prefetch in the uninterrupted run, fresh workers per epoch in the other."""
    run(tmp_path, "full", workers=2, epochs=3, loader={"persistent_workers": True, "prefetch_factor": 4})
    assert not multiprocessing.active_children(), "persistent workers must be gone after the run"
    real_save = trainer_module.save_training_state

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # as a Ctrl-C right after epoch 1's checkpoint

    monkeypatch.setattr(trainer_module, "save_training_state", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed", workers=2, epochs=3)
    assert not multiprocessing.active_children(), "an interrupted run must stop its workers"
    monkeypatch.setattr(trainer_module, "save_training_state", real_save)
    run(tmp_path, "killed", workers=2, epochs=3, resume=True)
    full = (tmp_path / "full" / "student.safetensors").read_bytes()
    assert full == (tmp_path / "killed" / "student.safetensors").read_bytes()


def test_a_worker_that_raises_names_the_item_and_the_original_error(tmp_path):
    with pytest.raises(DataError, match=r"reading item 13 raised ValueError: cannot decode file 13\.png") as err:
        run(tmp_path, "fail", workers=2, data=splits(fail_at=13))
    assert any("Traceback" in note for note in getattr(err.value, "__notes__", []))
    assert not multiprocessing.active_children(), "the run must stop its workers"
    assert not (tmp_path / "fail" / "student.safetensors").exists()


def test_caching_the_teacher_under_augmentation_is_refused_saying_why(tmp_path):
    refused = (
        r"cache.enabled: cannot cache .* the training data are random .* "
        r"a cached teacher output would belong to another input"
    )
    with pytest.raises(ConfigError, match=refused):  # the dataset says it is random
        run(tmp_path, "cached", cache=CacheConfig(enabled=True, dir=tmp_path / "cache"))
    fixed = {"train": FingerprintedScenes(48, 0), "val": Scenes(24, 1), "test": Scenes(24, 2)}
    with pytest.raises(ConfigError, match=refused):  # a train transform on cacheable data
        run(
            tmp_path,
            "cached",
            data=fixed,
            transforms={"train": Jitter(0.1)},
            cache=CacheConfig(enabled=True, dir=tmp_path / "cache"),
        )
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_column_data_keep_the_cache_and_fixed_item_data_without_fingerprint_run_online(tmp_path, capsys):
    run(tmp_path, "fixed", data=splits(augment=False), cache=CacheConfig(dir=tmp_path / "cache"))
    assert "no fingerprint()" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_iterable_dataset_is_refused_with_the_reason(tmp_path):
    class Stream(IterableDataset):
        def __iter__(self):
            yield {"rgb": torch.zeros(1, 6, 6), "label": torch.tensor(0)}

    with pytest.raises(DataError, match="an IterableDataset has no per-example index"):
        run(tmp_path, "stream", data={"train": Stream(), "val": Scenes(8, 1), "test": Scenes(8, 2)})


def test_data_and_split_keywords_cannot_be_mixed(tmp_path, toy_splits):
    with pytest.raises(ConfigError, match="give data= .* or train=, val=, test=, not both"):
        distill(Net(("rgb",)), None, toy_splits, tmp_path / "x", method="supervised", train=Scenes(8, 0))
    with pytest.raises(ConfigError, match="no 'test' split"):
        distill(Net(("rgb",)), None, None, tmp_path / "x", method="supervised", train=Scenes(8, 0), val=Scenes(8, 1))


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"prefetch_factor": 4}, r"prefetch_factor 4 needs worker processes"),
        ({"persistent_workers": True}, r"persistent_workers: true needs worker processes"),
        ({"num_workers": -1}, r"trainer.num_workers"),
        ({"pin_memory": "yes"}, r"trainer.pin_memory"),
    ],
)
def test_loader_options_are_checked(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        validate(TrainerConfig, raw, prefix="trainer.")


def make_splits(n_train: int = 24):
    """A dataset factory for ``data.dataset`` (this module is importable by name in the tests)."""
    return {"train": Scenes(n_train, 0), "val": Scenes(8, 1), "test": Scenes(8, 2)}


class Jitter:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, item: dict) -> dict:
        return {**item, "rgb": item["rgb"] + self.scale * torch.randn(item["rgb"].shape)}


def test_yaml_dataset_factory_with_a_train_transform():
    cfg = validate(
        DataConfig,
        {
            "dataset": "test_item_datasets:make_splits",
            "params": {"n_train": 20},
            "transforms": {"train": {"factory": "test_item_datasets:Jitter", "params": {"scale": 0.5}}},
        },
    )
    data = load_data(cfg)
    assert isinstance(data, ItemSplits) and len(data.train) == 20
    assert data.train.random and not data.val.random, "a train transform makes the training data random"
    a, b = data.train.__getitems__([3]), data.train.__getitems__([3])
    assert torch.equal(a["rgb"], b["rgb"]) and not torch.equal(a["rgb"], data.val.dataset[3]["rgb"])


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"dataset": "no_such_module_xyz:f"}, r"data.dataset: cannot import module 'no_such_module_xyz'"),
        (
            {"dataset": "test_item_datasets:nothing"},
            r"data.dataset: module 'test_item_datasets' has no attribute 'nothing'",
        ),
        ({"dataset": "not a path"}, r"data.dataset: String should match pattern"),
        ({"dataset": "test_item_datasets:make_splits", "name": "mfeat"}, r"give name .* or dataset .*, not both"),
    ],
)
def test_yaml_dataset_errors_name_the_key(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        load_data(validate(DataConfig, raw, prefix="data."))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")
def test_cuda_run_with_workers_pinned_memory_and_non_blocking_copies(tmp_path):
    data = splits()
    student, teacher = Net(("rgb",), 1), Net(("rgb", "depth"), 2)
    cfg = TrainerConfig(
        epochs=2,
        batch_size=16,
        num_workers=2,
        accelerator="cuda",
        pin_memory=True,
        persistent_workers=True,
        prefetch_factor=2,
    )
    result = distill(student, teacher, **data, out_dir=tmp_path / "cuda", trainer=cfg)
    assert result.epochs_run == 2 and 0 <= result.test["accuracy"] <= 100  # percent
    assert all(x.is_cuda for x, training, _ in student.seen if training)
    assert next(student.parameters()).is_cuda


class FingerprintedScenes(Scenes):
    def fingerprint(self) -> str:
        return f"scenes-{len(self)}-{float(self.x.sum()):.6f}"


def test_fixed_item_data_with_a_fingerprint_use_the_teacher_cache(tmp_path):
    data = {"train": FingerprintedScenes(48, 0), "val": Scenes(24, 1), "test": Scenes(24, 2)}
    run(tmp_path, "cached", data=data, epochs=1, cache=CacheConfig(enabled=True, dir=tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


@pytest.mark.parametrize(
    "params,masking",
    [
        ({"weighting": "population"}, "mean"),
        ({"weighting": "learned", "heldout_fraction": 0.25}, "zeros"),
    ],
)
def test_msd_prepare_runs_on_augmented_item_data(tmp_path, params, masking):
    student, teacher = Net(("rgb", "depth"), 1), Net(("rgb", "depth"), 2)
    cfg = TrainerConfig(epochs=1, batch_size=16)
    result = distill(
        student,
        teacher,
        **splits(),
        out_dir=tmp_path / "msd",
        method="msd",
        method_params=params,
        masking=MaskingConfig(strategy=masking),
        trainer=cfg,
    )
    assert result.epochs_run == 1 and 0 <= result.test["accuracy"] <= 100  # percent


def test_batch_seeds_change_with_the_epoch_and_the_run_seed():
    from mmdistill.engine.batches import _SeededBatches

    class FixedOrder:  # the same batches every epoch: only the seed may change
        epoch = 1

        def __iter__(self):
            return iter([torch.tensor([3, 1]), torch.tensor([0, 2])])

        def __len__(self):
            return 2

    order = FixedOrder()
    first = list(_SeededBatches(order, seed=0))
    order.epoch = 2
    second, other_run = list(_SeededBatches(order, seed=0)), list(_SeededBatches(order, seed=1))
    assert [i for b in first for i, _ in b] == [3, 1, 0, 2]
    assert len({s for b in first for _, s in b}) == 2, "one seed per batch, different across batches"
    assert all(a[0][1] != b[0][1] for a, b in zip(first, second)), "a new epoch draws new augmentations"
    assert all(a[0][1] != b[0][1] for a, b in zip(second, other_run)), "another run seed draws new augmentations"


class OddShape(Scenes):
    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        return {**item, "rgb": item["rgb"][:, :5]} if i == 21 else item


def test_a_batch_that_cannot_be_stacked_names_split_item_and_key(tmp_path):
    with pytest.raises(
        DataError,
        match=r"train: item 21, key 'rgb': shape \(1, 5, 6\) differs from item \d+'s "
        r"\(1, 6, 6\)",
    ):
        run(tmp_path, "odd", data={"train": OddShape(48, 0), "val": Scenes(8, 1), "test": Scenes(8, 2)})


def test_column_datasets_keep_the_fast_path(toy_splits):
    from mmdistill.engine.batches import ColumnBatches, eval_batches, train_batches

    batches = train_batches(toy_splits.train, TrainerConfig(batch_size=32, num_workers=2), seed=0, rank=0, world=1)
    assert isinstance(batches, ColumnBatches) and isinstance(eval_batches(toy_splits.val, 64), ColumnBatches)
    batches.set_epoch(1)
    first = next(iter(batches))
    assert first["index"].shape == (32,) and torch.equal(first["label"], toy_splits.train.labels[first["index"]])


def test_the_training_mean_is_read_only_for_mean_masking_and_a_failing_read_is_named(tmp_path):
    data = splits(fail_at=13)
    with pytest.raises(DataError, match=r"train: reading item 13 raised ValueError: cannot decode file 13\.png"):
        run(tmp_path, "mean", data=data, masking=MaskingConfig(strategy="mean"))
    result, _, _ = run(tmp_path, "zeros", data=splits(augment=False), epochs=1)  # zeros: no pass over the data
    assert result.epochs_run == 1
