"""Checkpoints of a fit in progress: the model and the whole loop state.

A checkpoint is a directory (local path or fsspec URL such as ``s3://...``)::

    CURRENT                 {"format": "dgmm-checkpoint", "format_version": 1,
                             "current": "v000012-1f3a...", "generation": 13,
                             "writer": {"id": ..., "host": ..., "pid": ...,
                                        "started": ...}}            (the pointer)
    LEASE                   who writes now (only while a fit runs)
    v000012-1f3a.../        one complete version, never modified once written
        state.json          iteration, seed, fingerprint, per-restart loop state,
                            and the SHA-256 of every array file below
        restart-0/...       that restart's parameters (``persistence.params_to_files``)
        restart-1/...

Writing a version puts every file under a fresh version name that nothing
points at, then swaps the pointer (``dgmm.io.fs.replace_file``: ``os.replace``
locally; a single PUT on object storage, which is atomic), then deletes the
older versions. A crash at any moment leaves the previous complete version
readable: before the swap the pointer still names it, after the swap the new
version is complete. Nothing is pickled: strict JSON (``dgmm.io.codec``) and
``.npy`` files read with ``allow_pickle=False``; a ``state.json`` written by
an older dgmm with a bare ``-Infinity`` is still read.

One writer at a time
--------------------
Two fits writing one checkpoint (a scheduled job overlapping its previous
run) would delete each other's versions. Before its first write a
``Checkpoint`` takes the lease, and every pointer swap checks it still holds
it; the loser gets :class:`~dgmm.errors.CheckpointLockedError` naming the
other writer (host, pid, start time) and writes nothing the pointer names,
so the checkpoint stays readable and resumable. Reading never takes the lease.

* **Local disk**: an exclusive ``fcntl.flock`` on ``LEASE`` (which holds the
  writer's identity as JSON), held from the first write until ``close()``.
  The kernel drops it when the process dies, so a killed job's checkpoint is
  resumed by the next run at once.
* **Object storage** (no locks): ``LEASE`` holds the writer's identity and
  an expiry, renewed by a heartbeat thread every third of ``lease_seconds``.
  A writer may take a lease that is absent, its own, or expired (a crashed
  writer's lease expires after ``lease_seconds``); it writes the lease, waits
  briefly, and reads it back to lose a race to a simultaneous claimer.
* **Both**: the pointer records the writer and a generation. Before each
  swap the writer re-reads the pointer and proceeds only if it is the one it
  last saw or wrote (compare-and-swap by re-reading), so a writer that lost
  its lease while stalled stops instead of overwriting the newer pointer.

The fingerprint identifies the data (shape, dtype, row chunks, the Dask
array's deterministic name for store-backed input or a content digest for
in-memory input) and every setting that changes the result; a fit resumes a
checkpoint only when both match, so a resumed fit is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dgmm.core.family import MixtureParams
from dgmm.errors import (
    CheckpointFormatError,
    CheckpointLockedError,
    CheckpointMismatchError,
)
from dgmm.io import codec
from dgmm.io import fs as fsio
from dgmm.io.dataset import Dataset
from dgmm.io.persistence import params_from_files, params_meta, params_to_files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the object-store lease is used instead
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import dask.array as da

__all__ = [
    "Checkpoint",
    "CheckpointState",
    "compare_fingerprints",
    "content_digest",
    "data_fingerprint",
]

logger = logging.getLogger("dgmm")

FORMAT = "dgmm-checkpoint"
FORMAT_VERSION = 1
POINTER = "CURRENT"
STATE = "state.json"
LEASE = "LEASE"
# Object storage: a writer's lease lasts this long unless renewed (a crashed
# writer's checkpoint can be taken over after it).
LEASE_SECONDS = 120.0
# Only names of this form are ever deleted from a checkpoint directory (the
# second form: a pointer's temporary file left by a crash; the third: older dgmm's).
_OURS = re.compile(r"^(v\d{6,}-[0-9a-f]{12}|\.CURRENT\.tmp-[0-9a-f]+|\.tmp-.*)$")
_RESERVED = (POINTER, LEASE)


@dataclass(frozen=True)
class CheckpointState:
    """Everything a fit needs to continue exactly where it stopped.

    Parameters
    ----------
    iteration : int
        EM iterations done (0: just after initialisation).
    seed : int
        The fit-level seed drawn from ``random_state``.
    fingerprint : dict
        ``{"data": ..., "config": ...}``, JSON-able (see ``data_fingerprint``).
    restarts : list of dict
        Per restart of ``n_init``, its JSON-able loop state (RNG state, lower
        bounds, history, converged, n_iter, ...), in restart order.
    params : list of MixtureParams
        Per restart, its current parameters (any registered model family).
    info : dict
        Informational settings not compared on resume (``max_iter``, ...).
    """

    iteration: int
    seed: int
    fingerprint: dict[str, Any]
    restarts: list[dict[str, Any]]
    params: list[MixtureParams]
    info: dict[str, Any]


def content_digest(array: np.ndarray) -> str:
    """SHA-256 of an in-memory array's dtype, shape and bytes (hex)."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}|{array.shape}|".encode())
    flat = array.reshape(-1).view(np.uint8)
    step = 64 << 20
    for start in range(0, flat.size, step):
        h.update(flat[start : start + step].data)
    return h.hexdigest()


