"""The catalog reader: a manifest (JSONL, CSV, YAML, TXT, stdin) streamed record by record, or a
local folder walked file by file (with the include/exclude globs and media-kind analyses every
listed source applies), each item checked and turned into one `Job` per analysis, or a
`Rejected` with its line number.

May import: core.
"""
