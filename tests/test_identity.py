"""Which catalog a state dir belongs to: stdin has no name to tell one catalog from another."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import items, jobs_of, write_manifest

from pipeline.cli.main import exit_code_for
from pipeline.config.load import Config
from pipeline.core.backoff import PollPolicy
from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import UsageError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.engine.runner import RunRequest, run
from pipeline.service.client import ServiceClient
from pipeline.state.checkpoint import Checkpoint, MetaKey
from pipeline.state.resume import check_identity


def test_stdin_joins_an_existing_run_only_with_append(tmp_path: Path) -> None:
    """A second `run -` on a state dir made from stdin is refused (exit 2, saying --append) like
    another manifest file: a different catalog piped in must not join the run unasked."""
    ckpt = Checkpoint.open(tmp_path / "state")
    out = tmp_path / "r.jsonl"
    try:
        assert check_identity(ckpt, out=out, manifest="-", append=False, state_dir=tmp_path) is False
        with pytest.raises(UsageError, match=r"(?s)stdin.*--append"):
            check_identity(ckpt, out=out, manifest="-", append=False, state_dir=tmp_path)
        check_identity(ckpt, out=out, manifest="-", append=True, state_dir=tmp_path)
        assert ckpt.manifests() == ["-"]  # stdin is listed once, however often it joined
    finally:
        ckpt.close()


KEY = "identity-test-key-9f3a"


async def _recorded_task(tmp_path: Path, emu_url: str, *, service: str | None) -> tuple[Path, RunFiles]:
    """A state dir whose one item has a task recorded at `emu_url` (what a run killed there leaves),
    with the service recorded as `service` (None: a state dir from before it was recorded)."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["image_analyze"]))
    job = next(iter(jobs_of(manifest).values()))
    files = RunFiles(tmp_path / "results.jsonl", tmp_path / "state")
    cap = CAPABILITIES[job.capability]
    async with ServiceClient(emu_url, "default", KEY) as client:
        task_id = (await client.submit(cap, job.service_id, cap.build_body(job, None))).result["task_id"]
    ckpt = Checkpoint.open(files.state_dir)
    try:
        ckpt.set_meta(MetaKey.OUT, str(files.results.resolve()))
        if service is not None:
            ckpt.set_meta(MetaKey.SERVICE, service)
        ckpt.add_manifest(str(manifest.resolve()))
        ckpt.record_submitted(job.key, job.capability, job.service_id, task_id, attempts=1)
    finally:
        ckpt.close()
    return manifest, files


def _config(url: str, workspace: str = "default") -> Config:
    return Config(endpoint=url, workspace=workspace, time_scale=50.0,
                  polling=PollPolicy(first_delay=1.0, max_delay=5.0, timeout=600.0))


@pytest.mark.parametrize("other", ["endpoint", "workspace"])
async def test_a_resume_on_another_service_is_refused_before_anything_is_sent(tmp_path: Path, other: str) -> None:
    """Tasks recorded at one endpoint (or workspace) are unknown elsewhere: a resume with another one
    exits 2 naming both and how to go on, and sends nothing (before: the recorded task was created
    again there, and paid twice)."""
    settings = EmulatorSettings(api_key=KEY, seed=3, time_scale=50.0)
    async with start_emulator(settings) as first, start_emulator(settings) as second:
        recorded = f"{first.url}/v3/openapi/workspaces/default"
        manifest, files = await _recorded_task(tmp_path, first.url, service=recorded)
        cfg = _config(second.url) if other == "endpoint" else _config(first.url, "other-ws")
        with pytest.raises(UsageError) as refused:
            await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg))
        sent = second.counters()["tasks_created_total"] + first.counters()["tasks_created_total"]
    message = str(refused.value)
    assert exit_code_for(refused.value) == ExitCode.USAGE
    assert f"{first.url}/v3/openapi/workspaces/default" in message
    assert (second.url if other == "endpoint" else "workspaces/other-ws") in message
    assert "same --endpoint and --workspace" in message and "new --out" in message
    assert sent == 1  # the one task the killed run created, nothing since
    assert not files.results.exists()


async def test_a_state_dir_without_a_recorded_service_adopts_this_one(tmp_path: Path) -> None:
    """A state dir from before the service was recorded resumes on this one (its task polled, not sent
    again) and records it, so a later resume elsewhere is refused."""
    settings = EmulatorSettings(api_key=KEY, seed=3, time_scale=50.0)
    async with start_emulator(settings) as emu:
        manifest, files = await _recorded_task(tmp_path, emu.url, service=None)
        result = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=_config(emu.url)))
        created = emu.counters()["tasks_created_total"]
    assert result.exit_code == ExitCode.OK, result.reason
    assert created == 2  # the recorded task and the item never sent
    ckpt = Checkpoint.open(files.state_dir, read_only=True)
    try:
        assert ckpt.get_meta(MetaKey.SERVICE) == f"{emu.url}/v3/openapi/workspaces/default"
    finally:
        ckpt.close()


async def test_a_run_with_no_task_outstanding_moves_to_another_service(tmp_path: Path) -> None:
    """With no recorded task left (done lines are never sent again), a resume on another endpoint is
    accepted: it sends only what is left there, and records the service its tasks now come from."""
    settings = EmulatorSettings(api_key=KEY, seed=3, time_scale=50.0)
    async with start_emulator(settings) as first, start_emulator(settings) as second:
        manifest, files = await _recorded_task(tmp_path, first.url, service=None)
        done = await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=_config(first.url)))
        assert done.exit_code == ExitCode.OK, done.reason
        more = write_manifest(tmp_path / "more.jsonl", items(3, ["image_analyze"])[2:])
        moved = await run(RunRequest(manifest=str(more), files=files, api_key=KEY, append=True,
                                     config=_config(second.url)))
        sent_there = second.counters()["tasks_created_total"]
    assert moved.exit_code == ExitCode.OK, moved.reason
    assert sent_there == 1
    ckpt = Checkpoint.open(files.state_dir, read_only=True)
    try:
        assert ckpt.get_meta(MetaKey.SERVICE) == f"{second.url}/v3/openapi/workspaces/default"
    finally:
        ckpt.close()
