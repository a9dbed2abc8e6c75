"""Model files: a directory of ``.npy`` arrays and a ``model.json`` manifest.

A saved model is a directory (local path or fsspec URL)::

    model/
      model.json               format, versions, shapes, hyper-parameters,
                               fit summary and history, a manifest of files
      weights.npy              (n_components,)
      means.npy                (n_components, n_features)
      covariances.npy          per covariance type
      precisions_cholesky.npy  same shape as covariances

Arrays are written with ``np.save(allow_pickle=False)`` and read with
``np.load(allow_pickle=False)``, and ``model.json`` is plain JSON: loading a
model never executes code. The manifest lists every file with its size and
sha256, so a truncated or corrupt file is detected on read.

Writes are atomic. On a local file system the files go into a temporary
sibling directory, are fsynced, and the directory is renamed into place; an
existing model is swapped for the new one in a single ``renameat2`` exchange
where Linux offers it. Object stores have no rename: the arrays are written
under content-addressed names (``means.<sha256 prefix>.npy``) that never
clobber the previous model's, and ``model.json`` (a single PUT) is written
last, so readers see the old model or the new one, never a mix; the
previous model's files are deleted afterwards.

This module is io: it imports the core (params, covariance, errors) only.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dgmm.core.family import DEFAULT_FAMILY, MixtureParams, family_names, family_of, get_family
from dgmm.core.params import GMMParams
from dgmm.errors import (
    InvalidOptionError,
    ModelFormatError,
    ModelNotFoundError,
    TargetExistsError,
    TargetNotWritableError,
    UnsupportedInputError,
)
from dgmm.io import fs as fsio
from dgmm.io.codec import dumps
from dgmm.io.codec import loads as _parse

__all__ = [
    "ARRAY_NAMES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "READABLE_VERSIONS",
    "load_model",
    "params_from_files",
    "params_meta",
    "params_to_files",
    "read_dir",
    "read_meta",
    "save_model",
    "write_dir",
]

FORMAT_NAME = "dgmm-model"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
MANIFEST = "model.json"
ARRAY_NAMES = ("weights", "means", "covariances", "precisions_cholesky")


# -- arrays <-> bytes --------------------------------------------------------


def params_to_files(params: MixtureParams) -> dict[str, bytes]:
    """The parameter arrays of any model family as ``.npy`` bytes, float64.

    Parameters
    ----------
    params : MixtureParams
        Parameters of a registered family (:mod:`dgmm.core.family`).

    Returns
    -------
    files : dict of str to bytes
        ``{"<name>.npy": ...}`` for every array of the family's ``to_arrays``
        (Gaussian: weights, means, covariances, precisions_cholesky).
    """
    _, arrays = family_of(params).to_arrays(params)
    return {f"{name}.npy": _array_to_bytes(np.asarray(a, dtype=np.float64)) for name, a in arrays.items()}


def params_meta(params: MixtureParams) -> dict[str, Any]:
    """The parameter part of ``model.json``: the family and its metadata
    (Gaussian: covariance type, K, D, dtype)."""
    meta, _ = family_of(params).to_arrays(params)
    return {"family": params.family, **meta}


def params_from_files(
    files: Mapping[str, bytes],
    meta: Mapping[str, Any] | None = None,
    *,
    source: str = "the model",
) -> MixtureParams:
    """Parameters from the files of a model directory, read by the family they name.

    Parameters
    ----------
    files : mapping of str to bytes
        As returned by :func:`read_dir` (or :func:`params_to_files`).
    meta : mapping, default=None
        The parsed ``model.json``; by default parsed from ``files``. Without
        a ``family`` field (models written before families) it is Gaussian.
    source : str, default="the model"
        Where the files came from, for error messages.

    Returns
    -------
    params : MixtureParams
        Validated by the family: every array has the shape its metadata
        requires and valid values (Gaussian: finite, the weights are a
        distribution, the precisions are positive definite).

    Raises
    ------
    ModelFormatError
        If the family is unknown, or an array is missing, unreadable, of the
        wrong shape or invalid.
    """
    where = source
    if meta is None:
        meta = read_meta(files, where)
    name = meta.get("family", DEFAULT_FAMILY)
    try:
        family = get_family(str(name))
    except InvalidOptionError:
        raise ModelFormatError(
            f"{where} has family {name!r} in {MANIFEST}; this dgmm reads the families "
            f"{family_names()}. Upgrade dgmm, or register that family before loading."
        ) from None

    def load(array_name: str) -> np.ndarray:
        filename = f"{array_name}.npy"
        if filename not in files:
            raise ModelFormatError(
                f"{where} has no {filename}; a {family.name} model needs it. Save the model again."
            )
        return _array_from_bytes(files[filename], filename, where)

    return family.from_arrays(meta, load, where)


def _array_to_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _array_from_bytes(data: bytes, name: str, where: str) -> np.ndarray:
    """The float64 array in ``.npy`` bytes; ModelFormatError if unreadable or not float64."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(
            f"{where}: {name} is not a readable .npy array ({exc}). The file is truncated "
            "or corrupt: save the model again."
        ) from None
    if array.dtype != np.float64:
        raise ModelFormatError(
            f"{where}: {name} holds {array.dtype} values; expected float64. "
            "Save the model again."
        )
    return array


