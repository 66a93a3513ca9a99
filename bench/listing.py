"""Scenario: listing catalog sources, 1,000,000 objects from the emulator's OSS and a local
folder of 100,000 files.

The emulator runs as its own process with its OSS subset; its store is filled through
``POST /_emulator/oss/fill`` (1,000 folders of 1,000 small objects, in one request per folder:
no million PUTs). The lister (`bench.listing_io`) is another process, so its peak RSS
(VmHWM, read by itself at the end and sampled from /proc by `measure`) is its own: the
SDK's paginator, 1,000 keys a page, every object turned into a `Listed` item and dropped.
The folder is 100 directories of 1,000 empty files, walked by `walk_folder`, one stat per file;
then the same 100,000 files in one directory, the walk's worst case for memory.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .environment import PYTHON, REPO, child_env
from .figures import ScenarioResult
from .processes import measure, memory_mb

TITLE = "Listing catalog sources: 1,000,000 OSS objects, a 100,000-file folder"
RSS_TARGET_MB = 150
OBJECTS, QUICK_OBJECTS = 1_000_000, 20_000
FILES, QUICK_FILES = 100_000, 5_000
PER_FOLDER = 1000  # objects per fill request and files per directory
START_TIMEOUT = 30.0
POLL_BANNER_EVERY = 0.02
HTTP_TIMEOUT = 300.0


class OssEmulator:
    """``python -m pipeline emulator --oss-port 0`` with one bucket; ``with OssEmulator(dir) as emu``."""

    def __init__(self, workdir: Path, bucket: str) -> None:
        self.workdir, self.bucket = workdir, bucket
        self.key_id, self.secret = "bench-list", secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> OssEmulator:
        out_path = self.workdir / "emulator.stdout"
        with open(out_path, "wb") as out, open(self.workdir / "emulator.stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "pipeline", "emulator", "--port", "0", "--oss-port", "0", "--oss-key-id", self.key_id,
                 "--oss-key-secret", self.secret, "--oss-bucket", self.bucket],
                stdout=out, stderr=err, cwd=REPO, env=child_env())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in out_path.read_text().splitlines():
                if line.startswith("emulator OSS listening on "):
                    self.url = line.split()[4]
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(POLL_BANNER_EVERY)
        self.__exit__()
        raise RuntimeError(f"the emulator did not start: {(self.workdir / 'emulator.stderr').read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def fill(self, key: str, count: int) -> None:
        """``count`` objects named by ``key`` (holding ``{n}``), in one request."""
        body = json.dumps({"bucket": self.bucket, "key": key, "count": count, "size": 64}).encode()
        request = urllib.request.Request(f"{self.url}/_emulator/oss/fill", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
            assert json.loads(answer.read())["stored"] == count

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        memory = memory_mb(self.proc.pid)
        return memory[1] if memory else 0.0


def _measured(argv: list[str], workdir: Path, name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    run = measure(argv, workdir, name, timeout=1800, env=env)
    if run.exit_code != 0:
        raise RuntimeError(f"{name} failed (exit {run.exit_code}): {run.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads((workdir / f"{name}.stdout").read_text())
    figures.update(wall_s=round(run.wall, 2), cpu_s=round(run.cpu, 2), sampled_peak_rss_mb=round(run.peak_rss_mb, 1))
    return figures


def list_oss(objects: int, work: Path) -> dict[str, Any]:
    """Fill the emulator with `objects` (1,000 per folder) and list them all from another process."""
    with OssEmulator(work, "bench") as emu:
        started = time.perf_counter()
        for folder in range(-(-objects // PER_FOLDER)):
            emu.fill(f"catalog/{folder:04d}/{{n}}.jpg", min(PER_FOLDER, objects - folder * PER_FOLDER))
        fill_s = time.perf_counter() - started
        env = {"OSS_ACCESS_KEY_ID": emu.key_id, "OSS_ACCESS_KEY_SECRET": emu.secret}
        figures = _measured([PYTHON, "-m", "bench.listing_io", "oss", emu.url, "oss://bench/catalog/"], work,
                            "list-oss", env=env)
        figures.update(objects=objects, fill_s=round(fill_s, 2), emulator_peak_rss_mb=round(emu.peak_rss_mb(), 1))
    return figures


def walk_folder(files: int, work: Path, per_directory: int = PER_FOLDER) -> dict[str, Any]:
    """Make `files` empty files (`per_directory` to a directory) and walk them from another process."""
    root = work / f"folder-{per_directory}"
    started = time.perf_counter()
    for index in range(files):
        directory = root / f"d{index // per_directory:04d}"
        if index % per_directory == 0:
            directory.mkdir(parents=True)
        (directory / f"{index:07d}.jpg").touch()
    make_s = time.perf_counter() - started
    figures = _measured([PYTHON, "-m", "bench.listing_io", "folder", str(root)], work, f"walk-{per_directory}")
    figures.update(files=files, make_s=round(make_s, 2))
    return figures


def run(quick: bool = False) -> ScenarioResult:
    """Measure the scenario; `quick` is a tiny smoke variant."""
    objects, files = (QUICK_OBJECTS, QUICK_FILES) if quick else (OBJECTS, FILES)
    result = ScenarioResult("listing", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        oss = list_oss(objects, Path(tmp))
        folder = walk_folder(files, Path(tmp))
        flat = walk_folder(files, Path(tmp), per_directory=files)  # one directory: memory grows with its width
    for name, figures, count in (("OSS listing", oss, objects), ("folder walk", folder, files),
                                 ("flat folder walk", flat, files)):
        if figures["items"] != count or not figures["complete"]:
            raise RuntimeError(f"{name} listed {figures['items']} of {count} (complete: {figures['complete']})")
    result.add(f"OSS listing, {objects:,} objects: objects per second", oss["per_second"], unit="objects/s")
    result.add("OSS listing: lister peak RSS", max(oss["peak_rss_mb"], oss["sampled_peak_rss_mb"]), unit="MB",
               digits=1, target=("<=", RSS_TARGET_MB))
    result.add(f"folder walk, {files:,} files: files per second", folder["per_second"], unit="files/s")
    result.add("folder walk: walker peak RSS", max(folder["peak_rss_mb"], folder["sampled_peak_rss_mb"]), unit="MB",
               digits=1, target=("<=", RSS_TARGET_MB))
    result.add(f"flat folder walk, {files:,} files in one directory: walker peak RSS",
               max(flat["peak_rss_mb"], flat["sampled_peak_rss_mb"]), unit="MB", digits=1,
               target=("<=", RSS_TARGET_MB))
    result.raw = {"oss": oss, "folder": folder, "flat": flat, "per_folder": PER_FOLDER}
    return result


def notes(raw: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """The scenario's prose, every number taken from `raw`."""
    oss, folder = raw["oss"], raw["folder"]
    return [
        f"OSS: {oss['objects']:,} objects of 64 bytes in folders of {raw['per_folder']:,}, stored in the emulator "
        f"(its own process) in {oss['fill_s']:.1f} s through its fill route, then listed by the pipeline's "
        f"`list_oss` through the official SDK's paginator in {oss['pages']:,} pages of up to 1,000 keys: "
        f"{oss['seconds']:.1f} s of listing ({oss['cpu_s']:.1f} CPU s for the whole lister process, "
        f"{oss['wall_s']:.1f} s wall with start-up). The emulator's own peak RSS was "
        f"{oss['emulator_peak_rss_mb']:.0f} MB.",
        f"Folder: {folder['files']:,} empty files in directories of {raw['per_folder']:,}, walked by `walk_folder` "
        f"(one scandir per directory, one stat per file) in {folder['seconds']:.2f} s "
        f"({folder['wall_s']:.1f} s wall with start-up). The same number of files in ONE directory took "
        f"{raw['flat']['seconds']:.2f} s and a peak RSS of {raw['flat']['peak_rss_mb']:.1f} MB against "
        f"{folder['peak_rss_mb']:.1f} MB: the walk holds each directory's entries on the current path, so memory "
        "follows the widest directory, not the tree.",
    ]
