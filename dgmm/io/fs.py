"""The one filesystem helper: where a URL lives, target checks, and the atomic commit.

Every output dgmm writes (model directories, checkpoints, predictions,
figures) and every store it reads resolves its path or fsspec URL here:
:func:`resolve` gives a :class:`Location` (filesystem, path inside it, and
whether it is local). "Local" has one rule: the filesystem is fsspec's
``LocalFileSystem``. Everything else (``s3://``, ``gs://``, ``memory://``...)
is object storage: no rename, but a single PUT of one object is atomic.

The atomic commit
-----------------
Outputs are written completely under a name nothing points at, then put into
place in one step, so a reader (or a crash) never sees half an output:

* A directory (:func:`commit_dir`) is written under a temporary sibling
  ``.<name>.tmp-<token>`` and moved into place. **Local**: one ``rename``;
  an existing target (with ``overwrite``) is swapped for the new one in one
  ``renameat2(RENAME_EXCHANGE)`` where Linux offers it, else renamed aside
  first, so a crash between the two renames leaves it whole under the
  ``.old`` name. **Object storage**: the objects are copied to the target
  with the designated ``last`` names (a Zarr root's metadata) copied last,
  so a reader that opens the root first sees nothing until all is there.
* One small file (:func:`replace_file`: a pointer, a manifest, a figure).
  **Local**: written to a temporary sibling, fsynced, ``os.replace``-d over
  the target and the directory fsynced. **Object storage**: one PUT.
* Pointer schemes (model files on object storage, checkpoints) write their
  files under fresh names with :func:`put_files` (fsynced locally before it
  returns) and then commit by :func:`replace_file` of the pointer.

This module is io: it imports fsspec and the errors only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from dgmm.errors import TargetExistsError, TargetNotWritableError

__all__ = [
    "Location",
    "check_target",
    "commit_dir",
    "exists",
    "fsync_path",
    "is_local",
    "put_files",
    "remove_quietly",
    "replace_file",
    "resolve",
    "unwritable",
    "write_file",
]


@dataclass(frozen=True)
class Location:
    """A path or URL resolved to an fsspec filesystem.

    Attributes
    ----------
    url : str
        As the user gave it, for messages.
    fs : fsspec.AbstractFileSystem
    path : str
        The path inside ``fs``, without a trailing ``/``.
    local : bool
        ``fs`` is fsspec's ``LocalFileSystem``: renames and fsync work.
    """

    url: str
    fs: Any
    path: str
    local: bool

    def join(self, *parts: str) -> str:
        """``path/part/...`` in this filesystem's spelling."""
        return join(self.local, self.path, *parts)

    def sibling(self, tag: str) -> str:
        """A fresh hidden sibling ``.<name>.<tag>-<token>`` of this path."""
        parent, base = split(self.local, self.path)
        return join(self.local, parent, f".{base}.{tag}-{uuid.uuid4().hex[:12]}")


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local filesystem (the one rule dgmm uses).

    fsspec's ``LocalFileSystem`` under its own protocol (``file``/``local``): a
    subclass registered under another protocol (a wrapper that counts, caches
    or fakes requests) is reached through fsspec's calls, never around them.
    """
    from fsspec.implementations.local import LocalFileSystem

    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return isinstance(fs, LocalFileSystem) and bool({"file", "local"} & set(protocols))


def resolve(url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Location:
    """The :class:`Location` of a local path or fsspec URL.

    Parameters
    ----------
    url : str or path-like
        ``/data/x.zarr``, ``s3://bucket/models/m1``, ``memory://tmp/f.png``.
    storage_options : mapping, default=None
        Passed to fsspec (credentials, ``endpoint_url``, ...).

    Returns
    -------
    Location

    Raises
    ------
    ImportError, ValueError
        As fsspec raises them for an unknown protocol or a bad URL; the
        reader or writer turns them into its typed error.
    """
    from fsspec.core import url_to_fs

    shown = os.fspath(url)
    fs, path = url_to_fs(shown, **dict(storage_options or {}))
    local = is_local(fs)
    if local:
        path = os.path.abspath(path)
    return Location(shown, fs, path.rstrip("/") or path, local)


def join(local: bool, parent: str, *parts: str) -> str:
    """Join path parts: ``os.path.join`` locally, ``/`` on object storage."""
    if local:
        return os.path.join(parent, *parts)
    return "/".join(p for p in (parent, *parts) if p)


def split(local: bool, path: str) -> tuple[str, str]:
    """``(parent, name)`` of ``path``."""
    return os.path.split(path) if local else posixpath.split(path)


def exists(fs: Any, path: str) -> bool:
    """``fs.exists(path)``, after dropping a listing another writer may have outdated."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    return bool(fs.exists(path))


