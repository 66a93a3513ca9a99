"""Every external endpoint of an unattended run that is not the service or OSS, faulted every way
from one table, through the command line: the ping URL, the Pushgateway and the Redis limiter.

Each endpoint is a row (its flag, its URL on a local `FaultyEndpoint`, when its fault begins, the
documented outcome); each fault is a row of `Fault` (refused, a hang with no bytes, an answer
slower than any timeout, a connection dropped after the request, a server error, a 2xx or reply
that is garbage, the credentials refused). The test runs `media-pipeline run` against the
emulator with one endpoint misbehaving one way and checks the README's outcome:

- a ping or a push that fails never fails the run or changes its exit code, never holds it past
  its time budget (the test waits for the process to exit), and says so in exactly one warning
  that names the host only;
- Redis unusable at start: exit 2, one message saying what is wrong, nothing written, nothing sent;
- Redis lost mid-run: one warning, the run paces itself alone, one line when Redis is back,
  booking there again, every item done once.

Then the endpoint comes back and the same command runs clean against it. A new endpoint is a
new `Endpoint` row; a new fault is a `Fault` member with its behaviour in endpoint_faults.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from endpoint_faults import Fault, FaultyEndpoint, HttpEndpoint, RedisProxy
from redis_server import RedisServer, own_redis_server
from support import (
    REPO,
    FakeClock,
    assert_exactly_once,
    cli_env,
    config_file,
    items,
    jobs_of,
    read_results,
    write_manifest,
)

from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator, start_emulator

pytestmark = pytest.mark.slow
__all__ = ["own_redis_server"]  # the fixture, imported for pytest to find

KEY = "endpoint-faults-key-9d2e"
SCALE = 10.0
ITEMS = 6
SECRET = "c0ffee-ping-check-uuid"
PASSWORD = "s3cret-pushgateway-pw"
INSTANCE = "endpoint-faults"
#: Emulated seconds a held task runs: until the test moves the emulator's clock past it.
HOLD = 100_000.0
#: The most a faulty run may take, every budget spent (pings 2 x 5 s, a push 5 s, Redis checks
#: 2 s), with room for a busy machine: a run still going then is a hang, whatever its cause.
BOUND = 90.0


def pinged(endpoint: FaultyEndpoint) -> bool:
    """The last run pinged /start then the bare URL, its query kept, with one run id."""
    assert isinstance(endpoint, HttpEndpoint)
    last = endpoint.received[-2:]
    paths = [(r.method, r.path) for r in last]
    rids = {r.query.rsplit("&rid=", 1)[-1] for r in last}
    return (paths == [("GET", f"/ping/{SECRET}/start"), ("GET", f"/ping/{SECRET}")]
            and all(r.query.startswith("token=abc&rid=") for r in last) and len(rids) == 1)


def pushed(endpoint: FaultyEndpoint) -> bool:
    """The last run replaced its group and the success group, with the URL's credentials."""
    assert isinstance(endpoint, HttpEndpoint)
    group = f"/metrics/job/media_pipeline/instance/{INSTANCE}"
    last = endpoint.received[-2:]
    return ([(r.method, r.path) for r in last] == [("PUT", group), ("PUT", group + "/result/success")]
            and all(r.authorization == "Basic cHVzaGVyOnMzY3JldC1wdXNoZ2F0ZXdheS1wdw==" for r in last)
            and b"media_pipeline_exit_code 0.0" in last[0].body)


def booked(endpoint: FaultyEndpoint) -> bool:
    """The run booked its sends in Redis."""
    assert isinstance(endpoint, RedisProxy)
    return endpoint.bookings > 0


@dataclass(frozen=True)
class Endpoint:
    name: str
    flag: str
    make: Callable[[RedisServer | None], FaultyEndpoint]
    url: Callable[[Any], str]
    #: The faulty run's exit code (the README's table).
    exit_code: ExitCode
    #: What its one warning (or error) says, and what it says of each fault's cause.
    says: str
    reasons: Mapping[Fault, str]
    #: The endpoint took the request and the run delivered what it should (checked after the
    #: run against the healthy endpoint).
    delivered: Callable[[FaultyEndpoint], bool]
    #: The fault begins once the run has used the endpoint (else before the run starts).
    mid_run: bool = False
    #: Faults that are no failure: a 2xx is taken as delivered, its body is never read.
    silent: frozenset[Fault] = frozenset()
    #: Text that must never reach the run's output (a secret in the URL).
    secret: str = ""
    redis: bool = False


