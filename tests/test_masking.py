import pytest
import torch

from mmdistill.batch import ModalitySpec
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker, split_variants

SPECS = [ModalitySpec("a", (3,)), ModalitySpec("b", (2,)), ModalitySpec("t", (4,), tokens=True)]


def batch():
    return {
        "a": torch.ones(2, 3),
        "b": torch.full((2, 2), 2.0),
        "t": torch.tensor([[5, 6, 7, 0]] * 2),
        "t_mask": torch.tensor([[1, 1, 1, 0]] * 2),
        "label": torch.tensor([0, 1]),
        "index": torch.tensor([7, 9]),
    }


def test_zeros_removes_only_the_named_modality():
    out = Masker(SPECS, "zeros").remove(batch(), ["a"])
    assert torch.equal(out["a"], torch.zeros(2, 3))
    assert torch.equal(out["b"], batch()["b"])


def test_mean_uses_training_mean():
    m = Masker(SPECS, "zeros", per_modality={"a": "mean"}).fit({"a": torch.tensor([1.0, 2.0, 3.0])})
    assert torch.equal(m.remove(batch(), ["a"])["a"], torch.tensor([[1.0, 2.0, 3.0]] * 2))


def test_mean_without_fit_is_an_error():
    with pytest.raises(ConfigError, match="training mean"):
        Masker(SPECS, "zeros", per_modality={"a": "mean"}).remove(batch(), ["a"])


def test_learned_token_is_a_trainable_parameter():
    m = Masker(SPECS, "zeros", per_modality={"b": "learned"})
    out = m.remove(batch(), ["b"])
    out["b"].sum().backward()
    token = m.nulls["b"].token
    assert token.grad is not None and torch.equal(token.grad, torch.full((2,), 2.0))


def test_attention_masks_tokens_and_keeps_ids():
    out = Masker(SPECS, "attention").remove(batch(), ["t"])
    assert torch.equal(out["t"], batch()["t"])
    assert out["t_mask"].sum() == 0


def test_keep_only_and_variants_stack_views():
    m = Masker(SPECS, "zeros")
    only_a = m.keep_only(batch(), "a")
    assert only_a["b"].abs().sum() == 0 and only_a["t_mask"].sum() == 0 and only_a["a"].sum() == 6
    v = m.variants(batch(), ["a", "b"])
    assert v["a"].shape == (6, 3) and torch.equal(v["index"], torch.tensor([7, 9] * 3))
    views = split_variants(v["b"], 3)
    assert torch.equal(views[0], batch()["b"]) and views[1].abs().sum() == 0 and torch.equal(views[2], batch()["b"])


def test_unknown_strategy_lists_known():
    with pytest.raises(ConfigError, match="unknown masking strategy 'blur'.*attention.*zeros"):
        Masker(SPECS, "blur")
