"""dgmm: Gaussian mixture models fitted by exact EM on data larger than memory, on Dask."""

from __future__ import annotations

from . import errors
from ._estimator_io import load
from .estimator import GaussianMixture
from .params import GMMParams
from .sources import open_dataset

__all__ = ["GMMParams", "GaussianMixture", "errors", "load", "open_dataset", "__version__"]

__version__ = "0.1.0"
