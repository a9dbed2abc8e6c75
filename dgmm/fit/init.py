"""Initialisation at scale: starting parameters for every restart of ``n_init``.

Every restart, and every request of :func:`initialize_many` (the candidates
of a selection sweep: other ``n_components``, other covariance types), shares
the same passes over the data, so ``n_init=4`` or a sweep of 10 candidates
costs what one restart costs. Passes per method (a pass reads every chunk
once; a gather reads only the chunks holding a few rows):

================== ============================================================
method             cost
================== ============================================================
"kmeans"           1 or 2 passes: 1 sample pass, then scikit-learn's ``KMeans``
                   (k-means++ and Lloyd, weighted) in memory on the sample
                   (on a true sample: of 3 starts, the one whose mixture is
                   likeliest on it), then the starting parameters from the rows
                   nearest each centre: in memory when the sample stands for
                   all rows (below), else 1 hard-assignment pass
"k-means++"        1 or 2 passes: as "kmeans", k-means++ alone
"random_from_data" 1 pass: a gather of K rows per restart, 1 hard-assignment
                   pass
"random"           1 pass: a gather of the first rows (for a centre), 1 pass of
                   random responsibilities
"split"            1 or 2 passes: 1 sample pass, the doubling rounds (split the
                   heaviest components along their principal axes, 2 EM
                   iterations) in memory on the sample, then 1 EM iteration
                   in memory when the sample stands for all rows, else 1 EM
                   pass on all rows
================== ============================================================

Whatever methods a call mixes, it makes at most one sample pass and one
statistics pass (plus one gather for "random"/"random_from_data").

The sample pass draws a uniform sample of ``max(100 K, 100000)`` rows for
the in-memory clustering, and more when that lets the sample stand for all
rows (:func:`assign_size`: ``p / tol`` rows for ``p`` free parameters, so
that starting from the sample's estimate costs the first EM iteration at
most ``tol / 2``; bench_init's default fit of a 4e6-row store takes 3
passes in all). Samples hold ``init_sample_bytes`` of float64 at most;
when ``p / tol`` rows do not fit, the hard-assignment pass follows
(``InitConfig(assign_on_sample=False)`` always makes it). The sample is
exact in size and the same whatever the chunking or number of workers
(:mod:`dgmm.core.seeding`), keeps the sampled rows' ``sample_weight``, and
checks the data for NaN/Inf as the first pass of every fit does. When the
data has no more rows than that, the sample is all of it, in order: "kmeans"
then runs exactly scikit-learn's ``KMeans(n_clusters=K, n_init=1,
random_state=random_state)`` on all rows for the first restart (when
``random_state`` is an int), so dgmm and ``sklearn.mixture.GaussianMixture``
start from the same clusters in the same order, and the starting parameters
are all rows' (one pass in all).

``covariance_type="lowrank"`` starts in :mod:`dgmm.fit.init_lowrank` (the
method run as ``"diag"``, then a PCA per component, on one sample pass that
it draws and hands to :func:`initialize_many` as ``samples``).

The hard-assignment pass gives each component the weight, mean and
covariance of the rows nearest its centre (scikit-learn's "kmeans" does the
same with its labels; for "k-means++" and "random_from_data" scikit-learn
instead gives each component one point and a covariance of ``reg_covar``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning

from dgmm import graph as _graph
from dgmm.core import seeding as _seeding
from dgmm.core.covariance import get_covariance_model
from dgmm.core.gaussian import GAUSSIAN
from dgmm.core.kernels import HardAssign, RandomResp, frame_shifts
from dgmm.core.mstep import params_from_stats
from dgmm.core.options import INIT_METHODS, InitMethod, NoiseType
from dgmm.core.params import GMMParams, split_component
from dgmm.errors import InvalidOptionError
from dgmm.fit.spec import DEFAULTS, EMConfig, FitSpec

__all__ = [
    "INIT_METHODS", "InitConfig", "InitRequest", "assign_size", "draw_samples", "initialize", "initialize_many",
    "sample_size", "sample_sizes",
]

# Methods whose in-memory steps run on the row sample of the sample pass.
_SAMPLED = ("kmeans", "k-means++", "split")
_ARRAY_NAMES = ("weights_init", "means_init", "precisions_init")


@dataclass(frozen=True)
class InitConfig:
    """How to initialise; the defaults are the documented pass counts.

    ``kmeans_random_state``, when set, seeds the first restart's ``KMeans`` /
    k-means++ as scikit-learn's ``GaussianMixture(random_state=...)`` does
    (``random_state`` itself), so that both agree on small data.
    ``sample_bytes`` caps the low-rank initialisation's sample
    (:mod:`dgmm.fit.init_lowrank`) instead of ``init_sample_bytes``.
    """

    n_components: int
    init_params: InitMethod = DEFAULTS["init_params"]
    seed: int = 0
    split_em_iter: int = 2
    rank: int = DEFAULTS["rank"]
    noise_type: NoiseType = DEFAULTS["noise_type"]
    # Bytes of the low-rank initialisation's row sample (float64) at most.
    sample_bytes: int = 1 << 30
    # The sample pass: max(sample_rows, rows_per_component * K) rows, and at
    # most init_sample_bytes of them in float64 (KMeans's working copies).
    sample_rows: int = 100_000
    rows_per_component: int = 100
    init_sample_bytes: int = 256 << 20
    kmeans_random_state: int | None = None
    # KMeans runs on a sample of a larger dataset: the likeliest (as a mixture on the sample) of this many
    # k-means++ starts (in memory; one start landed two clusters in one on a
    # 46M-row benchmark store). On data no larger than the sample: 1, as scikit-learn.
    sample_kmeans_n_init: int = 3
    # "kmeans" / "k-means++" / "split": the starting parameters from a sample's
    # rows (no second pass) instead of from all rows'. None: when the sample
    # can hold all rows or enough of them (assign_size).
    assign_on_sample: bool | None = None

    @classmethod
    def from_spec(cls, spec: FitSpec) -> InitConfig:
        """The initialisation of the fit ``spec`` describes (documented pass counts)."""
        rs = spec.random_state
        return cls(
            spec.n_components, spec.init_params, spec.seed, rank=spec.rank, noise_type=spec.noise_type,
            kmeans_random_state=rs if isinstance(rs, int) and not isinstance(rs, bool) else None,
        )


@dataclass(frozen=True, eq=False)
class InitRequest:
    """One fit's initialisation among those :func:`initialize_many` serves together.

    ``arrays`` holds the user's ``weights_init`` / ``means_init`` /
    ``precisions_init`` (missing or None: found by the method).
    """

    config: InitConfig
    em_config: EMConfig
    n_init: int = 1
    arrays: Mapping[str, np.ndarray | None] = field(default_factory=dict)


def _no_op(x: np.ndarray, shared: None, w: np.ndarray | None, *, chunk_index: int, row_offset: int) -> None:
    """A kernel that does nothing: a pass made only for its data check."""
    return None


def _no_op_combine(parts: list[None]) -> None:
    return None


def _restart_rngs(seed: int, n_init: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, r]) for r in range(n_init)]


def gather_rows(x: da.Array, index_sets: list[np.ndarray]) -> list[np.ndarray]:
    """Rows of ``x`` (float64) at each set of global indices, in one gather.

    Gathered rows feed centres before any pass has checked the data: if they
    hold NaN/Inf, a checking pass names the first bad row of the data.
    """
    union = np.unique(np.concatenate(index_sets))
    rows = np.asarray(x[union].compute(), dtype=np.float64)
    if not np.all(np.isfinite(rows)):
        _graph.map_chunks(x, _no_op, _no_op_combine, check_finite=True)
    return [rows[np.searchsorted(union, idx)] for idx in index_sets]


def sample_indices(n_rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_rows, size=min(size, n_rows), replace=False))


def _sample_cap(config: InitConfig, n_features: int) -> int:
    return max(4 * config.n_components, config.init_sample_bytes // (8 * max(n_features, 1)))


def sample_size(config: InitConfig, n_rows: int, n_features: int) -> int:
    """Rows of the sample the in-memory steps of ``config`` run on."""
    wanted = max(config.sample_rows, config.rows_per_component * config.n_components)
    return int(min(n_rows, wanted, _sample_cap(config, n_features)))


def assign_size(config: InitConfig, em_config: EMConfig, n_rows: int, n_features: int) -> int | None:
    """Rows of a sample that may stand for all rows in the starting parameters, or None.

    The starting parameters of "kmeans", "k-means++" and "split" are
    estimates from the rows each centre gets. From a uniform sample of ``m``
    rows instead of all of them, the mean log-likelihood of the first EM
    iteration is lower by about ``p / (2 m)`` nats per row (``p`` free
    parameters; the expected excess of a maximum-likelihood estimate), which
    the first EM iteration recovers. With ``m >= p / tol`` that is at most
    ``tol / 2``: a default fit then converges in the EM iterations it takes
    from all rows' estimate, and the pass that would compute it is saved
    (measured on bench_init's generated data, 4e6 rows, K=8, every
    covariance type: 2 EM iterations either way). A sample of all the rows
    (data no larger than the in-memory sample) gives exactly all rows'
    estimate. None when neither fits in ``init_sample_bytes`` (float64),
    or with ``assign_on_sample=False``: the statistics pass follows.
    """
    cap = _sample_cap(config, n_features)
    if config.assign_on_sample is False or config.init_params not in _SAMPLED:
        return None
    p = get_covariance_model(em_config.covariance_type).n_parameters(config.n_components, n_features)
    enough = np.inf if em_config.tol <= 0 else np.ceil(p / em_config.tol)
    wanted = min(n_rows, max(sample_size(config, n_rows, n_features), enough))
    if wanted <= cap:
        return int(wanted)
    # Forced (assign_on_sample=True): the largest sample that fits.
    return int(cap) if config.assign_on_sample else None


def sample_sizes(requests: Sequence[InitRequest], n_rows: int, n_features: int) -> dict[int, int]:
    """Rows per seed of the sample pass ``requests`` need (the largest request of each seed).

    What :func:`initialize_many` draws; a caller that draws first (one pass
    serving its own in-memory steps too) passes the result as its ``samples``.
    """
    sizes: dict[int, int] = {}
    for request in requests:
        config = request.config
        if config.init_params in _SAMPLED:
            size = sample_size(config, n_rows, n_features)
            size = max(size, assign_size(config, request.em_config, n_rows, n_features) or 0)
            sizes[config.seed] = max(size, sizes.get(config.seed, 0))
    return sizes


def draw_samples(
    x: da.Array,
    sizes: Mapping[int, int],
    sample_weight: da.Array | None = None,
    *,
    split_every: int = _graph.DEFAULT_SPLIT_EVERY,
    check_finite: bool = True,
) -> dict[int, _seeding.RowSample]:
    """Uniform row samples of ``sizes[seed]`` rows per seed, in one pass (checking the data).

    Each sample holds its rows in the data's row order, with their weights.
    """
    n_rows = x.shape[0]
    seeds = sorted(sizes)
    slack = _seeding.SLACK_SIGMAS
    thresholds = {s: _seeding.key_threshold(n_rows, sizes[s], slack) for s in seeds}
    out: dict[int, _seeding.RowSample] = {}
    while seeds:
        shared = tuple((_seeding.seed_key(s), thresholds[s]) for s in seeds)
        drawn = _graph.map_chunks(
            x, _seeding.sample_chunk, _seeding.concat_samples, shared,
            sample_weight=sample_weight, split_every=split_every, check_finite=check_finite,
        )
        check_finite = False
        short = []
        for s, sample in zip(seeds, drawn):
            if sample.rows.shape[0] < min(sizes[s], n_rows) and thresholds[s] < _seeding.ALL_ROWS:
                # Fewer rows under the threshold than wanted (probability ~1e-9):
                # draw again with twice the threshold; the same rows come back first.
                thresholds[s] = min(int(_seeding.ALL_ROWS), 2 * thresholds[s])
                short.append(s)
            else:
                out[s] = _seeding.smallest_keys(sample, sizes[s])
        seeds = short
    return out


def _kmeans_centers(
    sample: _seeding.RowSample,
    k: int,
    seed: int,
    plusplus_only: bool,
    n_init: int = 1,
    em_config: EMConfig | None = None,
) -> np.ndarray:
    """scikit-learn's KMeans (or k-means++ alone) on the sample, weighted; (K, D) float64.

    With ``n_init`` > 1 and ``em_config``: the best of ``n_init`` KMeans
    starts by the likelihood on the sample of the mixture each start gives.
    """
    points, w = sample.points, sample.weights
    if w is not None:
        # Rows of weight 0 take no part in weighted k-means; if the sample holds
        # no weighted row at all (weight concentrated on few rows), cluster it unweighted.
        keep = w > 0
        points, w = (points[keep], w[keep]) if keep.any() else (points, None)
    if points.shape[0] <= k:
        # Fewer rows than components: repeat them; EM re-seeds the duplicates.
        return np.asarray(points[np.arange(k) % points.shape[0]], dtype=np.float64)
    if plusplus_only:
        centers = kmeans_plusplus(points, k, sample_weight=w, random_state=seed)[0]
        return np.asarray(centers, dtype=np.float64)
    with warnings.catch_warnings():
        # Fewer distinct rows than components: KMeans warns and repeats a
        # centre; EM re-seeds the component that collapses (an event in the history).
        warnings.simplefilter("ignore", ConvergenceWarning)
        if n_init == 1 or em_config is None:
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(points, sample_weight=w)
            return np.asarray(km.cluster_centers_, dtype=np.float64)
        starts = [
            np.asarray(
                KMeans(n_clusters=k, n_init=1, random_state=int(s)).fit(points, sample_weight=w).cluster_centers_,
                dtype=np.float64,
            )
            for s in np.random.default_rng(seed).integers(2**31, size=n_init)
        ]
    # The start whose mixture (each centre's rows' weight, mean and covariance)
    # is likeliest on the sample, not the one of least inertia: inertia is
    # dominated by the features of largest scale, the mixture's likelihood
    # is what EM goes on to raise (bench_init quality, the forced-sample path:
    # on wine, whose proline feature has 30x the others' spread, the least
    # inertia led EM to worse optima than a single start).
    scores = []
    for j, centers in enumerate(starts):
        params = _assign_in_memory(sample, centers, em_config, np.random.default_rng([seed, j]))
        (stats,) = GAUSSIAN.chunk_stats(sample.points, (GAUSSIAN.e_step(params),), sample.weights)
        scores.append(stats.mean_loglik)
    return starts[int(np.argmax(scores))]


def _assign_in_memory(
    sample: _seeding.RowSample, centers: np.ndarray, em_config: EMConfig, rng: np.random.Generator
) -> GMMParams:
    """Starting parameters from the sample's rows nearest each centre (hard assignment, in memory)."""
    dtype = sample.points.dtype
    (stats,) = GAUSSIAN.chunk_stats(sample.points, (HardAssign(centers, em_config.covariance_type),), sample.weights)
    return params_from_stats(stats, frame_shifts(centers, dtype), em_config, dtype, rng)[0]


