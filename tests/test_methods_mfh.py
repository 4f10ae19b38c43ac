"""MFH modality-general KD as a method: scores from a CSV or Algorithm 1 in prepare(), top-r kept, the rest zeroed."""

from __future__ import annotations

import pytest
import torch

from mmdistill.engine.api import build_method
from mmdistill.engine.teacher import model_hash, teacher_outputs
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker
from mmdistill.methods.base import TeacherRequest
from mmdistill.models.hooks import FeatureHooks
from mmdistill.models.multimodal import ModelConfig, build_model

LAYER = "encoders.a.body.1"  # the ReLU after the first Linear(16, 8): 8 channels


@pytest.fixture
def pair(toy_splits):
    torch.manual_seed(0)
    specs = toy_splits.train.specs()
    enc = {"hidden": [8], "out_dim": 6}
    teacher = build_model(ModelConfig(modalities=["a"], encoder=enc), specs, toy_splits.num_classes)
    student = build_model(ModelConfig(modalities=["b"], encoder=enc), specs, toy_splits.num_classes)
    masker = Masker(specs, "zeros").fit(toy_splits.train.feature_mean())
    return toy_splits, teacher.eval(), student, masker


def write_scores(path, scores):
    path.write_text("channel,score,raw,rank\n" + "".join(f"{c},{s},0,0\n" for c, s in enumerate(scores)))
    return str(path)


def test_csv_scores_keep_the_top_channels_and_zero_the_rest(pair, tmp_path):
    data, teacher, student, masker = pair
    scores = [0.1, 0.9, 0.3, 1.0, 0.0, 0.8, 0.2, 0.4]  # top half: channels 3, 1, 5, 7
    method = build_method(
        "mfh_general",
        {"teacher_layer": LAYER, "keep_ratio": 0.5, "scores_csv": write_scores(tmp_path / "s.csv", scores)},
        masker,
    )
    sample = data.train.__getitems__(range(16))
    method.setup(sample, student, teacher)
    with FeatureHooks(teacher, [LAYER]) as f:
        teacher(sample)
    before, hash_before, logits_before = f[LAYER].clone(), model_hash(teacher), teacher(sample)
    method.prepare(data.train, teacher, torch.device("cpu"))
    assert method.keep_mask.nonzero().flatten().tolist() == [1, 3, 5, 7]
    with FeatureHooks(teacher, [LAYER]) as f:
        logits_after = teacher(sample)
    after = f[LAYER]
    torch.testing.assert_close(after[:, [1, 3, 5, 7]], before[:, [1, 3, 5, 7]])
    assert (after[:, [0, 2, 4, 6]] == 0).all()
    assert not torch.allclose(logits_after, logits_before)  # the distilled teacher is the modified one
    assert model_hash(teacher) != hash_before  # so the teacher cache cannot serve the unmodified teacher's outputs
    out = teacher_outputs(teacher, sample, TeacherRequest(), masker)
    torch.testing.assert_close(out.logits, logits_after)
    method.restore_teacher(teacher)
    assert model_hash(teacher) == hash_before
    torch.testing.assert_close(teacher(sample), logits_before)


def test_scores_computed_in_prepare_are_deterministic_and_leave_the_rng_alone(pair):
    data, teacher, student, masker = pair
    params = {
        "teacher_layer": LAYER,
        "keep_ratio": 0.25,
        "salience_epochs": 30,
        "salience_examples": 200,
        "fill": "mean",
    }
    method = build_method("mfh_general", params, masker)
    method.setup(data.train.__getitems__(range(8)), student, teacher)
    rng = torch.get_rng_state()
    method.prepare(data.train, teacher, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched (resume stays bitwise)
    assert int(method.keep_mask.sum()) == 2 and 0 <= float(method.scores.min()) and float(method.scores.max()) == 1
    # computing again (e.g. on resume) gives the same scores
    method.restore_teacher(teacher)
    batch = data.train.__getitems__(range(200))
    again = method.compute_scores(data.train, teacher, torch.device("cpu"))
    torch.testing.assert_close(again, method.scores)
    # mean fill: the removed channels output their mean over the scored examples
    method.prepare(data.train, teacher, torch.device("cpu"))
    with FeatureHooks(teacher, [LAYER]) as f:
        teacher(batch)
    dropped = (~method.keep_mask).nonzero().flatten()
    assert torch.allclose(f[LAYER][:, dropped], method._fill[dropped].expand(200, -1))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("a,b\n1,2\n", "needs the columns channel and score"),
        ("channel,score\n0,0.5\n1,x\n", "not a number"),
        ("channel,score\n0,0.5\n1,0.2\n", "the teacher layer has 8"),
    ],
)
def test_bad_scores_csv_is_a_config_error_naming_the_field(pair, tmp_path, content, message):
    data, teacher, student, masker = pair
    path = tmp_path / "s.csv"
    if content is not None:
        path.write_text(content)
    method = build_method("mfh_general", {"teacher_layer": LAYER, "scores_csv": str(path)}, masker)
    with pytest.raises(ConfigError, match="method.params.scores_csv") as err:
        method.setup(data.train.__getitems__(range(8)), student, teacher)
    assert message in str(err.value)
