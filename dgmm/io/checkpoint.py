"""Checkpoints of a fit in progress: the model and the whole loop state.

A checkpoint is a directory (local path or fsspec URL such as ``s3://...``)::

    CURRENT                 {"format": "dgmm-checkpoint", "format_version": 1,
                             "current": "v000012-1f3a..."}   (the pointer)
    v000012-1f3a.../        one complete version, never modified once written
        state.json          iteration, seed, fingerprint, per-restart loop state,
                            and the SHA-256 of every array file below
        restart-0/...       that restart's parameters (``persistence.params_to_files``)
        restart-1/...

Writing a version puts every file under a fresh version name that nothing
points at, then swaps the pointer (``os.replace`` locally; a single PUT on
object storage, which is atomic), then deletes the older versions. A crash
at any moment leaves the previous complete version readable: before the
swap the pointer still names it, after the swap the new version is
complete. Nothing is pickled: JSON and ``.npy`` files read with
``allow_pickle=False``.

The fingerprint identifies the data (shape, dtype, row chunks, the Dask
array's deterministic name for store-backed input or a content digest for
in-memory input) and every setting that changes the result; a fit resumes a
checkpoint only when both match, so a resumed fit is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from dgmm.core.params import GMMParams
from dgmm.errors import CheckpointFormatError, CheckpointMismatchError
from dgmm.io.dataset import Dataset
from dgmm.io.persistence import params_from_files, params_meta, params_to_files

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
_TMP_PREFIX = ".tmp-"
# Only names of this form are ever deleted from a checkpoint directory.
_OURS = re.compile(r"^(v\d{6,}-[0-9a-f]{12}|\.tmp-.*)$")


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
    params : list of GMMParams
        Per restart, its current parameters.
    info : dict
        Informational settings not compared on resume (``max_iter``, ...).
    """

    iteration: int
    seed: int
    fingerprint: dict[str, Any]
    restarts: list[dict[str, Any]]
    params: list[GMMParams]
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
    b = json.loads(json.dumps(b))
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


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable in a checkpoint: {type(value).__name__}")


def _dumps(obj: Any) -> bytes:
    # allow_nan: a lower bound of -inf (before the first pass) is legitimate.
    return json.dumps(obj, default=_json_default, allow_nan=True, indent=1).encode()


class Checkpoint:
    """A checkpoint directory at a local path or fsspec URL.

    Parameters
    ----------
    url : str or os.PathLike
        Directory of the checkpoint; created on the first write.
    storage_options : dict, optional
        Passed to fsspec (credentials, ``endpoint_url``, ...).
    """

    def __init__(self, url: str | os.PathLike, *, storage_options: dict[str, Any] | None = None) -> None:
        self.url = os.fspath(url)
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.path = self.path.rstrip("/")
        self._local = "file" in _protocols(self.fs)
        self._pool: ThreadPoolExecutor | None = None
        self._cleanup: Future | None = None

    def __repr__(self) -> str:
        return f"Checkpoint({self.url!r})"

    def _join(self, *parts: str) -> str:
        return "/".join((self.path, *parts))

    # -- reading --------------------------------------------------------------

    def _damaged(self, what: str) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"The checkpoint at {self.url!r} is damaged or not a dgmm checkpoint: {what}. "
            "Delete it (or pass another checkpoint= path) to start the fit over."
        )

    def current_version(self) -> str | None:
        """The version the pointer names, or None when there is no checkpoint yet."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.path):
            return None
        if not self.fs.isdir(self.path):
            raise self._damaged("it is a file, expected a directory")
        try:
            raw = self.fs.cat_file(self._join(POINTER))
        except FileNotFoundError:
            # Only unreferenced versions (a crash before the first pointer
            # write) or an empty directory: nothing complete to resume.
            entries = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False)]
            foreign = [e for e in entries if not _OURS.match(e)]
            if foreign:
                raise self._damaged(f"no {POINTER} pointer, and it holds {sorted(foreign)[:5]}")
            return None
        try:
            pointer = json.loads(raw)
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
        return str(version)

    def read(self) -> CheckpointState | None:
        """The latest complete state, or None when the checkpoint does not exist yet."""

        version = self.current_version()
        if version is None:
            return None
        try:
            state = json.loads(self.fs.cat_file(self._join(version, STATE)))
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

    # -- writing --------------------------------------------------------------

    def _put_all(self, files: dict[str, bytes]) -> None:
        """Write ``files`` (path -> bytes), all durable before this returns."""
        if not self._local:
            # Concurrent PUTs on async filesystems (s3fs, gcsfs).
            self.fs.pipe(files)
            return
        dirs = sorted({os.path.dirname(p) for p in files})
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        for path, data in files.items():
            with open(path, "wb") as f:
                f.write(data)
        # The pointer must never name a version whose bytes are still only in
        # the page cache; fsyncs in parallel share the journal commits.
        list(self._threads().map(_fsync_path, [*files, *dirs]))

    def _swap_pointer(self, data: bytes) -> None:
        target = self._join(POINTER)
        if self._local:
            tmp = self._join(f"{_TMP_PREFIX}{POINTER}-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            _fsync_path(self.path)
        else:
            # One PUT: object stores replace an object atomically.
            self.fs.pipe_file(target, data)

    def write(self, state: CheckpointState) -> str:
        """Write ``state`` as a new version and make it current; returns its name."""

        self._wait_cleanup()
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
        if self._local:
            os.makedirs(self.path, exist_ok=True)
        paths = {self._join(version, name): data for name, data in files.items()}
        paths[self._join(version, STATE)] = _dumps(meta)
        self._put_all(paths)
        self._swap_pointer(
            _dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "current": version})
        )
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
        """Finish removing old versions and stop the I/O threads (writes may follow)."""
        self._wait_cleanup()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

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


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _fsync_path(path: str) -> None:
    """fsync a file, or a directory so its new entries survive a power cut (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
