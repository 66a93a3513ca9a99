"""Metrics: the node-exporter textfile, the Pushgateway push, and the never-raising wrapper."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prometheus_client.exposition
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.observe.metrics import RunMetrics, push, write_textfile
from pipeline.observe.report import CapabilityStats, summarize

OCR = "ops-image-analyze-ocr-001"
DETECT = "ops-object-detect-001"
PRICES = {OCR: {"request": 0.5}, DETECT: {"request": 0.25}}


def sample_summary() -> dict[str, Any]:
    """A summary of two capabilities with successes, failures by code, traffic and usage."""
    image = CapabilityStats(succeeded=3, failed=2, requests=11, rate_limited=2, retries=4, submits=5, polls=6,
                            in_flight=1, queued=7)
    image.errors.update({"InvalidParameter": 1, "TaskFailed": 1})
    image.successes_by_service[OCR] = 3
    image.usage[OCR]["pv_count"] += 3
    detect = CapabilityStats(succeeded=4, skipped=2)
    detect.successes_by_service[DETECT] = 4
    return summarize({"image_analyze": image, "object_detection": detect}, prices=PRICES, elapsed=12.5,
                     rejected=1, outcome="completed with failures")


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a textfile, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    """One sample's value (None when absent)."""
    return found.get(("media_pipeline_" + name, tuple(sorted(labels.items()))))


# ---- textfile ---------------------------------------------------------------------------------


def test_textfile_carries_the_summary_figures(tmp_path: Path) -> None:
    """The written file parses and holds the per-capability counts, traffic, cost, usage and run metadata."""
    path = tmp_path / "run.prom"
    write_textfile(path, sample_summary(), exit_code=1, finished=True, now=1000.0)
    found = samples(path)
    assert value(found, "items", capability="image_analyze", status="succeeded") == 3
    assert value(found, "items", capability="image_analyze", status="failed") == 2
    assert value(found, "items", capability="image_analyze", status="in_flight") == 1
    assert value(found, "items", capability="image_analyze", status="queued") == 7
    assert value(found, "failed_items", capability="image_analyze", code="InvalidParameter") == 1
    assert value(found, "failed_items", capability="image_analyze", code="TaskFailed") == 1
    assert value(found, "requests", capability="image_analyze") == 11
    assert value(found, "rate_limited_responses", capability="image_analyze") == 2
    assert value(found, "retries", capability="image_analyze") == 4
    assert value(found, "submits", capability="image_analyze") == 5
    assert value(found, "polls", capability="image_analyze") == 6
    assert value(found, "estimated_cost", capability="image_analyze") == 1.5
    assert value(found, "estimated_cost", capability="object_detection") == 1.0
    assert value(found, "usage", capability="image_analyze", key="pv_count") == 3
    assert value(found, "items", capability="object_detection", status="succeeded") == 4
    assert value(found, "skipped_items", capability="object_detection") == 2
    assert value(found, "requests", capability="object_detection") == 0  # summarize() left the zero out
    assert value(found, "rejected_lines") == 1
    assert value(found, "run_duration_seconds") == 12.5
    assert value(found, "exit_code") == 1
    assert value(found, "run_finished") == 1
    assert value(found, "last_update_timestamp_seconds") == 1000.0


def test_progress_write_has_no_exit_code_and_is_unfinished(tmp_path: Path) -> None:
    """A progress write says the run is not finished, has no exit code and no last success."""
    path = tmp_path / "run.prom"
    write_textfile(path, sample_summary(), exit_code=None, finished=False, now=5.0)
    found = samples(path)
    assert value(found, "run_finished") == 0
    assert value(found, "exit_code") is None
    assert value(found, "last_success_timestamp_seconds") is None


@pytest.mark.parametrize(("exit_code", "expected"), [(0, 1000.0), (1, None), (3, None), (5, None)])
def test_last_success_only_on_exit_zero(tmp_path: Path, exit_code: int, expected: float | None) -> None:
    """With no earlier file, last_success_timestamp_seconds appears only when the run ended with exit 0."""
    path = tmp_path / "run.prom"
    write_textfile(path, sample_summary(), exit_code=exit_code, finished=True, now=1000.0)
    assert value(samples(path), "last_success_timestamp_seconds") == expected


