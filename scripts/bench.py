#!/usr/bin/env python3
"""Thin wrapper for a clone: the same as `gpucnn bench` (gpucnn/commands/bench.py)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gpucnn.commands.bench import *  # noqa: E402,F401,F403
from gpucnn.commands.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="scripts/bench.py"))
