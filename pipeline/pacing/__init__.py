"""The QPS pacers: a GCRA grid with a sliding-window guard per QPS group, in memory or shared
by every process on an account through Redis, each with its submit and poll lanes.

May import: core, config.
"""
