"""A local directory as a catalog source: a real tree in tmp_path walked in string order, streamed,
with hidden files, symbolic links, unreadable subtrees and files that vanish handled as documented."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline.core.errors import ManifestError
from pipeline.core.job import Job
from pipeline.manifest.analyses import validate_record
from pipeline.manifest.folder import walk_folder
from pipeline.manifest.formats import Rejected
from pipeline.manifest.listed import Listed, ListingCounts, Selection

IMAGES = Selection(analyses_by_type={"image": ["image_analyze"], "video": ["video_snapshot"]})


def tree(root: Path, files: Iterable[str]) -> Path:
    """Create each relative file (parents too) holding its own name."""
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def walk(root: Path, selection: Selection = IMAGES, **kwargs: object) -> tuple[list[Listed | Rejected], ListingCounts]:
    counts = selection.new_counts()
    return list(walk_folder(root, selection, counts=counts, **kwargs)), counts  # type: ignore[arg-type]


def ids(entries: Iterable[Listed | Rejected]) -> list[str]:
    return [e.id for e in entries if isinstance(e, Listed)]


def test_ids_come_in_string_order_with_their_stamps(tmp_path: Path) -> None:
    """Ids are relative POSIX paths in code point order (a.jpg before a/b.jpg, as the strings sort),
    the same on every walk; each record names the absolute path and carries its size and mtime."""
    files = ["b.jpg", "a/z.jpg", "a.jpg", "a-b.jpg", "a0.jpg", "a/b/c.jpg", "A.jpg", "é.jpg", "z/y/x/w.mp4"]
    root = tree(tmp_path / "media", files)
    entries, counts = walk(root)
    assert ids(entries) == sorted(files) == ids(walk(root)[0])
    first = entries[0]
    assert isinstance(first, Listed)
    path = root / first.id
    assert first.record == (1, {"id": "A.jpg", "path": str(path), "analyses": ["image_analyze"]})
    info = path.stat()
    assert (first.stamp.source, first.stamp.size, first.stamp.mtime_ns) == (str(path), info.st_size, info.st_mtime_ns)
    assert [e.line for e in entries] == list(range(1, len(files) + 1))
    video = next(e for e in entries if isinstance(e, Listed) and e.id == "z/y/x/w.mp4")
    assert video.kind == "video" and video.item["analyses"] == ["video_snapshot"]
    assert counts.complete and counts.listed == counts.yielded == len(files)


def test_each_record_validates_as_a_manifest_line(tmp_path: Path) -> None:
    """A listed record goes through validate_record as a manifest line does: one Job per analysis,
    its id the relative path and its source the absolute path."""
    root = tree(tmp_path / "m", ["shots/one.png"])
    selection = Selection(analyses_by_type={"image": ["image_analyze", {"capability": "object_detection",
                                                                        "name": "faces"}]})
    [entry], _ = walk(root, selection)
    assert isinstance(entry, Listed)
    jobs = validate_record(entry.item, entry.line)
    assert isinstance(jobs, list) and all(isinstance(j, Job) for j in jobs)
    assert [(j.id, j.analysis, j.source_kind, j.source) for j in jobs] == [
        ("shots/one.png", "image_analyze", "path", str(root / "shots/one.png")),
        ("shots/one.png", "faces", "path", str(root / "shots/one.png"))]


def test_hidden_files_and_directories_are_skipped(tmp_path: Path) -> None:
    """Names starting with '.' are skipped, a hidden directory with everything under it, and counted."""
    root = tree(tmp_path / "m", ["a.jpg", ".b.jpg", ".cache/c.jpg", ".cache/d/e.jpg", "sub/.f.jpg", "sub/g.jpg"])
    entries, counts = walk(root)
    assert ids(entries) == ["a.jpg", "sub/g.jpg"]
    assert counts.hidden == 3 and counts.complete


def test_symbolic_links_are_not_followed_unless_asked(tmp_path: Path) -> None:
    """By default a link (to a file or a directory) is skipped and counted; with follow_symlinks a
    link to a file is listed under its own path and a link to a directory is walked."""
    outside = tree(tmp_path / "outside", ["o1.jpg", "deep/o2.jpg"])
    root = tree(tmp_path / "m", ["real.jpg"])
    (root / "file-link.jpg").symlink_to(outside / "o1.jpg")
    (root / "dir-link").symlink_to(outside, target_is_directory=True)
    entries, counts = walk(root)
    assert ids(entries) == ["real.jpg"] and counts.symlinks == 2
    entries, counts = walk(root, follow_symlinks=True)
    assert ids(entries) == ["dir-link/deep/o2.jpg", "dir-link/o1.jpg", "file-link.jpg", "real.jpg"]
    linked = next(e for e in entries if isinstance(e, Listed) and e.id == "file-link.jpg")
    assert linked.item["path"] == str(root / "file-link.jpg")  # the link's path, not its target's
    assert linked.stamp.size == (outside / "o1.jpg").stat().st_size  # the target's bytes
    assert counts.symlinks == 0 and counts.complete


def test_a_followed_link_loop_is_walked_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A followed link back to a directory above it is skipped with a warning, and the walk ends;
    a dangling link is counted and named unreadable."""
    root = tree(tmp_path / "m", ["a/b/c.jpg"])
    (root / "a/b/up").symlink_to(root / "a", target_is_directory=True)
    (root / "a/dangling.jpg").symlink_to(root / "nowhere.jpg")
    with caplog.at_level(logging.WARNING, logger="pipeline.listing"):
        entries, counts = walk(root, follow_symlinks=True)
    assert ids(entries) == ["a/b/c.jpg"]
    assert (counts.loops, counts.broken_links, counts.complete) == (1, 1, True)
    assert counts.unreadable == ["a/dangling.jpg"]
    assert sum("link back to a directory above it" in r.getMessage() for r in caplog.records) == 1


