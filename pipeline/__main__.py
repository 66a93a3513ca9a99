"""`python -m pipeline`: the command line (`pipeline.cli.main.entry`)."""

import sys

from .cli.main import entry

if __name__ == "__main__":
    sys.exit(entry())