def _split_on_sample(
    sample: _seeding.RowSample,
    config: InitConfig,
    em_config: EMConfig,
    rng: np.random.Generator,
) -> GMMParams:
    """The doubling rounds of "split", in memory on the sample."""
    points, w = sample.points, sample.weights
    dtype = points.dtype
    center = np.average(points.astype(np.float64), axis=0, weights=w)[None, :]
    (stats,) = GAUSSIAN.chunk_stats(points, (HardAssign(center, em_config.covariance_type),), w)
    params = params_from_stats(stats, frame_shifts(center, dtype), em_config, dtype, rng)[0]
    while params.n_components < config.n_components:
        params = grow(params, config.n_components, rng)
        for _ in range(config.split_em_iter):
            (stats,) = GAUSSIAN.chunk_stats(
                points, (GAUSSIAN.e_step(params),), w, block_rows=em_config.block_rows
            )
            params = GAUSSIAN.m_step(stats, params, em_config, dtype, rng)[0]
    return params


def grow(params: GMMParams, n_components: int, rng: np.random.Generator) -> GMMParams:
    """Double the number of components (up to ``n_components``) by splitting
    the heaviest ones along their principal axes."""
    k = params.n_components
    n_new = min(k, n_components - k)
    order = np.argsort(-params.weights, kind="stable")[:n_new]
    index = np.concatenate([np.arange(k), order])
    model = params.model
    weights = params.weights[index].copy()
    weights[k:] = 0.0
    grown = GMMParams(
        weights,
        params.means[index],
        model.take(params.covariances, index),
        model.take(params.precisions_cholesky, index),
        params.covariance_type,
    )
    for j, source in enumerate(order):
        grown = split_component(grown, int(source), k + j, rng)
    return grown


