"""A run with what watches it: live progress on stderr, Prometheus metrics (ticks and the final
write or push) and dead man's switch pings, begun only once the run is accepted. The command
line's `run` and the Python API (`pipeline.run`, `pipeline.arun`) both go through `watched_run`,
so a run behaves the same whichever way it was started."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from ..core.capabilities import CAPABILITIES
from ..core.errors import PipelineError
from ..core.exit_codes import ExitCode
from ..core.results import ResultLine
from ..observe.metrics import RunMetrics
from ..observe.pings import Pinger
from ..observe.progress import count_lines, show_progress
from ..observe.report import RunStats, summarize
from .closing import RunResult
from .item_source import ItemSource
from .runner import Run, RunRequest
from .stopping import Stopping

__all__ = ["watched_run"]


async def watched_run(request: RunRequest, *, progress: str = "auto", stats: RunStats | None = None,
                      handle_signals: bool = True, source: ItemSource | None = None,
                      on_line: Callable[[ResultLine], None] | None = None, stops: Stopping | None = None) -> RunResult:
    """Run `request` to its end with progress (`progress`: auto, rich, plain or off), metrics and
    pings as its config asks. Errors that refuse the run (exit 2, 7) are raised as they are; a
    refused run sends no ping and leaves the metrics file alone. `source`, `on_line` and `stops`
    go to `Run` (`pipeline.stream`'s items, its consumer's hand-off, its stop)."""
    config = request.config
    stats = stats or RunStats()
    limits = {name: config.limit_rps(name) for name in CAPABILITIES}
    pinger = Pinger(config.ping_url) if config.ping_url else None
    metrics = RunMetrics(textfile=Path(config.metrics_file) if config.metrics_file else None,
                         pushgateway=config.pushgateway) if (config.metrics_file or config.pushgateway) else None

    def live_summary() -> dict[str, object]:
        return summarize(stats.caps, prices=config.prices, elapsed=stats.elapsed(), qps=limits,
                         rejected=stats.rejected)

    async def metrics_ticks() -> None:
        assert metrics is not None
        while True:
            await anyio.sleep(config.progress_interval)
            metrics.progress(live_summary())

    async def progress_shown() -> None:
        # The total reads the whole manifest (a few seconds at millions of lines): it ran on the
        # event loop before the first submission, progress off or not. Not counted when nothing
        # is shown; counted in a thread when progress is, so the run starts meanwhile.
        total = None
        if source is None and progress != "off":
            total = await anyio.to_thread.run_sync(count_lines, request.manifest)
        await show_progress(stats, limits, total=total, mode=progress, interval=config.progress_interval)

    result: RunResult | None = None
    code: int = ExitCode.INTERRUPTED
    started = False  # pings and metrics begin only once the run is accepted: a refused one touches neither

    async def on_started() -> None:
        nonlocal started
        started = True
        if pinger is not None:
            await pinger.start()
        if metrics is not None:
            tg.start_soon(metrics_ticks)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress_shown)
            try:
                result = await Run(request, stats=stats, on_started=on_started, handle_signals=handle_signals,
                                   source=source, on_line=on_line, stops=stops).execute()
                code = result.exit_code
            except (PipelineError, OSError) as exc:
                code = exc.exit_code if isinstance(exc, PipelineError) else ExitCode.INTERRUPTED
                raise
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if metrics is not None and started:
                await metrics.finish(result.summary if result else live_summary(), int(code))
            if pinger is not None and started:
                await pinger.finish(int(code))
    assert result is not None  # the task group re-raised anything that left it without one
    return result
