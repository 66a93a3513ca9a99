"""`python -m pipeline emulator` refuses a bad or busy port with one line and exit code 2."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys

import pytest
from support import REPO, cli_env

from pipeline.core.exit_codes import ExitCode
from pipeline.emulator.cli import bind_problem, port_problem


def _emulator(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the emulator command to its end (a failing start returns at once)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "emulator", *args],
        capture_output=True, text=True, check=False, env=cli_env(), cwd=REPO, timeout=60,
    )


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_port_out_of_range_is_one_line_and_exit_2(port: str) -> None:
    """A port outside 0-65535 gets a one-line error naming the range, no traceback, exit 2."""
    result = _emulator("--host", "127.0.0.1", "--port", port)
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "65535" in lines[0] and port in lines[0]


def test_port_in_use_is_one_line_and_exit_2() -> None:
    """A port some other socket already listens on gets a one-line 'already in use' error, exit 2."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _emulator("--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and "already in use" in lines[0]
    assert "listening on" not in result.stdout


@pytest.mark.parametrize(
    ("port", "expected"),
    [(0, None), (1, None), (65535, None), (65536, "between 0 and 65535"), (-5, "got -5")],
)
def test_port_problem_table(port: int, expected: str | None) -> None:
    """Ports 0-65535 pass; anything else is explained with the allowed range and the value given."""
    problem = port_problem(port)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EADDRINUSE, "already in use"),
        (errno.EACCES, "need privileges"),
        (errno.EADDRNOTAVAIL, "check --host"),
        (errno.ENOENT, "the reason given"),
    ],
)
def test_bind_problem_names_the_cause(code: int, expected: str) -> None:
    """Each bind failure errno maps to a message that says what went wrong and what to change."""
    message = bind_problem("127.0.0.1", 8765, OSError(code, "the reason given"))
    assert expected in message
    assert "\n" not in message and "127.0.0.1" in message
