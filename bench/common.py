"""What every scenario shares: figures, the emulator process, measured subprocesses, manifests.

The pipeline under test always runs as its own process (`python -m pipeline run ...`) and the
emulator as another (`python -m pipeline emulator ...`), so each one's CPU time and peak RSS
are its own: the client's come from `os.wait4` (its rusage alone), its RSS timeline from
/proc/<pid>/status, the emulator's CPU from /proc/<pid>/stat.

Every figure is a ratio or a count measured within one scenario, because the machine is
shared and noisy: absolute seconds from one run are not comparable with another's.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KEY = "bench-key"
TICKS = os.sysconf("SC_CLK_TCK")

#: Manifest line templates per capability: `%(id)s` and `%(n)d` are filled in. Every body
#: differs (the emulator counts submissions per distinct body).
TEMPLATES: dict[str, str] = {
    "image_analyze": '{"id":"%(id)s","capability":"image_analyze","url":"https://example.com/img/%(n)d.jpg"}',
    "object_detection": '{"id":"%(id)s","capability":"object_detection","url":"https://example.com/obj/%(n)d.png"}',
    "video_segmentation": ('{"id":"%(id)s","capability":"video_segmentation","oss":"oss://bucket/video/seg%(n)d.mp4",'
                           '"output":{"oss":"oss://bucket/out/"}}'),
    "video_snapshot": '{"id":"%(id)s","capability":"video_snapshot","url":"https://example.com/video/snap%(n)d.mp4"}',
    "video_summarization": ('{"id":"%(id)s","capability":"video_summarization","oss":"oss://bucket/video/sum%(n)d.mp4",'
                            '"output":"oss://bucket/sum/"}'),
    "audio_asr": '{"id":"%(id)s","capability":"audio_asr","url":"https://example.com/audio/talk%(n)d.mp3"}',
}
ALL_CAPS = tuple(TEMPLATES)
ASYNC_CAPS = tuple(c for c in ALL_CAPS if c != "object_detection")
#: The emulator names capabilities by URL segment, the pipeline by canonical name.
SEGMENT = {"image_analyze": "image-analyze", "object_detection": "image-object-detection",
           "video_segmentation": "video-segmentation", "video_snapshot": "video-snapshot",
           "video_summarization": "video-summarization", "audio_asr": "audio-asr"}
LIMITS = {"image_analyze": 10, "object_detection": 20, "video_segmentation": 5,
          "video_snapshot": 5, "video_summarization": 5, "audio_asr": 5}
#: Limits "effectively off", for the client-ceiling, memory and resume scenarios.
UNLIMITED = 100_000


# ---- figures ---------------------------------------------------------------------------------
@dataclass
class Figure:
    """One measured number, with its target when it has one (`(">=", 0.95)`)."""

    name: str
    value: float | int | None
    unit: str = ""
    target: tuple[str, float] | None = None
    note: str = ""
    digits: int = 3

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value is None:
            return "MISS"
        op, bound = self.target
        ok = self.value >= bound if op == ">=" else self.value <= bound
        return "PASS" if ok else "MISS"

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, int):
            return f"{self.value:,}"
        return f"{self.value:,.{self.digits}f}"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, bound = self.target
        return f"{'≥' if op == '>=' else '≤'} {bound:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "target": self.target_text() or None, "verdict": self.verdict or None, "note": self.note}


@dataclass
class ScenarioResult:
    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # settings used, caveats, reasons for a MISS
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "seconds": round(self.seconds, 1),
                "figures": [f.to_dict() for f in self.figures], "notes": self.notes, "raw": self.raw}


# ---- environment -----------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "DASHSCOPE_"))}
    env["PYTHONPATH"] = str(REPO)
    env["DASHSCOPE_API_KEY"] = KEY
    env.update(extra)
    return env


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gb": ram_gb, "cpu_model": model,
            "python": platform.python_version(), "os": platform.platform()}


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))
    return path


# ---- manifests -------------------------------------------------------------------------------
def manifest_rows(n: int, caps: Sequence[str] = ALL_CAPS, *, start: int = 0) -> Iterable[str]:
    """`n` lines cycling over `caps`; ids `item-<number>` from `start`."""
    templates = [TEMPLATES[c] for c in caps]
    k = len(templates)
    for i in range(start, start + n):
        yield templates[i % k] % {"id": f"item-{i:07d}", "n": i}


def write_manifest(path: Path, n: int, caps: Sequence[str] = ALL_CAPS, *, start: int = 0,
                   mode: str = "w") -> Path:
    with open(path, mode, encoding="utf-8") as f:
        batch: list[str] = []
        for row in manifest_rows(n, caps, start=start):
            batch.append(row)
            if len(batch) == 10_000:
                f.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            f.write("\n".join(batch) + "\n")
    return path


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


# ---- measured subprocesses -------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB: its resident set now, and its peak so far."""
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return (found["VmRSS"], found["VmHWM"]) if len(found) == 2 else None


