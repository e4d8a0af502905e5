#!/usr/bin/env python3
"""Entry point: ``python run.py --help``."""

import sys

from harness.cli import add_commands
from server.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(extra_commands=add_commands))
