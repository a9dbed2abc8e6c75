"""The EM loop: lockstep restarts, convergence, re-seeding, history.

Every iteration is one ``stats_pass``: one read of the data that serves all
live restarts of ``n_init``. The M-step runs here, on the client, on K*D^2
numbers. Following scikit-learn, the lower bound recorded at iteration t is
the mean log-likelihood of the parameters that *entered* the E-step of t,
and convergence is ``|change| < tol`` on that mean (N-invariant).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from . import _graph
from ._kernels import EStep, frame_shifts
from .errors import DegenerateComponentError, LikelihoodDecreaseWarning, degenerate_message
from .params import GMMParams, split_component
from .suffstats import SuffStats, m_step

__all__ = ["EMConfig", "RestartState", "best_restart", "em_update", "params_from_stats", "run_em"]

logger = logging.getLogger("dgmm")


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


@dataclass
class RestartState:
    """One restart of ``n_init`` as the lockstep loop advances it."""

    index: int
    params: GMMParams
    rng: np.random.Generator
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    reseeded_last: bool = False


def decrease_tolerance(params: GMMParams, reg_covar: float, dtype: np.dtype, lower_bound: float) -> float:
    """How far the mean log-likelihood may drop without a bug.

    Rounding of the mean (relative to its size) plus the effect of adding
    ``reg_covar`` to the covariances, which makes the M-step not exactly EM:
    at most ``reg_covar * sum_k w_k tr(P_k)`` per sample.
    """
    rounding = max(1e-12, 100 * np.finfo(dtype).eps) * (1.0 + abs(lower_bound))
    traces = params.model.precision_traces(
        params.precisions_cholesky, params.n_components, params.n_features
    )
    return float(rounding + reg_covar * np.dot(params.weights, traces))


def em_update(
    params: GMMParams,
    stats: SuffStats,
    config: EMConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[dict[str, Any]]]:
    """One M-step after an E-step with ``params`` (see ``params_from_stats``)."""
    return params_from_stats(stats, frame_shifts(params, dtype), config, dtype, rng)


def params_from_stats(
    stats: SuffStats,
    shifts: np.ndarray,
    config: EMConfig,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[GMMParams, list[dict[str, Any]]]:
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

    if config.covariance_type == "tied" and bad:
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
    for k in degenerate:
        donor = healthy[0]
        covariances[k] = covariances[donor]
        means[k] = means[donor]
        weights[k] = 0.0
    new = GMMParams.from_covariances(weights / weights.sum(), means, covariances, config.covariance_type)
    events = []
    for k in degenerate:
        donor = max(healthy, key=lambda j: new.weights[j])
        new = split_component(new, donor, k, rng)
        healthy.append(k)
        if k in bad:
            reason = "covariance not positive definite"
        elif k in unresolved:
            reason = "variance within rounding of zero (collapsed onto identical rows)"
        else:
            reason = f"weight collapsed (nk={stats.nk[k]:.3g})"
        events.append({"event": "reseed", "component": int(k), "split_from": int(donor), "reason": reason})
    return new, events


def run_em(
    x: da.Array,
    restarts: list[RestartState],
    config: EMConfig,
    *,
    sample_weight: da.Array | None = None,
    check_finite: bool = True,
    on_iteration: Callable[[int, list[RestartState]], None] | None = None,
) -> list[RestartState]:
    """Advance every restart until it converges or ``max_iter`` passes are done.

    Restarts that converge leave the lockstep; the data is read once per
    iteration for all those still live.
    """
    dtype = x.dtype
    live = list(restarts)
    for iteration in range(1, config.max_iter + 1):
        if not live:
            break
        start = time.perf_counter()
        stats = _graph.stats_pass(
            x,
            tuple(EStep(r.params) for r in live),
            sample_weight,
            split_every=config.split_every,
            block_rows=config.block_rows,
            check_finite=check_finite and iteration == 1,
        )
        seconds = time.perf_counter() - start
        still_live = []
        for r, s in zip(live, stats):
            lower_bound = s.mean_loglik
            change = lower_bound - r.lower_bound
            events: list[dict[str, Any]] = []
            tolerance = decrease_tolerance(r.params, config.reg_covar, dtype, lower_bound)
            if change < -tolerance and not r.reseeded_last:
                message = (
                    f"EM decreased the mean log-likelihood of restart {r.index} at "
                    f"iteration {iteration} by {-change:.3g} (from {r.lower_bound:.12g} "
                    f"to {lower_bound:.12g}), more than rounding ({tolerance:.3g}) explains. "
                    "This is a bug or the data changed between passes; please report it."
                )
                warnings.warn(message, LikelihoodDecreaseWarning, stacklevel=2)
                events.append({"event": "likelihood_decrease", "amount": float(-change)})
            r.params, reseeds = em_update(r.params, s, config, dtype, r.rng)
            events.extend(reseeds)
            r.lower_bound = lower_bound
            r.lower_bounds.append(lower_bound)
            r.n_iter = iteration
            r.history.append(
                {
                    "iteration": iteration,
                    "lower_bound": lower_bound,
                    "change": change,
                    "seconds": seconds,
                    "events": events,
                }
            )
            for e in reseeds:
                logger.info(
                    "restart %d iteration %d: re-seeded component %d from %d (%s)",
                    r.index, iteration, e["component"], e["split_from"], e["reason"],
                )
            # A re-seed changes the model: it can lower the likelihood and must
            # not count as convergence.
            r.reseeded_last = bool(reseeds)
            if abs(change) < config.tol and not reseeds:
                r.converged = True
            else:
                still_live.append(r)
            logger.info(
                "restart %d iteration %d: mean log-likelihood %.10g, change %.3g, %.2fs",
                r.index, iteration, lower_bound, change, seconds,
            )
        live = still_live
        if on_iteration is not None:
            on_iteration(iteration, restarts)
    return restarts


def best_restart(restarts: list[RestartState]) -> RestartState:
    """The restart with the largest final lower bound (the first among ties)."""
    best = restarts[0]
    for r in restarts[1:]:
        if r.lower_bound > best.lower_bound:
            best = r
    return best
