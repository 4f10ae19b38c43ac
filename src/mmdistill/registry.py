"""Name -> object registries, so configs can refer to methods, maskers and datasets by name.

Adding a method touches its own file and one decorator line::

    @METHODS.register("kd")
    class HintonKD(Method): ...
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of classes or factories of one kind (``kind`` and the config ``key`` naming it are used in errors)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        _import_builtins()
        if not isinstance(name, str) or name not in self._entries:
            shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
            raise ConfigError(f"{self.key}: unknown {self.kind} {shown}; known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        _import_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _import_builtins()
        return name in self._entries


METHODS: Registry = Registry("method", "method.name")
MASKERS: Registry = Registry("masking strategy", "masking.strategy")
DATASETS: Registry = Registry("dataset", "data.name")
ENCODERS: Registry = Registry("encoder", "encoder.type")


def _import_builtins() -> None:
    """Import the modules whose decorators fill the registries (once, lazily)."""
    from . import data, masking, methods  # noqa: F401
    from .models import encoders  # noqa: F401
