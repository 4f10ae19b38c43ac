"""The papers' file-backed datasets by name (data/formats/file_registry.py): YAML params, `data describe`, build."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml
from conftest import cli, cli_env
from test_data_mfh_layouts import write_ravdess, write_vggsound
from test_data_mmimdb import write_mmimdb

from mmdistill.cli import main
from mmdistill.config import DataConfig
from mmdistill.data import build_splits
from mmdistill.data.contracts.item_dataset import ItemDataset, ItemSplits, load_data
from mmdistill.data.formats.mfh_ravdess import ravdess_splits
from mmdistill.data.formats.mfh_vggsound import vggsound_splits
from mmdistill.data.formats.mmimdb import mmimdb_splits
from mmdistill.data.formats.rgbd_folder import rgbd_folder_splits
from mmdistill.data.generated.rgbd_scenes import rgbd_scene_splits, write_rgbd_scenes
from mmdistill.errors import ConfigError, DataError
from mmdistill.registry import DATASETS

NAMES = ("mm-imdb", "rgbd-folder", "rgbd-scenes", "mfh-ravdess", "mfh-vggsound")


def from_yaml(text: str) -> ItemSplits:
    return load_data(DataConfig.model_validate(yaml.safe_load(text)))


def same_items(a, b, rows=(0, -1)) -> None:
    for r in rows:
        x, y = a[r % len(a)], b[r % len(b)]
        assert set(x) >= set(y) - {"index"}
        for k in y:
            if k != "index":
                assert torch.equal(x[k], y[k]), k


@pytest.fixture
def layouts(tmp_path):
    """Each layout written small, with the direct loader's splits to compare against."""
    imdb = tmp_path / "multimodal_imdb.hdf5"
    write_mmimdb(imdb)
    write_rgbd_scenes(tmp_path / "scenes", n_scenes=10, size=16, seed=3)
    write_ravdess(tmp_path / "ravdess")
    (tmp_path / "vgg").mkdir()
    write_vggsound(tmp_path / "vgg")
    return tmp_path


def test_every_layout_is_registered():
    assert set(NAMES) <= set(DATASETS.names())


def test_each_layout_loads_from_yaml_params_as_its_loader_reads_it(layouts):
    t = layouts
    cases = [
        (
            f"{{name: mm-imdb, params: {{root: {t}, boundaries: [6, 9, 12]}}}}",
            mmimdb_splits(t, boundaries=(6, 9, 12)),
            "multilabel",
            (6, 3, 3),
        ),
        (
            f"{{name: rgbd-folder, params: {{root: {t / 'scenes'}, num_classes: 4}}}}",
            rgbd_folder_splits(t / "scenes", 4),
            "segmentation",
            (6, 2, 2),
        ),
        (
            f"{{name: rgbd-scenes, params: {{root: {t / 'scenes'}}}}}",
            rgbd_folder_splits(t / "scenes", 4),
            "segmentation",
            (6, 2, 2),
        ),
        (
            "{name: rgbd-scenes, params: {n_scenes: 10, size: 16}, split_seed: 3}",
            rgbd_scene_splits(10, 16, seed=3),
            "segmentation",
            (6, 2, 2),
        ),
        (
            f"{{name: mfh-ravdess, params: {{root: {t / 'ravdess'}}}}}",
            ravdess_splits(t / "ravdess"),
            "classification",
            (4, 2, 2),
        ),
        (
            f"{{name: mfh-vggsound, params: {{root: {t / 'vgg'}, num_frames: 3, frame_size: 8}}}}",
            vggsound_splits(t / "vgg", num_frames=3, frame_size=8),
            "classification",
            (5, 1, 3),
        ),
    ]
    for text, direct, task, sizes in cases:
        splits = from_yaml(text)
        assert isinstance(splits, ItemSplits), text
        assert tuple(len(splits.split(s)) for s in ("train", "val", "test")) == sizes, text
        assert splits.train.task == task and splits.num_classes == direct.train.num_classes, text
        for name, own in zip(("train", "val", "test"), direct):
            same_items(splits.split(name), own)
        splits.check()


def test_generated_scenes_follow_the_split_seed_and_written_scenes_match_them(layouts):
    seeded = [from_yaml(f"{{name: rgbd-scenes, params: {{n_scenes: 10, size: 16}}, split_seed: {s}}}") for s in (3, 4)]
    read = from_yaml(f"{{name: rgbd-scenes, params: {{root: {layouts / 'scenes'}}}}}")
    same_items(seeded[0].test, read.test, rows=(0, 1))  # PNG round trip of the same (seed, i) scenes
    assert not torch.equal(seeded[0].train[0]["rgb"], seeded[1].train[0]["rgb"])


def test_transforms_from_yaml_apply_to_a_registered_layout(layouts):
    splits = from_yaml(
        "{name: rgbd-scenes, params: {n_scenes: 10, size: 16}, transforms: {train: {factory: "
        "'mmdistill.data.contracts.transforms:RandomCrop', params: {size: 8, keys: [rgb, depth]}}}}"
    )
    assert isinstance(splits.train, ItemDataset) and splits.train.random and not splits.val.random
    assert splits.train[0]["rgb"].shape == (3, 8, 8) and splits.train[0]["label"].shape == (8, 8)
    assert splits.val[0]["rgb"].shape == (3, 16, 16)


