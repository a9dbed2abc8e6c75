"""Model selection in shared passes: every (n_components, covariance_type) candidate of a sweep at once.

A sweep is one lockstep EM run (:func:`dgmm.fit.loop.run_em`) whose restarts
are the candidates' restarts (``n_init`` each): every pass over the data
computes the statistics of every live candidate, and a candidate leaves when
it converges, so the sweep reads the data about as many times as its slowest
candidate needs alone (plus the initialisation's passes). Each restart
carries its candidate's ``EMConfig`` (covariance type, ``reg_covar``,
``on_degenerate``), and starts from the parameters and RNG a separate
``GaussianMixture(...).fit`` with the same options would use, so every
candidate's fit equals that separate fit.

The information criteria need no extra read: the loop's lower bound of a
candidate's last iteration is the mean log-likelihood of the parameters that
entered that pass (scikit-learn's ``lower_bound_``), and
``BIC = -2 N lower_bound + n_parameters log N``. For a converged candidate it
differs from the final parameters' log-likelihood by less than about ``tol``
per row (EM does not decrease it), the same for every candidate.

``criterion="validation"`` holds out a fraction of the row chunks: the
candidates are fitted on the others, and after each pass the held-out
chunks get one E-step of every candidate that changed in that pass
(their statistics are not merged into the fit), so each chunk is still read
once per iteration, and every candidate's final parameters are scored.

``prune=True`` stops candidates that cannot win (see :func:`prune_rule`).
A failing candidate (fewer rows than components, a degenerate component
with ``on_degenerate="raise"``, a bad rank) becomes an error row, never a
failed sweep.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dask.array as da
import numpy as np
import scipy.sparse as sp

from dgmm import graph as _graph
from dgmm.core.family import MixtureParams, family_of, information_criteria
from dgmm.errors import DgmmError, InvalidDataError, InvalidOptionError
from dgmm.fit import init_lowrank
from dgmm.fit.cluster import WorkerWatch, connect, maybe_persist, redo_while_recoverable
from dgmm.fit.data import open_for_fit, require_dense, scatter_to
from dgmm.fit.init import InitConfig, InitRequest
from dgmm.fit.loop import (
    LoopCheckpoint,
    RestartState,
    best_restart,
    chain_iterations,
    run_em,
    stop_on_interrupt,
)
from dgmm.fit.progress import FitProgress, phase
from dgmm.fit.spec import FitResult, FitSpec, RestartSummary
from dgmm.io.checkpoint import Checkpoint, content_digest, data_fingerprint
from dgmm.io.sources import as_float_array, as_sample_weight, is_in_memory

__all__ = ["CRITERIA", "CandidateResult", "Criterion", "SweepResult", "prune_rule", "sweep"]

logger = logging.getLogger("dgmm")

#: How the best candidate is chosen: lowest BIC, lowest AIC, or highest held-out mean log-likelihood.
Criterion = Literal["bic", "aic", "validation"]
CRITERIA: tuple[str, ...] = ("bic", "aic", "validation")
#: How a candidate ended.
Status = Literal["converged", "max_iter", "failed", "pruned"]


@dataclass(frozen=True)
class CandidateResult:
    """One candidate of a sweep: its fit (``result``, None when it failed) and its scores.

    ``bic`` and ``aic`` are lower-is-better, from the last pass's mean
    log-likelihood ``lower_bound`` on the fitted rows; ``validation`` is the
    held-out mean log-likelihood of the final parameters (``criterion=
    "validation"`` only). ``seconds`` is the wall time of the passes the
    candidate took part in (shared with the others). ``error`` says why a
    ``"failed"`` or ``"pruned"`` candidate has no result.
    """

    n_components: int
    covariance_type: str
    status: Status
    bic: float = math.nan
    aic: float = math.nan
    validation: float = math.nan
    lower_bound: float = math.nan
    n_parameters: int = 0
    n_iter: int = 0
    converged: bool = False
    seconds: float = 0.0
    error: str | None = None
    result: FitResult | None = field(default=None, repr=False, compare=False)

    def score(self, criterion: Criterion) -> float:
        """The candidate's criterion as lower-is-better (NaN without a result)."""
        if self.result is None:
            return math.nan
        return -self.validation if criterion == "validation" else getattr(self, criterion)

    def row(self) -> dict[str, Any]:
        """The table row (everything but ``result``)."""
        return {
            "n_components": self.n_components, "covariance_type": self.covariance_type,
            "bic": self.bic, "aic": self.aic, "validation": self.validation,
            "lower_bound": self.lower_bound, "n_parameters": self.n_parameters,
            "n_iter": self.n_iter, "converged": self.converged, "seconds": self.seconds,
            "status": self.status, "error": self.error,
        }


