"""Items given as Python mappings (`pipeline.stream`), each checked exactly as a manifest line.

`ItemChecker.check(index, item)` is what reading a JSON Lines manifest does to one line, for
the item at `index` of the caller's iterable: the item must be a mapping of JSON values (it is
copied through JSON, so the caller may reuse or change its dicts afterwards, and a value a result
line could not carry is refused here, not when its line is written), then `validate_record`
checks it, and an id repeated within the stream is refused. A bad item is a `Rejected` whose
`line` is its 1-based position (its line, had the items been written as a JSONL manifest) and
whose reason starts with ``items[INDEX]:`` (0-based, as Python counts). Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.capabilities import MAX_BODY_BYTES
from ..core.echo import clipped, shown
from ..core.idset import IdSet
from ..core.job import Job
from .analyses import run_analyses, validate_record
from .formats import Rejected

__all__ = ["ItemChecker"]


class ItemChecker:
    """Checks the items of one stream in order (it remembers their ids)."""

    def __init__(self, *, base_dir: Path, uploads: bool = False, analyses: Sequence[str] | None = None,
                 outputs: Mapping[str, str] | None = None, expected_items: int = 0) -> None:
        self._base_dir = base_dir  # relative `path` sources: the working directory, as for stdin
        self._uploads = uploads
        self._analyses = run_analyses(analyses)
        self._outputs = outputs
        self._seen = IdSet(expected=expected_items)

    def check(self, index: int, item: object) -> list[Job] | Rejected:
        """The item's Jobs (one per analysis), or why it is refused."""
        line = index + 1
        if not isinstance(item, Mapping):
            return Rejected(line, f"items[{index}]: a {type(item).__name__}, not a dict of manifest keys (id, "
                                  "capability or analyses, url/oss/path/content, ...)")
        try:
            record = json.loads(json.dumps(dict(item), allow_nan=False))
        except (TypeError, ValueError) as exc:
            return Rejected(line, f"items[{index}]: not JSON ({clipped(str(exc), 120)}): give strings, numbers, "
                                  "booleans, None, lists and dicts with string keys only")
        result = validate_record(record, line, base_dir=self._base_dir, max_body_bytes=MAX_BODY_BYTES,
                                 uploads=self._uploads, analyses=self._analyses, outputs=self._outputs)
        if isinstance(result, Rejected):
            return Rejected(line, f"items[{index}]: {result.reason}", result.id)
        item_id = result[0].id
        if not self._seen.add(item_id):
            return Rejected(line, f"items[{index}]: duplicate id {shown(item_id)}: ids must be unique within a "
                                  "stream (an item without an id gets one from its fields: give each an id)", item_id)
        return result
