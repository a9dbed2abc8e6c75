"""dgmm.select: every candidate in shared passes, each equal to its own fit; rows, criteria, files."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import dgmm
from dgmm.errors import InvalidDataError, InvalidOptionError
from dgmm.fit.select import prune_rule
from dgmm.selection import SelectionResult

from ._helpers import ReadCounter, blobs_and_duplicates, fit_quietly, make_mixture

TYPES = ["full", "diag", "tied", "spherical"]


def _comparable(row: dict) -> dict:
    """A table row with NaN as None (NaN != NaN) and the wall time dropped."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items() if k != "seconds"}


def _select(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return dgmm.select(X, **kw)


@pytest.fixture(scope="module")
def data():
    # Overlapping clusters: EM needs a few iterations, the candidates converge at different times.
    return make_mixture(np.random.default_rng(7), n_samples=3000, n_features=3, n_components=3, separation=2.5)


@pytest.fixture(scope="module")
def sweep(data):
    return _select(data.X, n_components=range(1, 5), covariance_type=TYPES, init_params="k-means++", random_state=0,
                   chunks=500)


@pytest.mark.parametrize("k,covariance_type", [(2, "full"), (3, "diag"), (4, "tied"), (3, "spherical"), (1, "full")])
def test_each_candidate_equals_its_own_fit(data, sweep, k, covariance_type):
    own = fit_quietly(
        dgmm.GaussianMixture(k, covariance_type=covariance_type, init_params="k-means++", random_state=0, chunks=500),
        data.X,
    )
    got = sweep.estimator(k, covariance_type)
    assert got.n_iter_ == own.n_iter_ and got.converged_ == own.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(got, name), getattr(own, name), rtol=1e-9, atol=1e-12)
    assert got.lower_bound_ == pytest.approx(own.lower_bound_, rel=1e-12)
    row = next(c for c in sweep.candidates if (c.n_components, c.covariance_type) == (k, covariance_type))
    n = data.X.shape[0]
    # The BIC of the last pass's log-likelihood: EM only raises it, by about tol per row at most.
    assert row.bic == pytest.approx(-2 * n * own.lower_bound_ + own._n_parameters() * math.log(n), rel=1e-12)
    assert own.bic(data.X) <= row.bic + 1e-6 * abs(row.bic)
    assert row.bic - own.bic(data.X) <= 4 * n * own.tol
    assert row.aic == pytest.approx(row.bic - own._n_parameters() * (math.log(n) - 2), rel=1e-12)


def test_table_and_best_by_criterion(data, sweep):
    rows = sweep.rows
    assert [(r["n_components"], r["covariance_type"]) for r in rows] == [(k, t) for t in TYPES for k in range(1, 5)]
    bics = [r["bic"] for r in rows]
    assert sweep.best_index_ == int(np.argmin(bics))
    assert sweep.best_params_ == {k: rows[sweep.best_index_][k] for k in ("n_components", "covariance_type")}
    assert sweep.best_estimator_.n_components == sweep.best_params_["n_components"]
    # Three true components: the best BIC has three (the types may share it).
    assert sweep.best_params_["n_components"] == 3
    assert all(r["status"] == "converged" and r["error"] is None for r in rows)
    table = sweep.results_
    assert len(table) == len(rows)
    assert "best" not in sweep.table() and sweep.table().count("*") == 1


def test_aic_criterion_picks_the_lowest_aic(data):
    sel = _select(data.X, n_components=[1, 2, 3, 5], covariance_type="diag", criterion="aic", random_state=1,
                  chunks=500)
    aics = [c.aic for c in sel.candidates]
    assert sel.best_index_ == int(np.argmin(aics))


