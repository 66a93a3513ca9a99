"""What a catalog run may take for vanished, against the emulator (and its OSS) on 127.0.0.1: a read
that yields nothing, a filtered run, rejected lines and files that cannot be stat()ed never
retire the results of items still there; a rejected entry is named as its source names it (a
manifest's line, a folder's path, an object key, a stream's item)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from run_support import config, current, emulator
from support import write_manifest
from vanish_support import KEY, folder, folder_config, image, session

from pipeline.config.load import Config
from pipeline.config.sections import UploadConfig
from pipeline.core.exit_codes import ExitCode
from pipeline.emulator import EmulatorSettings, RunningEmulator
from pipeline.emulator.oss_server import RunningOss
from pipeline.engine.item_source import ItemSource, Listing
from pipeline.engine.runner import RunResult
from pipeline.manifest.formats import Rejected

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


@pytest.fixture
def emu_settings() -> EmulatorSettings:
    """The engine tests' emulator (the run's key and time scale)."""
    return emulator()


def live(tmp: Path) -> set[str]:
    """The ids with a current line."""
    return {item_id for item_id, _ in current(tmp)}


def vanished(result: RunResult) -> tuple[int, bool]:
    return result.summary["catalog"]["vanished"], result.summary["catalog"]["decided_vanished"]


# ---- 1: a read that yields nothing decides nothing ----------------------------------------

async def test_an_emptied_folder_or_a_pattern_that_matches_nothing_vanishes_nothing(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A folder whose files are all gone (a failed mount), and an --include typo matching none of
    them, list zero items: exit 0, nothing vanished, a warning saying so (and naming the pattern);
    every earlier result stays in the current view."""
    media = folder(tmp_path / "media", ["a.png", "b.png"])
    cfg = folder_config(emu)
    await session(tmp_path, emu, media, cfg)
    with caplog.at_level(logging.WARNING):
        typo = await session(tmp_path, emu, media, cfg, listing=Listing(include=("*.JPG",)))
    messages = [r.getMessage() for r in caplog.records]
    assert typo.exit_code == ExitCode.OK and vanished(typo) == (0, False), typo.summary
    assert any("'*.JPG' matched nothing" in m for m in messages), messages
    assert any("the source listed no items: nothing is marked vanished" in m for m in messages), messages
    for name in ("a.png", "b.png"):
        (media / name).unlink()
    empty = await session(tmp_path, emu, media, cfg)
    assert empty.exit_code == ExitCode.OK and vanished(empty) == (0, False), empty.summary
    assert live(tmp_path) == {"a.png", "b.png"}


async def test_an_emptied_manifest_vanishes_nothing(tmp_path: Path, emu: RunningEmulator) -> None:
    """A manifest truncated to nothing keeps its exit code (1: an empty manifest) and marks nothing
    vanished: the earlier results stay current."""
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": f"i{n}", "capability": "image_analyze",
                                                      "url": f"https://example.com/{n}.jpg"} for n in range(2)])
    await session(tmp_path, emu, manifest, config(emu))
    manifest.write_text("")
    empty = await session(tmp_path, emu, manifest, config(emu))
    assert empty.exit_code == ExitCode.PARTIAL and vanished(empty) == (0, False), empty.summary
    assert live(tmp_path) == {"i0", "i1"}


async def test_an_emptied_oss_prefix_vanishes_nothing(tmp_path: Path, emu: RunningEmulator, oss: RunningOss) -> None:
    """A prefix with no objects left lists zero items: exit 0 and nothing vanished."""
    keys = ["v/a.mp4", "v/b.mp4"]
    oss.store.fill("media", keys, b"video")
    cfg = config(emu, analyses_by_type={"video": ["video_snapshot"]}, upload=UploadConfig(endpoint=oss.url))
    await session(tmp_path, emu, "oss://media/v/", cfg)
    for key in keys:
        oss.store.delete("media", key)
    empty = await session(tmp_path, emu, "oss://media/v/", cfg)
    assert empty.exit_code == ExitCode.OK and vanished(empty) == (0, False), empty.summary
    assert live(tmp_path) == set(keys)


# ---- 2: filtered out is not removed -------------------------------------------------------

async def test_a_filtered_run_vanishes_only_among_the_items_its_patterns_admit(
        tmp_path: Path, emu: RunningEmulator) -> None:
    """After an unfiltered night, a run with --include '2024/**' leaves the items outside 2024/ live
    and vanishes the 2024/ file that was removed; --exclude leaves the excluded item live too."""
    media = folder(tmp_path / "media", ["a.png", "b.png", "2024/c.png", "2024/d.png"])
    cfg = folder_config(emu)
    await session(tmp_path, emu, media, cfg)
    (media / "2024" / "d.png").unlink()
    narrowed = await session(tmp_path, emu, media, cfg, listing=Listing(include=("2024/**",)))
    assert narrowed.exit_code == ExitCode.OK and vanished(narrowed) == (1, True), narrowed.summary
    assert live(tmp_path) == {"a.png", "b.png", "2024/c.png"}
    excluded = await session(tmp_path, emu, media, cfg, listing=Listing(exclude=("a.png",)))
    assert vanished(excluded) == (0, True), excluded.summary
    assert live(tmp_path) == {"a.png", "b.png", "2024/c.png"}


# ---- 3: rejected and unreadable items are there ---------------------------------------------

