"""What a person or a monitor sees of a run: the counts and summary, live progress, the HTML run
report (plain data in, one self-contained file out), Prometheus metrics (textfile and
Pushgateway) and dead man's switch pings.

May import: core, config.
"""
