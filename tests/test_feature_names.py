"""``feature_names_in_`` from every named source, checked as scikit-learn checks it.

pandas and Dask DataFrames, Parquet files and directories (as paths, URLs, or
arrays from ``open_dataset(..., columns=...)``) name their features; arrays,
Zarr, ``.npy`` and xarray do not. The errors and warnings of a mismatch are
scikit-learn's own: the tests compare them with what scikit-learn's
GaussianMixture raises on the same frames.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import dgmm
from dgmm import GaussianMixture, open_dataset
from dgmm.errors import DgmmError
from dgmm.io.sources import feature_names

from ._helpers import invoke

NAMES = ["height", "weight", "age"]
N_ROWS = 400


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(11)
    centres = np.array([[-5.0, 0.0, 2.0], [5.0, 3.0, -2.0]])
    return centres[np.arange(N_ROWS) % 2] + rng.normal(size=(N_ROWS, 3))


def write_parquet(path: Path, X: np.ndarray, names: list[str] = NAMES, extra: dict | None = None) -> str:
    table = pa.table({n: X[:, j] for j, n in enumerate(names)} | (extra or {}))
    pq.write_table(table, path, row_group_size=100)
    return str(path)


def write_parquet_dir(path: Path, X: np.ndarray) -> str:
    """Two files with the features, a text and an integer column beside them."""
    path.mkdir()
    for i, part in enumerate(np.array_split(X, 2)):
        extra = {"id": [f"r{i}-{j}" for j in range(len(part))], "batch": np.full(len(part), i)}
        write_parquet(path / f"part-{i}.parquet", part, extra=extra)
    return str(path)


def fit(source: Any) -> GaussianMixture:
    return GaussianMixture(2, random_state=0, max_iter=50).fit(source)


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- named sources: the names, and the checks at predict -----------------------------

NAMED: list[Any] = [
    pytest.param(lambda X, tmp: pd.DataFrame(X, columns=NAMES), NAMES, id="pandas"),
    pytest.param(lambda X, tmp: dd.from_pandas(pd.DataFrame(X, columns=NAMES), npartitions=2), NAMES,
                 id="dask-dataframe"),
    pytest.param(lambda X, tmp: write_parquet(tmp / "x.parquet", X), NAMES, id="parquet-file"),
    pytest.param(lambda X, tmp: Path(write_parquet(tmp / "x.parquet", X)), NAMES, id="parquet-pathlike"),
    pytest.param(lambda X, tmp: "file://" + write_parquet(tmp / "x.parquet", X), NAMES, id="parquet-url"),
    pytest.param(lambda X, tmp: open_dataset(write_parquet_dir(tmp / "pq", X), columns=["age", "height"]),
                 ["age", "height"], id="parquet-dir-columns"),
    pytest.param(lambda X, tmp: open_dataset(write_parquet(tmp / "x.parquet", X)), NAMES,
                 id="parquet-opened"),
    pytest.param(
        lambda X, tmp: open_dataset(pd.DataFrame(X, columns=NAMES).assign(note="x"), columns=NAMES[:2]),
        NAMES[:2], id="pandas-opened-columns",
    ),
    pytest.param(lambda X, tmp: open_dataset(dd.from_pandas(pd.DataFrame(X, columns=NAMES), npartitions=2),
                                             columns=["weight", "age"]),
                 ["weight", "age"], id="dask-dataframe-opened-columns"),
]


@pytest.mark.parametrize(("make", "names"), NAMED)
def test_named_sources_name_the_features_and_predict_checks_them(
    make: Callable, names: list[str], X: np.ndarray, tmp_path: Path
) -> None:
    gmm = fit(make(X, tmp_path))
    assert isinstance(gmm.feature_names_in_, np.ndarray)
    assert gmm.feature_names_in_.dtype == object
    assert gmm.feature_names_in_.tolist() == names
    assert gmm.n_features_in_ == len(names)

    same = pd.DataFrame(X[:, : len(names)], columns=names)
    with no_warnings():
        gmm.predict(same)
    with pytest.raises(ValueError, match="must be in the same order"):
        gmm.predict(same[names[::-1]])
    with pytest.raises(ValueError, match="unseen at fit time:\n- other_0\n"):
        gmm.predict(same.set_axis([f"other_{j}" for j in range(len(names))], axis=1))
    with pytest.warns(UserWarning, match="^X does not have valid feature names, but GaussianMixture was"):
        gmm.predict(same.to_numpy())


def test_predict_on_pandas_after_a_parquet_fit_does_not_warn(X: np.ndarray, tmp_path: Path) -> None:
    gmm = fit(write_parquet(tmp_path / "x.parquet", X))
    frame = pd.DataFrame(X, columns=NAMES)
    with no_warnings():
        labels = gmm.predict(frame)
        gmm.score(frame)
    np.testing.assert_array_equal(labels, gmm.predict(tmp_path / "x.parquet").compute())


def test_a_parquet_path_at_predict_is_a_named_source(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", X)
    renamed = write_parquet(tmp_path / "renamed.parquet", X, names=["height", "weight", "years"])
    reordered = write_parquet(tmp_path / "reordered.parquet", X, names=["weight", "height", "age"])
    unnamed = fit(X)
    with pytest.warns(UserWarning, match="^X has feature names, but GaussianMixture was fitted without"):
        unnamed.predict(path)
    named = fit(pd.DataFrame(X, columns=NAMES))
    with no_warnings():
        named.predict(path).compute()
    with pytest.raises(ValueError, match="unseen at fit time:\n- years\n.*now missing:\n- age\n"):
        named.predict(renamed)
    with pytest.raises(ValueError, match="same order"):
        named.predict(reordered)
    with pytest.raises(ValueError, match="unseen at fit time:\n- years"):
        named.predict(open_dataset(renamed))


METHODS: list[Any] = [
    pytest.param(lambda gmm, X, tmp: gmm.predict(X), id="predict"),
    pytest.param(lambda gmm, X, tmp: gmm.predict_proba(X), id="predict_proba"),
    pytest.param(lambda gmm, X, tmp: gmm.score_samples(X), id="score_samples"),
    pytest.param(lambda gmm, X, tmp: gmm.score(X), id="score"),
    pytest.param(lambda gmm, X, tmp: gmm.bic(X), id="bic"),
    pytest.param(lambda gmm, X, tmp: gmm.aic(X), id="aic"),
    pytest.param(lambda gmm, X, tmp: gmm.predict_to(X, str(tmp / "out.zarr")), id="predict_to"),
]


@pytest.mark.parametrize("call", METHODS)
def test_every_method_checks_the_names(call: Callable, X: np.ndarray, tmp_path: Path) -> None:
    gmm = fit(write_parquet(tmp_path / "x.parquet", X))
    frame = pd.DataFrame(X, columns=NAMES)
    with pytest.raises(ValueError, match="same order"):
        call(gmm, frame[NAMES[::-1]], tmp_path)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        call(gmm, X, tmp_path)
    with no_warnings():
        call(gmm, frame, tmp_path / "named")


def test_predict_to_reads_the_names_of_a_stored_source(X: np.ndarray, tmp_path: Path) -> None:
    gmm = fit(pd.DataFrame(X, columns=NAMES))
    write_parquet(tmp_path / "x.parquet", X)
    with no_warnings():
        gmm.predict_to(tmp_path / "x.parquet", str(tmp_path / "labels.zarr"))
    write_parquet(tmp_path / "other.parquet", X, names=["a", "b", "c"])
    with pytest.raises(ValueError, match="unseen at fit time"):
        gmm.predict_to(tmp_path / "other.parquet", str(tmp_path / "never.zarr"))
    assert not (tmp_path / "never.zarr").exists()


def test_fit_predict_on_named_sources_does_not_warn(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", X)
    with no_warnings():
        lazy = GaussianMixture(2, random_state=0).fit_predict(path)
        eager = GaussianMixture(2, random_state=0).fit_predict(pd.DataFrame(X, columns=NAMES))
    np.testing.assert_array_equal(lazy.compute(), eager)


def test_other_names_raise_before_another_count_is_refused(X: np.ndarray) -> None:
    # scikit-learn's own check: three of the fitted eight names is a names error.
    gmm = fit(pd.DataFrame(X, columns=NAMES))
    with pytest.raises(ValueError, match="seen at fit time, yet now missing:\n- height\n"):
        gmm.predict(pd.DataFrame(X[:, 1:], columns=NAMES[1:]))


# -- the errors and warnings are scikit-learn's ----------------------------------------


def raised(call: Callable[[], Any]) -> tuple[type, str]:
    """``(type, message)`` of what ``call`` raises or warns first.

    dgmm raises typed subclasses (``dgmm.errors``) of the builtin scikit-learn
    raises: the type reported for those is that builtin, so the comparison
    with scikit-learn's own is exact on both the builtin and the message.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - compared below
            kind = type(exc)
            if isinstance(exc, DgmmError):
                kind = next(c for c in kind.__mro__ if c.__module__ == "builtins" and c is not Exception)
            return kind, str(exc)
    return (caught[0].category, str(caught[0].message)) if caught else (type(None), "")


