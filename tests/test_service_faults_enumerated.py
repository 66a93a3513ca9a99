"""Every way the service endpoint can misbehave, from one table, against the emulator (in process).

Each row makes the service misbehave one way on one kind of call (a create, a status poll, a
synchronous detection): refused connections, a hang with no bytes, answers slower than the
request timeout, a connection dropped after the request was processed, 500s (transient, and
past the retry budget), 429 storms far longer than `retry.max_rate_limited`, a 2xx whose body is
not JSON, a 2xx whose JSON lacks the fields we need, the API key refused. Then the service comes
back (the fault is cleared while the run is live, once the emulator's counters show it bit, or
after the run ended). Every row checks the documented outcome: the exit code of the README's
table, no FAILED line a resume should do (only run faults, and only where the run finished with
exit 1: `--retry-failed` is the resume), nothing paid for more often than the documented bound
(the emulator's submissions per distinct body: 1, or 1 + `retry.ambiguous_creates` per session
for a create whose answer was lost, plus the one `--retry-failed` sends), the summary's
`possible_double_billing`, and that the same command then finishes the run with one SUCCESS line
per item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import assert_exactly_once, items, jobs_of, read_results, write_manifest
from tcp_gate import Gate

from pipeline.config.load import Config
from pipeline.core.backoff import PollPolicy, RetryPolicy
from pipeline.core.exit_codes import ExitCode
from pipeline.core.outcome import is_run_fault
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, FaultSettings, RunningEmulator, start_emulator
from pipeline.engine.runner import RunRequest, RunResult, run

KEY = "service-faults-key-4c1b"
WRONG = "service-faults-wrong-key-77e0"
SCALE = 10.0  # the time scale of the other in-process run tests (test_trust)
ITEMS = 4
AMBIGUOUS_CREATES = 1
#: A create whose answer was lost may be billed 1 + ambiguous_creates times in the session that
#: lost it, and once more by the `--retry-failed` that finishes the run (README, "Crash safety").
AMBIGUOUS_BOUND = 1 + AMBIGUOUS_CREATES + 1
CAPABILITY = {"create": "image_analyze", "status": "image_analyze", "detect": "object_detection"}
SEGMENT = {"create": "image-analyze", "status": "image-analyze", "detect": "image-object-detection"}
DURATIONS = {"image-analyze": (0.5, 1.5)}
HANG = 10_000.0  # emulated seconds: no byte comes back within any test
SLOW = 20.0  # emulated seconds: 2 real seconds, past the 1 s request timeout; then it is processed
REQUEST_TIMEOUT = 1.0
#: 429s are answered for 1 emulated second at a time and re-armed by the next request, so the
#: storm lasts until it is cleared: far more 429s than max_rate_limited for every request.
STORM = {"burst_429_rate": 1.0, "burst_429_seconds": 1.0}
RATE_LIMITED = 3


def counted(kind: str, at_least: int) -> Callable[[dict[str, Any]], bool]:
    """A state of the emulator's counters: at least `at_least` faults of `kind` injected."""
    return lambda counters: counters["faults"][kind] >= at_least


def throttled(at_least: int) -> Callable[[dict[str, Any]], bool]:
    return lambda counters: counters["throttled_total"] >= at_least


def tasks_created(at_least: int) -> Callable[[dict[str, Any]], bool]:
    return lambda counters: counters["tasks_created_total"] >= at_least


@dataclass(frozen=True)
class Misbehaviour:
    name: str
    call: str  # "create", "status" or "detect": the route the fault is on
    faults: dict[str, Any] = field(default_factory=dict)
    #: The first run's exit code (README table).
    exit_code: ExitCode = ExitCode.OK
    #: Clear the fault while the run is live, once the emulator's counters satisfy this.
    clear_when: Callable[[dict[str, Any]], bool] | None = None
    #: Flags of the run that finishes; None: the first run finishes by itself (exit 0).
    resume: tuple[str, ...] | None = None
    #: Error codes the first run may write FAILED (run faults only; `--retry-failed` redoes them).
    failed: frozenset[str] = frozenset()
    #: Most submissions the emulator may see for one item's body, both runs together.
    billed: int = 1
    #: The first run's possible_double_billing, per item.
    double_billing: int = 0
    #: "refused": the port refuses connections (from the start, or once `clear_when` holds, and
    #: `clear_when` then means "cut"); "key": the service refuses the key.
    outage: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, tuple[float, float]] = field(default_factory=dict)


