"""Covariance types of the Gaussian family, one file each, and their registry.

Adding a type is one new file here (a :class:`CovarianceModel` subclass)
plus its line in ``COVARIANCE_TYPES``.
"""

from __future__ import annotations

from dgmm.core.covariance.base import CovarianceModel, Scratch
from dgmm.core.covariance.diag import Diag
from dgmm.core.covariance.full import Full
from dgmm.core.covariance.spherical import Spherical
from dgmm.core.covariance.tied import Tied
from dgmm.errors import InvalidOptionError

__all__ = [
    "COVARIANCE_TYPES",
    "CovarianceModel",
    "Diag",
    "Full",
    "Scratch",
    "Spherical",
    "Tied",
    "get_covariance_model",
]

COVARIANCE_TYPES: dict[str, CovarianceModel] = {
    model.name: model for model in (Full(), Tied(), Diag(), Spherical())
}


def get_covariance_model(covariance_type: str) -> CovarianceModel:
    """The model for a covariance type name ('full', 'tied', 'diag', 'spherical')."""
    try:
        return COVARIANCE_TYPES[covariance_type]
    except KeyError:
        raise InvalidOptionError(
            f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, "
            f"got {covariance_type!r}. Pass one of those names."
        ) from None
