"""A run reads its manifest from where the last session read it when the part before is
unchanged (issue 21): a grown manifest decodes only its new lines; an edit inside the part read,
a manifest cut below the position or a state dir without a position compare the whole catalog
once and say so; vanished keys are still decided over the whole catalog. Against the emulator
on 127.0.0.1, in-process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from run_support import config, emulator
from support import write_manifest

import pipeline.engine.read_cursor as read_cursor
import pipeline.manifest.reader as manifest_reader
from pipeline.core.results import RunFiles
from pipeline.emulator import RunningEmulator, start_emulator
from pipeline.engine.read_cursor import MERGE_AT, ReadCursor, Start, plan
from pipeline.engine.runner import RunRequest, RunResult, run
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.cursor import Cursor
from pipeline.state.resume import manifest_key

KEY = "engine-test-key"
SKIPPED = "reading on from there"


def image(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"img-{i}", "capability": "image_analyze", "url": f"https://example.com/p{i}.jpg", **extra}


def sent(emu: RunningEmulator) -> int:
    return sum(emu.counters()["submissions"].values())


async def session(tmp: Path, emu: RunningEmulator, manifest: Path) -> tuple[RunResult, int]:
    """One run of `manifest`; (its result, what the server accepted meanwhile)."""
    before = sent(emu)
    result = await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                  api_key=KEY, config=config(emu)))
    return result, sent(emu) - before


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The line numbers the manifest reader validates (decodes into jobs), in order."""
    lines: list[int] = []
    real = manifest_reader.validate_record

    def counting(raw: Any, line: int, **kwargs: Any) -> Any:
        lines.append(line)
        return real(raw, line, **kwargs)

    monkeypatch.setattr(manifest_reader, "validate_record", counting)
    return lines


