"""The bad-input catalogue (docs/errors.md), end to end through the CLI.

Each case: exit code 2, one message on stderr that names the field and what was expected,
and no output folder left behind.
"""

import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

from mmdistill.cli import main

BASE = """\
data: {name: toy-two-modality, params: {n: 200}}
teacher: {model: {modalities: [a, b], encoder: {hidden: [8], out_dim: 8}}}
student: {model: {modalities: [b], encoder: {hidden: [8], out_dim: 8}}}
method: {name: kd}
trainer: {epochs: 1, batch_size: 32, num_threads: 1}
"""


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def files(tmp_path):
    (tmp_path / "ok.yaml").write_text(BASE)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("data: {name: [\n")
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))
    save_file({"head.1.weight": torch.zeros(3, 3)}, str(tmp_path / "shapes.safetensors"))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()


CASES = [  # (id, extra CLI args after `train ok.yaml`, expected message pattern)
    ("unknown-key", ["trainer.epoch=2"], r"trainer\.epoch: unknown key; valid keys: epochs"),
    ("wrong-type", ["trainer.epochs=many"], r"trainer\.epochs: .*'many'"),
    ("negative-lr", ["trainer.optimizer.lr=-1"], r"trainer\.optimizer\.lr: .*greater than 0"),
    ("unknown-enum", ["trainer.precision=fp8"], r"trainer\.precision: .*'32-true'"),
    ("override-without-equals", ["trainer.epochs"], r"expected KEY=VALUE"),
    (
        "unknown-method",
        ["method.name=vid"],
        r"unknown method 'vid'; known: at, c2kd, crd, dist, dkd, .*, hint, kd, .*, supervised",
    ),
    (
        "unknown-method-param",
        ["method.params.temp=3"],
        r"method\.params\.temp: unknown key; valid keys: temperature, lam",
    ),
    ("kd-lam-out-of-range", ["method.params.lam=2"], r"method\.params\.lam: .*less than or equal to 1"),
    ("unknown-masking", ["masking.strategy=blur"], r"unknown masking strategy 'blur'"),
    ("masking-unknown-modality", ["masking.per_modality={c: zeros}"], r"masking\.per_modality\.c: unknown modality"),
    ("unknown-dataset", ["data.name=imagenet"], r"unknown dataset 'imagenet'; known: .*mfeat"),
    ("unknown-dataset-param", ["data.params.size=3"], r"data\.params\.size: unknown parameter"),
    ("unknown-modality", ["student.model.modalities=[depth]"], r"no modality 'depth'; available: a, b"),
    ("unknown-encoder", ["student.model.encoder.type=gru"], r"student\.model\.encoder\.type"),
    (
        "sum-fusion-mismatch",
        ["teacher.model.fusion=sum", "teacher.model.encoders={a: {out_dim: 4}}"],
        r"fusion 'sum' needs equal encoder out_dim",
    ),
    (
        "missing-teacher-ckpt",
        ["teacher.checkpoint={tmp}/none.safetensors"],
        r"teacher\.checkpoint: file .* does not exist",
    ),
    ("pickle-teacher-ckpt", ["teacher.checkpoint={tmp}/evil.safetensors"], r"pickle\b.* never unpickles"),
    (
        "corrupt-teacher-ckpt",
        ["teacher.checkpoint={tmp}/bad.safetensors"],
        r"corrupt or truncated|not a safetensors file",
    ),
    (
        "wrong-teacher-ckpt",
        ["teacher.checkpoint={tmp}/wrong.safetensors"],
        r"teacher\.checkpoint: .*(missing|unexpected)",
    ),
    ("no-teacher", ["teacher=null"], r"method 'kd' needs a teacher"),
    (
        "hint-bad-layer",
        ["method.name=hint", "method.params={student_layer: nope, teacher_layer: head}"],
        r"layer 'nope' not found.*encoders",
    ),
    ("hint-missing-param", ["method.name=hint"], r"method\.params\.student_layer: required key is missing"),
    ("msd-one-modality", ["method.name=msd"], r"needs two or more modalities"),
    (
        "msd-unknown-weighting",
        ["method.name=msd", "method.params.weighting=magic"],
        r"method\.params\.weighting: .*'uniform'",
    ),
    (
        "msd-learned-no-heldout",
        ["method.name=msd", "method.params.weighting=learned", "student.model.modalities=[a,b]"],
        r"heldout_fraction: weighting 'learned' needs a held-out split",
    ),
    (
        "teacher-ckpt-wrong-shapes",
        ["teacher.checkpoint={tmp}/shapes.safetensors"],
        r"teacher\.checkpoint: .*size mismatch",
    ),
]


@pytest.mark.parametrize("case,extra,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_train_input_is_named_and_leaves_nothing(tmp_path, capsys, case, extra, pattern):
    files(tmp_path)
    out = tmp_path / "out"
    args = [
        "train",
        str(tmp_path / "ok.yaml"),
        *[e.replace("{tmp}", str(tmp_path)) for e in extra],
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err, re.S), err
    assert not out.exists(), f"{case}: output left behind"


OTHER = [  # (id, argv with {tmp}, pattern)
    ("missing-config", ["train", "{tmp}/nope.yaml", "--out", "{tmp}/out"], r"config file .* does not exist"),
    ("config-not-mapping", ["train", "{tmp}/list.yaml", "--out", "{tmp}/out"], r"expected a mapping at the top level"),
    ("config-invalid-yaml", ["train", "{tmp}/broken.yaml", "--out", "{tmp}/out"], r"not valid YAML"),
    ("foreign-out-folder", ["train", "{tmp}/ok.yaml", "--out", "{tmp}/foreign"], r"not an mmdistill run"),
    ("evaluate-not-a-run", ["evaluate", "{tmp}/empty"], r"not a run folder \(no config\.yaml\)"),
    ("analyze-not-a-run", ["analyze", "modalities", "{tmp}/empty"], r"not a run folder"),
    ("report-nothing", ["report", "{tmp}/empty"], r"holds no summary\.md"),
    (
        "reproduce-zero-seeds",
        ["reproduce", "mfh-gamma", "--seeds", "0", "--out", "{tmp}/out"],
        r"--seeds: must be a positive integer",
    ),
    ("data-unknown", ["data", "describe", "imagenet"], r"unknown dataset 'imagenet'"),
    ("advise-unknown-modality", ["advise", "--dataset", "mfeat", "--teacher", "pix", "--student", "depth"], r"depth"),
]


@pytest.mark.parametrize("case,argv,pattern", OTHER, ids=[c[0] for c in OTHER])
def test_bad_input_to_other_commands(tmp_path, capsys, case, argv, pattern):
    import re

    files(tmp_path)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err, re.S), err
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "keep me"
