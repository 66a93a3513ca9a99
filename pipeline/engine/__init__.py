"""One run, wired: preflight checks, then stages on streams (reader, submitters, pollers, the
finisher that owns every item's ending, the sink, the lines after it: counts, chaining of
analyses, the failure watch), the spend ledger, the session's record for the report (its
history row and time series), and the stop with its supervisor, all under one set of task
groups (`runner`, `flow`).

May import: core, config, manifest, service, pacing, state, observe, upload, sources.
"""
