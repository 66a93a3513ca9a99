"""`validate` counts what a run uploads to OSS: content-addressed objects, so byte-identical files
(and one file under several paths) count once, decided by the same rule as `run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.cli.validate import validate
from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.upload.files import distinct_contents


def _manifest(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_byte_identical_files_count_once_in_to_upload(tmp_path: Path) -> None:
    """Two names for the same bytes, one file named twice (once by a relative path) and one
    different file of the same size: 2 files and their bytes, not 4 (before: every name counted)."""
    (tmp_path / "a.mp4").write_bytes(b"x" * 5000)
    (tmp_path / "copy.mp4").write_bytes(b"x" * 5000)
    (tmp_path / "other.mp4").write_bytes(b"y" * 5000)
    rows = [{"id": str(i), "capability": "video_snapshot", "path": name}
            for i, name in enumerate(["a.mp4", "copy.mp4", "other.mp4", str(tmp_path / "a.mp4")])]
    config = Config(upload=UploadConfig(bucket="media", always=True))
    _, report = validate(_manifest(tmp_path / "m.jsonl", rows), config)
    assert report["uploads"] == {"files": 2, "bytes": 10_000}


def test_validate_counts_what_run_uploads_for_capabilities_without_inline_content(tmp_path: Path) -> None:
    """A small local video for segmentation (which reads only OSS or URLs) is uploaded by `run`
    whatever its size, so `validate` counts it; a small image sent inline is not counted."""
    (tmp_path / "v.mp4").write_bytes(b"v" * 300)
    (tmp_path / "p.png").write_bytes(b"p" * 300)
    rows = [{"id": "seg", "capability": "video_segmentation", "path": "v.mp4", "output": "oss://media/out/"},
            {"id": "ocr", "capability": "image_analyze", "path": "p.png"}]
    _, report = validate(_manifest(tmp_path / "m.jsonl", rows), Config(upload=UploadConfig(bucket="media")))
    assert report["uploads"] == {"files": 1, "bytes": 300}


def test_distinct_contents_reads_only_files_whose_size_another_has(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of a size no other has are counted from their stat alone; a hard link is the same
    file; only same-size distinct files are hashed."""
    import pipeline.upload.files as upload_files

    hashed: list[Path] = []
    real = upload_files.hash_file

    def counting(path: Path) -> tuple[str, upload_files.FileStamp]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(upload_files, "hash_file", counting)
    (tmp_path / "big").write_bytes(b"b" * 10)
    os.link(tmp_path / "big", tmp_path / "big-link")
    (tmp_path / "s1").write_bytes(b"s" * 4)
    (tmp_path / "s2").write_bytes(b"t" * 4)
    paths = [tmp_path / name for name in ("big", "big-link", "s1", "s2", "missing")]
    assert distinct_contents(paths) == (3, 18)
    assert sorted(p.name for p in hashed) == ["s1", "s2"]
