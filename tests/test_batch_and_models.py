import pytest
import torch

from mmdistill.batch import ModalitySpec, validate_inputs
from mmdistill.errors import BatchError, ConfigError
from mmdistill.models import EncoderConfig, FeatureHooks, ModelConfig, build_model
from mmdistill.tasks import validate_labels

SPECS = [ModalitySpec("img", (1, 8, 8)), ModalitySpec("aud", (4, 20)), ModalitySpec("txt", (6,), tokens=True)]


def make_batch(n=5):
    return {
        "img": torch.randn(n, 1, 8, 8),
        "aud": torch.randn(n, 4, 20),
        "txt": torch.randint(0, 50, (n, 6)),
        "txt_mask": torch.ones(n, 6, dtype=torch.long),
        "label": torch.randint(0, 3, (n,)),
        "index": torch.arange(n),
    }


def model(fusion="concat", mods=("img", "aud", "txt")):
    cfg = ModelConfig(
        modalities=list(mods),
        fusion=fusion,
        encoder=EncoderConfig(type="mlp", out_dim=8),
        encoders={
            "img": EncoderConfig(type="cnn2d", channels=[4], out_dim=8),
            "aud": EncoderConfig(type="cnn1d", channels=[4], out_dim=8),
            "txt": EncoderConfig(type="tokens", vocab_size=50, out_dim=8),
        },
    )
    cfg.encoders = {k: v for k, v in cfg.encoders.items() if k in mods}
    return build_model(cfg, SPECS, 3)


@pytest.mark.parametrize("fusion", ["concat", "sum", "late"])
def test_reference_model_fuses_every_modality(fusion):
    m = model(fusion)
    b = make_batch()
    out = m(b)
    assert out.shape == (5, 3)
    b2 = dict(b, aud=b["aud"] + 1.0)
    assert not torch.allclose(m(b2), out), "changing one modality must change the prediction"


def test_missing_modality_is_named():
    b = make_batch()
    del b["aud"]
    with pytest.raises(BatchError, match="'aud'.*no such key"):
        model()(b)


def test_wrong_shape_is_named():
    b = make_batch()
    b["img"] = torch.randn(5, 8, 8)
    with pytest.raises(BatchError, match=r"'img'.*expected shape \(batch, 1, 8, 8\)"):
        model()(b)


def test_wrong_dtype_is_named():
    b = make_batch()
    b["aud"] = b["aud"].double().long()
    with pytest.raises(BatchError, match="'aud'.*floating-point"):
        model()(b)


def test_nan_input_is_named():
    b = make_batch()
    b["aud"][0, 0, 0] = float("nan")
    with pytest.raises(BatchError, match="'aud'.*non-finite"):
        model()(b)


def test_labels_out_of_range():
    with pytest.raises(BatchError, match=r"\[0, 3\).*max 3"):
        validate_labels({"label": torch.tensor([0, 3])}, 3)


def test_model_on_unknown_modality_is_config_error():
    with pytest.raises(ConfigError, match="no modality 'depth'"):
        build_model(ModelConfig(modalities=["depth"]), SPECS, 3)


def test_hooks_capture_features_without_changing_forward():
    m = model()
    b = make_batch()
    plain = m(b)
    with FeatureHooks(m, ["encoders.img", "head.1"]) as feats:
        hooked = m(b)
    assert torch.equal(plain, hooked)
    assert feats["encoders.img"].shape == (5, 8)
    assert torch.equal(feats["head.1"], hooked)


def test_unknown_layer_lists_the_layers():
    with pytest.raises(ConfigError, match="layer 'encoders.nope' not found.*encoders.img"):
        FeatureHooks(model(), ["encoders.nope"])


def test_validate_inputs_rejects_example_count_mismatch():
    b = make_batch()
    b["aud"] = torch.randn(4, 4, 20)
    with pytest.raises(BatchError, match="'aud': 4 examples"):
        validate_inputs(b, SPECS[:2])