def _check_request(request: InitRequest) -> None:
    ct = request.em_config.covariance_type
    if ct == "lowrank":
        raise InvalidOptionError(
            "covariance_type='lowrank' starts from dgmm.fit.init_lowrank.initialize, not this function."
        )
    method = request.config.init_params
    if method not in INIT_METHODS:
        raise InvalidOptionError(
            f"init_params must be one of {list(INIT_METHODS)}, got {method!r}. Pass one of those."
        )
    unknown = sorted(set(request.arrays) - set(_ARRAY_NAMES))
    if unknown:
        raise InvalidOptionError(
            f"InitRequest.arrays takes {list(_ARRAY_NAMES)}; got {unknown}. "
            "Pass the initial arrays under those names (or None)."
        )
    if int(request.n_init) < 1:
        raise InvalidOptionError(
            f"n_init must be an integer of at least 1, got {request.n_init!r}. Pass n_init=1, the default."
        )


def _check_samples(samples: Mapping[int, _seeding.RowSample], sizes: Mapping[int, int], n_rows: int) -> None:
    for seed, size in sizes.items():
        got = samples[seed].rows.shape[0] if seed in samples else 0
        if got < min(size, n_rows):
            raise InvalidOptionError(
                f"initialize_many(samples=...) needs a sample of at least {min(size, n_rows)} rows "
                f"for seed {seed}; got {got}. Draw them with draw_samples(x, sample_sizes(requests, ...)), "
                "or pass samples=None to draw them here."
            )


