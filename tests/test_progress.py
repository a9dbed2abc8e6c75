"""Progress of every phase and every pass (dgmm.core.progress, dgmm.graph, dgmm.fit.progress).

A pass reports chunks, rows and bytes done while it runs, on the in-process
paths (synchronous, Dask's threads) and on the session's cluster (futures
followed with distributed.as_completed); the callback hears every phase in
order; a non-terminal stderr gets at most one line per pass; listening
changes no bit of the result.
"""

from __future__ import annotations

import io
import logging
import time

import dask
import dask.array as da
import numpy as np
import pytest

from dgmm import graph as _graph
from dgmm.core.progress import PassProgress
from dgmm.estimator import GaussianMixture
from dgmm.fit import progress as _progress
from dgmm.fit.progress import FitProgress, describe

from ._helpers import make_mixture

# Where a pass runs: Dask's synchronous scheduler (computed on the chunks directly),
# Dask's threads, the session's in-process distributed cluster.
WHERE = ["synchronous", "threads", "cluster"]


def _on(where: str):
    return dask.config.set(scheduler=where) if where != "cluster" else dask.config.set({})


def _slow_sum(block, shared, weights, *, chunk_index, row_offset):
    """A chunk kernel that takes 60 ms, like a chunk read from slow storage."""
    time.sleep(0.06)
    return np.asarray([block.sum(), block.shape[0]])


def _add(parts):
    return sum(parts)


@pytest.fixture
def X():
    return make_mixture(np.random.default_rng(11), n_samples=3000, n_features=3, n_components=3).X


@pytest.mark.parametrize("where", WHERE)
def test_updates_arrive_within_a_pass(where, monkeypatch):
    monkeypatch.setattr(_graph, "REPORT_EVERY", 0.05)
    x = da.from_array(np.arange(24 * 50, dtype=np.float64).reshape(-1, 2), chunks=(50, 2))
    heard: list[tuple[float, PassProgress]] = []
    with _on(where), _graph.listen(lambda p: heard.append((time.perf_counter(), p))):
        total = _graph.map_chunks(x, _slow_sum, _add, split_every=4)
    assert total[0] == x.sum().compute() and total[1] == x.shape[0]
    events = [p for _, p in heard]
    assert events[0].event == "pass" and events[0].chunks_done == 0
    assert events[-1].event == "end" and events[-1].chunks_done == events[-1].n_chunks == 12
    inside = [p for p in events if p.event == "pass" and 0 < p.chunks_done < p.n_chunks]
    assert len(inside) >= 2, [(p.event, p.chunks_done) for p in events]
    done = [p.chunks_done for p in events]
    assert done == sorted(done)
    for p in inside:
        assert p.rows_done == 50 * p.chunks_done and p.bytes_done == p.rows_done * 16
        assert p.rows_per_second > 0 and p.gb_per_second > 0
    # The first update inside the pass came before the pass ended (not all at the end).
    assert heard[events.index(inside[0])][0] < heard[-1][0] - 0.05


@pytest.mark.parametrize("where", WHERE)
def test_listening_changes_no_bit_of_the_fit(X, where):
    kw = dict(random_state=0, chunks=300, max_iter=4, tol=0.0)
    scheduler = None if where == "cluster" else where
    with pytest.warns(Warning):  # max_iter=4, tol=0: not converged
        plain = GaussianMixture(3, scheduler=scheduler, **kw).fit(X)
    heard: list[PassProgress] = []
    with pytest.warns(Warning):
        followed = GaussianMixture(3, scheduler=scheduler, on_progress=heard.append, **kw).fit(X)
    assert any(p.event == "pass" for p in heard)
    for name in ("weights_", "means_", "covariances_"):
        assert np.array_equal(getattr(plain, name), getattr(followed, name)), name
    assert plain.lower_bounds_ == followed.lower_bounds_


def test_the_callback_hears_every_phase_in_order(X):
    heard: list[PassProgress] = []
    gmm = GaussianMixture(3, random_state=0, chunks=500, on_progress=heard.append).fit(X)
    phases = [p.label for p in heard if p.event == "phase"]
    em = [f"EM iteration {i} of 100" for i in range(1, gmm.n_iter_ + 1)]
    # "kmeans" on rows that all fit in the sample: the sample pass, then the clustering
    # and the starting parameters in memory (no pass).
    steps = [f"initialisation step {i} of 2" for i in (1, 2)]
    assert phases == ["opening data", "initialisation", *steps, *em]
    init_passes = [p["step"] for p in gmm.passes_ if p["phase"] == "initialisation"]
    assert init_passes == [1]
    # Every pass begins (no chunk done) and ends (all chunks), inside its phase.
    current = None
    for p in heard:
        if p.event == "phase":
            current, open_pass = p, None
            continue
        assert (p.phase, p.step) == (current.phase, current.step)
        if p.event == "pass" and open_pass is None:
            assert p.chunks_done == 0
            open_pass = p.pass_index
        assert p.pass_index == open_pass
        if p.event == "end":
            assert (p.chunks_done, p.rows_done) == (p.n_chunks, X.shape[0])
            open_pass = None
    ends = [p for p in heard if p.event == "end"]
    assert [p.record() for p in ends] == gmm.passes_