def test_last_success_is_carried_over_by_failures_and_progress(tmp_path: Path) -> None:
    """After a success, a failed run and a progress write keep the earlier success time; a new success moves it."""
    path = tmp_path / "run.prom"
    write_textfile(path, sample_summary(), exit_code=0, finished=True, now=1000.0)
    write_textfile(path, sample_summary(), exit_code=5, finished=True, now=2000.0)
    found = samples(path)
    assert value(found, "last_success_timestamp_seconds") == 1000.0
    assert value(found, "last_update_timestamp_seconds") == 2000.0
    write_textfile(path, sample_summary(), exit_code=None, finished=False, now=3000.0)
    assert value(samples(path), "last_success_timestamp_seconds") == 1000.0
    write_textfile(path, sample_summary(), exit_code=0, finished=True, now=4000.0)
    assert value(samples(path), "last_success_timestamp_seconds") == 4000.0


def test_a_mangled_previous_file_is_replaced_without_a_last_success(tmp_path: Path) -> None:
    """A previous file that does not parse is overwritten, and no last success is invented from it."""
    path = tmp_path / "run.prom"
    path.write_text("media_pipeline_last_success_timestamp_seconds{ not prometheus\n")
    write_textfile(path, sample_summary(), exit_code=1, finished=True, now=1.0)
    assert value(samples(path), "last_success_timestamp_seconds") is None


def test_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """Repeated writes leave exactly the .prom file in the directory: the temp file is renamed over it."""
    path = tmp_path / "run.prom"
    for n in range(3):
        write_textfile(path, sample_summary(), exit_code=None, finished=False, now=float(n))
    assert [p.name for p in tmp_path.iterdir()] == ["run.prom"]