def test_sweep_reads_like_its_slowest_candidate(rng, streamed):
    mix = make_mixture(rng, n_samples=4000, n_features=3, n_components=3, separation=2.5)
    grid = [(k, t) for t in ("full", "diag") for k in (1, 2, 3, 4)]
    init, n_iter = 0, []
    for k, t in grid:
        alone = ReadCounter(mix.X, rows=500)
        gmm = fit_quietly(dgmm.GaussianMixture(k, covariance_type=t, init_params="k-means++", random_state=2),
                          alone.array)
        n_iter.append(gmm.n_iter_)
        # Everything a fit reads besides one pass per EM iteration is its initialisation.
        init += sum(alone.counts.values()) - gmm.n_iter_ * alone.n_chunks
    source = ReadCounter(mix.X, rows=500)
    sel = _select(source.array, n_components=[1, 2, 3, 4], covariance_type=["full", "diag"],
                  init_params="k-means++", random_state=2)
    assert [c.n_iter for c in sel.candidates] == n_iter
    em_reads = sum(source.counts.values()) - init
    # The EM passes of the sweep: as many as its slowest candidate, not the sum.
    assert em_reads <= (max(n_iter) + 2) * source.n_chunks
    assert sum(n_iter) > 2 * max(n_iter)  # the test would not tell otherwise


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "split"])
def test_the_whole_sweep_reads_one_initialisation_pass_and_its_slowest_candidate(rng, streamed, init_params):
    # The candidates share the initialisation's passes too (fit.init.initialize_many: one
    # sample pass; these 4000 rows fit in it, so no statistics pass), so the sweep reads
    # the data about as often as its slowest candidate alone, not as often as all of them.
    mix = make_mixture(rng, n_samples=4000, n_features=3, n_components=3, separation=2.5)
    source = ReadCounter(mix.X, rows=500)
    sel = _select(source.array, n_components=[1, 2, 3, 4, 5], covariance_type=["full", "diag", "spherical"],
                  init_params=init_params, random_state=2)
    n_iter = [c.n_iter for c in sel.candidates]
    assert all(c.error is None for c in sel.candidates)
    assert sum(source.counts.values()) == (1 + max(n_iter)) * source.n_chunks
    assert sum(n_iter) > 3 * max(n_iter)


def test_failing_candidates_are_rows():
    X = blobs_and_duplicates()  # a component on the 20 copies collapses with reg_covar=0
    sel = _select(X, n_components=[2, 3, 500], covariance_type=["full"], reg_covar=0.0,
                  on_degenerate="raise", init_params="k-means++", random_state=3)
    by_k = {c.n_components: c for c in sel.candidates}
    assert by_k[500].status == "failed" and "n_samples >= n_components" in by_k[500].error
    assert by_k[3].status == "failed" and by_k[3].error.startswith("DegenerateComponentError")
    assert by_k[2].status == "converged" and by_k[2].error is None
    assert sel.best_index_ == 0
    with pytest.raises(dgmm.errors.DegenerateComponentError):
        fit_quietly(dgmm.GaussianMixture(3, reg_covar=0.0, on_degenerate="raise", init_params="k-means++",
                                         random_state=3), X)


def test_every_candidate_failing_says_so():
    X = np.random.default_rng(0).normal(size=(5, 2))
    sel = _select(X, n_components=[6, 7], random_state=0)
    assert [c.status for c in sel.candidates] == ["failed", "failed"]
    with pytest.raises(InvalidOptionError, match="Every candidate of the sweep failed"):
        sel.best_estimator_


def test_lowrank_candidate_with_a_rank_too_large_is_a_row(data):
    sel = _select(data.X, n_components=[2], covariance_type=["diag", "lowrank"], rank=5, random_state=0,
                  max_iter=5)
    assert sel.candidates[1].status == "failed" and "rank" in sel.candidates[1].error
    assert sel.candidates[0].result is not None


def test_a_sweep_of_gaussian_and_low_rank_candidates_reads_once_per_iteration(rng, streamed):
    # Sources of two model families in one lockstep run: each pass reads a chunk
    # once for all of them, and each candidate ends where its own fit ends.
    mix = make_mixture(rng, n_samples=3000, n_features=4, n_components=3, separation=3.0)
    source = ReadCounter(mix.X, rows=500)
    kw = dict(random_state=1, max_iter=8, tol=0.0)
    sel = _select(source.array, n_components=[2, 3], covariance_type=["diag", "lowrank"], rank=1, **kw)
    assert [c.status for c in sel.candidates] == ["max_iter"] * 4
    # The sample pass holds every row: no statistics pass; then 8 iterations for all.
    assert dict(source.counts) == {i: 1 + 8 for i in range(source.n_chunks)}
    for k, ct in [(3, "diag"), (3, "lowrank")]:
        own = fit_quietly(dgmm.GaussianMixture(k, covariance_type=ct, rank=1, **kw), source.array)
        got = sel.estimator(k, ct)
        np.testing.assert_allclose(got.means_, own.means_, rtol=1e-9, atol=1e-12)
        assert got.lower_bound_ == pytest.approx(own.lower_bound_, rel=1e-12)


