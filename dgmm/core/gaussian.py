"""The Gaussian family: mixtures of Gaussians behind the model-family interface.

Everything Gaussian the engine runs is reached through :data:`GAUSSIAN`: the
E-step source (:class:`dgmm.core.kernels.EStep`), the chunk kernel
(:func:`dgmm.core.kernels.chunk_stats`), the M-step with the re-seed policy
(:mod:`dgmm.core.mstep`), prediction, sampling and the stored form of the
parameters. The covariance types are one file each under
:mod:`dgmm.core.covariance`; this module does not branch on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dgmm.core.covariance import COVARIANCE_TYPES, get_covariance_model
from dgmm.core.family import FitConfig, ReseedEvent, register_family
from dgmm.core.kernels import (
    EStep,
    Responsibilities,
    chunk_stats,
    estimate_log_prob_resp,
    require_finite_rows,
)
from dgmm.core.mstep import MStepConfig, decrease_tolerance, em_update
from dgmm.core.params import GMMParams
from dgmm.core.suffstats import SuffStats
from dgmm.errors import InvalidOptionError, ModelFormatError, ShapeMismatchError

__all__ = ["GAUSSIAN", "GaussianFamily"]

ARRAY_NAMES = ("weights", "means", "covariances", "precisions_cholesky")


class GaussianFamily:
    """Gaussian mixtures of every covariance type (``full``, ``tied``, ``diag``, ``spherical``)."""

    name = "gaussian"

    def e_step(self, params: GMMParams) -> EStep:
        return EStep(params)

    def chunk_stats(
        self,
        block: np.ndarray,
        sources: tuple[Responsibilities, ...],
        sample_weight: np.ndarray | None = None,
        *,
        block_rows: int | None = None,
        chunk_index: int = 0,
        row_offset: int = 0,
    ) -> tuple[SuffStats, ...]:
        return chunk_stats(
            block, sources, sample_weight, block_rows=block_rows, chunk_index=chunk_index, row_offset=row_offset
        )

    def check_block(self, block: np.ndarray, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
        require_finite_rows(np.asarray(block), row_offset=row_offset, chunk_index=chunk_index)

    def m_step(
        self,
        stats: SuffStats,
        params: GMMParams,
        config: MStepConfig,
        dtype: np.dtype,
        rng: np.random.Generator,
    ) -> tuple[GMMParams, list[ReseedEvent]]:
        return em_update(params, stats, config, dtype, rng)

    def decrease_tolerance(
        self, params: GMMParams, config: FitConfig, dtype: np.dtype, lower_bound: float
    ) -> float:
        return decrease_tolerance(params, config.reg_covar, dtype, lower_bound)

    def log_prob_resp(self, block: np.ndarray, params: GMMParams) -> tuple[np.ndarray, np.ndarray]:
        return estimate_log_prob_resp(block, params)

    def n_parameters(self, params: GMMParams) -> int:
        return params.n_parameters()

    def sample(
        self, params: GMMParams, n_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        counts = rng.multinomial(n_samples, params.weights / params.weights.sum())
        model = params.model
        X = np.vstack(
            [
                model.sample_component(rng, params.means[k], params.covariances, k, int(c))
                for k, c in enumerate(counts)
            ]
        )
        return X, np.repeat(np.arange(params.n_components), counts)

    def to_arrays(self, params: GMMParams) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "covariance_type": params.covariance_type,
            "n_components": int(params.n_components),
            "n_features": int(params.n_features),
            "dtype": "float64",
        }
        arrays = {name: np.asarray(getattr(params, name), dtype=np.float64) for name in ARRAY_NAMES}
        return meta, arrays

    def from_arrays(
        self, meta: Mapping[str, Any], load: Callable[[str], np.ndarray], where: str
    ) -> GMMParams:
        covariance_type = meta.get("covariance_type")
        try:
            model = get_covariance_model(str(covariance_type))
        except InvalidOptionError:
            raise ModelFormatError(
                f"{where} has covariance_type {covariance_type!r} in its metadata; expected one "
                f"of {', '.join(repr(n) for n in COVARIANCE_TYPES)}. The file was edited or "
                "corrupted: save the model again."
            ) from None
        try:
            n_components = int(meta["n_components"])
            n_features = int(meta["n_features"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(
                f"{where}: its metadata lacks integer 'n_components' and 'n_features' (got "
                f"{meta.get('n_components')!r}, {meta.get('n_features')!r}). The file was edited "
                "or corrupted: save the model again."
            ) from None
        expected = {
            "weights": (n_components,),
            "means": (n_components, n_features),
            "covariances": model.shape(n_components, n_features),
            "precisions_cholesky": model.shape(n_components, n_features),
        }
        arrays = {}
        for name in ARRAY_NAMES:
            array = load(name)
            if array.shape != expected[name]:
                raise ModelFormatError(
                    f"{where}: {name}.npy has shape {array.shape}, but a {covariance_type!r} "
                    f"mixture with {n_components} components and {n_features} features needs "
                    f"{expected[name]}. The files do not belong together: save the model again."
                )
            if not np.all(np.isfinite(array)):
                raise ModelFormatError(
                    f"{where}: {name}.npy contains NaN or Inf; a saved model has finite "
                    "parameters. Save the model again from a fitted estimator."
                )
            arrays[name] = array
        weights = arrays["weights"]
        if np.any(weights < 0) or not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-6):
            raise ModelFormatError(
                f"{where}: weights.npy must be non-negative and sum to 1, got min "
                f"{weights.min():.6g} and sum {weights.sum():.6g}. Save the model again."
            )
        bad = model.is_positive_definite(model.precisions(arrays["precisions_cholesky"]))
        if bad.size:
            raise ModelFormatError(
                f"{where}: the precisions of component(s) {bad.tolist()} are not positive "
                "definite. The arrays were edited or corrupted: save the model again."
            )
        try:
            return GMMParams(
                arrays["weights"],
                arrays["means"],
                arrays["covariances"],
                arrays["precisions_cholesky"],
                model.name,  # type: ignore[arg-type]  # checked against the registry above
            )
        except ShapeMismatchError as exc:  # pragma: no cover - shapes checked above
            raise ModelFormatError(f"{where}: {exc}") from None


#: The Gaussian family, registered as ``"gaussian"``.
GAUSSIAN = register_family(GaussianFamily())
assert GMMParams.family == EStep.family == GAUSSIAN.name
