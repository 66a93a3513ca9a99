"""The emulator enforces the service's rules: auth, QPS limits, the body size limit, field validation."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
from emulator_http import KEY, Samples
from emulator_http import post as _post
from emulator_http import route_path as _path
from emulator_http import session as _session
from emulator_http import status as _status

from pipeline.emulator import EmulatorSettings, start_emulator

# --- auth -------------------------------------------------------------------------------


async def test_missing_or_wrong_key_is_401_without_echoing_it(emu: Any, emu_samples: Samples) -> None:
    """A missing or wrong bearer key gets 401 InvalidApiKey and the body never contains the key."""
    sid, body = emu_samples["image-analyze"]
    for headers in (
        {},
        {"Authorization": "Bearer wrong-key-123"},
        {"Authorization": f"Basic {emu.settings.api_key}"},
    ):
        async with _session(emu.url, headers) as http:
            status, resp_headers, error = await _post(http, "image-analyze", sid, body)
        assert status == 401
        assert error["code"] == "InvalidApiKey" and error["request_id"] == resp_headers["x-acs-request-id"]
        assert "wrong-key-123" not in str(error) and emu.settings.api_key not in str(error)
    assert emu.counters()["tasks_created_total"] == 0


async def test_sdk_bearer_header_alone_is_accepted(emu: Any, emu_samples: Samples) -> None:
    """The SDK's x-acs-bearer-token header authenticates like Authorization: Bearer."""
    sid, body = emu_samples["audio-asr"]
    async with _session(emu.url, {"x-acs-bearer-token": emu.settings.api_key}) as http:
        status, _, created = await _post(http, "audio-asr", sid, body)
    assert status == 200 and created["result"]["task_id"]


# --- QPS --------------------------------------------------------------------------------


async def test_burst_over_limit_gets_429_with_integer_retry_after(
    emu_clock: Any, emu_samples: Samples
) -> None:
    """At real speed, 15 simultaneous creates pass 10 and the rest get 429 with Retry-After >= 1."""
    sid, body = emu_samples["image-analyze"]
    async with (
        start_emulator(EmulatorSettings(api_key=KEY), clock=emu_clock) as emu,
        _session(emu.url) as http,
    ):
        results = await asyncio.gather(*(_post(http, "image-analyze", sid, body) for _ in range(15)))
        statuses = sorted(r[0] for r in results)
        assert statuses == [200] * 10 + [429] * 5
        throttled = [r for r in results if r[0] == 429]
        assert all(r[2]["code"] == "Throttling.RateQuota" for r in throttled)
        assert {r[1]["Retry-After"] for r in throttled} == {"1"}
        counters = emu.counters()
        assert counters["throttled_total"] == 5 and counters["max_window"]["image-analyze"] == 10
        assert counters["max_window_offered"]["image-analyze"] == 15


async def test_window_is_strictly_sliding(emu_clock: Any, emu_samples: Samples) -> None:
    """A slot frees exactly one window after the oldest accepted request, not at a bucket edge."""
    sid, body = emu_samples["audio-asr"]
    async with (
        start_emulator(EmulatorSettings(api_key=KEY), clock=emu_clock) as emu,
        _session(emu.url) as http,
    ):
        for _ in range(3):
            assert (await _post(http, "audio-asr", sid, body))[0] == 200
        emu_clock.advance(0.6)
        for _ in range(2):
            assert (await _post(http, "audio-asr", sid, body))[0] == 200
        emu_clock.advance(0.3)  # 0.9 s after the first three: the window still holds 5
        assert (await _post(http, "audio-asr", sid, body))[0] == 429
        emu_clock.advance(0.11)  # the first three have left the window
        assert [(await _post(http, "audio-asr", sid, body))[0] for _ in range(4)] == [200, 200, 200, 429]


async def test_scaled_retry_after_is_exact_decimal(emu_clock: Any, emu_samples: Samples) -> None:
    """With time_scale 10 the window is 0.1 s and Retry-After gives the exact wait in decimals."""
    sid, body = emu_samples["video-snapshot"]
    settings = EmulatorSettings(api_key=KEY, time_scale=10)
    async with start_emulator(settings, clock=emu_clock) as emu, _session(emu.url) as http:
        for _ in range(5):
            assert (await _post(http, "video-snapshot", sid, body))[0] == 200
        emu_clock.advance(0.04)
        status, headers, _ = await _post(http, "video-snapshot", sid, body)
        assert status == 429 and headers["Retry-After"] == "0.060"


