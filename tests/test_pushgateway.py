"""The Pushgateway push within one time budget, whatever the gateway does, and its hints."""

from __future__ import annotations

import logging

import anyio
import pytest
from endpoint_faults import Fault, HttpEndpoint

from pipeline.observe.metrics import push_async

SUMMARY = {"capabilities": {"image_analyze": {"succeeded": 3}}, "wall_time_s": 1.0}


@pytest.mark.parametrize("fault", [Fault.SLOW, Fault.HANG])
async def test_a_gateway_that_never_finishes_costs_the_push_its_budget_only(
        fault: Fault, caplog: pytest.LogCaptureFixture) -> None:
    """A gateway that trickles its answer a byte at a time (each byte well within a read timeout)
    or never answers: the push gives up after its budget with False and one warning."""
    async with HttpEndpoint() as gateway:
        await gateway.set_fault(fault)
        with caplog.at_level(logging.WARNING, logger="pipeline.metrics"), anyio.fail_after(30):
            ok = await push_async(gateway.url(), SUMMARY, exit_code=0, instance="i", timeout=1.0)
    assert ok is False and gateway.faulty_connections == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"metrics push to 127.0.0.1:{gateway.port} failed: timed out after 1 s"]


@pytest.mark.parametrize(("fault", "reason"), [
    (Fault.AUTH, "PushRefused (HTTP 401); the Pushgateway refused the credentials: fix user:password in --pushgateway"),
    (Fault.ERROR, "PushRefused (HTTP 500)"),
])
async def test_a_refused_push_says_what_to_fix(fault: Fault, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """401 says to fix the credentials in --pushgateway (never quoting them); a 500 only says what happened."""
    async with HttpEndpoint() as gateway:
        await gateway.set_fault(fault)
        with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
            ok = await push_async(gateway.url(userinfo="pusher:pw-0451@"), SUMMARY, exit_code=1, instance="i")
    assert ok is False
    assert [r.getMessage() for r in caplog.records] == [f"metrics push to 127.0.0.1:{gateway.port} failed: {reason}"]