def test_save_load_round_trip(tmp_path, sweep):
    path = tmp_path / "selection"
    sweep.save(path)
    loaded = SelectionResult.load(path)
    assert [_comparable(r) for r in loaded.rows] == [_comparable(r) for r in sweep.rows]
    assert loaded.best_index_ == sweep.best_index_ and loaded.criterion == "bic"
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(loaded.best_estimator_, name), getattr(sweep.best_estimator_, name))
    # The same directory is an ordinary model: dgmm.load gives the best GaussianMixture.
    model = dgmm.load(path)
    np.testing.assert_array_equal(model.means_, sweep.best_estimator_.means_)
    with pytest.raises(InvalidOptionError, match="keeps only"):
        loaded.estimator(1, "full")
    sweep.best_estimator_.save(tmp_path / "plain")
    with pytest.raises(dgmm.errors.ModelFormatError, match="selection.json"):
        SelectionResult.load(tmp_path / "plain")


def test_validation_scores_the_held_out_chunks(data):
    sel = _select(data.X, n_components=[1, 2, 3, 4], covariance_type="full", criterion="validation",
                  validation_fraction=0.34, random_state=0, chunks=500)
    val = np.asarray(sel.sweep.validation_chunks)
    assert len(val) == 2  # round(0.34 * 6)
    held = np.concatenate([data.X[500 * i: 500 * (i + 1)] for i in val])
    train = np.concatenate([data.X[500 * i: 500 * (i + 1)] for i in range(6) if i not in val])
    assert sel.sweep.n_samples == len(train) and sel.sweep.n_validation == len(held)
    for c in sel.candidates:
        gmm = sel.estimator(c.n_components, "full")
        # The held-out mean log-likelihood of the final parameters, from the same passes.
        assert c.validation == pytest.approx(gmm.score(held), rel=1e-10)
    assert sel.best_index_ == int(np.argmax([c.validation for c in sel.candidates]))
    # Fitted on the other chunks: as a fit on those rows alone.
    own = fit_quietly(dgmm.GaussianMixture(3, random_state=0, chunks=500), train)
    np.testing.assert_allclose(sel.estimator(3, "full").means_, own.means_, rtol=1e-9)


def test_checkpoint_resumes_bit_identically(tmp_path, data):
    kw = dict(n_components=[1, 2, 3], covariance_type=["full", "diag"], random_state=0, chunks=500)
    whole = _select(data.X, **kw)
    ckpt = tmp_path / "ckpt"
    first = _select(data.X, checkpoint=ckpt, max_iter=2, **kw)
    assert {c.status for c in first.candidates} <= {"max_iter", "converged"}
    resumed = _select(data.X, checkpoint=ckpt, **kw)
    for a, b in zip(whole.candidates, resumed.candidates):
        assert _comparable(a.row()) == _comparable(b.row())
        np.testing.assert_array_equal(a.result.params.means, b.result.params.means)
        np.testing.assert_array_equal(a.result.params.covariances, b.result.params.covariances)
    with pytest.raises(dgmm.errors.CheckpointMismatchError):
        _select(data.X, checkpoint=ckpt, **{**kw, "n_components": [1, 2]})


def test_prune_keeps_the_best_and_reads_less(streamed):
    mix = make_mixture(np.random.default_rng(3), n_samples=2000, n_features=4, n_components=4, separation=3.0)
    reads, sels = {}, {}
    for prune in (False, True):
        source = ReadCounter(mix.X, rows=500)
        sels[prune] = _select(source.array, n_components=range(1, 7), covariance_type=["full", "spherical"],
                              init_params="k-means++", random_state=0, tol=1e-5, prune=prune)
        reads[prune] = sum(source.counts.values())
    assert sels[True].best_params_ == sels[False].best_params_
    assert sels[True].candidates[sels[True].best_index_].bic == sels[False].candidates[sels[False].best_index_].bic
    assert reads[True] < reads[False]
    pruned = [c for c in sels[True].candidates if c.status == "pruned"]
    assert pruned and all(c.result is None and c.error.startswith("pruned") for c in pruned)
    # A pruned candidate would not have won: its full fit's BIC is above the best.
    best = sels[False].candidates[sels[False].best_index_].bic
    full = {(c.n_components, c.covariance_type): c.bic for c in sels[False].candidates}
    assert all(full[c.n_components, c.covariance_type] > best for c in pruned)


GROWING = [-3.0, -2.0, -1.5, -1.2, -1.1, -1.05]  # last three changes 0.3, 0.1, 0.05


@pytest.mark.parametrize(
    "bounds,best,expected",
    [
        (GROWING[:4], -100.0, False),
        (GROWING, -1.0, True),
        # Worse now (BIC 2.1) but not with the optimistic gain (4 x 0.3: BIC -0.3): kept.
        (GROWING, 0.0, False),
        ([-3.0, -2.0, -1.5, -1.6, -1.55, -1.5], -100.0, False),
        (GROWING, math.inf, False),
    ],
    ids=["few-iterations", "cannot-beat", "optimistic-gain-could-beat", "a-decrease", "no-best-yet"],
)
def test_prune_rule(bounds, best, expected):
    # No parameters and one row: the BIC is -2 * lower_bound; max_iter=10 leaves 4 iterations.
    assert prune_rule(bounds, 0, 1.0, best, 10, "bic") is expected