def test_failed_write_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When rendering fails mid-write, the previous file is untouched and no temp file is left behind."""
    path = tmp_path / "run.prom"
    write_textfile(path, sample_summary(), exit_code=0, finished=True, now=1.0)
    before = path.read_text()

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(prometheus_client.exposition, "generate_latest", broken)
    with pytest.raises(RuntimeError):
        write_textfile(path, sample_summary(), exit_code=1, finished=True, now=2.0)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.prom"]


def test_status_summary_without_live_fields_is_tolerated(tmp_path: Path) -> None:
    """A summary without traffic counters, wall time or capabilities still writes a valid file."""
    path = tmp_path / "run.prom"
    write_textfile(path, {"succeeded": 0, "failed": 0, "rejected_lines": 0, "wall_time_s": None}, exit_code=None,
                   finished=False, now=1.0)
    found = samples(path)
    assert value(found, "run_duration_seconds") is None
    assert value(found, "rejected_lines") == 0
    partial = {"capabilities": {"audio_asr": {"succeeded": 2, "failed": 0}}}
    write_textfile(path, partial, exit_code=None, finished=False, now=1.0)
    found = samples(path)
    assert value(found, "items", capability="audio_asr", status="succeeded") == 2
    assert value(found, "requests", capability="audio_asr") == 0


# ---- Pushgateway ------------------------------------------------------------------------------

Received = list[tuple[str, str, str, str | None]]


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[TestServer, Received]]:
    """A local stand-in Pushgateway recording (method, path, body, Authorization) per request."""
    received: Received = []

    async def metrics(request: web.Request) -> web.Response:
        received.append((request.method, request.path, await request.text(), request.headers.get("Authorization")))
        status = 400 if "refuse" in request.path else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", metrics)
    server = TestServer(app, host="127.0.0.1")
    async with server:
        yield server, received


def body_samples(body: str) -> dict[str, float]:
    """Unlabelled sample values of a pushed body, by name."""
    return {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples if not s.labels}


async def test_push_of_a_failed_run_replaces_the_job_instance_group(gateway: tuple[TestServer, Received]) -> None:
    """A run that ended with exit 1 sends one PUT to /metrics/job/<job>/instance/<instance> carrying its figures."""
    server, received = gateway
    ok = await asyncio.to_thread(push, str(server.make_url("")), sample_summary(), exit_code=1, job="nightly",
                                 instance="host-a")
    assert ok is True
    assert [(m, p) for m, p, _, _ in received] == [("PUT", "/metrics/job/nightly/instance/host-a")]
    body = received[0][2]
    assert body_samples(body)["media_pipeline_exit_code"] == 1
    assert "media_pipeline_last_success_timestamp_seconds" not in body
    assert 'media_pipeline_items{capability="image_analyze",status="failed"} 2.0' in body


async def test_push_of_a_success_also_sets_the_success_group(gateway: tuple[TestServer, Received]) -> None:
    """Exit 0 also PUTs last_success to .../result/success, a group failed runs never touch."""
    server, received = gateway
    ok = await asyncio.to_thread(push, str(server.make_url("")), sample_summary(), exit_code=0,
                                 instance="host-a", now=1234.0)
    assert ok is True
    assert [(m, p) for m, p, _, _ in received] == [
        ("PUT", "/metrics/job/media_pipeline/instance/host-a"),
        ("PUT", "/metrics/job/media_pipeline/instance/host-a/result/success"),
    ]
    assert body_samples(received[1][2]) == {"media_pipeline_last_success_timestamp_seconds": 1234.0}


async def test_push_sends_url_credentials_as_basic_auth(gateway: tuple[TestServer, Received],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """user:password in the gateway URL becomes a basic-auth header and appears in no log line."""
    server, received = gateway
    url = f"http://pusher:s3cr%40t@127.0.0.1:{server.port}"
    assert await asyncio.to_thread(push, url, sample_summary(), exit_code=1, instance="i") is True
    assert received[0][3] == "Basic cHVzaGVyOnMzY3JAdA=="  # base64 of "pusher:s3cr@t"
    assert await asyncio.to_thread(push, url, sample_summary(), exit_code=1, instance="refuse") is False
    assert "s3cr" not in caplog.text and "pusher" not in caplog.text


async def test_push_refused_by_the_gateway_returns_false(gateway: tuple[TestServer, Received],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """An HTTP error from the gateway gives False and one warning naming the host and the status."""
    server, _ = gateway
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        ok = await asyncio.to_thread(push, str(server.make_url("")), sample_summary(), exit_code=0,
                                     instance="refuse")
    assert ok is False
    assert [r.getMessage() for r in caplog.records] == [f"metrics push to 127.0.0.1:{server.port} failed: "
                                                        "PushRefused (HTTP 400)"]


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timing
def test_push_to_a_dead_gateway_returns_false_quickly(caplog: pytest.LogCaptureFixture) -> None:
    """A closed port gives False within a second, no exception, and one warning with the host only."""
    url = f"http://user:token123@127.0.0.1:{closed_port()}/"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        ok = push(url, sample_summary(), exit_code=3, instance="i", timeout=2.0)
    assert ok is False
    assert time.monotonic() - started < 1.0
    assert len(caplog.records) == 1
    assert "127.0.0.1" in caplog.text and "token123" not in caplog.text


# ---- the wrapper the runner calls -------------------------------------------------------------


async def test_run_metrics_writes_and_pushes(tmp_path: Path, gateway: tuple[TestServer, Received]) -> None:
    """progress() rewrites the textfile; finish() writes the final file and pushes without blocking the loop."""
    server, received = gateway
    path = tmp_path / "run.prom"
    metrics = RunMetrics(textfile=path, pushgateway=str(server.make_url("")), instance="host-b")
    metrics.progress(sample_summary())
    assert value(samples(path), "run_finished") == 0
    await metrics.finish(sample_summary(), 0)
    found = samples(path)
    assert value(found, "run_finished") == 1 and value(found, "exit_code") == 0
    assert value(found, "last_success_timestamp_seconds") is not None
    assert received[0][:2] == ("PUT", "/metrics/job/media_pipeline/instance/host-b")


async def test_run_metrics_never_raises_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unwritable textfile and a dead gateway are logged once each, every call returns normally."""
    metrics = RunMetrics(textfile=tmp_path / "gone" / "run.prom",
                         pushgateway=f"http://127.0.0.1:{closed_port()}", instance="i")
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        for _ in range(3):
            metrics.progress(sample_summary())
        await metrics.finish(sample_summary(), 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("metrics textfile") and messages[1].startswith("metrics push to 127.0.0.1")


async def test_instance_comes_from_the_environment_when_not_given(
        gateway: tuple[TestServer, Received], monkeypatch: pytest.MonkeyPatch) -> None:
    """MEDIA_PIPELINE_INSTANCE names the Pushgateway group when the caller gives no instance."""
    server, received = gateway
    monkeypatch.setenv("MEDIA_PIPELINE_INSTANCE", "nightly-k8s")
    await RunMetrics(pushgateway=str(server.make_url(""))).finish(sample_summary(), 1)
    assert received[0][1] == "/metrics/job/media_pipeline/instance/nightly-k8s"
