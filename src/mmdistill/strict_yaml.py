"""A strict, safe YAML dialect for configs: what you typed is what you get.

PyYAML's safe loader follows YAML 1.1, where ``010`` is the octal number 8, ``1:30`` is 90,
``no``/``on`` are booleans, ``1e-3`` is a *string* and a repeated key silently replaces the
first. This loader is PyYAML's safe loader with a YAML 1.2 core-schema resolver and three
refusals, each raised as :class:`StrictYAMLError` with the line:

* a key repeated in one mapping (``trainer:`` twice, ``epochs:`` twice);
* an integer written with a leading zero (``010``): quote it for a string, drop the zero for a number;
* a document whose aliases expand to more than :data:`MAX_NODES` nodes (an "alias bomb").

Implicit types: ``null``/``~``/empty, ``true``/``false`` (any case), decimal integers,
floats (``1e-3``, ``.5``, ``.inf``, ``.nan``); everything else is a string.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.emitter import Emitter
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.representer import SafeRepresenter
from yaml.resolver import Resolver
from yaml.scanner import Scanner
from yaml.serializer import Serializer

MAX_NODES = 100_000  # a config is a few hundred nodes; aliases may not expand it beyond this
_LEADING_ZERO_TAG = "tag:mmdistill,2026:leading-zero-int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictYAMLError(yaml.YAMLError):
    """A YAML text that the strict dialect refuses (message names the line)."""


class StrictResolver(Resolver):
    """YAML 1.2 core schema (null, bool, int, float), plus a tag for ambiguous leading-zero integers."""


StrictResolver.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in [
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_LEADING_ZERO_TAG, r"^[-+]?0[0-9_]+$", list("-+0")),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
    (_MERGE_TAG, r"^(?:<<)$", ["<"]),
]:
    StrictResolver.add_implicit_resolver(_tag, re.compile(_regexp), _first)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class StrictConstructor(SafeConstructor):
    """Safe constructor that refuses duplicate keys and leading-zero integers."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: SafeConstructor reports it
                continue
            if first is not None:
                raise StrictYAMLError(
                    f"line {_line(key_node)}: duplicate key {short(key)} (first at line {first}); "
                    "a repeated key would silently replace the first: keep one"
                )
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_leading_zero(self, node: Node) -> Any:
        raise StrictYAMLError(
            f"line {_line(node)}: {short(node.value)} has a leading zero, which YAML 1.1 reads as an "
            f"octal number; write it without the zero for a number, or quote it for a string"
        )


StrictConstructor.add_constructor(_LEADING_ZERO_TAG, StrictConstructor.construct_leading_zero)


class StrictLoader(Reader, Scanner, Parser, Composer, StrictConstructor, StrictResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        StrictConstructor.__init__(self)
        StrictResolver.__init__(self)


class StrictDumper(Emitter, Serializer, SafeRepresenter, StrictResolver):
    """Safe dumper whose quoting follows the strict resolver, so dump -> load gives back the same values."""

    def __init__(
        self,
        stream: Any,
        default_style: Any = None,
        default_flow_style: Any = False,
        canonical: Any = None,
        indent: Any = None,
        width: Any = None,
        allow_unicode: Any = None,
        line_break: Any = None,
        encoding: Any = None,
        explicit_start: Any = None,
        explicit_end: Any = None,
        version: Any = None,
        tags: Any = None,
        sort_keys: bool = True,
    ) -> None:
        Emitter.__init__(
            self,
            stream,
            canonical=canonical,
            indent=indent,
            width=width,
            allow_unicode=allow_unicode,
            line_break=line_break,
        )
        Serializer.__init__(
            self,
            encoding=encoding,
            explicit_start=explicit_start,
            explicit_end=explicit_end,
            version=version,
            tags=tags,
        )
        SafeRepresenter.__init__(
            self, default_style=default_style, default_flow_style=default_flow_style, sort_keys=sort_keys
        )
        StrictResolver.__init__(self)


def expanded_size(node: Node, limit: int = MAX_NODES) -> int:
    """Number of nodes the document has once every alias is expanded (stops counting past ``limit``)."""
    memo: dict[int, int] = {}

    def size(n: Node, depth: int) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if depth > 200:
            raise StrictYAMLError(f"line {_line(n)}: nested more than 200 levels deep")
        total = 1
        if isinstance(n, SequenceNode):
            for child in n.value:
                total += size(child, depth + 1)
                if total > limit:
                    break
        elif isinstance(n, MappingNode):
            for k, v in n.value:
                total += size(k, depth + 1) + size(v, depth + 1)
                if total > limit:
                    break
        memo[id(n)] = total
        return total

    return size(node, 0)


def load(text: str) -> Any:
    """Parse one YAML document in the strict dialect (``None`` for an empty one)."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = expanded_size(node)
        if n > MAX_NODES:
            raise StrictYAMLError(
                f"the document expands to more than {MAX_NODES} nodes (aliases that repeat aliases?); "
                "write the values out"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise StrictYAMLError("nested too deeply") from None
    finally:
        loader.dispose()


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=StrictDumper, sort_keys=False)


def cut(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with '...' (errors quote inputs, never unboundedly)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 4


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; a huge nested value is never fully rendered (``reprlib``)."""
    return cut(_REPR.repr(value), limit)


__all__ = ["MAX_NODES", "StrictDumper", "StrictLoader", "StrictYAMLError", "dump", "load", "cut", "short"]
