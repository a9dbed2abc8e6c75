"""The one JSON codec: strict JSON out, non-finite floats tagged and read back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dgmm.io import codec


def _strict(data: bytes) -> object:
    """Parse as a strict JSON reader would: no NaN / Infinity literals."""

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(data, parse_constant=refuse)


def test_non_finite_floats_round_trip_through_strict_json():
    value = {"lower_bound": -math.inf, "change": math.inf, "gap": math.nan, "tol": 1e-3}
    data = codec.dumps(value)
    assert _strict(data)["lower_bound"] == {"$float": "-Infinity"}
    back = codec.loads(data)
    assert back["lower_bound"] == -math.inf and back["change"] == math.inf
    assert math.isnan(back["gap"]) and back["tol"] == 1e-3


def test_numpy_values_become_plain_json():
    value = {
        "k": np.int64(3), "ok": np.bool_(True), "w": np.float32(0.5),
        "m": np.array([[1.0, np.inf], [2.0, -np.inf]]), "t": (1, 2), 7: "key",
    }
    back = codec.loads(codec.dumps(value))
    assert back == {"k": 3, "ok": True, "w": 0.5, "m": [[1.0, math.inf], [2.0, -math.inf]],
                    "t": [1, 2], "7": "key"}
    assert type(back["k"]) is int and type(back["ok"]) is bool


def test_exact_float_repr_survives():
    x = np.random.default_rng(0).normal(size=20)
    assert codec.loads(codec.dumps(x.tolist())) == x.tolist()


def test_legacy_bare_infinity_is_read():
    # What json.dumps(allow_nan=True) wrote in checkpoints before the codec.
    legacy = json.dumps({"lower_bounds": [-math.inf, -1.5], "x": math.nan}).encode()
    assert b"-Infinity" in legacy
    back = codec.loads(legacy)
    assert back["lower_bounds"] == [-math.inf, -1.5] and math.isnan(back["x"])


@pytest.mark.parametrize(
    "value",
    [pytest.param(object(), id="object"), pytest.param(np.random.RandomState(0), id="RandomState"),
     pytest.param({"f": print}, id="callable-inside")],
)
def test_what_is_not_data_is_a_type_error(value):
    with pytest.raises(TypeError, match="not JSON data"):
        codec.dumps(value)


def test_not_json_is_a_value_error():
    with pytest.raises(ValueError):
        codec.loads(b"{not json")
    with pytest.raises(ValueError):
        codec.loads(b"\xff\xfe")


def test_one_line_for_the_cli():
    data = codec.dumps({"b": 1, "a": [-math.inf]}, indent=None, sort_keys=False)
    assert data == b'{"b": 1, "a": [{"$float": "-Infinity"}]}\n'
