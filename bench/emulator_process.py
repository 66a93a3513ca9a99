"""The emulator as its own process (`python -m pipeline emulator`), and reading its counters.

Running it apart from the suite keeps its CPU its own (/proc/<pid>/stat) and lets it use a
whole core. Settings go in a YAML file; the port is 0 and read back from its banner line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .environment import KEY, PYTHON, REPO, child_env, write_yaml
from .manifests import ALL_CAPS, ASYNC_CAPS, SEGMENT
from .processes import cpu_seconds

#: Limits "effectively off", for the client-ceiling, memory and resume scenarios.
UNLIMITED = 100_000
#: The client's first poll (and its cap) against an emulator whose tasks finish at once, seconds.
FAST_FIRST_POLL = 0.005
FAST_MAX_POLL = 0.05
START_TIMEOUT = 30.0  # seconds the emulator gets to print its banner
STOP_TIMEOUT = 10.0  # seconds it gets to stop on SIGTERM before it is killed
HTTP_TIMEOUT = 30.0  # seconds for a counters request
POLL_BANNER_EVERY = 0.02  # seconds between two looks at its stdout while it starts
STDERR_TAIL = 2000  # characters of its stderr quoted when it fails to start


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
    return emulator_settings(qps=dict.fromkeys(ALL_CAPS, UNLIMITED),
                             durations=dict.fromkeys(ASYNC_CAPS, (0.0, 0.0)), **extra)


def fast_client(**extra: Any) -> dict[str, Any]:
    """Client config matching `fast_emulator`: no pacing to speak of, polls right away."""
    config: dict[str, Any] = {
        "qps": dict.fromkeys(ALL_CAPS, UNLIMITED),
        "polling": {"first_delay": FAST_FIRST_POLL, "max_delay": FAST_MAX_POLL},
    }
    config.update(extra)
    return config


def fast_settings_raw() -> dict[str, Any]:
    """The fast emulator and client settings, as a scenario's raw results record them."""
    return {"limit_qps": UNLIMITED, "task_duration_s": 0.0, "first_poll_s": FAST_FIRST_POLL}


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
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = out_path.read_text()
            if "listening on " in text:
                self.url = text.split("listening on ", 1)[1].split()[0]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(POLL_BANNER_EVERY)
        self.__exit__()
        stderr = (self.workdir / f"{self.name}.stderr").read_text()
        raise RuntimeError(f"emulator did not start: {stderr[-STDERR_TAIL:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def endpoint(self) -> str:
        """host:port, the form the official SDK takes."""
        return self.url.split("://", 1)[1]

    @property
    def pid(self) -> int:
        """The emulator process's id."""
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds the emulator has used so far."""
        return cpu_seconds(self.pid)

    def counters(self) -> dict[str, Any]:
        """`GET /_emulator/counters`."""
        with urllib.request.urlopen(f"{self.url}/_emulator/counters", timeout=HTTP_TIMEOUT) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def reset_counters(self) -> None:
        """`POST /_emulator/counters/reset`."""
        request = urllib.request.Request(f"{self.url}/_emulator/counters/reset", method="POST")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):
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
