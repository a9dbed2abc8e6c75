"""The ``dgmm`` command line (see :mod:`dgmm.cli.commands`)."""

from __future__ import annotations

from dgmm.cli.commands import cli, main

__all__ = ["cli", "main"]
