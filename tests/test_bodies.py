"""Request bodies as they go on the wire: built from the table, encoded once, a local file read at
submit time and held to the service's 8 MB limit."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import InvalidParameter
from pipeline.core.job import Job
from pipeline.service.bodies import RequestBody, check_body_size, encode_body, request_body

IMAGE = CAPABILITIES["image_analyze"]


def image_job(kind: str, source: str) -> Job:
    return Job(id="j1", capability=IMAGE.name, service_id=IMAGE.default_service_id, source_kind=kind, source=source)


async def test_a_url_body_is_the_table_s_body_encoded_compactly() -> None:
    """A body is the capability's fields and their one encoding: compact JSON, UTF-8 kept as is."""
    body = await request_body(IMAGE, image_job("url", "https://example.com/ümlaut.png"))
    assert body.fields == IMAGE.build_body(image_job("url", "https://example.com/ümlaut.png"), None)
    assert body.data == encode_body(body.fields) and json.loads(body.data) == body.fields
    assert b" " not in body.data and "ümlaut".encode() in body.data


async def test_a_local_file_is_read_at_submit_time_as_base64(tmp_path: Path) -> None:
    """A path source is read when the body is made and sent as base64 content."""
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG not really")
    body = await request_body(IMAGE, image_job("path", str(image)))
    assert body.fields["document"]["content"] == base64.b64encode(image.read_bytes()).decode()
    assert json.loads(body.data) == body.fields


async def test_an_unreadable_file_is_a_file_error(tmp_path: Path) -> None:
    """A local file that cannot be read fails its item with code FileError."""
    with pytest.raises(InvalidParameter) as caught:
        await request_body(IMAGE, image_job("path", str(tmp_path / "gone.png")))
    assert caught.value.code == "FileError" and "gone.png" in caught.value.message


def test_the_size_limit_is_held_against_the_bytes_sent() -> None:
    """A body whose encoding is over the limit is refused, naming its source; one at the limit passes."""
    body = RequestBody.of({"document": {"content": "A" * 100}})
    check_body_size(body, "big.png", limit=len(body.data))
    with pytest.raises(InvalidParameter, match=r"big\.png makes a"):
        check_body_size(body, "big.png", limit=len(body.data) - 1)


def test_a_value_json_cannot_hold_is_invalid_parameter() -> None:
    """A body that is not JSON-serializable is the item's fault (InvalidParameter), named as such."""
    with pytest.raises(InvalidParameter, match="not JSON-serializable"):
        encode_body({"when": object()})