def unwritable(what: str, shown: str, exc: OSError) -> str:
    """The message of a ``TargetNotWritableError`` from an ``OSError``."""
    return (
        f"Cannot write {what} to {shown}: {exc.strerror or exc} ({type(exc).__name__}). "
        "Choose a writable location, create the parent directory, or fix its permissions."
    )


def check_target(
    location: Location, *, overwrite: bool, what: str = "output", flag: str = "overwrite=True"
) -> None:
    """Fail before any work when a target exists (and may not be replaced) or cannot be made.

    Parameters
    ----------
    location : Location
    overwrite : bool
        Whether an existing target may be replaced.
    what : str, default="output"
        What is written ("model", "figure"), for the message.
    flag : str, default="overwrite=True"
        How the caller asks to replace (``--overwrite`` in the CLI).

    Raises
    ------
    TargetExistsError
        If the target exists and ``overwrite`` is False.
    TargetNotWritableError
        Locally, if the nearest existing parent is not a writable directory.
    """
    if not overwrite and exists(location.fs, location.path):
        raise TargetExistsError(
            f"The {what} {location.url!r} already exists; dgmm does not replace it unless "
            f"asked. Pass {flag} to replace it (only once the new one is complete), or "
            "choose another path."
        )
    if not location.local:
        return
    parent = os.path.dirname(location.path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    problem = (
        "not a directory" if not os.path.isdir(parent)
        else "not writable" if not os.access(parent, os.W_OK) else None
    )
    if problem:
        raise TargetNotWritableError(
            f"Cannot write the {what} {location.url!r}: {parent!r} is {problem}. Choose "
            "another path, or fix the path or its permissions."
        )


# -- durable local writes -------------------------------------------------------


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to a local ``path`` and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_path(path: str) -> None:
    """fsync a local file, or a directory so its new entries survive a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def put_files(
    location: Location, files: Mapping[str, bytes], *, executor: Executor | None = None
) -> None:
    """Write ``files`` (full path in ``location.fs`` -> bytes), durable before returning.

    Locally each file is written, then every file and directory fsynced (in
    ``executor`` when given: parallel fsyncs share the journal commits). On
    object storage one concurrent ``fs.pipe`` call (s3fs, gcsfs batch PUTs).
    """
    if not location.local:
        location.fs.pipe(dict(files))
        return
    dirs = sorted({os.path.dirname(p) for p in files})
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    for path, data in files.items():
        with open(path, "wb") as f:
            f.write(data)
    mapper: Callable[..., Iterable[Any]] = map if executor is None else executor.map
    list(mapper(fsync_path, [*files, *dirs]))


def replace_file(location: Location, data: bytes, *, what: str = "the file") -> None:
    """Put ``data`` at ``location`` in one atomic step (see the module docstring).

    Raises
    ------
    TargetNotWritableError
        If the file cannot be written; the previous content is untouched.
    """
    try:
        if not location.local:
            location.fs.pipe_file(location.path, data)  # one PUT replaces an object atomically
            return
        tmp = location.sibling("tmp")
        try:
            write_file(tmp, data)
            os.replace(tmp, location.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_path(os.path.dirname(location.path))
    except TargetNotWritableError:
        raise
    except OSError as exc:
        raise TargetNotWritableError(unwritable(what, location.url, exc)) from None


# -- moving a finished directory into place ----------------------------------------


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two local paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def remove_quietly(fs: Any, path: str, local: bool) -> None:
    """Remove a file or directory tree if it is there; never raises FileNotFoundError."""
    with contextlib.suppress(FileNotFoundError):
        if local:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        elif exists(fs, path):
            fs.rm(path, recursive=True)


def _appeared(location: Location) -> TargetExistsError:
    return TargetExistsError(
        f"The output {location.url!r} was created by someone else while this write ran; it "
        "was left as it is and nothing was written. Pass overwrite=True to replace it, or "
        "choose another path."
    )


def commit_dir(
    location: Location,
    tmp: str,
    *,
    overwrite: bool,
    last: Iterable[str] = (),
    durable: bool = False,
    what: str = "the output",
) -> None:
    """Move the complete directory ``tmp`` (a sibling of the target) to ``location``.

    Parameters
    ----------
    location : Location
        The target.
    tmp : str
        The finished output, written under ``location.sibling("tmp")``.
    overwrite : bool
        Replace an existing target. Without it a target that appeared while
        the output was written raises and is left as it is.
    last : iterable of str, default=()
        Object storage: file names (relative to the root, e.g. ``zarr.json``)
        copied after every other file.
    durable : bool, default=False
        Locally, fsync the parent directory so the rename survives a power cut
        (the caller fsynced the files).
    what : str, default="the output"
        For messages.

    Raises
    ------
    TargetExistsError
        If the target appeared meanwhile and ``overwrite`` is False.
    TargetNotWritableError
        If the move fails. Locally the temporary output is removed and an old
        target is untouched; on object storage the partial copy is removed and
        the complete output is left at ``tmp``, named in the message.
    """
    if location.local:
        _commit_local(location, tmp, overwrite, durable, what)
    else:
        _commit_remote(location, tmp, overwrite, tuple(last))


def _commit_local(location: Location, tmp: str, overwrite: bool, durable: bool, what: str) -> None:
    path = location.path
    try:
        if os.path.lexists(path):
            if not overwrite:
                raise _appeared(location)
            if _exchange(tmp, path):
                tmp_now_old = tmp
            else:
                # No atomic exchange here: move the old target aside first, so a
                # crash between the renames leaves it whole at the .old name.
                tmp_now_old = location.sibling("old")
                os.rename(path, tmp_now_old)
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(tmp_now_old, path)
                    raise
            remove_quietly(location.fs, tmp_now_old, True)
        else:
            os.rename(tmp, path)
        if durable:
            fsync_path(os.path.dirname(path))
    except OSError as exc:
        remove_quietly(location.fs, tmp, True)
        if isinstance(exc, (TargetExistsError, TargetNotWritableError)):
            raise
        raise TargetNotWritableError(unwritable(what, location.url, exc)) from None
    except BaseException:
        remove_quietly(location.fs, tmp, True)
        raise


def _commit_remote(location: Location, tmp: str, overwrite: bool, last: tuple[str, ...]) -> None:
    fs, path = location.fs, location.path
    if exists(fs, path):
        if not overwrite:
            remove_quietly(fs, tmp, False)
            raise _appeared(location)
        fs.rm(path, recursive=True)
    sources = sorted(fs.find(tmp))
    rel = [posixpath.relpath(s, tmp) for s in sources]
    late = [i for i, r in enumerate(rel) if r in last]
    early = [i for i in range(len(rel)) if i not in late]
    try:
        for group in (early, late):
            if group:
                fs.copy([sources[i] for i in group], [f"{path}/{rel[i]}" for i in group])
    except Exception as exc:
        with contextlib.suppress(Exception):
            if exists(fs, path):
                fs.rm(path, recursive=True)
        raise TargetNotWritableError(
            f"Writing {location.url!r} failed while moving the finished output into place "
            f"({type(exc).__name__}: {exc}); the partial copy was removed and the "
            f"complete output is left at {fs.unstrip_protocol(tmp)!r}. Copy it to the "
            "target yourself, or write again."
        ) from exc
    remove_quietly(fs, tmp, False)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
