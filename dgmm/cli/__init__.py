"""The ``dgmm`` command line (see :mod:`dgmm.cli.commands`)."""

from __future__ import annotations

from dgmm.cli import select as _select  # noqa: F401  (registers ``dgmm select`` on the group)
from dgmm.cli.commands import cli, main

__all__ = ["cli", "main"]
