"""One run, wired: preflight checks, the reader, submitters, pollers, chaining of analyses,
the spend ledger, the failure watch and shutdown, supervised by one task group (`runner`).

May import: core, config, manifest, service, pacing, state, observe, upload.
"""
