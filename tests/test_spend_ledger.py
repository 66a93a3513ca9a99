"""The spend ledger without the network: its pure rules from tables, its rows in the checkpoint,
and how a reservation waits for room, probes an unknown cost, and stops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.config.load import Config, load_config
from pipeline.config.pricing import item_cost_bound, unit_priced
from pipeline.core.job import Job
from pipeline.core.results import ItemStatus, ResultLine
from pipeline.engine.spend import SpendLedger, cap_origin, overrun_advice
from pipeline.manifest.reader import read_manifest
from pipeline.state.checkpoint import Checkpoint, Outcome

OCR = "ops-image-analyze-ocr-001"
VLM = "ops-image-analyze-vlm-001"
CAP = "image_analyze"


@pytest.mark.parametrize(
    ("service_id", "priced_per_unit"),
    [(OCR, False), (VLM, True), ("ops-video-summarize-001", True), ("ops-audio-asr-001", False),
     ("ops-not-in-the-table", False)],
)
def test_which_services_are_priced_per_unit(service_id: str, priced_per_unit: bool) -> None:
    """Only a service with a per-unit price (tokens) has a cost unknown until the service reports usage."""
    assert unit_priced(service_id, Config().prices) is priced_per_unit


@pytest.mark.parametrize(
    ("layers", "shown"),
    [
        ({"flag": 0.5}, "--max-cost 0.5 CNY"),
        ({"env": "0.25"}, "PIPELINE_MAX_COST=0.25 (CNY)"),
        ({"file": 2}, "max_cost 2 CNY in config file {file}"),
        ({"file": 2, "env": "0.25", "flag": 0.5}, "--max-cost 0.5 CNY"),
        ({"file": 2, "env": "0.25"}, "PIPELINE_MAX_COST=0.25 (CNY)"),
    ],
)
def test_the_cap_is_named_as_the_user_gave_it(tmp_path: Path, layers: dict[str, Any], shown: str) -> None:
    """The cap's message names the flag, the variable or the config file its value came from (the winning layer)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(f"max_cost: {layers['file']}\n" if "file" in layers else "workspace: w\n")
    env = {"PIPELINE_MAX_COST": layers["env"]} if "env" in layers else {}
    config = load_config(path, env=env, overrides={"max_cost": layers.get("flag")})
    assert cap_origin(config) == shown.format(file=path)


def test_a_cap_set_in_code_is_named_by_its_key() -> None:
    """A Config built in code (tests, the demo) has no source: the message names the key."""
    assert cap_origin(Config(max_cost=1.5)) == "max_cost 1.5 CNY"


def _line(usage: dict[str, Any] | None, status: ItemStatus = ItemStatus.SUCCESS, service_id: str = VLM,
          item: str = "a") -> ResultLine:
    return ResultLine.finished(id=item, capability=CAP, service_id=service_id, status=status, finished_at=1.0,
                               usage=usage, analysis=CAP)


def test_an_overrun_names_the_estimate_to_raise() -> None:
    """The advice names usage_estimates.<service>.<unit> of the unit that went over, its guess and what was reported."""
    config = Config(usage_estimates={VLM: {"token_count": 1}})
    advice = overrun_advice(_line({"token_count": 40}), 0.08, 0.01, config)
    assert f"usage_estimates.{VLM}.token_count (1 per item; this one reported 40)" in advice
    assert "0.0800" in advice and "0.0100" in advice


def test_an_overrun_names_the_unit_that_went_furthest_over() -> None:
    """Summarization has two priced units: the advice names the one whose usage cost most above its guess."""
    sid = "ops-video-summarize-001"
    config = Config(usage_estimates={sid: {"input_token": 100, "output_token": 100}})
    line = _line({"input_token": 150, "output_token": 900}, service_id=sid)
    assert f"usage_estimates.{sid}.output_token" in overrun_advice(line, 4.0, 1.0, config)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    ckpt = Checkpoint.open(tmp_path / "state")
    yield ckpt
    ckpt.close()