@pytest.mark.parametrize(
    "name, params, error, message",
    [
        ("rgbd-scenes", {"root": "{t}/scenes", "size": 16}, ConfigError, "data.params.size: rgbd-scenes with root"),
        ("rgbd-scenes", {"root": "{t}/ravdess"}, DataError, "data.params.root: {t}/ravdess holds no rgbd_scenes.json"),
        ("rgbd-scenes", {"size": 4}, ConfigError, "data.params.size: Input should be greater than or equal to 8"),
        ("rgbd-scenes", {"fractions": [0.5, 0.25, 0.2]}, DataError, "data.params.fractions: expected three shares"),
        ("rgbd-folder", {"root": "{t}/scenes"}, ConfigError, "data.params.num_classes: required"),
        ("mm-imdb", {}, ConfigError, "data.params.root: required"),
        ("mm-imdb", {"root": "{t}", "boundaries": [6, 5, 12]}, DataError, "data.params.boundaries: expected 0 <"),
        ("mm-imdb", {"root": "{t}"}, DataError, "12 rows, but MultiBench's splits"),
        (
            "mm-imdb",
            {"root": "{t}", "boundaries": [6, 9, 12], "modalities": {"text": "plots"}},
            DataError,
            "data.params.modalities.text: unknown MM-IMDB key 'plots'",
        ),
        ("mfh-ravdess", {"root": "{t}/ravdess", "nclasses": 8}, ConfigError, "data.params.nclasses: unknown parameter"),
        ("mfh-vggsound", {"root": "{t}/none"}, DataError, "none: VGGSound folder not found"),
    ],
)
def test_bad_params_are_named(layouts, name, params, error, message):
    params = {k: v.format(t=layouts) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(error) as info:
        build_splits(name, params)
    assert message.format(t=layouts) in str(info.value)


def test_data_describe_reads_each_layout(layouts, capsys):
    t = layouts
    for args, expected in [
        (
            ["mm-imdb", "--param", f"root={t}", "--param", "boundaries=[6,9,12]"],
            "train 6 / val 3 / test 3; 23 classes; modalities: text[300], image[4096]",
        ),
        (
            ["rgbd-folder", "--param", f"root={t / 'scenes'}", "--param", "num_classes=4"],
            "train 6 / val 2 / test 2; 4 classes; modalities: rgb[3, 16, 16], depth[1, 16, 16]",
        ),
        (
            ["rgbd-scenes", "--param", "n_scenes=10", "--param", "size=16", "--seed", "3"],
            "seed 3, 16x16 pixels): train 6 / val 2 / test 2; 4 classes",
        ),
        (["mfh-ravdess", "--param", f"root={t / 'ravdess'}"], "train 4 / val 2 / test 2; 8 classes; modalities: audio"),
        (
            ["mfh-vggsound", "--param", f"root={t / 'vgg'}", "--param", "num_frames=3", "--param", "frame_size=8"],
            "train 5 / val 1 / test 3; 3 classes; modalities: video[3, 3, 8, 8], audio[1, 513, 8]",
        ),
    ]:
        assert main(["data", "describe", *args]) == 0
        out = capsys.readouterr().out
        assert expected in out, (args, out)


def test_data_build_rgbd_scenes_writes_a_set_the_registered_name_reads(tmp_path):
    out = tmp_path / "built"
    run = subprocess.run(
        cli(
            "data",
            "build",
            "rgbd-scenes",
            "--out",
            str(out),
            "--seed",
            "3",
            "--param",
            "n_scenes=10",
            "--param",
            "size=16",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "10 scenes of 16x16 (seed 3), train 6 / val 2 / test 2" in run.stdout
    same_items(build_splits("rgbd-scenes", {"root": str(out)}).train, rgbd_scene_splits(10, 16, seed=3).train)
    again = subprocess.run(
        cli("data", "describe", "rgbd-scenes", "--param", f"root={out}"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0 and "read from" in again.stdout and "train 6 / val 2 / test 2" in again.stdout


def test_data_build_rgbd_scenes_refuses_what_it_must_not_replace(tmp_path, capsys):
    def refused(*args: str) -> str:
        assert main(["data", "build", "rgbd-scenes", *args]) == 2
        return capsys.readouterr().err

    out = tmp_path / "built"
    assert main(["data", "build", "rgbd-scenes", "--out", str(out), "--param", "n_scenes=5", "--param", "size=8"]) == 0
    before = {p.name: p.read_bytes() for p in (out / "rgb").iterdir()}
    assert "pass --overwrite to replace them" in refused("--out", str(out), "--param", "n_scenes=5")
    assert {p.name: p.read_bytes() for p in (out / "rgb").iterdir()} == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert "not made by write_rgbd_scenes" in refused("--out", str(foreign), "--overwrite")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep"
    assert "--param colour: not a parameter" in refused("--out", str(tmp_path / "x"), "--param", "colour=1")
    assert "needs --out DIR" in refused()
    assert "n_scenes: expected an integer >= 3" in refused("--out", str(tmp_path / "x"), "--param", "n_scenes=2")
    assert main(["data", "build", "mfeat", "--param", "size=8"]) == 2
    assert "--param: only rgbd-scenes takes parameters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