@dataclass
class ProcessRun:
    """A finished child process, measured on its own."""

    exit_code: int
    started_at: float  # time.monotonic() just before the process was spawned
    wall: float  # spawn to exit, seconds
    cpu: float  # user + system CPU seconds of the child alone (wait4 rusage)
    #: The last VmHWM read from /proc (sampled every `sample_every` s until the exit). Not
    #: ru_maxrss: Linux carries the parent's RSS at fork over the exec into the child's maxrss.
    peak_rss_mb: float
    samples: list[tuple[float, float]]  # (seconds since spawn, RSS MB)
    stopped_at: float | None  # seconds since spawn when SIGTERM was sent, if it was
    forced_at: float | None  # ... when a second SIGTERM (immediate exit) had to follow it
    cpu_after_stop: float | None  # CPU seconds used from the first SIGTERM to the exit (or the second)
    ended_epoch: float  # time.time() when the exit was seen (within `sample_every`)
    stderr: str

    @property
    def stop_seconds(self) -> float | None:
        """From the first SIGTERM to the exit."""
        return None if self.stopped_at is None else self.wall - self.stopped_at


def measure(argv: Sequence[str], workdir: Path, name: str, *, stop_after: float | None = None,
            grace: float = 10.0, timeout: float = 300.0, sample_every: float = 0.02) -> ProcessRun:
    """Run `argv` to its end, sampling its RSS.

    With `stop_after`, send SIGTERM (a clean stop) after that many seconds; if the process is
    still there `grace` seconds later, a second SIGTERM (the CLI's immediate exit).
    """
    err_path = workdir / f"{name}.stderr"
    with open(workdir / f"{name}.stdout", "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env=child_env())
    samples: list[tuple[float, float]] = []
    peak = 0.0
    stopped_at = forced_at = cpu_at_stop = cpu_after_stop = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.monotonic() - started
            if pid:
                ended_epoch = time.time()
                break
            memory = memory_mb(proc.pid)
            if memory is not None:
                samples.append((now, memory[0]))
                peak = max(peak, memory[1])
            if stop_after is not None and stopped_at is None and now >= stop_after:
                cpu_at_stop = cpu_seconds(proc.pid)
                proc.send_signal(signal.SIGTERM)
                stopped_at = now
            elif stopped_at is not None and forced_at is None and now >= stopped_at + grace:
                cpu_after_stop = cpu_seconds(proc.pid) - (cpu_at_stop or 0.0)
                proc.send_signal(signal.SIGTERM)
                forced_at = now
            if now > timeout:
                raise TimeoutError(f"{name} still running after {timeout:.0f} s: {argv}")
            time.sleep(sample_every)
    except BaseException:
        proc.kill()
        os.waitpid(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen quiet
    if cpu_at_stop is not None and cpu_after_stop is None:
        cpu_after_stop = usage.ru_utime + usage.ru_stime - cpu_at_stop
    return ProcessRun(
        exit_code=proc.returncode, started_at=started, wall=time.monotonic() - started,
        cpu=usage.ru_utime + usage.ru_stime, peak_rss_mb=peak,
        samples=samples, stopped_at=stopped_at, forced_at=forced_at, cpu_after_stop=cpu_after_stop,
        ended_epoch=ended_epoch,
        stderr=err_path.read_text(errors="replace"))


@dataclass
class PipelineRun:
    proc: ProcessRun
    out: Path
    summary: dict[str, Any]

    @property
    def run_seconds(self) -> float:
        """The run's own wall time (from its summary; excludes interpreter start-up)."""
        return float(self.summary.get("wall_time_s") or self.proc.wall)

    def lines(self) -> int:
        return count_lines(self.out) if self.out.exists() else 0


def run_pipeline(manifest: Path, workdir: Path, endpoint: str, config: Mapping[str, Any], *,
                 name: str = "run", state_dir: Path | None = None, out: Path | None = None,
                 stop_after: float | None = None, grace: float = 10.0, timeout: float = 300.0) -> PipelineRun:
    """`python -m pipeline run MANIFEST --out F --state-dir D --endpoint URL --config FILE`."""
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    out = out or run_dir / "results.jsonl"
    state_dir = state_dir or run_dir / "state"
    config_path = write_yaml(run_dir / "config.yaml", config)
    argv = [PYTHON, "-m", "pipeline", "run", str(manifest), "--out", str(out), "--state-dir",
            str(state_dir), "--endpoint", endpoint, "--config", str(config_path)]
    proc = measure(argv, run_dir, "pipeline", stop_after=stop_after, grace=grace, timeout=timeout)
    summary_path = out.with_name(f"{out.stem}.summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if proc.exit_code not in (0, 1, 3) or (not summary and proc.forced_at is None):
        raise RuntimeError(f"pipeline run {name} failed (exit {proc.exit_code}):\n{proc.stderr[-3000:]}")
    return PipelineRun(proc, out, summary)


# ---- the emulator as a process ---------------------------------------------------------------
def emulator_settings(*, time_scale: float = 1.0, qps: Mapping[str, int] | None = None,
                      durations: Mapping[str, Sequence[float]] | None = None, polls_count: bool = True,
                      seed: int = 7) -> dict[str, Any]:
    """EmulatorSettings fields as YAML data; `qps` and `durations` by canonical capability name."""
    data: dict[str, Any] = {"seed": seed, "time_scale": time_scale, "polls_count": polls_count}
    if qps:
        data["qps"] = {SEGMENT[c]: int(v) for c, v in qps.items()}
    if durations:
        data["durations"] = {SEGMENT[c]: list(v) for c, v in durations.items()}
    return data


def fast_emulator(**extra: Any) -> dict[str, Any]:
    """Limits effectively off and tasks done at once: only the client (and emulator) CPU limits."""
    return emulator_settings(qps={c: UNLIMITED for c in ALL_CAPS},
                             durations={c: (0.0, 0.0) for c in ASYNC_CAPS}, **extra)


def fast_client(endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
    """Client config matching `fast_emulator`: no pacing to speak of, polls right away."""
    config: dict[str, Any] = {
        "qps": {c: UNLIMITED for c in ALL_CAPS},
        "polling": {"first_delay": 0.005, "max_delay": 0.05},
    }
    config.update(extra)
    return config


class Emulator:
    """`python -m pipeline emulator` in its own process; `with Emulator(settings, dir) as emu`."""

    def __init__(self, settings: Mapping[str, Any], workdir: Path, name: str = "emulator") -> None:
        self.settings = dict(settings)
        self.workdir = workdir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Emulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = write_yaml(self.workdir / f"{self.name}.yaml", self.settings)
        out_path = self.workdir / f"{self.name}.stdout"
        with open(out_path, "wb") as out, open(self.workdir / f"{self.name}.stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "pipeline", "emulator", "--host", "127.0.0.1", "--port", "0",
                 "--config", str(config), "--api-key", KEY], stdout=out, stderr=err, cwd=REPO, env=child_env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = out_path.read_text()
            if "listening on " in text:
                self.url = text.split("listening on ", 1)[1].split()[0]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.__exit__()
        raise RuntimeError(f"emulator did not start: {(self.workdir / f'{self.name}.stderr').read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def endpoint(self) -> str:
        """host:port, the form the official SDK takes."""
        return self.url.split("://", 1)[1]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def counters(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/counters", timeout=30) as response:
            return json.loads(response.read())

    def reset_counters(self) -> None:
        request = urllib.request.Request(f"{self.url}/_emulator/counters/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


def submissions(counters: Mapping[str, Any]) -> int:
    """Accepted creates and detections, all bodies together."""
    return sum(counters["submissions"].values())


def request_rate(counters: Mapping[str, Any], capability: str) -> tuple[float, int, float]:
    """(accepted requests per second, count, span s) over the first-to-last accepted request."""
    span = counters["accepted_span"].get(SEGMENT[capability])
    if not span or span["count"] < 2:
        return 0.0, span["count"] if span else 0, 0.0
    seconds = span["last"] - span["first"]
    return (span["count"] - 1) / seconds, span["count"], seconds


def rss_at(samples: Sequence[tuple[float, float]], when: float) -> float:
    """The RSS sample closest to `when` seconds after spawn."""
    return min(samples, key=lambda s: abs(s[0] - when))[1]


def thin(samples: Sequence[tuple[float, float]], every: float = 1.0) -> list[tuple[float, float]]:
    """One (seconds, MB) sample per `every` seconds, rounded, for results.json."""
    out: list[tuple[float, float]] = []
    for t, value in samples:
        if not out or t >= out[-1][0] + every:
            out.append((round(t, 2), round(value, 1)))
    return out