def test_history_and_passes_say_what_was_read_and_how_fast(X):
    gmm = GaussianMixture(3, random_state=0, chunks=500).fit(X)
    for h in gmm.history_:
        assert (h["rows"], h["bytes"]) == (X.shape[0], X.nbytes)
        assert h["rows_per_second"] == pytest.approx(h["rows"] / h["seconds"])
        assert h["gb_per_second"] == pytest.approx(h["bytes"] / 1e9 / h["seconds"])
    phases = [p["phase"] for p in gmm.passes_]
    assert phases[0] == "initialisation" and "EM iteration" in phases
    assert phases.index("EM iteration") == phases.count("initialisation")  # initialisation first
    em = [p for p in gmm.passes_ if p["phase"] == "EM iteration"]
    assert [p["step"] for p in em] == list(range(1, gmm.n_iter_ + 1))
    assert all(p["chunks"] == 6 and p["rows"] == X.shape[0] and p["seconds"] > 0 for p in gmm.passes_)


def test_a_phase_label_is_one_line_around_the_passes():
    x = da.from_array(np.ones((40, 2)), chunks=(10, 2))
    heard: list[PassProgress] = []
    with _on("synchronous"), _graph.listen(heard.append):
        with _graph.phase("initialisation"):
            _graph.map_chunks(x, _slow_sum, _add)
            with _graph.phase("initialisation", step=2, steps=3):
                _graph.map_chunks(x, _slow_sum, _add)
                _graph.map_chunks(x, _slow_sum, _add)
    ends = [p for p in heard if p.event == "end"]
    assert [(p.label, p.pass_index) for p in ends] == [
        ("initialisation", 1), ("initialisation step 2 of 3", 1), ("initialisation step 2 of 3", 2),
    ]
    assert describe(ends[2]).startswith("initialisation step 2 of 3, pass 2: 4/4 chunks, 40 rows")


def test_nobody_listening_hears_nothing_and_the_pass_is_unchanged(monkeypatch):
    made = []
    real = _graph._PassReport
    monkeypatch.setattr(_graph, "_PassReport", lambda *a: made.append(1) or real(*a))
    x = da.from_array(np.ones((40, 2)), chunks=(10, 2))
    with _on("threads"):
        _graph.map_chunks(x, _slow_sum, _add)
    assert made == []


def test_a_non_terminal_stderr_gets_at_most_a_line_per_pass(X, capsys):
    gmm = GaussianMixture(3, random_state=0, chunks=500, verbose=1).fit(X)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and "%|" not in err  # no bar on a non-terminal
    assert 0 < len(lines) <= len(gmm.passes_)
    assert lines[-1].startswith(f"EM iteration {gmm.n_iter_} of 100: 6/6 chunks")
    assert "rows/s" in lines[-1] and "GB/s" in lines[-1]


def test_verbose_2_keeps_scikit_learns_iteration_lines(X, capsys):
    gmm = GaussianMixture(3, random_state=0, chunks=500, verbose=2, verbose_interval=1).fit(X)
    out = capsys.readouterr().out
    iterations = [line for line in out.splitlines() if line.startswith("  Iteration ")]
    assert len(iterations) == gmm.n_iter_
    assert all("time lapse" in line and "lower bound" in line for line in iterations)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_phase_chunks_and_throughput(monkeypatch):
    monkeypatch.setattr(_progress, "BAR_DELAY", 0.0)
    monkeypatch.setattr(_graph, "REPORT_EVERY", 0.0)
    x = da.from_array(np.ones((240, 2)), chunks=(20, 2))
    terminal = _Terminal()
    with _on("synchronous"), FitProgress(1, 10, stream=terminal):
        with _graph.phase("EM iteration", 7, 100):
            _graph.map_chunks(x, _slow_sum, _add)
    shown = terminal.getvalue()
    assert "EM iteration 7 of 100" in shown and "/12" in shown
    assert "rows/s" in shown and "GB/s" in shown


def test_a_phase_without_passes_shows_its_name_and_clock(monkeypatch):
    monkeypatch.setattr(_progress, "BAR_DELAY", 0.0)
    monkeypatch.setattr(_progress, "REFRESH_EVERY", 0.05)
    terminal = _Terminal()
    with FitProgress(1, 10, stream=terminal), _graph.phase("opening data"):
        time.sleep(0.3)
    assert "opening data: 00:00" in terminal.getvalue()


