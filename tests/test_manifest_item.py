"""One item's rules (`validate_item`): sources, local files, ids, service ids, parameters, output
and media types, inline-content naming; the request-body size estimate and derived ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.capabilities import CAPABILITIES, MAX_BODY_BYTES
from pipeline.core.job import Job
from pipeline.manifest.formats import Rejected
from pipeline.manifest.item import derive_id, estimated_body_bytes, validate_item
from pipeline.manifest.reader import read_manifest

URL = "https://example.com/a.jpg"
VIDEO = "https://example.com/v.mp4"


def check(item: dict[str, Any], base_dir: Path | None = None) -> Job | Rejected:
    return validate_item(item, 1, base_dir=base_dir, max_body_bytes=MAX_BODY_BYTES, check_files=True)


def reason(item: dict[str, Any], base_dir: Path | None = None) -> str:
    result = check(item, base_dir)
    assert isinstance(result, Rejected), result
    return result.reason


def test_null_fields_mean_absent() -> None:
    """A JSON null counts as an absent field, like an empty CSV cell."""
    result = validate_item({"capability": "ocr", "url": URL, "path": None, "meta": None}, 3,
                           base_dir=None, max_body_bytes=MAX_BODY_BYTES, check_files=True)
    assert isinstance(result, Job) and result.source_kind == "url" and result.line == 3


def test_body_limit_boundary_for_local_files(tmp_path: Path) -> None:
    """The largest local file whose base64 body fits the limit is accepted; three bytes more is not."""
    limit = 64 * 1024
    fits = (limit - estimated_body_bytes(0)) // 4 * 3
    assert estimated_body_bytes(fits) <= limit < estimated_body_bytes(fits + 3)
    for name, size in (("fits.wav", fits), ("over.wav", fits + 3)):
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)
    ok = validate_item({"capability": "audio_asr", "path": "fits.wav"}, 1, base_dir=tmp_path,
                       max_body_bytes=limit, check_files=True)
    over = validate_item({"capability": "audio_asr", "path": "over.wav"}, 2, base_dir=tmp_path,
                         max_body_bytes=limit, check_files=True)
    assert isinstance(ok, Job)
    assert isinstance(over, Rejected) and "too large to send inline" in over.reason


def test_estimated_body_bytes_is_base64_plus_overhead() -> None:
    """The estimate is the base64 length (4 per 3 bytes, rounded up) plus a fixed JSON overhead."""
    overhead = estimated_body_bytes(0)
    assert overhead > 0
    assert [estimated_body_bytes(n) - overhead for n in (1, 2, 3, 4, 3_000_000)] == [4, 4, 4, 8, 4_000_000]


def test_oversize_inline_content_is_rejected() -> None:
    """Inline base64 that would push the body past the limit is rejected, pointing to OSS or a URL."""
    result = validate_item({"capability": "audio_asr", "content": "A" * 4000, "file_name": "a.wav"}, 5,
                           base_dir=None, max_body_bytes=4096, check_files=True)
    assert isinstance(result, Rejected) and result.line == 5
    assert "too large to send inline" in result.reason and "use oss" in result.reason


def test_check_files_false_skips_the_filesystem(tmp_path: Path) -> None:
    """With check_files off, a missing local file is accepted and still resolved against base_dir."""
    result = validate_item({"capability": "audio_asr", "path": "sub/none.wav"}, 1, base_dir=tmp_path,
                           max_body_bytes=MAX_BODY_BYTES, check_files=False)
    assert isinstance(result, Job) and result.source == str(tmp_path / "sub" / "none.wav")


# --------------------------------------------------------------------------- ids


def test_derived_ids_are_stable_and_content_based() -> None:
    """A derived id is a fixed function of the content: pinned value, key order and nulls ignored,
    and any change of content changes it."""
    item = {"capability": "ocr", "url": URL, "meta": {"b": 1, "a": [1, 2]}}
    # sha256 of {"capability":"ocr","meta":{"a":[1,2],"b":1},"url":"https://example.com/a.jpg"}
    assert derive_id(item) == "item-98c22f72d08b1ebc"
    assert derive_id(dict(reversed(list(item.items())))) == derive_id(item)
    assert derive_id({**item, "id": None, "path": None}) == derive_id(item)
    assert derive_id({**item, "url": URL + "?v=2"}) != derive_id(item)
    assert derive_id({**item, "meta": {"b": 2, "a": [1, 2]}}) != derive_id(item)
    assert derive_id({**item, "id": "given"}) == derive_id(item)



# --------------------------------------------------------------------------- rules run and validate share


@pytest.mark.parametrize("item, fragment", [
    ({"service_id": "ops-../../x"}, "got 'ops-../../x'"),
    ({"service_id": "ops-x?y=1#z"}, "got 'ops-x?y=1#z'"),
    ({"service_id": "ops-a/b"}, "letters, digits, '.', '_' or '-'"),
    ({"service_id": "ops-" + "q" * 2_000_000}, "(2,000,004 characters)"),  # echoed in counts and the summary
])
def test_service_ids_that_would_change_the_request_path_are_rejected(item: dict[str, Any], fragment: str) -> None:
    """A service id with '/', '..', '?' or '#' is refused, since it would land in the request path; so is
    one longer than any service's (it is echoed whole in counts and summaries), by a bounded message."""
    text = reason({"capability": "ocr", "url": URL, **item})
    assert text.startswith("service_id must be 'ops-' followed by") and fragment in text and len(text) < 400


