"""The mixture of multinomials behind the model-family interface (``"multinomial"``).

The numerics are :mod:`dgmm.core.multinomial`'s (sparse x dense E-step,
``X^T R`` statistics mergeable by ``+``, ``MultinomialNB``'s smoothing); this
module adds what the engine needs: the parameters naming their family, the
responsibility sources (an E-step, and random responsibilities for
``init_params="random"``), lockstep statistics from one read of a chunk,
the re-seed policy for collapsed components, and the stored form. The
sources of an E-step are :class:`MultinomialEStep`; the initialisation's are
:class:`RandomMultinomialResp` and
:class:`dgmm.core.multinomial_seeding.HellingerAssign`.

Smoothing makes the M-step a MAP step: it maximises
``n * L(theta) + alpha * sum_kw log b_kw``, so the mean log-likelihood ``L``
the loop tracks may drop by up to the prior's gain divided by ``n``. The
M-step records that amount on the new parameters
(:attr:`MultinomialMixtureParams.prior_gain`) and :meth:`MultinomialFamily.decrease_tolerance`
allows it, so only a drop EM cannot explain is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dgmm.core import multinomial as mn
from dgmm.core.family import FitConfig, ReseedEvent, register_family, rounding_tolerance
from dgmm.core.multinomial_seeding import HellingerAssign
from dgmm.errors import DegenerateComponentError, InvalidDataError, ModelFormatError

__all__ = [
    "MULTINOMIAL",
    "MultinomialEStep",
    "MultinomialFamily",
    "MultinomialMixtureParams",
    "RandomMultinomialResp",
    "as_mixture_params",
    "log_prior",
]

NAME = "multinomial"
#: Spread (log scale) of the perturbation that splits a word distribution in two.
SPLIT_SCALE = 0.5


@dataclass(frozen=True, eq=False)
class MultinomialMixtureParams(mn.MultinomialParams):
    """:class:`~dgmm.core.multinomial.MultinomialParams` of the ``"multinomial"`` family.

    ``prior_gain`` (>= 0): how much the smoothing prior's term rose, per unit
    of weight, in the M-step that made these parameters; the next iteration's
    mean log-likelihood may fall by that much (see the module docstring).

    Examples
    --------
    >>> p = as_mixture_params(mn.MultinomialParams.from_probabilities([1.0], [[0.25, 0.75]]))
    >>> p.family, p.n_components, p.n_features
    ('multinomial', 1, 2)
    """

    prior_gain: float = 0.0
    family: ClassVar[str] = NAME

    def equals(self, other: Any) -> bool:
        """Bit-for-bit equality of the weights and log-probabilities."""
        return (
            isinstance(other, mn.MultinomialParams)
            and np.array_equal(self.weights, other.weights)
            and np.array_equal(self.feature_log_prob, other.feature_log_prob)
        )


def as_mixture_params(params: mn.MultinomialParams, prior_gain: float = 0.0) -> MultinomialMixtureParams:
    """``params`` as parameters of the ``"multinomial"`` family (no copy of the arrays)."""
    return MultinomialMixtureParams(params.weights, params.feature_log_prob, float(prior_gain))


def log_prior(params: mn.MultinomialParams, alpha: float) -> float:
    """``alpha * sum_kw log b_kw``: the log of the smoothing's Dirichlet prior (up to a constant)."""
    if alpha == 0:
        return 0.0
    return float(alpha * np.maximum(params.feature_log_prob, mn.LOG_PROB_FLOOR).sum())


@dataclass(frozen=True, eq=False)
class MultinomialEStep:
    """The E-step source: the parameters, prepared once per worker for the data's dtype."""

    params: MultinomialMixtureParams
    _prepared: dict[str, mn.Prepared] = field(default_factory=dict, repr=False)
    family: ClassVar[str] = NAME

    @property
    def n_components(self) -> int:
        return self.params.n_components

    def prepared(self, dtype: np.dtype) -> mn.Prepared:
        """``log B^T`` and ``log pi`` in ``dtype``, computed on first use (on the worker)."""
        key = np.dtype(dtype).str
        if key not in self._prepared:
            self._prepared[key] = mn.prepare(self.params, dtype)
        return self._prepared[key]

    def __getstate__(self) -> dict[str, Any]:
        # Ship the parameters only; each worker prepares its own copy.
        return {"params": self.params, "_prepared": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "params", state["params"])
        object.__setattr__(self, "_prepared", {})


