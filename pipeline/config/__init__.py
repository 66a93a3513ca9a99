"""Configuration: the frozen `Config` and how it is loaded (file, `PIPELINE_*` variables,
flags; every key checked at load, errors naming the key and where it came from), and the cost
model that reads the config's price table (`pricing`).

May import: core.
"""
