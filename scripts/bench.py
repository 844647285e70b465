#!/usr/bin/env python
"""The speed benchmark, same as `fishtune bench` (see `python scripts/bench.py --help`)."""

import sys

from fishtune.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
