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
"kmeans"             1 or 2 passes: 1 sample pass drawing a uniform sample of the
                     documents (kept sparse; it checks the counts and weights as
                     every first pass does), weighted k-means (scikit-learn's
                     KMeans, sparse; best of 3 starts, 1 when the sample is all
                     documents) on the sample's L1-normalised rows in the
                     Hellinger embedding sqrt(c / sum c) in memory, then 1 pass
                     assigning every document to its nearest centre and an
                     M-step on those counts (in memory, no second pass, when
                     the sample is every document)
given arrays         ``feature_prob_init`` (and ``weights_init``): no pass
==================== ===============================================================

``weights_init`` alone replaces the weights the method found;
``feature_prob_init`` (K x V, rows summing to 1) replaces the word
distributions, and with it no pass is made.

The "kmeans" sample is ``max(100 K, 100000)`` documents, and at most 2^24
non-zeros (but at least ``4 K`` documents): the documents first in the
order of a hash of ``(seed, global row)`` (:mod:`dgmm.core.seeding`,
:func:`dgmm.core.multinomial_seeding.first_rows`), so the same documents on
any chunking, any number of workers, dense or sparse chunks. When the data
has no more documents than that, the sample is all of them.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Literal, get_args

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from dgmm import graph as _graph
from dgmm.core import multinomial as mn
from dgmm.core import multinomial_seeding as mn_seeding
from dgmm.core import seeding
from dgmm.core.multinomial_family import (
    MULTINOMIAL,
    MultinomialMixtureParams,
    RandomMultinomialResp,
    as_mixture_params,
)
from dgmm.errors import InvalidDataError, InvalidOptionError, ShapeMismatchError
from dgmm.fit.spec import FitSpec

__all__ = ["MULTINOMIAL_INIT_METHODS", "MultinomialInit", "draw_sample", "init_arrays", "initialize", "sample_limits"]

#: How a mixture of multinomials may be initialised.
MultinomialInit = Literal["kmeans", "random_from_data", "random"]
MULTINOMIAL_INIT_METHODS: tuple[str, ...] = get_args(MultinomialInit)
#: The "kmeans" sample: max(SAMPLE_ROWS, ROWS_PER_COMPONENT * K) documents, as
#: the Gaussian initialisation's; at most SAMPLE_NNZ non-zeros (200 MB as float64
#: CSR with int32 indices, the order of the Gaussian sample's 256 MB; KMeans's
#: Lloyd iterations cost non-zeros x K each), but at least
#: MIN_ROWS_PER_COMPONENT * K documents whatever their length.
SAMPLE_ROWS, ROWS_PER_COMPONENT, SAMPLE_NNZ, MIN_ROWS_PER_COMPONENT = 100_000, 100, 1 << 24, 4
#: KMeans starts on a sample of larger data (1 when the sample is all rows).
SAMPLE_KMEANS_N_INIT = 3
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


def sample_limits(n_components: int, n_rows: int) -> tuple[int, int, int]:
    """``(rows, non-zeros at most, rows at least)`` of the "kmeans" sample of ``n_rows`` documents."""
    size = min(n_rows, max(SAMPLE_ROWS, ROWS_PER_COMPONENT * n_components))
    return size, SAMPLE_NNZ, min(size, MIN_ROWS_PER_COMPONENT * n_components)


def draw_sample(
    x: da.Array, spec: FitSpec, sample_weight: da.Array | None = None
) -> seeding.RowSample:
    """The "kmeans" row sample of ``x`` (CSR counts, in row order, with weights), in one
    pass that checks the counts and the weights (see :func:`sample_limits` and the module docstring)."""
    n_rows = x.shape[0]
    size, max_nnz, min_rows = sample_limits(spec.n_components, n_rows)
    key = seeding.seed_key(spec.seed)
    threshold = seeding.key_threshold(n_rows, size)
    merge = partial(mn_seeding.merge_count_samples, size=size, max_nnz=max_nnz, min_rows=min_rows)
    while True:
        shared = (key, threshold, size, max_nnz, min_rows)
        drawn = _graph.map_chunks(
            x, mn_seeding.sample_counts, merge, shared, sample_weight=sample_weight, split_every=spec.split_every
        )
        if drawn.truncated or drawn.sample.rows.shape[0] >= size or threshold >= seeding.ALL_ROWS:
            return drawn.sample
        # Fewer rows under the threshold than wanted (probability ~1e-9): draw
        # again with twice the threshold; the same rows come back first.
        threshold = min(int(seeding.ALL_ROWS), 2 * threshold)


def _kmeans_centers(
    sample: seeding.RowSample, n_features: int, k: int, seed: int, n_init: int
) -> np.ndarray:
    """scikit-learn's KMeans on the sample's non-empty rows in the Hellinger embedding,
    weighted; (K, V) float64."""
    phi = mn_seeding.hellinger_rows(sample.points)
    keep = np.diff(phi.indptr) > 0
    w = sample.weights
    if w is not None and (keep & (w > 0)).any():
        # Rows of weight 0 take no part; if the sample holds no weighted row at
        # all (weight concentrated on few rows), cluster it unweighted.
        keep &= w > 0
    else:
        w = None
    phi, w = phi[keep], None if w is None else w[keep]
    if phi.shape[0] == 0:  # every sampled document is empty: any centre will do
        return np.full((k, n_features), n_features**-0.5)
    if phi.shape[0] <= k:
        # Fewer documents than components: repeat them; EM re-seeds the duplicates.
        return phi[np.arange(k) % phi.shape[0]].toarray()
    with warnings.catch_warnings():
        # Fewer distinct documents than components: KMeans warns and repeats a
        # centre; EM re-seeds the component that collapses (an event in the history).
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(phi, sample_weight=w)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def _kmeans(
    x: da.Array, spec: FitSpec, sample_weight: da.Array | None, rngs: list[np.random.Generator]
) -> list[MultinomialMixtureParams]:
    """Every restart's "kmeans" start from one sample pass and one assignment pass (module docstring)."""
    # Two steps when the sample will be every document (unless their non-zeros
    # overflow it), else three.
    steps = 2 if sample_limits(spec.n_components, x.shape[0])[0] >= x.shape[0] else 3
    with _graph.phase("initialisation", 1, steps):
        sample = draw_sample(x, spec, sample_weight)
    everything = sample.rows.shape[0] >= x.shape[0]
    steps = 2 if everything else 3
    # On a true sample of larger data the best of a few k-means++ starts costs
    # only memory time; on all the rows, one start, as scikit-learn's default.
    n_init = 1 if everything else SAMPLE_KMEANS_N_INIT
    with _graph.phase("initialisation", 2, steps):
        centers = [
            _kmeans_centers(sample, x.shape[1], spec.n_components, int(rng.integers(2**31)), n_init)
            for rng in rngs
        ]
        sources = tuple(mn_seeding.HellingerAssign(c) for c in centers)
        if everything:
            # The sample is every document: their assignment in memory, no second pass.
            stats = MULTINOMIAL.chunk_stats(sample.points, sources, sample.weights)
    if not everything:
        with _graph.phase("initialisation", 3, steps):
            stats = _graph.stats_pass(x, sources, sample_weight, split_every=spec.split_every)
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
        params = _kmeans(x, spec, sample_weight, rngs)
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
