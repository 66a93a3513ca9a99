"""What the export tests share: result lines written the way the sink writes them, into a state
dir and results file (tests/test_export.py, tests/test_export_parquet.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.cli import export
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.sink import Sink

CAPS = {"caption": "image_analyze", "objects": "object_detection", "ocr": "image_analyze"}
SERVICE = {"image_analyze": "ops-image-analyze-ocr-001", "object_detection": "ops-object-detect-001"}
OLD_EXPORT = '{"id":"old","status":"SUCCESS","meta":null,"analyses":{}}\n'


def line(item_id: str, analysis: str, status: str = "SUCCESS", **extra: Any) -> ResultLine:
    cap = CAPS.get(analysis, "image_analyze")
    failed = status == "FAILED"
    return ResultLine.finished(
        id=item_id, capability=cap, service_id=SERVICE[cap], status=ItemStatus(status),
        task_id=f"t-{item_id}-{analysis}",
        data=None if failed else {"text": f"{analysis} of {item_id}", "é": "ü"}, usage=None if failed else {"units": 1},
        error={"code": "InvalidParameter", "message": "bad image", "http_status": 400} if failed else None,
        attempts=2 if failed else 1, polls=1, submitted_at=1_700_000_000.0, finished_at=1_700_000_002.0,
        meta=extra.get("meta", {"batch": 7, "item": item_id}), source_oss=extra.get("source_oss"), analysis=analysis)


class Run:
    """A state dir and its results file, written the way the sink writes them (batches, offsets)."""

    def __init__(self, tmp_path: Path) -> None:
        self.out = tmp_path / "results.jsonl"
        self.state_dir = tmp_path / "results.jsonl.state"
        self.ckpt = Checkpoint.open(self.state_dir)  # left open: the export reads a live run's state dir
        self.ckpt.set_meta("out", str(self.out.resolve()))

    def write(self, *batches: list[ResultLine]) -> Run:
        sink = Sink(self.out, self.ckpt)
        with open(self.out, "ab") as f:
            for batch in batches:
                sink.write(f, batch)
        return self

    def export(self, tmp_path: Path, name: str = "export.jsonl") -> tuple[int, list[dict[str, Any]]]:
        target = tmp_path / name
        code = export.main(argparse.Namespace(state_dir=str(self.state_dir), out=str(target), by_item=True))
        return code, [json.loads(raw) for raw in target.read_text(encoding="utf-8").splitlines()]


def three_items(run: Run) -> Run:
    """Item b (3 analyses, one FAILED), a (2), c (1), finished interleaved over two batches."""
    return run.write(
        [line("b", "ocr"), line("a", "objects"), line("c", "caption", source_oss="oss://b/c.jpg")],
        [line("b", "caption"), line("b", "objects", "FAILED"), line("a", "caption")])
