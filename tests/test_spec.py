"""The parameter table, ``FitSpec`` and ``FitResult`` (dgmm.fit.spec).

The table is the one place defaults, ranges, choices and help live: the
estimator's signature and ``_parameter_constraints`` and the CLI's options
must all say what it says.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import click
import numpy as np
import pytest
from sklearn.utils._param_validation import Interval, StrOptions

from dgmm.cli import cli
from dgmm.core.options import COVARIANCE_TYPE_NAMES, DEGENERATE_POLICIES, INIT_METHODS, LOCAL_SCHEDULERS
from dgmm.errors import InvalidDataError, ShapeMismatchError
from dgmm.estimator import GaussianMixture
from dgmm.fit.init import InitConfig
from dgmm.fit.spec import DEFAULTS, PARAMETERS, EMConfig, FitSpec, WarmStart

from ._helpers import random_params

# CLI option name -> table name, per command.
CLI_NAMES = {
    "fit": {
        "n_components": "n_components", "covariance_type": "covariance_type", "rank": "rank",
        "noise_type": "noise_type", "max_iter": "max_iter",
        "tol": "tol", "init": "init_params", "n_init": "n_init", "seed": "random_state",
        "reg_covar": "reg_covar", "checkpoint": "checkpoint",
    },
    "demo": {"n_components": "n_components", "init": "init_params", "seed": "random_state"},
    "select": {
        "rank": "rank", "noise_type": "noise_type", "max_iter": "max_iter", "tol": "tol", "init": "init_params",
        "n_init": "n_init", "seed": "random_state", "reg_covar": "reg_covar", "on_degenerate": "on_degenerate",
        "checkpoint": "checkpoint",
    },
}
# Where a command deliberately departs from the table's default (None: required).
CLI_DEFAULTS = {
    "fit": {"n_components": None},
    "demo": {"n_components": 5, "random_state": 0},
    "select": {},
}


def test_estimator_signature_defaults_are_the_table():
    signature = inspect.signature(GaussianMixture.__init__)
    defaults = {
        name: p.default for name, p in signature.parameters.items() if name != "self"
    }
    assert defaults == dict(DEFAULTS)
    assert list(defaults) == list(PARAMETERS)
    assert GaussianMixture().get_params(deep=False) == dict(DEFAULTS)


def test_table_choices_are_the_literal_aliases():
    assert PARAMETERS["covariance_type"].choices == COVARIANCE_TYPE_NAMES
    assert PARAMETERS["init_params"].choices == INIT_METHODS
    assert PARAMETERS["on_degenerate"].choices == DEGENERATE_POLICIES
    assert PARAMETERS["scheduler"].choices == LOCAL_SCHEDULERS
    for p in PARAMETERS.values():
        assert p.help and "\n" not in p.help, p.name
        if p.kind == "choice":
            assert p.default in p.choices or (p.optional and p.default is None), p.name


def test_parameter_constraints_are_the_table():
    constraints = GaussianMixture._parameter_constraints
    assert list(constraints) == list(PARAMETERS)
    for name, param in PARAMETERS.items():
        entries = constraints[name]
        assert (None in entries) == param.optional, name
        if param.kind in ("int", "float"):
            (interval,) = [c for c in entries if isinstance(c, Interval)]
            assert (interval.left, interval.right) == (param.low, param.high), name
            assert interval.left is None or (interval.closed in ("left", "both")), name
        elif param.kind == "choice":
            (options,) = [c for c in entries if isinstance(c, StrOptions)]
            assert options.options == set(param.choices), name


@pytest.mark.parametrize(
    "name, bad",
    [
        pytest.param("n_components", 0, id="n_components-below-1"),
        pytest.param("tol", -1e-9, id="tol-negative"),
        pytest.param("max_iter", -1, id="max_iter-negative"),
        pytest.param("split_every", 1, id="split_every-below-2"),
        pytest.param("covariance_type", "banded", id="covariance_type-unknown"),
        pytest.param("noise_type", "full", id="noise_type-unknown"),
        pytest.param("rank", -1, id="rank-negative"),
        pytest.param("on_degenerate", "ignore", id="on_degenerate-unknown"),
        pytest.param("random_state", 2**32, id="random_state-too-large"),
    ],
)
def test_the_estimator_refuses_values_outside_the_table(name, bad):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(**{name: bad}).fit_spec()


def _options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command", sorted(CLI_NAMES))
def test_cli_options_are_the_table(command):
    options = _options(command)
    for option_name, name in CLI_NAMES[command].items():
        option, param = options[option_name], PARAMETERS[name]
        expected = CLI_DEFAULTS[command].get(name, param.default)
        if expected is None and option.required:
            pass
        else:
            assert not option.required and option.default == expected, (command, option_name)
        if command == "fit":
            assert option.help == param.help, option_name
        kind = option.type
        if param.kind == "choice":
            assert isinstance(kind, click.Choice) and set(kind.choices) == set(param.choices)
        elif param.kind in ("int", "float", "random_state"):
            assert isinstance(kind, click.IntRange if param.kind != "float" else click.FloatRange)
            assert (kind.min, kind.max) == (param.low, param.high), (command, option_name)
            assert not kind.min_open and not kind.max_open
        else:
            assert kind == click.STRING


def _spec(**params) -> FitSpec:
    return GaussianMixture(**params).fit_spec()


def test_spec_is_frozen_and_derives_the_loop_and_init_configs():
    spec = _spec(n_components=4, covariance_type="diag", tol=1e-4, block_size=128, random_state=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.tol = 1.0
    assert spec.em_config == EMConfig(
        "diag", tol=1e-4, reg_covar=1e-6, max_iter=100, on_degenerate="reseed",
        split_every=DEFAULTS["split_every"], block_rows=128,
    )
    init = InitConfig.from_spec(spec)
    assert (init.n_components, init.init_params, init.seed) == (4, "kmeans", spec.seed)


def test_spec_seed_is_drawn_from_random_state():
    assert _spec(random_state=5).seed == _spec(random_state=5).seed
    assert _spec(random_state=5).random_state == 5
    generator = np.random.RandomState(0)
    first, second = _spec(random_state=generator), _spec(random_state=generator)
    assert first.random_state == "RandomState"  # not reproducible: checkpoints record the type
    assert first.seed != second.seed  # the generator advanced
    assert _spec().random_state is None


def test_spec_warm_start_means_one_restart(rng):
    params = random_params(rng, "full", 3, 4)
    spec = FitSpec.from_params(
        {"n_components": 3, "n_init": 5}, seed=0, warm_start=WarmStart(params, -1.5)
    )
    assert spec.n_init == 1 and spec.warm_start.lower_bound == -1.5
    assert FitSpec.from_params({"n_components": 3, "n_init": 5}, seed=0).n_init == 5


def test_estimator_spec_captures_warm_start_only_once_fitted(rng):
    gmm = GaussianMixture(3, warm_start=True, n_init=2)
    assert gmm.fit_spec().warm_start is None and gmm.fit_spec().n_init == 2


def test_spec_init_arrays_are_float64_and_checked_against_the_data():
    spec = _spec(n_components=2, weights_init=[0.25, 0.75], means_init=[[0, 0, 0], [1, 1, 1]])
    assert spec.weights_init.dtype == np.float64
    arrays = spec.init_arrays(3)
    np.testing.assert_array_equal(arrays["means_init"], [[0, 0, 0], [1, 1, 1]])
    assert arrays["precisions_init"] is None
    with pytest.raises(ShapeMismatchError, match=r"means_init.*\(2, 4\).*\(2, 3\)"):
        spec.init_arrays(4)
    with pytest.raises(InvalidDataError, match="weights_init.*sum to 1"):
        _spec(n_components=2, weights_init=[0.5, 0.75]).init_arrays(3)
    with pytest.raises(InvalidDataError, match="means_init.*numeric"):
        _spec(n_components=2, means_init=[["a", "b"], ["c", "d"]])


def test_result_defaults_describe_a_model_not_fitted_here(rng):
    from dgmm.fit.spec import FitResult

    params = random_params(rng, "tied", 2, 3)
    result = FitResult(params, True, 0, math.nan, (), (), params.n_features)
    assert result.restarts == () and result.feature_names_in is None
    assert result.convergence_warning is None
    gmm = GaussianMixture.from_result(result, tol=0.5)
    assert (gmm.n_components, gmm.covariance_type, gmm.tol) == (2, "tied", 0.5)
    assert gmm.params_.equals(params)
    assert gmm.n_features_in_ == 3 and not hasattr(gmm, "feature_names_in_")