HTTP_REASONS = {Fault.REFUSED: "Connect call failed", Fault.HANG: "timed out", Fault.SLOW: "timed out",
                Fault.DROPPED: "Disconnected", Fault.ERROR: "HTTP 500", Fault.AUTH: "HTTP 401"}
ENDPOINTS = [
    Endpoint("ping", "--ping-url", lambda _: HttpEndpoint(), lambda e: e.url(f"/ping/{SECRET}?token=abc"),
             ExitCode.OK, "health ping (start) to 127.0.0.1:", {**HTTP_REASONS, Fault.AUTH: "credentials were refused"},
             pinged,
             silent=frozenset({Fault.GARBAGE}), secret=SECRET),
    Endpoint("pushgateway", "--pushgateway", lambda _: HttpEndpoint(), lambda e: e.url(userinfo=f"pusher:{PASSWORD}@"),
             ExitCode.OK, "metrics push to 127.0.0.1:", {**HTTP_REASONS, Fault.AUTH: "refused the credentials"},
             pushed, silent=frozenset({Fault.GARBAGE}), secret=PASSWORD),
    Endpoint("redis-at-start", "--limiter", lambda redis: RedisProxy(_port(redis)), lambda e: e.url(),
             ExitCode.USAGE, "limiter", {
                 Fault.REFUSED: "cannot reach", Fault.HANG: "Timeout", Fault.SLOW: "Timeout",
                 Fault.DROPPED: "cannot reach", Fault.ERROR: "answered with an error",
                 Fault.GARBAGE: "does not speak the Redis protocol", Fault.AUTH: "refused the credentials"},
             booked, redis=True),
    Endpoint("redis-mid-run", "--limiter", lambda redis: RedisProxy(_port(redis)), lambda e: e.url(),
             ExitCode.OK, "stopped answering", {
                 Fault.REFUSED: "ConnectionError", Fault.HANG: "TimeoutError", Fault.SLOW: "TimeoutError",
                 Fault.DROPPED: "ConnectionError", Fault.ERROR: "ResponseError",
                 # Cut first (a restart with a password, another server on the port): either is met first.
                 Fault.GARBAGE: "ConnectionError|InvalidResponse", Fault.AUTH: "ConnectionError|AuthenticationError"},
             booked, mid_run=True, redis=True),
]


def _port(redis: RedisServer | None) -> int:
    assert redis is not None
    return redis.port


