"""The teacher cache's key covers the masking strategy whenever the method asks for modality views: a run that
changes ``masking.strategy`` never reads the teacher's views masked the old way (a stale cache)."""

from __future__ import annotations

import torch

from mmdistill.engine.teacher import cache_key, cached_table, teacher_outputs
from mmdistill.masking import Masker, NullValue
from mmdistill.methods.base import TeacherRequest
from mmdistill.models.multimodal import ModelConfig, build_model
from mmdistill.registry import MASKERS

VIEWS = TeacherRequest(views=(("a",), ("b",)))  # what MSD asks for: the teacher on each modality alone


class MinusOne(NullValue):
    """x_m <- -1: a strategy without state, like ``zeros`` (so only its name tells them apart)."""

    def forward(self, x):
        return torch.full_like(x, -1.0)


def _teacher(data):
    torch.manual_seed(0)
    enc = {"hidden": [8], "out_dim": 6}
    return build_model(ModelConfig(modalities=["a", "b"], encoder=enc), data.train.specs(), data.num_classes).eval()


def _registered():
    if "test_minus_one" not in MASKERS:
        MASKERS.register("test_minus_one")(MinusOne)


def test_the_key_differs_by_masking_strategy_when_the_method_asks_for_views(toy_splits):
    _registered()
    teacher, specs = _teacher(toy_splits), toy_splits.train.specs()
    keys = {s: cache_key(teacher, toy_splits.train, VIEWS, Masker(specs, s)) for s in ("zeros", "test_minus_one")}
    assert keys["zeros"] != keys["test_minus_one"]
    plain = TeacherRequest()  # no views: the masking is not used, so one cache serves every strategy
    assert cache_key(teacher, toy_splits.train, plain, Masker(specs, "zeros")) == cache_key(
        teacher, toy_splits.train, plain, Masker(specs, "test_minus_one")
    )


def test_changing_the_masking_strategy_does_not_read_a_stale_cache(toy_splits, tmp_path):
    _registered()
    teacher, specs, cpu = _teacher(toy_splits), toy_splits.train.specs(), torch.device("cpu")
    _, hit = cached_table(teacher, toy_splits.train, VIEWS, Masker(specs, "zeros"), tmp_path, 64, cpu)
    assert not hit
    minus_one = Masker(specs, "test_minus_one")
    table, hit = cached_table(teacher, toy_splits.train, VIEWS, minus_one, tmp_path, 64, cpu)
    assert not hit, "the cache built with masking 'zeros' was read for masking 'test_minus_one'"
    batch = toy_splits.train.__getitems__(range(5))
    with torch.no_grad():
        fresh = teacher_outputs(teacher, batch, VIEWS, minus_one)
    torch.testing.assert_close(table.lookup(batch, cpu).view_logits, fresh.view_logits)
