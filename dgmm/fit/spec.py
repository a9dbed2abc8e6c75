"""The frozen configuration of a fit, as the fit layer passes it around."""

from __future__ import annotations

from dataclasses import dataclass

from dgmm import graph as _graph

__all__ = ["EMConfig"]


@dataclass(frozen=True)
class EMConfig:
    """What the loop needs to know besides data and starting parameters."""

    covariance_type: str
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    on_degenerate: str = "reseed"
    split_every: int = _graph.DEFAULT_SPLIT_EVERY
    block_rows: int | None = None