@dataclass(frozen=True)
class SweepResult:
    """Every candidate's result in the order asked, and what the sweep cost."""

    candidates: tuple[CandidateResult, ...]
    criterion: Criterion
    n_samples: int
    n_validation: int
    iterations: int
    validation_chunks: tuple[int, ...] = ()

    @property
    def best_index(self) -> int | None:
        """Index of the best candidate by ``criterion`` (the first among ties), None if all failed."""
        scores = [c.score(self.criterion) for c in self.candidates]
        finite = [i for i, s in enumerate(scores) if not math.isnan(s)]
        return min(finite, key=lambda i: scores[i]) if finite else None


def _initialize_many(
    x: da.Array, requests: Sequence[InitRequest], *, sample_weight: da.Array | None = None
) -> list[list[MixtureParams]]:
    """Starting parameters of every request (``n_init`` each), all sharing the same passes.

    :func:`dgmm.fit.init_lowrank.initialize_many`: one sample pass for every
    candidate, one statistics pass for the Gaussian ones and the low-rank ones'
    "diag" starts, one EM pass for the low-rank "split" ones (those that happen).
    """
    return [list(starts) for starts in init_lowrank.initialize_many(x, requests, sample_weight=sample_weight)]


def prune_rule(
    lower_bounds: Sequence[float], n_parameters: int, n_samples: float, best: float, max_iter: int,
    criterion: Criterion,
) -> bool:
    """Whether a live candidate with this lower-bound history cannot beat ``best`` any more.

    The rule assumes that EM's changes of the mean log-likelihood do not grow
    again: the candidate's optimistic final mean log-likelihood is its
    current one plus the largest of its last three changes for every
    iteration it has left (``max_iter`` minus those done). EM usually
    converges linearly, its changes shrinking geometrically, so the real gain
    is a small fraction of that. The candidate is dropped when its criterion
    at that optimistic value is still above ``best``, the lowest current
    criterion of any other candidate (which EM only lowers further). Never
    before five iterations, nor while a change is not positive (a re-seed).
    """
    if len(lower_bounds) < 5 or not math.isfinite(best):
        return False
    changes = np.diff(np.asarray(lower_bounds[-4:], dtype=np.float64))
    if not np.all(changes > 0.0):
        return False
    gain = float(changes.max()) * max(max_iter - len(lower_bounds), 0)
    optimistic = _criteria(lower_bounds[-1] + gain, n_parameters, n_samples)[0 if criterion == "bic" else 1]
    return optimistic > best


def _criteria(lower_bound: float, n_parameters: int, n_samples: float) -> tuple[float, float]:
    """``(bic, aic)`` from the mean log-likelihood over ``n_samples`` (weighted) rows."""
    return information_criteria(lower_bound * n_samples, n_parameters, n_samples)  # type: ignore[arg-type]


def _precheck(spec: FitSpec, n_rows: int, n_features: int) -> tuple[str | None, dict[str, Any]]:
    """``(error, initial arrays)``: why the candidate cannot be fitted on these rows, or None."""
    if n_rows < spec.n_components:
        return (
            f"InvalidDataError: Expected n_samples >= n_components but got n_components = "
            f"{spec.n_components}, n_samples = {n_rows}. Use fewer components or more data."
        ), {}
    try:
        return None, spec.init_arrays(n_features)
    except DgmmError as exc:
        return f"{type(exc).__name__}: {exc}", {}