def _npy_header(data: bytes) -> tuple[list[int], str] | None:
    """``(shape, dtype)`` from a ``.npy`` header, or None if it is not one."""
    try:
        buffer = io.BytesIO(data)
        version = np.lib.format.read_magic(buffer)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(buffer)
    except Exception:  # any malformed header: the manifest just omits shape
        return None
    return [int(s) for s in shape], str(dtype)


# -- JSON (dgmm.io.codec: strict, non-finite floats tagged) ----------------------


def loads(data: bytes, where: str = "model.json") -> Any:
    """Parse JSON written by :func:`dgmm.io.codec.dumps`; ModelFormatError if it is not JSON."""
    try:
        return _parse(data)
    except ValueError as exc:
        raise ModelFormatError(
            f"{where} is not valid JSON ({exc}); it is truncated or corrupt. "
            "Save the model again."
        ) from None


# -- the manifest ---------------------------------------------------------------


def _manifest_entry(name: str, path: str, data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if name.endswith(".npy"):
        header = _npy_header(data)
        if header is not None:
            entry["shape"], entry["dtype"] = header
    return entry


def _with_manifest(
    files: Mapping[str, bytes], paths: Mapping[str, str]
) -> tuple[dict[str, Any], bytes]:
    """``(meta, model.json bytes)``: the caller's model.json plus format tags and manifest."""
    if MANIFEST in files:
        meta = loads(files[MANIFEST], f"the {MANIFEST} given to write_dir")
        if not isinstance(meta, dict):
            raise UnsupportedInputError(f"{MANIFEST} must hold a JSON object, got {type(meta).__name__}.")
    else:
        meta = {}
    meta.setdefault("format", FORMAT_NAME)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta["files"] = [
        _manifest_entry(name, paths[name], data)
        for name, data in sorted(files.items())
        if name != MANIFEST
    ]
    return meta, dumps(meta)


def read_meta(files: Mapping[str, bytes], where: str = "the model") -> dict[str, Any]:
    """The parsed, format-checked ``model.json`` of a model's files.

    Raises ModelFormatError if it is missing, not JSON, not a dgmm model or
    of a format version this dgmm cannot read.
    """
    if MANIFEST not in files:
        raise ModelFormatError(
            f"{where} is not a dgmm model: it has no {MANIFEST}. Pass the directory "
            "written by GaussianMixture.save (or `dgmm fit --output`)."
        )
    meta = loads(files[MANIFEST], f"{where}/{MANIFEST}")
    _check_format(meta, where)
    return meta


def _check_format(meta: Any, where: str) -> None:
    """Format name and version; ModelFormatError naming what this dgmm reads."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFormatError(
            f"{where} is not a dgmm model: {MANIFEST} has format {got!r}, expected "
            f"{FORMAT_NAME!r}. Pass the directory written by GaussianMixture.save "
            "(or `dgmm fit --output`)."
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_VERSIONS:
        from dgmm._version import __version__

        newer = isinstance(version, int) and version > max(READABLE_VERSIONS)
        raise ModelFormatError(
            f"{where} has model format version {version!r}"
            + (f" (written by dgmm {meta.get('dgmm_version', '?')})" if newer else "")
            + f"; this dgmm {__version__} reads format version(s) "
            f"{', '.join(map(str, READABLE_VERSIONS))}. "
            + ("Upgrade dgmm (pip install -U dgmm) to load it." if newer
               else "The file was edited or corrupted: save the model again.")
        )


def _verify(files: Mapping[str, bytes], entries: list[Any], where: str) -> None:
    """Every manifest entry present with its size and sha256."""
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in files:
            raise ModelFormatError(
                f"{where}: the manifest in {MANIFEST} lists {name!r} but the file is "
                "missing. The model is incomplete (an interrupted copy?): save it again."
            )
        data = files[name]
        if len(data) != entry.get("size"):
            raise ModelFormatError(
                f"{where}: {name} has {len(data)} bytes but {MANIFEST} records "
                f"{entry.get('size')}. The file is truncated or corrupt: save the model again."
            )
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ModelFormatError(
                f"{where}: {name} does not match the sha256 recorded in {MANIFEST}. "
                "The file is corrupt or was modified: save the model again."
            )


# -- directories --------------------------------------------------------------


def write_dir(
    url: str | os.PathLike[str],
    files: Mapping[str, bytes],
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write a directory of small files atomically, ``model.json`` last.

    Parameters
    ----------
    url : str or path-like
        Local path or fsspec URL (``s3://bucket/models/m1``) of the directory.
    files : mapping of str to bytes
        File names (no subdirectories) and contents. ``model.json``, if
        given, must hold a JSON object; the format tags and the manifest of
        the other files (name, size, sha256, shape and dtype of ``.npy``
        files) are added to it. Without one, a ``model.json`` holding just
        those is written.
    overwrite : bool, default=False
        Replace an existing dgmm model directory. The old model stays
        readable until the new one is complete.
    storage_options : mapping, default=None
        Passed to fsspec (credentials, endpoint_url, ...).

    Raises
    ------
    TargetExistsError
        If ``url`` exists and ``overwrite`` is False, or it exists and is
        not a dgmm model directory (never replaced, even with ``overwrite``).
    TargetNotWritableError
        If the directory cannot be created or written.
    """
    for name in files:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise InvalidOptionError(f"File names must be plain names without '/', got {name!r}.")
    location = fsio.resolve(url, storage_options)
    if location.local:
        _write_local(location, files, overwrite)
    else:
        _write_remote(location, files, overwrite)


def _existing_model(location: fsio.Location, overwrite: bool) -> dict[str, Any] | None:
    """The parsed model.json of what is at the target (None if nothing); refuse what we may not replace."""
    fs, path, shown = location.fs, location.path, location.url
    fsio.check_target(location, overwrite=overwrite, what="model", flag="overwrite=True (or --overwrite)")
    if not fsio.exists(fs, path):
        return None
    if fs.isfile(path):
        raise TargetExistsError(
            f"{shown} exists and is a file, not a dgmm model directory; refusing to "
            "replace it even with overwrite=True. Remove it or choose another path."
        )
    manifest = f"{path}/{MANIFEST}"
    if not fs.exists(manifest):
        if not fs.ls(path, detail=False):
            return {}
        raise TargetExistsError(
            f"{shown} exists and is not a dgmm model directory (no {MANIFEST}); refusing "
            "to replace it even with overwrite=True. Remove it or choose another path."
        )
    try:
        meta = _parse(fs.cat_file(manifest))
    except ValueError:
        meta = {}
    return meta if isinstance(meta, dict) else {}


def _write_local(location: fsio.Location, files: Mapping[str, bytes], overwrite: bool) -> None:
    _existing_model(location, overwrite)
    tmp = location.sibling("tmp")
    try:
        os.makedirs(os.path.dirname(location.path), exist_ok=True)
        os.mkdir(tmp)
    except OSError as exc:
        raise TargetNotWritableError(fsio.unwritable("the model", location.url, exc)) from None
    try:
        _, meta_bytes = _with_manifest(files, {name: name for name in files})
        for name, data in files.items():
            if name != MANIFEST:
                fsio.write_file(os.path.join(tmp, name), data)
        fsio.write_file(os.path.join(tmp, MANIFEST), meta_bytes)
        fsio.fsync_path(tmp)
    except OSError as exc:
        fsio.remove_quietly(location.fs, tmp, True)
        raise TargetNotWritableError(fsio.unwritable("the model", location.url, exc)) from None
    except BaseException:
        fsio.remove_quietly(location.fs, tmp, True)
        raise
    # overwrite was checked above; an existing (empty or model) directory is swapped out.
    fsio.commit_dir(location, tmp, overwrite=True, durable=True, what="the model")


def _content_path(name: str, data: bytes) -> str:
    """``means.npy`` -> ``means.<sha256 prefix>.npy``: never the name of an older version."""
    stem, dot, suffix = name.rpartition(".")
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{stem}.{digest}.{suffix}" if dot and stem else f"{name}.{digest}"


def _write_remote(location: fsio.Location, files: Mapping[str, bytes], overwrite: bool) -> None:
    # A pointer scheme: arrays under content-addressed names nothing reads yet,
    # then model.json (the pointer) in one PUT, the commit point.
    fs, path = location.fs, location.path
    old = _existing_model(location, overwrite)
    paths = {name: _content_path(name, data) for name, data in files.items() if name != MANIFEST}
    _, meta_bytes = _with_manifest(files, paths)
    try:
        for name, data in files.items():
            if name != MANIFEST:
                fs.pipe_file(f"{path}/{paths[name]}", data)
    except OSError as exc:
        raise TargetNotWritableError(fsio.unwritable("the model", location.url, exc)) from None
    fsio.replace_file(
        fsio.Location(location.url, fs, f"{path}/{MANIFEST}", False), meta_bytes, what="the model"
    )
    if old:
        keep = set(paths.values()) | {MANIFEST}
        stale = [
            f"{path}/{e['path']}"
            for e in old.get("files", [])
            if isinstance(e, dict) and isinstance(e.get("path"), str)
            and "/" not in e["path"] and e["path"] not in keep
        ]
        for p in stale:
            try:
                fs.rm_file(p)
            except OSError:  # a leftover file is harmless: no manifest lists it
                pass
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(path)


def read_dir(
    url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """Read and verify a directory written by :func:`write_dir`.

    Parameters
    ----------
    url : str or path-like
        Local path or fsspec URL of the directory.
    storage_options : mapping, default=None
        Passed to fsspec.

    Returns
    -------
    files : dict of str to bytes
        ``model.json`` and every file its manifest lists, under their
        logical names; each checked against its recorded size and sha256.

    Raises
    ------
    ModelNotFoundError
        If nothing exists at ``url``.
    ModelFormatError
        If it is not a dgmm model, of a future format version, or a file is
        missing, truncated or corrupt.
    """
    location = fsio.resolve(url, storage_options)
    fs, path, shown = location.fs, location.path, location.url
    manifest = f"{path}/{MANIFEST}"
    try:
        meta_bytes = fs.cat_file(manifest)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        if not fs.exists(path):
            raise ModelNotFoundError(
                f"No model at {shown}: the path does not exist. Check the path (and "
                "storage_options for remote URLs), or fit and save a model there first."
            ) from None
        raise ModelFormatError(
            f"{shown} is not a dgmm model: it has no {MANIFEST}. Pass the directory "
            "written by GaussianMixture.save (or `dgmm fit --output`)."
        ) from None
    meta = loads(meta_bytes, f"{shown}/{MANIFEST}")
    _check_format(meta, shown)
    entries = meta.get("files")
    if not isinstance(entries, list):
        raise ModelFormatError(
            f"{shown}: {MANIFEST} has no file manifest ('files' list). The file was "
            "edited or corrupted: save the model again."
        )
    files: dict[str, bytes] = {MANIFEST: meta_bytes}
    for entry in entries:
        if not isinstance(entry, dict):
            continue  # _verify reports it
        name, stored = entry.get("name"), entry.get("path", entry.get("name"))
        if not isinstance(stored, str) or "/" in stored or not isinstance(name, str):
            raise ModelFormatError(
                f"{shown}: the manifest entry {entry!r} in {MANIFEST} is malformed. "
                "Save the model again."
            )
        try:
            files[name] = fs.cat_file(f"{path}/{stored}")
        except FileNotFoundError:
            pass  # _verify names it
    _verify(files, entries, shown)
    return files


# -- models -------------------------------------------------------------------


def save_model(
    url: str | os.PathLike[str],
    params: GMMParams,
    meta: Mapping[str, Any] | None = None,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Save parameters and metadata as a model directory.

    Parameters
    ----------
    url : str or path-like
        Local path or fsspec URL of the directory.
    params : GMMParams
    meta : mapping, default=None
        JSON-able extra fields of ``model.json`` (hyper-parameters, fit
        summary, history); numpy scalars and arrays and non-finite floats
        are converted. The format, version and shape fields are dgmm's.
    extra_files : mapping of str to bytes, default=None
        More files for the directory (a checkpoint's loop state), listed in
        the manifest like the arrays.
    overwrite : bool, default=False
    storage_options : mapping, default=None
        As in :func:`write_dir`.
    """
    from dgmm._version import __version__

    document = dict(meta or {})
    document.update(params_meta(params))
    document.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, dgmm_version=__version__)
    files = dict(extra_files or {})
    files.update(params_to_files(params))
    files[MANIFEST] = dumps(document)
    write_dir(url, files, overwrite=overwrite, storage_options=storage_options)


def load_model(
    url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> tuple[GMMParams, dict[str, Any]]:
    """Load a model directory written by :func:`save_model`.

    Returns
    -------
    params : GMMParams
    meta : dict
        The parsed ``model.json`` (its ``files`` entry is the manifest).

    Raises
    ------
    ModelNotFoundError, ModelFormatError
        As :func:`read_dir`, and if the arrays do not fit the recorded
        covariance type, number of components and features.
    """
    files = read_dir(url, storage_options=storage_options)
    meta = read_meta(files, os.fspath(url))
    params = params_from_files(files, meta, source=os.fspath(url))
    return params, meta
