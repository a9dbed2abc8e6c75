"""The M-step on the client, with the re-seed policy for collapsed components.

Pure numpy: statistics in, new parameters and typed events out. The loop
(:mod:`dgmm.fit.loop`) and the initialisation call it; ``config`` is any
object with ``covariance_type``, ``reg_covar`` and ``on_degenerate``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dgmm.core.covariance import get_covariance_model
from dgmm.core.family import REASON_TEXT, ReseedEvent, ReseedReason, reseed_from_heaviest, rounding_tolerance
from dgmm.core.kernels import frame_shifts
from dgmm.core.options import CovarianceType, DegeneratePolicy
from dgmm.core.params import GMMParams, split_component
from dgmm.core.suffstats import SuffStats, m_step
from dgmm.errors import DegenerateComponentError, degenerate_message

__all__ = [
    "DEGENERATE_COVARIANCE",
    "MStepConfig",
    "REASON_TEXT",
    "ReseedReason",
    "decrease_tolerance",
    "em_update",
    "params_from_stats",
]

#: The reasons that mean the covariance itself is ill-defined. Which of the
#: two a collapsed component shows depends on the last bits of its computed
#: variance (exactly 0 on one CPU, 1e-13 on another): test for membership.
DEGENERATE_COVARIANCE: tuple[ReseedReason, ...] = ("not_positive_definite", "variance_within_rounding")


class MStepConfig(Protocol):
    """What the M-step reads of a fit's configuration."""

    covariance_type: CovarianceType
    reg_covar: float
    on_degenerate: DegeneratePolicy


def decrease_tolerance(params: GMMParams, reg_covar: float, dtype: np.dtype, lower_bound: float) -> float:
    """How far the mean log-likelihood may drop without a bug.

    Rounding of the mean (relative to its size) plus the effect of adding
    ``reg_covar`` to the covariances, which makes the M-step not exactly EM:
    at most ``reg_covar * sum_k w_k tr(P_k)`` per sample.
    """
    rounding = rounding_tolerance(dtype, lower_bound)
    traces = params.model.precision_traces(
        params.precisions_cholesky, params.n_components, params.n_features
    )
    return float(rounding + reg_covar * np.dot(params.weights, traces))


def em_update(
    params: GMMParams,
    stats: SuffStats,
    config: MStepConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[ReseedEvent]]:
    """One M-step after an E-step with ``params`` (see ``params_from_stats``)."""
    return params_from_stats(stats, frame_shifts(params, dtype), config, dtype, rng)


def params_from_stats(
    stats: SuffStats,
    shifts: np.ndarray,
    config: MStepConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[ReseedEvent]]:
    """The M-step, with collapsed components re-seeded or reported.

    A component is degenerate when its covariance is not positive definite,
    or has a variance within rounding of zero (collapsed onto identical rows
    with ``reg_covar=0``), or (re-seeding only) when it holds less than one
    average row's weight.
    With ``on_degenerate="reseed"`` each is replaced by a split of the
    heaviest component along its principal axis; the events are returned.
    """
    n_components = shifts.shape[0]
    result = m_step(stats, shifts, config.covariance_type, config.reg_covar, dtype=dtype)
    bad = set(result.bad.tolist())
    unresolved = set(result.unresolved.tolist())
    if config.on_degenerate == "raise":
        if bad or unresolved:
            raise DegenerateComponentError(
                degenerate_message(
                    sorted(bad | unresolved), dtype,
                    reason="not positive definite, or a variance within rounding of zero",
                )
            )
        return GMMParams(
            result.weights, result.means, result.covariances, result.precisions_cholesky,
            config.covariance_type,
        ), []

    if get_covariance_model(config.covariance_type).shared and bad:
        # One shared covariance: nothing to split from, re-seeding cannot help.
        raise DegenerateComponentError(
            degenerate_message(
                list(range(n_components)), dtype,
                reason="the shared (tied) covariance is not positive definite",
            )
        )
    floor = stats.weight / max(stats.n_rows, 1)
    collapsed = set(np.flatnonzero(stats.nk < floor).tolist())
    degenerate = sorted(bad | unresolved | collapsed)
    if len(degenerate) == n_components:
        raise DegenerateComponentError(
            degenerate_message(degenerate, dtype, reason="every component collapsed")
        )
    # Factor the healthy components; degenerate ones get a placeholder first.
    covariances = result.covariances.copy()
    weights = result.weights.copy()
    means = result.means.copy()
    healthy = [k for k in range(n_components) if k not in degenerate]
    shared = get_covariance_model(config.covariance_type).shared  # tied: one matrix, no per-k row
    for k in degenerate:
        donor = healthy[0]
        if not shared:
            covariances[k] = covariances[donor]
        means[k] = means[donor]
        weights[k] = 0.0
    new = GMMParams.from_covariances(weights / weights.sum(), means, covariances, config.covariance_type)
    return reseed_from_heaviest(
        new, degenerate, healthy, lambda p, donor, k: split_component(p, donor, k, rng),
        lambda k: (
            "not_positive_definite" if k in bad
            else "variance_within_rounding" if k in unresolved
            else "weight_collapsed"
        ),
        stats.nk,
    )
