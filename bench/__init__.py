"""The benchmark suite: `python -m bench` (or `make bench`) runs every scenario against the
emulator on 127.0.0.1 and writes BENCHMARKS.md and bench/results.json. See `__main__.py`."""
