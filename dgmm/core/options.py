"""The string options of dgmm as ``Literal`` aliases, with their tuples of values.

One place for each set of choices: the estimator's parameter validation, the
CLI's ``click.Choice`` and the fit layer all read these.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "COVARIANCE_TYPE_NAMES",
    "DEGENERATE_POLICIES",
    "INIT_METHODS",
    "FIT_PHASES",
    "NOISE_TYPES",
    "PASS_EVENTS",
    "PREDICT_OUTPUTS",
    "CovarianceType",
    "DegeneratePolicy",
    "FitPhase",
    "InitMethod",
    "LOCAL_SCHEDULERS",
    "LocalScheduler",
    "NoiseType",
    "PassEvent",
    "PredictOutput",
]

#: The form of each component's covariance (see :mod:`dgmm.core.covariance`;
#: ``"lowrank"``, ``A_k A_k^T + Psi_k``, is :mod:`dgmm.core.lowrank`'s family).
CovarianceType = Literal["full", "tied", "diag", "spherical", "lowrank"]
#: The noise ``Psi_k`` of a low-rank covariance: per feature (mixture of factor
#: analysers) or one variance (mixture of probabilistic PCA).
NoiseType = Literal["diag", "spherical"]
#: How the starting parameters are found (see :mod:`dgmm.fit.init`).
InitMethod = Literal["kmeans", "k-means++", "random", "random_from_data", "split"]
#: What happens when a component collapses: re-seed it, or raise as scikit-learn.
DegeneratePolicy = Literal["reseed", "raise"]
#: Where a fit runs without a cluster, named as in ``dask.compute(scheduler=...)``
#: ("processes" starts a LocalCluster of worker processes).
LocalScheduler = Literal["threads", "synchronous", "processes"]
#: What a prediction writes: labels (as ``predict``), probabilities (as
#: ``predict_proba``), log-densities (as ``score_samples``).
PredictOutput = Literal["labels", "proba", "log_density"]
#: The phases of a fit that progress reports name (see :func:`dgmm.graph.phase`).
FitPhase = Literal["opening data", "initialisation", "EM iteration", "final pass"]
#: What a progress report says: a phase began, a pass advanced (or began, with
#: no chunk done), a pass ended (see :class:`dgmm.graph.PassProgress`).
PassEvent = Literal["phase", "pass", "end"]

COVARIANCE_TYPE_NAMES: tuple[CovarianceType, ...] = get_args(CovarianceType)
NOISE_TYPES: tuple[NoiseType, ...] = get_args(NoiseType)
INIT_METHODS: tuple[InitMethod, ...] = get_args(InitMethod)
DEGENERATE_POLICIES: tuple[DegeneratePolicy, ...] = get_args(DegeneratePolicy)
PREDICT_OUTPUTS: tuple[PredictOutput, ...] = get_args(PredictOutput)
LOCAL_SCHEDULERS: tuple[LocalScheduler, ...] = get_args(LocalScheduler)
FIT_PHASES: tuple[FitPhase, ...] = get_args(FitPhase)
PASS_EVENTS: tuple[PassEvent, ...] = get_args(PassEvent)
