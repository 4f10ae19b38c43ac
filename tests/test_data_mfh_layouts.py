"""The MFH code's RAVDESS and VGGSound layouts (Xue et al., ICLR 2023), written small, read back, and broken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmdistill.data.contracts.transforms import AdditiveNoise
from mmdistill.data.formats.mfh_ravdess import ravdess_splits
from mmdistill.data.formats.mfh_vggsound import spectrogram, vggsound_splits
from mmdistill.errors import DataError
from mmdistill.tasks import get_task

torch.set_num_threads(1)
MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def imagenet(rgb_hwc: np.ndarray) -> np.ndarray:
    return (rgb_hwc.transpose(2, 0, 1) / 255.0 - MEAN) / STD


# --- RAVDESS --------------------------------------------------------------------------------------------------------


def write_ravdess(root: Path, sizes=(("dl", 4), ("val", 2), ("test", 2))) -> dict:
    rng = np.random.default_rng(0)
    for d in ("aud_features", "vid_features/actor1", "data_file"):
        (root / d).mkdir(parents=True)
    audio, label = {}, {}
    k = 0
    for split, n in sizes:
        lines = ["audio,image,label"]
        for _ in range(n):
            a, img = f"clip{k}.npy", f"actor1/face{k}.png"
            audio[a] = rng.normal(-10, 80, (40, 256)).astype(np.float32)
            np.save(root / "aud_features" / a, audio[a])
            Image.fromarray(rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)).save(root / "vid_features" / img)
            label[a] = k % 8
            lines.append(f"{a},{img},{k % 8}")
            k += 1
        (root / "data_file" / f"spa_{split}.csv").write_text("\n".join(lines) + "\n")
    return {"audio": audio, "label": label}


@pytest.fixture
def ravdess(tmp_path):
    return tmp_path, write_ravdess(tmp_path)


def test_ravdess_items_round_trip_with_the_mfh_normalisation(ravdess):
    root, written = ravdess
    splits = ravdess_splits(root)
    assert [len(s) for s in splits] == [4, 2, 2]
    ds = splits.val
    assert ds.task == "classification" and ds.num_classes == 8 and ds.modalities == ("audio", "image") and not ds.random
    item = ds[1]  # clip5
    assert set(item) == {"audio", "image", "label"}
    assert item["audio"].dtype == item["image"].dtype == torch.float32 and item["label"].dtype == torch.int64
    assert item["audio"].shape == (1, 40, 256) and item["image"].shape == (3, 12, 10) and item["label"].shape == ()
    np.testing.assert_allclose(item["audio"][0].numpy(), (written["audio"]["clip5.npy"] + 10.59) / 85.66, rtol=1e-5)
    face = decoded(root / "vid_features" / "actor1" / "face5.png")
    np.testing.assert_allclose(item["image"].numpy(), imagenet(face), rtol=1e-5, atol=1e-6)
    assert item["label"].item() == 5


def test_ravdess_jpeg_and_grey_faces_decode(ravdess):
    root, _ = ravdess
    grey = np.arange(120, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(grey).save(root / "vid_features" / "actor1" / "face0.png")
    image = ravdess_splits(root).train[0]["image"]
    np.testing.assert_allclose(image.numpy(), imagenet(np.repeat(grey[..., None], 3, 2)), rtol=1e-5, atol=1e-6)
    Image.fromarray(np.full((12, 10, 3), 200, np.uint8)).save(root / "vid_features" / "actor1" / "face1.png", "JPEG")
    assert ravdess_splits(root).train[1]["image"].shape == (3, 12, 10)  # a JPEG named .png decodes too


def test_ravdess_in_a_dataloader_with_two_workers_and_audio_noise(ravdess):
    root, _ = ravdess
    splits = ravdess_splits(root, transforms={"train": AdditiveNoise("audio", 0.5)})
    assert splits.train.random and not splits.test.random
    g = torch.Generator().manual_seed(0)
    batches = [list(torch.utils.data.DataLoader(splits.train, batch_size=2, num_workers=2, generator=g)) for _ in "ab"]
    assert batches[0][0]["audio"].shape == (2, 1, 40, 256)
    assert torch.equal(torch.cat([b["label"] for b in batches[0]]), torch.tensor([0, 1, 2, 3]))
    get_task("classification").check_target(batches[0][0]["label"], splits.train.num_classes)  # engine's contract
    noise = batches[0][0]["audio"][0] - splits.train.load(0)["audio"]
    assert 0.4 < noise.std().item() < 0.6
    assert not torch.equal(batches[0][0]["audio"], batches[1][0]["audio"])  # a fresh draw each epoch


@pytest.mark.parametrize(
    "csv_text, message",
    [
        (
            "clip0.npy,actor1/face0.png,0\n",
            r"spa_dl\.csv: line 1 is 'clip0\.npy,actor1/face0\.png,0'; expected the header",
        ),
        ("audio,image,label\n", r"spa_dl\.csv: the split is empty"),
        ("image,audio,label\nclip0.npy,actor1/face0.png,0\n", r"line 1 is 'image,audio,label'; expected the header"),
        ("audio,image\nclip0.npy,actor1/face0.png\n", r"line 1 is 'audio,image'; expected the header"),
        ("", r"spa_dl\.csv: empty"),
        ("audio,image,label\nclip0.npy,actor1/face0.png\n", r"spa_dl\.csv, line 2: expected 3 fields"),
        ("audio,image,label\nclip0.npy,actor1/face0.png,happy\n", r"line 2: label 'happy' is not an integer"),
        ("audio,image,label\nclip0.npy,actor1/face0.png,0\nclip1.npy,actor1/face1.png,8\n", r"line 3: label 8 is out"),
        ("audio,image,label\n../clip0.npy,actor1/face0.png,0\n", r"line 2: file name '\.\./clip0\.npy' must be"),
        ("audio,image,label\nclip9.npy,actor1/face0.png,0\n", r"aud_features/clip9\.npy: train split's audio file not"),
    ],
)
def test_ravdess_bad_csv_names_file_and_line(ravdess, csv_text, message):
    root, _ = ravdess
    (root / "data_file" / "spa_dl.csv").write_text(csv_text)
    with pytest.raises(DataError, match=message):
        ravdess_splits(root)


def test_ravdess_header_names_are_not_required_as_the_columns_are_positional(ravdess):
    root, _ = ravdess
    (root / "data_file" / "spa_dl.csv").write_text("aud_path,img_path,emotion\nclip0.npy,actor1/face0.png,3\n")
    train = ravdess_splits(root).train
    assert len(train) == 1 and train[0]["label"] == 3


def test_ravdess_missing_split_file_and_folder(ravdess):
    root, _ = ravdess
    (root / "data_file" / "spa_test.csv").unlink()
    with pytest.raises(DataError, match=r"spa_test\.csv: split file not found"):
        ravdess_splits(root)
    (root / "vid_features").rename(root / "faces")
    with pytest.raises(DataError, match=r"vid_features: folder not found"):
        ravdess_splits(root)


def test_ravdess_bad_files_are_named_at_read(ravdess):
    root, _ = ravdess
    np.save(root / "aud_features" / "clip1.npy", np.zeros((40, 255), np.float32))
    (root / "aud_features" / "clip2.npy").write_bytes(b"\x93NUMPY garbage")
    (root / "vid_features" / "actor1" / "face3.png").write_bytes(b"not an image")
    nan = np.zeros((40, 256), np.float32)
    nan[3, 4] = np.nan
    np.save(root / "aud_features" / "clip4.npy", nan)
    train = ravdess_splits(root).train
    with pytest.raises(DataError, match=r"clip4\.npy: audio features holds NaN or Inf"):
        ravdess_splits(root).val[0]
    with pytest.raises(DataError, match=r"clip1\.npy: audio features have shape \(40, 255\); expected \(40, 256\)"):
        train[1]
    with pytest.raises(DataError, match=r"clip2\.npy: not a readable \.npy file"):
        train[2]
    with pytest.raises(DataError, match=r"face3\.png: not a readable face image"):
        train[3]
    with pytest.raises(DataError, match=r"face0\.png: image is 12x10 \(HxW\); expected \(224, 224\)"):
        ravdess_splits(root, image_size=(224, 224)).train[0]


# --- VGGSound -------------------------------------------------------------------------------------------------------

T, S = 3, 8  # frames per clip and frame size in the tests (the MFH code: 32 and 256)
LABELS = {"dog": 0, "cat": 1, "car": 2}


def write_vggsound(root: Path, splits=(("train", 6), ("test", 3)), length: int = 4000) -> dict:
    rng = np.random.default_rng(0)
    written = {}
    (root / "label.json").write_text(json.dumps(LABELS))
    classes = list(LABELS)
    for split, n in splits:
        (root / split / "video_jpg").mkdir(parents=True)
        (root / split / "audio_npy").mkdir()
        for i in range(n):
            name = f"yt_{split}{i}_{classes[i % 3]}_{i:06d}"  # the class is the second-to-last '_' field
            frames = rng.integers(0, 256, (T * S, S, 3)).astype(np.uint8)
            Image.fromarray(frames).save(root / split / "video_jpg" / f"{name}.jpg", quality=95)
            wave = rng.normal(0, 0.3, (1, length)).astype(np.float32)
            np.save(root / split / "audio_npy" / f"{name}.npy", wave)
            written[name] = wave
    return written


@pytest.fixture
def vgg(tmp_path):
    return tmp_path, write_vggsound(tmp_path)


def reference_magnitude(w: np.ndarray, n_fft: int = 1024, hop: int = 512) -> np.ndarray:
    """|STFT| by hand: reflect-pad n_fft/2, periodic Hann, rfft per frame -> (n_fft/2 + 1, frames)."""
    w = w / (1.1 * np.abs(w).max())
    p = np.pad(w.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [p[i : i + n_fft] * window for i in range(0, len(p) - n_fft + 1, hop)]
    return np.abs(np.fft.rfft(np.stack(frames), axis=1)).T


def test_spectrogram_matches_a_hand_computed_stft_and_finds_a_tone():
    rng = np.random.default_rng(1)
    w = rng.normal(size=5000).astype(np.float32)
    spec = spectrogram(torch.from_numpy(w))
    assert spec.shape == (1, 513, 1 + 5000 // 512)
    np.testing.assert_allclose(spec[0].numpy(), reference_magnitude(w), rtol=1e-4, atol=1e-4)
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)  # 1 kHz = bin 64 at 16 kHz
    assert (spectrogram(torch.from_numpy(tone))[0, :, 5:-5].argmax(0) == 64).all()
    assert torch.equal(spectrogram(torch.zeros(2048)), torch.zeros(1, 513, 5))  # silence stays 0, not NaN


def test_vggsound_items_round_trip(vgg):
    root, written = vgg
    splits = vggsound_splits(root, num_frames=T, frame_size=S, val_fraction=0.34)
    assert [len(s) for s in splits] == [4, 2, 3]
    ds = splits.test
    assert ds.task == "classification" and ds.num_classes == 3 and ds.modalities == ("video", "audio")
    item = ds[1]  # yt_test1_cat_000001
    assert set(item) == {"video", "audio", "label"} and item["label"].dtype == torch.int64 and item["label"] == 1
    assert item["video"].shape == (T, 3, S, S) and item["audio"].shape == (1, 513, 8)
    stacked = decoded(root / "test" / "video_jpg" / "yt_test1_cat_000001.jpg")
    expected = np.stack([imagenet(f) for f in stacked.reshape(T, S, S, 3)])
    np.testing.assert_allclose(item["video"].numpy(), expected, rtol=1e-5, atol=1e-5)
    ref = reference_magnitude(written["yt_test1_cat_000001"][0])
    np.testing.assert_allclose(item["audio"][0].numpy(), ref, rtol=1e-4, atol=1e-4)
    names = sorted(n for n in written if "train" in n)
    used = sorted(c[0].stem for c in splits.train.clips + splits.val.clips)
    assert used == names and not {c[0] for c in splits.train.clips} & {c[0] for c in splits.val.clips}


def test_vggsound_val_folder_frame_folders_and_fixed_audio_frames(vgg):
    root, _ = vgg
    (root / "val" / "video_jpg" / "yt_v0_dog_000000").mkdir(parents=True)
    (root / "val" / "audio_npy").mkdir()
    frames = [np.full((S, S, 3), 40 * k, np.uint8) for k in range(5)]
    for k, f in enumerate(frames):
        Image.fromarray(f).save(root / "val" / "video_jpg" / "yt_v0_dog_000000" / f"{k:03d}.png")
    np.save(root / "val" / "audio_npy" / "yt_v0_dog_000000.npy", np.ones(3000, np.float32))
    splits = vggsound_splits(root, num_frames=T, frame_size=S, audio_frames=13)
    assert [len(s) for s in splits] == [6, 1, 3]
    item = splits.val[0]
    assert item["audio"].shape == (1, 513, 13) and splits.train[0]["audio"].shape == (1, 513, 13)
    picked = [imagenet(frames[k]) for k in (0, 2, 4)]  # three frames evenly spaced over five
    np.testing.assert_allclose(item["video"].numpy(), np.stack(picked), rtol=1e-5, atol=1e-6)


def test_vggsound_in_a_dataloader_with_two_workers(vgg):
    root, _ = vgg
    test = vggsound_splits(root, num_frames=T, frame_size=S).test
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=3, num_workers=2)))
    assert batch["video"].shape == (3, T, 3, S, S) and batch["audio"].shape == (3, 1, 513, 8)
    assert batch["label"].tolist() == [0, 1, 2]
    get_task("classification").check_target(batch["label"], test.num_classes)  # the engine's target contract


def test_vggsound_bad_layouts(vgg):
    root, _ = vgg
    with pytest.raises(DataError, match=r"labels\.json: label JSON not found"):
        vggsound_splits(root, label_json=root / "labels.json", num_frames=T, frame_size=S)
    (root / "bad.json").write_text('{"dog": 0, "cat": 2}')
    with pytest.raises(DataError, match=r"bad\.json: class ids must be the distinct integers 0\.\.1"):
        vggsound_splits(root, label_json=root / "bad.json", num_frames=T, frame_size=S)
    (root / "small.json").write_text('{"dog": 0, "cat": 1}')
    with pytest.raises(DataError, match=r"yt_train2_car_000002\.jpg: class 'car' of clip .* not in the label JSON"):
        vggsound_splits(root, label_json=root / "small.json", num_frames=T, frame_size=S)
    (root / "test" / "audio_npy" / "yt_test2_car_000002.npy").unlink()
    with pytest.raises(DataError, match=r"yt_test2_car_000002\.npy: test split's audio file not found"):
        vggsound_splits(root, num_frames=T, frame_size=S)
    (root / "test" / "audio_npy").rename(root / "test" / "audio")
    with pytest.raises(DataError, match=r"test/audio_npy: folder not found"):
        vggsound_splits(root, num_frames=T, frame_size=S)


def test_vggsound_bad_files_are_named_at_read(vgg):
    root, _ = vgg
    audio = root / "test" / "audio_npy"
    np.save(audio / "yt_test0_dog_000000.npy", np.zeros((2, 4000), np.float32))
    np.save(audio / "yt_test1_cat_000001.npy", np.zeros((1, 300), np.float32))
    (audio / "yt_test2_car_000002.npy").write_bytes(b"garbage")
    test = vggsound_splits(root, num_frames=T, frame_size=S).test
    with pytest.raises(DataError, match=r"yt_test0_dog_000000\.npy: waveform has shape \(2, 4000\)"):
        test[0]
    with pytest.raises(DataError, match=r"yt_test1_cat_000001\.npy: waveform has shape \(300,\).*L > 512"):
        test[1]
    with pytest.raises(DataError, match=r"yt_test2_car_000002\.npy: not a readable \.npy file"):
        test[2]
    with pytest.raises(
        DataError, match=r"yt_test0_dog_000000\.jpg: image is 8x24 \(WxH\); expected 8x32: num_frames=4"
    ):
        vggsound_splits(root, num_frames=4, frame_size=S).test[0]
    (root / "test" / "video_jpg" / "yt_test0_dog_000000.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"yt_test0_dog_000000\.jpg: not a readable video image"):
        vggsound_splits(root, num_frames=T, frame_size=S).test[0]