@dataclass(frozen=True)
class RandomMultinomialResp:
    """Random responsibilities (``init_params="random"``): Dirichlet(1) per row, seeded per chunk."""

    n_components: int
    seed: int
    family: ClassVar[str] = NAME


def _random_stats(
    x: sp.csr_matrix | np.ndarray,
    source: RandomMultinomialResp,
    sample_weight: np.ndarray | None,
    chunk_index: int,
) -> mn.MultinomialStats:
    """nk and X^T R for random R (n_rows, K); ``loglik`` 0 (no model yet)."""
    rng = np.random.default_rng([source.seed, chunk_index])
    resp = rng.dirichlet(np.ones(source.n_components), size=x.shape[0])
    if sample_weight is not None:
        resp *= np.asarray(sample_weight, dtype=np.float64)[:, None]
    counts = np.asarray(x.T @ resp, dtype=np.float64)
    weight = float(x.shape[0]) if sample_weight is None else float(np.sum(sample_weight))
    return mn.MultinomialStats(resp.sum(axis=0), counts, 0.0, weight, x.shape[0])


def _split(
    log_prob: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two word distributions (log) around ``log_prob``: multiplied by exp(+-noise), renormalised."""
    noise = rng.normal(0.0, SPLIT_SCALE, size=log_prob.shape)
    out = []
    for sign in (1.0, -1.0):
        moved = np.where(np.isfinite(log_prob), log_prob + sign * noise, log_prob)
        top = moved[np.isfinite(moved)].max()
        out.append(moved - (top + np.log(np.exp(moved - top).sum())))
    return out[0], out[1]


class MultinomialFamily:
    """Mixtures of multinomials over a vocabulary of ``n_features`` words (counts, sparse or dense)."""

    name = NAME

    def e_step(self, params: mn.MultinomialParams) -> MultinomialEStep:
        if not isinstance(params, MultinomialMixtureParams):
            params = as_mixture_params(params)
        return MultinomialEStep(params)

    def chunk_stats(
        self,
        block: Any,
        sources: tuple[Any, ...],
        sample_weight: np.ndarray | None = None,
        *,
        block_rows: int | None = None,
        chunk_index: int = 0,
        row_offset: int = 0,
    ) -> tuple[mn.MultinomialStats | mn.SparseMultinomialStats, ...]:
        # The chunk is checked and converted once; every restart's statistics reuse it.
        x = mn.as_count_block(block, row_offset=row_offset, chunk_index=chunk_index)
        out = []
        for source in sources:
            if isinstance(source, RandomMultinomialResp):
                out.append(_random_stats(x, source, sample_weight, chunk_index))
                continue
            if isinstance(source, HellingerAssign):
                out.append(source.stats(x, sample_weight))
                continue
            out.append(
                mn.chunk_stats(
                    x, source.prepared(x.dtype), sample_weight, block_rows=block_rows,
                    row_offset=row_offset, chunk_index=chunk_index,
                )
            )
        return tuple(out)

    def check_block(self, block: Any, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
        mn.as_count_block(block, row_offset=row_offset, chunk_index=chunk_index)

    def m_step(
        self,
        stats: mn.MultinomialStats | mn.SparseMultinomialStats,
        params: mn.MultinomialParams | None,
        config: FitConfig,
        dtype: np.dtype,
        rng: np.random.Generator,
    ) -> tuple[MultinomialMixtureParams, list[ReseedEvent]]:
        """MultinomialNB's M-step with ``config.alpha``; collapsed components re-seeded.

        A component whose weight fell below one average row's is replaced by
        a split of the heaviest one: that component's word distribution times
        ``exp(+noise)`` and ``exp(-noise)`` (renormalised), each with half its
        weight; each re-seed is a ``"reseed"`` event (reason
        ``"weight_collapsed"``). ``on_degenerate="raise"`` raises
        :class:`~dgmm.errors.DegenerateComponentError` instead.
        """
        alpha = float(getattr(config, "alpha", 1.0))
        result = mn.m_step(stats, alpha)
        new = result.params
        events: list[ReseedEvent] = []
        if result.collapsed:
            nk = stats.to_dense().nk
            if config.on_degenerate == "raise":
                raise DegenerateComponentError(
                    f"Component(s) {list(result.collapsed)} of the multinomial mixture collapsed "
                    f"(weights {[float(nk[k]) for k in result.collapsed]}, less than one average "
                    "document's); expected every component to keep documents. Use fewer "
                    "components, another init_params or random_state, or on_degenerate='reseed'."
                )
            weights = new.weights.copy()
            log_prob = new.feature_log_prob.copy()
            for k in result.collapsed:
                j = int(np.argmax(weights))
                if j == k or weights[j] <= 0:
                    continue
                log_prob[j], log_prob[k] = _split(log_prob[j], rng)
                weights[k] = weights[j] = 0.5 * (weights[j] + weights[k])
                events.append(
                    {"event": "reseed", "component": int(k), "split_from": j, "reason": "weight_collapsed", "nk": float(nk[k])}
                )
            new = mn.MultinomialParams(weights / weights.sum(), log_prob)
        gain = 0.0
        if params is not None and stats.weight > 0 and not events:
            gain = max(0.0, (log_prior(new, alpha) - log_prior(params, alpha)) / stats.weight)
        return as_mixture_params(new, gain), events

    def decrease_tolerance(
        self, params: mn.MultinomialParams, config: FitConfig, dtype: np.dtype, lower_bound: float
    ) -> float:
        gain = float(getattr(params, "prior_gain", 0.0))
        return rounding_tolerance(dtype, lower_bound) + gain * (1.0 + 1e-6)

    def log_prob_resp(self, block: Any, params: mn.MultinomialParams) -> tuple[np.ndarray, np.ndarray]:
        return mn.estimate_log_prob_resp(block, params)

    def n_parameters(self, params: mn.MultinomialParams) -> int:
        return mn.n_parameters(params.n_components, params.n_features)

    def sample(
        self, params: mn.MultinomialParams, n_samples: int, rng: np.random.Generator, doc_length: Any = 100
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """``n_samples`` documents of ``doc_length`` words (CSR counts) and their components."""
        return mn.sample(params, n_samples, doc_length, rng)

    def to_arrays(self, params: mn.MultinomialParams) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "n_components": int(params.n_components),
            "n_features": int(params.n_features),
            "dtype": "float64",
            "prior_gain": float(getattr(params, "prior_gain", 0.0)),
        }
        return meta, {"weights": params.weights, "feature_log_prob": params.feature_log_prob}

    def from_arrays(
        self, meta: Mapping[str, Any], load: Callable[[str], np.ndarray], where: str
    ) -> MultinomialMixtureParams:
        try:
            shape = (int(meta["n_components"]), int(meta["n_features"]))
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(
                f"{where}: its metadata lacks integer 'n_components' and 'n_features' (got "
                f"{meta.get('n_components')!r}, {meta.get('n_features')!r}). The file was edited "
                "or corrupted: save the model again."
            ) from None
        weights, log_prob = load("weights"), load("feature_log_prob")
        if weights.shape != shape[:1] or log_prob.shape != shape:
            raise ModelFormatError(
                f"{where}: weights.npy {weights.shape} and feature_log_prob.npy {log_prob.shape} "
                f"do not fit a mixture of {shape[0]} multinomials over {shape[1]} words (expected "
                f"{shape[:1]} and {shape}). The files do not belong together: save the model again."
            )
        try:
            return MultinomialMixtureParams(weights, log_prob, float(meta.get("prior_gain", 0.0)))
        except (InvalidDataError, ValueError) as exc:
            raise ModelFormatError(f"{where}: {exc}") from None


#: The multinomial family, registered as ``"multinomial"``.
MULTINOMIAL = register_family(MultinomialFamily())
