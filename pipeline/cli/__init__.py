"""The command line: the argument parser, logging, `main` (which runs a command and maps
every outcome to one exit code), and the commands only the command line uses: validate,
status, export, demo.

May import: core, config, manifest, service, pacing, state, observe, upload, sources, engine, emulator.
"""
