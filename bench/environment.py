"""Where the benchmark runs: the repository, the Python, the key, the children's environment.

Every child (the pipeline, the emulator) runs from the repository root with this Python, the
benchmark's own API key in `DASHSCOPE_API_KEY`, and none of the caller's `PIPELINE_*` or
`DASHSCOPE_*` variables, so a developer's shell cannot change what is measured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KEY = "bench-key"  # the emulator's key and the children's DASHSCOPE_API_KEY
KIB_PER_GIB = 1024 * 1024  # /proc/meminfo counts kB


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "DASHSCOPE_"))}
    env["PYTHONPATH"] = str(REPO)
    env["DASHSCOPE_API_KEY"] = KEY
    env.update(extra)
    return env


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, Python and OS of this machine, for the report's header."""
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
                ram_gb = round(int(line.split()[1]) / KIB_PER_GIB, 1)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gb": ram_gb, "cpu_model": model,
            "python": platform.python_version(), "os": platform.platform()}


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write `data` as YAML (through JSON first, so tuples become lists); returns `path`."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))
    return path
