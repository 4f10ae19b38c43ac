"""The advisor's inputs: teacher and student feature rows (one or several modalities a side) and the labels.

From a registered dataset held as columns (:func:`load_advisor_inputs`): each modality flattened; one wider than
the dataset's PCA width (:data:`mmdistill.mfh.pairs.DEFAULT_PCA`, as the measuring protocol does) projected on its
training split's top principal components; each standardised with the training split's statistics; a side's
modalities concatenated in the order given. A multimodal teacher (say image + audio) against a unimodal student
(audio) is the common crossmodal case (MFH Table 1).

From a torch Dataset of dict items (:func:`load_item_inputs`: a Dataset given in Python, a config's ``data.dataset``
factory): a bounded, seeded subset read in batches, each modality represented as :mod:`.items` says.

From a run folder (:func:`load_run_inputs`): the teacher side is the trained teacher's logits on the training split
(the knowledge KD actually distils); the student side the student's modalities, or the run's no-KD student's logits
where its inputs are too wide or not numeric.

Each refuses, in one line, what the advisor cannot advise on: a teacher that sees no modality the student does not,
a task whose targets are not one per example (segmentation), a modality the data do not hold. Each records the
data's task (``AdvisorInputs.task``), which the advice asks what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..mfh.pairs import DEFAULT_MODALITIES, DEFAULT_PCA, _pca_basis
from .items import (
    ITEM_ROWS,
    PCA_FIT_ROWS,
    ItemRows,
    bounded_rows,
    check_item_modalities,
    modality_features,
    read_items,
    standardised,
)
from .task_pilot import advised_task, reads_class_labels


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
    train_rows: int | None = None  # the training split's size (the rows read may be a subset of it)
    task: str = "classification"  # the data's task (its name); the advice reads what the task plugin says
    teacher_accuracy_student_modalities: float | None = None  # a run's teacher given the student's modalities only


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


def check_crossmodal(teacher: list[str], student: list[str], where: str = "advise") -> None:
    """Refuse a teacher that sees no modality the student does not (the same modalities, or fewer)."""
    if set(teacher) <= set(student):
        raise ConfigError(
            f"{where}: the teacher reads the same modalities as the student or fewer ({', '.join(teacher)} vs "
            f"{', '.join(student)}); crossmodal KD needs the teacher to see at least one modality the student does not"
        )


def check_task(task: str, where: str = "advise") -> None:
    """Refuse a task whose targets are not one per example (:func:`.task_pilot.advised_task`)."""
    advised_task(task, where)


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
    the advisor's probes read at most 600 rows and its pilot 200 anyway). A dataset read item by item is read as
    :func:`load_item_inputs` reads a torch Dataset."""
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"advise --max-rows: must be a positive integer, got {max_rows}")
    from ..data import build_splits

    default = DEFAULT_MODALITIES.get(dataset, (None, None))
    t_names = _names(teacher, "teacher", default[0], dataset)
    s_names = _names(student, "student", default[1], dataset)
    check_crossmodal(t_names, s_names)
    params = dict(params or {})
    wanted = list(dict.fromkeys(t_names + s_names))
    if dataset == "mfeat" and "views" not in params:
        params["views"] = wanted
    splits = build_splits(dataset, params, seed=seed)
    if not splits.train.holds_columns:
        return load_item_inputs(splits.train, t_names, s_names, dataset, splits.num_classes, seed, max_rows)
    check_task(splits.train.task)
    train = bounded_rows(splits.train, max_rows, seed)
    available = train.modality_names
    for role, names in (("teacher", t_names), ("student", s_names)):
        for m in names:
            if m not in available:
                raise ConfigError(f"advise: {role} modality {m!r} not in {dataset}; available: {', '.join(available)}")
    width = DEFAULT_PCA.get(dataset) if pca == -1 else pca
    features = {m: _features(train.tensors[m], len(train.labels), width) for m in wanted}
    xa = torch.cat([features[m] for m in t_names], 1)
    xb = torch.cat([features[m] for m in s_names], 1)
    inputs = AdvisorInputs(dataset, t_names, s_names, splits.num_classes, xa, xb, train.labels.clone())
    inputs.train_rows, inputs.task = len(splits.train), splits.train.task
    return inputs


