"""The emulator enforces the service's rules: auth, limits, validation, task life cycle."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest

from pipeline.emulator import EmulatorSettings, SettingsError, api_path, start_emulator, submission_key

Samples = dict[str, tuple[str, dict[str, Any]]]
KEY = "rules-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _path(capability: str, service_id: str, kind: str = "create") -> str:
    if capability == "image-object-detection" and kind == "create":
        kind = "detect"
    return api_path(capability, service_id, kind)


async def _post(
    http: aiohttp.ClientSession, capability: str, sid: str, body: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.post(_path(capability, sid), json=body) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _status(http: aiohttp.ClientSession, capability: str, sid: str, task_id: str) -> tuple[int, Any]:
    async with http.get(_path(capability, sid, "status"), params={"task_id": task_id}) as resp:
        return resp.status, await resp.json()


async def _until_done(http: aiohttp.ClientSession, capability: str, sid: str, task_id: str) -> Any:
    for _ in range(200):
        status, body = await _status(http, capability, sid, task_id)
        assert status == 200, body
        if body["result"]["status"] != "PENDING":
            return body
        await asyncio.sleep(0.01)
    raise AssertionError("task never finished")


def _session(url: str, headers: dict[str, str] | None = AUTH) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=url, headers=headers)


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


# --- task life cycle --------------------------------------------------------------------


async def test_unknown_or_foreign_task_id_is_task_not_exist(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples
) -> None:
    """Unknown ids, and ids asked for on another capability or service, get BadRequest.TaskNotExist."""
    sid, body = emu_samples["audio-asr"]
    task_id = (await _post(emu_http, "audio-asr", sid, body))[2]["result"]["task_id"]
    for capability, service_id, tid in [
        ("audio-asr", sid, "no-such-task"),
        ("video-snapshot", "ops-video-snapshot-001", task_id),
        ("audio-asr", "ops-audio-asr-002", task_id),
    ]:
        status, error = await _status(emu_http, capability, service_id, tid)
        assert status == 400 and error["code"] == "BadRequest.TaskNotExist"
    assert (await _status(emu_http, "audio-asr", sid, task_id))[0] == 200


async def test_task_goes_pending_then_success_with_usage(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples
) -> None:
    """A task reports PENDING without data, then SUCCESS with data and usage."""
    sid, body = emu_samples["image-analyze"]
    task_id = (await _post(emu_http, "image-analyze", sid, body))[2]["result"]["task_id"]
    status, first = await _status(emu_http, "image-analyze", sid, task_id)
    assert status == 200
    assert first["result"] == {"task_id": task_id, "status": "PENDING"} and "usage" not in first
    done = await _until_done(emu_http, "image-analyze", sid, task_id)
    assert done["result"]["status"] == "SUCCESS"
    assert "https://img.example.com/cat.png" in done["result"]["data"]["content"]
    assert done["usage"]["pv_count"] == 1 and done["usage"]["token_count"] > 0
    counters = emu.counters()
    assert counters["results_delivered"]["SUCCESS"] == 1 and counters["tasks_by_status"]["SUCCESS"] == 1


async def test_forget_tasks_and_ttl_make_ids_unknown(emu_clock: Any, emu_samples: Samples) -> None:
    """Tasks vanish after the TTL, and all at once through the forget-tasks control route."""
    sid, body = emu_samples["audio-asr"]
    settings = EmulatorSettings(api_key=KEY, durations={"audio-asr": (1.0, 1.0)}, task_ttl=5.0)
    async with start_emulator(settings, clock=emu_clock) as emu, _session(emu.url) as http:
        first = (await _post(http, "audio-asr", sid, body))[2]["result"]["task_id"]
        emu_clock.advance(5.9)  # finished at +1 s, known until +6 s
        assert (await _status(http, "audio-asr", sid, first))[1]["result"]["status"] == "SUCCESS"
        emu_clock.advance(0.2)
        assert (await _status(http, "audio-asr", sid, first))[1]["code"] == "BadRequest.TaskNotExist"
        second = (await _post(http, "audio-asr", sid, body))[2]["result"]["task_id"]
        async with http.post("/_emulator/forget-tasks") as resp:
            assert (await resp.json())["forgotten"] == 1
        assert (await _status(http, "audio-asr", sid, second))[1]["code"] == "BadRequest.TaskNotExist"


# --- determinism and counters -----------------------------------------------------------


async def _detect(url: str, body: Any) -> Any:
    async with _session(url) as http:
        return (await _post(http, "image-object-detection", "ops-object-detect-001", body))[2]["result"]


async def test_results_are_deterministic_and_derived_from_input(emu_samples: Samples) -> None:
    """Same input and seed give the same result; another input or seed gives another."""
    body = emu_samples["image-object-detection"][1]
    other = {"image": {"url": "https://img.example.com/other.jpg"}}
    async with (
        start_emulator(EmulatorSettings(api_key=KEY, seed=1)) as a,
        start_emulator(EmulatorSettings(api_key=KEY, seed=1)) as b,
        start_emulator(EmulatorSettings(api_key=KEY, seed=2)) as c,
    ):
        first = await _detect(a.url, body)
        assert first == await _detect(b.url, body) == await _detect(a.url, body)
        assert first != await _detect(a.url, other)
        assert first != await _detect(c.url, body)
    location = first["objects"][0]["location"]
    assert set(location) == {"X", "Y", "width", "height"}


async def test_async_outputs_name_their_source(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples
) -> None:
    """Segmentation, snapshot and ASR results quote the source and the output prefix."""
    found = {}
    for capability in ("video-segmentation", "video-snapshot", "audio-asr"):
        sid, body = emu_samples[capability]
        task_id = (await _post(emu_http, capability, sid, body))[2]["result"]["task_id"]
        found[capability] = (await _until_done(emu_http, capability, sid, task_id))["result"]["data"]
    assert all(
        s["path"].startswith("oss://media/out/clip/")
        for c in found["video-segmentation"]
        for s in c["snapshots"]
    )
    assert "oss://media/v/clip.mp4" in found["video-segmentation"][0]["transcript"]
    assert [f["frame_time"] for f in found["video-snapshot"][:2]] == [0.0, 5.0]
    assert found["video-snapshot"][0]["path"] == "oss://media/out/clip/frame_00000.jpg"
    assert "oss://media/a/talk.wav" in found["audio-asr"][0]["text"]


async def test_counters_count_duplicate_submissions(
    emu: Any, emu_http: aiohttp.ClientSession, emu_samples: Samples
) -> None:
    """Submitting the same body twice shows as one duplicate under its submission key."""
    sid, body = emu_samples["video-summarization"]
    for _ in range(2):
        assert (await _post(emu_http, "video-summarization", sid, body))[0] == 200
    other = {**body, "input": {"url": "https://v.example.com/other.mp4"}}
    assert (await _post(emu_http, "video-summarization", sid, other))[0] == 200
    async with emu_http.get("/_emulator/counters") as resp:
        counters = await resp.json()
    assert counters["submissions"][submission_key("video-summarization", sid, body)] == 2
    assert counters["duplicate_submissions"] == 1
    assert counters["tasks_created"] == {"video-summarization": 3}
    assert counters["requests"]["POST video-summarization create"] == {"200": 3}


def test_settings_are_validated_with_named_keys(tmp_path: Any) -> None:
    """Bad settings raise SettingsError naming the key (and the file, when loaded from one)."""
    from pipeline.emulator import load_settings

    with pytest.raises(SettingsError, match="time_scale"):
        EmulatorSettings(time_scale=0)
    with pytest.raises(SettingsError, match="qps: unknown capability 'ocr'"):
        EmulatorSettings(qps={"ocr": 3})
    with pytest.raises(SettingsError, match=r"faults\.drop_rate"):
        EmulatorSettings(faults={"drop_rate": 2})  # type: ignore[arg-type]
    config = tmp_path / "emu.yaml"
    config.write_text("seed: 3\nqps_limit: 4\n")
    with pytest.raises(SettingsError, match=rf"{config}.*'qps_limit'"):
        load_settings(config)
    config.write_text(
        "seed: 3\nqps: {audio-asr: 2}\ndurations: {audio-asr: [1, 2]}\nfaults: {error_500_rate: 0.5}\n"
    )
    loaded = load_settings(config)
    assert loaded.qps["audio-asr"] == 2 and loaded.qps["image-analyze"] == 10
    assert loaded.durations["audio-asr"] == (1.0, 2.0) and loaded.faults.error_500_rate == 0.5
