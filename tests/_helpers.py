"""Helpers shared by the test modules (test modules never import each other).

Seeded data with known parameters, random parameters of every covariance
type, a Dask array that counts its reads, scikit-learn's own initial
parameters for the oracle tests, the CLI in-process.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pytest
from click.testing import CliRunner
from fsspec.implementations.local import LocalFileSystem
from sklearn.exceptions import ConvergenceWarning
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture as SKGaussianMixture
from sklearn.naive_bayes import MultinomialNB

from dgmm.cli import cli
from dgmm.core import multinomial as mn
from dgmm.core.params import GMMParams
from dgmm.core.suffstats import SuffStats

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@dataclass(frozen=True)
class Mixture:
    """Generated data with the parameters that generated it."""

    X: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray  # (K, D, D) full matrices


def make_mixture(
    rng: np.random.Generator,
    n_samples: int = 3000,
    n_features: int = 3,
    n_components: int = 3,
    separation: float = 6.0,
    offset: float = 0.0,
    dtype: type = np.float64,
) -> Mixture:
    """Well-separated Gaussian clusters with random full covariances."""
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(0.0, separation, size=(n_components, n_features)) + offset
    covariances = []
    for _ in range(n_components):
        a = rng.normal(size=(n_features, n_features)) * 0.5
        covariances.append(a @ a.T + 0.5 * np.eye(n_features))
    covariances = np.asarray(covariances)
    labels = rng.choice(n_components, size=n_samples, p=weights)
    X = np.empty((n_samples, n_features))
    for k in range(n_components):
        idx = labels == k
        X[idx] = rng.multivariate_normal(means[k], covariances[k], size=idx.sum())
    return Mixture(X.astype(dtype), labels, weights, means, covariances)


def dense_covariance(covariances: np.ndarray, covariance_type: str, k: int, n_features: int) -> np.ndarray:
    """Component k's covariance as a full (D, D) matrix, for any covariance type."""
    return {
        "full": lambda: covariances[k],
        "tied": lambda: covariances,
        "diag": lambda: np.diag(covariances[k]),
        "spherical": lambda: covariances[k] * np.eye(n_features),
    }[covariance_type]()


def random_params(rng, covariance_type, n_components=3, n_features=4, offset=0.0) -> GMMParams:
    weights = rng.dirichlet(np.ones(n_components))
    means = rng.normal(0, 3, (n_components, n_features)) + offset
    if covariance_type == "full":
        a = rng.normal(size=(n_components, n_features, n_features))
        cov = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(n_features)
    elif covariance_type == "tied":
        a = rng.normal(size=(n_features, n_features))
        cov = a @ a.T + 0.5 * np.eye(n_features)
    elif covariance_type == "diag":
        cov = rng.uniform(0.3, 3.0, (n_components, n_features))
    else:
        cov = rng.uniform(0.3, 3.0, n_components)
    return GMMParams.from_covariances(weights, means, cov, covariance_type)


def assert_stats_close(a: SuffStats, b: SuffStats, rtol: float = 1e-10) -> None:
    for name in ("nk", "sum_x", "sum_xx"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(1.0, np.abs(y).max()), err_msg=name)
    assert a.loglik == pytest.approx(b.loglik, rel=rtol)
    assert a.weight == pytest.approx(b.weight, rel=rtol)
    assert a.n_rows == b.n_rows