@pytest.mark.parametrize("interval, fragment", [
    (-5, "must be at least 1, got -5"), (0, "must be at least 1, got 0"),
    (True, "must be an integer, got a boolean"), (2.5, "must be an integer, got a number"),
])
def test_snapshot_interval_must_be_a_positive_integer(interval: object, fragment: str) -> None:
    """parameters.interval is a positive int; negatives, zero, booleans and fractions are refused."""
    assert fragment in reason({"capability": "video_snapshot", "url": VIDEO, "parameters": {"interval": interval}})
    assert isinstance(check({"capability": "video_snapshot", "url": VIDEO, "parameters": {"interval": 1}}), Job)


@pytest.mark.parametrize("capability, output, ok", [
    ("video_snapshot", {"type": "bogus"}, False),
    ("video_snapshot", {"type": "text"}, False),
    ("video_snapshot", {"type": "base64"}, True),
    ("video_snapshot", "oss://b/frames/", True),
    ("audio_asr", {"type": "base64"}, False),
    ("audio_asr", {"type": "text"}, True),
    ("audio_asr", {"type": "oss", "oss": "oss://b/t/"}, True),
    ("video_segmentation", {"type": "text", "oss": "oss://b/s/"}, False),
    ("video_summarization", {"type": "oss", "oss": "oss://b/s/"}, True),
])
def test_output_type_must_be_one_the_capability_takes(capability: str, output: Any, ok: bool) -> None:
    """output.type must be one of the capability's output types in the table; others are refused."""
    result = check({"capability": capability, "url": VIDEO, "output": output})
    assert isinstance(result, Job) is ok, result
    if not ok:
        assert isinstance(result, Rejected) and "output" in result.reason


def test_image_capabilities_refuse_non_image_files(tmp_path: Path) -> None:
    """Image extraction and detection refuse .gif and .mp4 URLs, paths and file names; a name
    without an extension passes."""
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    for capability in ("image_analyze", "object_detection"):
        assert ".gif file" in reason({"capability": capability, "url": "https://h/x/a.gif"})
        assert ".mp4 file" in reason({"capability": capability, "url": "https://h/x/clip.mp4?s=1"})
        assert ".gif file" in reason({"capability": capability, "path": "a.gif"}, tmp_path)
        assert ".gif file" in reason({"capability": capability, "content": "AAAA", "file_name": "f.gif"})
        assert isinstance(check({"capability": capability, "url": "https://h/render?id=3"}), Job)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode: see the symlink test")
def test_unreadable_local_file_is_rejected(tmp_path: Path) -> None:
    """A local file that exists but cannot be read is refused now, not when it is submitted."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG")
    secret.chmod(0)
    try:
        assert "is not readable by this user" in reason({"capability": "ocr", "path": "secret.png"}, tmp_path)
    finally:
        secret.chmod(0o600)


def test_file_the_user_may_not_read_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-permission check runs even where chmod cannot prove it (root): when os.access says
    the file is not readable, the item is refused."""
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    assert isinstance(check({"capability": "ocr", "path": "a.png"}, tmp_path), Job)
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.R_OK)
    assert "is not readable by this user" in reason({"capability": "ocr", "path": "a.png"}, tmp_path)


def test_unusable_local_paths_are_rejected_with_the_cause(tmp_path: Path) -> None:
    """A broken symbolic link and a directory are refused with a reason saying which (even as root)."""
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "dir.png").mkdir()
    assert "symbolic link to a file that does not exist" in \
        reason({"capability": "ocr", "path": "dangling.png"}, tmp_path)
    assert "is not a regular file" in reason({"capability": "ocr", "path": "dir.png"}, tmp_path)


def test_numeric_ids_are_rejected_not_coerced() -> None:
    """An id written as a number is refused with a hint to quote it; the same id as text is fine."""
    for number in (17, 17.0):
        text = reason({"id": number, "capability": "ocr", "url": URL})
        assert "id must be a string, got a number" in text and "quote the id as it is written" in text
    result = check({"id": "17", "capability": "ocr", "url": URL})
    assert isinstance(result, Job) and result.id == "17"


def test_a_yaml_octal_looking_id_is_not_given_a_wrong_quoted_suggestion(tmp_path: Path) -> None:
    """YAML reads `id: 017` as 15: the message says what it was read as and never suggests quoting "15"."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"- id: 017\n  capability: ocr\n  url: {URL}\n")
    (rejected,) = list(read_manifest(manifest))
    assert isinstance(rejected, Rejected)
    assert "read as 15" in rejected.reason and '"15"' not in rejected.reason


def test_csv_ids_stay_text(tmp_path: Path) -> None:
    """In CSV every cell is text, so a numeric-looking id is kept exactly as written."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,capability,url\n017,ocr,https://h/a.png\n")
    [job] = list(read_manifest(manifest))
    assert isinstance(job, Job) and job.id == "017"


@pytest.mark.parametrize("capability", ["image_analyze", "video_snapshot", "audio_asr"])
def test_inline_content_without_a_name_takes_it_from_file_type(capability: str) -> None:
    """Inline content with file_type but no file_name is named <id>.<file_type>; with neither it is
    refused, saying to give one."""
    file_type = {"image_analyze": "PNG", "video_snapshot": "mp4", "audio_asr": "wav"}[capability]
    job = check({"id": "scan/7", "capability": capability, "content": "AAAA", "file_type": file_type})
    assert isinstance(job, Job) and job.file_name == f"scan_7.{file_type.lower()}"
    assert "give file_name" in reason({"capability": capability, "content": "AAAA"})
    body = CAPABILITIES[capability].build_body(job, None)
    assert f"scan_7.{file_type.lower()}" in str(body)


def test_object_detection_content_needs_no_name() -> None:
    """Object detection sends no file name, so its inline content is accepted without one."""
    assert isinstance(check({"capability": "object_detection", "content": "AAAA"}), Job)
