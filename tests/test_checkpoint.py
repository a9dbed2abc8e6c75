"""Checkpoint files: exact round trip, atomic versions, damage detection, fingerprints.

No EM here: states are built by hand (tests/test_resume.py runs fits).
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from dgmm.core.params import GMMParams
from dgmm.errors import CheckpointFormatError, CheckpointMismatchError
from dgmm.io import checkpoint as ckpt
from dgmm.io import fs as fsio
from dgmm.io.checkpoint import Checkpoint, CheckpointState, compare_fingerprints, content_digest

from ._helpers import COVARIANCE_TYPES


def random_params(rng: np.random.Generator, covariance_type: str, k: int = 3, d: int = 4) -> GMMParams:
    a = rng.normal(size=(k, d, d))
    covariances = a @ a.transpose(0, 2, 1) + np.eye(d)
    means = rng.normal(size=(k, d)) * 1e3
    weights = rng.dirichlet(np.ones(k))
    if covariance_type == "tied":
        covariances = covariances[0]
    elif covariance_type == "diag":
        covariances = np.einsum("kii->ki", covariances)
    elif covariance_type == "spherical":
        covariances = np.einsum("kii->ki", covariances).mean(axis=1)
    return GMMParams.from_covariances(weights, means, covariances, covariance_type)


def make_state(rng: np.random.Generator, iteration: int = 4, covariance_type: str = "full") -> CheckpointState:
    generators = [np.random.default_rng([7, i, 1]) for i in range(2)]
    for g in generators:
        g.normal(size=iteration)  # advance: a state that is not a fresh seed
    restarts = [
        {
            "index": i,
            "rng": g.bit_generator.state,
            "lower_bound": float(rng.normal()),
            "lower_bounds": [-np.inf if j == 0 else float(rng.normal()) for j in range(iteration)],
            "history": [
                {"iteration": j + 1, "lower_bound": float(rng.normal()), "change": np.inf if j == 0 else 0.1,
                 "seconds": 0.5, "events": [{"event": "reseed", "component": 1, "split_from": 0, "reason": "x"}]}
                for j in range(iteration)
            ],
            "converged": i == 0,
            "n_iter": iteration,
            "reseeded_last": i == 1,
        }
        for i, g in enumerate(generators)
    ]
    return CheckpointState(
        iteration=iteration,
        seed=123456789,
        fingerprint={"data": {"X": {"shape": [10, 4], "name": "abc"}}, "config": {"tol": 1e-3}},
        restarts=restarts,
        params=[random_params(rng, covariance_type) for _ in restarts],
        info={"max_iter": 100},
    )


def assert_same_state(got: CheckpointState, want: CheckpointState) -> None:
    assert got.iteration == want.iteration and got.seed == want.seed
    assert got.fingerprint == want.fingerprint and got.info == want.info
    assert got.restarts == want.restarts
    for p, q in zip(got.params, want.params, strict=True):
        assert p.covariance_type == q.covariance_type
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            a, b = getattr(p, name), getattr(q, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def version_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("v"))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, rng, covariance_type):
    state = make_state(rng, covariance_type=covariance_type)
    with Checkpoint(tmp_path / "ck") as store:
        store.write(state)
        got = store.read()
    assert_same_state(got, state)
    # The RNG continues exactly where the stored one was.
    for record in got.restarts:
        restored = np.random.Generator(np.random.PCG64())
        restored.bit_generator.state = record["rng"]
        original = np.random.default_rng([7, record["index"], 1])
        original.normal(size=state.iteration)
        assert np.array_equal(restored.normal(size=5), original.normal(size=5))


def test_a_missing_or_empty_directory_is_no_checkpoint(tmp_path):
    assert Checkpoint(tmp_path / "absent").read() is None
    (tmp_path / "empty").mkdir()
    assert Checkpoint(tmp_path / "empty").read() is None


def test_only_the_latest_version_is_kept(tmp_path, rng):
    path = tmp_path / "ck"
    with Checkpoint(path) as store:
        for i in range(4):
            store.write(make_state(rng, iteration=i))
    assert len(version_dirs(path)) == 1
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", version_dirs(path)[0]]
    assert Checkpoint(path).read().iteration == 3


def test_nothing_is_pickled(tmp_path, rng):
    path = tmp_path / "ck"
    with Checkpoint(path) as store:
        store.write(make_state(rng))
    files = [p for p in path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".npy", ""}
    for p in files:
        if p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        else:
            json.loads(p.read_text())


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash_while_writing_files(monkeypatch):
    original = Checkpoint._put_all

    def half(self, files):
        items = list(files.items())
        original(self, dict(items[: len(items) // 2]))
        raise Crash

    monkeypatch.setattr(Checkpoint, "_put_all", half)


def crash_before_pointer_swap(monkeypatch):
    def swap(self, data):
        raise Crash

    monkeypatch.setattr(Checkpoint, "_swap_pointer", swap)


def crash_while_writing_pointer(monkeypatch):
    # The temporary pointer is written, the rename never happens.
    def replace(src, dst):
        raise Crash

    # Only the filesystem helper's view of os: the rest of the process is untouched.
    proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    proxy.replace = replace
    monkeypatch.setattr(fsio, "os", proxy)


def crash_after_pointer_swap(monkeypatch):
    def remove(self, keep):
        raise Crash

    monkeypatch.setattr(Checkpoint, "_remove_stale", remove)


@pytest.mark.parametrize(
    "crash, new_is_current",
    [
        pytest.param(crash_while_writing_files, False, id="while-writing-files"),
        pytest.param(crash_before_pointer_swap, False, id="before-pointer-swap"),
        pytest.param(crash_while_writing_pointer, False, id="while-writing-pointer"),
        pytest.param(crash_after_pointer_swap, True, id="after-pointer-swap"),
    ],
)
def test_a_crash_leaves_a_complete_checkpoint(tmp_path, rng, monkeypatch, crash, new_is_current):
    path = tmp_path / "ck"
    old, new = make_state(rng, iteration=3), make_state(rng, iteration=4)
    with Checkpoint(path) as store:
        store.write(old)
    with monkeypatch.context() as m:
        crash(m)
        store = Checkpoint(path)
        with pytest.raises(Crash):
            store.write(new)
            store.close()  # the old version's removal runs in a thread
    assert_same_state(Checkpoint(path).read(), new if new_is_current else old)
    # The next write clears whatever the crash left behind.
    with Checkpoint(path) as store:
        store.write(make_state(rng, iteration=5))
    assert len(version_dirs(path)) == 1
    assert not [p for p in path.iterdir() if p.name.startswith(".tmp")]
    assert Checkpoint(path).read().iteration == 5


def _corrupt_array(path: Path) -> str:
    target = next(path.glob("v*/restart-1/means.npy"))
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    return "means.npy"


def _delete_state(path: Path) -> str:
    next(path.glob("v*/state.json")).unlink()
    return "missing"


def _garbage_pointer(path: Path) -> str:
    (path / "CURRENT").write_text("not json")
    return "CURRENT"


def _truncated_state(path: Path) -> str:
    state = next(path.glob("v*/state.json"))
    state.write_bytes(state.read_bytes()[:50])
    return "state.json"


def _newer_format(path: Path) -> str:
    pointer = json.loads((path / "CURRENT").read_text())
    (path / "CURRENT").write_text(json.dumps({**pointer, "format_version": 99}))
    return "upgrade"


def _foreign_directory(path: Path) -> str:
    import shutil

    shutil.rmtree(path)
    path.mkdir()
    (path / "notes.txt").write_text("my own files")
    return "notes.txt"


def _a_file(path: Path) -> str:
    import shutil

    shutil.rmtree(path)
    path.write_text("a file")
    return "directory"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_corrupt_array, id="corrupt-array"),
        pytest.param(_delete_state, id="missing-state"),
        pytest.param(_garbage_pointer, id="garbage-pointer"),
        pytest.param(_truncated_state, id="truncated-state"),
        pytest.param(_newer_format, id="newer-format"),
        pytest.param(_foreign_directory, id="not-a-checkpoint-directory"),
        pytest.param(_a_file, id="a-file"),
    ],
)
def test_damage_is_a_clear_error(tmp_path, rng, damage):
    path = tmp_path / "ck"
    with Checkpoint(path) as store:
        store.write(make_state(rng))
    fragment = damage(path)
    with pytest.raises(CheckpointFormatError) as info:
        Checkpoint(path).read()
    message = str(info.value)
    assert str(path) in message and fragment in message
    assert "start" in message and "over" in message  # the remedy
    assert isinstance(info.value, ValueError)


def test_writing_never_deletes_foreign_files(tmp_path, rng):
    path = tmp_path / "ck"
    path.mkdir()
    (path / "v1-notes.txt").write_text("keep me")  # looks a bit like a version name
    with Checkpoint(path) as store:
        store.write(make_state(rng, iteration=1))
        store.write(make_state(rng, iteration=2))
    assert (path / "v1-notes.txt").read_text() == "keep me"


def test_fsspec_memory_filesystem(rng):
    state = make_state(rng)
    url = f"memory://dgmm-ckpt-{os.getpid()}-{rng.integers(1 << 30)}/run"
    store = Checkpoint(url)
    try:
        store.write(make_state(rng, iteration=1))
        store.write(state)
        store.close()
        assert_same_state(Checkpoint(url).read(), state)
        names = [p.rsplit("/", 1)[-1] for p in store.fs.ls(store.path, detail=False)]
        assert sorted(names)[0] == "CURRENT" and len(names) == 2
    finally:
        store.delete()


def test_s3(s3_server, rng):
    from tests.s3 import new_bucket

    url = f"s3://{new_bucket(s3_server)}/runs/ck"
    options = s3_server["storage_options"]
    state = make_state(rng)
    with Checkpoint(url, storage_options=options) as store:
        store.write(make_state(rng, iteration=2))
        store.write(state)
    fresh = Checkpoint(url, storage_options=options)
    assert_same_state(fresh.read(), state)
    names = sorted(p.rsplit("/", 1)[-1] for p in fresh.fs.ls(fresh.path, detail=False))
    assert names[0] == "CURRENT" and len(names) == 2


# -- fingerprints ---------------------------------------------------------------


def test_content_digest_sees_every_value_dtype_and_shape(rng):
    x = rng.normal(size=(100, 3))
    base = content_digest(x)
    assert content_digest(x.copy()) == base
    assert content_digest(np.asfortranarray(x)) == base  # same values, other layout
    y = x.copy()
    y[57, 2] = np.nextafter(y[57, 2], np.inf)
    assert content_digest(y) != base
    assert content_digest(x.astype(np.float32)) != base
    assert content_digest(x.reshape(50, 6)) != base


def test_data_fingerprint_run_length_chunks():
    import dask.array as da

    x = da.zeros((1100, 3), chunks=(500, 3))
    fp = ckpt.data_fingerprint(x)
    assert fp["row_chunks"] == [[500, 2], [100, 1]]
    assert fp["name"] == x.name and fp["shape"] == [1100, 3] and fp["dtype"] == "float64"
    assert "name" not in ckpt.data_fingerprint(x, digest="d") and ckpt.data_fingerprint(x, digest="d")["content_sha256"] == "d"


@pytest.mark.parametrize(
    "field, stored, current",
    [
        pytest.param("config.n_components", 3, 4, id="int"),
        pytest.param("config.covariance_type", "full", "diag", id="string"),
        pytest.param("data.X.shape", [1000, 3], [999, 3], id="list"),
        pytest.param("config.random_state", 0, None, id="none"),
    ],
)
def test_mismatch_names_the_field_and_both_values(field, stored, current):
    def nest(value):
        out: dict = {}
        node = out
        *parents, leaf = field.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        return out

    with pytest.raises(CheckpointMismatchError) as info:
        compare_fingerprints(nest(stored), nest(current), "/runs/ck")
    message = str(info.value)
    assert field in message
    assert json.dumps(stored) in message
    assert json.dumps(current) in message
    assert "/runs/ck" in message and "delet" in message and "another" in message


def test_equal_fingerprints_pass():
    fp = {"data": {"X": {"shape": (3, 2)}}, "config": {"tol": 1e-3}}
    compare_fingerprints(json.loads(json.dumps(fp)), fp, "x")
