"""The model-family seam, proved with a family that is not Gaussian.

A mixture of independent Poissons per feature is defined here, in the test,
and registered under its own name. Nothing in the loop, the graph or the
checkpoints knows it, yet with it:

* ``run_em`` equals a direct numpy EM written independently below;
* lockstep restarts read the data once per iteration;
* the tree reduction is chunking-invariant to rounding;
* its parameters round-trip through a checkpoint bit-identically, and a
  fit resumed from a checkpoint equals the uninterrupted fit bit for bit;
* the first pass runs the family's own data check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import pytest
import scipy.stats
from scipy.special import gammaln, logsumexp

from dgmm import graph as _graph
from dgmm.core.family import (
    DEFAULT_FAMILY,
    ReseedEvent,
    family_of,
    get_family,
    register_family,
    rounding_tolerance,
)
from dgmm.errors import InvalidDataError, InvalidOptionError, ModelFormatError
from dgmm.fit.loop import LoopCheckpoint, RestartState, restart_record, run_em
from dgmm.io import persistence
from dgmm.io.checkpoint import Checkpoint, CheckpointState

from ._helpers import ReadCounter, random_params

NAME = "poisson-test"


@dataclass(frozen=True, eq=False)
class PoissonParams:
    weights: np.ndarray  # (K,)
    rates: np.ndarray  # (K, D), lambda_kj > 0
    family: ClassVar[str] = NAME

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def equals(self, other: object) -> bool:
        return (
            isinstance(other, PoissonParams)
            and np.array_equal(self.weights, other.weights)
            and np.array_equal(self.rates, other.rates)
        )


@dataclass(frozen=True, eq=False)
class PoissonStats:
    nk: np.ndarray  # sum r
    sum_x: np.ndarray  # sum r x
    loglik: float
    weight: float
    n_rows: int

    def __add__(self, other: PoissonStats) -> PoissonStats:
        return PoissonStats(
            self.nk + other.nk, self.sum_x + other.sum_x, self.loglik + other.loglik,
            self.weight + other.weight, self.n_rows + other.n_rows,
        )

    @property
    def mean_loglik(self) -> float:
        return self.loglik / self.weight


@dataclass(frozen=True)
class PoissonEStep:
    params: PoissonParams
    family: ClassVar[str] = NAME

    @property
    def n_components(self) -> int:
        return self.params.n_components


def _log_joint(x: np.ndarray, params: PoissonParams) -> np.ndarray:
    """log w_k + sum_j x_j log lambda_kj - lambda_kj - log x_j! (n_rows, K)."""
    x = np.asarray(x, dtype=np.float64)
    return (
        np.log(params.weights)
        + x @ np.log(params.rates).T
        - params.rates.sum(axis=1)
        - gammaln(x + 1.0).sum(axis=1)[:, None]
    )


class PoissonFamily:
    name = NAME

    def e_step(self, params: PoissonParams) -> PoissonEStep:
        return PoissonEStep(params)

    def chunk_stats(
        self,
        block: np.ndarray,
        sources: tuple[PoissonEStep, ...],
        sample_weight: np.ndarray | None = None,
        *,
        block_rows: int | None = None,
        chunk_index: int = 0,
        row_offset: int = 0,
    ) -> tuple[PoissonStats, ...]:
        x = np.asarray(block, dtype=np.float64)
        w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        out = []
        for source in sources:
            log_joint = _log_joint(x, source.params)
            log_norm = logsumexp(log_joint, axis=1)
            resp = np.exp(log_joint - log_norm[:, None]) * w[:, None]
            out.append(PoissonStats(resp.sum(axis=0), resp.T @ x, float(w @ log_norm), float(w.sum()), x.shape[0]))
        return tuple(out)

    def check_block(self, block: np.ndarray, *, row_offset: int = 0, chunk_index: int | None = None) -> None:
        bad = ~np.isfinite(block) | (block < 0)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InvalidDataError(f"counts must be finite and >= 0: row {row_offset + row} (chunk {chunk_index})")

    def m_step(
        self, stats: PoissonStats, params: PoissonParams, config: Any, dtype: np.dtype, rng: np.random.Generator
    ) -> tuple[PoissonParams, list[ReseedEvent]]:
        return PoissonParams(stats.nk / stats.nk.sum(), stats.sum_x / stats.nk[:, None]), []

    def decrease_tolerance(self, params: PoissonParams, config: Any, dtype: np.dtype, lower_bound: float) -> float:
        return rounding_tolerance(dtype, lower_bound)

    def log_prob_resp(self, block: np.ndarray, params: PoissonParams) -> tuple[np.ndarray, np.ndarray]:
        log_joint = _log_joint(block, params)
        log_norm = logsumexp(log_joint, axis=1)
        return log_norm, log_joint - log_norm[:, None]

    def n_parameters(self, params: PoissonParams) -> int:
        return int(params.n_components - 1 + params.rates.size)

    def sample(self, params: PoissonParams, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(params.n_components, size=n_samples, p=params.weights)
        return rng.poisson(params.rates[labels]).astype(np.float64), labels

    def to_arrays(self, params: PoissonParams) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"n_components": params.n_components, "n_features": int(params.rates.shape[1])}
        return meta, {"weights": params.weights, "rates": params.rates}

    def from_arrays(self, meta: Mapping[str, Any], load: Callable[[str], np.ndarray], where: str) -> PoissonParams:
        weights, rates = load("weights"), load("rates")
        if rates.shape != (meta["n_components"], meta["n_features"]):
            raise ModelFormatError(f"{where}: rates.npy has shape {rates.shape}")
        return PoissonParams(weights, rates)


POISSON = register_family(PoissonFamily())


@dataclass(frozen=True)
class LoopConfig:
    """What run_em reads of a configuration; no covariance type anywhere."""

    tol: float = 0.0
    max_iter: int = 6
    split_every: int = 3
    block_rows: int | None = None
    reg_covar: float = 0.0
    on_degenerate: str = "reseed"


def poisson_data(rng: np.random.Generator, n_samples: int = 1200) -> tuple[np.ndarray, PoissonParams]:
    truth = PoissonParams(np.array([0.5, 0.3, 0.2]), rng.uniform(0.5, 12.0, size=(3, 5)))
    X, _ = POISSON.sample(truth, n_samples, rng)
    return X, truth


def start(rng: np.random.Generator, X: np.ndarray, k: int = 3) -> PoissonParams:
    """A starting point: K random rows (plus one, so no rate is 0) as rates."""
    rows = X[rng.choice(X.shape[0], size=k, replace=False)]
    return PoissonParams(np.full(k, 1.0 / k), rows + 1.0)


def restarts_from(params: list[PoissonParams]) -> list[RestartState]:
    return [RestartState(i, p, np.random.default_rng([0, i])) for i, p in enumerate(params)]


def reference_em(X: np.ndarray, params: PoissonParams, n_iter: int) -> tuple[list[float], PoissonParams]:
    """EM for a Poisson mixture, written directly from the model's density."""
    w, lam = params.weights.copy(), params.rates.copy()
    bounds = []
    for _ in range(n_iter):
        # log p(x_i, k) = log w_k + sum_j log Poisson(x_ij; lambda_kj)
        joint = np.log(w)[None, :] + np.stack(
            [scipy.stats.poisson.logpmf(X, lam[k]).sum(axis=1) for k in range(len(w))], axis=1
        )
        bounds.append(float(logsumexp(joint, axis=1).mean()))
        r = scipy.special.softmax(joint, axis=1)
        nk = r.sum(axis=0)
        w, lam = nk / X.shape[0], (r.T @ X) / nk[:, None]
    return bounds, PoissonParams(w, lam)