MISMATCHES: list[Any] = [
    pytest.param(lambda f: f[NAMES[::-1]], id="reordered"),
    pytest.param(lambda f: f.set_axis(["height", "weight", "years"], axis=1), id="renamed"),
    pytest.param(lambda f: f.set_axis(["a", "b", "c"], axis=1), id="all-unseen"),
    pytest.param(lambda f: f.to_numpy(), id="no-names"),
    pytest.param(lambda f: f.set_axis([0, 1, 2], axis=1), id="integer-names"),
]


@pytest.mark.parametrize("change", MISMATCHES)
def test_mismatches_raise_what_scikit_learn_raises(change: Callable, X: np.ndarray) -> None:
    frame = pd.DataFrame(X, columns=NAMES)
    sk = SKGaussianMixture(2, random_state=0).fit(frame)
    ours = fit(frame)
    expected = raised(lambda: sk.predict(change(frame)))
    assert expected[0] in (ValueError, UserWarning)
    assert raised(lambda: ours.predict(change(frame))) == expected


def test_names_after_an_unnamed_fit_warn_as_scikit_learn(X: np.ndarray, tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=NAMES)
    sk = SKGaussianMixture(2, random_state=0).fit(X)
    ours = fit(X)
    expected = raised(lambda: sk.predict(frame))
    assert expected[0] is UserWarning
    assert raised(lambda: ours.predict(frame)) == expected
    assert raised(lambda: ours.predict(write_parquet(tmp_path / "x.parquet", X))) == expected


