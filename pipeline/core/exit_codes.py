"""The one table of exit codes every command returns (README "Exit codes", docs/design.md).

Schedulers branch on these: Kubernetes `podFailurePolicy.onExitCodes`, Airflow
`skip_on_exit_code`, systemd `RestartPreventExitStatus`. "Retry later" (3) and "fix something
first" (2, 4, 5, 6, 7) are deliberately different codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the process tells its caller."""

    #: Every item succeeded (`validate`: no problems found).
    OK = 0
    #: The run finished, but some items failed or manifest lines were rejected
    #: (`validate`: problems found).
    PARTIAL = 1
    #: Usage or configuration error: nothing was started, nothing written.
    USAGE = 2
    #: Interrupted (signal) or stopped by a time limit, or the service (or OSS, for uploads)
    #: could not be reached: run the same command again to resume.
    INTERRUPTED = 3
    #: The service refused the API key (401/403), or OSS the AccessKey pair: fix it, then resume.
    AUTH = 4
    #: The failure threshold stopped the run: look at the failures before resuming.
    THRESHOLD = 5
    #: The spend cap was reached: raise it to resume.
    SPEND_CAP = 6
    #: Another live run holds this state dir, or writes this results file.
    LOCKED = 7

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @property
    def advice(self) -> str:
        """What to do next (README's "what to do" column): the report's line under the outcome."""
        return _ADVICE[self]


_MEANINGS = {
    ExitCode.OK: "every item succeeded",
    ExitCode.PARTIAL: "finished; some items failed or manifest lines were rejected",
    ExitCode.USAGE: "usage or configuration error; nothing started",
    ExitCode.INTERRUPTED: "interrupted, time limit reached, or the service or OSS unreachable; run again "
                          "to resume",
    ExitCode.AUTH: "the service refused the API key (or OSS the AccessKey pair); fix it, then resume",
    ExitCode.THRESHOLD: "the failure threshold stopped the run; look at the failures",
    ExitCode.SPEND_CAP: "the spend cap was reached; raise it to resume",
    ExitCode.LOCKED: "another live run holds this state dir, or writes this results file",
}

_ADVICE = {
    ExitCode.OK: "nothing",
    ExitCode.PARTIAL: "look at the failures; `run --retry-failed`",
    ExitCode.USAGE: "fix the command",
    ExitCode.INTERRUPTED: "run the same command again: it resumes",
    ExitCode.AUTH: "fix `DASHSCOPE_API_KEY` (or `OSS_ACCESS_KEY_ID`/`OSS_ACCESS_KEY_SECRET`), then resume",
    ExitCode.THRESHOLD: "look at the failures, then resume; `--retry-failed` also sends the items the outage "
                        "failed again",
    ExitCode.SPEND_CAP: "raise the cap and resume",
    ExitCode.LOCKED: "wait for it, or give this run its own `--out`",
}


def epilog() -> str:
    """The exit-code table as plain text, for `--help` epilogs."""
    rows = "\n".join(f"  {int(code)}  {code.meaning}" for code in ExitCode)
    return f"exit codes:\n{rows}"