async def test_a_rejected_line_keeps_its_items_last_result(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A line whose service id is invalid is rejected (exit 1) but its item is there: its last
    good line stays current, the removed item vanishes, and a warning says the rejected keep theirs."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(n) for n in range(3)])
    await session(tmp_path, emu, manifest, config(emu))
    write_manifest(manifest, [image(0), image(1, service_id="no such service!")])
    with caplog.at_level(logging.WARNING):
        second = await session(tmp_path, emu, manifest, config(emu))
    assert second.exit_code == ExitCode.PARTIAL and vanished(second) == (1, True), second.summary
    assert live(tmp_path) == {"img-0", "img-1"}
    assert any("keep their last results" in r.getMessage() for r in caplog.records)


async def test_a_line_without_a_readable_id_decides_nothing_vanished(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A line that is not JSON could be any item: the run marks nothing vanished (the removed item
    stays current until a clean run) and warns why."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(n) for n in range(3)])
    await session(tmp_path, emu, manifest, config(emu))
    manifest.write_text(json.dumps(image(0)) + "\n{not json\n")
    with caplog.at_level(logging.WARNING):
        second = await session(tmp_path, emu, manifest, config(emu))
    assert second.exit_code == ExitCode.PARTIAL and vanished(second) == (0, False), second.summary
    assert live(tmp_path) == {"img-0", "img-1", "img-2"}
    assert any("no readable id" in r.getMessage() for r in caplog.records)
    write_manifest(manifest, [image(0)])
    clean = await session(tmp_path, emu, manifest, config(emu))
    assert vanished(clean) == (2, True) and live(tmp_path) == {"img-0"}


class _Unstatable:
    """A directory entry whose stat() is refused (EACCES), as after a brief permissions change."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self._entry = entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._entry, name)

    def stat(self, **_: Any) -> os.stat_result:
        raise PermissionError(13, "Permission denied", self._entry.path)


async def test_a_file_that_cannot_be_stated_is_rejected_by_path_not_vanished(
        tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A file whose stat() is refused during the walk is rejected, named by its path in the folder
    (not "manifest line N"), and its last result stays current."""
    media = folder(tmp_path / "media", ["a.png", "sub/b.png"])
    cfg = folder_config(emu)
    await session(tmp_path, emu, media, cfg)
    real_scandir = os.scandir

    class Listing_:
        def __init__(self, path: Any) -> None:
            self._it = real_scandir(path)

        def __enter__(self) -> Iterator[Any]:
            return (_Unstatable(e) if e.name == "b.png" else e for e in self._it.__enter__())

        def __exit__(self, *exc: Any) -> None:
            self._it.__exit__(*exc)

    monkeypatch.setattr(os, "scandir", Listing_)
    with caplog.at_level(logging.WARNING):
        second = await session(tmp_path, emu, media, cfg)
    messages = [r.getMessage() for r in caplog.records]
    assert second.exit_code == ExitCode.PARTIAL and vanished(second) == (0, True), second.summary
    assert live(tmp_path) == {"a.png", "sub/b.png"}
    assert any(m.startswith("file sub/b.png rejected: cannot stat") for m in messages), messages
    assert not any("manifest line" in m for m in messages), messages


# ---- 5: how a rejected entry is named --------------------------------------------------------

@pytest.mark.parametrize(("location", "rejected", "named"), [
    ("{tmp}/m.jsonl", Rejected(3, "bad", "x"), "manifest line 3"),
    ("{tmp}", Rejected(3, "bad", "sub/b.png"), "file sub/b.png"),
    ("oss://media/v/", Rejected(3, "bad", "v/b.mp4"), "object v/b.mp4"),
    (None, Rejected(3, "bad", None), "item 3"),
])
def test_a_rejected_entry_is_named_as_its_source_names_it(
        tmp_path: Path, location: str | None, rejected: Rejected, named: str) -> None:
    """Manifests name a line, folders a relative path, OSS an object key, pipeline.stream an item."""
    source = ItemSource((location or "").format(tmp=tmp_path), Config(), records=[] if location is None else None)
    assert source.where(rejected) == named


async def test_a_rejected_stream_item_is_named_by_its_place_in_the_stream(
        tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pipeline.stream's second item, not a dict, is warned about as "item 2", not as a manifest line."""
    import pipeline

    monkeypatch.setenv("PIPELINE_TIME_SCALE", "10")
    cfg = {"qps_headroom": 0.9, "polling": {"first_delay": 1.0, "max_delay": 5.0}}
    with caplog.at_level(logging.WARNING):
        ids = [line.id async for line in pipeline.stream([image(0), "just a string"], out=tmp_path / "r.jsonl",
                                                         endpoint=emu.url, api_key=KEY, config=cfg)]
    messages = [r.getMessage() for r in caplog.records]
    assert ids == ["img-0"]
    assert any(m.startswith("item 2 rejected: items[1]") for m in messages), messages
    assert not any("manifest line" in m for m in messages), messages


# ---- the rule, as a table -------------------------------------------------------------------

@pytest.mark.parametrize(("read", "decides"), [
    (dict(complete=False, whole_catalog=True, unreadable=False, items=5, unidentified=0), False),
    (dict(complete=True, whole_catalog=False, unreadable=False, items=5, unidentified=0), False),
    (dict(complete=True, whole_catalog=True, unreadable=True, items=5, unidentified=0), False),
    (dict(complete=True, whole_catalog=True, unreadable=False, items=0, unidentified=0), False),
    (dict(complete=True, whole_catalog=True, unreadable=False, items=5, unidentified=1), False),
    (dict(complete=True, whole_catalog=True, unreadable=False, items=5, unidentified=0), True),
])
def test_vanish_rule(read: dict[str, Any], decides: bool) -> None:
    """Only a complete read of the whole catalog, every subtree read, with items and no line of
    unreadable id, decides vanished; each refusal but the first two says why."""
    from pipeline.engine.vanishing import vanish_rule  # here: the other tests also run on older trees

    rule = vanish_rule(**read)
    assert rule.decides is decides
    assert bool(rule.why) is (not decides and read["complete"] and read["whole_catalog"])
