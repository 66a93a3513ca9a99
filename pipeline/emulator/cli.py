"""``python -m pipeline emulator``: serve the emulator in the foreground until SIGINT/SIGTERM.

The API key is, first found: ``--api-key``, ``api_key`` in the ``--config`` YAML file, the
``DASHSCOPE_API_KEY`` environment variable, and the documented default ``emulator-key``.
The key itself is never printed. ``--port 0`` binds a free port; the URL printed on start
(``emulator listening on http://HOST:PORT``) tells which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from .server import start_emulator
from .settings import DEFAULT_API_KEY, EmulatorSettings, SettingsError, load_settings

DEFAULT_PORT = 8765


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


async def serve(settings: EmulatorSettings, host: str, port: int, key_source: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with start_emulator(settings, host, port) as emu:
            print(f"emulator listening on {emu.url}", flush=True)
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


def main(args: argparse.Namespace) -> int:
    """Run the emulator; 0 on a clean stop, 2 on a settings or bind error."""
    try:
        settings, key_source = build_settings(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, args.host, args.port, key_source))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
