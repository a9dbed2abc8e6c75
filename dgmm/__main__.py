"""``python -m dgmm``: the ``dgmm`` command line (``python -m dgmm demo`` runs the demo)."""

from __future__ import annotations

from dgmm.cli import main

if __name__ == "__main__":
    main()