def load_item_inputs(
    split,
    teacher: list[str],
    student: list[str],
    name: str = "dataset",
    num_classes: int | None = None,
    seed: int = 0,
    max_rows: int | None = None,
) -> AdvisorInputs:
    """Both sides from the items themselves (no trained model): a torch Dataset of dict items (or a split holding
    one), at most ``max_rows`` (default :data:`.items.ITEM_ROWS`) seeded training rows read in batches; each modality
    represented as :mod:`.items` says."""
    from ..data.contracts.item_dataset import as_split

    split = as_split(split, name)
    check_task(split.task)
    check_crossmodal(teacher, student)
    wanted = list(dict.fromkeys(teacher + student))
    try:
        check_item_modalities(split, wanted, "advise")
        items = read_items(bounded_rows(split, max_rows or ITEM_ROWS, seed), wanted, seed)
    except DataError as err:  # an item without a modality, a label the task does not allow: named with the item
        if str(err).startswith("advise"):
            raise
        raise DataError(f"advise: reading the training items: {err}") from None
    k = num_classes or split.num_classes or _output_columns(items.labels, split.task)
    sides, described = [], []
    for names in (teacher, student):
        parts, how = zip(*(modality_features(items, m, seed) for m in names))
        sides.append(torch.cat(parts, 1))
        described.append("; ".join(how))
    inputs = AdvisorInputs(name, teacher, student, int(k), sides[0], sides[1], items.labels, train_rows=len(split))
    inputs.task = split.task
    inputs.representation = f"teacher side: {described[0]}; student side: {described[1]}"
    return inputs


def _output_columns(labels: Tensor, task: str) -> int:
    """The output columns the labels ask for: the classes of class indices, else the target's columns."""
    if reads_class_labels(advised_task(task)):
        return int(labels.max()) + 1
    return 1 if labels.dim() == 1 else int(labels.shape[1])


def _features(x: Tensor, n: int, width: int | None) -> Tensor:
    """Flattened, projected on the top ``width`` principal components if wider (fitted on at most
    :data:`.items.PCA_FIT_ROWS` evenly spaced rows: AV-MNIST's 12,544-value audio on every row would cost minutes),
    standardised."""
    x = x.reshape(n, -1).float()
    if width is not None and x.shape[1] > width:
        fit = torch.linspace(0, n - 1, min(n, PCA_FIT_ROWS)).long()
        mu, basis = _pca_basis(x[fit], width)
        x = (x - mu) @ basis
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def load_run_inputs(run_dir, data_source: str | None = None, max_rows: int | None = None, seed: int = 0):
    """A trained teacher from a run folder (``mmdistill train``, or a ``distill()`` folder): its logits on the
    training split are the teacher side (what KD distils), the student's modalities (from the run's config) the
    student side. First seed's teacher. ``data_source``: ``pkg.mod:factory`` for a folder whose data were given in
    Python (``--data``). Column data: every training row (``max_rows``: a seeded subset). Item data (a torch
    Dataset): at most ``max_rows`` (default :data:`.items.ITEM_ROWS`) seeded training rows, read in batches;
    :func:`item_features` says which representation the student side takes. Where the teacher reads the student's
    modalities and more, its accuracy given the student's modalities alone (the others removed as the run's
    ``masking`` removes them) is measured on the same rows."""
    from pathlib import Path

    from ..evaluation.runs import load_run_models
    from ..models.multimodal import declared_modalities

    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"advise --max-rows: must be a positive integer, got {max_rows}")
    run_dir = Path(run_dir)
    cfg, data, models = load_run_models(run_dir, data_source)
    teachers = sorted(k for k in models if k.endswith("/teacher"))
    if not teachers or cfg.teacher is None:
        raise ConfigError(
            f"{run_dir}: the run has no trained teacher (a run without one, such as a supervised distill() run, or "
            "its teacher's weights are missing); advise --run reads a KD run's folder, whose teacher it compares "
            "with the student"
        )
    teacher_key, train = teachers[0], data.train
    train_rows = len(train)
    check_task(train.task, "advise --run")
    columns = train.holds_columns  # whole columns at hand: every row, read at once
    train = bounded_rows(train, max_rows if max_rows is not None or columns else ITEM_ROWS, seed)
    specs, k = train.specs(), data.num_classes
    s_names = list(declared_modalities(cfg.student.model, specs, k, "student.model"))
    t_names = list(declared_modalities(cfg.teacher.model, specs, k, "teacher.model"))
    check_crossmodal(t_names, s_names, "advise --run")
    teacher = models[teacher_key]
    runners = {"teacher": teacher, **_teacher_alone(cfg, train, teacher, t_names, s_names)}
    no_kd = models.get(teacher_key.replace("/teacher", "/nokd"))
    if no_kd is not None and not columns:
        runners["nokd"] = no_kd
    items = read_items(train, [] if columns else s_names, seed, runners)
    if columns:
        xb, student_side = _column_features(train, s_names, DEFAULT_PCA.get(cfg.data.name))
    else:
        xb, student_side = item_features(items, s_names, seed)
    name = cfg.data.name if cfg.data.dataset is None else cfg.data.dataset
    inputs = AdvisorInputs(
        name, [f"{teacher_key} logits"], s_names, k, standardised(items.logits["teacher"]), xb, items.labels
    )
    inputs.representation = f"teacher side: {teacher_key}'s logits; student side: {student_side}"
    inputs.train_rows, inputs.task = train_rows, train.task
    if "alone" in items.logits and reads_class_labels(advised_task(train.task)):
        predicted = items.logits["alone"].argmax(1)
        inputs.teacher_accuracy_student_modalities = float((predicted == items.labels).double().mean())
    return inputs


