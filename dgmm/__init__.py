"""dgmm: Gaussian mixture models fitted by exact EM on data larger than memory, on Dask.

The public names are loaded lazily: ``import dgmm`` is cheap, and importing
``dgmm.core`` (what a worker unpickles with a kernel) loads neither Dask nor
scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dgmm._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dgmm import errors
    from dgmm._estimator_io import load
    from dgmm.core.params import GMMParams
    from dgmm.estimator import GaussianMixture
    from dgmm.fit.cluster import connect
    from dgmm.fit.data import open_dataset
    from dgmm.fit.predict import write_array
    from dgmm.selection import select

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "GaussianMixture": ("dgmm.estimator", "GaussianMixture"),
    "GMMParams": ("dgmm.core.params", "GMMParams"),
    "connect": ("dgmm.fit.cluster", "connect"),
    "errors": ("dgmm.errors", None),
    "load": ("dgmm._estimator_io", "load"),
    "MultinomialMixture": ("dgmm.multinomial_mixture", "MultinomialMixture"),
    "open_dataset": ("dgmm.fit.data", "open_dataset"),
    "select": ("dgmm.selection", "select"),
    "write_array": ("dgmm.fit.predict", "write_array"),
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dgmm' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
