"""Behaviour the type checker pointed at: each test names the case it pins."""

from __future__ import annotations

import pytest
import torch

from mmdistill.errors import ConfigError
from mmdistill.mfh.ensemble import Run, fit_sequential, make_mlp, train_runs


def _kd_run_without_targets() -> Run:
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    return Run(make_mlp(3, ()), x, y, soft_targets=None, ce_weight=1.0, kd_weight=1.0)


@pytest.mark.parametrize("train", [fit_sequential, train_runs], ids=["alone", "batched"])
def test_a_kd_weight_without_soft_targets_is_refused_by_both_trainers(train):
    with pytest.raises(ConfigError, match="run 0 has kd_weight 1.0 but no soft_targets"):
        train([_kd_run_without_targets()], epochs=1)


ITEM_DATA = ("rgbd-scenes", {"n_scenes": 10, "size": 8})  # procedural scenes: item data, no files needed


def test_the_mfh_pairs_of_an_item_dataset_are_refused_naming_the_dataset():
    from mmdistill.mfh.pairs import load_pairs

    with pytest.raises(ConfigError, match=r"rgbd-scenes: its examples are read one at a time from files \(item data\)"):
        load_pairs(*ITEM_DATA, teacher="rgb", student="depth")


def test_advise_on_an_item_dataset_by_name_reads_its_items_and_refuses_a_task_other_than_classification():
    from mmdistill.advisor.inputs import load_advisor_inputs
    from mmdistill.errors import DataError

    with pytest.raises(DataError, match=r"advise: the data's task is 'segmentation'; .* single-label classification"):
        load_advisor_inputs(*ITEM_DATA, teacher="rgb", student="depth")
