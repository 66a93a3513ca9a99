"""Fault injection: each kind appears when asked for, at its rate, and can change at run time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from pipeline.emulator import EmulatorSettings, FaultSettings, api_path, start_emulator
from pipeline.emulator.settings import SettingsError

KEY = "faults-key"
DETECT = api_path("image-object-detection", "ops-object-detect-001", "detect")
ASR = api_path("audio-asr", "ops-audio-asr-001")
ASR_STATUS = api_path("audio-asr", "ops-audio-asr-001", "status")
ASR_BODY = {"input": {"oss": "oss://b/a.wav"}, "output": {"type": "text"}}
NO_LIMITS = {c: 100_000 for c in ("image-analyze", "image-object-detection", "audio-asr")}


def _settings(**faults: Any) -> EmulatorSettings:
    return EmulatorSettings(
        api_key=KEY,
        seed=11,
        time_scale=50.0,
        qps=NO_LIMITS,
        durations={"audio-asr": (0.5, 0.5)},
        faults=FaultSettings(**faults),
    )


def _session(url: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=url, headers={"Authorization": f"Bearer {KEY}"})


def _detect_body(i: int) -> dict[str, Any]:
    return {"image": {"url": f"https://img.example.com/{i}.jpg"}}


async def _detect_statuses(http: aiohttp.ClientSession, count: int) -> list[int]:
    statuses = []
    for i in range(count):
        async with http.post(DETECT, json=_detect_body(i)) as resp:
            await resp.read()
            statuses.append(resp.status)
    return statuses


async def test_error_500_forced_and_at_its_rate() -> None:
    """Rate 1.0 makes every call a 500 InternalServerError; rate 0.3 hits about 30% of 300."""
    async with start_emulator(_settings(error_500_rate=1.0)) as emu, _session(emu.url) as http:
        async with http.post(DETECT, json=_detect_body(0)) as resp:
            assert resp.status == 500
            assert (await resp.json())["code"] == "InternalServerError"
    async with start_emulator(_settings(error_500_rate=0.3)) as emu, _session(emu.url) as http:
        statuses = await _detect_statuses(http, 300)
        assert 0.2 < statuses.count(500) / 300 < 0.4
        assert set(statuses) == {200, 500}
        assert emu.counters()["faults"]["error_500"] == statuses.count(500)


async def test_fault_draws_repeat_for_the_same_seed() -> None:
    """Two emulators with the same seed fault exactly the same requests."""
    patterns = []
    for _ in range(2):
        async with start_emulator(_settings(error_500_rate=0.5)) as emu, _session(emu.url) as http:
            patterns.append(await _detect_statuses(http, 40))
    assert patterns[0] == patterns[1] and 500 in patterns[0] and 200 in patterns[0]


async def test_dropped_connection_is_a_disconnect_for_aiohttp() -> None:
    """drop_rate 1.0 closes the connection unanswered and nothing is processed."""
    async with start_emulator(_settings(drop_rate=1.0)) as emu, _session(emu.url) as http:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with http.post(ASR, json=ASR_BODY) as resp:
                await resp.read()
        counters = emu.counters()
        assert counters["requests"]["POST audio-asr create"] == {"dropped": 1}
        assert counters["tasks_created_total"] == 0 and counters["faults"]["dropped"] == 1


async def test_drop_after_processing_loses_an_accepted_answer() -> None:
    """With drop_after_processing the task is created although the client sees a disconnect."""
    async with (
        start_emulator(_settings(drop_rate=1.0, drop_after_processing=True)) as emu,
        _session(emu.url) as http,
    ):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with http.post(ASR, json=ASR_BODY) as resp:
                await resp.read()
        counters = emu.counters()
        assert counters["tasks_created_total"] == 1 and sum(counters["submissions"].values()) == 1


async def test_slow_response_is_delayed_by_scaled_seconds() -> None:
    """slow_rate 1.0 with 5 emulated seconds at time_scale 50 delays each answer by 0.1 s."""
    async with start_emulator(_settings(slow_rate=1.0, slow_seconds=5.0)) as emu, _session(emu.url) as http:
        started = time.perf_counter()
        async with http.post(DETECT, json=_detect_body(1)) as resp:
            assert resp.status == 200
        assert time.perf_counter() - started >= 0.095
        assert emu.counters()["faults"]["slow"] == 1


async def test_task_fail_rate_ends_tasks_failed_with_an_error() -> None:
    """task_fail_rate 1.0 makes the task end FAILED with an error message and no usage."""
    async with start_emulator(_settings(task_fail_rate=1.0)) as emu, _session(emu.url) as http:
        async with http.post(ASR, json=ASR_BODY) as resp:
            task_id = (await resp.json())["result"]["task_id"]
        for _ in range(100):  # 0.5 emulated s at time_scale 50 is 10 ms
            async with http.get(ASR_STATUS, params={"task_id": task_id}) as resp:
                body = await resp.json()
            if body["result"]["status"] != "PENDING":
                break
            await asyncio.sleep(0.005)
        assert resp.status == 200 and body["result"]["status"] == "FAILED"
        assert (
            "oss://b/a.wav" in body["result"]["error"]
            and "usage" not in body
            and "data" not in body["result"]
        )
        assert emu.counters()["results_delivered"]["FAILED"] == 1


async def test_429_burst_blocks_the_capability_for_its_duration(emu_clock: Any) -> None:
    """A burst answers 429 with Retry-After to every request on the capability until it ends."""
    settings = EmulatorSettings(api_key=KEY, faults=FaultSettings(burst_429_rate=1.0, burst_429_seconds=2.0))
    async with start_emulator(settings, clock=emu_clock) as emu, _session(emu.url) as http:
        async with http.post(ASR, json=ASR_BODY) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "2"
        async with http.post("/_emulator/faults", json={"burst_429_rate": 0.0}) as resp:
            assert resp.status == 200
        emu_clock.advance(1.5)
        async with http.post(ASR, json=ASR_BODY) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        async with http.post(DETECT, json=_detect_body(0)) as resp:
            assert resp.status == 200  # other capabilities are not in the burst
        emu_clock.advance(0.6)
        async with http.post(ASR, json=ASR_BODY) as resp:
            assert resp.status == 200
        counters = emu.counters()
        assert counters["faults"]["burst_429"] == 1 and counters["throttled"] == {"audio-asr": 2}


async def test_faults_change_at_run_time_through_the_control_route() -> None:
    """POST /_emulator/faults updates faults (GET shows them); unknown keys are named in a 400."""
    async with start_emulator(_settings()) as emu, _session(emu.url) as http:
        assert (await _detect_statuses(http, 3)) == [200] * 3
        async with http.post(
            "/_emulator/faults", json={"error_500_rate": 1.0, "routes": ["image-object-detection"]}
        ) as resp:
            assert resp.status == 200
        async with http.get("/_emulator/faults") as resp:
            current = await resp.json()
        assert current["error_500_rate"] == 1.0 and current["routes"] == ["image-object-detection"]
        assert (await _detect_statuses(http, 3)) == [500] * 3
        async with http.post(ASR, json=ASR_BODY) as resp:
            assert resp.status == 200  # the fault is restricted to object detection
        async with http.post("/_emulator/faults", json={"eror_500_rate": 0}) as resp:
            assert resp.status == 400 and "eror_500_rate" in (await resp.json())["message"]
        emu.state.update_faults(error_500_rate=0.0)
        assert (await _detect_statuses(http, 1)) == [200]


@pytest.mark.parametrize("kind", ["not_json", "missing_fields"])
async def test_bad_body_answers_200_after_processing(kind: str) -> None:
    """bad_body_rate 1.0 answers 200 with an unusable body (HTML, or JSON without the task id,
    the status or the result) after the request was processed: the create's task exists and
    its submission is counted, and a status answered so is not counted as delivered."""
    async with start_emulator(_settings(bad_body_rate=1.0, bad_body=kind)) as emu, _session(emu.url) as http:
        async with http.post(ASR, json=ASR_BODY) as resp:
            assert resp.status == 200
            raw = await resp.read()
        async with http.post(DETECT, json=_detect_body(0)) as resp:
            assert resp.status == 200
            detect_raw = await resp.read()
        counters = emu.counters()
        assert counters["tasks_created_total"] == 1 and sum(counters["submissions"].values()) == 2
        if kind == "not_json":
            assert raw.startswith(b"<html>") and detect_raw.startswith(b"<html>")
        else:
            assert json.loads(raw)["result"] == {} and "result" not in json.loads(detect_raw)
            task_id = next(iter(emu.state.tasks._tasks))  # the one task the unusable answer hid
            async with http.get(ASR_STATUS, params={"task_id": task_id}) as resp:
                body = await resp.json()
            assert resp.status == 200 and "status" not in body["result"]
            assert emu.counters()["results_delivered"] == {"SUCCESS": 0, "FAILED": 0}
        assert counters["faults"]["bad_body"] == 2
        assert counters["requests"]["POST audio-asr create"] == {"200": 1}


async def test_bad_body_kind_is_checked() -> None:
    """An unknown bad_body kind is refused, naming the setting and the kinds it takes."""
    with pytest.raises(SettingsError, match=r"faults\.bad_body must be one of not_json, missing_fields"):
        FaultSettings(bad_body="garbage")
