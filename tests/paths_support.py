"""A finished run's files and every path a writing option could be pointed at by mistake, for the
path-refusal tests: `make_template` runs the pipeline once, `fresh_world` copies it back to the
same place for each test (the state dir records absolute paths), `snapshot` tells any change."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from support import cli, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "paths-key-5d1e"
SCALE = 10.0
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE)}
#: No service listens here: a command refused as it should never gets as far as sending.
UNREACHABLE = "http://127.0.0.1:9"
#: Root could replace the real /dev/null or /dev/full if a check regressed: it gets its own device
#: nodes in the test's directory instead (the same major/minor numbers), which nothing can harm.
OWN_DEVICES = os.geteuid() == 0


@dataclass(frozen=True)
class World:
    """The files of one finished run, and the paths the tests point writing options at."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "m.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "cfg.yaml"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.root / "results.jsonl.state"

    @property
    def metrics(self) -> Path:
        return self.root / "pipeline.prom"

    def targets(self) -> dict[str, Path]:
        """Every path a writing option is pointed at, by name."""
        return {
            "results": self.results,
            "rejects": self.root / "results.rejects.jsonl",
            "summary": self.root / "results.summary.json",
            "state-dir": self.state_dir,
            "checkpoint": self.state_dir / "checkpoint.sqlite3",
            "manifest": self.manifest,
            "config": self.config,
            "metrics": self.metrics,
            "directory": self.root / "dir",
            "dev-null": self.root / "null" if OWN_DEVICES else Path("/dev/null"),
            "dev-full": self.root / "full" if OWN_DEVICES else Path("/dev/full"),
            "link-to-results": self.root / "link-to-results",
            "link-to-manifest": self.root / "link-to-manifest",
            "under-a-file": self.manifest / "out.jsonl",
            "missing-parent": self.root / "missing" / "out.jsonl",
        }

    def run_args(self, *extra: str) -> list[str]:
        """`run` of this world's manifest, config and results file (resuming its run), plus `extra`."""
        return ["run", str(self.manifest), "--config", str(self.config), "--endpoint", UNREACHABLE,
                "--progress", "off", "--out", str(self.results), *extra]


def make_template(base: Path) -> Path:
    """Run the pipeline once in `base / "world"` (3 items, a rejected line, a metrics file), add the
    directory and symbolic links the tests aim at, and move it all to `base / "template"`."""
    world = World(base / "world")
    world.root.mkdir()
    write_manifest(world.manifest, [*items(3, ["object_detection"]), "{not json"])
    config_file(world.config, qps_headroom=0.9)
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE)) as emu:
        done = cli(["run", str(world.manifest), "--config", str(world.config), "--endpoint", emu.url,
                    "--progress", "off", "--out", str(world.results), "--metrics-file", str(world.metrics)], env=ENV)
    assert done.returncode == 1, done.stderr[-2000:]  # the rejected line
    targets = world.targets()
    for name in ("results", "rejects", "summary", "checkpoint", "metrics"):
        assert targets[name].stat().st_size > 0, name
    (world.root / "dir").mkdir()
    (world.root / "dir" / "keep.txt").write_text("not the pipeline's\n")
    (world.root / "link-to-results").symlink_to("results.jsonl")
    (world.root / "link-to-manifest").symlink_to("m.jsonl")
    template = base / "template"
    world.root.rename(template)
    return template


def fresh_world(template: Path) -> World:
    """A copy of the template back where it was made, with device nodes when running as root."""
    root = template.parent / "world"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(template, root, symlinks=True)
    if OWN_DEVICES:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return World(root)


Entry = tuple[object, ...]


def snapshot(world: World) -> dict[str, Entry]:
    """Every entry under the world (not following links): regular files by content hash and
    modification time, links by target, devices by type and number; plus the real devices."""
    found: dict[str, Entry] = {}
    for directory, dirs, files in os.walk(world.root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            found[str(path.relative_to(world.root))] = _entry(path)
    for device in ("/dev/null", "/dev/full"):
        st = os.lstat(device)
        found[device] = (stat.S_IFMT(st.st_mode), st.st_rdev)
    return found


def _entry(path: Path) -> Entry:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    return ("node", stat.S_IFMT(st.st_mode), st.st_rdev)


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs, in words: created, removed and changed entries."""
    return ([f"created {p}" for p in sorted(set(after) - set(before))]
            + [f"removed {p}" for p in sorted(set(before) - set(after))]
            + [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]])
