#!/usr/bin/env python3
"""Start a chatcore server: ``python server.py --help``."""
from chatcore.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