def _rows() -> list[Misbehaviour]:
    rows: list[Misbehaviour] = []
    for call in ("create", "status", "detect"):
        billing = {"create": True, "status": False, "detect": True}[call]  # a poll bills nothing
        # A create (or detection) whose answer is lost past its ambiguous budget is FAILED with a
        # run fault (exit 1: look, then --retry-failed); a poll is only ever asked again.
        lost: dict[str, Any] = (
            {"exit_code": ExitCode.PARTIAL, "resume": ("--retry-failed",), "billed": AMBIGUOUS_BOUND,
             "double_billing": AMBIGUOUS_CREATES} if billing else {})

        def live(kind: str, n: int = ITEMS, lost: dict[str, Any] = lost) -> dict[str, Any]:
            return {} if lost else {"clear_when": counted(kind, n)}

        rows += [
            Misbehaviour(f"refused-{call}", call, exit_code=ExitCode.INTERRUPTED, resume=(), outage="refused",
                         clear_when=tasks_created(ITEMS) if call == "status" else None,
                         durations={"image-analyze": (5.0, 5.0)} if call == "status" else {}),
            Misbehaviour(f"hang-{call}", call, {"slow_rate": 1.0, "slow_seconds": HANG},
                         failed=frozenset({"Timeout"}), **lost, **live("slow")),
            Misbehaviour(f"slow-past-timeout-{call}", call, {"slow_rate": 1.0, "slow_seconds": SLOW},
                         failed=frozenset({"Timeout"}), **lost, **live("slow")),
            Misbehaviour(f"dropped-after-sending-{call}", call, {"drop_rate": 1.0, "drop_after_processing": True},
                         failed=frozenset({"ConnectionError"}), **lost, **live("dropped")),
            # Half the requests answer 500 (the same ones for the seed): within max_attempts 8.
            Misbehaviour(f"500-transient-{call}", call, {"error_500_rate": 0.5}, config={"max_attempts": 8}),
            Misbehaviour(f"500-past-the-budget-{call}", call, {"error_500_rate": 1.0},
                         **({"exit_code": ExitCode.PARTIAL, "resume": ("--retry-failed",),
                             "failed": frozenset({"InternalServerError"})} if billing
                            else {"clear_when": counted("error_500", 3 * ITEMS)})),
            # 429s for far longer than max_rate_limited (and, for polls, than the poll timeout):
            # the run waits, fails nothing, and finishes once the storm ends.
            Misbehaviour(f"429-storm-{call}", call, STORM, clear_when=throttled(6 * RATE_LIMITED * ITEMS),
                         config={"poll_timeout": 3.0} if call == "status" else {}),
            Misbehaviour(f"2xx-not-json-{call}", call, {"bad_body_rate": 1.0, "bad_body": "not_json"},
                         failed=frozenset({"UnreadableResponse"}), **lost, **live("bad_body")),
            Misbehaviour(f"2xx-missing-fields-{call}", call, {"bad_body_rate": 1.0, "bad_body": "missing_fields"},
                         failed=frozenset({"UnreadableResponse"}), **lost, **live("bad_body")),
            Misbehaviour(f"key-refused-{call}", call, exit_code=ExitCode.AUTH, resume=(), outage="key",
                         clear_when=tasks_created(ITEMS) if call == "status" else None,
                         durations={"image-analyze": (5.0, 5.0)} if call == "status" else {}),
        ]
    return rows


ROWS = _rows()


def _config(endpoint: str, row: Misbehaviour) -> Config:
    extra = row.config
    retry = RetryPolicy(base=0.2, max_delay=1.0, max_attempts=extra.get("max_attempts", 5),
                        retry_after_cap=0.5, max_rate_limited=RATE_LIMITED, ambiguous_creates=AMBIGUOUS_CREATES)
    polling = PollPolicy(first_delay=1.0, max_delay=2.0, timeout=extra.get("poll_timeout", 600.0))
    return Config(endpoint=endpoint, time_scale=SCALE, qps_headroom=0.9, request_timeout=REQUEST_TIMEOUT,
                  retry=retry, polling=polling)


async def _run(tmp: Path, manifest: Path, endpoint: str, row: Misbehaviour, *flags: str,
               key: str = KEY) -> RunResult:
    files = RunFiles(tmp / "results.jsonl", tmp / "state")
    return await run(RunRequest(manifest=str(manifest), files=files, api_key=key, config=_config(endpoint, row),
                                retry_failed="--retry-failed" in flags))


