"""Reference models for raw inputs: ResNet image encoder, spectrogram CNN, U-Net segmentation net, AV classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.errors import BatchError, ConfigError
from mmdistill.models.av_classifier import build_av_classifier
from mmdistill.models.encoders import EncoderConfig
from mmdistill.models.hooks import FeatureHooks
from mmdistill.models.resnet import ResNetEncoder, resnet_encoder
from mmdistill.models.segmentation import build_segmentation_net
from mmdistill.models.spectrogram_cnn import SpectrogramCNNEncoder, TimeFrequencyPool, spectrogram_encoder
from mmdistill.registry import ENCODERS

torch.set_num_threads(1)


def rgbd(n: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randn(n, 3, h, w, generator=g),
        "depth": torch.randn(n, 1, h, w, generator=g),
        "label": torch.zeros(n, h, w, dtype=torch.long),
        "index": torch.arange(n),
    }


class Head(nn.Module):
    """Encoder + linear layer, as a model for the encoder tests."""

    def __init__(self, encoder: nn.Module, key: str, classes: int = 4) -> None:
        super().__init__()
        self.modalities, self.key = (key,), key
        self.enc, self.out = encoder, nn.Linear(encoder.out_dim, classes)

    def forward(self, batch):
        return self.out(self.enc(batch[self.key]))


def test_encoders_are_registered_by_name():
    assert ENCODERS.get("resnet") is ResNetEncoder and ENCODERS.get("spec_cnn") is SpectrogramCNNEncoder


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 17, 23), (20, 9), (3, 1, 1)])
def test_resnet_feature_shape_for_any_image_size(shape):
    enc = resnet_encoder(shape, widths=(8, 16, 32), blocks=(1, 2, 1), out_dim=24)
    assert enc(torch.randn(2, *shape)).shape == (2, 24) and enc.out_dim == 24
    assert sum(isinstance(m, nn.Module) and type(m).__name__ == "BasicBlock" for m in enc.modules()) == 4


def test_resnet_takes_the_shared_encoder_config():
    enc = ResNetEncoder((3, 16, 16), EncoderConfig(channels=[8, 16], out_dim=12, dropout=0.1))
    assert enc(torch.randn(2, 3, 16, 16)).shape == (2, 12)
    assert [n for n, _ in enc.body.named_children()] == ["stem", "layer1", "layer2"]


@pytest.mark.parametrize("shape,t", [((40, 256), 256), ((40, 256), 37), ((1, 64, 33), 100), ((2, 5, 3), 1)])
def test_spectrogram_cnn_takes_any_length(shape, t):
    enc = spectrogram_encoder(shape, widths=(8, 16), out_dim=20)
    x = torch.randn(2, *shape[:-1], t)
    assert enc(x).shape == (2, 20)


def test_time_frequency_pool_is_mean_over_frequency_then_max_plus_mean_over_time():
    x = torch.tensor([[[[1.0, 2.0, 6.0], [3.0, 0.0, 2.0]]]])  # (B=1, C=1, F=2, T=3): mean over F = [2, 1, 4]
    torch.testing.assert_close(TimeFrequencyPool()(x), torch.tensor([[4.0 + 7.0 / 3.0]]))


def test_spectrogram_feature_sees_the_last_time_frame():
    enc = spectrogram_encoder((16, 300), widths=(8, 16)).eval()
    x = torch.randn(1, 16, 300)
    y = x.clone()
    y[..., -1] += 5.0
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(y))


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (9, 5), (1, 7)])
@pytest.mark.parametrize("fusion,upsample", [("sum", "nearest"), ("concat", "bilinear")])
def test_segmentation_logits_at_input_resolution(hw, fusion, upsample):
    net = build_segmentation_net(
        ["rgb", "depth"], {"rgb": 3, "depth": 1}, 5, widths=(8, 12, 16), fusion=fusion, upsample=upsample
    )
    assert net(rgbd(2, *hw)).shape == (2, 5, *hw)


def test_segmentation_depth_may_come_without_its_channel_axis():
    net = build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, 3, widths=(8, 16)).eval()
    b = rgbd(2, 10, 12)
    assert torch.equal(net(b), net({**b, "depth": b["depth"][:, 0]}))


def models_and_batches():
    """(name, model, batch, loss(out, batch)) for every reference model, on small fixed inputs."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    img = {"image": torch.randn(8, 3, 16, 16, generator=g), "label": torch.arange(8) % 4}
    aud = {"audio": torch.randn(8, 20, 32, generator=g), "label": torch.arange(8) % 4}
    seg = rgbd(4, 12, 12)
    seg["label"] = (seg["rgb"][:, 0] > 0).long() + 2 * (seg["depth"][:, 0] > 0).long()  # depth disambiguates classes
    ce = lambda out, b: F.cross_entropy(out, b["label"])  # noqa: E731
    return [
        ("resnet", Head(resnet_encoder((3, 16, 16), widths=(8, 16), out_dim=16), "image"), img, ce),
        ("spec_cnn", Head(spectrogram_encoder((20, 32), widths=(8, 16), out_dim=16), "audio"), aud, ce),
        ("segmentation", build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, 4, widths=(8, 16)), seg, ce),
        (
            "segmentation_concat",
            build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, 4, widths=(8, 16), fusion="concat"),
            seg,
            ce,
        ),
        (
            "av_classifier",
            build_av_classifier(
                4, image_shape=[3, 16, 16], audio_shape=[20, 32], image_widths=[8, 16], audio_widths=[8, 16], out_dim=16
            ),
            {**img, **aud},
            ce,
        ),
        (
            "av_late",
            build_av_classifier(
                4,
                image_shape=[3, 16, 16],
                audio_shape=[20, 32],
                image_widths=[8, 16],
                audio_widths=[8, 16],
                out_dim=16,
                fusion="late",
            ),
            {**img, **aud},
            ce,
        ),
    ]


