"""`pipeline.run` / `pipeline.arun` against the emulator: the CLI's files, outcome and locking from
Python, every caller mistake refused before anything starts, and no process-wide side effects."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, assert_exactly_once, cli_env, items, read_results, write_manifest

import pipeline
from pipeline.emulator import EmulatorSettings, EmulatorThread
from pipeline.state.lock import live_holder

KEY = "api-key-6f1d"
SCALE = 20.0
FAST = {cap: (0.5, 1.5) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
#: Tasks that stay PENDING past any test: a run the test needs alive cannot end on its own.
PENDING = {cap: (3000.0, 3000.0) for cap in FAST}
CONFIG = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}


pytestmark = pytest.mark.usefixtures("api_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    return EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST)


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_run_writes_what_the_cli_writes_and_returns_the_outcome(tmp_path: Path, emu_thread: EmulatorThread,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A synchronous run: one line per item, the summary file, exit code 0; the key comes from
    DASHSCOPE_API_KEY as for the CLI, and it is in no file the run wrote."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    rows = items(12, ["image_analyze", "object_detection"])
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "results.jsonl"
    result = pipeline.run(manifest, out=out, endpoint=emu_thread.url, config=CONFIG)
    assert result.exit_code == pipeline.ExitCode.OK and result.outcome is pipeline.RunOutcome.COMPLETED
    assert_exactly_once(read_results(out), [r["id"] for r in rows])
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary)) and summary["exit_code"] == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_second_call_resumes_and_a_finished_run_sends_nothing(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """The same call again is a resume: done items are skipped, nothing is sent."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(6, ["object_detection"]))
    out = tmp_path / "r.jsonl"
    first = pipeline.run(manifest, out=out, endpoint=emu_thread.url, api_key=KEY, config=CONFIG)
    assert first.exit_code == 0
    sent = emu_thread.counters()["requests_total"]
    again = pipeline.run(str(manifest), out=str(out), endpoint=emu_thread.url, api_key=KEY, config=CONFIG)
    assert again.exit_code == 0 and emu_thread.counters()["requests_total"] == sent
    assert len(read_results(out)) == 6


