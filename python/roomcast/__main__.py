"""``python -m roomcast module:attr ...``: the ``roomcast`` command
(:mod:`roomcast.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