async def _until(emu: RunningEmulator, state: Callable[[dict[str, Any]], bool], done: anyio.Event) -> bool:
    """Wait for the emulator's counters to reach `state` (True), or for the run to end first (False)."""
    while not state(emu.counters()):
        if done.is_set():
            return False
        await anyio.sleep(0.005)
    return True


def test_the_table_covers_every_misbehaviour_on_every_call() -> None:
    """Each misbehaviour of the issue has a row for a create, a status poll and a detection."""
    kinds = {row.name.rsplit("-", 1)[0] for row in ROWS}
    assert kinds == {"refused", "hang", "slow-past-timeout", "dropped-after-sending", "500-transient",
                     "500-past-the-budget", "429-storm", "2xx-not-json", "2xx-missing-fields", "key-refused"}
    assert all(f"{kind}-{call}" in {row.name for row in ROWS} for kind in kinds for call in CAPABILITY)


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name) for row in ROWS])
async def test_every_service_misbehaviour_then_the_service_comes_back(tmp_path: Path, row: Misbehaviour) -> None:
    """The service misbehaves one way on one kind of call: the run ends with the README's exit
    code, writes FAILED only run faults a `--retry-failed` redoes, pays for no item more often
    than the documented bound, and once the service is back the same command finishes every item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(ITEMS, [CAPABILITY[row.call]]))
    routes = (f"{SEGMENT[row.call]}:{row.call}",)
    settings = EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations={**DURATIONS, **row.durations},
                                faults=FaultSettings(**row.faults, routes=routes) if row.faults else FaultSettings())
    async with start_emulator(settings) as emu, Gate(emu.port) as gate:
        key = KEY
        if row.outage == "refused" and row.clear_when is None:
            gate.shut()
        if row.outage == "key" and row.clear_when is None:
            key = WRONG

        def come_back() -> None:
            emu.state.update_faults(**{name: FaultSettings().to_dict()[name] for name in row.faults})

        done = anyio.Event()
        reached = False

        async def watch() -> None:
            nonlocal reached
            assert row.clear_when is not None
            reached = await _until(emu, row.clear_when, done)
            if not reached:
                return
            if row.outage == "refused":
                gate.shut()  # the service goes away while its tasks are in flight
            elif row.outage == "key":
                emu.state.settings = emu.state.settings.replace(api_key=WRONG)  # the key is revoked
            else:
                come_back()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                if row.clear_when is not None:
                    tg.start_soon(watch)
                first = await _run(tmp_path, manifest, gate.url, row, key=key)
                done.set()
        if row.clear_when is not None:
            assert reached, f"{row.name}: the run ended ({first.exit_code!r}) before the fault showed"
        lines = read_results(tmp_path / "results.jsonl")
        failed = [line for line in lines if line["status"] == "FAILED"]
        assert first.exit_code == row.exit_code, (row.name, first.reason, [f["error"] for f in failed])
        assert {f["error"]["code"] for f in failed} <= row.failed, [f["error"] for f in failed]
        assert all(is_run_fault(f["error"]["code"], f["error"]["http_status"]) for f in failed)
        if row.exit_code != ExitCode.PARTIAL:
            assert failed == [], f"{row.name}: FAILED lines a resume should have done: {failed}"
        assert first.summary["possible_double_billing"] == row.double_billing * len(failed), first.summary
        if failed and row.failed:
            message = failed[0]["error"]["message"]
            assert len(message) < 600 and KEY not in message
            if row.billed > 1:
                assert "may have accepted" in message and "--retry-failed" in message, message

        # The service comes back: the same command (or --retry-failed) finishes the run.
        come_back()
        gate.shut()
        await gate.open()
        emu.state.settings = emu.state.settings.replace(api_key=KEY)
        if row.resume is not None:
            with anyio.fail_after(60):
                again = await _run(tmp_path, manifest, gate.url, row, *row.resume)
            assert again.exit_code == ExitCode.OK, (row.name, again.reason, again.summary.get("errors"))
        counters = emu.counters()
    lines = read_results(tmp_path / "results.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    assert all(line["status"] == "SUCCESS" for line in lines), [line["error"] for line in lines]
    submissions = counters["submissions"]
    assert len(submissions) == ITEMS, submissions
    assert max(submissions.values()) <= row.billed, (row.name, sorted(submissions.values()))
