"""The command line: the argument parser, logging, `main` (which runs a command and maps
every outcome to one exit code), and the commands only the command line uses: validate,
status (and its history), export, report (the HTML run report of a state dir), demo.

May import: core, config, manifest, service, pacing, state, observe, upload, sources, engine, emulator.
"""