@pytest.mark.parametrize("polls_count", [True, False])
async def test_polls_count_against_the_limit_only_when_configured(
    polls_count: bool, emu_clock: Any, emu_samples: Samples
) -> None:
    """Task-status GETs share the QPS window when polls_count is set, and are free otherwise."""
    sid, body = emu_samples["audio-asr"]
    settings = EmulatorSettings(api_key=KEY, polls_count=polls_count)
    async with start_emulator(settings, clock=emu_clock) as emu, _session(emu.url) as http:
        status, _, created = await _post(http, "audio-asr", sid, body)
        assert status == 200
        polls = [(await _status(http, "audio-asr", sid, created["result"]["task_id"]))[0] for _ in range(8)]
        assert polls == ([200] * 4 + [429] * 4 if polls_count else [200] * 8)
        creates = [(await _post(http, "audio-asr", sid, body))[0] for _ in range(5)]
        assert creates == ([429] * 5 if polls_count else [200] * 4 + [429])


# --- body size --------------------------------------------------------------------------


def _image_body(content_bytes: int) -> bytes:
    return b'{"document": {"file_name": "big.png", "content": "' + b"A" * content_bytes + b'"}}'


async def test_body_over_8mb_is_400_invalid_parameter_not_413(
    emu: Any, emu_http: aiohttp.ClientSession
) -> None:
    """A body one byte over 8 MB, sized or chunked, gets 400 InvalidParameter suggesting oss/url."""
    limit = 8 * 1024 * 1024
    body = _image_body(limit - len(_image_body(0)) + 1)
    assert len(body) == limit + 1

    async def chunked() -> Any:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    for data in (io.BytesIO(body), chunked()):
        async with emu_http.post(_path("image-analyze", "ops-image-analyze-ocr-001"), data=data) as resp:
            error = await resp.json()
            assert resp.status == 400, error
        assert error["code"] == "InvalidParameter"
        assert "8 MB" in error["message"] and "oss://" in error["message"] and "URL" in error["message"]


async def test_body_at_the_limit_is_accepted(emu: Any, emu_http: aiohttp.ClientSession) -> None:
    """A valid body of exactly 8 MB is served normally (aiohttp's own 1 MB cap is lifted)."""
    limit = 8 * 1024 * 1024
    content = (limit - len(_image_body(0))) // 4 * 4  # whole base64 quads
    body = _image_body(content)
    body = body[:-1] + b" " * (limit - len(body)) + b"}"  # pad with JSON whitespace
    assert len(body) == limit
    async with emu_http.post(
        _path("image-analyze", "ops-image-analyze-ocr-001"), data=io.BytesIO(body)
    ) as resp:
        assert resp.status == 200, await resp.text()


# --- validation -------------------------------------------------------------------------

