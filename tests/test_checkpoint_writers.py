"""Two writers on one checkpoint: the second gets CheckpointLockedError, nothing is corrupted.

Two real processes fit with the same ``checkpoint=`` on a local disk (the
first slowed down so the runs overlap); the object-store lease is tested in
process on fsspec's ``memory://`` filesystem.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from dgmm.errors import CheckpointLockedError
from dgmm.io.checkpoint import LEASE, POINTER, Checkpoint

from .procs import REPO_ROOT
from .test_checkpoint import assert_same_state, make_state

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    import numpy as np
    from distributed import Client
    import dgmm
    from dgmm.errors import CheckpointLockedError
    from dgmm.io.checkpoint import Checkpoint

    checkpoint, out, hold = sys.argv[1], sys.argv[2], sys.argv[3]
    if hold != "-":
        # After its first checkpoint this fit waits (holding the lease) while
        # the file ``hold`` exists: the test decides when the runs overlap.
        put_all, writes = Checkpoint._put_all, []

        def held_put_all(self, files):
            writes.append(1)
            while len(writes) > 1 and os.path.exists(hold):
                time.sleep(0.05)
            put_all(self, files)

        Checkpoint._put_all = held_put_all
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, size=(400, 2)) for c in (-6.0, 0.0, 6.0)])
    gmm = dgmm.GaussianMixture(3, tol=0.0, max_iter=25, random_state=0, checkpoint=checkpoint)
    warnings.simplefilter("ignore")
    # An in-process cluster starts in a second; the fit uses the current client.
    client = Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        gmm.fit(X)
    except CheckpointLockedError as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    np.save(out, gmm.means_)
    print("DONE", gmm.n_iter_, flush=True)
    """
)


def _start(script: Path, checkpoint: Path, out: Path, hold: str = "-") -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(
        [sys.executable, str(script), str(checkpoint), str(out), hold],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT,
    )


def test_second_process_gets_a_typed_error_and_the_first_finishes(tmp_path):
    script, checkpoint = tmp_path / "fit.py", tmp_path / "ck"
    script.write_text(SCRIPT)
    hold = tmp_path / "hold"
    hold.touch()
    first = _start(script, checkpoint, tmp_path / "first.npy", str(hold))
    try:
        deadline = time.monotonic() + 120
        while not (checkpoint / POINTER).exists():
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first fit wrote no checkpoint"
            time.sleep(0.05)
        second = _start(script, checkpoint, tmp_path / "second.npy")
        out2, _ = second.communicate(timeout=300)
        assert first.poll() is None, first.communicate()[0]  # the runs overlapped
        hold.unlink()
        out1, _ = first.communicate(timeout=300)
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert second.returncode == 3, out2
    # The message names the other writer: host, pid, start time.
    message = out2.split("LOCKED", 1)[1]
    assert socket.gethostname() in message and f"pid {first.pid}" in message and "started" in message
    assert first.returncode == 0 and "DONE 25" in out1, out1
    assert not (tmp_path / "second.npy").exists()
    # The checkpoint is the first fit's final state, readable, with no lease left behind.
    state = Checkpoint(checkpoint).read()
    assert state is not None and state.iteration == 25
    assert min(p.name for p in checkpoint.iterdir()) == POINTER and not (checkpoint / LEASE).exists()
    # And it resumes: the same fit returns the first fit's model without a pass.
    again = _start(script, checkpoint, tmp_path / "again.npy")
    out3, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out3
    assert np.array_equal(np.load(tmp_path / "again.npy"), np.load(tmp_path / "first.npy"))


