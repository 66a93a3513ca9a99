"""The QPS pacers: a GCRA grid with a sliding-window guard per QPS group, in memory or shared
by every process on an account through Redis; both backends queue requests in the same submit
and poll lanes (`lane_queue`).

May import: core, config.
"""
