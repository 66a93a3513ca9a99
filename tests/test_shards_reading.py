"""A shard reads only its share: another shard's lines are told from their bytes, undecoded, and
every shard ends with exactly what it got when it decoded every line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pipeline.manifest.formats as formats
import pipeline.manifest.reader as reader
from pipeline.core.job import Job
from pipeline.manifest.line_id import line_id
from pipeline.manifest.reader import Rejected, Skipped, quick_id, read_manifest
from pipeline.state.shards import Shard

URL = '"capability":"object_detection","url":"https://example.com/x/%d.png"'

#: Lines a fast scan could misread; every one is a manifest line of the equivalence test.
TRICKY: list[bytes] = [
    b'{"id":"plain-1",' + (URL % 1).encode() + b"}",
    b'{"id": "spaced-2", ' + (URL % 2).encode().replace(b'":"', b'": "') + b"}",
    b' \t{ \t"id"\t :\r "ws-3" ,' + (URL % 3).encode() + b"}  ",
    b'{"meta":{"id":"nested-4"},"id":"outer-4",' + (URL % 4).encode() + b"}",
    b'{"id":"outer-5","meta":{"id":"nested-5"},' + (URL % 5).encode() + b"}",
    b'{"id":"esc\\"aped-6",' + (URL % 6).encode() + b"}",
    b'{"id":"\\u00e9scaped-7",' + (URL % 7).encode() + b"}",
    '{"id":"ünï-cødé-8",'.encode() + (URL % 8).encode() + b"}",
    '{"id":"\u3000",'.encode() + (URL % 9).encode() + b"}",
    b'{"id":"   ",' + (URL % 10).encode() + b"}",
    b"{" + (URL % 11).encode() + b"}",
    b'{"id":12,' + (URL % 12).encode() + b"}",
    b'{"id":null,' + (URL % 13).encode() + b"}",
    b'{"id":"first-14","id":"second-14",' + (URL % 14).encode() + b"}",
    b'{"id":"broken-15","capability":',
    b'{"id":"badutf8-16","url":"https://example.com/\xff.png","capability":"object_detection"}',
    b'{"id":"surrogate-17","capability":"object_detection","url":"https://example.com/\\ud800.png"}',
    b'# {"id":"comment-18"}',
    b"",
    b'{"id":"plain-1",' + (URL % 19).encode() + b"}",
    b'{"idx":"x","id":"second-key-20",' + (URL % 20).encode() + b"}",
    b'{"\\u0069d":"escaped-key-21",' + (URL % 21).encode() + b"}",
    b'{"id":"trailing-22 ",' + (URL % 22).encode() + b"}",
    b'{"id":"tab\tin-23",' + (URL % 23).encode() + b"}",
    b'["id","list-24"]',
    b'{"id":"no-capability-25"}',
    b'{"id":"unterminated-26',
    b'{"id":"ctl\x0bws-27"\x0b,' + (URL % 27).encode() + b"}",
]


def _manifest(tmp: Path) -> Path:
    bom = "\ufeff".encode() + b'{"id":"bom-0",' + (URL % 0).encode() + b"}"
    plain = [json.dumps({"id": f"item-{i:03d}", "capability": "object_detection",
                         "url": f"https://example.com/p/{i}.png"}, separators=(",", ":")).encode()
             for i in range(60)]
    path = tmp / "m.jsonl"
    path.write_bytes(b"\n".join([bom, *TRICKY, *plain, *TRICKY[:3]]) + b"\n")
    return path


def _mine(item: Job | Rejected, shard: Shard) -> bool:
    """The engine's rule (`engine.reader.Reader._mine`) for what a shard reports."""
    if isinstance(item, Rejected):
        return shard.owns(item.id) if item.id else shard.owns_line(item.line)
    return shard.owns(item.id)


