"""The one YAML loader of manifests and config files: PyYAML's safe loader, stricter.

Refused, because each makes a small file mean something else or something huge:

- anchors and aliases (``&a`` / ``*a``): an alias is a reference, so a 1 KB file in which each
  entry repeats the previous one nine times describes gigabytes of data once anything (a
  message, JSON encoding, a result line) walks it;
- nesting deeper than `MAX_DEPTH` collections (PyYAML composes recursively: deeper nesting
  ends in a RecursionError);
- a key given twice in one mapping (PyYAML keeps the last one silently);
- an integer too long for Python to convert (more than 4300 digits).

Dates stay strings (no timestamp resolver), so what is read stays JSON data. `Refused` is
raised for an anchor, an alias or too deep a nesting before the node is consumed (a manifest
skips the rest of the item and reads on); the others are `yaml.constructor.ConstructorError`s
like any PyYAML construction error.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any

import yaml

from .echo import shown

__all__ = ["MAX_DEPTH", "Refused", "StrictLoader", "yaml_problem"]

#: The deepest nesting of lists and mappings accepted.
MAX_DEPTH = 100

_OPENS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSES = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
_ALIAS_REASON = ("YAML anchors and aliases (&name, *name) are not accepted in {kind} (one alias can "
                 "stand for gigabytes of repeated data): write the value out in full ({what} at line {line})")
_DEPTH_REASON = ("YAML nested deeper than {depth} lists or mappings is not accepted in {kind}: "
                 "flatten the value (at line {line})")


class Refused(Exception):
    """An anchor, an alias or too deep a nesting at `line`, its node not yet consumed."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.line = line


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without timestamps, anchors, aliases, duplicate keys or unbounded nesting;
    it counts open collections (`depth`) so that a caller can skip a refused node."""

    #: What the file is, in messages ("a manifest", "a config file").
    kind = "a YAML file"
    depth = 0  # collections opened and not yet closed, over the whole stream

    def get_event(self) -> Any:
        event = super().get_event()  # type: ignore[no-untyped-call]
        if isinstance(event, _OPENS):
            self.depth += 1
        elif isinstance(event, _CLOSES):
            self.depth -= 1
        return event

    def next_event(self) -> Any:
        """The next event, not consumed (PyYAML's own method is untyped)."""
        return self.peek_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> Any:
        event = self.next_event()
        line = event.start_mark.line + 1
        if getattr(event, "anchor", None) is not None:  # AliasEvent, or a node with &anchor
            sign = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise Refused(_ALIAS_REASON.format(kind=self.kind, what=f"{sign}{shown(event.anchor)[1:-1]}",
                                               line=line), line)
        if isinstance(event, _OPENS) and self.depth >= MAX_DEPTH:
            raise Refused(_DEPTH_REASON.format(depth=MAX_DEPTH, kind=self.kind, line=line), line)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """A mapping whose keys are all different (PyYAML's keeps the last of a repeated key)."""
        self.flatten_mapping(node)
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found a key that is a list or a mapping: keys are plain values", key_node.start_mark)
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {shown(key)} is given twice in one mapping (again at line "
                                f"{key_node.start_mark.line + 1}): keep one", None)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python's limit on converting long digit strings
            limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
            raise yaml.constructor.ConstructorError(
                None, None, f"the number at line {node.start_mark.line + 1} has {len(node.value):,} digits, more "
                            f"than {limit} (quote it if it is text)", None) from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_problem(exc: yaml.YAMLError, kind: str = "the file") -> str:
    """The one-line gist of a PyYAML error (its str() spans several lines with marks)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [exc.context, exc.problem]
        if exc.problem_mark is not None:
            parts.append(f"at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}")
        return " ".join(p for p in parts if p)
    if isinstance(exc, yaml.reader.ReaderError):
        if exc.encoding == "unicode":  # text already: a control character such as NUL
            return (f"the character U+{exc.character:04X} at character {exc.position} is not allowed in YAML "
                    f"({exc.reason}): remove it")
        return f"not valid UTF-8 ({exc.reason} at character {exc.position}): save {kind} as UTF-8"
    return str(exc).replace("\n", " ")
