"""The low-rank Gaussian family (mixtures of factor analysers) behind the model-family interface.

Everything the engine runs for ``covariance_type="lowrank"`` is reached through
:data:`LOWRANK`: the E-step source (:class:`LowRankEStep`, the per-pass
constants of :func:`dgmm.core.lowrank.prepare` computed once per dtype on each
worker), the chunk kernel, the M-step with the re-seed policy, prediction,
sampling and the stored form of the parameters. The numerics are
:mod:`dgmm.core.lowrank`'s; this module adds the policy around them.

Re-seeding follows the Gaussian family: a component whose weight collapsed
(less than one average row), whose noise came out non-positive or
non-finite, or whose smallest noise variance is within rounding of zero is
replaced by a split of the heaviest healthy component along its leading
direction (the top eigenvector of ``A A^T + Psi``); the events are returned
with the typed reasons of :data:`dgmm.core.family.ReseedReason`.
``on_degenerate="raise"`` raises ``DegenerateComponentError`` instead.

Examples
--------
>>> import numpy as np
>>> from dgmm.core.family import get_family
>>> from dgmm.core.lowrank import LowRankParams
>>> rng = np.random.default_rng(0)
>>> params = LowRankParams(np.array([0.5, 0.5]), np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]),
...                        rng.standard_normal((2, 3, 1)), np.ones((2, 3)))
>>> family = get_family("lowrank")
>>> x, _ = family.sample(params, 500, rng)
>>> (stats,) = family.chunk_stats(x, (family.e_step(params),))
>>> class Config:
...     reg_covar, on_degenerate = 1e-6, "reseed"
>>> new, events = family.m_step(stats, params, Config(), x.dtype, rng)
>>> new.factors.shape, events
((2, 3, 1), [])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from dgmm.core import lowrank as lr
from dgmm.core.family import (
    FitConfig,
    ReseedEvent,
    register_family,
    reseed_from_heaviest,
    rounding_tolerance,
)
from dgmm.core.kernels import require_finite_rows
from dgmm.core.lowrank import LowRankParams, LowRankStats
from dgmm.core.options import NOISE_TYPES
from dgmm.core.params import split_halves
from dgmm.errors import (
    DegenerateComponentError,
    InvalidDataError,
    ModelFormatError,
    ShapeMismatchError,
    degenerate_message,
)

__all__ = ["LOWRANK", "LowRankEStep", "LowRankFamily", "leading_direction", "split_component"]

ARRAY_NAMES = ("weights", "means", "factors", "noise_variances")

# As suffstats._RESOLUTION_FACTOR: a variance within this many eps of the
# component's scale is rounding noise (a component collapsed onto identical rows).
_RESOLUTION_FACTOR = 16.0
# Power iterations for the leading direction of A A^T + Psi (each O(D l)).
_POWER_ITERATIONS = 30


class LowRankEStep:
    """The E-step source of a low-rank mixture: parameters, and their per-pass
    constants computed once per dtype where the source lives.

    Pickled (scattered to the workers) as its parameters alone; a worker
    computes :func:`dgmm.core.lowrank.prepare` for its chunks' dtype once and
    every chunk it runs in this pass reuses it.
    """

    family: ClassVar[str] = "lowrank"

    def __init__(self, params: LowRankParams) -> None:
        self.params = params
        self._prepared: dict[str, lr.Prepared] = {}
        self._lock = threading.Lock()

    @property
    def n_components(self) -> int:
        return self.params.n_components

    def prepared(self, dtype: np.dtype) -> lr.Prepared:
        """The per-pass constants for blocks of ``dtype`` (computed once)."""
        key = np.dtype(dtype).str
        with self._lock:
            if key not in self._prepared:
                self._prepared[key] = lr.prepare(self.params, dtype)
            return self._prepared[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["params"])  # type: ignore[misc]

    def __dask_tokenize__(self) -> Any:
        return ("dgmm-lowrank-estep", *lr_arrays(self.params))


def lr_arrays(params: LowRankParams) -> tuple[np.ndarray, ...]:
    """The parameter arrays in ``ARRAY_NAMES`` order."""
    return tuple(getattr(params, name) for name in ARRAY_NAMES)


def _as_float_block(block: Any) -> np.ndarray:
    x = np.asarray(block)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def leading_direction(params: LowRankParams, k: int) -> tuple[float, np.ndarray]:
    """``(variance, unit vector)`` of the largest variance of ``C_k = A_k A_k^T + Psi_k``.

    Power iteration on ``C_k`` (matrix-vector products of cost O(D l)) started
    from the top left singular vector of ``A_k`` (exact for spherical noise);
    with rank 0, the feature of largest noise.
    """
    noise = params.noise_diag()[k]
    factors = params.factors[k]
    if params.rank == 0:
        j = int(np.argmax(noise))
        axis = np.zeros(params.n_features)
        axis[j] = 1.0
        return float(noise[j]), axis
    u = np.linalg.svd(factors, full_matrices=False)[0][:, 0]
    for _ in range(_POWER_ITERATIONS):
        v = factors @ (factors.T @ u) + noise * u
        u = v / np.linalg.norm(v)
    variance = float(u @ (factors @ (factors.T @ u)) + u @ (noise * u))
    # A fixed sign, so a split does not depend on the SVD's sign convention.
    j = int(np.argmax(np.abs(u)))
    return variance, u if u[j] >= 0 else -u


def split_component(params: LowRankParams, source: int, target: int) -> LowRankParams:
    """Split component ``source`` along its leading direction into ``source`` and ``target``.

    As the Gaussian family's split: the two halves of the Gaussian cut through
    its mean across the direction ``v`` of largest variance lambda, means
    ``mu +- sqrt(2 lambda / pi) v``, half the weight each, the variance along
    ``v`` shrunk by ``1 - 2/pi`` (the factors' part along ``v``; with rank 0
    the noise of that feature). The old contents of ``target`` are discarded.
    """
    variance, axis = leading_direction(params, source)
    weights, means = split_halves(params.weights, params.means, source, target, variance, axis)
    factors = params.factors.copy()
    noise = params.noise_variances.copy()
    shrink = 1.0 - 2.0 / math.pi
    if params.rank:
        a = factors[source]
        a = a - (1.0 - math.sqrt(shrink)) * np.outer(axis, axis @ a)
        factors[source] = factors[target] = a
        noise[target] = noise[source]
    else:
        noise[target] = noise[source]
        if params.noise_type == "diag":
            j = int(np.argmax(np.abs(axis)))
            noise[source, j] = noise[target, j] = shrink * noise[source, j]
    return LowRankParams(weights, means, factors, noise)


def _unresolved(stats: LowRankStats, params: LowRankParams, new: LowRankParams, dtype: np.dtype) -> set[int]:
    """Components whose smallest noise variance is within rounding of zero."""
    shifts = lr.frame_shifts(params, dtype)
    nk = stats.nk + 10.0 * np.finfo(np.dtype(dtype)).eps
    delta = stats.sum_x / nk[:, None]
    noise = new.noise_diag()
    largest = (noise + np.sum(new.factors**2, axis=2)).max(axis=1)
    center = (nk @ shifts) / nk.sum()
    scale = largest + ((shifts - center) ** 2).max(axis=1) + (delta**2).max(axis=1)
    floor = _RESOLUTION_FACTOR * np.finfo(np.float64).eps * scale
    return set(np.flatnonzero(noise.min(axis=1) <= floor).tolist())


class LowRankFamily:
    """Gaussian mixtures with covariances ``A_k A_k^T + Psi_k`` (MFA / MPPCA)."""

    name = "lowrank"

    def e_step(self, params: LowRankParams) -> LowRankEStep:
        return LowRankEStep(params)

    def chunk_stats(
        self,
        block: Any,
        sources: tuple[LowRankEStep, ...],
        sample_weight: np.ndarray | None = None,
        *,
        block_rows: int | None = None,
        chunk_index: int = 0,
        row_offset: int = 0,
    ) -> tuple[LowRankStats, ...]:
        # The chunk is in memory once; every lockstep restart's source reads it there.
        x = _as_float_block(block)
        w = None if sample_weight is None else np.asarray(sample_weight)
        return tuple(
            lr.chunk_stats(x, source.prepared(x.dtype), w, block_rows=block_rows) for source in sources
        )

    def check_block(self, block: Any, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
        require_finite_rows(np.asarray(block), row_offset=row_offset, chunk_index=chunk_index)

    def m_step(
        self,
        stats: LowRankStats,
        params: LowRankParams,
        config: FitConfig,
        dtype: np.dtype,
        rng: np.random.Generator,
    ) -> tuple[LowRankParams, list[ReseedEvent]]:
        """The EM update of :func:`dgmm.core.lowrank.m_step` with the re-seed policy."""
        dtype = np.dtype(dtype)
        n_components = params.n_components
        reseed = config.on_degenerate != "raise"
        # Re-seeding: a component with less than one average row's weight has
        # collapsed (as the Gaussian family); raising: only numerical collapse.
        floor = stats.weight / max(stats.n_rows, 1) if reseed else None
        result = lr.m_step(stats, params, reg_covar=config.reg_covar, dtype=dtype, min_nk=floor)
        bad = set(result.bad.tolist())
        new = result.params
        unresolved = _unresolved(stats, params, new, dtype) - bad
        if not reseed:
            if bad or unresolved:
                raise DegenerateComponentError(
                    degenerate_message(
                        sorted(bad | unresolved), dtype,
                        reason="weight collapsed, noise variance not positive, or within rounding of zero",
                    )
                )
            return new, []
        degenerate = sorted(bad | unresolved)
        if not degenerate:
            return new, []
        if len(degenerate) == n_components:
            raise DegenerateComponentError(
                degenerate_message(degenerate, dtype, reason="every component collapsed")
            )
        collapsed = set(np.flatnonzero(stats.nk <= (floor or 0.0)).tolist())
        healthy = [k for k in range(n_components) if k not in degenerate]
        weights = new.weights.copy()
        weights[degenerate] = 0.0
        new = LowRankParams(weights / weights.sum(), new.means, new.factors, new.noise_variances)
        return reseed_from_heaviest(
            new, degenerate, healthy, split_component,
            lambda k: (
                "weight_collapsed" if k in collapsed
                else "variance_within_rounding" if k in unresolved
                else "not_positive_definite"
            ),
            stats.nk,
        )

    def decrease_tolerance(
        self, params: LowRankParams, config: FitConfig, dtype: np.dtype, lower_bound: float
    ) -> float:
        """Rounding plus ``reg_covar * sum_k w_k tr(C_k^-1)`` (bounded by ``sum 1/psi``)."""
        traces = (1.0 / params.noise_diag()).sum(axis=1)
        return float(rounding_tolerance(dtype, lower_bound) + config.reg_covar * np.dot(params.weights, traces))

    def log_prob_resp(self, block: Any, params: LowRankParams) -> tuple[np.ndarray, np.ndarray]:
        return lr.estimate_log_prob_resp(_as_float_block(block), params)

    def n_parameters(self, params: LowRankParams) -> int:
        return params.n_parameters()

    def sample(
        self, params: LowRankParams, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return lr.sample(params, n_samples, rng)

    def to_arrays(self, params: LowRankParams) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "covariance_type": "lowrank",
            "n_components": int(params.n_components),
            "n_features": int(params.n_features),
            "rank": int(params.rank),
            "noise_type": params.noise_type,
            "dtype": "float64",
        }
        arrays = {name: np.asarray(a, dtype=np.float64) for name, a in zip(ARRAY_NAMES, lr_arrays(params))}
        return meta, arrays

    def from_arrays(
        self, meta: Mapping[str, Any], load: Callable[[str], np.ndarray], where: str
    ) -> LowRankParams:
        try:
            n_components, n_features, rank = (int(meta[k]) for k in ("n_components", "n_features", "rank"))
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(
                f"{where}: a low-rank model's metadata needs integer 'n_components', 'n_features' "
                f"and 'rank'; got {meta.get('n_components')!r}, {meta.get('n_features')!r}, "
                f"{meta.get('rank')!r}. The file was edited or corrupted: save the model again."
            ) from None
        noise_type = meta.get("noise_type")
        if noise_type not in NOISE_TYPES:
            raise ModelFormatError(
                f"{where}: noise_type {noise_type!r} in its metadata; expected one of "
                f"{list(NOISE_TYPES)}. The file was edited or corrupted: save the model again."
            )
        expected = {
            "weights": (n_components,),
            "means": (n_components, n_features),
            "factors": (n_components, n_features, rank),
            "noise_variances": (n_components, n_features) if noise_type == "diag" else (n_components,),
        }
        arrays = {}
        for name in ARRAY_NAMES:
            array = load(name)
            if array.shape != expected[name]:
                raise ModelFormatError(
                    f"{where}: {name}.npy has shape {array.shape}, but a low-rank ({noise_type} noise) "
                    f"mixture with {n_components} components, {n_features} features and rank {rank} "
                    f"needs {expected[name]}. The files do not belong together: save the model again."
                )
            arrays[name] = array
        weights = arrays["weights"]
        if np.all(np.isfinite(weights)) and not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-6):
            raise ModelFormatError(
                f"{where}: weights.npy must sum to 1, got sum {weights.sum():.6g}. Save the model again."
            )
        try:
            return LowRankParams(**arrays)
        except (InvalidDataError, ShapeMismatchError) as exc:
            raise ModelFormatError(f"{where}: {exc} The arrays were edited or corrupted: save the model again.") from None


#: The low-rank family, registered as ``"lowrank"``.
LOWRANK = register_family(LowRankFamily())
assert LowRankParams.family == LowRankEStep.family == LOWRANK.name