@pytest.mark.parametrize("case", models_and_batches(), ids=lambda c: c[0])
def test_gradients_reach_every_parameter(case):
    _, model, batch, loss = case
    loss(model(batch), batch).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("case", models_and_batches(), ids=lambda c: c[0])
def test_eval_is_deterministic_and_per_example(case):
    _, model, batch, _ = case
    model.train()
    model(batch)  # moves the BatchNorm running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        full = model(batch)
        again = model(batch)
        first = model({k: v[:1] for k, v in batch.items()})
    assert torch.equal(full, again)
    torch.testing.assert_close(first, full[:1], rtol=1e-4, atol=1e-5)  # eval BatchNorm: no cross-example mixing


@pytest.mark.parametrize("case", models_and_batches(), ids=lambda c: c[0])
def test_overfits_one_fixed_batch(case):
    _, model, batch, loss = case
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        value = loss(model(batch), batch)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    assert losses[-1] < 0.25 * losses[0], losses


def test_hooks_on_named_layers():
    net = build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, 5, widths=(8, 12, 16))
    paths = ["encoders.depth.layer3", "fuse.1", "decoder.up1", "decoder.up2", "decoder.out"]
    with FeatureHooks(net, paths) as feats:
        out = net(rgbd(2, 17, 23))
    assert {p: tuple(f.shape) for p, f in feats.items()} == {
        "encoders.depth.layer3": (2, 16, 5, 6),
        "fuse.1": (2, 12, 9, 12),
        "decoder.up1": (2, 12, 9, 12),
        "decoder.up2": (2, 8, 17, 23),
        "decoder.out": (2, 5, 17, 23),
    }
    assert torch.equal(feats["decoder.out"], out)
    enc = Head(resnet_encoder((3, 32, 32)), "image")
    spec = Head(spectrogram_encoder((40, 256)), "audio")
    with (
        FeatureHooks(enc, ["enc.body.layer3", "enc.proj"]) as f1,
        FeatureHooks(spec, ["enc.blocks.1", "enc.pool"]) as f2,
    ):
        enc({"image": torch.randn(2, 3, 32, 32)})
        spec({"audio": torch.randn(2, 40, 256)})
    assert tuple(f1["enc.body.layer3"].shape) == (2, 64, 8, 8) and tuple(f1["enc.proj"].shape) == (2, 64)
    assert tuple(f2["enc.blocks.1"].shape) == (2, 32, 10, 64) and tuple(f2["enc.pool"].shape) == (2, 64)


def test_rgb_only_student_ignores_depth():
    student = build_segmentation_net(["rgb"], {"rgb": 3, "depth": 1}, 4, widths=(8, 16)).eval()
    assert student.modalities == ("rgb",) and list(student.encoders) == ["rgb"]
    b = rgbd(2, 12, 10)
    with torch.no_grad():
        ref = student(b)
        assert torch.equal(student({**b, "depth": torch.full_like(b["depth"], float("nan"))}), ref)
        assert torch.equal(student({"rgb": b["rgb"]}), ref)
        assert torch.equal(student({**b, "depth": torch.randn(5, 2, 3)}), ref)  # a depth of any shape is not read


def test_av_classifier_either_input_alone():
    audio_only = build_av_classifier(6, audio_shape=[40, 64])
    assert audio_only.modalities == ("audio",) and audio_only({"audio": torch.randn(3, 40, 64)}).shape == (3, 6)
    face = build_av_classifier(6, image_shape=[48, 48], image_key="face")
    assert face.modalities == ("face",) and face({"face": torch.randn(3, 48, 48)}).shape == (3, 6)


