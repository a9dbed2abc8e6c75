"""The model-family interface: everything the EM engine needs from a model.

The pass over the data (:mod:`dgmm.graph`), the loop with its lockstep
restarts, convergence and re-seeding hooks (:mod:`dgmm.fit.loop`),
checkpoints and model files (:mod:`dgmm.io`) are written against
:class:`MixtureFamily` alone. A family is a stateless object registered
under its name; its parameter objects say which family they belong to
(``params.family``, the name), and so do the responsibility sources sent to
the workers. Stored parameters carry the name too, so a checkpoint or model
file is read back by the family that wrote it.

What a family provides:

========================  =====================================================
``e_step(params)``        a picklable responsibility source: the per-pass
                          constants shipped once to the workers
``chunk_stats``           per-chunk statistics, one per source (the lockstep
                          restarts share the one read of the chunk), float64,
                          merged by ``+`` (:class:`Stats`)
``check_block``           the data check of a fit's first pass (NaN/Inf,
                          named by chunk and global row)
``m_step``                new parameters from merged statistics, on the
                          client, with the re-seed policy; typed events
``decrease_tolerance``    how far the mean log-likelihood may drop by rounding
``log_prob_resp``         per-row ``log p(x)`` and log-responsibilities
                          (prediction, scoring)
``n_parameters``          free parameters (BIC / AIC)
``sample``                draws from the mixture
``to_arrays`` /           parameters as (JSON-able metadata, named float
``from_arrays``           arrays) and back, validated
========================  =====================================================

This module is numpy-only, as the whole core.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, TypeVar, get_args, runtime_checkable

import numpy as np

from dgmm.errors import InvalidOptionError

__all__ = [
    "DEFAULT_FAMILY",
    "DecreaseEvent",
    "Event",
    "EventKind",
    "FitConfig",
    "MixtureFamily",
    "MixtureParams",
    "REASON_TEXT",
    "ReseedEvent",
    "ReseedReason",
    "ResponsibilitySource",
    "Stats",
    "family_names",
    "family_of",
    "get_family",
    "information_criteria",
    "merge",
    "register_family",
    "reseed_from_heaviest",
    "rounding_tolerance",
]

#: The family of stored parameters that do not name one (model files written
#: before families existed are Gaussian mixtures).
DEFAULT_FAMILY = "gaussian"

#: What happened in an iteration, the ``event`` field of a history entry.
EventKind = Literal["reseed", "likelihood_decrease"]
#: Why a component was re-seeded: the ``reason`` code of a ``"reseed"`` event.
ReseedReason = Literal["not_positive_definite", "variance_within_rounding", "weight_collapsed"]
#: The words logs and messages use for each reason.
REASON_TEXT: dict[ReseedReason, str] = {
    "not_positive_definite": "covariance not positive definite",
    "variance_within_rounding": "variance within rounding of zero (collapsed onto identical rows)",
    "weight_collapsed": "weight collapsed",
}
assert set(REASON_TEXT) == set(get_args(ReseedReason))


class ReseedEvent(TypedDict):
    """Component ``component`` was replaced by a split of ``split_from``."""

    event: Literal["reseed"]
    component: int
    split_from: int
    reason: ReseedReason
    nk: float


class DecreaseEvent(TypedDict):
    """The mean log-likelihood dropped by ``amount``, more than rounding explains."""

    event: Literal["likelihood_decrease"]
    amount: float


Event = ReseedEvent | DecreaseEvent

_S = TypeVar("_S", bound="Stats")


@runtime_checkable
class Stats(Protocol):
    """Statistics of a set of rows: ``stats(A u B) == stats(A) + stats(B)``.

    ``loglik`` is ``sum_i w_i log p(x_i)`` under the parameters of the pass,
    ``weight`` is ``sum_i w_i`` (the row count without sample weights),
    ``n_rows`` the rows seen; all family-specific sums are float64.
    """

    loglik: float
    weight: float
    n_rows: int

    def __add__(self: _S, other: _S) -> _S: ...

    @property
    def mean_loglik(self) -> float:
        """``loglik / weight``: the lower bound the loop tracks (N-invariant)."""
        ...


@runtime_checkable
class MixtureParams(Protocol):
    """Immutable parameters of one mixture; ``family`` names its family."""

    family: str

    @property
    def n_components(self) -> int: ...

    def equals(self, other: Any) -> bool:
        """Bit-for-bit equality of every array (determinism tests)."""
        ...


class ResponsibilitySource(Protocol):
    """What ``chunk_stats`` takes responsibilities from; picklable, small."""

    family: str

    @property
    def n_components(self) -> int: ...


class FitConfig(Protocol):
    """What a family's M-step may read of the fit's configuration.

    Families read the attributes they define (the Gaussian family also reads
    ``covariance_type``); the engine passes the fit's ``EMConfig``.
    """

    reg_covar: float
    on_degenerate: str


class MixtureFamily(Protocol):
    """The model-family interface (see the module docstring)."""

    name: str

    def e_step(self, params: Any) -> ResponsibilitySource:
        """The source of an E-step with ``params``, shipped once per pass."""
        ...

    def chunk_stats(
        self,
        block: Any,
        sources: tuple[Any, ...],
        sample_weight: np.ndarray | None = None,
        *,
        block_rows: int | None = None,
        chunk_index: int = 0,
        row_offset: int = 0,
    ) -> tuple[Stats, ...]:
        """One ``Stats`` per source from one read of a row chunk; memory bounded by ``block_rows``."""
        ...

    def check_block(self, block: Any, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
        """Raise ``InvalidDataError`` naming the first invalid value by its global row."""
        ...

    def m_step(
        self, stats: Any, params: Any, config: FitConfig, dtype: np.dtype, rng: np.random.Generator
    ) -> tuple[Any, list[ReseedEvent]]:
        """New parameters from the statistics of a pass made with ``params``."""
        ...

    def decrease_tolerance(self, params: Any, config: FitConfig, dtype: np.dtype, lower_bound: float) -> float:
        """How far the mean log-likelihood may drop in one iteration without a bug."""
        ...

    def log_prob_resp(self, block: Any, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """``log p(x)`` (n_rows,) and log-responsibilities (n_rows, K) of a block."""
        ...

    def n_parameters(self, params: Any) -> int:
        """Free parameters of the mixture (BIC / AIC)."""
        ...

    def sample(self, params: Any, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(X, labels)``: ``n_samples`` draws and the component of each."""
        ...

    def to_arrays(self, params: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata (shapes, options) and named float64 arrays."""
        ...

    def from_arrays(self, meta: Mapping[str, Any], load: Callable[[str], np.ndarray], where: str) -> Any:
        """Parameters from ``to_arrays``' metadata and ``load(name)`` of each array.

        Raises ``ModelFormatError`` (naming ``where``) for metadata or arrays
        that do not describe valid parameters.
        """
        ...


_FAMILIES: dict[str, MixtureFamily] = {}
# Families of dgmm itself, imported on first use so importing this module
# stays cheap and free of cycles (a family module imports this one).
_BUILTIN = {
    "gaussian": "dgmm.core.gaussian",
    "lowrank": "dgmm.core.lowrank_family",
    "multinomial": "dgmm.core.multinomial_family",
}

_F = TypeVar("_F", bound=MixtureFamily)


def register_family(family: _F) -> _F:
    """Register ``family`` under ``family.name`` (replacing one of that name); returns it."""
    _FAMILIES[family.name] = family
    return family


def family_names() -> list[str]:
    """Names of the families dgmm knows (built-in and registered)."""
    return sorted(set(_FAMILIES) | set(_BUILTIN))


def get_family(name: str) -> MixtureFamily:
    """The family registered as ``name``."""
    if name not in _FAMILIES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _FAMILIES[name]
    except KeyError:
        raise InvalidOptionError(
            f"Unknown model family {name!r}; expected one of {family_names()}. A family "
            "defined outside dgmm must be registered with dgmm.core.family.register_family "
            "before its parameters are used or read."
        ) from None


def family_of(obj: MixtureParams | ResponsibilitySource) -> MixtureFamily:
    """The family of parameters or of a responsibility source."""
    return get_family(obj.family)


def merge(stats: Sequence[_S]) -> _S:
    """Sum a short list of statistics left to right (one node of the reduction tree).

    A statistics class may provide ``merge_many(stats)`` giving the same bits
    with fewer temporaries (the multinomial's V x K partials).
    """
    merge_many = getattr(type(stats[0]), "merge_many", None)
    if merge_many is not None:
        return merge_many(stats)
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total


def information_criteria(total_loglik: float, n_parameters: int, n_samples: int) -> tuple[float, float]:
    """``(bic, aic)`` of a model with ``n_parameters`` free parameters, as scikit-learn.

    BIC = -2 log L + n_parameters log n_samples; AIC = -2 log L + 2 n_parameters,
    with ``total_loglik`` = log L summed over the ``n_samples`` rows.

    Examples
    --------
    >>> information_criteria(-100.0, 3, 50)[1]
    206.0
    """
    return (
        -2.0 * total_loglik + n_parameters * math.log(n_samples),
        -2.0 * total_loglik + 2.0 * n_parameters,
    )


def rounding_tolerance(dtype: np.dtype, lower_bound: float) -> float:
    """Rounding of a mean log-likelihood of size ``lower_bound`` computed in ``dtype``."""
    return max(1e-12, 100 * float(np.finfo(dtype).eps)) * (1.0 + abs(lower_bound))


P = TypeVar("P")


def reseed_from_heaviest(
    params: P,
    degenerate: Sequence[int],
    healthy: Sequence[int],
    split: Callable[[P, int, int], P],
    reason: Callable[[int], ReseedReason],
    nk: np.ndarray,
) -> tuple[P, list[ReseedEvent]]:
    """Re-seed each ``degenerate`` component in turn by splitting the heaviest healthy one into it.

    ``split(params, donor, k)`` is the family's split (``params.weights`` is read
    to choose the donor); a re-seeded component counts as healthy for the next.
    Returns the parameters and one ``"reseed"`` event per component, with its
    ``reason(k)`` code and its weight ``nk[k]`` in the statistics.
    """
    pool = list(healthy)
    events: list[ReseedEvent] = []
    for k in degenerate:
        donor = max(pool, key=lambda j: params.weights[j])  # type: ignore[attr-defined]
        params = split(params, donor, k)
        pool.append(k)
        events.append(
            {"event": "reseed", "component": int(k), "split_from": int(donor), "reason": reason(k),
             "nk": float(nk[k])}
        )
    return params, events
