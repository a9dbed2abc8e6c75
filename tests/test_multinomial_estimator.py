"""dgmm.MultinomialMixture end to end on the shared engine.

Oracles: k EM iterations through the estimator equal a reference whose
M-step is scikit-learn's MultinomialNB; a corpus with known topics is
recovered; every input kind gives the same fit; one read per iteration with
lockstep restarts; bit-identical resume; sample weights as repeated rows;
typed errors; model files; the CLI on an AnnData store.
"""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import dgmm
from dgmm import graph
from dgmm.core import multinomial as mn
from dgmm.core import multinomial_seeding as seeding
from dgmm.core.family import get_family
from dgmm.errors import InvalidDataError, ShapeMismatchError, UnsupportedInputError
from dgmm.fit import init_multinomial
from dgmm.io.sparse import from_scipy

from ._helpers import ReadCounter, invoke, reference_step, zipf_topics

anndata = pytest.importorskip("anndata")

N_DOCS, N_WORDS, K = 600, 80, 3


# -- scikit-learn's estimator checks ---------------------------------------------------------

EXPECTED_FAILED_CHECKS = {
    "check_array_api_input": "skipped by scikit-learn unless SCIPY_ARRAY_API=1 (dgmm computes with NumPy/Dask)",
    **{
        f"check_sample_weight_equivalence_on_{kind}_data": (
            "every seeding draws documents at random per row: weighting a row and repeating it "
            "change what the same seed draws (as for GaussianMixture's k-means++); with given "
            "starting parameters a weight of 2 equals the row twice (tested below)"
        )
        for kind in ("dense", "sparse")
    },
    **{
        f"check_estimator_sparse_{kind}": (
            "the fit on sparse input succeeds (input_tags.sparse), then scikit-learn 1.9's check "
            "reads tags.classifier_tags.multi_class of an estimator that has predict but is no "
            "classifier and fails with AttributeError inside the check"
        )
        for kind in ("array", "matrix")
    },
}


@parametrize_with_checks(
    [dgmm.MultinomialMixture(n_components=2)], expected_failed_checks=lambda e: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture
def truth(rng) -> mn.MultinomialParams:
    return mn.MultinomialParams.from_probabilities(np.array([0.5, 0.3, 0.2]), zipf_topics(rng, K, N_WORDS))


@pytest.fixture
def corpus(truth, rng) -> tuple[sp.csr_matrix, np.ndarray]:
    lengths = rng.integers(0, 60, size=N_DOCS)
    lengths[:3] = 0  # empty documents
    return mn.sample(truth, N_DOCS, lengths, rng)


@pytest.fixture
def start(rng) -> dict[str, np.ndarray]:
    return {"weights_init": np.full(K, 1 / K), "feature_prob_init": rng.dirichlet(np.ones(N_WORDS), size=K)}


def fitted(X, n_iter: int, sample_weight=None, **kwargs) -> dgmm.MultinomialMixture:
    """Exactly ``n_iter`` iterations (tol=0: no convergence, whose warning is expected)."""
    mm = dgmm.MultinomialMixture(K, tol=0.0, max_iter=n_iter, random_state=0, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return mm.fit(X, sample_weight=sample_weight)


def assert_same_fit(a: dgmm.MultinomialMixture, b: dgmm.MultinomialMixture, rtol: float = 1e-10) -> None:
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=rtol)
    np.testing.assert_allclose(a.feature_log_prob_, b.feature_log_prob_, rtol=rtol)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)


# -- oracles -------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("alpha", [1.0, 0.05])
def test_iterations_equal_the_multinomialnb_reference(corpus, start, rng, weighted, alpha):
    x, _ = corpus
    w = rng.uniform(0.0, 3.0, size=N_DOCS) if weighted else None
    mm = fitted(x, 6, sample_weight=w, alpha=alpha, chunks=128, **start)
    ref = mn.MultinomialParams.from_probabilities(start["weights_init"], start["feature_prob_init"])
    dense = x.toarray()
    bounds = []
    for _ in range(6):
        log_p = np.logaddexp.reduce(np.log(ref.weights) + dense @ ref.feature_log_prob.T, axis=1)
        bounds.append(float(np.average(log_p, weights=w)))
        ref = reference_step(dense, ref, alpha, w)
    assert mm.n_iter_ == 6
    assert mm.feature_log_prob_.dtype == np.float64
    np.testing.assert_allclose(mm.weights_, ref.weights, rtol=1e-10)
    np.testing.assert_allclose(mm.feature_log_prob_, ref.feature_log_prob, rtol=1e-10)
    np.testing.assert_allclose(mm.lower_bounds_, bounds, rtol=1e-10)


