"""Choosing the number of components and the covariance type: ``dgmm.select``.

Every candidate (n_components, covariance_type) is fitted in the same passes
over the data (:mod:`dgmm.fit.select`), so a sweep costs about as many reads
as its slowest candidate. (The module is not called ``select``: importing a
submodule ``dgmm.select`` would rebind the package attribute ``dgmm.select``,
the function, to the module.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from dgmm._estimator_io import estimator_from_model
from dgmm.core.options import COVARIANCE_TYPE_NAMES
from dgmm.errors import InvalidOptionError, ModelFormatError
from dgmm.estimator import GaussianMixture
from dgmm.fit import select as _select
from dgmm.fit.select import CRITERIA, CandidateResult, Criterion, SweepResult
from dgmm.fit.spec import PARAMETERS
from dgmm.io import persistence
from dgmm.io.codec import dumps, loads, to_jsonable

__all__ = ["SelectionResult", "select"]

# Options a sweep cannot share between candidates of different shapes, or sets itself.
_NOT_SWEPT = (
    "weights_init", "means_init", "precisions_init", "factors_init", "noise_variances_init", "warm_start",
)
# Where and how a sweep ran: not saved with its model.
_NOT_SAVED = ("client", "scheduler_address", "scheduler", "checkpoint", "checkpoint_storage_options")
_TABLE_FILE = "selection.json"
_COLUMNS = (
    "n_components", "covariance_type", "bic", "aic", "validation", "lower_bound", "n_parameters",
    "n_iter", "converged", "seconds", "status", "error",
)


def _components(n_components: int | Iterable[int]) -> list[int]:
    values = [n_components] if isinstance(n_components, Integral) else list(n_components)
    if not values or not all(isinstance(k, Integral) and not isinstance(k, bool) and k >= 1 for k in values):
        raise InvalidOptionError(
            f"n_components must be a positive int or an iterable of them (e.g. range(1, 11)); got "
            f"{n_components!r}. Pass e.g. n_components=range(1, 11)."
        )
    return sorted({int(k) for k in values})


def _types(covariance_type: str | Iterable[str]) -> list[str]:
    values = [covariance_type] if isinstance(covariance_type, str) else list(covariance_type)
    bad = [v for v in values if v not in COVARIANCE_TYPE_NAMES]
    if not values or bad:
        raise InvalidOptionError(
            f"covariance_type must be one or more of {list(COVARIANCE_TYPE_NAMES)}; got "
            f"{covariance_type!r}. Pass e.g. covariance_type=['full', 'diag']."
        )
    return list(dict.fromkeys(values))


def select(
    X: Any,
    n_components: int | Iterable[int] = range(1, 11),
    covariance_type: str | Iterable[str] = ("full",),
    *,
    criterion: Criterion = "bic",
    validation_fraction: float = 0.2,
    prune: bool = False,
    sample_weight: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_storage_options: dict[str, Any] | None = None,
    **params: Any,
) -> SelectionResult:
    """Fit every (n_components, covariance_type) candidate in shared passes and pick the best.

    Each pass over the data serves every live candidate (and its ``n_init``
    restarts); a candidate leaves when it converges. Each candidate's fit
    equals ``GaussianMixture(n_components=k, covariance_type=t, **params).fit(X)``
    with the same ``random_state``.

    Parameters
    ----------
    X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
        Any source :func:`dgmm.open_dataset` accepts.
    n_components : int or iterable of int, default=range(1, 11)
    covariance_type : str or iterable of str, default=("full",)
        Any of "full", "tied", "diag", "spherical", "lowrank".
    criterion : {"bic", "aic", "validation"}, default="bic"
        Lowest BIC or AIC on the fitted rows (from the last pass's mean
        log-likelihood, no extra read), or highest mean log-likelihood of
        the final parameters on held-out row chunks.
    validation_fraction : float, default=0.2
        With ``criterion="validation"``: the fraction of row chunks held out
        (at least one chunk); the candidates are fitted on the others.
    prune : bool, default=False
        Stop a candidate whose criterion, even with an optimistic bound on
        its remaining gain, cannot beat the best current one
        (:func:`dgmm.fit.select.prune_rule`); "bic" and "aic" only.
    sample_weight : array-like of shape (n_samples,), default=None
    checkpoint : str or path-like, default=None
        Written after every pass; an existing checkpoint of the same sweep is
        resumed and gives the same result as an uninterrupted sweep.
    checkpoint_storage_options : dict, default=None
    **params
        Any other :class:`dgmm.GaussianMixture` hyper-parameter shared by
        every candidate (``random_state``, ``tol``, ``max_iter``, ``n_init``,
        ``reg_covar``, ``init_params``, ``on_degenerate``, cluster options).
        A ``random_state`` that is not an int is drawn once into one.

    Returns
    -------
    selection : SelectionResult

    Examples
    --------
    >>> import numpy as np
    >>> import dgmm
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-4, 1, (300, 2)), rng.normal(4, 1, (300, 2))])
    >>> sel = dgmm.select(X, n_components=range(1, 4), covariance_type=["full", "diag"],
    ...                   random_state=0, scheduler="threads")
    >>> sel.best_params_
    {'n_components': 2, 'covariance_type': 'diag'}
    """
    if criterion not in CRITERIA:
        raise InvalidOptionError(f"criterion must be one of {list(CRITERIA)}; got {criterion!r}. Pass one of those.")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidOptionError(
            f"select got unknown option(s) {unknown}; it takes GaussianMixture's options "
            f"{sorted(set(PARAMETERS) - {'n_components', 'covariance_type'})}. Check the spelling."
        )
    fixed = [name for name in _NOT_SWEPT if params.get(name) is not None and params.get(name) is not False]
    if fixed or "checkpoint" in params:
        raise InvalidOptionError(
            f"select cannot pass {fixed or ['checkpoint']} to its candidates: initial arrays and "
            "warm starts have one shape per candidate, and the sweep has its own checkpoint. "
            "Leave them out (pass checkpoint= to select itself)."
        )
    random_state = params.get("random_state")
    if not isinstance(random_state, Integral):
        # One seed for every candidate: each then equals a separate fit with that int.
        random_state = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    shared = {**params, "random_state": random_state}
    grid = [(k, t) for t in _types(covariance_type) for k in _components(n_components)]
    specs = [GaussianMixture(n_components=k, covariance_type=t, **shared).fit_spec() for k, t in grid]
    sweep = _select.sweep(
        specs, X, sample_weight, criterion=criterion, validation_fraction=validation_fraction,
        prune=prune, checkpoint=checkpoint, checkpoint_storage_options=checkpoint_storage_options,
    )
    return SelectionResult(sweep, shared)


class SelectionResult:
    """What :func:`select` found: one row per candidate and the best model.

    Attributes
    ----------
    criterion : str
    candidates : tuple of CandidateResult
        In sweep order (covariance type, then n_components).
    best_index_ : int or None
        Position of the best candidate (None when every candidate failed).
    best_params_ : dict
        ``{"n_components": ..., "covariance_type": ...}`` of the best.
    best_estimator_ : GaussianMixture
        The best candidate, fitted (raises ``InvalidOptionError`` if all failed).
    results_ : pandas.DataFrame or list of dict
        One row per candidate: n_components, covariance_type, bic, aic,
        validation, lower_bound, n_parameters, n_iter, converged, seconds,
        status ("converged", "max_iter", "failed", "pruned") and error.
    """

    def __init__(
        self, sweep: SweepResult, params: Mapping[str, Any], best: GaussianMixture | None = None
    ) -> None:
        self.sweep = sweep
        self.criterion = sweep.criterion
        self.candidates = sweep.candidates
        self.params = dict(params)
        self.best_index_ = sweep.best_index
        self._best = best

    @property
    def best_params_(self) -> dict[str, Any]:
        c = self._best_candidate()
        return {"n_components": c.n_components, "covariance_type": c.covariance_type}

    def _best_candidate(self) -> CandidateResult:
        if self.best_index_ is None:
            errors = "; ".join(f"K={c.n_components} {c.covariance_type}: {c.error}" for c in self.candidates)
            raise InvalidOptionError(
                f"Every candidate of the sweep failed, so there is no best model ({errors}). "
                "Use fewer components, a larger reg_covar, or on_degenerate='reseed'."
            )
        return self.candidates[self.best_index_]

    @property
    def best_estimator_(self) -> GaussianMixture:
        if self._best is None:
            self._best = self.estimator(**self.best_params_)
        return self._best

    def estimator(self, n_components: int, covariance_type: str) -> GaussianMixture:
        """The fitted :class:`GaussianMixture` of one candidate of this sweep."""
        for c in self.candidates:
            if c.n_components == n_components and c.covariance_type == covariance_type:
                if c.result is None:
                    raise InvalidOptionError(
                        f"Candidate n_components={n_components}, covariance_type={covariance_type!r} "
                        f"has no fitted model ({c.status}: {c.error}); a loaded selection keeps only "
                        "the best. Pick a fitted candidate, or the best_estimator_."
                    )
                return GaussianMixture.from_result(c.result, **self.params)
        raise InvalidOptionError(
            f"No candidate n_components={n_components}, covariance_type={covariance_type!r} in this "
            f"sweep; it has {[(c.n_components, c.covariance_type) for c in self.candidates]}."
        )

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (one per candidate)."""
        return [c.row() for c in self.candidates]

    @property
    def results_(self) -> Any:
        try:
            import pandas as pd
        except ImportError:  # pandas is optional
            return self.rows
        return pd.DataFrame(self.rows, columns=list(_COLUMNS))

    def table(self) -> str:
        """The table as aligned text, the best marked with ``*``."""
        score = "validation" if self.criterion == "validation" else self.criterion
        head = f"  {'K':>4} {'covariance':<10} {score:>14} {'n_iter':>6} {'conv':>5} {'seconds':>8}  status"
        lines = [head]
        for i, c in enumerate(self.candidates):
            value = getattr(c, score)
            text = "" if math.isnan(value) else f"{value:.6g}"
            mark = "*" if i == self.best_index_ else " "
            status = c.status if c.error is None else f"{c.status}: {c.error.splitlines()[0][:90]}"
            if c.status == "pruned":
                status = str(c.error)
            lines.append(
                f"{mark} {c.n_components:>4} {c.covariance_type:<10} {text:>14} {c.n_iter:>6} "
                f"{str(c.converged):>5} {c.seconds:>8.2f}  {status}"
            )
        return "\n".join(lines)

    def plot(
        self, X_sample: Any = None, *, path: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Any:
        """The criterion against n_components, one line per covariance type, the best marked,
        beside the best model's components (see :func:`dgmm.plot.plot_selection`)."""
        from dgmm.plot import plot_selection

        return plot_selection(self, X_sample, path=path, storage_options=storage_options)

    # -- files --------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], *, overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """Write the best model as a model directory, with the table in ``selection.json``.

        ``dgmm.load(path)`` reads it as the best :class:`GaussianMixture`;
        :meth:`load` reads the whole selection. Written atomically.
        """
        best = self.best_estimator_
        hyper = {}
        for name, value in best.get_params(deep=False).items():
            if name not in _NOT_SAVED and "storage_options" not in name:
                try:
                    hyper[name] = to_jsonable(value)
                except TypeError:  # not data (a callable): not saved
                    continue
        fit = {
            "converged_": best.converged_, "n_iter_": best.n_iter_, "lower_bound_": best.lower_bound_,
            "lower_bounds_": best.lower_bounds_, "history_": best.history_, "n_features_in_": best.n_features_in_,
        }
        if hasattr(best, "feature_names_in_"):
            fit["feature_names_in_"] = [str(n) for n in best.feature_names_in_]
        table = {
            "criterion": self.criterion, "best_index": self.best_index_, "rows": self.rows,
            "params": {k: v for k, v in hyper.items() if k not in ("n_components", "covariance_type")},
            "n_samples": self.sweep.n_samples, "n_validation": self.sweep.n_validation,
            "iterations": self.sweep.iterations,
        }
        persistence.save_model(
            path, best.params_, {"estimator": "dgmm.GaussianMixture", "params": hyper, "fit": fit},
            extra_files={_TABLE_FILE: dumps(table)}, overwrite=overwrite, storage_options=storage_options,
            dtype=str(np.asarray(best.weights_).dtype),
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
    ) -> SelectionResult:
        """Read a selection written by :meth:`save` (the table and the best model)."""
        files = persistence.read_dir(path, storage_options=storage_options)
        if _TABLE_FILE not in files:
            raise ModelFormatError(
                f"{os.fspath(path)!r} is a dgmm model without a {_TABLE_FILE}: it was not written by "
                "SelectionResult.save. Load it with dgmm.load instead."
            )
        meta = persistence.read_meta(files, os.fspath(path))
        best = estimator_from_model(persistence.params_from_files(files, meta, source=os.fspath(path)), meta)
        table = loads(files[_TABLE_FILE])
        fields = set(CandidateResult.__dataclass_fields__) - {"result"}
        candidates = tuple(
            CandidateResult(**{k: v for k, v in row.items() if k in fields}) for row in table["rows"]
        )
        sweep = SweepResult(
            candidates, table["criterion"], int(table["n_samples"]), int(table["n_validation"]),
            int(table["iterations"]),
        )
        result = cls(sweep, table["params"], best)
        result.best_index_ = table["best_index"]
        return result
