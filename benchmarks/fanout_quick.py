"""The quick fan-out benchmark, kept for old commands: the same as

    python benchmarks/run.py --quick [options]

(run.py holds the runner; see benchmarks/README.md). ``build_loadgen`` is
re-exported for scripts that build the load generator through this module.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import build_loadgen, main  # noqa: E402

__all__ = ["build_loadgen", "main"]

if __name__ == "__main__":
    sys.exit(main(["--quick", *sys.argv[1:]]))