def _outcome(path: Path, shard: Shard) -> tuple[list[tuple[Any, ...]], int]:
    """What the shard reports (kept records, comparable), and the lines it passed over."""
    kept: list[tuple[Any, ...]] = []
    passed = 0
    for item in read_manifest(path, check_files=False, shard=shard):
        if isinstance(item, Skipped):
            passed += item.lines
        elif _mine(item, shard):
            kept.append(("rejected", item.line, item.id, item.reason) if isinstance(item, Rejected)
                        else ("job", item.line, item.id, item.key))
    return kept, passed


class _Counting:
    """The module's JSON decoder, counting the lines it decodes."""

    def __init__(self) -> None:
        self.lines = 0

    def decode(self, text: str) -> Any:
        self.lines += 1
        return reader_decoder.decode(text)


reader_decoder = formats._DECODER


@pytest.mark.parametrize("count", [2, 3, 8])
def test_shards_keep_exactly_what_decoding_every_line_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           count: int) -> None:
    """On tricky lines (nested and escaped ids, unicode, whitespace, id-less, duplicate keys,
    malformed JSON and UTF-8), each of N shards reports the same records as when every line is
    decoded first, together every record exactly once, while decoding fewer lines."""
    path = _manifest(tmp_path)
    counting = _Counting()
    monkeypatch.setattr(formats, "_DECODER", counting)
    fast = [_outcome(path, Shard(k, count)) for k in range(count)]
    fast_decoded = counting.lines
    monkeypatch.setattr(reader, "line_id", lambda raw: None)  # today's way: decode every line
    counting.lines = 0
    slow = [_outcome(path, Shard(k, count)) for k in range(count)]
    assert [kept for kept, _ in fast] == [kept for kept, _ in slow]
    every = sorted(record for kept, _ in slow for record in kept)
    assert len(every) == len(set(every))
    unsharded = [(("rejected", i.line, i.id, i.reason) if isinstance(i, Rejected) else ("job", i.line, i.id, i.key))
                 for i in read_manifest(path, check_files=False)]
    assert every == sorted(unsharded)
    assert fast_decoded < counting.lines * 0.6, (fast_decoded, counting.lines)


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"id":"a-1","x":1}', "a-1"),
    (b'{ "id" : "a-2" }', "a-2"),
    (b'\t{\r\n"id":\t"a-3"}', "a-3"),
    (b'{"id":"outer","meta":{"id":"inner"}}', "outer"),
    (b'{"meta":{"id":"inner"},"id":"outer"}', None),
    (b'{"id":"a\\"b"}', None),
    (b'{"id":"\\u00e9"}', None),
    ('{"id":"é-ü"}'.encode(), "é-ü"),
    ('{"id":"\u3000"}'.encode(), None),
    (b'{"id":"  "}', None),
    (b'{"id":""}', None),
    (b'{"id":5}', None),
    (b'{"id":null}', None),
    (b'{"capability":"x"}', None),
    (b'{"idx":"a"}', None),
    (b'{"\\u0069d":"a"}', None),
    (b'\xef\xbb\xbf{"id":"bom"}', None),
    (b'{"id":"\xff"}', None),
    (b'{"id":"open', None),
    (b'["id","a"]', None),
    (b'{"id":"x y "}', "x y "),
])
def test_line_id_reads_an_opening_plain_id_and_nothing_else(raw: bytes, expected: str | None) -> None:
    """The id is read from the bytes only when the line opens with a plain string id."""
    assert line_id(raw) == expected


def test_a_read_id_is_the_id_decoding_gives() -> None:
    """Whenever a tricky line decodes to an item, the id read from its bytes (when one is) is the
    item's quick id (the one a shard is chosen by)."""
    compared = 0
    for raw in TRICKY:
        found = line_id(raw)
        records = list(formats.iter_jsonl([raw]))
        if found is None or not records or not isinstance(records[0], tuple):
            continue
        _, item = records[0]
        assert isinstance(item, dict) and quick_id(item) == found, raw
        compared += 1
    assert compared >= 8