def test_info_logs_a_line_per_pass_and_periodic_lines_on_a_long_pass(monkeypatch, caplog):
    monkeypatch.setattr(_progress, "REFRESH_EVERY", 0.05)
    monkeypatch.setattr(_progress, "LOG_EVERY", 0.1)
    x = da.from_array(np.ones((240, 2)), chunks=(20, 2))  # 12 chunks of 60 ms: 0.7 s
    with caplog.at_level(logging.INFO, logger="dgmm"), _on("synchronous"):
        with FitProgress(0, 10, stream=io.StringIO()), _graph.phase("initialisation", step=1, steps=1):
            _graph.map_chunks(x, _slow_sum, _add)
    lines = [r.getMessage() for r in caplog.records if r.name == "dgmm"]
    assert lines[-1].startswith("initialisation step 1 of 1, pass 1: 12/12 chunks")
    periodic = [line for line in lines[:-1] if "so far" in line]
    assert len(periodic) >= 2, lines


def test_without_info_logging_or_verbose_nothing_is_followed(X, monkeypatch, capsys):
    made = []
    real = _graph._PassReport
    monkeypatch.setattr(_graph, "_PassReport", lambda k, x, heard: made.append(heard) or real(k, x, heard))
    GaussianMixture(3, random_state=0, chunks=500, max_iter=2, tol=1.0).fit(X)
    # Only the record of the passes listens: no live listener, so the passes are single graphs.
    assert made and all(not live for heard in made for _, live in heard)
    assert capsys.readouterr().err == ""


def test_the_callback_is_shared_by_clones_and_dropped_by_pickling():
    import pickle

    from sklearn.base import clone

    from dgmm import MultinomialMixture

    for estimator in (GaussianMixture, MultinomialMixture):
        heard: list = []
        model = estimator(2, on_progress=heard.append)
        assert clone(model).on_progress is model.on_progress
        assert pickle.loads(pickle.dumps(model)).on_progress is None
        assert model.on_progress is not None  # the original keeps it


def test_the_cli_is_quiet_without_v_and_logs_passes_with_v(tmp_path, X):
    from ._helpers import invoke

    np.save(tmp_path / "x.npy", X)
    quiet = invoke("fit", "x.npy", "-k", "3", "-o", "m1", "--seed", "0", cwd=tmp_path)
    assert quiet.exit_code == 0, quiet.output
    assert "chunks" not in quiet.stderr
    loud = invoke("fit", "x.npy", "-k", "3", "-o", "m2", "--seed", "0", "-v", cwd=tmp_path)
    assert loud.exit_code == 0, loud.output
    passes = [line for line in loud.stderr.splitlines() if " chunks, " in line]
    assert any("EM iteration 1 of 100:" in line and "GB/s" in line for line in passes)
    assert any("initialisation" in line for line in passes)


def test_a_followed_pass_on_a_cluster_leaves_no_statistics_behind(client):
    # The chunks' results are futures while followed; once merged the scheduler frees
    # them, as it does the one graph's, and nothing of the pass stays in memory.
    scheduler = client.cluster.scheduler

    def of_the_pass() -> list:
        return [k for k in list(scheduler.tasks) if str(k).startswith(("_pinned-", "_add-"))]

    x = da.from_array(np.ones((400, 2)), chunks=(10, 2))
    seen: list[int] = []
    with _graph.listen(lambda p: seen.append(len(of_the_pass()))):
        total = _graph.map_chunks(x, _quick_sum, _add, split_every=4)
    assert total[1] == 400
    assert max(seen) > 0  # the pass's tasks were there, under these names
    deadline = time.monotonic() + 5
    while of_the_pass() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert of_the_pass() == []


def _quick_sum(block, shared, weights, *, chunk_index, row_offset):
    return np.asarray([block.sum(), block.shape[0]])


def test_log_lines_and_a_bar_share_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(_progress, "BAR_DELAY", 0.0)
    x = da.from_array(np.ones((240, 2)), chunks=(20, 2))
    terminal = _Terminal()
    with caplog.at_level(logging.INFO, logger="dgmm"), _on("synchronous"):
        with FitProgress(1, 10, stream=terminal), _graph.phase("final pass"):
            _graph.map_chunks(x, _slow_sum, _add)
    lines = [r.getMessage() for r in caplog.records if r.name == "dgmm"]
    assert lines[0] == "final pass" and len(lines) == 2
    assert lines[-1].startswith("final pass, pass 1: 12/12 chunks")
    assert "final pass, pass 1" in terminal.getvalue()  # the bar was drawn too
