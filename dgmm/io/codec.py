"""The one JSON codec: strict JSON out, non-finite floats tagged, numpy made plain.

Every JSON document dgmm writes (a model's ``model.json``, a checkpoint's
``state.json``, ``CURRENT`` and ``LEASE``, the CLI's ``--json`` summary) goes
through :func:`dumps` or :func:`to_jsonable`, and every one it reads through
:func:`loads`:

* The output is strict JSON (``allow_nan=False``): any JSON reader parses it.
* JSON has no NaN or infinity. A non-finite float is written as a one-key
  object, ``{"$float": "-Infinity"}`` (``"Infinity"``, ``"NaN"``), and
  :func:`loads` turns it back into the float. A lower bound of ``-inf``
  before the first pass round-trips exactly.
* numpy scalars and arrays become Python numbers and (nested) lists; tuples
  become lists; mapping keys become strings.
* :func:`loads` also accepts the bare ``-Infinity`` / ``NaN`` literals that
  Python's ``json`` module writes by default, so checkpoints written by
  earlier dgmm versions stay readable.

This module is io: it imports numpy only.

Examples
--------
>>> from dgmm.io.codec import dumps, loads
>>> dumps({"lower_bound": float("-inf"), "n": 3}, indent=None)
b'{"lower_bound": {"$float": "-Infinity"}, "n": 3}\\n'
>>> loads(b'{"lower_bound": {"$float": "-Infinity"}}')
{'lower_bound': -inf}
>>> loads(b'{"lower_bound": -Infinity}')  # as written by dgmm before the codec
{'lower_bound': -inf}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dgmm.errors import UnsupportedInputError

__all__ = ["FLOAT_TAG", "dumps", "loads", "to_jsonable"]

FLOAT_TAG = "$float"
# repr(float) spells these "inf", "-inf", "nan"; JSON's conventional names:
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _tag(value: float) -> dict[str, str]:
    """``{"$float": "Infinity" | "-Infinity" | "NaN"}`` for a non-finite float."""
    return {FLOAT_TAG: "NaN" if math.isnan(value) else _NON_FINITE[value]}


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: numpy made Python, non-finite floats tagged.

    Parameters
    ----------
    value : object
        Nested mappings, lists, tuples, numpy arrays and scalars, bools,
        ints, floats, strings and None.

    Returns
    -------
    object
        The same structure of dicts (string keys), lists, bools, ints,
        finite floats, strings and None; each non-finite float as
        ``{"$float": "Infinity"}`` (``"-Infinity"``, ``"NaN"``).

    Raises
    ------
    TypeError
        For anything else (a callable, a ``RandomState``): not data.

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonable({"w": np.array([0.5, np.inf]), "k": np.int64(2)})
    {'w': [0.5, {'$float': 'Infinity'}], 'k': 2}
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else _tag(value)
    if value is None or isinstance(value, str):
        return value
    raise UnsupportedInputError(
        f"{type(value).__name__} is not JSON data; expected mappings, lists, numbers, "
        "strings, None or numpy arrays and scalars."
    )


def dumps(value: Any, *, indent: int | None = 1, sort_keys: bool = True) -> bytes:
    """Strict JSON bytes of ``value`` (UTF-8, newline-terminated).

    Parameters
    ----------
    value : object
        As :func:`to_jsonable` accepts.
    indent : int or None, default=1
        Passed to :func:`json.dumps`; None writes one line.
    sort_keys : bool, default=True
        Sorted keys make the bytes canonical (hashes of a manifest are stable).

    Returns
    -------
    bytes
    """
    text = json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return (text + "\n").encode()


def _decode_floats(obj: dict[str, Any]) -> Any:
    """json object hook: ``{"$float": "Infinity"}`` back to ``float('inf')``."""
    if len(obj) == 1 and FLOAT_TAG in obj and isinstance(obj[FLOAT_TAG], str):
        return float(obj[FLOAT_TAG])
    return obj


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps` (or legacy JSON with bare ``-Infinity``).

    Parameters
    ----------
    data : bytes or str
        UTF-8 JSON text.

    Returns
    -------
    object
        Tagged non-finite floats decoded back to floats.

    Raises
    ------
    ValueError
        ``json.JSONDecodeError`` or ``UnicodeDecodeError`` (both ValueErrors)
        when ``data`` is not JSON; callers turn it into their typed error
        naming the file.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    # json.loads accepts the bare Infinity / -Infinity / NaN of older files by default.
    return json.loads(text, object_hook=_decode_floats)