def test_many_names_are_listed_five_at_most(X: np.ndarray) -> None:
    wide = pd.DataFrame(np.hstack([X, X]), columns=[f"f{j}" for j in range(6)])
    sk = SKGaussianMixture(2, random_state=0).fit(wide)
    ours = fit(wide)
    other = wide.set_axis([f"g{j}" for j in range(6)], axis=1)
    assert raised(lambda: ours.predict(other)) == raised(lambda: sk.predict(other))
    assert "- ...\n" in raised(lambda: ours.predict(other))[1]


# -- sources without (string) names --------------------------------------------------


def test_mixed_column_name_types_are_refused_as_scikit_learn(X: np.ndarray) -> None:
    frame = pd.DataFrame(X, columns=["height", 1, "age"])
    expected = raised(lambda: SKGaussianMixture(2).fit(frame))
    assert expected[0] is TypeError
    assert raised(lambda: fit(frame)) == expected
    assert raised(lambda: fit(open_dataset(frame))) == expected


def test_non_string_column_names_give_no_names(X: np.ndarray) -> None:
    frame = pd.DataFrame(X)  # integer column labels
    gmm = fit(frame)
    assert not hasattr(gmm, "feature_names_in_")
    with no_warnings():
        gmm.predict(frame)
        gmm.predict(X)
    assert not hasattr(fit(open_dataset(frame)), "feature_names_in_")


UNNAMED: list[Any] = [
    pytest.param(lambda X, tmp: X, id="numpy"),
    pytest.param(lambda X, tmp: da.from_array(X, chunks=(100, 3)), id="dask-array"),
    pytest.param(lambda X, tmp: (zarr.create_array(str(tmp / "x.zarr"), data=X, chunks=(100, 3)),
                                 str(tmp / "x.zarr"))[1], id="zarr"),
    pytest.param(lambda X, tmp: (np.save(tmp / "x.npy", X), str(tmp / "x.npy"))[1], id="npy"),
    pytest.param(lambda X, tmp: pytest.importorskip("xarray").DataArray(
        X, dims=("cell", "feature"), coords={"feature": NAMES}), id="xarray-with-feature-coordinate"),
    pytest.param(lambda X, tmp: open_dataset(pd.DataFrame(X, columns=NAMES).to_numpy()), id="opened-numpy"),
]


@pytest.mark.parametrize("make", UNNAMED)
def test_unnamed_sources_give_no_names(make: Callable, X: np.ndarray, tmp_path: Path) -> None:
    open_dataset(pd.DataFrame(X, columns=NAMES))  # the same values, named: must not lend their names
    source = make(X, tmp_path)
    assert feature_names(source) is None
    gmm = fit(source)
    assert not hasattr(gmm, "feature_names_in_")
    with no_warnings():
        gmm.predict(X)


def test_refit_without_names_forgets_them(X: np.ndarray) -> None:
    gmm = fit(pd.DataFrame(X, columns=NAMES))
    assert hasattr(gmm, "feature_names_in_")
    gmm.fit(X)
    assert not hasattr(gmm, "feature_names_in_")
    with no_warnings():
        gmm.predict(X)


