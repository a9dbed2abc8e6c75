"""One dataset per fit: the array, its feature names, its fingerprint, and how to reopen it.

A :class:`Dataset` is what opening a source gives (:func:`dgmm.io.sources.open_data`)
and what the fit, prediction, checkpoints and the CLI pass around: the
row-chunked float Dask array (all columns in one chunk), the feature names,
the storage fingerprint, whether the rows came from this process's memory,
a description of the source for messages, and :meth:`Dataset.reopen`, which
rechunks stored data along whole storage chunks from the reader opened once
(no second metadata read).

Arrays that ``dgmm.open_dataset`` hands to users carry their origin on the
array object itself, so ``fit(open_dataset(path, columns=[...]))`` keeps the
feature names and a later ``chunks=`` still reopens along storage chunks.
Why an array subclass, and not a table of arrays by name:

* a global mapping keyed by the Dask name (what dgmm had) grows without
  bound and is shared state; a weak-keyed one is still a registry;
* ``dask.array.Array`` has a ``__dict__``, so an instance attribute can be
  set, but ``persist()`` (``dask.persist``, ``Client.persist``) rebuilds a
  plain ``Array`` through ``__dask_postpersist__`` and the attribute is lost;
* so :class:`OpenedArray`, a ``da.Array`` subclass with one extra attribute,
  rebuilds itself on persist (same name, same origin). Every derived array
  (a slice, ``astype``, arithmetic) is a plain ``da.Array`` built by Dask, so
  it has no feature names, as a DataFrame turned into an array has none in
  scikit-learn. Pickled, it is a plain ``Array`` (workers never need it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from dgmm.errors import UnsupportedInputError
from dgmm.io.stores import StoredArray

__all__ = ["Dataset", "OpenedArray", "Origin", "memory_array", "string_names"]


@dataclass(frozen=True)
class Origin:
    """Where an array's rows come from; holds no Dask array (an array carries it without a cycle).

    Attributes
    ----------
    source : str
        The source, for messages (a path or URL, or the type of the object).
    labels : tuple or None
        Column labels of a DataFrame or a Parquet dataset, in the order read.
    store : StoredArray or None
        The opened store of stored data: reopening reads no metadata again.
    values : ndarray of shape (n_samples, n_features) or None
        In-memory rows (already held by the array's graph), rechunked by reopening.
    """

    source: str
    labels: tuple[Any, ...] | None = None
    store: StoredArray | None = None
    values: np.ndarray | None = None


class OpenedArray(da.Array):
    """A Dask array opened by dgmm, carrying its :class:`Origin` through ``persist()``."""

    origin: Origin

    def _rebuild(self, dsk: Any, *, rename: Any = None) -> da.Array:
        rebuilt = super()._rebuild(dsk, rename=rename)
        # A renamed array (dask.graph_manipulation) is no longer the one opened.
        return carrying(rebuilt, self.origin) if rebuilt.name == self.name else rebuilt


def carrying(x: da.Array, origin: Origin) -> OpenedArray:
    """``x`` (same graph, name, chunks) as an :class:`OpenedArray` carrying ``origin``."""
    out = OpenedArray(x.dask, x.name, x.chunks, meta=x._meta)
    out.origin = origin
    return out


def string_names(labels: Any) -> np.ndarray | None:
    """Column labels as feature names, by scikit-learn's rule (``_get_feature_names``).

    All strings: an object array of them. Strings mixed with other types:
    TypeError, as scikit-learn. Otherwise (no columns, integers ...): None.
    """
    names = np.asarray(list(labels), dtype=object)
    if len(names) == 0:
        return None
    types = sorted(t.__qualname__ for t in set(type(v) for v in names))
    if len(types) > 1 and "str" in types:
        raise UnsupportedInputError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {types} as feature name / column name types. "
            "If you want feature names to be stored and validated, you must convert "
            "them all to strings, by using X.columns = X.columns.astype(str) for "
            "example. Otherwise you can remove feature / column names from your input "
            "data, or convert them all to a non-string data type."
        )
    if types == ["str"]:
        return names
    return None


def memory_array(values: np.ndarray, row_chunks: tuple[int, ...], labels: tuple[Any, ...] | None) -> da.Array:
    """In-memory rows (n_samples, n_features) as a Dask array embedding them, ``row_chunks`` rows a chunk."""
    # A frame's array is named after its columns too: the same values
    # without them (or with others) must not look like the same data.
    name = None if labels is None else "frame-" + tokenize(values, row_chunks, labels)
    return da.from_array(values, chunks=(row_chunks, (values.shape[1],)), name=name)


@dataclass(frozen=True)
class Dataset:
    """The data of one fit or prediction, opened once.

    Attributes
    ----------
    array : dask.array.Array of shape (n_samples, n_features)
        Row-chunked float32/float64 data, all columns in one chunk: stored
        data read by the tasks, a Dask input, or in-memory rows (scattered to
        the workers for a fit).
    origin : Origin
        The source, its column labels, the opened store or the in-memory rows.
    in_memory : bool
        The rows came from this process (NumPy, pandas): they have no storage
        fingerprint, and checkpoints recognise them by a digest of their content.

    Examples
    --------
    >>> import numpy as np
    >>> from dgmm.io.sources import open_data
    >>> data = open_data(np.ones((6, 2)), chunks=3)
    >>> data.array.chunks, data.in_memory, data.feature_names
    (((3, 3), (2,)), True, None)
    >>> data.reopen(2).array.chunks
    ((2, 2, 2), (2,))
    """

    array: da.Array
    origin: Origin
    in_memory: bool = False

    @property
    def feature_names(self) -> np.ndarray | None:
        """Names of the columns (ndarray of str objects, shape (n_features,)), or None.

        Only DataFrames and Parquet data name their columns, and only when
        every label is a string (scikit-learn's rule; mixed labels raise TypeError).
        """
        return None if self.origin.labels is None else string_names(self.origin.labels)

    @property
    def source(self) -> str:
        """The source, for messages."""
        return self.origin.source

    @property
    def fingerprint(self) -> str | None:
        """What identifies stored or Dask data across processes: the array's deterministic name.

        A stored array's name is made from its location, key or columns, its
        stored metadata and the chunking. None for in-memory rows, whose
        scattered name is random (checkpoints digest their content instead).
        """
        return None if self.in_memory else self.array.name

    def reopen(self, rows: int) -> Dataset:
        """The same data with about ``rows`` rows per chunk.

        Stored data is rechunked along whole storage chunks (Zarr chunks or
        shards, Parquet row groups) from the store opened once, so no stored
        chunk is read by two tasks and no metadata is read again; other data
        is rechunked.
        """
        store, values = self.origin.store, self.origin.values
        if store is not None:
            x = store.to_dask(store.row_chunks(rows))
            x = x if x.dtype == self.array.dtype else x.astype(self.array.dtype)
        elif values is not None and not self.in_memory:
            row_chunks = tuple(da.core.normalize_chunks((rows,), (values.shape[0],))[0])
            x = memory_array(values, row_chunks, self.origin.labels)
        else:
            x = self.array.rechunk({0: rows, 1: -1})
        return replace(self, array=x)

    def opened(self) -> da.Array:
        """The array, carrying this dataset's origin (what ``dgmm.open_dataset`` returns)."""
        return carrying(self.array, self.origin)

    @classmethod
    def of(cls, x: da.Array) -> Dataset | None:
        """The dataset an array from ``dgmm.open_dataset`` was opened as (not in memory), or None."""
        origin = getattr(x, "origin", None)
        if not isinstance(x, OpenedArray) or not isinstance(origin, Origin):
            return None
        return cls(da.Array(x.dask, x.name, x.chunks, meta=x._meta), origin)
