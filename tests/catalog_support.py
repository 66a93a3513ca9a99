"""What the catalog fault tests and their neighbours share (tests/test_catalog_*.py): the OSS
emulator's key pair and bucket, one run of a source against the emulator, a two-page OSS listing,
a folder of images, and the command line in a subprocess with a wait for a state of its run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from run_support import config
from support import REPO, checkpoint_counts, cli_env, config_file

from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.backoff import RetryPolicy
from pipeline.core.results import RunFiles
from pipeline.emulator import RunningEmulator
from pipeline.emulator.oss import OssSettings
from pipeline.emulator.oss_server import RunningOss, start_oss
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.state.checkpoint import Checkpoint

KEY = "engine-test-key"
OSS_ID, OSS_SECRET = "faults-key-id", "faults-secret-never-shown"
BUCKET = "media"
#: Quick retries: a listing's faults are retried within milliseconds.
QUICK = RetryPolicy(base=0.01, max_delay=0.02, max_attempts=3)


@contextlib.asynccontextmanager
async def oss_with_keys(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningOss]:
    """The emulator's OSS with one bucket, its key pair in the environment (where the SDK reads it)."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", OSS_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", OSS_SECRET)
    monkeypatch.delenv("OSS_SESSION_TOKEN", raising=False)
    async with start_oss(OssSettings(key_id=OSS_ID, key_secret=OSS_SECRET, buckets=(BUCKET,))) as running:
        yield running


def sent(emu: RunningEmulator) -> int:
    """Creates and detections the emulator accepted so far."""
    return sum(emu.counters()["submissions"].values())


async def session(tmp: Path, emu: RunningEmulator, source: Path | str, cfg: Config, **request: Any
                  ) -> tuple[RunResult, int]:
    """One run of `source` into tmp's results file; (its result, what the server accepted meanwhile)."""
    before = sent(emu)
    result = await run(RunRequest(manifest=str(source), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                  api_key=KEY, config=cfg, **request))
    return result, sent(emu) - before



def counts(result: RunResult) -> tuple[int, int, int, int]:
    catalog = result.summary["catalog"]
    return catalog["new"], catalog["changed"], catalog["unchanged"], catalog["vanished"]


#: 1,500 keys, two listing pages of 1,000: five videos (two on page 2) among text files no
#: analysis reads (counted as skipped), so a fault can come between pages of a small run.
VIDEOS = [f"v/{n:04d}.mp4" for n in (0, 300, 600, 1200, 1400)]


def fill_two_pages(oss: RunningOss) -> None:
    videos = set(VIDEOS)
    oss.store.fill(BUCKET, [f"v/{n:04d}.txt" for n in range(1500) if f"v/{n:04d}.mp4" not in videos], b"notes")
    oss.store.fill(BUCKET, VIDEOS, b"video bytes")


def oss_config(emu: RunningEmulator, oss: RunningOss | str, **extra: Any) -> Config:
    endpoint = oss if isinstance(oss, str) else oss.url
    return config(emu, analyses_by_type={"video": ["video_snapshot"]}, upload=UploadConfig(endpoint=endpoint),
                  retry=QUICK, **extra)


def folder(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG " + name.encode())
    return root


def folder_config(emu: RunningEmulator, **extra: Any) -> Config:
    return config(emu, analyses_by_type={"image": ["object_detection"]}, **extra)


async def start_cli(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """`python -m pipeline ARGS` in a subprocess, while this test's loop serves the emulators."""
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline", *args, cwd=REPO, env=cli_env(env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Its exit code and stderr, once it ends."""
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def until(proc: asyncio.subprocess.Process, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a state of the run (checked every 20 ms), failing if the run ends first or the
    state does not come within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.returncode is None, "the run ended before the state the test waits for"
        assert time.monotonic() < deadline, "the state the test waits for did not come"
        await asyncio.sleep(0.02)


def cli_args(tmp: Path, source: str, emu: RunningEmulator, **cfg: Any) -> list[str]:
    conf = config_file(tmp / "cfg.yaml", qps_headroom=0.9, retry={"base": 0.1, "max_delay": 0.2, "max_attempts": 3},
                       polling={"first_delay": 1.0, "max_delay": 5.0}, **cfg)
    return ["run", source, "--out", str(tmp / "results.jsonl"), "--state-dir", str(tmp / "state"),
            "--endpoint", emu.url, "--config", str(conf)]


def state_of(tmp: Path) -> dict[str, int]:
    return {k: n for c in checkpoint_counts(tmp / "state").values() for k, n in c.items()}


def image(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/p{i}.jpg", **extra}


#: The `jobs` table as the version before the catalog made it.
JOBS_BEFORE_CATALOG = """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, capability TEXT NOT NULL, service_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('submitted', 'done', 'retry')), task_id TEXT, submitted_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, resubmits INTEGER NOT NULL DEFAULT 0, status TEXT, error_code TEXT,
    usage TEXT, elapsed REAL, finished_at REAL, line_at INTEGER)"""
OLD_COLUMNS = ("id, capability, service_id, state, task_id, submitted_at, attempts, resubmits, status, error_code, "
               "usage, elapsed, finished_at, line_at")


def to_layout_before_catalog(state_dir: Path) -> None:
    """The state dir as the version before fingerprints left it: its jobs table without the
    catalog's columns, and no session counted."""
    conn = sqlite3.connect(state_dir / Checkpoint.DB_NAME)
    conn.executescript(f"""BEGIN; ALTER TABLE jobs RENAME TO jobs_new; {JOBS_BEFORE_CATALOG};
        INSERT INTO jobs SELECT {OLD_COLUMNS} FROM jobs_new; DROP TABLE jobs_new;
        CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state); DELETE FROM meta WHERE key = 'session'; COMMIT;""")
    conn.close()
