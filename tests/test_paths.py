"""`paths.check_targets`, the one rule for every option that writes: a table of paths and what the
rule says of each, and the signatures by which each option knows its own earlier output."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import demo, export, export_out
from pipeline.core.errors import UsageError
from pipeline.core.results import RunFiles
from pipeline.engine.preflight import REJECT_KEYS, SUMMARY_KEYS, check_paths
from pipeline.manifest.formats import Rejected
from pipeline.observe.metrics import textfile_ours, write_textfile
from pipeline.observe.report import summarize
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.lock import LOCK_NAME
from pipeline.state.paths import STATE_MARKERS, Kind, Target, check_targets


def _never(_: Path) -> str | None:
    return "holds something else: move it away"


def _setup(tmp: Path) -> None:
    (tmp / "m.jsonl").write_text('{"id": "a"}\n')
    (tmp / "file.txt").write_text("x\n")
    (tmp / "empty.txt").write_text("")
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    (tmp / "link").symlink_to("file.txt")
    (tmp / "dangling").symlink_to("gone.txt")
    os.link(tmp / "m.jsonl", tmp / "hardlink.jsonl")
    (tmp / "state" / "oss-upload" / "deeper").mkdir(parents=True)
    (tmp / "state" / "run.lock").write_text("")


# (name, target (path relative to tmp, kind, parents, ours), part of the refusal or None when accepted)
CASES: list[tuple[str, tuple[str, Kind, bool, Callable[[Path], str | None] | None], str | None]] = [
    ("a new file", ("new.txt", Kind.FILE, False, _never), None),
    ("an existing file, no signature asked", ("file.txt", Kind.FILE, False, None), None),
    ("an empty file is always replaceable", ("empty.txt", Kind.FILE, False, _never), None),
    ("a file holding something else", ("file.txt", Kind.FILE, False, _never), "holds something else"),
    ("a directory for a file", ("dir", Kind.FILE, False, None), "is a directory, not a regular file"),
    ("a named pipe", ("fifo", Kind.FILE, False, None), "is a named pipe, not a regular file"),
    ("a file for a directory", ("file.txt", Kind.DIR, True, None), "is a regular file, not a directory"),
    ("an empty directory", ("dir", Kind.DIR, True, _never), None),
    ("a symbolic link", ("link", Kind.FILE, False, None), "is a symbolic link (to file.txt)"),
    ("a dangling symbolic link", ("dangling", Kind.FILE, False, None), "is a symbolic link (to gone.txt)"),
    ("the manifest", ("m.jsonl", Kind.FILE, False, None), "is the manifest"),
    ("another spelling of the manifest", ("dir/../m.jsonl", Kind.FILE, False, None), "is the manifest"),
    ("a hard link to the manifest", ("hardlink.jsonl", Kind.FILE, False, None), "is the manifest"),
    ("a directory holding the manifest", (".", Kind.DIR, True, None), "holds the manifest"),
    ("a file in a state dir", ("state/x.prom", Kind.FILE, False, None), "is in the state dir"),
    ("a file one level down a state dir", ("state/oss-upload/x", Kind.FILE, False, None), "is in the state dir"),
    ("three levels down: past the bound", ("state/oss-upload/deeper/x", Kind.FILE, False, None), None),
    ("a missing parent, not created", ("missing/x.txt", Kind.FILE, False, None), "does not exist; create it first"),
    ("a missing parent, created", ("missing/x.txt", Kind.FILE, True, None), None),
    ("missing parents, created", ("missing/more/x.txt", Kind.FILE, True, None), None),
    ("under a regular file", ("file.txt/x.txt", Kind.FILE, False, None), "cannot create files under"),
    ("deep under a regular file", ("file.txt/a/x.txt", Kind.FILE, True, None), "cannot create files under"),
]


@pytest.mark.parametrize(("target", "refusal"), [pytest.param(t, r, id=n) for n, t, r in CASES])
def test_the_rule(tmp_path: Path, target: tuple[str, Kind, bool, Callable[[Path], str | None] | None],
                  refusal: str | None) -> None:
    """Each kind of path is accepted or refused as the table says, the refusal naming the option
    and the path, and the check creates nothing."""
    _setup(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    relative, kind, parents, ours = target
    path = tmp_path / relative

    def run() -> None:
        check_targets([Target("--opt", path, kind, parents, ours)],
                      inputs={"the manifest": tmp_path / "m.jsonl", "no config": None})

    if refusal is None:
        run()
    else:
        with pytest.raises(UsageError) as caught:
            run()
        assert str(caught.value).startswith(f"--opt {path} ") and refusal in str(caught.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_socket_is_refused(tmp_path: Path) -> None:
    """A Unix socket is not a file an option may write."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(UsageError, match="is a socket, not a regular file"):
            check_targets([Target("--opt", path)])


