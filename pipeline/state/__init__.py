"""What outlives a process: the checkpoint (SQLite), the results-file sink, resume and
reconciliation after a crash, the state-dir lock, shard naming, and the one rule of where a
run may write.

May import: core.
"""
