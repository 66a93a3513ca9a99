"""Streaming reader for YAML manifests, refusing anchors and aliases.

A YAML manifest is a top-level list of item mappings, one item mapping per document
(``---``-separated), or a mapping whose ``items:`` key holds the list. Items are composed one
node at a time from PyYAML's event stream, so a huge list is never loaded whole.

Anchors and aliases (``&a`` / ``*a``), nesting deeper than `yaml_strict.MAX_DEPTH`, repeated
keys and integers too long to convert are refused by the loader config files share
(`yaml_strict`): an alias is a reference, so a 1 KB file in which each item repeats the previous
one nine times describes gigabytes of data once anything (JSON encoding, the result line) walks
it. Refusing them keeps every item as big as its text. The item that holds one is rejected and
the reader skips to the next item.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import yaml

from ..core.yaml_strict import Refused, StrictLoader, yaml_problem
from .formats import LONE_SURROGATE, RawRecord, Rejected, is_unicode

__all__ = ["iter_yaml"]



class _ManifestLoader(StrictLoader):
    """The shared strict loader (`yaml_strict`), naming the file a manifest in its messages."""

    kind = "a manifest"


def iter_yaml(stream: IO[bytes] | IO[str]) -> Iterator[RawRecord]:
    """Items of a YAML manifest: a top-level list of mappings, one mapping per document, or a
    mapping whose ``items:`` key holds the list.

    A syntax error cannot be resynchronised: it is reported once and reading stops.
    """
    try:
        loader = _ManifestLoader(stream)  # reads (and decodes) the first chunk already
    except yaml.YAMLError as exc:
        yield Rejected(1, f"YAML error: {yaml_problem(exc, 'the manifest')}; the file was not read")
        return
    try:
        loader.get_event()  # StreamStart
        while not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # DocumentStart
            if loader.check_event(yaml.SequenceStartEvent) and loader.next_event().anchor is None:
                loader.get_event()
                yield from _list_items(loader)
            elif loader.check_event(yaml.MappingStartEvent) and loader.next_event().anchor is None:
                yield from _mapping_document(loader)
            else:
                node = _compose(loader)
                if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
                    yield _construct(loader, node)
            loader.get_event()  # DocumentEnd
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the broken construct began
        line = mark.line + 1 if mark is not None else loader.line + 1
        yield Rejected(line, f"YAML syntax error: {yaml_problem(exc, 'the manifest')}; the rest of the "
                             "file was not read")
    except yaml.YAMLError as exc:  # e.g. a ReaderError for bytes that are not UTF-8
        yield Rejected(loader.line + 1, f"YAML error: {yaml_problem(exc, 'the manifest')}; the rest of the "
                                        "file was not read")
    finally:
        loader.dispose()


def _list_items(loader: _ManifestLoader) -> Iterator[RawRecord]:
    """The entries of a list whose start event was just consumed, through its end event."""
    while not loader.check_event(yaml.SequenceEndEvent):
        yield _construct(loader, _compose(loader))
    loader.get_event()


def _mapping_document(loader: _ManifestLoader) -> Iterator[RawRecord]:
    """A document that is a mapping: an ``items:`` wrapper around the list, or one item.

    The keys are read one by one, so that an ``items:`` list streams like a top-level one;
    other keys are kept as a node (an item, when there is no ``items:`` list).
    """
    start = loader.get_event()
    tag = start.tag if start.tag not in (None, "!") else loader.resolve(  # type: ignore[no-untyped-call]
        yaml.MappingNode, None, start.implicit)
    node = yaml.MappingNode(tag, [], start.start_mark, start.end_mark, flow_style=start.flow_style)
    refused: Rejected | None = None
    wrapper = False
    while not loader.check_event(yaml.MappingEndEvent):
        key = _compose(loader)
        if isinstance(key, yaml.ScalarNode) and key.value == "items" and loader.check_event(yaml.SequenceStartEvent):
            wrapper = True
            loader.get_event()
            yield from _list_items(loader)
            continue
        value = _compose(loader)
        for part in (key, value):
            if isinstance(part, Rejected):
                refused = refused or part
        if not isinstance(key, Rejected) and not isinstance(value, Rejected):
            node.value.append((key, value))
    node.end_mark = loader.get_event().end_mark
    line = start.start_mark.line + 1
    if wrapper and (node.value or refused):
        names = ", ".join(str(k.value) for k, _ in node.value) or "?"
        yield Rejected(line, f"top-level key(s) {names} next to items: are not used: a YAML manifest is a "
                             "list of items, or a mapping with only an items: list")
    elif not wrapper:
        yield Rejected(line, refused.reason) if refused is not None else _construct(loader, node)


def _compose(loader: _ManifestLoader) -> yaml.Node | Rejected:
    """The next node; or, when it holds an anchor or alias, a `Rejected` after skipping it whole."""
    line = loader.next_event().start_mark.line + 1
    depth = loader.depth
    try:
        node: yaml.Node = loader.compose_node(None, None)
    except Refused as exc:
        # The node is only partly consumed: read on until its last event (depth back to where it began).
        loader.get_event()
        while loader.depth > depth:
            loader.get_event()
        return Rejected(line, str(exc))
    return node


def _construct(loader: _ManifestLoader, node: yaml.Node | Rejected) -> RawRecord:
    if isinstance(node, Rejected):
        return node
    line = node.start_mark.line + 1
    try:
        item = loader.construct_document(node)
        return (line, item) if is_unicode(item) else Rejected(line, LONE_SURROGATE)
    except yaml.YAMLError as exc:  # e.g. an unknown tag; the next item is unaffected
        loader.constructed_objects, loader.recursive_objects, loader.state_generators = {}, {}, []
        loader.deep_construct = False
        return Rejected(line, f"YAML item cannot be read: {yaml_problem(exc, 'the manifest')}")
