"""``python -m pipeline emulator``: serve the emulator in the foreground until SIGINT/SIGTERM.

The API key is, first found: ``--api-key``, ``api_key`` in the ``--config`` YAML file, the
``DASHSCOPE_API_KEY`` environment variable, and the documented default ``emulator-key``.
The key itself is never printed. ``--port 0`` binds a free port; the URL printed on start
(``emulator listening on http://HOST:PORT``) tells which.

``--oss-port PORT`` also serves the OSS subset (path-style, V4-signed; :mod:`.oss`) on that
port, printing ``emulator OSS listening on http://HOST:PORT``. Its AccessKey pair is, first
found: ``--oss-key-id``/``--oss-key-secret``, ``OSS_ACCESS_KEY_ID``/``OSS_ACCESS_KEY_SECRET``,
and the documented defaults; the secret is never printed. Buckets exist only once created, as on
OSS: ``--oss-bucket NAME`` (repeatable, or names separated by commas) creates them at start, and
a client may create more with PutBucket; any other bucket answers 404 ``NoSuchBucket``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from ..core.exit_codes import ExitCode
from .settings import (
    DEFAULT_API_KEY,
    DEFAULT_OSS_KEY_ID,
    DEFAULT_OSS_KEY_SECRET,
    EmulatorSettings,
    SettingsError,
    load_settings,
)

if TYPE_CHECKING:
    from .oss import OssSettings

DEFAULT_PORT = 8765
MAX_PORT = 65535  # TCP ports are 16-bit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind, 0 for any free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"bearer key clients must send (default: $DASHSCOPE_API_KEY, else {DEFAULT_API_KEY!r})",
    )
    parser.add_argument("--config", default=None, help="YAML file whose keys are EmulatorSettings fields")
    parser.add_argument("--seed", type=int, default=None, help="seed for results, durations and faults")
    parser.add_argument(
        "--time-scale", type=float, default=None, help="run this many times faster than the real service"
    )
    parser.add_argument(
        "--oss-port", type=int, default=None, help="also serve the OSS subset on this port (0 for any free one)"
    )
    parser.add_argument(
        "--oss-key-id", default=None,
        help=f"AccessKey id OSS requests must be signed with ($OSS_ACCESS_KEY_ID, else {DEFAULT_OSS_KEY_ID!r})",
    )
    parser.add_argument(
        "--oss-key-secret", default=None,
        help="AccessKey secret (default: $OSS_ACCESS_KEY_SECRET, else the documented emulator secret)",
    )
    parser.add_argument(
        "--oss-bucket", action="append", default=None, metavar="NAME",
        help="a bucket that exists from the start (repeatable, or comma-separated); others need PutBucket",
    )


def build_oss_settings(args: argparse.Namespace) -> OssSettings | None:
    """The OSS app's settings when ``--oss-port`` is given, else None."""
    if getattr(args, "oss_port", None) is None:
        if getattr(args, "oss_bucket", None):
            raise SettingsError("--oss-bucket needs --oss-port (the OSS subset is served only with it)")
        return None
    key_id = args.oss_key_id or os.environ.get("OSS_ACCESS_KEY_ID") or DEFAULT_OSS_KEY_ID
    secret = args.oss_key_secret or os.environ.get("OSS_ACCESS_KEY_SECRET") or DEFAULT_OSS_KEY_SECRET
    buckets = tuple(name.strip() for given in args.oss_bucket or () for name in given.split(",") if name.strip())
    try:
        from .oss import OssSettings  # aiohttp's server: only when the OSS subset is served

        return OssSettings(key_id=key_id, key_secret=secret, buckets=buckets)
    except ValueError as exc:  # a bucket name OSS would refuse
        raise SettingsError(f"--oss-bucket: {exc}") from None


def build_settings(args: argparse.Namespace) -> tuple[EmulatorSettings, str]:
    """Settings from the arguments, and where the API key came from (for the banner)."""
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.time_scale is not None:
        overrides["time_scale"] = args.time_scale
    settings = load_settings(args.config, **overrides) if args.config else EmulatorSettings(**overrides)
    config_has_key = bool(args.config) and settings.api_key != DEFAULT_API_KEY
    if args.api_key:
        return settings.replace(api_key=args.api_key), "--api-key"
    if config_has_key:
        return settings, f"api_key in {args.config}"
    env_key = os.environ.get("DASHSCOPE_API_KEY")
    if env_key:
        return settings.replace(api_key=env_key), "$DASHSCOPE_API_KEY"
    return settings.replace(api_key=DEFAULT_API_KEY), f"the default key {DEFAULT_API_KEY!r}"


async def serve(
    settings: EmulatorSettings, host: str, port: int, key_source: str,
    *, oss: OssSettings | None = None, oss_port: int = 0,
) -> None:
    """Serve until SIGINT or SIGTERM (and the OSS subset on ``oss_port`` when ``oss`` is given)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AsyncExitStack() as stack:
            from .oss_server import start_oss
            from .server import start_emulator

            emu = await stack.enter_async_context(start_emulator(settings, host, port))
            print(f"emulator listening on {emu.url}", flush=True)
            if oss is not None:
                running_oss = await stack.enter_async_context(start_oss(oss, host, oss_port))
                emu.state.objects = running_oss.store  # the service routes read what was uploaded
                buckets = ", ".join(oss.buckets) or "none yet (create them with PutBucket, or --oss-bucket)"
                print(f"emulator OSS listening on {running_oss.url} (key id {oss.key_id!r}, path-style; "
                      f"buckets: {buckets})", flush=True)
            print(
                f"  api key: {key_source}; seed {settings.seed}; time scale {settings.time_scale:g}; "
                f"counters at {emu.url}/_emulator/counters",
                flush=True,
            )
            await stop.wait()
            print("emulator stopping", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def port_problem(port: int) -> str | None:
    """Why ``port`` cannot be bound at all, or None when it is in range (0 = any free port)."""
    if 0 <= port <= MAX_PORT:
        return None
    return f"--port must be between 0 and {MAX_PORT} (0 picks a free port), got {port}"


def bind_problem(host: str, port: int, exc: OSError) -> str:
    """A one-line explanation of why listening on ``host:port`` failed, with what to do."""
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use: stop whatever holds it, "
                "or choose another --port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {host}:{port}: ports below 1024 need privileges; choose another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}:{port}: {host} is not an address of this machine; check --host"
    # asyncio wraps the socket error in a long sentence; its own reason is the useful part.
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {reason}"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return int(ExitCode.USAGE)


def main(args: argparse.Namespace) -> int:
    """Run the emulator in the foreground.

    Returns ``ExitCode.OK`` on a clean stop (SIGINT/SIGTERM) and ``ExitCode.USAGE`` for bad
    settings, a port out of range or a port that cannot be bound; the problem is one line on
    stderr, never a traceback.
    """
    problem = port_problem(args.port)
    oss_port = getattr(args, "oss_port", None)
    if problem is None and oss_port is not None:
        problem = port_problem(oss_port)
        problem = problem and problem.replace("--port", "--oss-port")
    if problem is not None:
        return _fail(problem)
    try:
        settings, key_source = build_settings(args)
        oss = build_oss_settings(args)
    except SettingsError as exc:
        return _fail(str(exc))
    try:
        asyncio.run(serve(settings, args.host, args.port, key_source, oss=oss, oss_port=oss_port or 0))
    except OSError as exc:  # bind failures: address in use, no permission, unknown host
        return _fail(bind_problem(args.host, args.port, exc))
    return int(ExitCode.OK)