def test_two_targets_on_one_path_are_refused_naming_both(tmp_path: Path) -> None:
    """Two options of one command may not write the same path, even spelled differently and absent."""
    with pytest.raises(UsageError, match=r"^--a \S+ is also --b: give each its own path$"):
        check_targets([Target("--a", tmp_path / "x"), Target("--b", tmp_path / "sub" / ".." / "x", parents=True)])


def test_a_run_creates_the_directories_of_its_files(tmp_path: Path) -> None:
    """A run's --out and state dir may be in directories that do not exist yet (the run makes them),
    and the check itself creates nothing."""
    check_paths(str(tmp_path / "m.jsonl"), RunFiles.for_results(tmp_path / "new" / "dir" / "r.jsonl"))
    assert list(tmp_path.iterdir()) == []


def test_results_inside_the_state_dir_are_refused(tmp_path: Path) -> None:
    """--out inside the run's own state dir is refused, even before the state dir exists."""
    with pytest.raises(UsageError, match=r"^--out \S+ is in the state dir"):
        check_paths("-", RunFiles(tmp_path / "s" / "r.jsonl", tmp_path / "s"))


# ---- what each option's own output looks like ------------------------------------------------
def test_the_signatures_match_what_the_writers_write(tmp_path: Path) -> None:
    """The keys a run knows its rejects and summary files by, and an export its own lines by, are
    the keys their writers write; a state dir is known by the checkpoint's and the lock's names."""
    assert set(Rejected(line=3, reason="bad", id="x").to_dict()) == REJECT_KEYS
    assert set(summarize({}, prices={}, elapsed=1.0, outcome="completed")) >= SUMMARY_KEYS
    line = json.loads(export._encode("a", [("ocr", {"status": "SUCCESS", "meta": None})]))
    assert set(line) == export_out.EXPORT_KEYS
    assert set(STATE_MARKERS) == {Checkpoint.DB_NAME, LOCK_NAME}


def test_the_metrics_textfile_replaces_only_its_own(tmp_path: Path) -> None:
    """A textfile this pipeline wrote is its own; another exporter's textfile, results, a config or
    binary bytes are not."""
    ours = tmp_path / "pipeline.prom"
    write_textfile(ours, {"capabilities": {}}, exit_code=0, finished=True)
    assert textfile_ours(ours) is None
    for name, content in [("node.prom", b"# HELP node_x x\n# TYPE node_x gauge\nnode_x 1\n"),
                          ("r.jsonl", b'{"id": "a"}\n'), ("cfg.yaml", b"qps_headroom: 0.9\n"), ("bin", b"\xff\xfe")]:
        (tmp_path / name).write_bytes(content)
        assert "is not a metrics textfile this pipeline wrote" in (textfile_ours(tmp_path / name) or ""), name


def test_demo_keep_never_writes_into_a_directory_it_did_not_make(tmp_path: Path) -> None:
    """`demo --keep --out-dir DIR` wrote its marker and runs into any directory; now a directory
    with files the demo did not write is refused with --keep too, and left as it was."""
    (tmp_path / "notes.txt").write_text("keep me")
    problem = demo.prepare_out_dir(tmp_path, keep=True)
    assert problem is not None and "holds files the demo did not write" in problem
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
