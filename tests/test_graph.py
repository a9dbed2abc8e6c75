"""The graph layer: a fixed reduction tree, one pass equals the numpy kernel
on the whole data, lazy predictions."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture
from dgmm import graph as _graph
from dgmm.core.kernels import EStep, chunk_stats
from dgmm.core.params import GMMParams

from ._helpers import assert_stats_close, random_params


def _concat(parts):
    return [item for part in parts for item in part]


@pytest.mark.parametrize("n_parts,split_every", [(1, 2), (7, 2), (20, 3), (9, 8)])
def test_tree_reduce_keeps_order(n_parts, split_every):
    parts = [dask.delayed([i]) for i in range(n_parts)]
    (result,) = dask.compute(_graph.tree_reduce(parts, _concat, split_every), scheduler="sync")
    assert result == list(range(n_parts))


def test_tree_reduce_rejects_fan_in_below_two():
    with pytest.raises(ValueError, match="split_every"):
        _graph.tree_reduce([dask.delayed(1)], _concat, 1)


def test_stats_pass_equals_kernel_on_all_rows(rng, covariance_type):
    params = random_params(rng, covariance_type)
    X = rng.normal(0, 3, (2000, params.n_features))
    w = rng.uniform(0, 2, 2000)
    x = da.from_array(X, chunks=(300, -1))
    (got,) = _graph.stats_pass(x, (EStep(params),), da.from_array(w, chunks=300), split_every=3)
    (expected,) = chunk_stats(X, (EStep(params),), w)
    assert_stats_close(got, expected, rtol=1e-12)


@pytest.mark.parametrize("what,shape", [("labels", (1000,)), ("proba", (1000, 3)), ("score_samples", (1000,))])
def test_lazy_predictions_are_chunked_like_the_input(rng, what, shape):
    params: GMMParams = random_params(rng, "full")
    X = rng.normal(size=(1000, params.n_features))
    lazy = _graph.lazy_predict(da.from_array(X, chunks=(300, -1)), params, what)
    assert isinstance(lazy, da.Array) and lazy.shape == shape
    assert lazy.chunks[0] == (300, 300, 300, 100)
    np.testing.assert_allclose(lazy.compute(), _graph.predict_block(X, params, what))


def test_parameters_are_one_key_shared_by_every_task(rng):
    params = random_params(rng, "diag")
    x = da.from_array(rng.normal(size=(1000, params.n_features)), chunks=(100, -1))
    lazy = _graph.lazy_predict(x, params, "labels")
    graph = dict(lazy.__dask_graph__())
    holders = [k for k, v in graph.items() if isinstance(getattr(v, "value", None), GMMParams) or v is params]
    assert len(holders) == 1


@pytest.mark.parametrize("what", ["labels", "proba", "score_samples"])
def test_two_models_predicted_together_keep_their_own_answers(rng, what):
    # Keys must depend on the parameters: with a fixed key name the second
    # model's tasks would be taken for the first's when computed together.
    first, second = random_params(rng, "full"), random_params(rng, "full")
    X = rng.normal(0, 3, size=(600, first.n_features))
    x = da.from_array(X, chunks=(200, -1))
    a, b = dask.compute(_graph.lazy_predict(x, first, what), _graph.lazy_predict(x, second, what))
    np.testing.assert_allclose(a, _graph.predict_block(X, first, what))
    np.testing.assert_allclose(b, _graph.predict_block(X, second, what))


def test_predict_many_matches_each_prediction_from_one_record(rng):
    params = random_params(rng, "diag")
    X = rng.normal(0, 3, size=(700, params.n_features))
    x = da.from_array(X, chunks=(250, -1))
    many = _graph.lazy_predict_many(x, params, ["log_density", "labels", "proba"])
    assert list(many) == ["log_density", "labels", "proba"]
    assert all(a.chunks[0] == x.chunks[0] for a in many.values())
    assert many["labels"].dtype == np.int64
    got = dask.compute(many)[0]
    np.testing.assert_array_equal(got["labels"], _graph.predict_block(X, params, "labels"))
    np.testing.assert_allclose(got["proba"], _graph.predict_block(X, params, "proba"), rtol=1e-12)
    np.testing.assert_allclose(
        got["log_density"], _graph.predict_block(X, params, "score_samples"), rtol=1e-12
    )
    other = _graph.lazy_predict_many(x, random_params(rng, "diag"), ["labels"])
    assert other["labels"].name != many["labels"].name


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=5, tol=0
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_synchronous_pass_computed_directly_equals_the_graph_bit_for_bit(covariance_type, monkeypatch):
    # Small in-memory data runs synchronously, each pass computed on the chunks
    # directly (no graph): the same kernels and the same fixed tree (18 chunks,
    # fan-in 4: two levels) give the same bits as the threaded graph and the cluster.
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(0, 1, (900, 3)), rng.normal(5, 2, (900, 3))])
    w = rng.uniform(0.5, 2.0, len(X))
    direct = []
    real = _graph._map_reduce_here
    monkeypatch.setattr(_graph, "_map_reduce_here", lambda *a, **k: direct.append(1) or real(*a, **k))
    kw = dict(covariance_type=covariance_type, random_state=0, chunks=100, split_every=4, max_iter=5, tol=0.0)
    fits = {
        where: GaussianMixture(3, scheduler=where, **kw).fit(X, sample_weight=w)
        for where in ("synchronous", "threads")
    }
    n_direct = len(direct)
    fits["cluster"] = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    assert n_direct > 5 and len(direct) == n_direct, "only the synchronous fit takes the direct path"
    for name in ("weights_", "means_", "covariances_"):
        ref = getattr(fits["cluster"], name)
        assert all(np.array_equal(getattr(f, name), ref) for f in fits.values()), name
    assert len({f.lower_bound_ for f in fits.values()}) == 1


def _bits(stats) -> tuple[bytes, ...]:
    return tuple(np.asarray(getattr(stats, f)).tobytes() for f in ("nk", "sum_x", "sum_xx", "loglik", "weight"))


def test_repeated_passes_give_the_same_bits_in_every_thread_of_this_process(rng):
    # The user's BLAS runs 2 threads; every chunk's task must run with one, whichever
    # thread runs it: a multi-threaded GEMM sums resp.T @ design over the rows in
    # another order. threadpoolctl lets one "controlling" thread at a time set
    # OpenBLAS's process-wide limit and ignores the others, so worker threads kept
    # the user's 2 threads while this thread (the synchronous pass) got 1, and
    # repeated passes on a cluster's two worker threads differed in the last bits.
    # Chunks of 5000 rows: large enough for OpenBLAS to use its threads.
    from distributed import Client
    from threadpoolctl import threadpool_info, threadpool_limits

    params = random_params(rng, "diag", n_components=8, n_features=16)
    x = da.from_array(rng.normal(0, 3, (40_000, 16)), chunks=(5000, -1))
    source = (EStep(params),)
    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        users = blas_threads()
        with dask.config.set(scheduler="synchronous"):
            reference = _bits(_graph.stats_pass(x, source)[0])
        with dask.config.set(scheduler="threads"):
            passes = [_graph.stats_pass(x, source)[0] for _ in range(3)]
        with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
            on_cluster = client.persist(x)
            passes += [_graph.stats_pass(on_cluster, source)[0] for _ in range(4)]
        after = blas_threads()
    assert [_bits(s) == reference for s in passes] == [True] * len(passes)
    assert after == users, "the user's BLAS threads are back once no task runs"
