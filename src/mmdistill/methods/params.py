"""The parameters of a method: one strict number type, shared bounds, and what a method needs from a task.

Every number in a method's ``Params`` is a :data:`Number` or a :data:`Count` (or one of the bounded forms below), so
every method refuses ``true``, ``"4"``, NaN and infinity with the same message, from YAML and from Python alike::

    class MyParams(MethodParams):
        temperature: Temperature = 4.0        # the softmax temperature T of a KD term, in [0.05, 100]
        lam: Fraction = 0.5                   # a share in [0, 1]
        beta: Weight = 1.0                    # a loss weight in [0, 1e6]

:class:`MethodParams` is a pydantic model that refuses unknown keys (they are listed in the error).

A method says what it needs from a task with :class:`TaskNeed` records (``Method.task_needs``): the task must give
that (``Task.gives``), else the run is refused when the config is loaded, naming ``method.name`` or the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field

from ..config import MAX_TEMPERATURE, MIN_TEMPERATURE
from ..schema import ConfigModel
from ..tasks.base import CLASS_DISTRIBUTION, SOFTENED_OUTPUTS, TRUE_CLASS

MAX_WEIGHT = 1e6  # beyond it one term drowns every other in float32

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite real number: an int or a float, never a bool, a string, NaN or infinity."""
Count = Annotated[int, Field(strict=True)]
"""A whole number: an int, never a bool, a float or a string."""
Temperature = Annotated[Number, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)]
"""The temperature T of softmax(z / T) in a KD term, in [0.05, 100] in every method (see config.MIN_TEMPERATURE)."""
Fraction = Annotated[Number, Field(ge=0, le=1)]
"""A share in [0, 1] (e.g. ``lam``, the KD term's weight when CE gets ``1 - lam``)."""
Weight = Annotated[Number, Field(ge=0, le=MAX_WEIGHT)]
"""The weight of a loss term, in [0, 1e6]."""


class MethodParams(ConfigModel):
    """Base of a method's ``Params``: unknown keys are refused; use the number types above for every number. Built
    from Python with a bad value (``KDParams(temperature="4")``), a ConfigError names ``method.params.<key>``."""

    config_key: ClassVar[str] = "method.params"


NoParams = MethodParams


@dataclass(frozen=True)
class TaskNeed:
    """What a method needs from the task's outputs (``gives``, one of :mod:`mmdistill.tasks.base`'s names).

    ``param`` None: the method as a whole needs it. Else only a run that sets ``method.params.<param>`` needs it;
    ``value`` narrows that to one value of the parameter (e.g. MSD's ``weighting: learned``).
    """

    gives: str
    why: str
    param: str | None = None
    value: Any = None

    def applies(self, params: dict[str, Any]) -> bool:
        """Whether a run with these (raw) method parameters needs it."""
        if self.param is None:
            return True
        return self.param in params and (self.value is None or params[self.param] == self.value)


def needs_class_distribution(why: str) -> TaskNeed:
    """The method reads one softmax distribution over classes per example."""
    return TaskNeed(CLASS_DISTRIBUTION, why)


def temperature_param(name: str = "temperature") -> TaskNeed:
    """``method.params.<name>`` softens the outputs' probabilities: refused on a task without a temperature."""
    return TaskNeed(SOFTENED_OUTPUTS, "the task's outputs are not softened by a temperature", param=name)


__all__ = [
    "CLASS_DISTRIBUTION",
    "Count",
    "Fraction",
    "MAX_WEIGHT",
    "MethodParams",
    "NoParams",
    "Number",
    "SOFTENED_OUTPUTS",
    "TRUE_CLASS",
    "TaskNeed",
    "Temperature",
    "Weight",
    "needs_class_distribution",
    "temperature_param",
]
