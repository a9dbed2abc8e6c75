"""The parameters of one Gaussian mixture, and the surgery done on them.

``GMMParams`` is small (K*D^2 floats at most) and immutable: one object is
sent to the workers per EM pass and the M-step makes a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dgmm.core.covariance import CovarianceModel, get_covariance_model
from dgmm.core.options import CovarianceType
from dgmm.errors import DegenerateComponentError, ShapeMismatchError, degenerate_message

__all__ = ["GMMParams", "split_component", "split_halves"]


@dataclass(frozen=True, eq=False)
class GMMParams:
    """Weights, means and covariances of a Gaussian mixture, float64.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        (n_components, n_features, n_features) for 'full',
        (n_features, n_features) for 'tied', (n_components, n_features) for
        'diag', (n_components,) for 'spherical'.
    precisions_cholesky : ndarray
        Same shape as ``covariances``; precision = L L^T.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: CovarianceType
    model: CovarianceModel = field(init=False, repr=False, compare=False)
    #: The model family these parameters belong to (:mod:`dgmm.core.family`).
    family: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        model = get_covariance_model(self.covariance_type)
        object.__setattr__(self, "model", model)
        n_components, n_features = self.means.shape
        if self.weights.shape != (n_components,):
            raise ShapeMismatchError(
                f"weights must have shape ({n_components},), got {self.weights.shape}."
            )
        expected = model.shape(n_components, n_features)
        for name in ("covariances", "precisions_cholesky"):
            shape = getattr(self, name).shape
            if shape != expected:
                raise ShapeMismatchError(
                    f"{name} of a {self.covariance_type!r} mixture with "
                    f"{n_components} components and {n_features} features must have "
                    f"shape {expected}, got {shape}."
                )

    @property
    def n_components(self) -> int:
        """K, the number of components."""
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        """D, the number of features."""
        return self.means.shape[1]

    @classmethod
    def from_covariances(
        cls,
        weights: np.ndarray,
        means: np.ndarray,
        covariances: np.ndarray,
        covariance_type: CovarianceType,
        *,
        dtype: np.dtype | type = np.float64,
    ) -> GMMParams:
        """Build parameters, factorising the covariances.

        Raises ``DegenerateComponentError`` naming the components whose
        covariance is not positive definite.
        """
        model = get_covariance_model(covariance_type)
        covariances = np.asarray(covariances, dtype=np.float64)
        prec_chol, bad = model.precisions_cholesky(covariances)
        if bad.size:
            raise DegenerateComponentError(
                degenerate_message(
                    bad.tolist(), dtype, reason="not positive definite after the M-step"
                )
            )
        return cls(
            np.asarray(weights, dtype=np.float64),
            np.asarray(means, dtype=np.float64),
            covariances,
            prec_chol,
            covariance_type,
        )

    @classmethod
    def from_precisions(
        cls,
        weights: np.ndarray,
        means: np.ndarray,
        precisions: np.ndarray,
        covariance_type: CovarianceType,
    ) -> GMMParams:
        """Build parameters from precision matrices (``precisions_init``)."""
        model = get_covariance_model(covariance_type)
        precisions = np.asarray(precisions, dtype=np.float64)
        return cls(
            np.asarray(weights, dtype=np.float64),
            np.asarray(means, dtype=np.float64),
            model.covariances_from_precisions(precisions),
            model.precisions_cholesky_from_precisions(precisions),
            covariance_type,
        )

    @property
    def precisions(self) -> np.ndarray:
        """``precisions_`` from their Cholesky factors."""
        return self.model.precisions(self.precisions_cholesky)

    def center(self) -> np.ndarray:
        """The mixture's mean ``sum_k w_k mu_k``: the kernels' shift c0."""
        return self.weights @ self.means

    def n_parameters(self) -> int:
        """Free parameters: covariances, means and weights - 1 (BIC / AIC)."""
        return self.model.n_parameters(self.n_components, self.n_features)

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays and the covariance type (for persistence and tests)."""
        return {
            "covariance_type": self.covariance_type,
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "precisions_cholesky": self.precisions_cholesky,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMMParams:
        """The inverse of ``to_dict``."""
        return cls(
            np.asarray(data["weights"], dtype=np.float64),
            np.asarray(data["means"], dtype=np.float64),
            np.asarray(data["covariances"], dtype=np.float64),
            np.asarray(data["precisions_cholesky"], dtype=np.float64),
            data["covariance_type"],
        )

    def replace(
        self,
        *,
        weights: np.ndarray | None = None,
        means: np.ndarray | None = None,
        covariances: np.ndarray | None = None,
    ) -> GMMParams:
        """New parameters with some arrays replaced (factors recomputed if needed)."""
        weights = self.weights if weights is None else weights
        means = self.means if means is None else means
        if covariances is None:
            return GMMParams(
                weights, means, self.covariances, self.precisions_cholesky, self.covariance_type
            )
        return GMMParams.from_covariances(weights, means, covariances, self.covariance_type)

    def equals(self, other: object) -> bool:
        """Bit-for-bit equality of every array (determinism tests)."""
        return isinstance(other, GMMParams) and self.covariance_type == other.covariance_type and all(
            np.array_equal(a, b)
            for a, b in zip(
                (self.weights, self.means, self.covariances, self.precisions_cholesky),
                (other.weights, other.means, other.covariances, other.precisions_cholesky),
            )
        )


def split_component(
    params: GMMParams, source: int, target: int, rng: np.random.Generator
) -> GMMParams:
    """Split component ``source`` along its principal axis into ``source`` and ``target``.

    The two children are the halves of the Gaussian cut through its mean
    across its axis of largest variance lambda: means mu +- sqrt(2 lambda/pi) v,
    variance along v shrunk to (1 - 2/pi) lambda, half the weight each. The
    old contents of ``target`` (a collapsed component, or a slot being grown
    into) are discarded. This one operation serves both the "split"
    initialisation and the re-seeding of collapsed components.
    """
    model = params.model
    variance, axis = model.principal_axis(params.covariances, source, params.n_features, rng)
    weights, means = split_halves(params.weights, params.means, source, target, variance, axis)
    covariances = model.split_covariances(params.covariances, source, target, variance, axis)
    return GMMParams.from_covariances(weights, means, covariances, params.covariance_type)


def split_halves(
    weights: np.ndarray, means: np.ndarray, source: int, target: int, variance: float, axis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and means after splitting ``source`` into ``source`` and ``target`` along ``axis``.

    The halves of a Gaussian cut through its mean across a direction of
    variance ``variance``: means ``mu +- sqrt(2 variance / pi) axis``, half the
    weight each (``target``'s old weight goes to them), weights renormalised.
    Every family that splits a component shares this; the shape part (the
    variance along ``axis`` shrunk by ``1 - 2/pi``) is the family's.
    """
    offset = np.sqrt(2.0 * variance / np.pi) * axis
    means = means.copy()
    weights = weights.copy()
    parent_mean = means[source].copy()
    means[source] = parent_mean + offset
    means[target] = parent_mean - offset
    half = 0.5 * (weights[source] + (weights[target] if target != source else 0.0))
    weights[source] = weights[target] = half
    return weights / weights.sum(), means