def test_segmentation_bad_batches_name_the_modality():
    net = build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, 3, widths=(8,))
    b = rgbd(2, 8, 8)
    with pytest.raises(BatchError, match="reads modality 'depth'.*present: rgb"):
        net({"rgb": b["rgb"], "label": b["label"]})
    with pytest.raises(BatchError, match=r"'rgb': expected shape \(batch, 3, height, width\), got \(2, 1, 8, 8\)"):
        net({**b, "rgb": b["depth"]})
    with pytest.raises(BatchError, match=r"'depth': 2 examples of \(8, 7\) pixels, but 'rgb' has 2 of \(8, 8\)"):
        net({**b, "depth": b["depth"][..., :7]})
    with pytest.raises(BatchError, match="'rgb': expected a floating-point tensor"):
        net({**b, "rgb": b["rgb"].long()})
    with pytest.raises(BatchError, match="reads modality 'audio'"):
        build_av_classifier(3, audio_shape=[8, 8])({"image": torch.randn(1, 8, 8)})


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_segmentation_net(["rgb", "depth"], {"rgb": 3}, 3), "in_channels: no entry for modality 'depth'"),
        (lambda: build_segmentation_net(["rgb"], {"rgb": 3}, 3, fusion="max"), "params.fusion"),
        (lambda: build_segmentation_net(["rgb"], {"rgb": 3}, 3, widthz=[8]), "params.widthz: unknown key; valid keys"),
        (lambda: build_segmentation_net(["rgb", "rgb"], {"rgb": 3}, 3), "listed twice"),
        (lambda: build_segmentation_net(["label"], {"label": 3}, 3), "reserved batch keys"),
        (lambda: build_segmentation_net(["rgb"], {"rgb": True}, 3), "params.in_channels.rgb"),
        (lambda: build_segmentation_net(["rgb"], {"rgb": 3}, 3, widths=(8, 16), blocks=[1]), "list of 2"),
        (lambda: build_av_classifier(3), "image_shape, audio_shape or both"),
        (lambda: resnet_encoder((3, 4, 4, 4)), r"encoder resnet: needs \(channels, height, width\)"),
        (lambda: resnet_encoder((3, 8, 8), widths=()), "params.channels|resnet.channels"),
        (lambda: spectrogram_encoder((100,)), r"encoder spec_cnn: needs \(frequency, time\)"),
    ],
)
def test_bad_settings_raise_config_errors_naming_the_key(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_av_classifiers_train_through_distill_with_a_hint_on_named_layers(tmp_path):
    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data.contracts.dataset import DataSplits, MultimodalDataset
    from mmdistill.engine.api import distill

    g = torch.Generator().manual_seed(0)

    def split(n: int, name: str) -> MultimodalDataset:
        y = torch.arange(n) % 3
        image = torch.randn(n, 3, 12, 12, generator=g) + y.view(-1, 1, 1, 1)
        audio = torch.randn(n, 8, 16, generator=g) - y.view(-1, 1, 1)
        return MultimodalDataset({"image": image, "audio": audio}, y, 3, name)

    data = DataSplits(split(48, "train"), split(12, "val"), split(12, "test"))
    torch.manual_seed(0)
    teacher = build_av_classifier(3, image_shape=[3, 12, 12], audio_shape=[8, 16], image_widths=[8], audio_widths=[8])
    student = build_av_classifier(3, audio_shape=[8, 16], audio_widths=[8, 8], out_dim=16)
    layers = {"student_layer": "encoders.audio.blocks.1", "teacher_layer": "encoders.image.body.layer1"}
    result = distill(
        student,
        teacher,
        data,
        tmp_path / "run",
        "hint",
        layers,
        trainer=TrainerConfig(epochs=2, batch_size=16),
        cache=CacheConfig(dir=tmp_path / "cache"),
    )
    assert 0.0 <= result.test["accuracy"] <= 100.0 and (tmp_path / "run" / "student.safetensors").is_file()


def test_a_hooked_batchnorm_output_is_not_overwritten_by_the_next_relu():
    net = build_segmentation_net(["rgb"], {"rgb": 3}, 3, widths=(8, 16), fusion="concat")
    paths = ["encoders.rgb.stem.1", "fuse.0.mix.1", "decoder.up1.conv.0.1"]
    with FeatureHooks(net, paths) as feats:
        net(rgbd(2, 8, 8))
    assert all(bool((feats[p] < 0).any()) for p in paths)  # BatchNorm outputs, before the ReLU


def test_resnet_and_spec_cnn_from_a_config_with_encoder_params():
    from mmdistill.batch import ModalitySpec
    from mmdistill.models import ModelConfig, build_model

    def blocks(params):
        enc = {"type": "resnet", "channels": [4, 8], **({"params": params} if params else {})}
        cfg = ModelConfig.model_validate(
            {
                "modalities": ["image", "audio"],
                "encoders": {"image": enc, "audio": {"type": "spec_cnn", "channels": [4], "out_dim": 8}},
            }
        )
        model = build_model(cfg, [ModalitySpec("image", (3, 16, 16)), ModalitySpec("audio", (20, 30))], 5)
        out = model({"image": torch.randn(2, 3, 16, 16), "audio": torch.randn(2, 20, 30)})
        assert out.shape == (2, 5)
        return sum(1 for name, _ in model.named_modules() if name.endswith("conv1"))

    assert blocks(None) == 2 and blocks({"blocks": 2}) == 4 and blocks({"blocks": [1, 3]}) == 4