def test_a_corpus_with_known_topics_is_recovered(rng):
    truth = mn.MultinomialParams.from_probabilities(np.array([0.3, 0.25, 0.2, 0.15, 0.1]), zipf_topics(rng, 5, 1500))
    x, labels = mn.sample(truth, 3000, rng.poisson(80, size=3000), rng)
    mm = dgmm.MultinomialMixture(5, alpha=0.1, n_init=3, random_state=0).fit(x)
    assert mm.converged_
    assert adjusted_rand_score(labels, mm.predict(x)) >= 0.95
    # EM never decreased the likelihood beyond what the smoothing allows: no event.
    assert all(h["events"] == [] for h in mm.history_)
    proba = mm.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert mm.score(x) == pytest.approx(float(np.mean(mm.score_samples(x))), rel=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "random_from_data", "random"])
def test_every_init_reaches_the_true_partition(corpus, init_params):
    x, labels = corpus
    mm = dgmm.MultinomialMixture(K, alpha=0.1, n_init=2, init_params=init_params, random_state=1).fit(x)
    # The three empty documents belong to no topic in particular.
    assert adjusted_rand_score(labels[3:], mm.predict(x)[3:]) >= 0.9


def test_kmeans_seeding_distances_are_hellinger(corpus, rng):
    x, _ = corpus
    centers = rng.dirichlet(np.ones(N_WORDS), size=4)
    dist, label = seeding.nearest(seeding.hellinger_rows(x), np.sqrt(centers))
    p = x.toarray() / np.maximum(x.toarray().sum(axis=1, keepdims=True), 1)
    dense = ((np.sqrt(p)[:, None, :] - np.sqrt(centers)[None]) ** 2).sum(axis=2)  # 2 x Hellinger^2
    nonempty = x.getnnz(axis=1) > 0
    np.testing.assert_allclose(dist[nonempty], dense.min(axis=1)[nonempty], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(label[nonempty], dense.argmin(axis=1)[nonempty])
    assert np.all(dist[~nonempty] == 0.0)


def test_score_samples_is_the_dense_formula_and_empty_rows_get_the_weights(corpus, start):
    x, _ = corpus
    mm = fitted(x, 2, **start)
    expected = np.logaddexp.reduce(np.log(mm.weights_) + x.toarray() @ mm.feature_log_prob_.T, axis=1)
    np.testing.assert_allclose(mm.score_samples(x), expected, rtol=1e-12, atol=1e-12)  # empty rows: 0
    np.testing.assert_allclose(mm.predict_proba(x[:3]), np.tile(mm.weights_, (3, 1)), rtol=1e-12)
    n = mn.n_parameters(K, N_WORDS)
    assert mm.bic(x) == pytest.approx(-2 * expected.sum() + n * np.log(N_DOCS), rel=1e-12)
    assert mm.aic(x) == pytest.approx(-2 * expected.sum() + 2 * n, rel=1e-12)


# -- sources -------------------------------------------------------------------------------


def write_anndata(path, x: sp.csr_matrix) -> str:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.io.write_elem(group, "X", x, dataset_kwargs={"chunks": (500,)})
    return str(path)


def test_every_input_kind_gives_the_same_fit(tmp_path, corpus):
    x, _ = corpus
    sp.save_npz(tmp_path / "compressed.npz", x)
    sp.save_npz(tmp_path / "plain.npz", x, compressed=False)
    store = write_anndata(tmp_path / "cells.zarr", x.astype(np.float64))
    sources = {
        "csc": x.tocsc(),
        "dense": x.toarray(),
        "dask-csr": from_scipy(x, chunks=50),
        "dask-dense": da.from_array(x.toarray(), chunks=(50, -1)),
        "npz": str(tmp_path / "compressed.npz"),
        "npz-uncompressed": str(tmp_path / "plain.npz"),
        "anndata": dgmm.open_dataset(store, key="X"),
    }
    reference = fitted(x, 5, alpha=0.5, chunks=150)
    for name, source in sources.items():
        got = fitted(source, 5, alpha=0.5, chunks=150)
        assert got.n_features_in_ == N_WORDS, name
        assert_same_fit(got, reference, rtol=1e-9)


def test_open_dataset_reads_anndata_and_npz_as_sparse_chunks(tmp_path, corpus):
    x, _ = corpus
    store = write_anndata(tmp_path / "cells.zarr", x)
    sp.save_npz(tmp_path / "counts.npz", x, compressed=False)
    for opened in (dgmm.open_dataset(store, key="X"), dgmm.open_dataset(str(tmp_path / "counts.npz"), chunks=100)):
        assert opened.shape == x.shape
        assert sp.issparse(opened.blocks[0].compute())
        assert (opened.compute() != x).nnz == 0


def test_lockstep_restarts_read_the_data_once_per_iteration(corpus, streamed):
    x, _ = corpus
    source = ReadCounter(from_scipy(x, chunks=100))
    fitted(source.array, 4, n_init=3, init_params="random")
    # One pass of random responsibilities, then one pass per iteration for all three.
    assert dict(source.counts) == {i: 5 for i in range(source.n_chunks)}


@pytest.mark.parametrize("n_init", [1, 3])
def test_kmeans_init_reads_the_data_twice_for_all_restarts(corpus, streamed, monkeypatch, n_init):
    x, _ = corpus
    small_sample(monkeypatch, 250)  # a true sample: KMeans runs 3 starts per restart
    source = ReadCounter(from_scipy(x, chunks=100))
    fitted(source.array, 4, n_init=n_init, init_params="kmeans")
    # One sample pass and one assignment pass, then one pass per iteration for every restart.
    assert dict(source.counts) == {i: 6 for i in range(source.n_chunks)}


def test_kmeans_init_reads_once_when_the_sample_is_every_document(corpus, streamed):
    x, _ = corpus
    source = ReadCounter(from_scipy(x, chunks=100))
    model = fitted(source.array, 4, init_params="kmeans")
    # The sample holds every document: they are assigned in memory, no second pass.
    assert dict(source.counts) == {i: 1 + model.n_iter_ for i in range(source.n_chunks)}
    # The same start as the assignment pass over the data gives.
    x_ = from_scipy(x, chunks=100)
    spec = dgmm.MultinomialMixture(K, random_state=0).fit_spec()
    in_memory = init_multinomial.initialize(x_, spec, 1)[0]
    seed = int(np.random.default_rng([spec.seed, 0]).integers(2**31))
    centers = init_multinomial._kmeans_centers(init_multinomial.draw_sample(x_, spec), x.shape[1], K, seed, 1)
    (stats,) = graph.stats_pass(x_, (seeding.HellingerAssign(centers),))
    from_pass = mn.m_step(stats, spec.alpha).params
    np.testing.assert_allclose(in_memory.feature_log_prob, from_pass.feature_log_prob, rtol=1e-12)
    np.testing.assert_allclose(in_memory.weights, from_pass.weights, rtol=1e-12)


def small_sample(monkeypatch, rows: int, nnz: int | None = None) -> None:
    """Make the "kmeans" sample ``rows`` documents (and ``nnz`` non-zeros) at most."""
    monkeypatch.setattr(init_multinomial, "SAMPLE_ROWS", rows)
    monkeypatch.setattr(init_multinomial, "ROWS_PER_COMPONENT", 1)
    if nnz is not None:
        monkeypatch.setattr(init_multinomial, "SAMPLE_NNZ", nnz)


def kmeans_starts(X, n_init: int = 2, **kwargs):
    spec = dgmm.MultinomialMixture(K, random_state=0, **kwargs).fit_spec()
    return init_multinomial.initialize(X, spec, n_init)


def test_kmeans_sample_and_starts_are_the_same_on_any_chunking_dense_or_sparse(corpus, monkeypatch):
    x, _ = corpus
    small_sample(monkeypatch, 250, nnz=2000)
    spec = dgmm.MultinomialMixture(K, random_state=0).fit_spec()
    forms = {
        "csr-100": from_scipy(x, chunks=100),
        "csr-37": from_scipy(x, chunks=37),
        "dense-170": da.from_array(x.toarray(), chunks=(170, -1)),
        "dense-int-600": da.from_array(x.toarray().astype(np.int64), chunks=(600, -1)),
    }
    samples = {name: init_multinomial.draw_sample(X, spec) for name, X in forms.items()}
    first = samples["csr-100"]
    # The non-zero cap binds before the 250 rows: a prefix of the hash order, capped.
    assert 4 * K <= first.rows.shape[0] < 250 and first.points.nnz <= 2000
    assert np.all(np.diff(first.rows) > 0) and sp.issparse(first.points)
    np.testing.assert_array_equal(first.points.toarray(), x[first.rows].toarray())
    for name, sample in samples.items():
        np.testing.assert_array_equal(sample.rows, first.rows, err_msg=name)
        assert isinstance(sample.points, sp.csr_matrix), name  # dense chunks give a sparse sample too
        assert (sample.points != first.points).nnz == 0, name
    starts = {name: kmeans_starts(X) for name, X in forms.items()}
    for name, got in starts.items():
        for a, b in zip(got, starts["csr-100"]):
            np.testing.assert_allclose(a.weights, b.weights, rtol=1e-10, err_msg=name)
            np.testing.assert_allclose(a.feature_log_prob, b.feature_log_prob, rtol=1e-10, err_msg=name)
    # The two restarts clustered the same sample from their own seeds.
    assert not np.allclose(starts["csr-100"][0].feature_log_prob, starts["csr-100"][1].feature_log_prob)


def test_kmeans_sample_is_uniform_and_keeps_the_weights(monkeypatch, rng):
    x = sp.csr_matrix(np.ones((4000, 3)))
    w = rng.uniform(0.5, 2.0, size=4000)
    small_sample(monkeypatch, 1000)
    spec = dgmm.MultinomialMixture(K, random_state=3).fit_spec()
    sample = init_multinomial.draw_sample(from_scipy(x, chunks=300), spec, da.from_array(w, chunks=300))
    assert sample.rows.shape[0] == 1000
    np.testing.assert_array_equal(sample.weights, w[sample.rows])
    # Each quarter of the rows holds about a quarter of the sample (binomial sd ~14).
    np.testing.assert_allclose(np.bincount(sample.rows // 1000), 250, atol=70)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        pytest.param("negative", r"Negative values in data.*at row 417, column 5", id="negative-count"),
        pytest.param("nan", r"NaN.*at row 233", id="nan-count"),
        pytest.param("weight", r"sample_weight.*row 101.*-1\.0", id="negative-weight"),
    ],
)
def test_bad_counts_are_caught_by_the_sample_pass_outside_the_sample(corpus, monkeypatch, bad, pattern):
    x, _ = corpus
    small_sample(monkeypatch, 40)
    spec = dgmm.MultinomialMixture(K, random_state=0).fit_spec()
    w = np.ones(N_DOCS)
    dense = x.toarray()
    if bad == "negative":
        dense[417, 5] = -1.0
    elif bad == "nan":
        dense[233, 0] = np.nan
    else:
        w[101] = -1.0
    row = {"negative": 417, "nan": 233, "weight": 101}[bad]
    clean = init_multinomial.draw_sample(from_scipy(x, chunks=100), spec)
    assert row not in clean.rows  # the check covers every row of a chunk, sampled or not
    source = ReadCounter(da.from_array(dense, chunks=(100, -1)))
    with pytest.raises(InvalidDataError, match=pattern):
        init_multinomial.initialize(source.array, spec, 1, sample_weight=da.from_array(w, chunks=100))
    assert max(source.counts.values()) == 1  # found in the first pass, no other pass made


def test_kmeans_on_a_true_sample_recovers_known_topics(rng, monkeypatch):
    truth = mn.MultinomialParams.from_probabilities(np.array([0.3, 0.25, 0.2, 0.15, 0.1]), zipf_topics(rng, 5, 1500))
    x, labels = mn.sample(truth, 3000, rng.poisson(80, size=3000), rng)
    small_sample(monkeypatch, 500)  # a sixth of the documents
    mm = dgmm.MultinomialMixture(5, alpha=0.1, random_state=0, chunks=700).fit(x)
    assert mm.converged_
    assert adjusted_rand_score(labels, mm.predict(x)) >= 0.95


def test_a_fit_with_fixed_chunks_is_deterministic(corpus):
    x, _ = corpus
    a = fitted(x, 6, n_init=2, alpha=0.2, chunks=70)
    b = fitted(x, 6, n_init=2, alpha=0.2, chunks=70)
    assert a.params_.equals(b.params_)
    assert a.lower_bounds_ == b.lower_bounds_


def test_the_fit_is_bit_identical_on_one_worker_and_on_two(corpus):
    from distributed import Client

    x, _ = corpus
    two = fitted(x, 5, n_init=2, chunks=60)  # the session's client: two workers
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0", set_as_default=False) as one_worker:
        one = fitted(x, 5, n_init=2, chunks=60, client=one_worker)
    assert one.params_.equals(two.params_)
    assert one.lower_bounds_ == two.lower_bounds_
    here = fitted(x, 5, n_init=2, chunks=60, scheduler="synchronous")  # no cluster at all
    assert here.params_.equals(two.params_)


def test_warm_start_continues_the_fit(corpus, start):
    x, _ = corpus
    six = fitted(x, 6, **start)
    mm = fitted(x, 3, **start)
    mm.set_params(warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mm.fit(x)
    assert mm.params_.equals(six.params_)


def test_float32_counts_run_float32_and_give_float64_log_probabilities(corpus, start):
    x, _ = corpus
    single = fitted(x.astype(np.float32), 4, **start)
    double = fitted(x, 4, **start)
    assert single.feature_log_prob_.dtype == np.float64
    np.testing.assert_allclose(single.feature_log_prob_, double.feature_log_prob_, rtol=1e-4)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, corpus):
    x, _ = corpus
    full = fitted(x, 6, n_init=2, chunks=100)
    ckpt = str(tmp_path / "ckpt")
    fitted(x, 3, n_init=2, chunks=100, checkpoint=ckpt)
    resumed = fitted(x, 6, n_init=2, chunks=100, checkpoint=ckpt)
    assert resumed.params_.equals(full.params_)
    assert resumed.lower_bounds_ == full.lower_bounds_


def test_a_row_of_weight_two_is_that_row_twice(corpus, start):
    x, _ = corpus
    w = np.ones(N_DOCS)
    w[::5] = 2.0
    twice = sp.vstack([x, x[::5]]).tocsr()
    a = fitted(x, 5, sample_weight=w, chunks=200, **start)
    b = fitted(twice, 5, chunks=200, **start)
    assert_same_fit(a, b, rtol=1e-10)


def test_collapsed_components_are_reseeded_from_the_heaviest(rng):
    x = sp.csr_matrix(np.tile([[5.0, 0.0, 0.0, 1.0], [0.0, 4.0, 1.0, 0.0]], (50, 1)))
    start = np.array([[0.5, 0.1, 0.1, 0.3], [0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    mm = dgmm.MultinomialMixture(
        3, alpha=1e-3, max_iter=5, tol=0.0, feature_prob_init=start, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mm.fit(x)
    events = [e for h in mm.history_ for e in h["events"]]
    assert events and events[0]["event"] == "reseed" and events[0]["reason"] == "weight_collapsed"
    assert events[0]["component"] == 2
    with pytest.raises(dgmm.errors.DegenerateComponentError, match=r"\[2\]"):
        dgmm.MultinomialMixture(3, alpha=1e-3, feature_prob_init=start, on_degenerate="raise").fit(x)


# -- errors --------------------------------------------------------------------------------


def _negative(x):
    x = x.toarray()
    x[417, 5] = -1.0
    return x


def _nan(x):
    x = x.tocsr(copy=True)
    x.data[x.indptr[233]] = np.nan
    return x


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        pytest.param(_negative, InvalidDataError, r"Negative values in data.*-1\.0 at row 417, column 5", id="negative-count"),
        pytest.param(_nan, InvalidDataError, r"NaN.*at row 233", id="nan"),
        pytest.param(lambda x: x.toarray()[0], InvalidDataError, r"2-D.*reshape", id="1-d"),
    ],
)
def test_bad_data_raises_typed_errors_naming_the_row(corpus, make, error, pattern):
    x, _ = corpus
    with pytest.raises(error, match=pattern):
        dgmm.MultinomialMixture(K, chunks=100, random_state=0).fit(make(x))


def test_feature_prob_init_rows_must_sum_to_one(corpus, start):
    x, _ = corpus
    bad = start["feature_prob_init"].copy()
    bad[1] *= 2
    with pytest.raises(InvalidDataError, match=r"feature_prob_init.*rows \[1\].*sum to 1"):
        dgmm.MultinomialMixture(K, feature_prob_init=bad).fit(x)
    with pytest.raises(ShapeMismatchError, match="feature_prob_init"):
        dgmm.MultinomialMixture(K, feature_prob_init=bad[:, :-1]).fit(x)


def test_a_vocabulary_mismatch_at_predict_is_a_typed_error(corpus, start):
    x, _ = corpus
    mm = fitted(x, 1, **start)
    with pytest.raises(ShapeMismatchError, match=f"{N_WORDS - 1} features.*expecting {N_WORDS} features"):
        mm.predict(x[:, :-1])
    with pytest.raises(ShapeMismatchError, match="vocabulary"):
        mm.predict(from_scipy(x[:, 1:], chunks=100))


def test_gaussian_mixture_still_refuses_sparse_input(corpus):
    x, _ = corpus
    with pytest.raises(UnsupportedInputError, match="MultinomialMixture"):
        dgmm.GaussianMixture(2).fit(from_scipy(x, chunks=100))


# -- model files, prediction to storage, the CLI ---------------------------------------------


def test_save_load_round_trip(tmp_path, corpus, start):
    x, _ = corpus
    mm = fitted(x, 3, alpha=0.3, **start)
    mm.save(tmp_path / "model")
    back = dgmm.load(tmp_path / "model")
    assert isinstance(back, dgmm.MultinomialMixture)
    assert back.params_.equals(mm.params_) and back.alpha == 0.3
    assert back.history_ == mm.history_ and back.n_iter_ == 3
    np.testing.assert_array_equal(back.predict(x), mm.predict(x))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["family"] == "multinomial" and meta["estimator"] == "dgmm.MultinomialMixture"
    assert get_family("multinomial").name == "multinomial"


def test_predict_to_and_lazy_prediction_match_in_memory(tmp_path, corpus, start):
    x, _ = corpus
    mm = fitted(x, 3, **start)
    lazy = mm.predict_proba(from_scipy(x, chunks=64))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), mm.predict_proba(x), rtol=1e-12)
    mm.predict_to(x, str(tmp_path / "out.zarr"), output=["labels", "log_density"])
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(group["label"][:], mm.predict(x))
    np.testing.assert_allclose(group["log_density"][:], mm.score_samples(x), rtol=1e-12)


def test_top_features_and_sampling(corpus, start):
    x, _ = corpus
    mm = fitted(x, 3, **start)
    names = np.array([f"w{i}" for i in range(N_WORDS)], dtype=object)
    top = mm.top_features(4, feature_names=names)
    assert len(top) == K and all(len(t) == 4 for t in top)
    for k, t in enumerate(top):
        probs = [p for _, p in t]
        assert probs == sorted(probs, reverse=True)
        assert t[0][0] == names[int(np.argmax(mm.feature_log_prob_[k]))]
    X, labels = mm.sample(20, doc_length=30)
    assert sp.issparse(X) and X.shape == (20, N_WORDS) and np.all(X.sum(axis=1) == 30)
    assert labels.shape == (20,)


def test_cli_fits_an_anndata_store_and_describes_the_model(tmp_path, corpus):
    x, _ = corpus
    write_anndata(tmp_path / "cells.zarr", x)
    result = invoke(
        "fit", "cells.zarr", "--key", "X", "--model", "multinomial", "-k", K, "--alpha", 0.1,
        "--seed", 0, "-o", "model", "--json", cwd=tmp_path,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["model"] == "multinomial" and summary["n_features"] == N_WORDS
    assert isinstance(dgmm.load(tmp_path / "model"), dgmm.MultinomialMixture)
    info = invoke("info", "model", cwd=tmp_path)
    assert info.exit_code == 0, info.output
    assert "component 0" in info.output and "top features" in info.output
    score = invoke("score", "model", "cells.zarr", "--key", "X", "--json", cwd=tmp_path)
    assert score.exit_code == 0, score.output
    mm = dgmm.load(tmp_path / "model")
    assert json.loads(score.output.strip().splitlines()[-1])["log_likelihood"] == pytest.approx(mm.score(x), rel=1e-10)
    predicted = invoke("predict", "model", "cells.zarr", "-o", "labels.zarr", "--key", "X", cwd=tmp_path)
    assert predicted.exit_code == 0, predicted.output
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")["label"][:], mm.predict(x))
    refused = invoke("sample", "model", "-n", 10, "-o", "drawn.zarr", cwd=tmp_path)
    assert refused.exit_code == 1 and "mixture of multinomials" in refused.output


def test_sparse_partials_are_bit_identical_across_workers_and_resume(tmp_path, rng):
    """A large vocabulary and small chunks: every chunk's statistics are the sparse form
    (only the words it holds), merged by word index in the fixed tree."""
    from distributed import Client

    n_words = 3000
    truth = mn.MultinomialParams.from_probabilities(np.full(K, 1 / K), zipf_topics(rng, K, n_words))
    x, _ = mn.sample(truth, 400, 20, rng)
    prepared = mn.prepare(truth)
    assert all(
        isinstance(mn.chunk_stats(x[i : i + 25], prepared), mn.SparseMultinomialStats) for i in range(0, 400, 25)
    )
    kwargs = {"n_init": 2, "chunks": 25, "alpha": 0.5}
    two = fitted(x, 4, **kwargs)  # the session's client: two workers
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0", set_as_default=False) as one_worker:
        one = fitted(x, 4, client=one_worker, **kwargs)
    here = fitted(x, 4, scheduler="synchronous", **kwargs)
    ckpt = str(tmp_path / "ckpt")
    fitted(x, 2, checkpoint=ckpt, **kwargs)
    resumed = fitted(x, 4, checkpoint=ckpt, **kwargs)
    for other in (one, here, resumed):
        assert other.params_.equals(two.params_)
        assert other.lower_bounds_ == two.lower_bounds_


def test_tol_is_on_the_mean_log_likelihood_per_document(corpus, start):
    x, _ = corpus
    tol = 1e-4

    def fit(X):
        return dgmm.MultinomialMixture(K, alpha=0.0, tol=tol, max_iter=500, random_state=0, **start).fit(X)

    once = fit(x)
    steps = np.abs(np.diff(once.lower_bounds_))
    assert once.converged_ and once.n_iter_ == len(once.lower_bounds_) > 2
    assert steps[-1] < tol and np.all(steps[:-1] >= tol)  # stops at the first change below tol
    # The same documents twice: the same mean per document, so the same iterations (N-invariant).
    twice = fit(sp.vstack([x, x], format="csr"))
    assert twice.n_iter_ == once.n_iter_
    np.testing.assert_allclose(twice.lower_bounds_, once.lower_bounds_, rtol=1e-9)


def test_predict_and_score_accept_paths(tmp_path, corpus, start):
    x, _ = corpus
    mm = fitted(x, 3, **start)
    sp.save_npz(tmp_path / "counts.npz", x, compressed=False)
    path = str(tmp_path / "counts.npz")
    labels = mm.predict(path)
    np.testing.assert_array_equal(labels.compute() if isinstance(labels, da.Array) else labels, mm.predict(x))
    assert mm.score(path) == pytest.approx(mm.score(x), rel=1e-12)
