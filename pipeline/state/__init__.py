"""What outlives a process: the checkpoint (SQLite: the jobs, the run's meta and manifests, the
uploads, the spend ledger, the run history and the time series, one store each behind
`Checkpoint`), the results-file sink, resume and reconciliation after a crash, the state-dir
lock, shard naming, and the one rule of where a run may write.

May import: core.
"""
