"""Sharded runs: a stable split of the manifest by id, per-shard files, and the shard's own lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_exactly_once, items, jobs_of, read_results, write_manifest

from pipeline.config import Config
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.errors import UsageError
from pipeline.exit_codes import ExitCode
from pipeline.results import RunFiles
from pipeline.runner import RunRequest, run
from pipeline.shards import Shard, parse_shard

KEY = "shard-test-key"


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("0/1", {}, Shard(0, 1)),
    ("2/4", {}, Shard(2, 4)),
    ("auto/8", {"JOB_COMPLETION_INDEX": "5"}, Shard(5, 8)),
])
def test_parse_shard(text: str, env: dict[str, str], expected: Shard) -> None:
    """K/N and auto/N (the Indexed Job's index) parse to the shard."""
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize(("text", "env", "message"), [
    ("4/4", {}, "between 0 and 3"),
    ("-1/4", {}, "between 0 and 3"),
    ("1/0", {}, "N must be"),
    ("x/4", {}, "K must be"),
    ("2", {}, "expected K/N"),
    ("auto/4", {}, "JOB_COMPLETION_INDEX is not set"),
])
def test_bad_shards_are_usage_errors(text: str, env: dict[str, str], message: str) -> None:
    """A shard that cannot be is a usage error naming the flag and what is expected."""
    with pytest.raises(UsageError, match=message):
        parse_shard(text, env)


def test_every_id_has_exactly_one_owner() -> None:
    """Over many ids, each is owned by exactly one of N shards, and the split is roughly even."""
    shards = [Shard(k, 4) for k in range(4)]
    owners = [[s.index for s in shards if s.owns(f"id-{i}")] for i in range(4000)]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [k]) for k in range(4)]
    assert min(sizes) > 800


def test_shard_file_names() -> None:
    """A shard's results file and state dir carry its index, so shards never share files."""
    shard = Shard(2, 4)
    assert shard.path(Path("/r/results.jsonl")) == Path("/r/results.shard-2-of-4.jsonl")
    assert shard.path(Path("/r/results.jsonl.state")) == Path("/r/results.jsonl.state.shard-2-of-4")


async def test_shards_split_a_manifest_without_overlap(tmp_path: Path) -> None:
    """Three shards of one manifest write disjoint result files whose union is every item, once;
    rejected lines are reported by exactly one shard."""
    manifest = write_manifest(tmp_path / "m.jsonl", [*items(45), "{broken"])
    shards = [Shard(k, 3) for k in range(3)]
    settings = EmulatorSettings(api_key=KEY, seed=2, time_scale=10.0,
                                durations={c: (0.3, 0.6) for c in ("image-analyze", "video-segmentation",
                                                                  "video-snapshot", "video-summarization",
                                                                  "audio-asr")})
    async with start_emulator(settings) as emu:
        cfg = Config(endpoint=emu.url, time_scale=10.0, qps_headroom=0.9)
        results = []
        for shard in shards:
            files = RunFiles(shard.path(tmp_path / "r.jsonl"), shard.path(tmp_path / "r.jsonl.state"))
            results.append(await run(RunRequest(manifest=str(manifest), files=files, api_key=KEY, config=cfg,
                                                shard=shard)))
    lines = [line for shard in shards for line in read_results(shard.path(tmp_path / "r.jsonl"))]
    assert_exactly_once(lines, jobs_of(manifest))
    assert sorted(r.summary["rejected_lines"] for r in results) == [0, 0, 1]
    assert sum(r.exit_code == ExitCode.OK for r in results) == 2