class Stderr:
    """The run's stderr lines as they come, and a way to wait for one."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def seen(self, text: str) -> str:
        """The first line holding `text`, once it is written (fails if the run ends first)."""
        while True:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            assert not self.task.done(), f"the run ended without saying {text!r}: {self.lines[-20:]}"
            self._changed.clear()
            await self._changed.wait()

    def warnings(self) -> list[str]:
        return [line for line in self.lines if " WARNING " in line or " ERROR " in line]


@dataclass
class Run:
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    async def start(self) -> tuple[asyncio.subprocess.Process, Stderr]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", *self.args, cwd=REPO, env=cli_env(self.env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        return proc, Stderr(proc.stderr)

    async def finish(self, proc: asyncio.subprocess.Process, stderr: Stderr) -> int:
        """The exit code, once the process has exited (a run past BOUND is a hang: it fails)."""
        try:
            code = await asyncio.wait_for(proc.wait(), BOUND)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await stderr.task
        return code


async def _until(condition: Callable[[], bool], stderr: Stderr) -> None:
    """Wait for a state of the local endpoint, while the run is alive."""
    while not condition():
        assert not stderr.task.done(), f"the run ended first: {stderr.lines[-20:]}"
        await asyncio.sleep(0.01)


def _cases() -> list[Any]:
    return [pytest.param(endpoint, fault, id=f"{endpoint.name}-{fault.value}")
            for endpoint in ENDPOINTS for fault in Fault]


def test_the_table_covers_every_fault_of_every_endpoint() -> None:
    """Each endpoint row says what each fault does to the run (a reason, or no failure at all)."""
    assert {e.name for e in ENDPOINTS} == {"ping", "pushgateway", "redis-at-start", "redis-mid-run"}
    for endpoint in ENDPOINTS:
        assert set(endpoint.reasons) | endpoint.silent == set(Fault), endpoint.name


@pytest.mark.timeout(4 * BOUND)
@pytest.mark.parametrize(("endpoint", "fault"), _cases())
async def test_every_endpoint_fault_then_the_endpoint_comes_back(tmp_path: Path, request: pytest.FixtureRequest,
                                                                 endpoint: Endpoint, fault: Fault) -> None:
    """One endpoint misbehaves one way: the run ends with the README's exit code within its time
    budget, says so once (naming no secret), writes nothing or everything as documented; with the
    endpoint back, the same command runs clean and the endpoint gets what it should."""
    redis: RedisServer | None = request.getfixturevalue("own_redis_server") if endpoint.redis else None
    manifest = write_manifest(tmp_path / "m.jsonl", items(ITEMS, ["image_analyze"]))
    durations = {"image-analyze": (HOLD, HOLD) if endpoint.mid_run else (0.5, 1.5)}
    clock = FakeClock(real=True)
    settings = EmulatorSettings(api_key=KEY, seed=7, time_scale=SCALE, durations=durations)
    async with start_emulator(settings, clock=clock) as emu, endpoint.make(redis) as target:
        cfg = config_file(tmp_path / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 2.0})
        run = Run(["run", str(manifest), "--out", str(tmp_path / "r.jsonl"), "--endpoint", emu.url, "--config",
                   str(cfg), "--progress", "off", endpoint.flag, endpoint.url(target)],
                  {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE), "MEDIA_PIPELINE_INSTANCE": INSTANCE})
        if not endpoint.mid_run:
            await target.set_fault(fault)
        proc, stderr = await run.start()
        if endpoint.mid_run:
            await _mid_run(target, fault, stderr, clock)
        code = await run.finish(proc, stderr)
        said = "\n".join(stderr.lines[-30:])
        assert code == endpoint.exit_code, said
        assert not endpoint.secret or endpoint.secret not in "\n".join(stderr.lines)
        if fault in endpoint.silent:
            assert stderr.warnings() == [], said
        else:
            warnings = stderr.warnings()
            assert len(warnings) == 1, said
            assert endpoint.says in warnings[0], warnings[0]
            assert any(reason in warnings[0] for reason in endpoint.reasons[fault].split("|")), warnings[0]
            if fault is not Fault.REFUSED:
                assert target.faulty_connections > 0, "the fault never bit"
        if endpoint.exit_code == ExitCode.USAGE:
            _nothing_written(tmp_path, emu)
        else:
            _every_item_once(tmp_path, manifest, emu)

        # The endpoint comes back: the same command runs clean and the endpoint gets its due.
        await target.heal()
        if not endpoint.mid_run:
            proc, stderr = await run.start()
            assert await run.finish(proc, stderr) == ExitCode.OK, stderr.lines[-30:]
            assert stderr.warnings() == []
            _every_item_once(tmp_path, manifest, emu)
        assert endpoint.delivered(target), getattr(target, "received", None)


async def _mid_run(target: FaultyEndpoint, fault: Fault, stderr: Stderr, clock: FakeClock) -> None:
    """Fault the endpoint once the run books there, bring it back once the run has said it is
    lost, and let the held tasks end once the run books there again."""
    assert isinstance(target, RedisProxy)
    await _until(lambda: target.bookings >= 3, stderr)
    await target.set_fault(fault)
    await stderr.seen("stopped answering")
    if fault is not Fault.REFUSED:  # a cut connection may be what the run noticed: the fault must bite too
        await _until(lambda: target.faulty_connections > 0, stderr)
    await target.heal()
    await stderr.seen("answers again")
    again = target.bookings
    await _until(lambda: target.bookings > again, stderr)
    clock.advance(HOLD / SCALE + 1.0)


def _nothing_written(tmp: Path, emu: RunningEmulator) -> None:
    assert not (tmp / "r.jsonl").exists() and not (tmp / "r.jsonl.state").exists()
    assert emu.counters()["submissions"] == {}


def _every_item_once(tmp: Path, manifest: Path, emu: RunningEmulator) -> None:
    lines = read_results(tmp / "r.jsonl")
    assert_exactly_once(lines, jobs_of(manifest))
    assert all(line["status"] == "SUCCESS" for line in lines), [line.get("error") for line in lines]
    assert emu.counters()["duplicate_submissions"] == 0