def _run_lengths(sizes: tuple[int, ...]) -> list[list[int]]:
    """``(500, 500, 200)`` as ``[[500, 2], [200, 1]]``: compact for 10^5 chunks."""
    runs: list[list[int]] = []
    for s in sizes:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([int(s), 1])
    return runs


def data_fingerprint(x: Dataset | da.Array, digest: str | None = None) -> dict[str, Any]:
    """What identifies row-chunked data ``x`` (a Dataset or its Dask array) across processes.

    ``digest`` (``content_digest`` of the in-memory input) replaces the
    storage fingerprint, which in-memory rows lack (their scattered name is
    random); stored data's fingerprint (``Dataset.fingerprint``, the array's
    deterministic name) identifies the store, the selection, its metadata and
    the chunking.
    """
    array = x.array if isinstance(x, Dataset) else x
    out: dict[str, Any] = {
        "shape": [int(s) for s in array.shape],
        "dtype": str(array.dtype),
        "row_chunks": _run_lengths(tuple(array.chunks[0])),
    }
    if digest is not None:
        out["content_sha256"] = digest
    else:
        fingerprint = x.fingerprint if isinstance(x, Dataset) else None
        out["name"] = str(fingerprint if fingerprint is not None else array.name)
    return out


_REMEDY = {
    "data.row_chunks": " (the chunking changes the rounding; pass the same chunks=)",
}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_fingerprints(stored: Mapping[str, Any], current: Mapping[str, Any], url: str) -> None:
    """Raise ``CheckpointMismatchError`` naming every field that differs."""
    a, b = _flatten(stored), _flatten(current)
    # Through JSON so tuples vs lists and ints vs floats compare as stored.
    b = codec.loads(codec.dumps(b))
    differ = sorted(k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT))
    if not differ:
        return
    lines = "; ".join(
        f"{k}: checkpoint has {_show(a.get(k, _ABSENT))}, this fit has "
        f"{_show(b.get(k, _ABSENT))}{_REMEDY.get(k, '')}"
        for k in differ
    )
    raise CheckpointMismatchError(
        f"The checkpoint at {url!r} was written by a different fit, so it cannot be "
        f"resumed: {lines}. Resume it with the same data and parameters, or start over "
        "by deleting that checkpoint or passing another checkpoint= path."
    )