def test_config_as_a_file_a_mapping_or_a_config(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """`config` takes a YAML path, a mapping or a `Config`; options are laid over each."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["object_detection"]))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"endpoint: {emu_thread.url}\nqps_headroom: 0.9\n")
    by_file = pipeline.run(manifest, out=tmp_path / "a.jsonl", api_key=KEY, config=cfg_file, workspace="ws1")
    by_mapping = pipeline.run(manifest, out=tmp_path / "b.jsonl", api_key=KEY,
                              config={"endpoint": emu_thread.url, "workspace": "ws2"})
    given = pipeline.Config(endpoint="http://127.0.0.1:1", time_scale=SCALE)
    by_object = pipeline.run(manifest, out=tmp_path / "c.jsonl", api_key=KEY, config=given, endpoint=emu_thread.url,
                             max_cost=5)
    assert [r.exit_code for r in (by_file, by_mapping, by_object)] == [0, 0, 0]
    assert by_object.summary["spend"]["cap"] == 5


@pytest.mark.parametrize(("call", "key", "says"), [
    ({"max_cots": 1}, "max_cots", "did you mean max_cost?"),
    ({"max_cost": -1}, "max_cost", ">= 0"),
    ({"max_duration": "soon"}, "max_duration", ""),
    ({"ping_url": "ftp://x"}, "ping_url", ""),
    ({"config": {"qps_headroom": 7}}, "qps_headroom", "(0, 1]"),
    ({"config": {"no_such_key": 1}}, "no_such_key", "unknown key"),
    ({"config": 17}, "config", "YAML file's path"),
    ({"api_key": ""}, "api_key", "api_key is empty"),
    ({"api_key": 5}, "api_key", "api_key must be a string, got int"),
    ({"endpoint": None}, "endpoint", "no endpoint"),
    ({"analyses": "nope"}, "analyses", "unknown capability"),
])
def test_bad_arguments_raise_before_anything_starts(tmp_path: Path, emu_thread: EmulatorThread,
                                                    call, key, says) -> None:
    """A bad option, config or key raises ConfigError (exit code 2) naming it; nothing is
    written and nothing is sent."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    before = files_under(tmp_path)
    kwargs = {"out": tmp_path / "r.jsonl", "endpoint": emu_thread.url, "api_key": KEY, **call}
    with pytest.raises(pipeline.ConfigError) as caught:
        pipeline.run(manifest, **kwargs)
    assert caught.value.key == key and says in str(caught.value)
    assert caught.value.exit_code == 2
    assert files_under(tmp_path) == before
    assert emu_thread.counters()["requests_total"] == 0


def test_no_api_key_anywhere_names_the_variable(tmp_path: Path) -> None:
    """Without api_key and DASHSCOPE_API_KEY: a ConfigError that says how to give one."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    with pytest.raises(pipeline.ConfigError, match="DASHSCOPE_API_KEY is not set"):
        pipeline.run(manifest, out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9")


def test_a_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    """A manifest that is not there: UsageError, exit code 2, nothing created."""
    with pytest.raises(pipeline.UsageError, match="does not exist") as caught:
        pipeline.run(tmp_path / "none.jsonl", out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY)
    assert caught.value.exit_code == 2 and list(tmp_path.iterdir()) == []


async def test_run_inside_an_event_loop_says_to_await_arun(tmp_path: Path) -> None:
    """The synchronous call in a running loop would nest loops: it says to use arun instead."""
    with pytest.raises(pipeline.UsageError, match=r"await pipeline\.arun"):
        pipeline.run(tmp_path / "m.jsonl", out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY)


async def _wait_live(state_dir: Path, emu_thread: EmulatorThread, tasks: int, runner: asyncio.Task[object]) -> None:
    """Until the run holds the state dir and the emulator has seen `tasks` creates."""
    while not (live_holder(state_dir) and emu_thread.counters()["tasks_created_total"] >= tasks):
        assert not runner.done(), runner
        await asyncio.sleep(0.02)


async def test_a_second_run_on_a_live_out_raises_state_locked_and_cancel_stops_cleanly(tmp_path: Path) -> None:
    """While one arun holds the state dir, a second raises StateLocked (exit code 7) and sends
    nothing; cancelling the first stops it cleanly (the lock released), and the same call
    resumes it to one line per item."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(5, ["video_snapshot"]))
    out, state = tmp_path / "r.jsonl", tmp_path / "r.jsonl.state"
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=PENDING)) as emu_thread:
        first = asyncio.create_task(pipeline.arun(manifest, out=out, endpoint=emu_thread.url, api_key=KEY,
                                                  config=CONFIG))
        await _wait_live(state, emu_thread, 5, first)
        # The run is live: no signal handler of its own was installed (handle_signals defaults to False).
        assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before
        with pytest.raises(pipeline.StateLocked) as caught:
            await pipeline.arun(manifest, out=out, endpoint=emu_thread.url, api_key=KEY, config=CONFIG)
        assert caught.value.exit_code == 7 and "pid" in str(caught.value)
        assert emu_thread.counters()["tasks_created_total"] == 5
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert live_holder(state) is None
        port = int(emu_thread.url.rsplit(":", 1)[1])
    # A fresh emulator on the same address (the recorded tasks' service: another one is refused)
    # forgets the tasks: the resume polls the recorded ids and finds them gone, so it creates each
    # once more; what matters here is that it runs to the end from the state.
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=FAST),
                        port=port) as emu_thread:
        result = await pipeline.arun(manifest, out=out, endpoint=emu_thread.url, api_key=KEY, config=CONFIG)
    assert result.exit_code == 0
    assert_exactly_once(read_results(out), [f"item-{i:05d}" for i in range(5)])


