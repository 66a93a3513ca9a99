"""The vocabulary every layer shares: a job and its result line, the capability table,
the exception tree, exit codes and how a run's outcome is decided, backoff schedules and the
retry budget, the lanes a request waits in, the service's base URL, output templates, the strict
YAML loader, bounded echoes of user values. Pure: no I/O beyond what a module's docstring says.

May import: nothing of the pipeline.
"""
