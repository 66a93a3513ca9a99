"""The HTML run report from the Python API: `pipeline.run` / `arun` / `stream` write it as the
command line does (on unless PIPELINE_REPORT=off), `report=False` leaves it out, `report=PATH`
writes it there, `RunResult.report` says where, and a bad value is refused before anything starts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from support import items, write_manifest

import pipeline
from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "api-report-key-2c9e"
SCALE = 20.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
CONFIG = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says what PIPELINE_REPORT is; the key is given, the scale is the emulator's."""
    for var in ("DASHSCOPE_API_KEY", "PIPELINE_ENDPOINT", "PIPELINE_REPORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIPELINE_TIME_SCALE", str(SCALE))


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST)


def manifest(tmp: Path) -> Path:
    return write_manifest(tmp / "m.jsonl", items(4, ["image_analyze"]))


def is_report(path: Path) -> bool:
    return path.read_text(encoding="utf-8").lstrip().startswith("<!DOCTYPE html") and "Completed" in \
        path.read_text(encoding="utf-8")


def test_run_writes_the_report_by_default_as_the_cli(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """With PIPELINE_REPORT unset, `pipeline.run` writes results.report.html next to the summary
    and `result.report` is its path, as the CLI's `run`."""
    result = pipeline.run(manifest(tmp_path), out=tmp_path / "results.jsonl", endpoint=emu_thread.url, api_key=KEY,
                          config=CONFIG)
    assert result.exit_code == 0
    assert result.report == tmp_path / "results.report.html" and is_report(result.report)


@pytest.mark.parametrize(("env", "option"), [("off", None), ("on", False)])
def test_no_report_when_pipeline_report_is_off_or_report_false(tmp_path: Path, emu_thread: EmulatorThread,
                                                               monkeypatch: pytest.MonkeyPatch, env: str,
                                                               option: bool | None) -> None:
    """PIPELINE_REPORT=off (as for the CLI), or report=False whatever the variable: no report file."""
    monkeypatch.setenv("PIPELINE_REPORT", env)
    extra = {} if option is None else {"report": option}
    result = pipeline.run(manifest(tmp_path), out=tmp_path / "results.jsonl", endpoint=emu_thread.url, api_key=KEY,
                          config=CONFIG, **extra)
    assert result.exit_code == 0 and result.report is None
    assert not (tmp_path / "results.report.html").exists() and (tmp_path / "results.summary.json").exists()


async def test_arun_writes_the_report_where_told(tmp_path: Path, emu_thread: EmulatorThread,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`await pipeline.arun(..., report=PATH)` writes the report there (PIPELINE_REPORT=off or not)."""
    monkeypatch.setenv("PIPELINE_REPORT", "off")
    where = tmp_path / "night.html"
    result = await pipeline.arun(manifest(tmp_path), out=tmp_path / "results.jsonl", endpoint=emu_thread.url,
                                 api_key=KEY, config=CONFIG, report=str(where))
    assert result.exit_code == 0 and result.report == where and is_report(where)
    assert not (tmp_path / "results.report.html").exists()


async def test_stream_writes_the_report_too(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """`pipeline.stream(..., report=True)` writes the report once the run ended, before the iteration does."""
    async with pipeline.stream(items(3, ["image_analyze"]), out=tmp_path / "results.jsonl", endpoint=emu_thread.url,
                               api_key=KEY, config=CONFIG, report=True) as lines:
        got = [line async for line in lines]
    assert len(got) == 3 and lines.result is not None and lines.result.exit_code == 0
    assert lines.result.report == tmp_path / "results.report.html" and is_report(lines.result.report)


@pytest.mark.parametrize("value", [3, "", None, b"r.html"])
def test_a_bad_report_value_is_refused_before_anything_starts(tmp_path: Path, value: object) -> None:
    """report= anything but True, False or a path raises ConfigError naming it (exit code 2), nothing written."""
    with pytest.raises(pipeline.ConfigError) as caught:
        pipeline.run(manifest(tmp_path), out=tmp_path / "results.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY,
                     report=value)  # type: ignore[arg-type]
    assert caught.value.key == "report" and caught.value.exit_code == 2
    assert "must be True, False or the report's path" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_without_the_extra_the_run_keeps_its_result_and_warns_once(tmp_path: Path, emu_thread: EmulatorThread,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """report=True without Jinja2: the run's result as ever, `report` None, one warning naming the extra."""
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        result = pipeline.run(manifest(tmp_path), out=tmp_path / "results.jsonl", endpoint=emu_thread.url,
                              api_key=KEY, config=CONFIG, report=True)
    assert result.exit_code == 0 and result.report is None
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "opensearch-media-pipeline[report]" in warned[0], warned
