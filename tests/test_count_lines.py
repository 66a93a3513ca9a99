"""`count_lines`, the progress bar's total: it counts items, not comments, blanks or the CSV header."""

from __future__ import annotations

from pathlib import Path

from pipeline.manifest.reader import read_manifest
from pipeline.observe.progress import count_lines

SAMPLES = Path(__file__).parent.parent / "sample_manifests"
DATA = Path(__file__).parent / "data" / "manifests"


def test_jsonl_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    """Blank lines and lines whose first non-blank character is '#' are not counted; a BOM is ignored."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf# header comment\n{}\n\n   \n  # indented comment\n{}\n{}")
    assert count_lines(str(manifest)) == 3


def test_sample_jsonl_total_is_its_item_count() -> None:
    """The sample catalog (14 items among comment lines) counts 14, the records the reader yields."""
    sample = SAMPLES / "catalog.jsonl"
    assert count_lines(str(sample)) == 14 == sum(1 for _ in read_manifest(sample))


def test_csv_counts_records_not_lines(tmp_path: Path) -> None:
    """CSV skips the header, blank and comment rows, and a quoted cell spanning lines is one record."""
    manifest = tmp_path / "m.csv"
    manifest.write_text('# comment\nid,capability,meta\n\na,ocr,"{\n""k"": 1\n}"\n# later comment\nb,ocr,\n')
    assert count_lines(str(manifest)) == 2
    assert count_lines(str(DATA / "items.csv")) == 7  # one record spans four lines


def test_yaml_stdin_and_unreadable_files_have_no_total(tmp_path: Path) -> None:
    """YAML, stdin and a manifest that cannot be opened give None rather than a wrong total."""
    assert count_lines(str(DATA / "items.yaml")) is None
    assert count_lines("-") is None
    assert count_lines(str(tmp_path / "missing.jsonl")) is None
