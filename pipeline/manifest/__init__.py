"""The catalog reader: a manifest (JSONL, CSV, YAML, TXT, stdin) streamed record by record,
each item checked and turned into one `Job` per analysis, or a `Rejected` with its line number.

May import: core.
"""