BAD = [
    ({"criterion": "gini"}, InvalidOptionError, "criterion must be one of"),
    ({"n_components": [0, 2]}, InvalidOptionError, "positive int"),
    ({"covariance_type": ["full", "round"]}, InvalidOptionError, "covariance_type must be"),
    ({"means_init": np.zeros((2, 3))}, InvalidOptionError, "initial arrays"),
    ({"n_componentz": 3}, InvalidOptionError, "unknown option"),
    ({"criterion": "validation", "prune": True}, InvalidOptionError, "prune=True"),
    ({"criterion": "validation", "validation_fraction": 1.5}, InvalidOptionError, "validation_fraction"),
    ({"criterion": "validation", "chunks": 10_000}, InvalidDataError, "at least 2 chunks"),
]


@pytest.mark.parametrize("kw,error,match", BAD, ids=[str(sorted(b[0]))[:40] for b in BAD])
def test_bad_input(data, kw, error, match):
    with pytest.raises(error, match=match):
        dgmm.select(data.X, **{"n_components": [1, 2], "random_state": 0, **kw})


def test_plot_marks_the_best(tmp_path, sweep, data):
    pytest.importorskip("matplotlib")
    figure = sweep.plot(data.X[:500], path=tmp_path / "bic.png")
    assert (tmp_path / "bic.png").stat().st_size > 0
    curve = figure.axes[0]
    labels = [line.get_label() for line in curve.get_lines()]
    assert labels[: len(TYPES)] == TYPES
    best = sweep.candidates[sweep.best_index_]
    assert f"best: K={best.n_components} {best.covariance_type}" in labels


def test_cli_select_prints_the_table_and_saves_the_best(tmp_path, data):
    pytest.importorskip("matplotlib")
    import json

    from ._helpers import invoke

    np.save(tmp_path / "x.npy", data.X)
    args = ["select", "x.npy", "-k", "1-3,5", "--covariance-type", "full,diag", "-o", "model", "--seed", "0",
            "--init", "k-means++", "--local-scheduler", "threads"]
    result = invoke(*args, "--json", "--plot", "bic.png", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [(c["n_components"], c["covariance_type"]) for c in summary["candidates"]] == [
        (k, t) for t in ("full", "diag") for k in (1, 2, 3, 5)
    ]
    best = dgmm.load(tmp_path / "model")
    assert (best.n_components, best.covariance_type) == (
        summary["best_n_components"], summary["best_covariance_type"]
    )
    assert (tmp_path / "bic.png").stat().st_size > 0
    # The same sweep as the library's.
    sel = _select(data.X, n_components=[1, 2, 3, 5], covariance_type=["full", "diag"], random_state=0,
                  init_params="k-means++")
    assert [c["bic"] for c in summary["candidates"]] == pytest.approx([c.bic for c in sel.candidates], rel=1e-10)
    text = invoke(*args, "--overwrite", cwd=tmp_path)
    assert text.exit_code == 0 and text.output.count("*") == 1 and "covariance" in text.output


@pytest.mark.parametrize("k", ["0-3", "5-2", "a"])
def test_cli_select_bad_range_is_a_usage_error(tmp_path, k):
    from ._helpers import invoke

    result = invoke("select", "x.npy", "-k", k, "-o", "model", cwd=tmp_path)
    assert result.exit_code == 2 and "range or a list" in result.output


def test_a_sweep_shows_its_progress_as_a_fit_does(data):
    heard = []
    _select(data.X, n_components=[1, 2], covariance_type=["diag"], random_state=0, max_iter=3, tol=0.0,
            chunks=500, on_progress=heard.append)
    phases = [p.label for p in heard if p.event == "phase"]
    assert phases[0] == "opening data"
    assert [p for p in phases if p.startswith("EM")] == [f"EM iteration {i} of 3" for i in (1, 2, 3)]
    # Every pass is heard from its start to its end, chunk by chunk.
    ends = [p for p in heard if p.event == "end"]
    em = [f"EM iteration {i} of 3" for i in (1, 2, 3)]
    assert [p.label.split(" step")[0] for p in ends] == ["initialisation", *em]
    assert all(p.chunks_done == p.n_chunks == 6 for p in ends)
