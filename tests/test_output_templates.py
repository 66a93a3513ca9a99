"""Config `outputs` templates escape what they are filled with: an item id (any string) becomes
one OSS path segment, by one rule, so ids cannot climb, add levels, turn into a URL's query or
collide with each other's output prefixes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pipeline.config.load import Config
from pipeline.core.job import Job
from pipeline.core.templates import fill_output, output_segment
from pipeline.manifest.reader import read_manifest

TEMPLATE = "oss://media/results/{analysis}/{id}/"


@pytest.mark.parametrize(("item_id", "segment"), [
    ("cat-001", "cat-001"),                 # letters, digits, - _ . stay as they are
    ("v1.2_final~x", "v1.2_final~x"),
    ("../../etc", "..%2F..%2Fetc"),         # cannot climb out of the prefix
    ("a/x", "a%2Fx"),                       # cannot add a level under item "a"
    ("a?x=1#f", "a%3Fx%3D1%23f"),           # not a query or a fragment of a URL
    ("my photo", "my%20photo"),
    ("100%", "100%25"),                     # % itself is escaped: the mapping is one to one
    ("..", "%2E%2E"),                       # a segment of dots would name a directory
    (".", "%2E"),
    ("猫", "%E7%8C%AB"),                    # UTF-8 bytes, percent-encoded
])
def test_an_id_becomes_one_path_segment(item_id: str, segment: str) -> None:
    """The documented rule, value by value."""
    assert output_segment(item_id) == segment
    filled = fill_output(TEMPLATE, item_id=item_id, analysis="seg", capability="video_segmentation")
    assert filled == f"oss://media/results/seg/{segment}/"


IDS = ["a", "a/x", "a/", "a%2Fx", "../../etc", "..", ".", "a?x=1#f", "a?x=1", "my photo", "my%20photo", "x/../a"]


def test_no_two_ids_share_an_output_prefix() -> None:
    """Among ids built to collide (before: `a` and `a/x` wrote under the same prefix; `a/x/..`
    and `a` could name the same place), every filled output is distinct, none is inside
    another's, and none holds an empty, `.` or `..` path segment."""
    outputs = {item_id: fill_output(TEMPLATE, item_id=item_id, analysis="seg", capability="c") for item_id in IDS}
    for (a, out_a), (b, out_b) in itertools.permutations(outputs.items(), 2):
        assert not out_b.startswith(out_a), (a, b, out_a, out_b)
    for item_id, out in outputs.items():
        key = out[len("oss://media/"):].rstrip("/")
        assert all(part not in ("", ".", "..") for part in key.split("/")), (item_id, out)
        assert "?" not in out and "#" not in out and " " not in out


def test_the_manifest_reader_fills_templates_with_escaped_ids(tmp_path: Path) -> None:
    """Through `read_manifest` (what `run` and `validate` use), an item without an output gets
    the template filled with its escaped id; an item's own output is left as it is."""
    rows = [{"id": "../../etc", "capability": "video_segmentation", "url": "https://h/v.mp4"},
            {"id": "mine", "capability": "video_segmentation", "url": "https://h/v.mp4", "output": "oss://b/x y/"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = Config(outputs={"video_segmentation": TEMPLATE})
    jobs = {job.id: job for job in read_manifest(str(manifest), outputs=config.outputs) if isinstance(job, Job)}
    assert jobs["../../etc"].output == {"type": "oss", "oss": "oss://media/results/video_segmentation/..%2F..%2Fetc/"}
    assert jobs["mine"].output == "oss://b/x y/"
