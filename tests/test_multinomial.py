"""dgmm.core.multinomial against oracles: scikit-learn's MultinomialNB as the
M-step, the dense formula for the scores, a corpus with known topics."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.metrics import adjusted_rand_score

from dgmm.core import multinomial as mn
from dgmm.errors import InvalidDataError, InvalidDtypeError, ShapeMismatchError

from ._helpers import reference_step, zipf_topics


@pytest.fixture
def truth(rng) -> mn.MultinomialParams:
    return mn.MultinomialParams.from_probabilities(np.array([0.5, 0.3, 0.2]), zipf_topics(rng, 3, 60))


@pytest.fixture
def corpus(truth, rng) -> tuple[sp.csr_matrix, np.ndarray]:
    lengths = rng.integers(0, 40, size=400)
    lengths[:3] = 0  # empty documents
    x, labels = mn.sample(truth, 400, lengths, rng)
    return x, labels


def em_step(x, params, alpha, block_rows, sample_weight=None, kind="auto"):
    """One EM iteration the way the engine will run it: stats per row chunk, merged by +."""
    prepared = mn.prepare(params, x.dtype)
    total = None
    for start in range(0, x.shape[0], 97):
        w = None if sample_weight is None else sample_weight[start : start + 97]
        s = mn.chunk_stats(x[start : start + 97], prepared, w, kind=kind, block_rows=block_rows, row_offset=start)
        total = s if total is None else total + s
    return mn.m_step(total, alpha).params, total


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_em_iterations_equal_multinomialnb_reference(corpus, truth, rng, weighted, alpha):
    x, _ = corpus
    sample_weight = rng.uniform(0.0, 3.0, size=x.shape[0]) if weighted else None
    start = mn.MultinomialParams.from_probabilities(np.full(3, 1 / 3), rng.dirichlet(np.ones(60), size=3))
    ours, ref = start, start
    for _ in range(5):
        ours, _ = em_step(x, ours, alpha, block_rows=31, sample_weight=sample_weight)
        ref = reference_step(x.toarray(), ref, alpha, sample_weight)
        np.testing.assert_allclose(ours.weights, ref.weights, rtol=1e-10)
        np.testing.assert_allclose(ours.feature_log_prob, ref.feature_log_prob, rtol=1e-10)


def test_score_samples_equals_dense_formula(corpus, truth):
    x, _ = corpus
    dense = logsumexp(np.log(truth.weights) + x.toarray() @ truth.feature_log_prob.T, axis=1)
    np.testing.assert_allclose(mn.score_samples(x, truth, block_rows=50), dense, rtol=1e-12)
    log_norm, log_resp = mn.estimate_log_prob_resp(x, truth)
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-12)
    # Mean log-likelihood from the statistics is the mean of score_samples.
    stats = mn.chunk_stats(x, mn.prepare(truth))
    assert stats.mean_loglik == pytest.approx(dense.mean(), rel=1e-12)


def test_empty_document_has_the_weights_as_responsibilities(truth):
    x = sp.csr_matrix((2, truth.n_features))
    _, log_resp = mn.estimate_log_prob_resp(x, truth)
    np.testing.assert_allclose(np.exp(log_resp), np.tile(truth.weights, (2, 1)), rtol=1e-12)
    stats = mn.chunk_stats(x, mn.prepare(truth))
    np.testing.assert_allclose(stats.nk, 2 * truth.weights, rtol=1e-12)
    assert stats.loglik == 0.0


def farthest_first(x: sp.csr_matrix, n_components: int, alpha: float) -> mn.MultinomialParams:
    """A deterministic start: documents far apart in Hellinger distance, smoothed."""
    rows = np.sqrt(x.multiply(1.0 / np.maximum(x.sum(axis=1), 1)).toarray())
    chosen = [0]
    dist = ((rows - rows[0]) ** 2).sum(axis=1)
    for _ in range(1, n_components):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, ((rows - rows[chosen[-1]]) ** 2).sum(axis=1))
    prob = x[chosen].toarray() + alpha
    return mn.MultinomialParams.from_probabilities(np.full(n_components, 1 / n_components), prob / prob.sum(axis=1, keepdims=True))


def test_recovers_known_topics(rng):
    truth = mn.MultinomialParams.from_probabilities(np.array([0.3, 0.25, 0.2, 0.15, 0.1]), zipf_topics(rng, 5, 2000))
    x, labels = mn.sample(truth, 3000, rng.poisson(100, size=3000), rng)
    params = farthest_first(x, 5, alpha=0.1)
    previous = -np.inf
    for _ in range(30):
        params, stats = em_step(x, params, alpha=0.1, block_rows=512)
        # EM never decreases the likelihood (up to the smoothing's MAP term, tiny here).
        assert stats.mean_loglik >= previous - 1e-6 * abs(previous) if np.isfinite(previous) else True
        previous = stats.mean_loglik
    _, log_resp = mn.estimate_log_prob_resp(x, params)
    assert adjusted_rand_score(labels, log_resp.argmax(axis=1)) >= 0.95


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda x: x, id="csr"),
        pytest.param(sp.csc_matrix, id="csc"),
        pytest.param(lambda x: x.toarray(), id="dense"),
        pytest.param(lambda x: sp.csr_array(x), id="csr_array"),
        pytest.param(lambda x: x.astype(np.int32), id="int-csr"),
        pytest.param(lambda x: x.toarray().astype(np.int64), id="int-dense"),
    ],
)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_input_kinds_give_the_same_statistics(corpus, truth, convert, kind):
    x, _ = corpus
    prepared = mn.prepare(truth)
    expected = mn.chunk_stats(x, prepared, kind="dense", block_rows=64)
    got = mn.chunk_stats(convert(x), prepared, kind=kind, block_rows=64).to_dense()
    np.testing.assert_allclose(got.feature_counts, expected.feature_counts, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got.nk, expected.nk, rtol=1e-12)
    assert got.loglik == pytest.approx(expected.loglik, rel=1e-12)
    assert (got.weight, got.n_rows) == (expected.weight, expected.n_rows)


def test_float32_kernels_float64_sums(corpus, truth):
    x, _ = corpus
    x32 = x.astype(np.float32)
    prepared = mn.prepare(truth, np.float32)
    assert prepared.log_prob_t.dtype == np.float32
    s32 = mn.chunk_stats(x32, prepared, block_rows=64).to_dense()
    s64 = mn.chunk_stats(x, mn.prepare(truth), block_rows=64).to_dense()
    assert s32.feature_counts.dtype == np.float64 and s32.nk.dtype == np.float64
    np.testing.assert_allclose(s32.feature_counts, s64.feature_counts, rtol=1e-4, atol=1e-4)
    assert mn.m_step(s32, 1.0).params.feature_log_prob.dtype == np.float64


def test_sparse_statistics_merged_equal_dense_ones_bitwise(rng):
    truth = mn.MultinomialParams.from_probabilities(np.full(4, 0.25), zipf_topics(rng, 4, 5000))
    x, _ = mn.sample(truth, 400, 30, rng)
    prepared = mn.prepare(truth)
    chunks = [x[i : i + 25] for i in range(0, x.shape[0], 25)]
    sparse = [mn.chunk_stats(c, prepared, kind="sparse", block_rows=16) for c in chunks]
    dense = [mn.chunk_stats(c, prepared, kind="dense", block_rows=16) for c in chunks]
    assert all(isinstance(s, mn.SparseMultinomialStats) for s in sparse)
    assert all(s.counts.shape[0] < x.shape[1] for s in sparse)
    # A tree of pairs, as the reduction merges them, mixing both forms.
    def tree(parts):
        while len(parts) > 1:
            parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
        return parts[0].to_dense()

    want = tree(dense)
    for parts in (sparse, [s if i % 3 else d for i, (s, d) in enumerate(zip(sparse, dense))]):
        got = tree(parts)
        np.testing.assert_array_equal(got.feature_counts, want.feature_counts)
        np.testing.assert_array_equal(got.nk, want.nk)
        assert got.loglik == want.loglik and got.n_rows == want.n_rows


def test_auto_kind_is_sparse_only_for_a_small_part_of_the_vocabulary(truth):
    prepared = mn.prepare(truth)
    few = sp.csr_matrix(([1.0, 2.0], ([0, 1], [3, 7])), shape=(2, truth.n_features))
    assert isinstance(mn.chunk_stats(few, prepared), mn.SparseMultinomialStats)
    assert isinstance(mn.chunk_stats(np.ones((2, truth.n_features)), prepared), mn.MultinomialStats)
    many = sp.csr_matrix(np.ones((2, truth.n_features)))
    assert isinstance(mn.chunk_stats(many, prepared), mn.MultinomialStats)


def test_m_step_reports_collapsed_components(corpus, truth):
    x, _ = corpus
    params = mn.MultinomialParams(np.array([0.5, 0.5, 0.0]), truth.feature_log_prob)
    result = mn.m_step(mn.chunk_stats(x, mn.prepare(params)), alpha=1.0)
    assert result.collapsed == (2,)
    assert result.params.weights[2] == 0.0
    np.testing.assert_allclose(np.exp(result.params.feature_log_prob).sum(axis=1), 1.0)


def test_alpha_zero_unseen_words_stay_finite_in_the_e_step(truth):
    x = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0]]))
    stats = mn.chunk_stats(x, mn.prepare(mn.MultinomialParams.from_probabilities([0.5, 0.5], [[0.5, 0.5, 0], [0.5, 0, 0.5]])))
    params = mn.m_step(stats, alpha=0.0).params
    assert np.isneginf(params.feature_log_prob[:, 2]).all()
    x_explicit_zero = sp.csr_matrix((np.array([0.0, 1.0]), np.array([2, 0]), np.array([0, 2])), shape=(1, 3))
    resp = np.exp(mn.estimate_log_prob_resp(x_explicit_zero, params)[1])
    assert np.all(np.isfinite(resp))


def test_counts_may_be_non_negative_reals(truth, rng):
    x = sp.random(30, truth.n_features, density=0.2, random_state=1, format="csr") * 3.7
    dense = logsumexp(np.log(truth.weights) + x.toarray() @ truth.feature_log_prob.T, axis=1)
    np.testing.assert_allclose(mn.score_samples(x, truth), dense, rtol=1e-12)


def test_n_parameters_and_sample(truth, rng):
    assert mn.n_parameters(3, 60) == 2 + 3 * 59
    x, labels = mn.sample(truth, 1000, 50, rng)
    assert sp.isspmatrix_csr(x) and x.shape == (1000, 60)
    np.testing.assert_array_equal(np.asarray(x.sum(axis=1)).ravel(), 50)
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 1000, truth.weights, atol=0.05)
    # Word frequencies of component 0 match its distribution.
    freq = np.asarray(x[labels == 0].sum(axis=0)).ravel()
    np.testing.assert_allclose(freq / freq.sum(), np.exp(truth.feature_log_prob[0]), atol=0.01)


def _csr_with(value: float, row: int, col: int, n_features: int = 60) -> sp.csr_matrix:
    x = sp.random(10, n_features, density=0.1, random_state=2, format="lil")
    x[row, col] = value
    return x.tocsr()


BAD_INPUTS = [
    pytest.param(lambda: _csr_with(-1.0, 4, 7), InvalidDataError, ["negative", "row 104", "column 7"], id="negative-csr"),
    pytest.param(lambda: _csr_with(np.nan, 2, 5), InvalidDataError, ["nan", "row 102", "column 5"], id="nan-csr"),
    pytest.param(lambda: _csr_with(np.inf, 9, 0).toarray(), InvalidDataError, ["inf", "row 109", "column 0"], id="inf-dense"),
    pytest.param(lambda: np.ones(60), InvalidDataError, ["2-D", "(60,)"], id="one-dimensional"),
    pytest.param(lambda: sp.csr_matrix((3, 59)), ShapeMismatchError, ["59", "60"], id="vocabulary-mismatch"),
    pytest.param(lambda: np.array([["a"] * 60]), InvalidDtypeError, ["dtype"], id="strings"),
]


@pytest.mark.parametrize("make, error, words", BAD_INPUTS)
def test_bad_input_is_a_typed_error_naming_the_place(truth, make, error, words):
    with pytest.raises(error) as info:
        mn.chunk_stats(make(), mn.prepare(truth), row_offset=100, chunk_index=3)
    message = str(info.value).lower()
    for word in words:
        assert word.lower() in message


@pytest.mark.parametrize(
    "weights, prob, words",
    [
        pytest.param([0.5, 0.5], [[0.5, 0.6], [0.5, 0.5]], ["sum to 1", "[0]"], id="row-not-summing-to-one"),
        pytest.param([0.5, 0.5], [[1.5, -0.5], [0.5, 0.5]], ["[0, 1]", "-0.5"], id="negative-probability"),
        pytest.param([0.7, 0.7], [[0.5, 0.5], [0.5, 0.5]], ["weights", "sum to 1"], id="weights-not-summing-to-one"),
        pytest.param([1.0], [[0.5, 0.5], [0.5, 0.5]], ["shape"], id="shape"),
    ],
)
def test_bad_parameters_are_typed_errors(weights, prob, words):
    with pytest.raises((InvalidDataError, ShapeMismatchError)) as info:
        mn.MultinomialParams.from_probabilities(np.array(weights), np.array(prob))
    for word in words:
        assert word in str(info.value)


def test_negative_sample_weight_is_named(corpus, truth):
    x, _ = corpus
    w = np.ones(x.shape[0])
    w[7] = -1.0
    with pytest.raises(InvalidDataError, match="row 7"):
        mn.chunk_stats(x, mn.prepare(truth), w)


def test_statistics_of_a_large_vocabulary_block_never_allocate_rows_by_vocabulary(rng):
    n_rows, n_features, n_components, per_row = 4000, 200_000, 50, 200
    indptr = np.arange(0, n_rows * per_row + 1, per_row)
    indices = rng.integers(0, n_features, size=n_rows * per_row).astype(np.int32)
    x = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=(n_rows, n_features))
    x.sum_duplicates()
    params = mn.MultinomialParams(np.full(n_components, 1 / n_components), np.full((n_components, n_features), -np.log(n_features)))
    prepared = mn.prepare(params, np.float32)
    tracemalloc.start()
    try:
        stats = mn.chunk_stats(x, prepared, kind="dense", block_rows=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows_by_vocabulary = n_rows * n_features * 4  # the smallest densified chunk: 3.2 GB
    dense_stats = n_features * n_components * 8  # the result itself: 80 MB
    assert peak < 3 * dense_stats < rows_by_vocabulary / 10
    np.testing.assert_allclose(stats.nk.sum(), n_rows)


@pytest.mark.parametrize("n_seen", [10, 5000, 200_000])
def test_sparse_blocks_grow_to_the_accumulator_not_beyond(n_seen):
    n_components, itemsize = 100, 4
    rows = mn.sparse_block_rows(n_components, itemsize, n_seen)
    default = mn.block_rows_for(n_components, itemsize)
    assert default <= rows <= max(default, mn.SPARSE_BLOCK_MAX_ROWS)
    temporaries = 3 * rows * n_components * itemsize
    assert temporaries <= max(3 * default * n_components * itemsize, n_seen * n_components * 8)


def test_default_sparse_blocks_give_the_statistics_of_small_blocks(rng):
    truth = mn.MultinomialParams.from_probabilities(np.full(3, 1 / 3), zipf_topics(rng, 3, 4000))
    x, _ = mn.sample(truth, 3000, 40, rng)
    prepared = mn.prepare(truth)
    default = mn.chunk_stats(x, prepared, kind="dense")
    small = mn.chunk_stats(x, prepared, kind="dense", block_rows=31)
    np.testing.assert_allclose(default.feature_counts, small.feature_counts, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(default.nk, small.nk, rtol=1e-12)
    assert default.loglik == pytest.approx(small.loglik, rel=1e-12)


@pytest.mark.parametrize("chunk_rows, mix", [(10, "sparse"), (60, "sparse"), (60, "mixed"), (60, "dense")])
def test_merging_many_partials_in_one_buffer_gives_the_pairwise_bits(rng, chunk_rows, mix):
    from dgmm.core.family import merge

    truth = mn.MultinomialParams.from_probabilities(np.full(3, 1 / 3), zipf_topics(rng, 3, 3000))
    x, _ = mn.sample(truth, 8 * chunk_rows, 15, rng)
    prepared = mn.prepare(truth)
    kinds = {"sparse": ["sparse"] * 8, "dense": ["dense"] * 8, "mixed": ["dense", "sparse"] * 4}[mix]
    parts = [
        mn.chunk_stats(x[i * chunk_rows : (i + 1) * chunk_rows], prepared, kind=kind) for i, kind in enumerate(kinds)
    ]
    pairwise = parts[0]
    for p in parts[1:]:
        pairwise = pairwise + p
    merged = merge(parts)
    assert type(merged) is type(pairwise)
    if isinstance(merged, mn.SparseMultinomialStats):  # small chunks: the union stays a small part
        np.testing.assert_array_equal(merged.features, pairwise.features)
    got, want = merged.to_dense(), pairwise.to_dense()
    np.testing.assert_array_equal(got.feature_counts, want.feature_counts)
    np.testing.assert_array_equal(got.nk, want.nk)
    assert (got.loglik, got.weight, got.n_rows) == (want.loglik, want.weight, want.n_rows)


@pytest.mark.parametrize("limits", [(150, 10**9, 0), (400, 1500, 12), (400, 10, 12)], ids=["rows", "nnz", "min-rows"])
def test_sample_cut_per_chunk_and_merge_is_the_cut_of_the_whole(corpus, rng, limits):
    from dgmm.core import multinomial_seeding as mns
    from dgmm.core import seeding

    x, _ = corpus
    size, max_nnz, min_rows = limits
    shared = (seeding.seed_key(7), seeding.key_threshold(x.shape[0], size), size, max_nnz, min_rows)
    whole = mns.sample_counts(x, shared, None, chunk_index=0, row_offset=0)
    assert whole.truncated
    nnz = np.diff(whole.sample.points.indptr)
    n = whole.sample.rows.shape[0]
    assert n <= size and (n <= min_rows or nnz.sum() <= max_nnz)
    cuts = np.unique(np.concatenate([[0, x.shape[0]], rng.integers(1, x.shape[0], size=9)]))
    parts = [
        mns.sample_counts(x[a:b], shared, None, chunk_index=i, row_offset=int(a))
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))
    ]
    for split_every in (2, 3, len(parts)):
        level = parts
        while len(level) > 1:
            level = [
                mns.merge_count_samples(level[i : i + split_every], size, max_nnz, min_rows)
                for i in range(0, len(level), split_every)
            ]
        np.testing.assert_array_equal(level[0].sample.rows, whole.sample.rows)
        assert level[0].truncated and (level[0].sample.points != whole.sample.points).nnz == 0
    # The rows kept are those first in key order: no row left out has a smaller key.
    keys = seeding.row_keys(seeding.seed_key(7), 0, x.shape[0])
    left_out = np.setdiff1d(np.arange(x.shape[0]), whole.sample.rows)
    assert keys[left_out].min() > keys[whole.sample.rows].max()
