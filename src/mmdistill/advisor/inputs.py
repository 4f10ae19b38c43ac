"""The advisor's inputs from a registered dataset: teacher and student features, one or several modalities each.

A multimodal teacher (say image + audio) against a unimodal student (audio) is the common crossmodal
case (MFH Table 1: a better multimodal teacher, a worse student). Each modality is flattened; one
wider than the dataset's PCA width (:data:`mmdistill.mfh.pairs.DEFAULT_PCA`, as the measuring
protocol does) is projected on its training split's top principal components; each is standardised
with the training split's statistics; a side's modalities are concatenated in the order given.
:func:`load_run_inputs` takes the teacher side from a trained teacher in a run folder instead (its
logits on the training split: the knowledge KD actually distils); on item data (a torch Dataset) it reads
a bounded subset in batches and represents wide or non-numeric student inputs by the no-KD student's
logits (:func:`item_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from ..mfh.pairs import DEFAULT_MODALITIES, DEFAULT_PCA, _pca_basis


@dataclass
class AdvisorInputs:
    dataset: str
    teacher: list[str]
    student: list[str]
    num_classes: int
    xa: Tensor
    xb: Tensor
    y: Tensor
    representation: str = ""


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
    splits = build_splits(dataset, params, seed=seed)
    train = splits.train
    if not train.holds_columns:
        raise ConfigError(
            f"advise: dataset {dataset!r} is read one example at a time from files (item data); the advisor reads "
            "a dataset held as columns from its name: train the teacher on it and use advise --run DIR"
        )
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
    return AdvisorInputs(dataset, t_names, s_names, splits.num_classes, xa, xb, train.labels.clone())


def _features(x: Tensor, n: int, width: int | None) -> Tensor:
    """Flattened, projected on the top ``width`` principal components if wider, standardised."""
    x = x.reshape(n, -1).float()
    if width is not None and x.shape[1] > width:
        mu, basis = _pca_basis(x, width)
        x = (x - mu) @ basis
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def load_run_inputs(run_dir, data_source: str | None = None, max_rows: int | None = None, seed: int = 0):
    """A trained teacher from a run folder (``mmdistill train``, or a ``distill()`` folder): its logits on the
    training split are the teacher side (what KD distils), the student's modalities (from the run's config) the
    student side. First seed's teacher. ``data_source``: ``pkg.mod:factory`` for a folder whose data were given in
    Python (``--data``). Column data: every training row (``max_rows``: a seeded subset). Item data (a torch
    Dataset): at most ``max_rows`` (default :data:`ITEM_ROWS`) seeded training rows, read in batches;
    :func:`item_features` says which representation the student side takes."""
    from pathlib import Path

    from ..evaluation.runs import load_run_models
    from ..models.multimodal import declared_modalities

    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"advise --max-rows: must be a positive integer, got {max_rows}")
    run_dir = Path(run_dir)
    cfg, data, models = load_run_models(run_dir, data_source)
    teachers = sorted(k for k in models if k.endswith("/teacher"))
    if not teachers:
        raise ConfigError(
            f"{run_dir}: no trained teacher in the run folder (expected seed_*/teacher/student.safetensors)"
        )
    teacher_key = teachers[0]
    train = data.train
    columns = train.holds_columns  # whole columns at hand: every row, read at once
    limit = max_rows if max_rows is not None or columns else ITEM_ROWS
    if limit is not None and len(train) > limit:
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:limit]
        train = train.subset(rows.sort().values)
    s_names = list(declared_modalities(cfg.student.model, train.specs(), data.num_classes, "student.model"))
    if columns:
        xa, labels = _logits(models[teacher_key], train), train.labels.clone()
        xb, student_side = _column_features(train, s_names, DEFAULT_PCA.get(cfg.data.name))
    else:
        no_kd = models.get(teacher_key.replace("/teacher", "/nokd"))
        xa, labels, xb, student_side = item_features(train, models[teacher_key], no_kd, s_names, seed)
    xa = (xa - xa.mean(0)) / xa.std(0).clamp_min(1e-6)
    name = cfg.data.name if cfg.data.dataset is None else cfg.data.dataset
    inputs = AdvisorInputs(name, [f"{teacher_key} logits"], s_names, data.num_classes, xa, xb, labels)
    inputs.representation = f"teacher side: {teacher_key}'s logits; student side: {student_side}"
    return inputs


ITEM_ROWS = 1000  # item data: training rows read for the advice (its probes read at most 600, its pilot 200)
FLAT_MAX = 4096  # the widest item modality (values a row) the probes read flattened
PROJECTED = 64  # the width of a projection (principal components, or random) of wider rows
PCA_FIT_ROWS = 500  # the rows the principal components are fitted on


def _logits(model, split) -> Tensor:
    from ..engine.trainer import eval_batches

    with torch.no_grad():
        return torch.cat([model(batch).float() for batch in eval_batches(split, 256)])


def _column_features(train, names: list[str], width: int | None) -> tuple[Tensor, str]:
    """Column data: each modality flattened, projected on ``width`` principal components if wider, standardised."""
    xb = torch.cat([_features(train.tensors[m], len(train.labels), width) for m in names], 1)
    projected = width is not None and any(train.tensors[m][0].numel() > width for m in names)
    how = f"flattened, projected on {width} principal components" if projected else "flattened"
    return xb, f"{', '.join(names)} {how}"


def item_features(train, teacher, no_kd, names: list[str], seed: int = 0) -> tuple[Tensor, Tensor, Tensor, str]:
    """(teacher logits, labels, student-side features, what they are) of an item dataset, in one pass of batches.

    The student side: each modality flattened when every row has the same float shape of at most
    :data:`FLAT_MAX` values (projected on its top :data:`PROJECTED` principal components when wider than that).
    Otherwise (token ids, rows of different lengths, wider inputs such as images) the run's no-KD student's
    logits stand for the student's modalities (what a student trained on them alone reads from them); without a
    no-KD student, a wide float modality is a seeded random Gaussian projection to :data:`PROJECTED` values."""
    from ..engine.trainer import eval_batches

    logits, labels, student_logits = [], [], []
    rows: dict[str, list[Tensor | None]] = {m: [] for m in names}  # None: token ids or padded rows
    widths: dict[str, set[int]] = {m: set() for m in names}
    projections: dict[str, Tensor] = {}
    with torch.no_grad():
        for batch in eval_batches(train, 256):
            logits.append(teacher(batch).float())
            labels.append(batch["label"])
            if no_kd is not None:
                student_logits.append(no_kd(batch).float())
            for m in names:
                row = _flat_rows(batch, m)
                widths[m].add(-1 if row is None else row.shape[1])  # -1: token ids or padded rows
                if row is not None and row.shape[1] > FLAT_MAX:  # wide: only its random projection is kept
                    if m not in projections:
                        projections[m] = torch.randn(row.shape[1], PROJECTED, generator=_generator(seed, m))
                    row = row @ projections[m] / row.shape[1] ** 0.5
                rows[m].append(row)
    teacher_logits, targets = torch.cat(logits), torch.cat(labels)
    fixed = [m for m in names if len(widths[m]) == 1 and -1 not in widths[m]]
    if no_kd is not None and (projections or len(fixed) < len(names)):
        return teacher_logits, targets, _standardised(torch.cat(student_logits)), "the no-KD student's logits"
    if len(fixed) < len(names):
        bad = next(m for m in names if m not in fixed)
        raise ConfigError(
            f"advise --run: the student's modality {bad!r} holds token ids or rows of different lengths, and the "
            "run has no no-KD student whose logits could stand for it (it was trained with --no-baseline, or is a "
            "distill() folder); train the run with its no-KD baseline, or advise on fixed-length features from "
            "Python (mmdistill.advisor.predict.advise)"
        )
    fixed_rows = {m: [r for r in rows[m] if r is not None] for m in names}  # all of them: every modality is fixed
    parts, how = zip(*(_student_rows(m, torch.cat(fixed_rows[m]), m in projections, seed) for m in names))
    return teacher_logits, targets, torch.cat(parts, 1), "; ".join(how)


def _flat_rows(batch: dict, m: str) -> Tensor | None:
    """Modality ``m`` of a batch as (rows, values) floats; None for token ids or padded rows (they carry a mask)."""
    from ..batch import MASK_SUFFIX

    x = batch[m]
    if not x.is_floating_point() or f"{m}{MASK_SUFFIX}" in batch:
        return None
    return x.reshape(len(x), -1).float()


def _generator(seed: int, m: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + sum(m.encode()))


def _student_rows(m: str, x: Tensor, projected: bool, seed: int) -> tuple[Tensor, str]:
    """One student modality's standardised feature rows and what they are."""
    if projected:
        return _standardised(x), f"{m} as a random projection to {PROJECTED} values"
    if x.shape[1] <= PROJECTED:
        return _standardised(x), f"{m} flattened"
    fit = torch.randperm(len(x), generator=_generator(seed, m))[:PCA_FIT_ROWS]
    mu, basis = _pca_basis(x[fit], PROJECTED)
    return _standardised((x - mu) @ basis), f"{m} flattened, projected on {PROJECTED} principal components"


def _standardised(x: Tensor) -> Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
