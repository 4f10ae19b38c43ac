"""Name -> object registries, so configs can refer to methods, maskers, encoders, models and datasets by name.

Adding a method touches its own file and one decorator line::

    @METHODS.register("kd")
    class HintonKD(Method): ...

Each registry names the one module whose import registers its built-ins (``METHODS``: ``mmdistill.methods``),
and imports only that module, on first use; nothing else is loaded. A user's own entries are registered by
importing the user's module: from Python, ``import my_pkg.plugins``; from YAML, the config's top-level
``imports: [my_pkg.plugins]`` (:func:`import_modules`, run before the config is validated).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .errors import ConfigError
from .usercode import import_module

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of classes or factories of one kind (``kind`` and the config ``key`` naming it are used in errors).

    ``builtins``: the module whose import registers the built-in entries (imported at the first look-up), or None.
    """

    def __init__(self, kind: str, key: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self.builtins = builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def _load_builtins(self) -> None:
        if self.builtins is not None:
            importlib.import_module(self.builtins)  # a no-op once imported

    def get(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; an unknown name is a ConfigError naming ``key`` (default: the registry's key)."""
        self._load_builtins()
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"{key or self.key}: {self.unknown(name)}")
        return self._entries[name]

    def unknown(self, name: object) -> str:
        """The message for an unknown name: the name cut short, and the known ones."""
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        known = ", ".join(self.names()) or "none registered (modules listed under the config's 'imports' register them)"
        return f"unknown {self.kind} {shown}; known: {known}"

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return isinstance(name, str) and name in self._entries


METHODS: Registry = Registry("method", "method.name", "mmdistill.methods")
MASKERS: Registry = Registry("masking strategy", "masking.strategy", "mmdistill.masking")
DATASETS: Registry = Registry("dataset", "data.name", "mmdistill.data")
ENCODERS: Registry = Registry("encoder", "encoder.type", "mmdistill.models")
MODELS: Registry = Registry("model", "model.name")  # users' models only; the built-in one is the reference classifier


def import_modules(modules: Sequence[str], key: str = "imports") -> None:
    """Import each module (e.g. a user's plugins that register methods, encoders, maskers, models, datasets).

    A module that cannot be imported, or fails while importing (anything it raises, a syntax error, ``sys.exit``), is
    a ConfigError naming ``key[i]``, the module and the original error (:func:`mmdistill.usercode.import_module`).
    """
    if not isinstance(modules, (list, tuple)):
        raise ConfigError(
            f"{key}: expected a list of module names (e.g. [my_pkg.plugins]), got {type(modules).__name__}"
        )
    for i, name in enumerate(modules):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{key}[{i}]: expected a module name such as my_pkg.plugins, got {name!r:.80}")
        import_module(name, f"{key}[{i}]")
