"""The HTML report's optional extra and the end of a run, in real processes: `report` without the
extra, or with a broken one, exits 2 naming it; a run without it (or with a broken one) warns once
and keeps its exit code; a signal while the end-of-run report draws abandons the report and keeps
the run's exit code."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, cli, cli_env, config_file, items, write_manifest

from pipeline.emulator import EmulatorSettings, EmulatorThread

KEY = "report-extra-key-77d1"
SCALE = 10.0
FAST = {cap: (0.5, 5.0) for cap in ("image-analyze", "video-segmentation", "video-snapshot",
                                     "video-summarization", "audio-asr")}
ENV = {"DASHSCOPE_API_KEY": KEY, "PIPELINE_TIME_SCALE": str(SCALE), "PIPELINE_REPORT": "on"}
INSTALL = "pip install 'opensearch-media-pipeline[report]'"

pytestmark = pytest.mark.slow

#: `python -c` prologues run before the command line's entry: the extra missing (an import of it
#: fails as for a package that is not there), or a package of that name whose import raises.
MISSING = "import sys; sys.modules[{module!r}] = None\n"
BROKEN = "import sys; sys.path.insert(0, {folder!r})\n"
ENTRY = "from pipeline.cli.main import entry\nsys.exit(entry())\n"
#: The end-of-run drawing, stood in for by one that says it began and then waits for a signal.
DRAWING = """import sys, threading
import pipeline.cli.report as report

def drawing(data, **kw):
    print("drawing began", file=sys.stderr, flush=True)
    threading.Event().wait()  # a lock's wait: a signal handler that raises ends it

report.render_report = drawing
"""


def python(prologue: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` after `prologue`, to the end."""
    return subprocess.run([sys.executable, "-c", prologue + ENTRY, *args], capture_output=True, text=True,
                          check=False, env=cli_env(env), timeout=120, cwd=REPO)


def broken_package(folder: Path, module: str, error: str) -> Path:
    """A package named `module` in `folder` whose import raises `error` (Python source)."""
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(f"raise {error}\n")
    return folder


def run_args(tmp: Path, url: str) -> list[str]:
    cfg = config_file(tmp / "cfg.yaml", qps_headroom=0.9, polling={"first_delay": 1.0, "max_delay": 5.0})
    manifest = write_manifest(tmp / "m.jsonl", items(4, ["image_analyze"]))
    return ["run", str(manifest), "--out", str(tmp / "results.jsonl"), "--endpoint", url, "--config", str(cfg)]


@pytest.fixture(scope="module")
def emulator() -> EmulatorThread:
    with EmulatorThread(EmulatorSettings(api_key=KEY, seed=3, time_scale=SCALE, durations=FAST)) as emu:
        yield emu


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorThread) -> Path:
    """The state dir of a finished 4-item run (no report drawn)."""
    tmp = tmp_path_factory.mktemp("finished")
    done = cli(run_args(tmp, emulator.url), env={**ENV, "PIPELINE_REPORT": "off"})
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "results.jsonl.state"


@pytest.mark.parametrize("module", ["jinja2", "matplotlib"])
def test_report_without_the_extra_exits_2_naming_it(finished: Path, tmp_path: Path, module: str) -> None:
    """`report` with jinja2 or matplotlib not installed exits 2 (a usage error, not a resumable 3)
    with a message naming what is missing and the extra to install; no file is written."""
    out = tmp_path / "r.html"
    done = python(MISSING.format(module=module), ["report", "--state-dir", str(finished), "--out", str(out)])
    assert done.returncode == 2, done.stderr
    assert f"({module} not installed): {INSTALL}" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.parametrize(("module", "error", "shown"), [
    ("jinja2", "ImportError('libyaml.so.0: cannot open shared object file')",
     "jinja2 fails to import (ImportError: libyaml.so.0: cannot open shared object file)"),
    ("matplotlib", "RuntimeError('broken wheel ' + 'x' * 20000)",
     "matplotlib fails to import (RuntimeError: broken wheel x"),
])
def test_report_with_a_broken_extra_exits_2_naming_the_module(finished: Path, tmp_path: Path, module: str,
                                                              error: str, shown: str) -> None:
    """`report` when jinja2 or matplotlib raises at import exits 2, not with a traceback: the
    message names the module and its error (bounded however long) and how to repair the install."""
    fake = broken_package(tmp_path / "site", module, error)
    out = tmp_path / "r.html"
    done = python(BROKEN.format(folder=str(fake)), ["report", "--state-dir", str(finished), "--out", str(out)])
    assert done.returncode == 2, done.stderr[-3000:]
    assert shown in done.stderr and "--force-reinstall" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr) < 1500 and not out.exists()


@pytest.mark.parametrize("how", ["missing", "broken"])
def test_a_run_without_a_working_extra_warns_once_and_keeps_its_code(tmp_path: Path, emulator: EmulatorThread,
                                                                     how: str) -> None:
    """A run whose report cannot be drawn (jinja2 not installed, or raising at import) ends with
    its own exit code (0), its summary, one warning naming the extra, and no report file."""
    prologue = MISSING.format(module="jinja2") if how == "missing" else BROKEN.format(
        folder=str(broken_package(tmp_path / "site", "jinja2", "RuntimeError('half-installed')")))
    done = python(prologue, run_args(tmp_path, emulator.url), env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "no HTML report written" in warnings[0] and INSTALL.split("'")[1] in warnings[0]
    assert "Traceback" not in done.stderr
    assert (tmp_path / "results.summary.json").exists() and not (tmp_path / "results.report.html").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_report_draws_keeps_the_runs_exit_code(tmp_path: Path, emulator: EmulatorThread,
                                                                  sig: signal.Signals) -> None:
    """A signal that arrives while the end-of-run report draws (the run's results final) abandons
    the report with a warning, and the process exits with the run's code (0), its summary said."""
    with subprocess.Popen([sys.executable, "-c", DRAWING + ENTRY, *run_args(tmp_path, emulator.url)], cwd=REPO,
                          env=cli_env(ENV), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            seen = []
            assert proc.stderr is not None
            for line in proc.stderr:  # until the drawing began (or the process ended: a failure)
                seen.append(line)
                if line.strip() == "drawing began":
                    break
            else:
                raise AssertionError("the run never began drawing its report:\n" + "".join(seen)[-3000:])
            proc.send_signal(sig)
            rest = proc.stderr.read()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, "".join(seen)[-2000:] + rest[-2000:]
    assert f"report not written: interrupted ({sig.name})" in rest
    assert "results:" in rest and "Traceback" not in rest
    assert not (tmp_path / "results.report.html").exists()
    assert not list(tmp_path.glob(".results.report.html.*"))  # no temporary file left behind
