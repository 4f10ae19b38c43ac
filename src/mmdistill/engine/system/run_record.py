"""A ``distill()`` folder that the commands can read: its ``config.yaml`` and ``teacher.safetensors``.

``distill()`` is given live modules and data, not a config. When the user's call owns its folder (not a part of a
``train`` or ``reproduce`` run) it records how to build the same run again: the models' configs (every model made
by :func:`mmdistill.models.build_model`, built-in or ``{factory: "pkg.mod:fn"}`` / ``{name: ...}``, carries its
config as ``mmdistill_config``), the data's config (``build_splits`` / ``load_data`` note theirs as
``mmdistill_data``), and method, masking, trainer, cache, task and seed. With the teacher's weights beside it, the
folder reads like a one-seed ``mmdistill train`` folder: ``evaluate``, ``evaluate --missing --noise``, ``analyze
modalities`` and ``advise --run`` work on it (:func:`mmdistill.evaluation.runs.load_run_models`).

Datasets passed as ``train=``/``val=``/``test=`` cannot be built again from a config: the record names them
:data:`mmdistill.data.contracts.python_data.SOURCE`, and the commands ask for the data's source
(``--data pkg.mod:factory``).
A model that mmdistill did not build (a module made in Python) cannot be described: then nothing is guessed,
``result.json`` says why under ``"not_a_run_folder"``, and the commands refuse the folder with that reason and what
to do instead.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...config import RunConfig, dump_config
from ...data.contracts.python_data import SOURCE as DATA_GIVEN_IN_PYTHON
from ...errors import ConfigError
from ...io import write_text
from .checkpoint import save_tensors

CONFIG, TEACHER_WEIGHTS = "config.yaml", "teacher.safetensors"


def _model_config(model: nn.Module | None, role: str) -> tuple[dict | None, str | None, list[str]]:
    """(model config as a dict, reason it has none, modules to import for a registered name)."""
    if model is None:
        return None, None, []
    cfg = getattr(model, "mmdistill_config", None)
    if cfg is None:
        return (
            None,
            f"the {role} is a {type(model).__name__} built in Python, not by mmdistill.models.build_model from a "
            "model config (a built-in model or {factory: 'pkg.mod:fn', params: {...}})",
            [],
        )
    imports = []
    if getattr(cfg, "name", None) is not None and getattr(cfg, "factory", None) is None:  # a registered own model
        from ...registry import MODELS

        imports.append(MODELS.get(cfg.name).__module__)
    return cfg.model_dump(mode="json"), None, imports


def describe_run(
    student: nn.Module,
    teacher: nn.Module | None,
    data_cfg: dict | None,
    method: str,
    method_params: dict | None,
    **settings,
) -> RunConfig | str:
    """The RunConfig of a ``distill()`` call, or the reason there is none. ``data_cfg``: the data's
    ``mmdistill_data`` note (None: not built by mmdistill, recorded as given in Python). ``settings``: masking,
    trainer, cache (their config objects), task (its name and params), seed and teacher_trainable (the teacher
    learned alongside the student: its weights beside the record are the trained ones)."""
    if data_cfg is None:  # datasets given in Python: the commands that read the folder ask for their source
        data_cfg = {"dataset": DATA_GIVEN_IN_PYTHON}
    student_cfg, why, imports = _model_config(student, "student")
    if why:
        return why
    teacher_cfg, why, teacher_imports = _model_config(teacher, "teacher")
    if why:
        return why
    raw = {
        "imports": sorted(set(imports + teacher_imports)),
        "seed": settings["seed"],
        "data": data_cfg,
        "student": {"model": student_cfg},
        "teacher": (
            {"model": teacher_cfg, "trainable": bool(settings.get("teacher_trainable", False))}
            if teacher_cfg is not None
            else None
        ),
        "method": {"name": method, "params": dict(method_params or {})},
        "masking": settings["masking"].model_dump(mode="json"),
        "trainer": settings["trainer"].model_dump(mode="json"),
        "cache": settings["cache"].model_dump(mode="json"),
        "task": settings["task"],
    }
    try:
        return RunConfig.model_validate(raw)
    except (ValueError, ConfigError) as err:  # pydantic's ValidationError is a ValueError
        return f"the run's settings do not form a valid config ({str(err).splitlines()[0][:200]})"


def write_record(out_dir: Path, cfg: RunConfig, teacher: nn.Module | None) -> None:
    """``config.yaml`` and the frozen teacher's weights (the seed's teacher of a run folder)."""
    if teacher is not None:
        save_tensors(out_dir / TEACHER_WEIGHTS, teacher.state_dict(), {"role": "teacher"})
    write_text(out_dir / CONFIG, dump_config(cfg))
