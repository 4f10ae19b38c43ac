"""The base of every configuration model: pydantic underneath, mmdistill's :class:`ConfigError` outside.

Building a config model from Python (``TrainerConfig(epochs="x")``) or validating a mapping
(``TrainerConfig.model_validate(raw)``) raises one :class:`ConfigError` naming each dotted key and
what was expected (``trainer.epochs: Input should be a valid integer (got 'x')``), never pydantic's
``ValidationError``. A model nested in another is validated by pydantic as part of one tree, so a
run config's errors carry the full dotted path (``trainer.optimizer.lr``).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .strict_yaml import cut, short

# Tags of the kinds in a tagged union of config models (e.g. the reference model and a user's model): pydantic puts
# the tag in an error's location; messages leave it out, and the walk to the valid keys follows it to its model.
TAGGED_MODELS: dict[str, type[BaseModel]] = {}
MAX_ERRORS = 10
SEED_MAX = 2**32 - 1  # numpy's and torch's (Lightning's seed_everything) seed range


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Walk ``loc`` through nested pydantic models and list the fields at its parent."""
    current: Any = model
    for part in loc[:-1]:
        if part in TAGGED_MODELS:
            current = TAGGED_MODELS[part]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        ann = current.model_fields[part].annotation
        for arg in getattr(ann, "__args__", ()) or ():  # Optional[X] -> X
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                ann = arg
        current = ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _names_its_key(msg: str, key: str) -> bool:
    """``msg`` starts with a dotted key inside ``key`` (or any key when the error is about the whole config)."""
    head = msg.split(": ", 1)[0]
    return bool(re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", head)) and (not key or head.startswith(key + "."))


def error_lines(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per validation error (at most ten, then a count): the dotted key and what was expected."""
    lines = []
    for e in err.errors()[:MAX_ERRORS]:
        path = ".".join(str(p) for p in e["loc"] if p not in TAGGED_MODELS)
        key = prefix + path if path else prefix.rstrip(".")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, tuple(e["loc"]))
            lines.append(f"{cut(key, 120)}: unknown key; valid keys: {', '.join(valid or [])}")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif _names_its_key(msg, key):  # a cross-field check names its own key
            lines.append(msg)
        else:
            lines.append(f"{key or 'config'}: {msg} (got {short(e.get('input'))})")
    lines = [" ".join(line.split()) for line in lines]
    if len(err.errors()) > MAX_ERRORS:
        lines[-1] += f"; and {len(err.errors()) - MAX_ERRORS} more"
    return lines


def parse(model: type[BaseModel], raw: Any, prefix: str = "", head: str = "") -> Any:
    """``model.model_validate(raw)`` with pydantic's errors as one ConfigError: ``head`` then each key under
    ``prefix`` (``prefix="trainer."`` gives ``trainer.epochs: ...``)."""
    try:
        # pydantic's own, never a subclass's conversion (the classmethod's function: its stubs leave out __func__)
        return BaseModel.model_validate.__func__(model, raw)  # type: ignore[attr-defined]
    except ValidationError as err:
        raise ConfigError(head + "; ".join(error_lines(err, model, prefix))) from None


class ConfigModel(BaseModel):
    """A strict config model (unknown keys refused) whose validation errors are ConfigErrors naming the key.

    ``config_key``: where the model sits in a run config (``"trainer"``), the prefix of its keys in messages.
    """

    model_config = ConfigDict(extra="forbid")
    config_key: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            prefix = f"{self.config_key}." if self.config_key else ""
            raise ConfigError("; ".join(error_lines(err, type(self), prefix))) from None

    # pydantic validates a nested model without calling its __init__ only when the __init__ is marked as its own
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            prefix = f"{cls.config_key}." if cls.config_key else ""
            raise ConfigError("; ".join(error_lines(err, cls, prefix))) from None


def checked_int(value: Any, key: str, ge: int | None = None, le: int | None = None) -> int:
    """A Python API argument that must be an integer in [ge, le]: a bool, a string or a float is a ConfigError
    naming ``key`` (the same strictness as the config's numbers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key}: expected an integer{_bounds(ge, le)}, got {short(value)} ({type(value).__name__})")
    value = int(value)
    if (ge is not None and value < ge) or (le is not None and value > le):
        raise ConfigError(f"{key}: expected an integer{_bounds(ge, le)}, got {value}")
    return value


def _bounds(ge: int | None, le: int | None) -> str:
    if ge is not None and le is not None:
        return f" in [{ge}, {le}]"
    return f" >= {ge}" if ge is not None else f" <= {le}" if le is not None else ""


def checked_mapping(value: Any, key: str) -> dict:
    """A Python API argument that must be a mapping (``None``: empty); anything else is a ConfigError naming ``key``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a dict, got {short(value)} ({type(value).__name__})")
    return dict(value)