def messages(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def test_a_grown_manifest_is_read_from_where_the_last_session_read(tmp_path: Path, validated: list[int],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Items appended to a manifest read to its end: only the new lines are validated and sent;
    the part read before counts unchanged and none of its keys vanishes."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(30)])
    async with start_emulator(emulator()) as emu:
        _, n1 = await session(tmp_path, emu, manifest)
        with open(manifest, "a", encoding="utf-8") as f:
            f.write("".join(f'{{"id": "img-{i}", "capability": "image_analyze", '
                            f'"url": "https://example.com/p{i}.jpg"}}\n' for i in range(30, 35)))
        validated.clear()
        caplog.clear()  # what earlier sessions logged (the logger may already be at INFO)
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            grown, n2 = await session(tmp_path, emu, manifest)
    assert (n1, n2) == (30, 5)
    assert validated == [31, 32, 33, 34, 35]  # the 30 lines before were not decoded again
    assert messages(caplog, SKIPPED) == 1
    catalog = grown.summary["catalog"]
    assert (catalog["new"], catalog["unchanged"], catalog["vanished"]) == (5, 30, 0), catalog


async def test_an_edit_inside_the_part_read_compares_the_whole_catalog(tmp_path: Path, validated: list[int],
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A line changed inside the part read before (same size, other bytes): the digest tells,
    the whole catalog is compared (logged once) and exactly the changed item is sent."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(10)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        text = manifest.read_text().replace("p3.jpg", "q3.jpg")
        manifest.write_text(text + '{"id": "img-10", "capability": "image_analyze", "url": "https://e.com/x.jpg"}\n')
        validated.clear()
        caplog.clear()  # what earlier sessions logged (the logger may already be at INFO)
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            again, n = await session(tmp_path, emu, manifest)
    assert n == 2 and len(validated) == 11
    assert messages(caplog, "changed inside the part read before") == 1 and messages(caplog, SKIPPED) == 0
    catalog = again.summary["catalog"]
    assert (catalog["new"], catalog["changed"], catalog["unchanged"], catalog["vanished"]) == (1, 1, 9, 0)


async def test_a_manifest_cut_below_the_position_compares_the_whole_catalog(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A manifest shorter than where the last session read to: read in full (logged), and the
    items cut off vanish."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(10)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        write_manifest(manifest, [image(i) for i in range(7)])
        caplog.clear()  # what earlier sessions logged (the logger may already be at INFO)
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            cut, n = await session(tmp_path, emu, manifest)
    assert n == 0 and messages(caplog, "truncated") == 1
    assert (cut.summary["catalog"]["unchanged"], cut.summary["catalog"]["vanished"]) == (7, 3)


async def test_a_state_dir_without_positions_reads_in_full_once(tmp_path: Path, validated: list[int],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A state dir from the version before (no `seen` column; a stale position is not trusted):
    its first run compares the whole catalog, says so once, sends nothing and vanishes nothing;
    the next run skips."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(8)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        conn = sqlite3.connect(tmp_path / "state" / Checkpoint.DB_NAME)
        conn.execute("ALTER TABLE jobs DROP COLUMN seen")
        conn.commit()
        conn.close()
        validated.clear()
        caplog.clear()  # what earlier sessions logged (the logger may already be at INFO)
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            upgraded, n1 = await session(tmp_path, emu, manifest)
            full_reads = len(validated)
            again, n2 = await session(tmp_path, emu, manifest)
    assert (n1, n2) == (0, 0) and full_reads == 8 and len(validated) == 8
    assert messages(caplog, "no read position recorded") == 1 and messages(caplog, SKIPPED) == 1
    assert upgraded.summary["catalog"]["vanished"] == 0 and again.summary["catalog"]["vanished"] == 0
    assert again.summary["catalog"]["unchanged"] == 8


def _stat(size: int, mtime_ns: int = 5, ino: int = 9) -> os.stat_result:
    return os.stat_result((0o100644, ino, 0, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, 0))


CURSOR = Cursor("m", 1, position=100, line=5, size=120, mtime_ns=5, inode=9, settings="s")


@pytest.mark.parametrize(("cursor", "stat", "kw", "start", "why"), [
    (CURSOR, _stat(120), {}, Start.SEEK, ""),
    (CURSOR, _stat(150, 6), {}, Start.VERIFY, ""),  # grown: the digests decide
    (CURSOR, _stat(120, 6), {}, Start.VERIFY, ""),  # touched: the digests decide
    (CURSOR, _stat(90, 6), {}, Start.FULL, "truncated"),
    (None, _stat(120), {}, Start.FULL, "no read position"),
    (CURSOR, _stat(120), {"settings": "other"}, Start.FULL, "settings"),
    (CURSOR, _stat(120), {"scattered": True}, Start.FULL, "--retry-failed"),
    (CURSOR, _stat(120), {"forced": True}, Start.FULL, ""),
    (CURSOR, _stat(120), {"seekable": False}, Start.FULL, ""),
    (Cursor("m", 1, position=100, size=120, mtime_ns=5, inode=9, settings="s", counts={"local": 1}), _stat(120),
     {}, Start.FULL, ""),
])
def test_where_a_read_starts(cursor: Cursor | None, stat: os.stat_result, kw: dict[str, Any], start: Start,
                             why: str) -> None:
    """The start of a read by cursor, file and settings: the table in read_cursor's docstring."""
    args: dict[str, Any] = {"seekable": True, "stat": stat, "settings": "s", "scattered": False, "forced": False, **kw}
    decided = plan(cursor, **args)
    assert decided.start is start and why in decided.why


@pytest.mark.parametrize("how", ["renamed", "in place"])
async def test_a_manifest_edited_while_a_session_reads_it_is_compared_next_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A line inside the part already read, changed while the run reads on (`sed -i` renames a
    new file in; an editor may write in place): the next session checks the prefix instead of
    trusting the file's new identity, and sends exactly the changed item again."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(10)])
    real = manifest_reader.validate_record

    def editing(raw: Any, line: int, **kwargs: Any) -> Any:
        if line == 8 and "q3.jpg" not in manifest.read_text():
            edited = manifest.read_text().replace("p3.jpg", "q3.jpg")
            if how == "renamed":
                (tmp_path / "m.new").write_text(edited)
                os.replace(tmp_path / "m.new", manifest)
            else:
                with open(manifest, "r+", encoding="utf-8") as f:
                    f.write(edited)
        return real(raw, line, **kwargs)

    async with start_emulator(emulator()) as emu:
        monkeypatch.setattr(manifest_reader, "validate_record", editing)
        await session(tmp_path, emu, manifest)
        monkeypatch.undo()
        assert "q3.jpg" in manifest.read_text()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            again, n = await session(tmp_path, emu, manifest)
    assert n == 1 and messages(caplog, SKIPPED) == 0
    assert again.summary["catalog"]["changed"] == 1
    lines = [json.loads(raw) for raw in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["source"] for line in lines if line["id"] == "img-3"][-1].endswith("q3.jpg")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_an_append_after_a_last_line_without_newline_is_no_duplicate(
        tmp_path: Path, newline: str) -> None:
    """A manifest whose writer left no final newline, then an append that starts with one: the
    old last line is not read again as a duplicate of itself; the new item is sent, exit 0."""
    lines = [json.dumps(image(i)) for i in range(5)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(newline.join(lines).encode())  # no newline after the last line
    async with start_emulator(emulator()) as emu:
        first, n = await session(tmp_path, emu, manifest)
        assert (first.exit_code, n) == (0, 5)
        with open(manifest, "ab") as f:
            f.write((newline + json.dumps(image(5)) + newline).encode())
        again, n = await session(tmp_path, emu, manifest)
    assert (again.exit_code, n) == (0, 1), again.summary
    assert again.summary["rejected_lines"] == 0


async def test_a_torn_last_line_rejected_then_completed_leaves_no_reject_behind(tmp_path: Path) -> None:
    """A last line caught half-written is rejected by that session; once its writer completes
    it, the next session reads it whole, sends it, and the run's rejected count is 0 again."""
    whole = json.dumps(image(9)) + "\n"
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(4)])
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(whole[:30])
    async with start_emulator(emulator()) as emu:
        first, n = await session(tmp_path, emu, manifest)
        assert (first.exit_code, n, first.summary["rejected_lines"]) == (1, 4, 1)
        with open(manifest, "a", encoding="utf-8") as f:
            f.write(whole[30:])
        again, n = await session(tmp_path, emu, manifest)
    assert (again.exit_code, n, again.summary["rejected_lines"]) == (0, 1, 0), again.summary


def _segmented(path: Path, cuts: list[int]) -> Cursor:
    """A cursor whose prefix [0, cuts[-1]) is recorded as one segment per pair of cuts."""
    data = path.read_bytes()
    bounds = list(zip([0, *cuts[:-1]], cuts, strict=True))
    return Cursor(manifest_key(str(path)), 1, position=cuts[-1],
                  segments=[[a, b, hashlib.sha256(data[a:b]).hexdigest()] for a, b in bounds])


@pytest.mark.parametrize("count", [1, 2, MERGE_AT - 1, MERGE_AT])
def test_a_prefix_is_verified_in_one_pass_and_merged_only_past_a_bound(tmp_path: Path, count: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Verifying a recorded prefix hashes each byte once while it has fewer than MERGE_AT
    segments (kept as they are), twice when it merges them into one; an edit is found either way."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(b'{"id":"i-%03d"}\n' % i for i in range(64)))
    cuts = [15 * ((i + 1) * 64 // count) for i in range(count)]  # line boundaries (15 bytes a line)
    ckpt = Checkpoint.open(tmp_path / "s")
    reader = ReadCursor(ckpt, str(path), session=2, settings="", seekable=True, scattered=False, forced=False)
    hashed = 0
    real = hashlib.sha256

    class Counting:
        def __init__(self) -> None:
            self._h = real()

        def update(self, chunk: bytes) -> None:
            nonlocal hashed
            hashed += len(chunk)
            self._h.update(chunk)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    cursor = _segmented(path, cuts)
    monkeypatch.setattr(read_cursor.hashlib, "sha256", Counting)
    assert reader._verify(cursor)
    merged = count >= MERGE_AT
    assert hashed == cuts[-1] * (2 if merged else 1)
    assert len(cursor.segments) == (1 if merged else count)
    monkeypatch.setattr(read_cursor.hashlib, "sha256", real)
    edited = bytearray(path.read_bytes())
    edited[3] = ord("X")
    cursor = _segmented(path, cuts)
    path.write_bytes(bytes(edited))
    assert not reader._verify(cursor)
    ckpt.close()