def _teacher_alone(cfg, train, teacher, t_names: list[str], s_names: list[str]) -> dict:
    """``{"alone": the teacher given the student's modalities only}`` when it reads those and others (the others
    removed by the run's masking strategy), else ``{}``."""
    others = [m for m in t_names if m not in s_names]
    if not others or not set(s_names) <= set(t_names):
        return {}
    from ..masking import fit_masker

    masker = fit_masker(cfg.masking, train)
    return {"alone": lambda batch: teacher(masker.remove(batch, others))}


def _column_features(train, names: list[str], width: int | None) -> tuple[Tensor, str]:
    """Column data: each modality flattened, projected on ``width`` principal components if wider, standardised."""
    xb = torch.cat([_features(train.tensors[m], len(train.labels), width) for m in names], 1)
    projected = width is not None and any(train.tensors[m][0].numel() > width for m in names)
    how = f"flattened, projected on {width} principal components" if projected else "flattened"
    return xb, f"{', '.join(names)} {how}"


def item_features(items: ItemRows, names: list[str], seed: int = 0) -> tuple[Tensor, str]:
    """The student side of a run on item data, and what it is: each modality as :mod:`.items` represents it, except
    that where one is wider than :data:`.items.FLAT_MAX`, or holds token ids or rows of different lengths, the run's
    no-KD student's logits stand for the student's modalities (what a student trained on them alone reads from
    them); without a no-KD student, token ids and rows of different lengths are refused, saying so."""
    fixed = [m for m in names if items.rows[m] is not None]
    if "nokd" in items.logits and (items.projected or len(fixed) < len(names)):
        return standardised(items.logits["nokd"]), "the no-KD student's logits"
    if len(fixed) < len(names):
        bad = next(m for m in names if m not in fixed)
        raise ConfigError(
            f"advise --run: the student's modality {bad!r} holds token ids or rows of different lengths, and the "
            "run has no no-KD student whose logits could stand for it (it was trained with --no-baseline, or is a "
            "distill() folder); train the run with its no-KD baseline, or advise on fixed-length features from "
            "Python (mmdistill.advisor.predict.advise)"
        )
    parts, how = zip(*(modality_features(items, m, seed, "advise --run") for m in names))
    return torch.cat(parts, 1), "; ".join(how)