def test_a_directory_that_is_a_file_or_missing_is_a_clear_error(tmp_path: Path) -> None:
    """A file given as the directory, or a path that does not exist, raises ManifestError at the call."""
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(ManifestError, match="is a file, not a directory"):
        walk_folder(tmp_path / "list.txt", IMAGES)
    with pytest.raises(ManifestError, match="does not exist"):
        walk_folder(tmp_path / "nope", IMAGES)


def test_a_file_deleted_while_the_walk_runs_is_not_listed(tmp_path: Path) -> None:
    """A file removed after its directory was read but before the walk reached it is counted as
    vanished, not yielded; one removed after it was yielded fails validation as a missing file."""
    root = tree(tmp_path / "m", ["a.jpg", "b.jpg", "c.jpg"])
    counts = IMAGES.new_counts()
    walker = walk_folder(root, IMAGES, counts=counts)
    first = next(walker)  # the directory is read now: b.jpg is among its entries
    (root / "b.jpg").unlink()
    rest = list(walker)
    assert ids([first, *rest]) == ["a.jpg", "c.jpg"]
    assert counts.vanished == 1 and counts.complete
    assert isinstance(first, Listed)
    (root / "a.jpg").unlink()
    rejected = validate_record(first.item, first.line)
    assert isinstance(rejected, Rejected) and "no such file" in rejected.reason


def test_kinds_without_analyses_are_skipped_not_rejected(tmp_path: Path) -> None:
    """Files of a kind the mapping gives no analyses, or of no known kind, are counted per kind."""
    root = tree(tmp_path / "m", ["a.jpg", "b.MP4", "c.mp3", "d.txt", "e", "f.PNG"])
    entries, counts = walk(root, Selection(analyses_by_type={"image": ["image_analyze"]}))
    assert ids(entries) == ["a.jpg", "f.PNG"]
    assert counts.no_analyses == {"video": 1, "audio": 1, "other": 2} and counts.skipped == 4
    assert not any(isinstance(e, Rejected) for e in entries)


def test_run_wide_analyses_go_to_the_kinds_they_read(tmp_path: Path) -> None:
    """--analyses on a listed source give each file the analyses that read its kind
    (audio_asr reads audio and video); a file none of them reads is skipped."""
    root = tree(tmp_path / "m", ["a.jpg", "b.mp4", "c.wav", "d.gif"])
    entries, counts = walk(root, Selection(analyses=["image_analyze", "Transcribe Audio/Video"]))
    assert [(e.id, e.item["analyses"]) for e in entries if isinstance(e, Listed)] == [
        ("a.jpg", ["image_analyze"]), ("b.mp4", ["audio_asr"]), ("c.wav", ["audio_asr"])]
    assert counts.no_analyses == {"other": 1}


def test_include_and_exclude_filter_and_count_each_pattern(tmp_path: Path) -> None:
    """--include/--exclude filter on the id; each pattern's hits are counted, so one that matched
    nothing can be reported."""
    root = tree(tmp_path / "m", ["2024/a.jpg", "2024/raw/b.jpg", "2025/c.jpg", "2025/d.png", "tmp/e.jpg"])
    selection = Selection(analyses_by_type={"image": ["image_analyze"]}, include=["*.jpg", "*.jpeg"],
                          exclude=["tmp/", "raw/*.jpg"])
    entries, counts = walk(root, selection)
    assert ids(entries) == ["2024/a.jpg", "2025/c.jpg"]
    assert counts.pattern_hits == {"*.jpg": 4, "*.jpeg": 0, "tmp/": 1, "raw/*.jpg": 1}
    assert counts.unmatched_patterns() == ["*.jpeg"] and counts.excluded == 3


def test_patterns_that_match_nothing_leave_an_empty_complete_listing(tmp_path: Path) -> None:
    """An include that matches no file yields nothing, says so in its count, and the listing is complete."""
    root = tree(tmp_path / "m", ["a.jpg"])
    entries, counts = walk(root, Selection(analyses_by_type={"image": ["image_analyze"]}, include=["*.JPG"]))
    assert entries == [] and counts.unmatched_patterns() == ["*.JPG"] and counts.complete


