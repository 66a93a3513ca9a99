"""A catalog re-run against the emulator on 127.0.0.1: exactly the new and changed (item, analysis)
units are submitted (counted by the server), unchanged ones never; every line names its source
and fingerprint; a changed key's new line supersedes its old one; removed items vanish only on a
complete read of the run's catalog; an older state dir adopts its items' fingerprints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from catalog_support import image, to_layout_before_catalog
from run_support import config, current, emulator
from support import read_results, write_manifest

from pipeline.core.exit_codes import ExitCode
from pipeline.core.results import RunFiles
from pipeline.emulator import RunningEmulator, start_emulator
from pipeline.engine.runner import RunRequest, RunResult, run

KEY = "engine-test-key"

pytestmark = pytest.mark.usefixtures("no_pipeline_env")


def sent(emu: RunningEmulator) -> int:
    """Creates and detections the emulator accepted so far."""
    return sum(emu.counters()["submissions"].values())


async def session(tmp: Path, emu: RunningEmulator, manifest: Path | str, **request: Any) -> tuple[RunResult, int]:
    """One run of `manifest` into tmp's results file; (its result, what the server accepted meanwhile)."""
    before = sent(emu)
    result = await run(RunRequest(manifest=str(manifest), files=RunFiles(tmp / "results.jsonl", tmp / "state"),
                                  api_key=KEY, config=request.pop("cfg", None) or config(emu), **request))
    return result, sent(emu) - before