# -- feature_names: metadata only ---------------------------------------------------------


def test_feature_names_follow_the_columns_opened(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet_dir(tmp_path / "pq", X)
    assert feature_names(path, columns=["age", "height"]).tolist() == ["age", "height"]
    opened = open_dataset(path, columns=["weight", "age"], chunks=100)
    assert feature_names(opened).tolist() == ["weight", "age"]
    reopened = open_dataset(opened, chunks=200)
    assert feature_names(reopened).tolist() == ["weight", "age"], "re-chunked by reopening"
    assert feature_names(opened[:, ::-1]) is None, "a derived array is not the opened one"
    frame = pd.DataFrame(X, columns=NAMES)
    assert feature_names(frame, columns="age").tolist() == ["age"]
    assert feature_names(dd.from_pandas(frame, npartitions=2)).tolist() == NAMES


def test_a_text_column_is_refused_as_when_opening(X: np.ndarray, tmp_path: Path) -> None:
    path = write_parquet_dir(tmp_path / "pq", X)
    with pytest.raises(dgmm.errors.InvalidDtypeError, match="id"):
        feature_names(path)
    with pytest.raises(dgmm.errors.InvalidSourceError, match="nope"):
        feature_names(path, columns=["nope"])
    with pytest.raises(dgmm.errors.InvalidDtypeError, match="id"):
        fit(path)


def test_feature_names_read_no_data(X: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    write_parquet(path, X)
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    raw[4 : len(raw) - footer] = b"\xff" * (len(raw) - footer - 4)  # every data page garbage
    path.write_bytes(bytes(raw))
    assert feature_names(path).tolist() == NAMES
    with pytest.raises(Exception):  # noqa: B017 - whichever error pyarrow gives for garbage pages
        pq.read_table(path)

    def unreadable(i: int) -> pd.DataFrame:
        raise AssertionError("a partition was computed")

    lazy = dd.from_map(unreadable, [0, 1], meta=pd.DataFrame(columns=NAMES, dtype=float))
    assert feature_names(lazy).tolist() == NAMES


# -- saved and converted models keep them --------------------------------------------------


def test_names_from_parquet_survive_save_load_and_scikit_learn(X: np.ndarray, tmp_path: Path) -> None:
    gmm = fit(open_dataset(write_parquet_dir(tmp_path / "pq", X), columns=NAMES))
    gmm.save(tmp_path / "model")
    loaded = dgmm.load(tmp_path / "model")
    frame = pd.DataFrame(X, columns=NAMES)
    for model in (loaded, gmm.to_sklearn(), GaussianMixture.from_sklearn(gmm.to_sklearn())):
        assert model.feature_names_in_.dtype == object
        assert model.feature_names_in_.tolist() == NAMES
        with no_warnings():
            np.testing.assert_array_equal(model.predict(frame), gmm.predict(frame))
        with pytest.raises(ValueError, match="same order"):
            model.predict(frame[NAMES[::-1]])


# -- the command line -------------------------------------------------------------------------


def test_cli_fit_and_info_show_the_names(X: np.ndarray, tmp_path: Path) -> None:
    write_parquet_dir(tmp_path / "pq", X)
    result = invoke("fit", "pq", "-k", 2, "--columns", "age,height", "-o", "model", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["feature_names"] == ["age", "height"]
    info = invoke("info", "model", "--json", cwd=tmp_path)
    assert json.loads(info.stdout)["feature_names"] == ["age", "height"]
    assert "['age', 'height']" in invoke("info", "model", cwd=tmp_path).stdout

    np.save(tmp_path / "x.npy", X)
    assert invoke("fit", "x.npy", "-k", 2, "-o", "unnamed", "--json", cwd=tmp_path).exit_code == 0
    assert json.loads(invoke("info", "unnamed", "--json", cwd=tmp_path).stdout)["feature_names"] is None


def test_cli_predict_refuses_other_columns(X: np.ndarray, tmp_path: Path) -> None:
    write_parquet_dir(tmp_path / "pq", X)
    assert invoke("fit", "pq", "-k", 2, "--columns", "age,height", "-o", "model", cwd=tmp_path).exit_code == 0
    ok = invoke("predict", "model", "pq", "--columns", "age,height", "-o", "ok.zarr", cwd=tmp_path)
    assert ok.exit_code == 0, ok.stderr
    bad = invoke("predict", "model", "pq", "--columns", "height,age", "-o", "bad.zarr", cwd=tmp_path)
    assert bad.exit_code == 1
    assert "same order" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.zarr").exists()