def _validation_split(n_chunks: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` chunk indices: ``round(fraction * n_chunks)`` chunks (at least 1) held out."""
    n_val = min(max(1, round(fraction * n_chunks)), n_chunks - 1)
    if n_chunks < 2 or n_val < 1:
        raise InvalidDataError(
            f"criterion='validation' holds out whole row chunks, so it needs at least 2 chunks; "
            f"the data has {n_chunks}. Pass a smaller chunks= (rows per chunk), or criterion='bic'."
        )
    val = np.sort(np.random.default_rng([seed, 11]).choice(n_chunks, n_val, replace=False))
    return np.setdiff1d(np.arange(n_chunks), val), val


def _blocks(x: da.Array | None, index: np.ndarray) -> da.Array | None:
    """The row chunks ``index`` of ``x`` (None stays None)."""
    return None if x is None else x.blocks[index.tolist()]


def sweep(
    specs: Sequence[FitSpec],
    X: Any,
    sample_weight: Any = None,
    *,
    criterion: Criterion = "bic",
    validation_fraction: float = 0.2,
    prune: bool = False,
    checkpoint: Any = None,
    checkpoint_storage_options: dict[str, Any] | None = None,
    on_iteration: Callable[[int, list[RestartState]], None] | None = None,
) -> SweepResult:
    """Fit every candidate ``specs`` describes to ``X`` in shared passes.

    Parameters
    ----------
    specs : sequence of FitSpec
        One per candidate, as ``GaussianMixture(...).fit_spec()`` builds them;
        the first one's cluster, chunking and loop settings serve the sweep
        (``max_iter``, ``split_every``, ``block_size`` are the largest / the first's).
    X : array-like, dask.array.Array, DataFrame, path or URL of shape (n_samples, n_features)
    sample_weight : array-like of shape (n_samples,), default=None
    criterion : {"bic", "aic", "validation"}, default="bic"
    validation_fraction : float, default=0.2
        Fraction of the row chunks held out with ``criterion="validation"``.
    prune : bool, default=False
        Stop candidates that cannot beat the best any more (:func:`prune_rule`).
    checkpoint : str or path-like, default=None
        Directory or URL of a checkpoint written after every pass; an existing
        one of the same sweep is resumed (bit-identically).
    checkpoint_storage_options : dict, default=None
    on_iteration : callable, default=None
        ``on_iteration(iteration, restarts)`` after every pass (progress).

    Returns
    -------
    result : SweepResult
    """
    if criterion not in CRITERIA:
        raise InvalidOptionError(f"criterion must be one of {list(CRITERIA)}; got {criterion!r}. Pass one of those.")
    if not specs:
        raise InvalidOptionError("A sweep needs at least one candidate; got none. Pass n_components and covariance_type.")
    if prune and criterion == "validation":
        raise InvalidOptionError(
            "prune=True bounds the BIC or AIC a candidate can still reach; it has no rule for "
            "criterion='validation'. Pass criterion='bic' or 'aic', or prune=False."
        )
    if criterion == "validation" and not 0.0 < validation_fraction < 1.0:
        raise InvalidOptionError(
            f"validation_fraction must be in (0, 1); got {validation_fraction!r}. Pass e.g. 0.2."
        )
    first = specs[0]
    # What a fit shows (a bar or a line per pass with verbose, INFO lines, on_progress):
    # the sweep's phases and passes, whatever its number of candidates.
    progress = FitProgress(first.verbose, first.verbose_interval, first.on_progress)
    with progress, connect(
        client=first.client, scheduler_address=first.scheduler_address, scheduler=first.scheduler, data=X,
    ) as client:
        watch = WorkerWatch(client)

        def attempt() -> tuple[SweepResult, np.ndarray | None]:
            with phase("opening data"):
                data = open_for_fit(X, chunks=first.chunks, client=client)
                x = data.array
                require_dense(x)
                weight = as_sample_weight(sample_weight, x, scatter=scatter_to(client))
                if not data.in_memory:
                    x = maybe_persist(x, client)
            run = _Sweep(specs, x, weight, criterion, validation_fraction, prune)
            if checkpoint is not None:
                run.open_checkpoint(X, sample_weight, checkpoint, checkpoint_storage_options)
            return run.run(on_iteration=chain_iterations(progress.on_iteration, on_iteration, watch)), data.feature_names

        out, names = redo_while_recoverable(client, watch, attempt)
    return replace(out, candidates=tuple(_with_names(c, names) for c in out.candidates))


def _with_names(c: CandidateResult, names: np.ndarray | None) -> CandidateResult:
    if c.result is None or names is None:
        return c
    return replace(c, result=replace(c.result, feature_names_in=names))


class _Sweep:
    """One attempt of a sweep on opened data: start or resume, run the lockstep loop, score."""

    def __init__(
        self, specs: Sequence[FitSpec], x: da.Array, weight: da.Array | None,
        criterion: Criterion, validation_fraction: float, prune: bool,
    ) -> None:
        self.specs = list(specs)
        self.criterion = criterion
        self.prune = prune
        self.validation_fraction = validation_fraction
        self.n_init = max(s.n_init for s in specs)
        self.x_val = self.w_val = None
        self.validation_chunks: tuple[int, ...] = ()
        if criterion == "validation":
            train, val = _validation_split(len(x.chunks[0]), validation_fraction, specs[0].seed)
            self.validation_chunks = tuple(int(i) for i in val)
            self.x_val, self.w_val = _blocks(x, val), _blocks(weight, val)
            x, weight = _blocks(x, train), _blocks(weight, train)
        self.x, self.weight = x, weight
        self.n_rows = int(x.shape[0])
        self.n_samples = float(self.n_rows if weight is None else weight.sum(dtype=np.float64).compute())
        self.loop: LoopCheckpoint | None = None
        self.errors: dict[int, str] = {}
        self.config = replace(
            specs[0].em_config, max_iter=max(s.max_iter for s in specs), tol=min(s.tol for s in specs)
        )

    # -- checkpoints ----------------------------------------------------------

    def open_checkpoint(
        self, X: Any, sample_weight: Any, url: Any, storage_options: dict[str, Any] | None
    ) -> None:
        """Attach the sweep's checkpoint (fingerprinted by data, candidates and criterion)."""
        x_digest = content_digest(as_float_array(X)) if is_in_memory(X) and not sp.issparse(X) else None
        w_digest = None
        if sample_weight is not None and not isinstance(sample_weight, da.Array):
            w_digest = content_digest(np.asarray(sample_weight, dtype=np.float64))
        fingerprint = {
            "data": {
                "X": data_fingerprint(self.x, x_digest),
                "sample_weight": None if self.weight is None else data_fingerprint(self.weight, w_digest),
            },
            "config": {
                "sweep": [
                    {
                        "n_components": s.n_components, "covariance_type": s.covariance_type,
                        "tol": s.tol, "reg_covar": s.reg_covar, "n_init": s.n_init,
                        "init_params": s.init_params, "random_state": s.random_state,
                        "on_degenerate": s.on_degenerate, "split_every": s.split_every,
                        "block_size": s.block_size, "rank": s.rank, "noise_type": s.noise_type,
                    }
                    for s in self.specs
                ],
                "criterion": self.criterion,
                "validation_fraction": self.validation_fraction if self.criterion == "validation" else None,
                "prune": self.prune,
            },
        }
        store = Checkpoint(url, storage_options=storage_options)
        self.loop = LoopCheckpoint(store, fingerprint, self.specs[0].seed, {"max_iter": self.config.max_iter})

    def _save(self, iteration: int, restarts: list[RestartState]) -> None:
        if self.loop is not None:
            # Candidates that failed before their first pass have no restart to carry it.
            self.loop.info = {**self.loop.info, "errors": {str(k): v for k, v in self.errors.items()}}
            self.loop.save(iteration, restarts)

    # -- the run ------------------------------------------------------------------

    def _start(self) -> list[RestartState]:
        """Pre-checks, then every candidate's restarts (index: candidate * n_init + restart)."""
        n_features = int(self.x.shape[1])
        requests, owners = [], []
        for c, spec in enumerate(self.specs):
            if spec.max_iter > 0 and self.n_rows < 2:
                self.errors[c] = (
                    f"InvalidDataError: Found array with {self.n_rows} sample(s) while a minimum of 2 "
                    "is required to fit a mixture. Pass more rows."
                )
                continue
            error, arrays = _precheck(spec, self.n_rows, n_features)
            if error is not None:
                self.errors[c] = error
                continue
            requests.append(InitRequest(InitConfig.from_spec(spec), spec.em_config, spec.n_init, arrays))
            owners.append(c)
        starts = self._initialize(requests, owners)
        restarts = []
        for c, params in zip(owners, starts):
            if params is None:
                continue
            spec = self.specs[c]
            restarts.extend(
                RestartState(
                    c * self.n_init + i, p, np.random.default_rng([spec.seed, i, 1]), config=spec.em_config
                )
                for i, p in enumerate(params)
            )
        return restarts

    def _initialize(self, requests: list[InitRequest], owners: list[int]) -> list[list[MixtureParams] | None]:
        """All requests at once; when that raises, one by one so that only the failing candidates fail."""
        if not requests:
            return []
        try:
            return list(_initialize_many(self.x, requests, sample_weight=self.weight))
        except DgmmError:
            pass
        out: list[list[MixtureParams] | None] = []
        for c, r in zip(owners, requests):
            try:
                out.append(_initialize_many(self.x, [r], sample_weight=self.weight)[0])
            except DgmmError as exc:
                self.errors[c] = f"{type(exc).__name__}: {exc}"
                out.append(None)
        return out

    def run(self, on_iteration: Callable[[int, list[RestartState]], None] | None) -> SweepResult:
        """Start (or resume) and run the lockstep loop; the scored candidates."""
        loop, resumed = self.loop, None
        try:
            if loop is not None:
                loop.store.acquire()
                resumed = loop.load(self.config.max_iter)
            with stop_on_interrupt(loop is not None) as interrupt:
                if resumed is not None:
                    start, restarts = resumed
                    state = loop.store.read()
                    self.errors = {int(k): v for k, v in (state.info.get("errors") or {}).items()}
                    for r in restarts:
                        r.config = self.specs[r.index // self.n_init].em_config
                else:
                    start, restarts = 0, self._start()
                    if loop is not None:
                        self._save(0, restarts)
                        interrupt.check(0, loop.url)
                if restarts:
                    run_em(
                        self.x, restarts, self.config, sample_weight=self.weight,
                        on_iteration=on_iteration,
                        start_iteration=start,
                        on_checkpoint=self._after_pass,
                        interrupt=interrupt,
                        checkpoint_url="" if loop is None else loop.url,
                        isolate_errors=True,
                    )
        finally:
            if loop is not None:
                loop.store.close()
        return self._results(restarts)

    def _after_pass(self, iteration: int, restarts: list[RestartState]) -> None:
        """After a pass's M-steps: failures spread to the candidate, validation scores, pruning, checkpoint."""
        by_candidate = self._by_candidate(restarts)
        for rs in by_candidate.values():
            failed = next((r for r in rs if r.error is not None), None)
            for r in rs:
                if failed is not None and r.error is None:
                    # A separate fit raises on its first failing restart: the candidate fails.
                    r.error = failed.error
        if self.x_val is not None:
            self._validate(iteration, restarts)
        if self.prune:
            self._prune(by_candidate)
        self._save(iteration, restarts)

    def _by_candidate(self, restarts: list[RestartState]) -> dict[int, list[RestartState]]:
        out: dict[int, list[RestartState]] = {}
        for r in restarts:
            out.setdefault(r.index // self.n_init, []).append(r)
        return out

    def _validate(self, iteration: int, restarts: list[RestartState]) -> None:
        """Held-out mean log-likelihood of the parameters this pass's M-steps gave (one read of the held-out chunks)."""
        changed = [r for r in restarts if r.n_iter == iteration and r.error is None]
        if not changed:
            return
        # The held-out chunks' statistics are computed and dropped: only the
        # log-likelihood is used, and only these chunks are read.
        stats = _graph.stats_pass(
            self.x_val, tuple(family_of(r.params).e_step(r.params) for r in changed), self.w_val,
            split_every=self.config.split_every, block_rows=self.config.block_rows,
            check_finite=iteration == 1,
        )
        for r, s in zip(changed, stats):
            r.history[-1]["validation"] = float(s.mean_loglik)

    def _prune(self, by_candidate: dict[int, list[RestartState]]) -> None:
        """Stop every candidate that cannot reach the best current criterion (:func:`prune_rule`)."""
        which = 0 if self.criterion == "bic" else 1
        current: dict[int, float] = {}
        for c, rs in by_candidate.items():
            ok = [r for r in rs if r.error is None and r.lower_bounds]
            if ok and len(ok) == len(rs):
                n_par = family_of(ok[0].params).n_parameters(ok[0].params)
                current[c] = _criteria(max(r.lower_bound for r in ok), n_par, self.n_samples)[which]
        for c, rs in by_candidate.items():
            if c not in current or all(r.converged for r in rs):
                continue
            best = min((v for o, v in current.items() if o != c), default=math.inf)
            n_par = family_of(rs[0].params).n_parameters(rs[0].params)
            finished = max((r.lower_bound for r in rs if r.converged), default=-math.inf)
            live = [r for r in rs if not r.converged]
            if _criteria(finished, n_par, self.n_samples)[which] <= best:
                continue
            if all(
                prune_rule(r.lower_bounds, n_par, self.n_samples, best, self.config.max_iter, self.criterion)
                for r in live
            ):
                for r in rs:
                    r.error = (
                        f"pruned after {r.n_iter} iterations: its {self.criterion.upper()} cannot "
                        f"beat {best:.6g} (rule: dgmm.fit.select.prune_rule)"
                    )

    def _results(self, restarts: list[RestartState]) -> SweepResult:
        by_candidate = self._by_candidate(restarts)
        out = []
        iterations = max((r.n_iter for r in restarts), default=0)
        for c, spec in enumerate(self.specs):
            head = {"n_components": spec.n_components, "covariance_type": str(spec.covariance_type)}
            rs = by_candidate.get(c)
            if rs is None:
                out.append(CandidateResult(**head, status="failed", error=self.errors.get(c, "not fitted")))
                continue
            error = next((r.error for r in rs if r.error is not None), None)
            seconds = float(sum(h["seconds"] for h in max(rs, key=lambda r: r.n_iter).history))
            n_iter = max(r.n_iter for r in rs)
            if error is not None:
                status: Status = "pruned" if error.startswith("pruned") else "failed"
                out.append(CandidateResult(**head, status=status, error=error, n_iter=n_iter, seconds=seconds))
                continue
            best = best_restart(rs)
            params = best.params
            n_par = family_of(params).n_parameters(params)
            bic, aic = _criteria(best.lower_bound, n_par, self.n_samples)
            validation = best.history[-1].get("validation", math.nan) if best.history else math.nan
            result = FitResult(
                params=params,
                converged=bool(best.converged),
                n_iter=int(best.n_iter),
                lower_bound=float(best.lower_bound),
                lower_bounds=tuple(best.lower_bounds),
                history=tuple(best.history),
                n_features_in=int(self.x.shape[1]),
                restarts=tuple(
                    RestartSummary(r.index % self.n_init, float(r.lower_bound), bool(r.converged), int(r.n_iter))
                    for r in rs
                ),
                convergence_warning=None,
                dtype=str(self.x.dtype),
            )
            out.append(CandidateResult(
                **head,
                status="converged" if best.converged or spec.max_iter == 0 else "max_iter",
                bic=float(bic), aic=float(aic), validation=float(validation),
                lower_bound=float(best.lower_bound), n_parameters=int(n_par),
                n_iter=int(best.n_iter), converged=bool(best.converged), seconds=seconds, result=result,
            ))
        n_val = 0 if self.x_val is None else int(self.x_val.shape[0])
        return SweepResult(tuple(out), self.criterion, self.n_rows, n_val, iterations, self.validation_chunks)