async def test_exactly_the_new_and_changed_units_are_submitted(tmp_path: Path) -> None:
    """Night 2 changes one item's URL, one's parameters, one's service id, removes one and adds
    one: the server accepts exactly 4 creates (3 changed, 1 new), the summary counts them, the
    current lines name the new sources, and the old lines stay in the file, superseded."""
    night1 = [image(i) for i in range(6)]
    manifest = write_manifest(tmp_path / "m.jsonl", night1)
    async with start_emulator(emulator()) as emu:
        first, n1 = await session(tmp_path, emu, manifest)
        assert (first.exit_code, n1) == (ExitCode.OK, 6)
        assert first.summary["catalog"] == {"new": 6, "changed": 0, "unchanged": 0, "vanished": 0,
                                            "decided_vanished": True, "session": 1}
        night2 = [image(0, url="https://example.com/CHANGED.jpg"), image(1, parameters={"enable_semantic": True}),
                  image(2, service_id="ops-image-analyze-vlm-001"), image(3), image(4), image(9)]  # 5 removed
        write_manifest(manifest, night2)
        second, n2 = await session(tmp_path, emu, manifest)
        again, n3 = await session(tmp_path, emu, manifest)
    assert n2 == 4 and second.exit_code == ExitCode.OK, second.summary
    catalog = second.summary["catalog"]
    assert (catalog["new"], catalog["changed"], catalog["unchanged"], catalog["vanished"]) == (1, 3, 2, 1)
    assert n3 == 0 and (again.summary["catalog"]["unchanged"], again.summary["catalog"]["vanished"]) == (6, 0)
    lines = current(tmp_path)
    assert sorted(lines) == sorted((f"img-{i}", "image_analyze") for i in (0, 1, 2, 3, 4, 9))
    assert lines[("img-0", "image_analyze")]["source"] == "https://example.com/CHANGED.jpg"
    assert "CHANGED.jpg" in json.dumps(lines[("img-0", "image_analyze")]["data"])
    assert lines[("img-2", "image_analyze")]["service_id"] == "ops-image-analyze-vlm-001"
    assert all(line["fingerprint"] and line["source"] for line in lines.values())
    every = read_results(tmp_path / "results.jsonl")
    assert len(every) == 6 + 4  # append-only: night 1's six lines, then the four of night 2
    assert second.summary["succeeded"] == 6  # the current view: the vanished one is out of it
    # The Parquet export is the same current view, read back by a real engine.
    import duckdb

    from pipeline.cli.main import main
    target = tmp_path / "current.parquet"
    assert main(["export", "--format", "parquet", "--state-dir", str(tmp_path / "state"), "--out", str(target)]) == 0
    rows = duckdb.sql(f"SELECT id, source, fingerprint FROM '{target}' ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["img-0", "img-1", "img-2", "img-3", "img-4", "img-9"]
    assert dict((r[0], r[1]) for r in rows)["img-0"] == "https://example.com/CHANGED.jpg"
    assert {r[2] for r in rows} == {line["fingerprint"] for line in lines.values()}


async def test_a_changed_parent_runs_its_chained_child_again(tmp_path: Path) -> None:
    """A segmentation whose output changes is a changed parent: it and the summarization after it
    are both sent again (2 creates), with the new segmentation's chunks."""
    def video(output: str) -> dict[str, Any]:
        return {"id": "v1", "oss": "oss://media/v1.mp4",
                "analyses": [{"name": "seg", "capability": "video_segmentation", "output": output},
                             {"name": "sum", "capability": "video_summarization", "after": "seg",
                              "output": "oss://media/sum/"}]}
    manifest = write_manifest(tmp_path / "m.jsonl", [video("oss://media/seg/")])
    async with start_emulator(emulator()) as emu:
        _, n1 = await session(tmp_path, emu, manifest)
        write_manifest(manifest, [video("oss://media/seg2/")])
        second, n2 = await session(tmp_path, emu, manifest)
        matched = emu.counters()["chained_chunks_matched"]
    assert (n1, n2) == (2, 2)
    assert second.summary["catalog"]["changed"] == 2
    assert matched == 2  # each summarization got its own segmentation's chunks
    assert current(tmp_path)[("v1", "sum")]["status"] == "SUCCESS"


async def test_force_and_force_analysis(tmp_path: Path) -> None:
    """--force-analysis NAME sends only that analysis of every item again; --force sends all."""
    item = {"id": "a", "url": "https://example.com/a.jpg", "analyses": ["image_analyze", "object_detection"]}
    manifest = write_manifest(tmp_path / "m.jsonl", [item])
    async with start_emulator(emulator()) as emu:
        _, n1 = await session(tmp_path, emu, manifest)
        _, n2 = await session(tmp_path, emu, manifest, force_analyses=("object_detection",))
        forced, n3 = await session(tmp_path, emu, manifest, force=True)
    assert (n1, n2, n3) == (2, 1, 2)
    assert forced.summary["catalog"]["changed"] == 2
    assert len(read_results(tmp_path / "results.jsonl")) == 5 and len(current(tmp_path)) == 2


async def test_a_replaced_local_file_is_sent_again(tmp_path: Path) -> None:
    """A local file rewritten with new bytes (size and mtime change) is a changed item; an
    untouched one is not sent again."""
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.png", "b.png"):
        (media / name).write_bytes(b"\x89PNG" + name.encode())
    rows = [{"id": n, "capability": "object_detection", "path": str(media / n)} for n in ("a.png", "b.png")]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    async with start_emulator(emulator()) as emu:
        _, n1 = await session(tmp_path, emu, manifest)
        (media / "a.png").write_bytes(b"\x89PNG new bytes, longer")
        second, n2 = await session(tmp_path, emu, manifest)
    assert (n1, n2) == (2, 1)
    assert (second.summary["catalog"]["changed"], second.summary["catalog"]["unchanged"]) == (1, 1)


async def test_append_and_a_stopped_run_decide_nothing_vanished(tmp_path: Path) -> None:
    """--append of a day's file and a run stopped part way (a time limit) mark nothing vanished;
    the next complete run of the catalog does."""
    catalog = write_manifest(tmp_path / "catalog.jsonl", [image(i) for i in range(3)])
    day = write_manifest(tmp_path / "day.jsonl", [image(7)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, catalog)
        appended, n = await session(tmp_path, emu, day, append=True)
        assert (n, appended.summary["catalog"]["vanished"], appended.summary["catalog"]["decided_vanished"]) == (
            1, 0, False)
        write_manifest(catalog, [image(i) for i in range(2)] + [image(10 + i) for i in range(40)])
        stopped, _ = await session(tmp_path, emu, catalog, cfg=config(emu, max_duration=0.05))
        assert stopped.stop is not None and stopped.summary["catalog"]["vanished"] == 0
        final, _ = await session(tmp_path, emu, catalog)
    assert final.exit_code == ExitCode.OK
    assert final.summary["catalog"]["vanished"] == 2  # img-2 and the appended img-7
    assert ("img-2", "image_analyze") not in current(tmp_path)


async def test_an_older_state_dir_adopts_fingerprints_and_runs_nothing_again(tmp_path: Path, caplog) -> None:
    """A state dir from before fingerprints (its jobs table without the catalog columns, its
    lines without source and fingerprint) upgrades on its first run: nothing is sent again, the
    upgrade is logged once, and a change made after it is then seen."""
    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        to_layout_before_catalog(tmp_path / "state")
        with caplog.at_level(logging.INFO, logger="pipeline.run"):
            upgraded, n1 = await session(tmp_path, emu, manifest)
            again, n2 = await session(tmp_path, emu, manifest)
        write_manifest(manifest, [image(0, url="https://example.com/new.jpg"), image(1), image(2)])
        changed, n3 = await session(tmp_path, emu, manifest)
    assert (n1, n2, n3) == (0, 0, 1)
    assert upgraded.summary["catalog"]["unchanged"] == 3 and again.summary["catalog"]["unchanged"] == 3
    assert sum("upgraded for catalogs" in r.getMessage() for r in caplog.records) == 1
    assert changed.summary["catalog"]["changed"] == 1


async def test_a_folder_is_a_catalog(tmp_path: Path) -> None:
    """`run DIR`: each file of a kind with analyses is an item whose id is its relative path; a
    replaced file and a new one are sent on the next night, a removed one vanishes, an unchanged
    one is never sent again; other kinds are counted as skipped."""
    from pipeline.engine.item_source import Listing

    media = tmp_path / "media"
    (media / "2024").mkdir(parents=True)
    for name in ("a.png", "b.png", "2024/c.jpg"):
        (media / name).write_bytes(b"\x89PNG " + name.encode())
    (media / "notes.txt").write_text("not media")
    cfg_args = {"analyses_by_type": {"image": ["object_detection"]}}
    async with start_emulator(emulator()) as emu:
        cfg = config(emu, **cfg_args)
        first, n1 = await session(tmp_path, emu, media, cfg=cfg)
        (media / "a.png").write_bytes(b"\x89PNG replaced, longer")
        (media / "b.png").unlink()
        (media / "2024" / "d.png").write_bytes(b"\x89PNG d")
        second, n2 = await session(tmp_path, emu, media, cfg=cfg, listing=Listing(exclude=("tmp/",)))
    assert (first.exit_code, n1) == (ExitCode.OK, 3)
    assert first.summary["catalog"]["listing"]["skipped_no_analyses"] == 1
    assert n2 == 2
    catalog = second.summary["catalog"]
    assert (catalog["new"], catalog["changed"], catalog["unchanged"], catalog["vanished"]) == (1, 1, 1, 1)
    assert sorted(i for i, _ in current(tmp_path)) == ["2024/c.jpg", "2024/d.png", "a.png"]
    assert current(tmp_path)[("a.png", "object_detection")]["source"] == str(media / "a.png")


async def test_an_oss_prefix_is_a_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run oss://BUCKET/PREFIX`: each object is an item keyed by its key; an object rewritten
    (new ETag) is sent again, the others are not; a bucket that does not exist stops the run
    before anything is written (exit 2)."""
    from pipeline.config.sections import UploadConfig
    from pipeline.core.errors import ManifestError
    from pipeline.emulator.oss import OssSettings
    from pipeline.emulator.oss_server import start_oss

    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "cat-key")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "cat-secret")
    async with start_emulator(emulator()) as emu, start_oss(OssSettings(key_id="cat-key", key_secret="cat-secret",
                                                                       buckets=("media",))) as oss:
        oss.store.fill("media", [f"v/{n}.mp4" for n in range(3)], b"video bytes")
        cfg = config(emu, analyses_by_type={"video": ["video_snapshot"]}, upload=UploadConfig(endpoint=oss.url))
        first, n1 = await session(tmp_path, emu, "oss://media/v/", cfg=cfg)
        oss.store.fill("media", ["v/1.mp4"], b"new video bytes")
        second, n2 = await session(tmp_path, emu, "oss://media/v/", cfg=cfg)
        with pytest.raises(ManifestError, match="does not exist"):
            await session(tmp_path / "other", emu, "oss://nosuchbucket/v/", cfg=cfg)
    assert (first.exit_code, n1, n2) == (ExitCode.OK, 3, 1), first.summary
    assert second.summary["catalog"]["changed"] == 1 and second.summary["catalog"]["unchanged"] == 2
    assert current(tmp_path)[("v/1.mp4", "video_snapshot")]["source"] == "oss://media/v/1.mp4"
    assert not (tmp_path / "other").exists()


async def test_status_and_the_metrics_file_show_the_last_delta(tmp_path: Path) -> None:
    """`status` shows the catalog counts of the last complete read, and the metrics textfile has
    one catalog_items gauge per kind."""
    from pipeline.cli.status import format_status, status
    from pipeline.config.load import Config
    from pipeline.observe.metrics import write_textfile

    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        write_manifest(manifest, [image(0), image(1, url="https://example.com/x.jpg")])
        second, _ = await session(tmp_path, emu, manifest)
    _, report = status([tmp_path / "state"], Config())
    text = format_status(report)
    assert "new 0, changed 1, unchanged 1, vanished 1" in text
    metrics = tmp_path / "metrics.prom"
    write_textfile(metrics, second.summary, exit_code=0, finished=True)
    gauges = metrics.read_text()
    for kind, n in (("new", 0), ("changed", 1), ("unchanged", 1), ("vanished", 1)):
        assert f'catalog_items{{kind="{kind}"}} {float(n)}' in gauges


async def test_export_writes_the_current_view_and_the_delta(tmp_path: Path) -> None:
    """`export` writes one line per live (item, analysis), the changed key's new line only (never
    its superseded one) and no vanished key; `--by-item` leaves them out too; `export --changes`
    writes the last run's new and changed lines and a vanished record per removed key."""
    from support import cli

    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(3)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        write_manifest(manifest, [image(0), image(1, url="https://example.com/new1.jpg"), image(5)])
        await session(tmp_path, emu, manifest)
    state = str(tmp_path / "state")

    def export(*flags: str) -> list[dict[str, Any]]:
        done = cli(["export", "--state-dir", state, *flags])
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    flat = export()
    assert [(line["id"], line["source"]) for line in flat] == [
        ("img-0", "https://example.com/p0.jpg"), ("img-1", "https://example.com/new1.jpg"),
        ("img-5", "https://example.com/p5.jpg")]
    assert [item["id"] for item in export("--by-item")] == ["img-0", "img-1", "img-5"]
    delta = export("--changes")
    assert [(r["id"], r.get("source"), r.get("vanished")) for r in delta] == [
        ("img-1", "https://example.com/new1.jpg", None), ("img-5", "https://example.com/p5.jpg", None),
        ("img-2", None, True)]
    assert len(export("--changes", "--since-run", "0")) == 3 + 1  # every current line, and the vanished one


async def test_validate_with_a_state_dir_counts_the_delta_and_sends_nothing(tmp_path: Path) -> None:
    """`validate SOURCE --state-dir DIR` gives the counts the next run will find and the cost of
    sending the new and changed units, without a request; a folder validates the same way."""
    from support import cli

    manifest = write_manifest(tmp_path / "m.jsonl", [image(i) for i in range(4)])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, manifest)
        write_manifest(manifest, [image(0), image(1, parameters={"enable_semantic": True}), image(2), image(8),
                                  image(9)])
        before = emu.counters()["requests_total"]
        done = cli(["validate", str(manifest), "--state-dir", str(tmp_path / "state"), "--json"])
        assert emu.counters()["requests_total"] == before
        run_after, n = await session(tmp_path, emu, manifest)
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    expected = {k: run_after.summary["catalog"][k] for k in ("new", "changed", "unchanged", "vanished")}
    assert {k: report[k] for k in expected} == expected == {"new": 2, "changed": 1, "unchanged": 2, "vanished": 1}
    assert report["to_send"] == n == 3 and 0 < report["estimated_cost"] <= report["estimated_cost_bound"]
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"jpeg")
    listed = cli(["validate", str(folder), "--analyses", "object_detection", "--json"])
    assert listed.returncode == 0 and json.loads(listed.stdout)["new"] == 1, listed.stderr


async def test_the_catalog_read_again_after_an_append_keeps_its_own_items(tmp_path: Path) -> None:
    """A catalog, then a day's file joined with --append that changes one of its items, then the
    catalog again: the catalog's item is not taken for vanished (the day's read marked it found,
    so the catalog's unchanged part is read again, not skipped); it is sent once more with the
    catalog's source, as `validate --state-dir` predicts, and stays in the current view."""
    catalog = write_manifest(tmp_path / "catalog.jsonl", [image(0), image(1)])
    day = write_manifest(tmp_path / "day.jsonl", [image(0, url="https://example.com/p0-v2.jpg")])
    async with start_emulator(emulator()) as emu:
        await session(tmp_path, emu, catalog)
        _, n = await session(tmp_path, emu, day, append=True)
        assert n == 1
        again, n = await session(tmp_path, emu, catalog)
    assert again.exit_code == ExitCode.OK and n == 1
    assert again.summary["catalog"]["vanished"] == 0 and again.summary["catalog"]["changed"] == 1
    lines = current(tmp_path)
    assert {("img-0", "image_analyze"), ("img-1", "image_analyze")} <= set(lines)
    assert lines[("img-0", "image_analyze")]["source"] == image(0)["url"]