def _done(ckpt: Checkpoint, key: str, usage: dict[str, Any] | None, status: str = "SUCCESS",
          service_id: str = VLM) -> None:
    ckpt.mark_done([Outcome(key, CAP, service_id, status, None, None, usage, None, 1)], 0)


def test_stale_reservations_are_those_no_accepted_task_stands_behind(store: Checkpoint) -> None:
    """A reservation with no jobs row (never sent) or a done row is stale; one of a recorded task is not."""
    for key in ("never-sent", "accepted", "recovered"):
        assert store.reserve(key, 0.5, None)
    store.record_submitted("accepted", CAP, VLM, "task-1", attempts=1)
    _done(store, "recovered", {"token_count": 10})  # marked done by reconcile, with no cost
    stale = {row[0]: row[1] for row in store.stale_reservations()}
    assert stale == {"never-sent": None, "recovered": "done"}


def test_clearing_settles_done_lines_and_releases_the_rest(tmp_path: Path, store: Checkpoint) -> None:
    """The ledger's clear_stale settles a recovered line at its cost, releases a submit never sent,
    and keeps the reservation of an accepted task (settled + reserved as they should be)."""
    for key in ("never-sent", "accepted", "recovered", "recovered-failed"):
        assert store.reserve(key, 0.5, None)
    store.record_submitted("accepted", CAP, VLM, "task-1", attempts=1)
    _done(store, "recovered", {"token_count": 10})
    _done(store, "recovered-failed", None, status="FAILED")
    SpendLedger(store, Config(max_cost=10.0), item_cost_bound).clear_stale()
    assert store.spend() == pytest.approx((10 * 0.002, 0.5))
    assert store.stale_reservations() == []


def test_highest_costs_learn_from_every_done_success(store: Checkpoint) -> None:
    """Per (capability, service id) priced per unit, the most a successful line cost by today's prices."""
    for i, tokens in enumerate([10, 40, 25]):
        _done(store, f"ok-{i}", {"token_count": tokens, "pv_count": 1})
    _done(store, "failed", {"token_count": 999}, status="FAILED")
    _done(store, "odd", {"token_count": "many"})  # not a number: counts as 0
    _done(store, "ocr", {"token_count": 500}, service_id=OCR)  # priced per request only: nothing to learn
    assert store.highest_costs(Config().prices) == pytest.approx({(CAP, VLM): 40 * 0.002})


def _jobs(tmp_path: Path, n: int, service_id: str) -> list[Job]:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{i}", "capability": CAP, "service_id": service_id,
                                        "url": f"https://x/{i}.jpg"}) + "\n" for i in range(n)))
    return [job for job in read_manifest(str(path)) if isinstance(job, Job)]


async def _no_wait(_wait: Any) -> None:
    raise AssertionError("the reservation waited")


async def test_no_room_and_nothing_in_flight_is_the_cap(tmp_path: Path, store: Checkpoint) -> None:
    """OCR at 0.001 under a 0.0025 cap: two reservations fit, the third cannot wait for anything: False."""
    ledger = SpendLedger(store, Config(max_cost=0.0025), item_cost_bound)
    ledger.start()
    jobs = _jobs(tmp_path, 3, OCR)
    assert await ledger.reserve(jobs[0], _no_wait) and await ledger.reserve(jobs[1], _no_wait)
    for job in jobs[:2]:  # both settle: nothing left in flight
        store.mark_done([], 0, costs=[(job.key, ledger.cost(_line(None, service_id=OCR, item=job.id)))])
    assert await ledger.reserve(jobs[2], _no_wait) is False
    assert store.spend() == pytest.approx((0.002, 0.0))


