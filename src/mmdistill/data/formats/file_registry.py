"""The papers' file-backed datasets registered by name, so a config or ``mmdistill data describe`` can use them.

    data: {name: rgbd-scenes, params: {n_scenes: 120, size: 32}, split_seed: 0}   # generated in memory
    data: {name: rgbd-scenes, params: {root: scenes}}     # a set written by `mmdistill data build rgbd-scenes`
    data: {name: rgbd-folder, params: {root: nyu, num_classes: 40}}
    data: {name: mm-imdb, params: {root: multimodal_imdb.hdf5}}
    data: {name: mfh-ravdess, params: {root: ravdess/data}}
    data: {name: mfh-vggsound, params: {root: vggsound}}
    data: {name: hateful-memes, params: {root: hateful_memes, tokenizer: bert-folder, processor: vit-folder}}

Each wrapper calls its loader (``rgbd_scene_splits``, ``rgbd_folder_splits``, ``mmimdb_splits``, ``ravdess_splits``,
``vggsound_splits``, ``hateful_memes_splits``) and returns :class:`~mmdistill.data.contracts.item_dataset.ItemSplits`;
per-split augmentation is the config's ``data.transforms``. ``seed`` is ``data.split_seed``: the scene seed of
``rgbd-scenes`` and the seed of VGGSound's carved validation split; the other layouts have fixed splits. A loader's
error about one of its parameters (``boundaries: ...``) is raised as ``data.params.boundaries: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import Field

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..contracts.card import dataset_card
from ..contracts.dataset import Fraction, NumClasses, SplitFractions
from ..contracts.item_dataset import ItemSplits, as_splits

Count = Annotated[int, Field(strict=True, ge=1, le=10_000_000)]
Noise = Annotated[float, Field(ge=0, lt=10, allow_inf_nan=False)]
Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]
LabelValue = Annotated[int, Field(strict=True, ge=0, le=255)]
SCENE_PARAMS = ("n_scenes", "size", "max_objects", "rgb_noise", "depth_noise", "depth_dropout", "fractions")


@contextmanager
def _param_errors(params: tuple[str, ...]) -> Iterator[None]:
    """A loader's DataError (or ConfigError) that starts with one of its parameter names is re-raised as
    ``data.params.<name>: ...``."""
    try:
        yield
    except (DataError, ConfigError) as err:
        text = str(err)
        if any(text.startswith((f"{p}:", f"{p}.")) for p in params):
            raise type(err)(f"data.params.{text}") from None
        raise


def _item_splits(splits, description: str) -> ItemSplits:
    out = as_splits(splits, where="data")
    out.description = description
    return out


@DATASETS.register("rgbd-scenes")
@dataset_card(
    modalities="rgb (3, 64, 64), depth (1, 64, 64)",
    rows="300 scenes (n_scenes), split 60/20/20",
    task="segmentation, 4 classes",
    source="procedural scenes generated from the seed, or the set mmdistill data build rgbd-scenes wrote (root)",
)
def rgbd_scenes(
    seed: int = 0,
    root: str | None = None,
    n_scenes: Annotated[int, Field(strict=True, ge=3, le=1000000)] | None = None,
    size: Annotated[int, Field(strict=True, ge=8, le=4096)] | None = None,
    max_objects: Annotated[int, Field(strict=True, ge=1, le=1000)] | None = None,
    rgb_noise: Noise | None = None,
    depth_noise: Noise | None = None,
    depth_dropout: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = None,
    fractions: SplitFractions | None = None,
) -> ItemSplits:
    """Procedural RGB-D scenes (:mod:`~mmdistill.data.generated.rgbd_scenes`), generated from ``seed``
    (``data.split_seed``;
    unset parameters take :func:`~mmdistill.data.generated.rgbd_scenes.rgbd_scene_splits`' defaults), or, with
    ``root``, the
    set ``mmdistill data build rgbd-scenes --out ROOT`` wrote there (read from its PNG files)."""
    from ..generated.rgbd_scenes import CLASSES, IGNORE_INDEX, MARKER, RGBDSceneDataset, rgbd_scene_splits
    from .rgbd_folder import rgbd_folder_splits

    given: dict[str, Any] = {
        k: v
        for k, v in zip(SCENE_PARAMS, (n_scenes, size, max_objects, rgb_noise, depth_noise, depth_dropout, fractions))
        if v is not None
    }
    if root is not None:
        if given:
            first = next(iter(given))
            raise ConfigError(
                f"data.params.{first}: rgbd-scenes with root reads the scenes written there; drop "
                f"{first} (it applies when the scenes are generated, without root)"
            )
        if not (Path(root) / MARKER).is_file():
            raise DataError(
                f"data.params.root: {root} holds no {MARKER}; write a scene set there with "
                f"`mmdistill data build rgbd-scenes --out {root}`, or read other folders with rgbd-folder"
            )
        with _param_errors(("root",)):
            splits = rgbd_folder_splits(root, num_classes=len(CLASSES), ignore_index=IGNORE_INDEX)
        return _item_splits(splits, f"rgbd-scenes (procedural RGB-D scenes read from {root}):")
    if "fractions" in given:
        given["fractions"] = tuple(given["fractions"])
    with _param_errors(SCENE_PARAMS):
        splits = rgbd_scene_splits(seed=seed, **given)
    side = cast(RGBDSceneDataset, splits.train).arrays["label"].shape[-1]
    return _item_splits(splits, f"rgbd-scenes (procedural RGB-D scenes, seed {seed}, {side}x{side} pixels):")


@DATASETS.register("rgbd-folder")
@dataset_card(
    modalities="rgb (3, H, W), depth (1, H, W) PNG images",
    rows="as listed in root/train.txt, val.txt, test.txt",
    task="segmentation (num_classes)",
    source="your RGB-D folder (root; the layout NYU Depth V2 is redistributed in)",
)
def rgbd_folder(
    seed: int = 0,
    root: str = "",
    num_classes: Annotated[int, Field(strict=True, ge=2, le=256)] = 0,
    ignore_index: LabelValue = 255,
    depth_scale: Scale = 1e-3,
) -> ItemSplits:
    """An RGB-D segmentation folder (``rgb/``, ``depth/``, ``label/``, split lists; :mod:`.rgbd_folder`)."""
    from .rgbd_folder import rgbd_folder_splits

    _require(root=root, num_classes=num_classes)
    with _param_errors(("root", "num_classes", "ignore_index", "depth_scale")):
        splits = rgbd_folder_splits(root, num_classes, ignore_index, depth_scale)
    return _item_splits(splits, f"rgbd-folder ({root}):")


@DATASETS.register("mm-imdb")
@dataset_card(
    modalities="text (300), poster (4096 VGG features or 3x256x160 pixels)",
    rows="25,959 movies: 15,552 train / 2,608 val / 7,799 test",
    task="multilabel, 23 genres",
    source="MultiBench's multimodal_imdb.hdf5 (root)",
)
def mm_imdb(
    seed: int = 0,
    root: str = "",
    modalities: dict[str, str] | None = None,
    boundaries: tuple[int, int, int] | None = None,
) -> ItemSplits:
    """MultiBench's ``multimodal_imdb.hdf5`` (the file or its folder; :mod:`.mmimdb`); multi-label, 23 genres.
    ``boundaries``: end index of train, val, test (default MultiBench's, valid for the full file only)."""
    from .mmimdb import PUBLISHED_BOUNDARIES, mmimdb_splits

    _require(root=root)
    with _param_errors(("root", "modalities", "boundaries")):
        splits = mmimdb_splits(root, modalities, boundaries or PUBLISHED_BOUNDARIES)
    return _item_splits(splits, f"mm-imdb ({root}, multi-label):")


@DATASETS.register("mfh-ravdess")
@dataset_card(
    modalities="audio (1, 40, 256), image (3, H, W)",
    rows="as listed in root/data_file/spa_*.csv",
    task="classification, 8 emotions",
    source="RAVDESS in the MFH code's layout (root)",
)
def mfh_ravdess(
    seed: int = 0,
    root: str = "",
    num_classes: NumClasses = 8,
    audio_mean: Annotated[float, Field(allow_inf_nan=False)] = -10.59,
    audio_std: Scale = 85.66,
    image_size: tuple[Count, Count] | None = None,
) -> ItemSplits:
    """RAVDESS in the MFH code's layout (``aud_features/``, ``vid_features/``, ``data_file/``; :mod:`.mfh_ravdess`)."""
    from .mfh_ravdess import ravdess_splits

    _require(root=root)
    with _param_errors(("root", "num_classes", "audio_mean", "audio_std", "image_size")):
        splits = ravdess_splits(root, num_classes, audio_mean, audio_std, image_size or None)
    return _item_splits(splits, f"mfh-ravdess ({root}):")


@DATASETS.register("mfh-vggsound")
@dataset_card(
    modalities="audio STFT (1, 513, T), frames (num_frames, 3, 256, 256)",
    rows="the clips under root/train, root/test (and root/val)",
    task="classification (classes of label.json)",
    source="VGGSound in the MFH code's layout (root)",
)
def mfh_vggsound(
    seed: int = 0,
    root: str = "",
    label_json: str | None = None,
    num_frames: Count = 32,
    frame_size: Count = 256,
    audio_frames: Count | None = None,
    val_fraction: Fraction = 0.1,
) -> ItemSplits:
    """VGGSound in the MFH code's layout (``train/``, ``test/``, ``label.json``; :mod:`.mfh_vggsound`); without
    ``val/``, validation is a ``val_fraction`` of train drawn with ``seed`` (``data.split_seed``)."""
    from .mfh_vggsound import vggsound_splits

    _require(root=root)
    with _param_errors(("root", "label_json", "num_frames", "frame_size", "audio_frames", "val_fraction")):
        splits = vggsound_splits(root, label_json, num_frames, frame_size, audio_frames, val_fraction, seed)
    return _item_splits(splits, f"mfh-vggsound ({root}):")


@DATASETS.register("hateful-memes")
@dataset_card(
    modalities="image (3, image_size, image_size) or the processor's pixel_values, text token ids (max_length)",
    rows="the records of root/train.jsonl, dev_seen.jsonl, test_seen.jsonl",
    task="classification, 2 classes (hateful or not)",
    source="Hateful Memes in its JSONL layout (root), tokenized by a pretrained model's tokenizer (tokenizer)",
)
def hateful_memes(
    seed: int = 0,
    root: str = "",
    tokenizer: str = "",
    processor: str | None = None,
    image_size: Annotated[int, Field(strict=True, ge=8, le=4096)] = 64,
    max_length: Annotated[int, Field(strict=True, ge=1, le=8192)] = 32,
) -> ItemSplits:
    """Hateful Memes' JSONL files and images (:mod:`.hateful_memes`); ``tokenizer``: the folder (or hub id) of the
    text model's tokenizer; ``processor``: the image model's folder, whose image processor prepares the images."""
    from .hateful_memes import hateful_memes_splits

    _require(root=root, tokenizer=tokenizer)
    with _param_errors(("root", "tokenizer", "processor", "image_size", "max_length")):
        splits = hateful_memes_splits(root, tokenizer, processor, image_size, max_length)
    return _item_splits(splits, f"hateful-memes ({root}):")


def _require(**values) -> None:
    """Parameters with no sensible default (a path, a class count) must be given."""
    for key, value in values.items():
        if value in ("", 0, None):
            raise ConfigError(f"data.params.{key}: required (e.g. --param {key}=... or data.params.{key} in YAML)")