def test_local_lock_is_released_by_close(tmp_path, rng):
    path = tmp_path / "ck"
    a, b = Checkpoint(path), Checkpoint(path)
    a.write(make_state(rng, iteration=1))
    assert json.loads((path / LEASE).read_text())["pid"] == os.getpid()
    with pytest.raises(CheckpointLockedError) as info:
        b.write(make_state(rng, iteration=2))
    assert f"pid {os.getpid()}" in str(info.value) and socket.gethostname() in str(info.value)
    assert isinstance(info.value, RuntimeError)
    last = make_state(rng, iteration=3)
    a.write(last)
    a.close()
    assert_same_state(Checkpoint(path).read(), last)
    b.write(make_state(rng, iteration=4))  # the lease is free again
    b.close()
    assert Checkpoint(path).read().iteration == 4
    assert min(p.name for p in path.iterdir()) == POINTER and len(list(path.iterdir())) == 2


def _memory_url() -> str:
    return f"memory://dgmm-writers-{uuid.uuid4().hex[:8]}/ck"


def _names(store: Checkpoint) -> list[str]:
    store.fs.invalidate_cache()
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store.path, detail=False))


def test_object_store_lease_refuses_a_second_writer(rng):
    url = _memory_url()
    a, b = Checkpoint(url, lease_seconds=0.6), Checkpoint(url, lease_seconds=0.6)
    try:
        a.write(make_state(rng, iteration=1))
        time.sleep(1.5)  # longer than the lease: the heartbeat keeps it
        with pytest.raises(CheckpointLockedError) as info:
            b.write(make_state(rng, iteration=2))
        assert f"pid {os.getpid()}" in str(info.value) and "started" in str(info.value)
        last = make_state(rng, iteration=3)
        a.write(last)
        a.close()
        assert_same_state(Checkpoint(url).read(), last)
        assert _names(a)[0] == POINTER and len(_names(a)) == 2  # no lease, one version
    finally:
        a.close()
        b.close()
        a.delete()


def test_object_store_stale_lease_is_taken_over_and_the_old_writer_stops(rng):
    url = _memory_url()
    dead, next_run = Checkpoint(url, lease_seconds=0.5), Checkpoint(url, lease_seconds=0.5)
    try:
        dead.write(make_state(rng, iteration=1))
        # The writer's process "dies": its heartbeat stops, its lease is left behind.
        dead._stop.set()
        dead._heartbeat.join()
        time.sleep(0.7)
        taken = make_state(rng, iteration=2)
        next_run.write(taken)
        # The stalled writer wakes up: it must not overwrite the newer pointer.
        with pytest.raises(CheckpointLockedError, match="since this one last wrote"):
            dead.write(make_state(rng, iteration=5))
        assert_same_state(Checkpoint(url).read(), taken)
        next_run.close()
        assert [n for n in _names(next_run) if n.startswith("v")] == [
            Checkpoint(url).current_version()
        ]
    finally:
        dead.close()
        next_run.close()
        next_run.delete()


def test_a_pointer_changed_behind_the_writers_back_is_detected(tmp_path, rng):
    # A writer that does not take the lease (an older dgmm) moves the pointer.
    path = tmp_path / "ck"
    store = Checkpoint(path)
    store.write(make_state(rng, iteration=1))
    pointer = json.loads((path / POINTER).read_text())
    (path / POINTER).write_text(json.dumps({k: pointer[k] for k in ("format", "format_version", "current")}))
    with pytest.raises(CheckpointLockedError, match="unknown writer"):
        store.write(make_state(rng, iteration=2))
    assert Checkpoint(path).read().iteration == 1
    assert not (path / LEASE).exists()  # the failed writer let go


def test_legacy_state_with_bare_infinity_is_read(tmp_path, rng):
    path = tmp_path / "ck"
    state = make_state(rng)
    with Checkpoint(path) as store:
        store.write(state)
    state_file = next(path.glob("v*/state.json"))
    strict = state_file.read_bytes()
    assert b"Infinity" in strict and b"-Infinity," not in strict  # tagged, not bare
    json.loads(strict, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    from dgmm.io import codec

    state_file.write_text(json.dumps(codec.loads(strict), indent=1))  # as older dgmm wrote it
    assert b"-Infinity" in state_file.read_bytes()
    assert_same_state(Checkpoint(path).read(), state)
