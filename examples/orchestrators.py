"""`pipeline.run` as an Airflow task and as a Dagster asset (docs/api.md).

Both call one function, `nightly_run`, that runs the day's manifest into the catalog's one
results file (`append=True`: the day's new items join the run, done ids are skipped) and
turns the exit code into what an orchestrator understands: a resumable stop (3) raises
`ResumableStop`, so the task's retries resume the run; a held lock (7) is another run doing the
work; 2, 4, 5 and 6 raise `NeedsAPerson`, which no retry fixes; 0 and 1 return the summary
(failed items are data, not a failed task: look at them, or run with retry_failed=True).

Airflow and Dagster are not dependencies of the pipeline: where one is not installed, its
wrapper is simply not defined, and the module stays importable as plain Python.
"""

from __future__ import annotations

import os
from typing import Any

import pipeline

MANIFEST = os.environ.get("CATALOG_MANIFEST", "/srv/media/today.jsonl")
RESULTS = os.environ.get("CATALOG_RESULTS", "/srv/media/results.jsonl")


class ResumableStop(RuntimeError):
    """Interrupted, time limit, or the service unreachable: running again resumes."""


class NeedsAPerson(RuntimeError):
    """Config, API key, failure threshold or spend cap: a retry would end the same way."""


def nightly_run(manifest: str = MANIFEST, out: str = RESULTS, **options: Any) -> dict[str, Any]:
    """Run (or resume) the day's manifest; the run's summary, or an exception saying what to do."""
    try:
        result = pipeline.run(manifest, out=out, append=True, max_duration="6h", **options)
    except pipeline.StateLocked:
        raise  # another live run holds the state dir: skip (Airflow) or fail fast (Dagster)
    except pipeline.PipelineError as exc:
        raise NeedsAPerson(f"exit {int(exc.exit_code)}: {exc}") from exc
    code = result.exit_code
    if code == pipeline.ExitCode.INTERRUPTED:
        raise ResumableStop(f"exit 3: {result.stop}; the task's retry resumes the run")
    if code not in (pipeline.ExitCode.OK, pipeline.ExitCode.PARTIAL):
        raise NeedsAPerson(f"exit {int(code)}: {result.stop}")
    return result.summary


try:  # Airflow 2.x: a TaskFlow task; a held lock skips it, exit 3 is retried
    from airflow.decorators import task
    from airflow.exceptions import AirflowSkipException
except ImportError:
    pass
else:
    @task(retries=3)
    def run_catalog() -> dict[str, Any]:
        try:
            return nightly_run()
        except pipeline.StateLocked as exc:
            raise AirflowSkipException(str(exc)) from exc

try:  # Dagster: an asset materialized by the run; the summary is its metadata
    import dagster
except ImportError:
    pass
else:
    @dagster.asset(retry_policy=dagster.RetryPolicy(max_retries=3))
    def media_results(context: dagster.AssetExecutionContext) -> dagster.MaterializeResult:
        try:
            summary = nightly_run()
        except (NeedsAPerson, pipeline.StateLocked) as exc:  # not worth a retry
            raise dagster.Failure(description=str(exc), allow_retries=False) from exc
        return dagster.MaterializeResult(metadata={
            "succeeded": summary["succeeded"], "failed": summary["failed"], "results": RESULTS})
