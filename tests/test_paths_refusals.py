"""Issue 18's path bugs, as a user met them: `--metrics-file` on the results file, `export --out` on
a live run's manifest, a refused foreign `--out` leaving a state dir behind, and refused runs
(exit 7, exit 2) that still pinged and rewrote the shared metrics file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from paths_support import ENV, KEY, SCALE, UNREACHABLE, World, changes, fresh_world, make_template, snapshot
from support import config_file, items, write_manifest

from pipeline.cli.main import main
from pipeline.emulator import EmulatorSettings, EmulatorThread
from pipeline.state.checkpoint import Checkpoint
from pipeline.state.lock import StateDirLock


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("PIPELINE_", "DASHSCOPE_"))]:
        monkeypatch.delenv(name)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template(tmp_path_factory.mktemp("paths-refusals"))


@pytest.fixture
def world(template: Path) -> World:
    return fresh_world(template)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the command in this process; it must exit `code` with one error line; returns stderr."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "ERROR" in line]) == 1, err
    return err


def test_metrics_file_on_the_results_file_is_refused_before_anything(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18 bug 1: `--metrics-file r.jsonl --out r.jsonl` ran to exit 0 with the results turned
    into a Prometheus textfile; now exit 2 naming both options, nothing sent, nothing created."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(3, ["object_detection"]))
    cfg = config_file(tmp_path / "cfg.yaml", qps_headroom=0.9)
    out = tmp_path / "r.jsonl"
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE)) as emu:
        err = refused(["run", str(manifest), "--config", str(cfg), "--endpoint", emu.url, "--progress", "off",
                       "--out", str(out), "--metrics-file", str(out)], capsys)
        assert emu.counters()["requests_total"] == 0
    assert f"--out {out} is also --metrics-file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "m.jsonl"]


def test_export_refuses_a_live_runs_manifests_and_empty_rejects(world: World,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18 bug 2: `export --out` replaced the run's manifest even while the run was live. Now
    the run's manifests (one joined with --append too) and its rejects file are refused, even
    empty ones only the state dir can tell apart, and nothing changes."""
    day2 = world.root / "day2.jsonl"
    day2.write_text("")  # an empty catalog joined with --append: only the checkpoint knows it is an input
    (world.root / "results.rejects.jsonl").write_text("")  # no line rejected: an empty rejects file
    lock = StateDirLock(world.state_dir)
    lock.acquire()  # the run is live: status says so, another run would exit 7
    live = Checkpoint.open(world.state_dir)  # and writes its checkpoint meanwhile
    try:
        live.add_manifest(str(day2.resolve()))
        before = snapshot(world)
        for target, named in [(world.manifest, "already exists and is not an export"),
                              (day2, f"is a manifest of the run ({day2.resolve()})"),
                              (world.root / "results.rejects.jsonl", "is the run's rejects file")]:
            err = refused(["export", "--by-item", "--state-dir", str(world.state_dir), "--out", str(target)], capsys)
            assert f"--out {target} {named}" in err
        # SQLite's shared-memory index is the live run's and every reader's (a reader marks it)
        assert [c for c in changes(before, snapshot(world)) if not c.endswith(".sqlite3-shm")] == []
    finally:
        live.close()
        lock.release()


