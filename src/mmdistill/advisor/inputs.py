"""The advisor's inputs from a registered dataset: teacher and student features, one or several modalities each.

A multimodal teacher (say image + audio) against a unimodal student (audio) is the common crossmodal
case (MFH Table 1: a better multimodal teacher, a worse student). Each modality is flattened; one
wider than the dataset's PCA width (:data:`mmdistill.mfh.pairs.DEFAULT_PCA`, as the measuring
protocol does) is projected on its training split's top principal components; each is standardised
with the training split's statistics; a side's modalities are concatenated in the order given.
:func:`load_run_inputs` takes the teacher side from a trained teacher in a run folder instead (its
logits on the training split: the knowledge KD actually distils).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from ..mfh.pairs import DEFAULT_MODALITIES, _pca_basis


@dataclass
class AdvisorInputs:
    dataset: str
    teacher: list[str]
    student: list[str]
    num_classes: int
    xa: Tensor
    xb: Tensor
    y: Tensor


def _names(value, role: str, default: str | None, dataset: str) -> list[str]:
    if value is None or value == "" or value == []:
        if default is None:
            raise ConfigError(f"advise: name the {role} modality (--{role}) for dataset {dataset!r}; it has no default")
        return [default]
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"advise --{role}: expected distinct modality names separated by commas, got {value!r}")
    return names


def load_advisor_inputs(
    dataset: str,
    params: dict | None = None,
    teacher=None,
    student=None,
    seed: int = 0,
    pca: int | None = -1,
    max_rows: int | None = None,
) -> AdvisorInputs:
    """Training-split features of ``teacher`` and ``student`` modalities (a name, "a,b" or a list each).

    ``max_rows``: a seeded random subset of at most this many training rows, taken before any feature
    is read into memory (AV-MNIST's audio is 12,544 floats a row: 2.8 GB for its 55,000 training rows;
    the advisor's probes read at most 600 rows and its pilot 200 anyway)."""
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"advise --max-rows: must be a positive integer, got {max_rows}")
    from ..data import build_splits
    from ..mfh.pairs import DEFAULT_PCA

    default = DEFAULT_MODALITIES.get(dataset, (None, None))
    t_names = _names(teacher, "teacher", default[0], dataset)
    s_names = _names(student, "student", default[1], dataset)
    if set(t_names) == set(s_names):
        raise ConfigError(
            f"advise: teacher and student read the same modalities {t_names}; crossmodal KD needs the "
            "teacher "
            "to see at least one modality the student does not"
        )
    params = dict(params or {})
    wanted = list(dict.fromkeys(t_names + s_names))
    if dataset == "mfeat" and "views" not in params:
        params["views"] = wanted
    train = build_splits(dataset, params, seed=seed).train
    if max_rows is not None and len(train) > max_rows:
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_rows]
        train = train.subset(rows.sort().values)
    available = train.modality_names
    for role, names in (("teacher", t_names), ("student", s_names)):
        for m in names:
            if m not in available:
                raise ConfigError(f"advise: {role} modality {m!r} not in {dataset}; available: {', '.join(available)}")
    width = DEFAULT_PCA.get(dataset) if pca == -1 else pca
    features = {m: _features(train.tensors[m], len(train.labels), width) for m in wanted}
    xa = torch.cat([features[m] for m in t_names], 1)
    xb = torch.cat([features[m] for m in s_names], 1)
    return AdvisorInputs(dataset, t_names, s_names, train.num_classes, xa, xb, train.labels.clone())


def _features(x: Tensor, n: int, width: int | None) -> Tensor:
    """Flattened, projected on the top ``width`` principal components if wider, standardised."""
    x = x.reshape(n, -1).float()
    if width is not None and x.shape[1] > width:
        mu, basis = _pca_basis(x, width)
        x = (x - mu) @ basis
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def load_run_inputs(run_dir) -> AdvisorInputs:
    """A trained teacher from a ``mmdistill train`` folder: its logits on the training split are the teacher side
    (what KD distils), the student's modalities (from the run's config) the student side. First seed's teacher."""
    from pathlib import Path

    from ..evaluation.runs import load_run_models
    from ..models.multimodal import declared_modalities
    from ..engine.trainer import eval_batches
    from ..mfh.pairs import DEFAULT_PCA

    run_dir = Path(run_dir)
    cfg, data, models = load_run_models(run_dir)
    teachers = sorted(k for k in models if k.endswith("/teacher"))
    if not teachers:
        raise ConfigError(
            f"{run_dir}: no trained teacher in the run folder (expected seed_*/teacher/student.safetensors)"
        )
    teacher = models[teachers[0]]
    train = data.train
    with torch.no_grad():
        logits = torch.cat([teacher(batch).float() for batch in eval_batches(train, 256)])
    s_names = list(declared_modalities(cfg.student.model, train.specs(), data.num_classes, "student.model"))
    width = DEFAULT_PCA.get(cfg.data.name)
    xb = torch.cat([_features(train.tensors[m], len(train.labels), width) for m in s_names], 1)
    xa = (logits - logits.mean(0)) / logits.std(0).clamp_min(1e-6)
    return AdvisorInputs(
        cfg.data.name, [f"{teachers[0]} logits"], s_names, data.num_classes, xa, xb, train.labels.clone()
    )
