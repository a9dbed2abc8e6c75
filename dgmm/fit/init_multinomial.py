"""Starting parameters of a mixture of multinomials for every restart of ``n_init``.

Passes per method (all restarts share them):

==================== ===============================================================
method               cost
==================== ===============================================================
"random_from_data"   1 gather of the chunks holding K sampled documents per restart;
                     component k starts from document k's word frequencies mixed
                     half and half with the uniform distribution, weights equal
"random"             1 pass of random responsibilities (Dirichlet(1) per row),
                     then an M-step
"kmeans"             k-means|| (Bahmani et al. 2012) on the L1-normalised rows in
                     the Hellinger embedding sqrt(c / sum c): 1 gather (a first
                     document), 5 sampling rounds (one pass each, 2K candidate
                     documents a round, kept sparse), 1 pass weighting the
                     candidates, weighted k-means (scikit-learn's KMeans, sparse)
                     on the candidates in memory, then 1 pass assigning every
                     document to its nearest centre and an M-step on those counts
given arrays         ``feature_prob_init`` (and ``weights_init``): no pass
==================== ===============================================================

``weights_init`` alone replaces the weights the method found;
``feature_prob_init`` (K x V, rows summing to 1) replaces the word
distributions, and with it no pass is made.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, get_args

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

from dgmm import graph as _graph
from dgmm.core import multinomial as mn
from dgmm.core import multinomial_seeding as seeding
from dgmm.core.multinomial_family import (
    MULTINOMIAL,
    MultinomialMixtureParams,
    RandomMultinomialResp,
    as_mixture_params,
)
from dgmm.errors import InvalidDataError, InvalidOptionError, ShapeMismatchError
from dgmm.fit.spec import FitSpec

__all__ = ["MULTINOMIAL_INIT_METHODS", "MultinomialInit", "init_arrays", "initialize"]

#: How a mixture of multinomials may be initialised.
MultinomialInit = Literal["kmeans", "random_from_data", "random"]
MULTINOMIAL_INIT_METHODS: tuple[str, ...] = get_args(MultinomialInit)
#: k-means|| sampling rounds, and candidates per round per component.
KMEANS_ROUNDS, OVERSAMPLING = 5, 2.0
#: Share of the uniform distribution in a word distribution seeded from one document.
UNIFORM_SHARE = 0.5


def init_arrays(spec: FitSpec, n_features: int) -> dict[str, np.ndarray | None]:
    """``weights_init`` and ``feature_prob_init`` of ``spec`` checked for ``n_features`` words.

    Shapes, finiteness, probabilities in [0, 1], rows (and weights) summing
    to 1; each failure names the parameter, what was got and the remedy.
    """
    k = spec.n_components
    out: dict[str, np.ndarray | None] = {}
    for name, shape in (("weights_init", (k,)), ("feature_prob_init", (k, n_features))):
        array = getattr(spec, name)
        if array is not None:
            array = np.asarray(array, dtype=np.float64)
            if array.shape != shape:
                raise ShapeMismatchError(
                    f"The parameter '{name}' should have the shape {shape} for {k} components "
                    f"and {n_features} features (words), but got {array.shape}. Pass an array "
                    "of that shape, or None to let init_params choose it."
                )
            if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array > 1):
                raise InvalidDataError(
                    f"The parameter '{name}' must hold probabilities in [0, 1]; got min "
                    f"{np.nanmin(array)!r}, max {np.nanmax(array)!r}"
                    f"{' and NaN/Inf' if not np.all(np.isfinite(array)) else ''}. Pass "
                    "non-negative values that sum to 1."
                )
            sums = array.sum(axis=-1, keepdims=array.ndim == 1)
            bad = np.flatnonzero(np.abs(np.atleast_1d(sums) - 1.0) > 1e-6)
            if bad.size:
                what = "weights" if array.ndim == 1 else f"rows {bad[:10].tolist()}"
                raise InvalidDataError(
                    f"The parameter '{name}' must be normalised: its {what} should sum to 1, "
                    f"but sum to {np.atleast_1d(sums)[bad[:10]].tolist()}. Divide by the sum"
                    + (" of each row: p / p.sum(axis=1, keepdims=True)." if array.ndim == 2 else ".")
                )
        out[name] = array
    return out


def _gather_documents(x: da.Array, index_sets: list[np.ndarray]) -> list[sp.csr_matrix | np.ndarray]:
    """Rows of ``x`` at each set of global indices, computing only the chunks that hold them.

    Each chunk read is checked whole (negative counts, NaN), naming its global row.
    """
    bounds = np.cumsum((0, *x.chunks[0]))
    union = np.unique(np.concatenate(index_sets))
    chunks = np.unique(np.searchsorted(bounds, union, side="right") - 1)
    blocks = dask.compute(*[x.blocks[int(i)] for i in chunks])
    rows: dict[int, object] = {}
    for i, block in zip(chunks, blocks):
        block = mn.as_count_block(block, row_offset=int(bounds[i]), chunk_index=int(i))
        for g in union[(union >= bounds[i]) & (union < bounds[i + 1])]:
            rows[int(g)] = block[int(g - bounds[i])]
    out = []
    for idx in index_sets:
        parts = [rows[int(g)] for g in idx]
        out.append(sp.vstack(parts).tocsr() if sp.issparse(parts[0]) else np.vstack(parts))
    return out


def _from_documents(docs: sp.csr_matrix | np.ndarray) -> MultinomialMixtureParams:
    """Component k from document k: its word frequencies mixed with the uniform distribution."""
    counts = docs.toarray() if sp.issparse(docs) else np.asarray(docs)
    counts = np.asarray(counts, dtype=np.float64)
    n_features = counts.shape[1]
    totals = counts.sum(axis=1, keepdims=True)
    freq = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / n_features)
    prob = (1.0 - UNIFORM_SHARE) * freq + UNIFORM_SHARE / n_features
    prob /= prob.sum(axis=1, keepdims=True)
    k = counts.shape[0]
    return as_mixture_params(mn.MultinomialParams.from_probabilities(np.full(k, 1.0 / k), prob))


def _kmeans_parallel(
    x: da.Array, spec: FitSpec, sample_weight: da.Array | None, rngs: list[np.random.Generator]
) -> list[MultinomialMixtureParams]:
    """k-means|| in the Hellinger embedding, in lockstep for every restart (see the module docstring)."""
    from sklearn.cluster import KMeans

    k, n_rows = spec.n_components, x.shape[0]
    first = _gather_documents(x, [np.asarray([rng.integers(n_rows)]) for rng in rngs])
    candidates = [seeding.hellinger_rows(doc) for doc in first]
    oversampling = max(1, int(round(OVERSAMPLING * k)))
    for round_index in range(KMEANS_ROUNDS):
        merged = _graph.map_chunks(
            x, seeding.sample_candidates, partial(seeding.merge_candidates, oversampling=oversampling),
            (candidates, oversampling, spec.seed, round_index),
            sample_weight=sample_weight, split_every=spec.split_every,
        )
        candidates = [sp.vstack([c, m.points]).tocsr() for c, m in zip(candidates, merged)]
    weights = _graph.map_chunks(
        x, seeding.candidate_weights, seeding.sum_lists, candidates,
        sample_weight=sample_weight, split_every=spec.split_every,
    )
    centers = []
    for cand, w, rng in zip(candidates, weights, rngs):
        keep = (w > 0) & (np.diff(cand.indptr) > 0)
        cand, w = cand[keep], w[keep]
        if cand.shape[0] == 0:  # every document is empty: any centre will do
            cand, w = sp.csr_matrix(np.full((1, x.shape[1]), x.shape[1] ** -0.5)), np.ones(1)
        if cand.shape[0] <= k:
            # Fewer candidates than components: repeat them; EM re-seeds the duplicates.
            centers.append(cand[np.arange(k) % cand.shape[0]].toarray())
            continue
        km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2**31)))
        centers.append(np.asarray(km.fit(cand, sample_weight=w).cluster_centers_, dtype=np.float64))
    stats = _graph.stats_pass(
        x, tuple(seeding.HellingerAssign(c) for c in centers), sample_weight, split_every=spec.split_every
    )
    return [as_mixture_params(mn.m_step(s, spec.alpha).params) for s in stats]


def initialize(
    x: da.Array,
    spec: FitSpec,
    n_init: int,
    *,
    sample_weight: da.Array | None = None,
    weights_init: np.ndarray | None = None,
    feature_prob_init: np.ndarray | None = None,
) -> list[MultinomialMixtureParams]:
    """Starting parameters for ``n_init`` restarts (see the module docstring for the passes)."""
    k = spec.n_components
    rngs = [np.random.default_rng([spec.seed, r]) for r in range(n_init)]
    if feature_prob_init is not None:
        weights = np.full(k, 1.0 / k) if weights_init is None else weights_init
        return [as_mixture_params(mn.MultinomialParams.from_probabilities(weights, feature_prob_init))] * n_init
    method = spec.init_params
    n_rows = x.shape[0]
    if method == "random_from_data":
        index_sets = [np.sort(rng.choice(n_rows, size=k, replace=False)) for rng in rngs]
        params = [_from_documents(docs) for docs in _gather_documents(x, index_sets)]
    elif method == "kmeans":
        params = _kmeans_parallel(x, spec, sample_weight, rngs)
    elif method == "random":
        sources = tuple(RandomMultinomialResp(k, int(rng.integers(2**63))) for rng in rngs)
        stats = _graph.stats_pass(
            x, sources, sample_weight, split_every=spec.split_every, check_finite=True
        )
        config = spec.em_config
        params = [MULTINOMIAL.m_step(s, None, config, x.dtype, rng)[0] for s, rng in zip(stats, rngs)]
    else:
        raise InvalidOptionError(
            f"init_params must be one of {list(MULTINOMIAL_INIT_METHODS)} for a mixture of "
            f"multinomials; got {method!r}. Pass one of those."
        )
    if weights_init is not None:
        params = [as_mixture_params(mn.MultinomialParams(weights_init, p.feature_log_prob)) for p in params]
    return params
