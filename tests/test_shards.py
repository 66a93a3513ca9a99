"""Sharded runs: a stable split of the manifest by id, per-shard files, and the shard's own lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_exactly_once, items, jobs_of, read_results, write_manifest

from pipeline.config.load import Config
from pipeline.core.errors import UsageError
from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import EmulatorSettings, start_emulator
from pipeline.engine.runner import RunRequest, run
from pipeline.state.shards import Shard, parse_shard

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
    ("auto/3", {"JOB_COMPLETION_INDEX": "5"}, "auto/3 with JOB_COMPLETION_INDEX='5': K must be between 0 and 2"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX='x': K must be a whole number"),
    ("x" * 500 + "/3", {}, r"^--shard 'x{40}': K must"),
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


def _files(tmp: Path, shard: Shard | None, state_dir: Path | None = None) -> RunFiles:
    files = RunFiles.for_results(tmp / "r.jsonl", state_dir)
    return files if shard is None else RunFiles(shard.path(files.results), shard.path(files.state_dir))


async def test_another_sharding_of_the_same_out_is_refused_and_pays_nothing(tmp_path: Path) -> None:
    """After 0/2 and 1/2 ran 30 items, 0/3 (a changed Indexed Job `completions`) and an unsharded
    run on the same --out are refused (exit 2) naming the state dirs and shard spec of the run
    there and how to go on; the service sees no second submission; the same sharding still resumes."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(30, ["image_analyze", "object_detection"]))
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=2, time_scale=50.0,
                                               durations={"image-analyze": (0.2, 0.4)})) as emu:
        cfg = Config(endpoint=emu.url, time_scale=50.0, qps_headroom=0.9)

        async def go(shard: Shard | None, state_dir: Path | None = None) -> ExitCode:
            result = await run(RunRequest(manifest=str(manifest), files=_files(tmp_path, shard, state_dir),
                                          api_key=KEY, config=cfg, shard=shard))
            return result.exit_code

        assert [await go(Shard(k, 2)) for k in range(2)] == [ExitCode.OK, ExitCode.OK]
        submitted = len(emu.counters()["submissions"])
        assert submitted == 30
        before = sorted(p.name for p in tmp_path.iterdir())
        for other, state_dir in [(Shard(0, 3), None), (Shard(2, 3), None), (None, None),
                                 (None, tmp_path / "elsewhere"), (Shard(1, 3), tmp_path / "elsewhere")]:
            with pytest.raises(UsageError) as refused:
                await go(other, state_dir)
            message = str(refused.value)
            assert "r.jsonl.state.shard-0-of-2" in message and "r.jsonl.state.shard-1-of-2" in message
            assert "--shard K/2" in message and "--out" in message, message
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # a refused run leaves nothing behind
        assert await go(Shard(1, 2)) == ExitCode.OK  # the same sharding resumes (nothing left to do)
        counters = emu.counters()
    assert len(counters["submissions"]) == 30 and counters["duplicate_submissions"] == 0


async def test_sharding_an_unsharded_out_is_refused(tmp_path: Path) -> None:
    """An unsharded run's --out, then `--shard 0/2` (default or explicit --state-dir): refused,
    naming the unsharded state dir; nothing is submitted again."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(6, ["object_detection"]))
    async with start_emulator(EmulatorSettings(api_key=KEY, seed=2, time_scale=50.0)) as emu:
        cfg = Config(endpoint=emu.url, time_scale=50.0, qps_headroom=0.9)
        first = await run(RunRequest(manifest=str(manifest), files=_files(tmp_path, None, tmp_path / "s1"),
                                     api_key=KEY, config=cfg))
        assert first.exit_code == ExitCode.OK
        for state_dir in (None, tmp_path / "s2", tmp_path / "s1"):
            with pytest.raises(UsageError, match=r"(?s)r\.jsonl.*unsharded.*--shard") as refused:
                await run(RunRequest(manifest=str(manifest), files=_files(tmp_path, Shard(0, 2), state_dir),
                                     api_key=KEY, config=cfg, shard=Shard(0, 2)))
            assert "without --shard" in str(refused.value)
        assert emu.counters()["duplicate_submissions"] == 0


@pytest.mark.slow
def test_runs_of_one_out_started_together_never_both_run(tmp_path: Path) -> None:
    """An unsharded run, `--shard 0/2` and `--shard 0/3` of one --out started at the same moment
    (three processes), three times: exactly one runs, the others are refused (exit 2, or 7 while
    it holds the results file), and the service sees no duplicate submission. Before the claim
    was serialized, all three usually ran (180 duplicates for 30 items in 3 of 4 tries)."""
    import subprocess
    import sys

    from support import REPO, cli_env

    from pipeline.emulator import EmulatorThread

    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=2, time_scale=50.0)) as emu:
        for attempt in range(3):
            rows = [{**row, "url": f"{row['url']}?try={attempt}"} for row in items(30, ["object_detection"])]
            manifest = write_manifest(tmp_path / f"m{attempt}.jsonl", rows)  # bodies of its own each try
            out = tmp_path / f"try{attempt}" / "r.jsonl"
            procs = [subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run", str(manifest), "--out", str(out), "--endpoint", emu.url,
                 "--progress", "off", "--quiet", *shard], cwd=REPO, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=cli_env({"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": "50"}))
                for shard in ([], ["--shard", "0/2"], ["--shard", "0/3"])]
            for proc in procs:
                proc.communicate(timeout=120)
            codes = sorted(proc.returncode for proc in procs)
            assert codes.count(0) == 1 and set(codes) <= {0, 2, 7}, codes
        counters = emu.counters()
    assert counters["duplicate_submissions"] == 0, counters["duplicate_submissions"]