def _given(request: InitRequest) -> tuple[np.ndarray | None, ...]:
    return tuple(request.arrays.get(name) for name in _ARRAY_NAMES)


def initialize_many(
    x: da.Array,
    requests: Sequence[InitRequest],
    *,
    sample_weight: da.Array | None = None,
    samples: Mapping[int, _seeding.RowSample] | None = None,
) -> list[list[GMMParams]]:
    """Starting parameters for every request, all sharing the same passes.

    Parameters
    ----------
    x : dask array of shape (n_samples, n_features)
        Row-chunked data, all columns in one chunk.
    requests : sequence of InitRequest
        Any mix of ``n_components``, covariance types (not ``"lowrank"``),
        methods and ``n_init``.
    sample_weight : dask array of shape (n_samples,), default=None
    samples : mapping of seed to RowSample, default=None
        Row samples :func:`draw_samples` drew from ``x`` (checking it), each at
        least :func:`sample_sizes` rows: used instead of a sample pass (a
        larger sample serves, as samples of one seed are nested).

    Returns
    -------
    starts : list of list of GMMParams
        Per request, one starting point per restart.

    Whatever the requests, the call reads the data at most twice: one sample
    pass (if a request's method needs a sample; it checks the data) and one
    statistics pass, plus one gather of a few rows for "random" and
    "random_from_data". A request whose three initial arrays are all given
    costs no pass. Each request gets the parameters it would get alone.
    """
    for request in requests:
        _check_request(request)
    n_rows, n_features = x.shape
    dtype = x.dtype
    results: list[list[GMMParams] | None] = [None] * len(requests)
    todo = []
    for i, request in enumerate(requests):
        w0, m0, p0 = _given(request)
        if w0 is not None and m0 is not None and p0 is not None:
            params = GMMParams.from_precisions(w0, m0, p0, request.em_config.covariance_type)
            results[i] = [params] * int(request.n_init)
        else:
            todo.append(i)
    if not todo:
        return results  # type: ignore[return-value]

    split_every = requests[todo[0]].em_config.split_every
    block_rows = {requests[i].em_config.block_rows for i in todo}
    rngs = {i: _restart_rngs(requests[i].config.seed, int(requests[i].n_init)) for i in todo}

    # One gather for every "random_from_data" and "random" request (a few rows).
    gathers: dict[int, list[np.ndarray]] = {}
    for i in todo:
        config = requests[i].config
        if config.init_params == "random_from_data":
            gathers[i] = [sample_indices(n_rows, config.n_components, rng) for rng in rngs[i]]
        elif config.init_params == "random":
            gathers[i] = [np.arange(min(n_rows, 1000))]
    # Per request: rows of the sample its starting parameters come from, or None (all rows').
    assign = {i: assign_size(requests[i].config, requests[i].em_config, n_rows, n_features) for i in todo}
    sizes = sample_sizes([requests[i] for i in todo], n_rows, n_features)
    given_samples = samples is not None
    if samples is not None:
        _check_samples(samples, sizes, n_rows)
    # The steps, as the progress display numbers them: the gather, the sample
    # pass, the in-memory clustering, the statistics pass (those that happen).
    on_sample = all(assign[i] is not None for i in todo)
    n_steps = bool(gathers) + (bool(sizes) and not given_samples) + bool(sizes) + (not on_sample)
    steps = iter(range(1, n_steps + 1))

    gathered: dict[int, list[np.ndarray]] = {}
    if gathers:
        flat = [idx for i in gathers for idx in gathers[i]]
        with _graph.phase("initialisation", next(steps), n_steps):
            rows = gather_rows(x, flat)
        for i in gathers:
            gathered[i], rows = rows[: len(gathers[i])], rows[len(gathers[i]) :]

    # One sample pass for every request that needs one (per seed, nested sizes).
    samples = dict(samples or {})
    if sizes and not given_samples:
        with _graph.phase("initialisation", next(steps), n_steps):
            samples = draw_samples(x, sizes, sample_weight, split_every=split_every)

    # In memory: one responsibility source per restart, and how its statistics become parameters.
    sources: list[HardAssign | RandomResp | Any] = []
    # Per restart: (kind, request index, what turns its statistics into parameters, rng).
    finish: list[tuple[str, int, Any, np.random.Generator]] = []
    clustering = _graph.phase("initialisation", next(steps), n_steps) if sizes else contextlib.nullcontext()
    with clustering:
        for i in todo:
            request = requests[i]
            config, em_config = request.config, request.em_config
            ct, k, method = em_config.covariance_type, config.n_components, config.init_params
            sample = whole = None
            if method in _SAMPLED:
                size = sample_size(config, n_rows, n_features)
                sample = _seeding.smallest_keys(samples[config.seed], size)
                if assign[i] is not None:
                    whole = _seeding.smallest_keys(samples[config.seed], assign[i])
            for r, rng in enumerate(rngs[i]):
                if method in ("kmeans", "k-means++"):
                    seed = int(rng.integers(2**31))
                    if r == 0 and config.kmeans_random_state is not None:
                        seed = config.kmeans_random_state
                    n_init = 1 if sample.rows.shape[0] >= n_rows else config.sample_kmeans_n_init
                    centers = _kmeans_centers(sample, k, seed, method == "k-means++", n_init, em_config)
                    if whole is not None:
                        finish.append(("done", i, _assign_in_memory(whole, centers, em_config, rng), rng))
                    else:
                        sources.append(HardAssign(centers, ct))
                        finish.append(("hard", i, centers, rng))
                elif method == "random_from_data":
                    centers = gathered[i][r]
                    sources.append(HardAssign(centers, ct))
                    finish.append(("hard", i, centers, rng))
                elif method == "random":
                    center = gathered[i][0].mean(axis=0)
                    source = RandomResp(k, ct, int(rng.integers(2**63)), center)
                    sources.append(source)
                    finish.append(("random", i, source, rng))
                else:  # split
                    params = _split_on_sample(sample, config, em_config, rng)
                    if whole is not None:
                        # The last EM iteration on a sample that stands for all rows.
                        (s,) = GAUSSIAN.chunk_stats(
                            whole.points, (GAUSSIAN.e_step(params),), whole.weights,
                            block_rows=em_config.block_rows,
                        )
                        params = GAUSSIAN.m_step(s, params, em_config, dtype, rng)[0]
                        finish.append(("done", i, params, rng))
                    else:
                        sources.append(GAUSSIAN.e_step(params))
                        finish.append(("em", i, params, rng))

    stats: Iterator[Any] = iter(())
    if sources:
        with _graph.phase("initialisation", next(steps), n_steps):
            stats = iter(
                _graph.stats_pass(
                    x, tuple(sources), sample_weight, split_every=split_every,
                    block_rows=block_rows.pop() if len(block_rows) == 1 else None,
                    check_finite=not samples,
                )
            )
    per_request: dict[int, list[GMMParams]] = {i: [] for i in todo}
    for kind, i, what, rng in finish:
        em_config = requests[i].em_config
        s = None if kind == "done" else next(stats)
        if kind == "done":
            params = what
        elif kind == "hard":
            params = params_from_stats(s, frame_shifts(what, dtype), em_config, dtype, rng)[0]
        elif kind == "random":
            c0, shifts_c = what.frame(dtype)
            params = params_from_stats(s, c0 + shifts_c, em_config, dtype, rng)[0]
        else:
            params = GAUSSIAN.m_step(s, what, em_config, dtype, rng)[0]
        per_request[i].append(params)
    for i in todo:
        given = _given(requests[i])
        params_list = per_request[i]
        if any(a is not None for a in given):
            params_list = [_override(p, *given) for p in params_list]
        results[i] = params_list
    return results  # type: ignore[return-value]


def initialize(
    x: da.Array,
    config: InitConfig,
    em_config: EMConfig,
    n_init: int,
    *,
    sample_weight: da.Array | None = None,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> list[GMMParams]:
    """Starting parameters for ``n_init`` restarts.

    When all of ``weights_init``, ``means_init`` and ``precisions_init`` are
    given, no pass is made; otherwise the method runs and the given arrays
    replace what it found (as scikit-learn). One request of
    :func:`initialize_many`.
    """
    arrays = {"weights_init": weights_init, "means_init": means_init, "precisions_init": precisions_init}
    request = InitRequest(config, em_config, n_init, arrays)
    return initialize_many(x, [request], sample_weight=sample_weight)[0]


def _override(
    params: GMMParams,
    weights: np.ndarray | None,
    means: np.ndarray | None,
    precisions: np.ndarray | None,
) -> GMMParams:
    weights = params.weights if weights is None else np.asarray(weights, dtype=np.float64)
    means = params.means if means is None else np.asarray(means, dtype=np.float64)
    if precisions is None:
        return GMMParams(weights, means, params.covariances, params.precisions_cholesky, params.covariance_type)
    return GMMParams.from_precisions(weights, means, precisions, params.covariance_type)