def test_a_file_name_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    """A name no UTF-8 result file could hold comes out as a Rejected saying to rename it."""
    root = tree(tmp_path / "m", ["good.jpg"])
    try:
        os.close(os.open(os.fsencode(root) + b"/bad\xff.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    entries, _ = walk(root)
    rejected = [e for e in entries if isinstance(e, Rejected)]
    assert ids(entries) == ["good.jpg"] and len(rejected) == 1 and "not valid UTF-8" in rejected[0].reason
    json.dumps(rejected[0].to_dict(), ensure_ascii=False).encode("utf-8")  # the rejects file can hold it


def test_two_sources_with_the_same_id_are_caught_by_the_readers_duplicate_check(tmp_path: Path) -> None:
    """Two listings yielding one id (two folders with the same relative file): the reader's
    duplicate-id check rejects the second, naming the id."""
    from pipeline.manifest.reader import _validated  # the reader's record loop, which the lead will call

    first = tree(tmp_path / "one", ["same.jpg"])
    second = tree(tmp_path / "two", ["same.jpg"])
    records = [e.record for root in (first, second) for e in walk(root)[0] if isinstance(e, Listed)]
    out = list(_validated(records, tmp_path, skip=None, expected_items=0, analyses=(),
                          checks={"max_body_bytes": 8 << 20, "check_files": True, "uploads": False, "outputs": None}))
    assert isinstance(out[0], Job) and isinstance(out[1], Rejected)
    assert "duplicate id 'same.jpg'" in out[1].reason


@pytest.mark.parametrize(("mapping", "message"), [
    ({"images": ["image_analyze"]}, "unknown media kind"),
    ({"image": ["video_snapshot"]}, "reads video, not image"),
    ({"image": "image_analyze"}, "must be a list"),
    ({"image": ["no_such_thing"]}, "unknown capability"),
    ({}, "no analyses for a listed source"),
])
def test_a_bad_analyses_mapping_is_refused_before_listing(mapping: dict[str, object], message: str) -> None:
    """analyses_by_type is checked when the selection is made: kinds, lists, capabilities and the kinds they read."""
    with pytest.raises(ManifestError, match=message):
        Selection(analyses_by_type=mapping)  # type: ignore[arg-type]


def test_an_unreadable_subtree_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory this user cannot read is skipped with one warning, named in the counts, and the
    rest is listed. (Root reads anything: there the next test runs the walk as nobody.)"""
    root = tree(tmp_path / "m", ["a.jpg", "locked/b.jpg", "locked/deeper/c.jpg", "z.jpg"])
    (root / "locked").chmod(0)
    try:
        if os.access(root / "locked", os.R_OK):
            pytest.skip("this user reads a directory chmod 0 (root): see the test run as nobody")
        with caplog.at_level(logging.WARNING, logger="pipeline.listing"):
            entries, counts = walk(root)
    finally:
        (root / "locked").chmod(0o755)
    assert ids(entries) == ["a.jpg", "z.jpg"] and counts.unreadable == ["locked/"]
    assert sum("cannot read this directory" in r.getMessage() for r in caplog.records) == 1


def _walk_as_nobody(root: Path) -> dict[str, object]:
    """Walk `root` in a forked child that has dropped to nobody (a fork, not a new interpreter: the
    interpreter lives under /root, which nobody cannot enter); its ids, counts and warnings."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            warnings: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("pipeline.listing").addHandler(handler)
            entries, counts = walk(root)
            report = {"ids": ids(entries), "unreadable": counts.unreadable, "complete": counts.complete,
                      "warnings": warnings}
            os.write(write_end, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child walking as nobody failed"
    result: dict[str, object] = json.loads(data)
    return result


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to become nobody")
def test_an_unreadable_subtree_is_skipped_when_walked_as_nobody() -> None:
    """Run as root, the walk goes to a child that drops to nobody, which cannot read a chmod 0
    directory: it is skipped, named once in a warning and in the counts, and the rest is listed."""
    top = Path(tempfile.mkdtemp(prefix="walk-as-nobody-"))  # not tmp_path: its parents are closed to nobody
    try:
        top.chmod(0o755)
        root = tree(top / "m", ["a.jpg", "locked/b.jpg", "locked/deeper/c.jpg", "open/d.jpg"])
        (root / "locked").chmod(0)
        report = _walk_as_nobody(root)
    finally:
        (top / "m" / "locked").chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)
    warnings = report.pop("warnings")
    assert report == {"ids": ["a.jpg", "open/d.jpg"], "unreadable": ["locked/"], "complete": True}
    assert isinstance(warnings, list) and len(warnings) == 1 and "cannot read this directory" in warnings[0]