def test_registry_knows_the_family_and_the_default():
    assert get_family(NAME) is POISSON
    assert family_of(PoissonParams(np.ones(1), np.ones((1, 2)))) is POISSON
    assert get_family(DEFAULT_FAMILY).name == "gaussian"
    with pytest.raises(InvalidOptionError, match="'no-such-family'"):
        get_family("no-such-family")


def test_run_em_equals_a_direct_numpy_em(rng):
    X, _ = poisson_data(rng)
    init = start(rng, X)
    (got,) = run_em(da.from_array(X, chunks=(250, -1)), restarts_from([init]), LoopConfig(max_iter=8))
    bounds, expected = reference_em(X, init, 8)
    assert got.n_iter == 8
    np.testing.assert_allclose(got.lower_bounds, bounds, rtol=1e-10)
    np.testing.assert_allclose(got.params.weights, expected.weights, rtol=1e-10)
    np.testing.assert_allclose(got.params.rates, expected.rates, rtol=1e-10)
    # EM never decreases the likelihood: the loop recorded no event.
    assert all(h["events"] == [] for h in got.history)
    assert np.all(np.diff(got.lower_bounds) > -1e-12)


def test_lockstep_restarts_read_the_data_once_per_iteration(rng):
    X, _ = poisson_data(rng)
    source = ReadCounter(X, rows=200)
    restarts = restarts_from([start(rng, X) for _ in range(3)])
    run_em(source.array, restarts, LoopConfig(max_iter=4))
    assert all(r.n_iter == 4 for r in restarts)
    assert dict(source.counts) == {i: 4 for i in range(source.n_chunks)}