def initial_params(X, n_components, covariance_type, seed=0):
    """Starting parameters from scikit-learn's own k-means initialisation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SKGaussianMixture(
            n_components, covariance_type=covariance_type, max_iter=0, random_state=seed,
            reg_covar=1e-4,
        ).fit(X)
    return {"weights_init": sk.weights_ / sk.weights_.sum(), "means_init": sk.means_, "precisions_init": sk.precisions_}


# -- mixtures of multinomials ---------------------------------------------------------------


def zipf_topics(rng: np.random.Generator, n_components: int, n_features: int, s: float = 1.1) -> np.ndarray:
    """(K, V) word distributions: Zipf frequencies over a different random order of the words per topic."""
    base = 1.0 / np.arange(1, n_features + 1) ** s
    base /= base.sum()
    return np.stack([base[rng.permutation(n_features)] for _ in range(n_components)])


def reference_step(x_dense, params, alpha, sample_weight=None):
    """One EM step of a mixture of multinomials written from scikit-learn: a dense E-step, and
    the M-step of ``MultinomialNB`` fitted on the rows repeated once per component with
    ``sample_weight`` = responsibilities (times the rows' weights)."""
    wlp = np.log(params.weights) + x_dense @ params.feature_log_prob.T
    resp = np.exp(wlp - logsumexp(wlp, axis=1, keepdims=True))
    n, k = resp.shape
    weight = resp if sample_weight is None else resp * sample_weight[:, None]
    nb = MultinomialNB(alpha=alpha).fit(np.repeat(x_dense, k, axis=0), np.tile(np.arange(k), n), sample_weight=weight.ravel())
    return mn.MultinomialParams(np.exp(nb.class_log_prior_), nb.feature_log_prob_)


# Shared with the in-process workers (threads of this process); the graph
# itself only carries the counter's name.
_READS: dict[str, Counter[int]] = {}
_LOCK = threading.Lock()


def _counted_read(block: Any, name: str, block_info=None) -> Any:
    with _LOCK:
        _READS[name][block_info[0]["chunk-location"][0]] += 1
    return block


class ReadCounter:
    """A Dask array over numpy data that counts every chunk it hands out."""

    def __init__(self, X: np.ndarray | da.Array, rows: int | None = None):
        """``X`` in chunks of ``rows`` rows, or a Dask array (sparse chunks too) as chunked."""
        self.name = f"reads-{id(self)}-{len(_READS)}"
        _READS[self.name] = Counter()
        source = X if isinstance(X, da.Array) else da.from_array(X, chunks=(rows, -1))
        self.array = da.map_blocks(_counted_read, source, self.name, dtype=X.dtype, meta=source._meta)

    @property
    def counts(self) -> Counter[int]:
        return _READS[self.name]

    @property
    def n_chunks(self) -> int:
        return len(self.array.chunks[0])


def fit_quietly(gmm, X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm.fit(X, **kwargs)


def blobs_and_duplicates(seed: int = 0) -> np.ndarray:
    """Two Gaussian blobs and 20 copies of one far point: a component there collapses."""
    rng = np.random.default_rng(seed)
    return np.vstack(
        [rng.normal(0, 1, (200, 2)), rng.normal(8, 1, (200, 2)), np.tile([[30.0, 30.0]], (20, 1))]
    )


def invoke(*args: object, cwd: Path) -> object:
    """The CLI in-process (same group, same error handling), in ``cwd``."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], prog_name="dgmm")
    finally:
        os.chdir(old)


# -- a filesystem that counts its metadata requests ----------------------------------------

FS_CALLS: list[tuple[str, str, bool]] = []  # (method, path, on the main thread); module-level:
_FS_DEPTH = threading.local()  # the filesystem is copied to the (in-process) workers
ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def _counted(name: str) -> Any:
    base = getattr(LocalFileSystem, name)

    def method(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_FS_DEPTH, "depth", 0)
        if depth == 0:  # exists() calls info(): one request, counted once
            where = self._strip_protocol(path) if isinstance(path, str) else str(path)
            FS_CALLS.append((name, where, threading.current_thread() is threading.main_thread()))
        _FS_DEPTH.depth = depth + 1
        try:
            return base(self, path, *args, **kwargs)
        finally:
            _FS_DEPTH.depth = depth

    return method


class CountingFileSystem(LocalFileSystem):
    """Local files under the ``dgmmmeta://`` protocol, every request recorded in ``FS_CALLS``."""

    protocol = "dgmmmeta"


for _name in ("info", "ls", "exists", "isdir", "isfile", "find", "glob", "cat_file", "open"):
    setattr(CountingFileSystem, _name, _counted(_name))


def counting_url(path: Path | str) -> str:
    """``path`` as a ``dgmmmeta://`` URL (the protocol registered on first use)."""
    fsspec.register_implementation("dgmmmeta", CountingFileSystem, clobber=True)
    return f"dgmmmeta://{path}"


def metadata_requests(calls: list[tuple[str, str, bool]] | None = None) -> list[tuple[str, str]]:
    """The requests of ``calls`` (default FS_CALLS) that are not reads of Zarr chunks or Parquet data.

    Listings, ``info``/``exists``, reads of Zarr metadata files and opens of
    Parquet files from the main thread (footers); tasks on the workers' threads
    reading their own chunks are data.
    """
    out = []
    for name, path, main in FS_CALLS if calls is None else calls:
        if name in ("cat_file", "open"):
            if path.endswith(ZARR_METADATA) or (main and not _is_zarr_chunk(path)):
                out.append((name, path))
        else:
            out.append((name, path))
    return out


def _is_zarr_chunk(path: str) -> bool:
    return "/c/" in path or os.path.basename(path).replace(".", "").isdigit()