OUT = {"type": "oss", "oss": "oss://b/out/"}
INVALID_CASES = [
    ("image-analyze", "ops-image-analyze-ocr-001", {}, "document is required"),
    (
        "image-analyze",
        "ops-image-analyze-ocr-001",
        {"document": {"content": "QUJD"}},
        "document.file_name is required when document.url is blank",
    ),
    (
        "image-analyze",
        "ops-image-analyze-ocr-001",
        {"document": {"url": "https://x/a.gif"}},
        "document.file_type must be one of jpg, jpeg, png, bmp, tiff",
    ),
    (
        "image-analyze",
        "ops-image-analyze-ocr-001",
        {"document": {"url": "https://x/a", "file_type": "pdf"}},
        "document.file_type must be one of",
    ),
    (
        "image-analyze",
        "ops-image-analyze-ocr-001",
        {"document": {"content": "not base64!", "file_name": "a.png"}},
        "document.content must be base64",
    ),
    ("image-object-detection", "ops-object-detect-001", {"image": {}}, "image: exactly one of url/content"),
    (
        "image-object-detection",
        "ops-object-detect-001",
        {"image": {"url": "ftp://x/a.jpg"}},
        "image.url must be an http(s) URL",
    ),
    (
        "video-segmentation",
        "ops-video-segment-001",
        {"input": {"oss": "oss://b/v.mp4"}},
        "output is required",
    ),
    (
        "video-segmentation",
        "ops-video-segment-001",
        {"input": {"oss": "oss://b/v.mp4"}, "output": {"type": "oss"}},
        "output.oss is required",
    ),
    (
        "video-segmentation",
        "ops-video-segment-001",
        {"input": {"oss": "b/v.mp4"}, "output": OUT},
        "input.oss must be an OSS path",
    ),
    (
        "video-snapshot",
        "ops-video-snapshot-001",
        {"input": {"content": "QUJD"}, "output": OUT},
        "input.file_name is required when input.content is used",
    ),
    (
        "video-snapshot",
        "ops-video-snapshot-001",
        {"input": {"url": "https://x/v.mp4"}, "output": {"type": "oss"}},
        "output.oss is required when output.type is oss",
    ),
    (
        "video-snapshot",
        "ops-video-snapshot-001",
        {"input": {"url": "https://x/v.mp4"}, "parameters": {"format": "gif"}, "output": OUT},
        "parameters.format must be one of jpg, png",
    ),
    (
        "video-summarization",
        "ops-video-summarize-001",
        {"input": {"chunks": []}, "output": OUT},
        "input: one of oss/url or a non-empty input.chunks is required",
    ),
    (
        "video-summarization",
        "ops-video-summarize-001",
        {"input": {"chunks": [{"start_time": 0, "end_time": "x"}]}, "output": OUT},
        "input.chunks[0].end_time must be a number",
    ),
    (
        "audio-asr",
        "ops-audio-asr-001",
        {"input": {"content": "QUJD", "oss": "oss://b/a.wav"}, "output": {"type": "text"}},
        "input.content and input.oss are mutually exclusive",
    ),
    (
        "audio-asr",
        "ops-audio-asr-001",
        {"input": {}, "output": {"type": "text"}},
        "input: exactly one of content/oss/url",
    ),
    (
        "audio-asr",
        "ops-audio-asr-001",
        {"input": {"oss": "oss://b/a.wav"}, "output": {"type": "mp3"}},
        "output.type must be one of text, oss",
    ),
]


@pytest.mark.parametrize(("capability", "sid", "body", "fragment"), INVALID_CASES)
async def test_invalid_bodies_name_the_field(
    emu: Any, emu_http: aiohttp.ClientSession, capability: str, sid: str, body: Any, fragment: str
) -> None:
    """Each invalid body gets 400 InvalidParameter with a message naming the field."""
    status, _, error = await _post(emu_http, capability, sid, body)
    assert status == 400 and error["code"] == "InvalidParameter"
    assert fragment in error["message"]
    assert emu.counters()["tasks_created_total"] == 0


async def test_malformed_json_is_invalid_parameter(emu: Any, emu_http: aiohttp.ClientSession) -> None:
    """A body that is not JSON gets 400 InvalidParameter."""
    async with emu_http.post(_path("audio-asr", "ops-audio-asr-001"), data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "InvalidParameter"


@pytest.mark.parametrize(
    ("capability", "sid", "fragment"),
    [
        ("image-analyze", "image-ocr", "service_id 'image-ocr' is invalid"),
        ("image-analyze", "ops-audio-asr-001", "belongs to audio-asr"),
        ("image-object-detection", "ops-image-analyze-vlm-001", "belongs to image-analyze"),
    ],
)
async def test_bad_service_id_is_rejected(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples, capability: str, sid: str, fragment: str
) -> None:
    """Service ids must start with ops- and a known id must belong to the capability called."""
    status, _, error = await _post(emu_http, capability, sid, emu_samples[capability][1])
    assert status == 400 and error["code"] == "InvalidParameter" and fragment in error["message"]


async def test_unknown_ops_service_id_is_accepted(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples
) -> None:
    """An ops- id the emulator does not know (a custom deployment) is served."""
    status, _, _ = await _post(emu_http, "image-analyze", "ops-custom-42", emu_samples["image-analyze"][1])
    assert status == 200