async def test_a_reservation_waits_for_work_in_flight_then_fits(tmp_path: Path, store: Checkpoint) -> None:
    """Cap 0.002, OCR: the third waits while two are in flight, and fits once one of them ends
    FAILED (a task billed on success only settles at 0)."""
    ledger = SpendLedger(store, Config(max_cost=0.002), item_cost_bound)
    jobs = _jobs(tmp_path, 3, OCR)
    assert await ledger.reserve(jobs[0], _no_wait) and await ledger.reserve(jobs[1], _no_wait)
    waits = 0

    async def wait(event_wait: Any) -> None:
        nonlocal waits
        waits += 1
        assert waits == 1, "it waited again after room came"
        failed = _line(None, ItemStatus.FAILED, OCR, jobs[0].id)
        store.mark_done([], 0, costs=[(jobs[0].key, ledger.cost(failed))])
        with anyio.fail_after(5):
            await event_wait()

    assert await ledger.reserve(jobs[2], wait) is True
    assert waits == 1 and store.spend() == pytest.approx((0.0, 0.002))


async def test_the_first_of_an_unknown_cost_runs_alone_then_reservations_learn(tmp_path: Path,
                                                                               store: Checkpoint) -> None:
    """VLM with a 1-token estimate: the second waits for the first's cost, then reserves what it
    really cost (not the estimate's 0.01); an overrun past the cap is seen at once."""
    config = Config(max_cost=1.0, usage_estimates={VLM: {"token_count": 1}})
    ledger = SpendLedger(store, config, item_cost_bound)
    first, second = _jobs(tmp_path, 2, VLM)
    assert await ledger.reserve(first, _no_wait)
    assert store.reserved_of(first.key) == pytest.approx(5 * 0.002)

    async def wait(event_wait: Any) -> None:
        cost = ledger.cost(_line({"token_count": 40}, item=first.id))
        store.mark_done([], 0, costs=[(first.key, cost)])
        with anyio.fail_after(5):
            await event_wait()

    assert await ledger.reserve(second, wait)
    assert store.reserved_of(second.key) == pytest.approx(40 * 0.002)
    assert not ledger.over_cap()
    store.mark_done([], 0, costs=[(second.key, ledger.cost(_line({"token_count": 600}, item=second.id)))])
    assert ledger.over_cap()  # 0.08 + 1.2 settled: past the cap
    assert "settled passes the cap by 0.2800" in ledger.stop_detail()


async def test_a_task_an_earlier_session_recorded_counts_as_in_flight(tmp_path: Path, store: Checkpoint) -> None:
    """An adopted task's reservation may free room: a reservation waits for it rather than stopping."""
    job, other = _jobs(tmp_path, 2, OCR)
    assert store.reserve(job.key, 0.001, None)
    store.record_submitted(job.key, CAP, OCR, "task-1", attempts=1)
    ledger = SpendLedger(store, Config(max_cost=0.001), item_cost_bound)
    ledger.start()
    assert store.spend() == pytest.approx((0.0, 0.001))  # an accepted task keeps its reservation
    ledger.adopt(job)
    waited = []

    async def wait(event_wait: Any) -> None:
        waited.append(True)
        store.mark_done([], 0, costs=[(job.key, ledger.cost(_line(None, ItemStatus.FAILED, OCR, job.id)))])
        await event_wait()

    assert await ledger.reserve(other, wait) is True and waited == [True]


async def test_an_unpriced_service_under_a_cap_is_warned_about_once(tmp_path: Path, store: Checkpoint,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """ASR has no price: under a cap (even 0) its analyses cannot be counted; the first one
    reserved says so, naming the price to set (stdin gets no preview, so this is its warning)."""
    ledger = SpendLedger(store, Config(max_cost=0.0), item_cost_bound)
    path = tmp_path / "asr.jsonl"
    path.write_text("".join(json.dumps({"id": f"a{i}", "capability": "audio_asr", "url": f"https://x/{i}.mp3"})
                            + "\n" for i in range(3)))
    jobs = [job for job in read_manifest(str(path)) if isinstance(job, Job)]
    for job in jobs:
        assert await ledger.reserve(job, _no_wait)
    warned = [r.getMessage() for r in caplog.records if "has no price" in r.getMessage()]
    assert len(warned) == 1 and "prices.ops-audio-asr-001" in warned[0] and "--max-cost" not in warned[0]
    assert "max_cost 0 CNY" in warned[0]