@pytest.mark.parametrize("chunks,split_every", [(97, 2), (300, 3), (1200, 8)])
def test_tree_reduction_is_chunking_invariant(rng, chunks, split_every):
    X, _ = poisson_data(rng)
    w = rng.uniform(0.5, 2.0, X.shape[0])
    params = start(rng, X)
    (whole,) = POISSON.chunk_stats(X, (POISSON.e_step(params),), w)
    (got,) = _graph.stats_pass(
        da.from_array(X, chunks=(chunks, -1)), (POISSON.e_step(params),),
        da.from_array(w, chunks=chunks), split_every=split_every,
    )
    assert isinstance(got, PoissonStats) and got.n_rows == X.shape[0]
    np.testing.assert_allclose(got.nk, whole.nk, rtol=1e-12)
    np.testing.assert_allclose(got.sum_x, whole.sum_x, rtol=1e-12)
    assert got.loglik == pytest.approx(whole.loglik, rel=1e-12)
    assert got.weight == pytest.approx(whole.weight, rel=1e-12)


def test_first_pass_runs_the_familys_data_check(rng):
    X, _ = poisson_data(rng)
    X[517, 2] = -1.0
    with pytest.raises(InvalidDataError, match=r"row 517 \(chunk 2\)"):
        run_em(da.from_array(X, chunks=(250, -1)), restarts_from([start(rng, X)]), LoopConfig())


def test_parameters_round_trip_through_a_checkpoint_bit_identically(tmp_path, rng):
    X, _ = poisson_data(rng)
    restarts = restarts_from([start(rng, X), start(rng, X)])
    run_em(da.from_array(X, chunks=(400, -1)), restarts, LoopConfig(max_iter=2))
    store = Checkpoint(str(tmp_path / "ckpt"))
    state = CheckpointState(
        iteration=2, seed=7, fingerprint={"data": {"n": 1}, "config": {"k": 3}},
        restarts=[restart_record(r) for r in restarts], params=[r.params for r in restarts], info={},
    )
    store.write(state)
    back = Checkpoint(str(tmp_path / "ckpt")).read()
    assert back is not None and back.iteration == 2
    for stored, original in zip(back.params, restarts):
        assert isinstance(stored, PoissonParams)
        assert stored.equals(original.params)


def test_resume_from_a_checkpoint_equals_the_uninterrupted_fit(tmp_path, rng):
    X, _ = poisson_data(rng)
    x = da.from_array(X, chunks=(300, -1))
    inits = [start(rng, X), start(rng, X)]
    full = run_em(x, restarts_from(inits), LoopConfig(max_iter=6))

    def loop_checkpoint() -> LoopCheckpoint:
        return LoopCheckpoint(Checkpoint(str(tmp_path / "ckpt")), {"data": {}, "config": {}}, 0, {})

    first = loop_checkpoint()
    run_em(x, restarts_from(inits), LoopConfig(max_iter=3), on_checkpoint=first.save)
    loaded = loop_checkpoint().load(max_iter=6)
    assert loaded is not None
    iteration, restarts = loaded
    assert iteration == 3
    resumed = run_em(x, restarts, LoopConfig(max_iter=6), start_iteration=iteration)
    for a, b in zip(resumed, full):
        assert a.params.equals(b.params)
        assert a.lower_bounds == b.lower_bounds


def test_model_files_name_their_family(rng):
    params = PoissonParams(np.array([0.25, 0.75]), rng.uniform(1, 5, (2, 3)))
    meta = persistence.params_meta(params)
    assert meta["family"] == NAME
    files = persistence.params_to_files(params)
    assert set(files) == {"weights.npy", "rates.npy"}
    assert persistence.params_from_files(files, meta).equals(params)
    with pytest.raises(ModelFormatError, match="'somebody-else'"):
        persistence.params_from_files(files, {**meta, "family": "somebody-else"})


def test_a_model_without_a_family_field_reads_as_gaussian(rng):
    params = random_params(rng, "full")
    meta = persistence.params_meta(params)
    assert meta.pop("family") == "gaussian"
    assert persistence.params_from_files(persistence.params_to_files(params), meta).equals(params)
