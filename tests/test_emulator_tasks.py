"""The emulator's task life cycle, determinism, counters and settings, as a client sees them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from emulator_http import KEY, Samples
from emulator_http import post as _post
from emulator_http import session as _session
from emulator_http import status as _status
from emulator_http import until_done as _until_done

from pipeline.emulator import EmulatorSettings, SettingsError, start_emulator, submission_key

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