def _identity() -> dict[str, Any]:
    """Who writes: a fresh id, host, pid and start time (UTC, ISO 8601)."""
    return {
        "id": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _who(writer: Any) -> str:
    """``host ... pid ..., started ...`` of a recorded writer."""
    if not isinstance(writer, dict):
        return "an unknown writer (an older dgmm, or the lease was unreadable)"
    return (
        f"the fit on host {writer.get('host', '?')!r}, pid {writer.get('pid', '?')}, started "
        f"{writer.get('started', '?')}"
    )


def _pointer_key(pointer: Any) -> tuple[Any, ...] | None:
    """What identifies one pointer write: version, generation, writer id."""
    if not isinstance(pointer, dict):
        return None
    writer = pointer.get("writer")
    return (
        pointer.get("current"),
        pointer.get("generation", 0),
        writer.get("id") if isinstance(writer, dict) else None,
    )


class Checkpoint:
    """A checkpoint directory at a local path or fsspec URL.

    Parameters
    ----------
    url : str or os.PathLike
        Directory of the checkpoint; created on the first write.
    storage_options : dict, optional
        Passed to fsspec (credentials, ``endpoint_url``, ...).
    lease_seconds : float, default=LEASE_SECONDS
        Object storage: how long this writer's lease lasts unless renewed
        (renewed every third of it while the checkpoint is open), hence how
        long a crashed writer blocks the next one. Unused on a local disk,
        where the lock dies with the process.

    Notes
    -----
    The first :meth:`write` (or :meth:`acquire`) takes the writer's lease,
    :meth:`close` releases it; see the module docstring.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._location = fsio.resolve(url, storage_options)
        self.url = self._location.url
        self.fs, self.path = self._location.fs, self._location.path
        self._local = self._location.local
        self.lease_seconds = float(lease_seconds)
        self._pool: ThreadPoolExecutor | None = None
        self._cleanup: Future[None] | None = None
        # The lease, while held.
        self._writer: dict[str, Any] | None = None
        self._lock: weakref.finalize | None = None
        self._seen: tuple[Any, ...] | None = None
        self._generation = 0
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._lost: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Checkpoint({self.url!r})"

    def _join(self, *parts: str) -> str:
        return "/".join((self.path, *parts))

    def _sub(self, *parts: str) -> fsio.Location:
        return fsio.Location(self.url, self.fs, self._join(*parts), self._local)

    # -- reading --------------------------------------------------------------

    def _damaged(self, what: str) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"The checkpoint at {self.url!r} is damaged or not a dgmm checkpoint: {what}. "
            "Delete it (or pass another checkpoint= path) to start the fit over."
        )

    def _read_pointer(self) -> dict[str, Any] | None:
        """The parsed pointer, None if there is none; damaged if it is not one of ours."""
        try:
            raw = self.fs.cat_file(self._join(POINTER))
        except FileNotFoundError:
            return None
        try:
            pointer = codec.loads(raw)
            version = pointer["current"] if pointer["format"] == FORMAT else None
        except (ValueError, KeyError, TypeError):
            version = None
        if not isinstance(version, str) or not _OURS.match(version):
            raise self._damaged(f"its {POINTER} file is not a dgmm checkpoint pointer")
        if pointer.get("format_version", 0) > FORMAT_VERSION:
            raise self._damaged(
                f"format version {pointer['format_version']} is newer than this dgmm "
                f"reads ({FORMAT_VERSION}); upgrade dgmm"
            )
        return pointer

    def current_version(self) -> str | None:
        """The version the pointer names, or None when there is no checkpoint yet."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.path):
            return None
        if not self.fs.isdir(self.path):
            raise self._damaged("it is a file, expected a directory")
        pointer = self._read_pointer()
        if pointer is None:
            # Only unreferenced versions (a crash before the first pointer
            # write), a lease, or an empty directory: nothing complete to resume.
            entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False)]
            foreign = [e for e in entries if not _OURS.match(e) and e not in _RESERVED]
            if foreign:
                raise self._damaged(f"no {POINTER} pointer, and it holds {sorted(foreign)[:5]}")
            return None
        return str(pointer["current"])

    def read(self) -> CheckpointState | None:
        """The latest complete state, or None when the checkpoint does not exist yet."""
        for _ in range(5):
            version = self.current_version()
            if version is None:
                return None
            try:
                return self._read_version(version)
            except CheckpointFormatError:
                # A running writer may have moved the pointer on and removed this
                # version while it was read: then read the new one.
                if self.current_version() == version:
                    raise
        version = self.current_version()
        return None if version is None else self._read_version(version)

    def _read_version(self, version: str) -> CheckpointState:
        try:
            # codec.loads also reads the bare -Infinity of checkpoints from older dgmm.
            state = codec.loads(self.fs.cat_file(self._join(version, STATE)))
        except FileNotFoundError:
            raise self._damaged(f"version {version} named by {POINTER} is missing") from None
        except ValueError as exc:
            raise self._damaged(f"{version}/{STATE} is not valid JSON ({exc})") from None
        if not isinstance(state, dict) or not {"files", "restarts", "params_meta"} <= set(state):
            raise self._damaged(f"{version}/{STATE} lacks the loop state")
        files = {}
        for name, expected in state["files"].items():
            try:
                data = self.fs.cat_file(self._join(version, name))
            except FileNotFoundError:
                raise self._damaged(f"{version}/{name} is missing") from None
            if hashlib.sha256(data).hexdigest() != expected:
                raise self._damaged(f"{version}/{name} does not match its recorded SHA-256")
            files[name] = data
        params = []
        for i, meta in enumerate(state["params_meta"]):
            prefix = f"restart-{i}/"
            params.append(
                params_from_files(
                    {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)},
                    meta,
                    source=f"checkpoint {self.url!r} ({version}/{prefix})",
                )
            )
        return CheckpointState(
            iteration=int(state["iteration"]),
            seed=int(state["seed"]),
            fingerprint=state["fingerprint"],
            restarts=state["restarts"],
            params=params,
            info=state.get("info", {}),
        )

    # -- the writer's lease ------------------------------------------------------

    def _locked(self, holder: Any, *, changed: bool = False) -> CheckpointLockedError:
        how = (
            "was written by another fit since this one last wrote it: now by "
            if changed else "is being written by "
        )
        return CheckpointLockedError(
            f"The checkpoint at {self.url!r} {how}{_who(holder)}. Two fits writing one "
            "checkpoint would delete each other's versions, so this fit stops without "
            "touching it. Wait until that fit has finished (it stays resumable), stop it, "
            "or pass another checkpoint= path. A writer that died releases it: at once on "
            f"a local disk, once its lease expires (after {self.lease_seconds:.0f} s) on "
            "object storage."
        )

    def acquire(self) -> None:
        """Take the writer's lease (no-op if held); ``CheckpointLockedError`` if another has it."""
        if self._writer is not None:
            return
        identity = _identity()
        self.fs.invalidate_cache()
        if self._local:
            os.makedirs(self.path, exist_ok=True)
        if self._local and fcntl is not None:
            self._lock = _flock(self, self._join(LEASE), identity, self._locked)
        else:
            self._claim_lease(identity)
            self._stop = threading.Event()
            self._heartbeat = threading.Thread(
                target=self._renew, args=(identity, self._stop), daemon=True,
                name="dgmm-checkpoint-lease",
            )
            self._heartbeat.start()
        self._writer = identity
        self._lost = None
        pointer = self._read_pointer()
        self._seen = _pointer_key(pointer)
        self._generation = int(pointer.get("generation", 0)) if pointer else 0

    def _read_lease(self) -> dict[str, Any] | None:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self._join(LEASE))
        try:
            lease = codec.loads(self.fs.cat_file(self._join(LEASE)))
        except FileNotFoundError:
            return None
        except ValueError:
            lease = None
        return lease if isinstance(lease, dict) else {}

    def _put_lease(self, identity: dict[str, Any]) -> None:
        lease = {**identity, "expires": time.time() + self.lease_seconds}
        self.fs.pipe_file(self._join(LEASE), codec.dumps(lease))

    def _claim_lease(self, identity: dict[str, Any]) -> None:
        """Object storage: take a lease that is absent or expired, then read it back."""
        lease = self._read_lease()
        if lease is not None and time.time() < float(lease.get("expires", 0.0)):
            raise self._locked(lease)
        self._put_lease(identity)
        # A simultaneous claimer's PUT lands within this wait; the last PUT wins.
        time.sleep(min(0.5, self.lease_seconds / 20))
        lease = self._read_lease()
        if not lease or lease.get("id") != identity["id"]:
            raise self._locked(lease)

    def _renew(self, identity: dict[str, Any], stop: threading.Event) -> None:
        """Heartbeat thread: extend the lease while it is ours; note it if it was taken."""
        while not stop.wait(self.lease_seconds / 3):
            try:
                lease = self._read_lease()
                if not lease or lease.get("id") != identity["id"]:
                    self._lost = lease or {}
                    return
                self._put_lease(identity)
            except Exception as exc:  # noqa: BLE001 - a transient store error: try again next beat
                logger.warning("checkpoint %s: could not renew the lease: %s", self.url, exc)

    def _check_still_ours(self) -> None:
        """Before a swap: the lease is held and the pointer is the one this writer last saw."""
        if self._lost is not None:
            raise self._locked(self._lost, changed=True)
        if not (self._local and fcntl is not None):
            lease = self._read_lease()
            if not lease or lease.get("id") != (self._writer or {}).get("id"):
                raise self._locked(lease, changed=True)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self._join(POINTER))
        pointer = self._read_pointer()
        if _pointer_key(pointer) != self._seen:
            raise self._locked((pointer or {}).get("writer"), changed=True)

    def _release(self) -> None:
        """Give the lease back (what dying does to a local lock)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._lock is not None:
            self._lock()  # unlink LEASE while still holding it, then close
            self._lock = None
        elif self._writer is not None and self._lost is None:
            with contextlib.suppress(Exception):
                lease = self._read_lease()
                if lease and lease.get("id") == self._writer["id"]:
                    self.fs.rm_file(self._join(LEASE))
        self._writer = None

    # -- writing --------------------------------------------------------------

    def _put_all(self, files: dict[str, bytes]) -> None:
        """Write ``files`` (path -> bytes), all durable before this returns."""
        # The pointer must never name a version whose bytes are still only in
        # the page cache; fsyncs in parallel share the journal commits.
        fsio.put_files(self._location, files, executor=self._threads() if self._local else None)

    def _swap_pointer(self, data: bytes) -> None:
        fsio.replace_file(self._sub(POINTER), data, what="the checkpoint pointer")

    def write(self, state: CheckpointState) -> str:
        """Write ``state`` as a new version and make it current; returns its name.

        Raises
        ------
        CheckpointLockedError
            If another fit holds the checkpoint, or took it over since this
            one last wrote; nothing the pointer names is touched.
        """
        try:
            return self._write(state)
        except BaseException:
            # As a crash would: the lease goes, the next run resumes the checkpoint.
            self._release()
            raise

    def _write(self, state: CheckpointState) -> str:
        self._wait_cleanup()
        self.acquire()
        start = time.perf_counter()
        version = f"v{state.iteration:06d}-{uuid.uuid4().hex[:12]}"
        files: dict[str, bytes] = {}
        for i, p in enumerate(state.params):
            for name, data in params_to_files(p).items():
                files[f"restart-{i}/{name}"] = data
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "iteration": state.iteration,
            "seed": state.seed,
            "fingerprint": state.fingerprint,
            "info": state.info,
            "restarts": state.restarts,
            "params_meta": [params_meta(p) for p in state.params],
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
        paths = {self._join(version, name): data for name, data in files.items()}
        paths[self._join(version, STATE)] = codec.dumps(meta)
        self._put_all(paths)
        try:
            self._check_still_ours()
        except CheckpointLockedError:
            fsio.remove_quietly(self.fs, self._join(version), self._local)  # nothing names it
            raise
        pointer = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "current": version,
            "generation": self._generation + 1,
            "writer": self._writer,
        }
        self._swap_pointer(codec.dumps(pointer))
        self._generation += 1
        self._seen = _pointer_key(pointer)
        # Deleting the old version (slow after fsyncs) overlaps the next pass.
        self._cleanup = self._threads().submit(self._remove_stale, version)
        logger.info(
            "checkpoint %s: iteration %d written in %.3fs", self.url, state.iteration,
            time.perf_counter() - start,
        )
        return version

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(8, thread_name_prefix="dgmm-checkpoint")
        return self._pool

    def _wait_cleanup(self) -> None:
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            try:
                cleanup.result()
            except OSError as exc:  # a stale version left behind is removed next time
                logger.warning("checkpoint %s: could not remove an old version: %s", self.url, exc)

    def close(self) -> None:
        """Finish removing old versions, stop the I/O threads, give the lease back.

        Writes may follow (they take the lease again).
        """
        try:
            self._wait_cleanup()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._release()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remove_stale(self, keep: str) -> None:
        """Delete every version but ``keep``, and leftovers of interrupted writes."""
        self.fs.invalidate_cache()
        for path in self.fs.ls(self.path, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name != keep and _OURS.match(name):
                try:
                    self.fs.rm(path, recursive=True)
                except FileNotFoundError:
                    pass

    def delete(self) -> None:
        """Remove the whole checkpoint directory (nothing if absent)."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


def _flock(owner: object, path: str, identity: dict[str, Any], locked: Any) -> weakref.finalize:
    """Hold an exclusive flock on the local ``path``; returns the finalizer that releases it.

    The holder unlinks the file when it releases, so after locking we check
    that the path still names the file we locked (else someone released it
    in between and we retry on the new file). The lock also goes when
    ``owner`` is garbage-collected, and with the process.
    """
    assert fcntl is not None
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise locked(holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, codec.dumps(identity), 0)
        os.fsync(fd)
        return weakref.finalize(owner, _unlock, path, fd)
    raise locked(None)  # pragma: no cover - the lock file churned 20 times


def _unlock(path: str, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The identity the lock holder wrote (it may be writing it right now)."""
    for _ in range(20):
        try:
            holder = codec.loads(os.pread(fd, 1 << 16, 0))
        except ValueError:
            holder = None
        if isinstance(holder, dict):
            return holder
        time.sleep(0.05)
    return None