def test_handle_signals_true_stops_on_sigterm_with_exit_3(tmp_path: Path) -> None:
    """Asked for, the run's handlers turn a SIGTERM into a clean, resumable stop (exit code 3),
    and the caller's handlers are back afterwards."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["video_snapshot"]))
    script = tmp_path / "embed.py"
    script.write_text(
        "import os, signal, sys, threading, time\nimport pipeline\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "def kill():\n"  # once the run's handler is in place
        "    while signal.getsignal(signal.SIGTERM) is before:\n        time.sleep(0.02)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=kill, daemon=True).start()\n"
        "r = pipeline.run(sys.argv[1], out=sys.argv[2], endpoint=sys.argv[3], api_key='" + KEY + "',"
        " handle_signals=True)\n"
        "print('EXIT', int(r.exit_code), r.outcome.value, signal.getsignal(signal.SIGTERM) is before)\n")
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=5, time_scale=SCALE, durations=PENDING)) as emu_thread:
        done = subprocess.run([sys.executable, str(script), str(manifest), str(tmp_path / "r.jsonl"), emu_thread.url],
                              capture_output=True, text=True, env=cli_env({"PIPELINE_TIME_SCALE": str(SCALE)}),
                              cwd=REPO, timeout=90, check=False)
    assert "EXIT 3 stopped True" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0


def test_import_pipeline_is_cheap_and_the_api_is_there_on_first_use() -> None:
    """`import pipeline` loads no engine or HTTP library; `pipeline.run` imports them on first use."""
    code = ("import sys, pipeline\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'anyio') or "
            "m.startswith('pipeline.engine'))\n"
            "print('BEFORE', heavy)\n"
            "assert callable(pipeline.run) and callable(pipeline.arun)\n"
            "print('AFTER', 'aiohttp' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=REPO,
                          timeout=60, check=False)
    assert "BEFORE []" in done.stdout and "AFTER True" in done.stdout, done.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pipeline.nope  # noqa: B018 - the attribute access is the test


def test_a_directory_with_include_exclude_and_force(tmp_path: Path, emu_thread: EmulatorThread) -> None:
    """The API runs a directory as the CLI does, with include/exclude by their Python names (only the
    matching files are sent); a second call sends nothing, and force=True sends them again."""
    media = tmp_path / "media"
    (media / "tmp").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "tmp/c.png", "d.gif"):
        (media / name).write_bytes(b"\x89PNG " + name.encode())
    kwargs = {"out": tmp_path / "r.jsonl", "endpoint": emu_thread.url, "api_key": KEY, "config": CONFIG,
              "analyses": ["object_detection"], "include": ["*.png", "*.jpg"], "exclude": "tmp/"}
    first = pipeline.run(media, **kwargs)
    assert first.exit_code == 0
    assert sorted(r["id"] for r in read_results(tmp_path / "r.jsonl")) == ["a.png", "b.jpg"]
    sent = emu_thread.counters()["requests_total"]
    assert pipeline.run(media, **kwargs).summary["catalog"]["unchanged"] == 2
    assert emu_thread.counters()["requests_total"] == sent
    forced = pipeline.run(media, force=True, **kwargs)
    assert forced.summary["catalog"]["changed"] == 2 and emu_thread.counters()["requests_total"] == sent + 2


@pytest.mark.parametrize("option", [{"include": "*.jpg"}, {"exclude": ["x/"]}, {"follow_symlinks": True}])
def test_listing_options_on_a_manifest_are_refused_before_anything_starts(tmp_path: Path, option) -> None:
    """include/exclude/follow_symlinks apply to a directory or oss:// prefix: given with a
    manifest they raise ConfigError naming the option, and nothing is created."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    before = files_under(tmp_path)
    with pytest.raises(pipeline.ConfigError) as caught:
        pipeline.run(manifest, out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY, **option)
    assert caught.value.key == next(iter(option)) and "directory or an oss:// prefix" in str(caught.value)
    assert files_under(tmp_path) == before


def test_a_config_object_without_endpoint_says_the_environment_is_not_read_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `Config` is used as given: with PIPELINE_ENDPOINT set and no endpoint in it, the error
    says the environment is not read for a Config, rather than "set PIPELINE_ENDPOINT"."""
    monkeypatch.setenv("PIPELINE_ENDPOINT", "http://127.0.0.1:9")
    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    with pytest.raises(pipeline.ConfigError, match="the environment is not read for it"):
        pipeline.run(manifest, out=tmp_path / "r.jsonl", api_key=KEY, config=pipeline.Config())


def test_handle_signals_from_another_thread_is_refused_not_ignored(tmp_path: Path) -> None:
    """Signal handlers can only be installed from the main thread: asking for them from another
    thread raises ConfigError naming the option, before anything is created."""
    import threading

    manifest = write_manifest(tmp_path / "m.jsonl", items(1, ["object_detection"]))
    caught: list[BaseException] = []

    def call() -> None:
        try:
            pipeline.run(manifest, out=tmp_path / "r.jsonl", endpoint="http://127.0.0.1:9", api_key=KEY,
                         handle_signals=True)
        except BaseException as exc:  # handed to the test's thread
            caught.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(timeout=60)
    assert len(caught) == 1 and isinstance(caught[0], pipeline.ConfigError), caught
    assert caught[0].key == "handle_signals" and "main thread" in str(caught[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
