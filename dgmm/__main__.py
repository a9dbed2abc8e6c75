"""``python -m dgmm``: run the demo on the default LocalCluster and print a summary."""

from __future__ import annotations

import logging
import sys

from .demo import run_demo


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    summary = run_demo()
    for key, value in summary.to_dict().items():
        print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