def test_a_refused_foreign_out_leaves_no_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: a results file the run did not write is refused (exit 2), and no
    `foreign.jsonl.state/` is left behind: nothing is created by a refused run."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"something": "else"}\n')
    err = refused(["run", str(manifest), "--endpoint", UNREACHABLE, "--progress", "off", "--out", str(foreign)],
                  capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.jsonl", "m.jsonl"]
    assert f"--out {foreign} already exists and was not written by this run" in err
    assert foreign.read_text() == '{"something": "else"}\n'


class Pings:
    """A local Healthchecks stand-in: the path of every request, in order (recorded before it answers)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        pings = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pings.paths.append(self.path.split("?")[0])
                self.send_response(200)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/p"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def pings() -> Iterator[Pings]:
    server = Pings()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize("refusal", ["live run (exit 7)", "another manifest (exit 2)", "a foreign state dir (exit 2)"])
def test_a_refused_run_neither_pings_nor_writes_metrics(world: World, pings: Pings, refusal: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: a run refused because another live run holds the state dir pinged /start then /7
    and rewrote the shared metrics file; so did exit-2 refusals. Now a refused run pings nothing
    and leaves the metrics file (and every other file) as it was. Pings are sent before the
    command returns, so an empty list after it is final."""
    guard = ["--ping-url", pings.url, "--metrics-file", str(world.metrics)]
    lock = StateDirLock(world.state_dir)
    if refusal.startswith("live"):
        lock.acquire()
        argv, code = world.run_args(*guard), 7
    elif refusal.startswith("another manifest"):
        other = write_manifest(world.root / "day2.jsonl", items(2, ["object_detection"]))
        argv, code = world.run_args(*guard), 2
        argv[1] = str(other)  # the manifest: not the run's, and no --append
    else:
        argv, code = world.run_args("--state-dir", str(world.root / "dir"), *guard), 2
    before = snapshot(world)
    try:
        refused(argv, capsys, code)
    finally:
        lock.release()
    assert pings.paths == []
    # A state dir's own refusals (another manifest) are made under its lock and the results file's,
    # whose holder records the refused run wrote; nothing else changes.
    allowed = ({f"changed {world.state_dir.name}/run.lock", f"changed {world.results.name}.lock"}
               if refusal.startswith("another manifest") else set())
    assert [c for c in changes(before, snapshot(world)) if c not in allowed] == []


def test_an_accepted_run_still_pings_and_writes_metrics(world: World, pings: Pings) -> None:
    """The control for the test above: the same command, accepted (a resume with nothing left to
    do), pings start and end and rewrites the metrics file with its exit code."""
    before = world.metrics.read_text()
    assert main(world.run_args("--ping-url", pings.url, "--metrics-file", str(world.metrics))) == 1
    assert pings.paths == ["/p/start", "/p/1"]
    assert world.metrics.read_text() != before and "media_pipeline_exit_code 1.0" in world.metrics.read_text()


@pytest.mark.parametrize("bad_key", ["sk-ключ", "sk-a\nb"])
def test_a_key_no_header_can_carry_is_refused_before_anything(tmp_path: Path, pings: Pings, bad_key: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An API key with characters an HTTP header cannot carry was refused (exit 2) only once the
    run had started: it had pinged /start and /2, written the metrics file and left a state dir
    that status called killed. Now it is refused first: no ping, nothing created, the key not echoed."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", bad_key)
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    err = refused(["run", str(manifest), "--endpoint", UNREACHABLE, "--progress", "off", "--out",
                   str(tmp_path / "r.jsonl"), "--ping-url", pings.url, "--metrics-file", str(tmp_path / "x.prom")],
                  capsys)
    assert "api_key" in err and bad_key not in err
    assert pings.paths == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_two_outs_with_one_stem_do_not_share_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out z.jsonl` then `--out z.out`: both name their summary and rejects files z.summary.json
    and z.rejects.jsonl, and the second run overwrote the first's. Now it is refused (exit 2),
    naming the run the summary belongs to, and nothing changes."""
    manifest = write_manifest(tmp_path / "m.jsonl", items(2, ["object_detection"]))
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE)) as emu:
        common = ["--endpoint", emu.url, "--progress", "off", "--quiet"]
        assert main(["run", str(manifest), "--out", str(tmp_path / "z.jsonl"), *common]) == 0
        capsys.readouterr()
        before = (tmp_path / "z.summary.json").read_bytes()
        err = refused(["run", str(manifest), "--out", str(tmp_path / "z.out"), *common], capsys)
    assert "z.summary.json" in err and "z.jsonl" in err and "another name" in err
    assert (tmp_path / "z.summary.json").read_bytes() == before
    assert not (tmp_path / "z.out").exists() and not (tmp_path / "z.out.state").exists()


@pytest.mark.parametrize("how", ["--by-item", "--format=parquet"])
def test_export_refuses_the_runs_report_even_before_it_exists(world: World, how: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`export --out results.report.html` wrote an export where the run draws its report, which
    the run then refused to replace for good: the run's report is one of its files, refused even
    when no report was drawn yet, and nothing is created."""
    report = world.root / "results.report.html"
    assert not report.exists()
    err = refused(["export", how, "--state-dir", str(world.state_dir), "--out", str(report)], capsys)
    assert f"--out {report} is the run's HTML report" in err and not report.exists()
