"""Shared fixtures. Emulator fixtures: a fast emulator on a free port and a session for it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import FakeClock

from pipeline.emulator import EmulatorSettings, EmulatorThread, RunningEmulator, start_emulator
from pipeline.state.checkpoint import Checkpoint

# The API's runs in this process draw no HTML report (a second or two each) unless a test asks, as
# support.cli_env does for the command line's.
os.environ["PIPELINE_REPORT"] = "off"

EMU_KEY = "test-emulator-key"
# time_scale 50 with 0.5-1.5 emulated seconds per task: tasks finish in 10-30 real ms.
FAST_DURATIONS = {
    "image-analyze": (0.5, 1.5),
    "video-segmentation": (0.5, 1.5),
    "video-snapshot": (0.5, 1.5),
    "video-summarization": (0.5, 1.5),
    "audio-asr": (0.5, 1.5),
}


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """Fast emulator settings; override this fixture in a module to change them."""
    return EmulatorSettings(api_key=EMU_KEY, seed=7, time_scale=50.0, durations=FAST_DURATIONS)


@pytest.fixture
async def emu(emu_settings: EmulatorSettings) -> AsyncIterator[RunningEmulator]:
    """A running emulator (in the test's event loop) built from ``emu_settings``."""
    async with start_emulator(emu_settings) as running:
        yield running


@pytest.fixture
def emu_thread(emu_settings: EmulatorSettings) -> Iterator[EmulatorThread]:
    """The same emulator in a thread of its own, for tests that drive the command line in a
    subprocess (and the sync tests around it)."""
    with EmulatorThread(emu_settings) as running:
        yield running


@pytest.fixture
async def emu_http(emu: RunningEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session pointed at ``emu`` that sends the right bearer key."""
    headers = {"Authorization": f"Bearer {EMU_KEY}"}
    async with aiohttp.ClientSession(base_url=emu.url, headers=headers) as session:
        yield session


@pytest.fixture
def emu_samples() -> dict[str, tuple[str, dict[str, object]]]:
    """A valid (service id, create body) per capability."""
    out = {"type": "oss", "oss": "oss://media/out/"}
    return {
        "image-analyze": (
            "ops-image-analyze-ocr-001",
            {"document": {"url": "https://img.example.com/cat.png"}},
        ),
        "image-object-detection": (
            "ops-object-detect-001",
            {"image": {"url": "https://img.example.com/street.jpg"}},
        ),
        "video-segmentation": (
            "ops-video-segment-001",
            {"input": {"oss": "oss://media/v/clip.mp4"}, "output": out},
        ),
        "video-snapshot": (
            "ops-video-snapshot-001",
            {
                "input": {"url": "https://v.example.com/clip.mp4"},
                "parameters": {"interval": 5},
                "output": out,
            },
        ),
        "video-summarization": (
            "ops-video-summarize-001",
            {"input": {"oss": "oss://media/v/clip.mp4"}, "output": out},
        ),
        "audio-asr": (
            "ops-audio-asr-001",
            {"input": {"oss": "oss://media/a/talk.wav"}, "output": {"type": "text"}},
        ),
    }


@pytest.fixture
def emu_clock() -> FakeClock:
    """A frozen clock for the emulator; tests advance it explicitly."""
    return FakeClock()


@pytest.fixture
def ckpt(tmp_path: Path) -> Iterator[Checkpoint]:
    """A fresh checkpoint in the test's temp dir (the state tests' fixture)."""
    c = Checkpoint.open(tmp_path / "state")
    yield c
    c.close()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where the test's results file goes."""
    return tmp_path / "results.jsonl"


#: What the Python API reads from the environment besides its arguments (the report's switch
#: stays as this file sets it: off, unless a test asks).
API_ENV = ("DASHSCOPE_API_KEY", "PIPELINE_ENDPOINT", "PIPELINE_WORKSPACE", "PIPELINE_PROTOCOL",
           "PIPELINE_POLLS_SHARE_QPS", "PIPELINE_MAX_COST", "PIPELINE_LIMITER")


@pytest.fixture
def api_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's environment cleared, so each test of it says what it means to; the time scale is
    the test module's `SCALE`. API test modules use it with `pytest.mark.usefixtures("api_env")`."""
    for var in API_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIPELINE_TIME_SCALE", str(request.module.SCALE))


@pytest.fixture
def no_pipeline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `PIPELINE_*` variable of the machine running the tests reaches a run: the test's config
    says everything. Engine and catalog test modules use it with `pytest.mark.usefixtures`."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def oss(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The emulator's OSS with one bucket, its key pair in the environment (where the SDK reads
    it): the catalog tests' `oss://` sources (`catalog_support.oss_with_keys`); a module with an
    OSS of its own defines its own `oss`."""
    from catalog_support import oss_with_keys

    async with oss_with_keys(monkeypatch) as running:
        yield running
