"""The ``dgmm`` command line: fit, predict, score, info, sample, generate, plot, demo.

A thin front end for scheduled jobs (cron, Airflow, SLURM, Kubernetes): it
parses arguments and a TOML config file, sets up logging and the cluster,
calls the library, and reports. Every command prints a summary on stdout
(one JSON object with ``--json``); logs and the progress bar go to stderr.

Exit codes: 0 success; 1 a data or runtime failure (bad data, a missing or
unreadable file or model, a feature mismatch, an existing output without
``--overwrite``, an unreachable cluster); 2 a usage error (unknown option or
config key, bad option value); 130 interrupted (Ctrl-C; a fit with
``--checkpoint`` resumes when the same command runs again). A failure is one
line on stderr, with the traceback only under ``--debug``.

Shared machinery (errors, logging, option groups) is in
:mod:`dgmm.cli.common`; ``--config`` in :mod:`dgmm.cli.config`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from dgmm._version import __version__
from dgmm.cli.common import (
    CLUSTER_KEYS,
    SOURCE_KEYS,
    DgmmGroup,
    check_features,
    check_target,
    cluster,
    cluster_options,
    common_options,
    connect_args,
    criteria,
    load_model,
    logger,
    n_parameters,
    on_cluster,
    one_line,
    open_source,
    row_sample,
    source_options,
    split,
    storage_options_option,
)
from dgmm.fit.spec import PARAMETERS, Param

__all__ = ["cli", "main"]

_SEED = click.IntRange(min=PARAMETERS["random_state"].low, max=PARAMETERS["random_state"].high)
_DTYPE = click.Choice(["float32", "float64"])


def _click_type(param: Param) -> click.ParamType | None:
    """The click type of a row of the parameter table: its range or choices (None: a string)."""
    if param.kind == "choice":
        return click.Choice(sorted(param.choices))
    if param.kind in ("int", "random_state"):
        return click.IntRange(min=param.low, max=param.high)
    if param.kind == "float":
        return click.FloatRange(min=param.low, max=param.high)
    return None


def param_option(name: str, *decls: str, **overrides: Any) -> Any:
    """A click option for the hyper-parameter ``name`` of ``dgmm.fit.spec.PARAMETERS``.

    Its type (range or choices), default and help come from the table;
    ``overrides`` replace any of them (``required=True`` drops the default).
    """
    param = PARAMETERS[name]
    kwargs: dict[str, Any] = {"type": _click_type(param), "default": param.default, "help": param.help}
    if param.default is not None:
        kwargs["show_default"] = True
    kwargs.update(overrides)
    if kwargs.get("required"):
        kwargs.pop("default")
        kwargs.pop("show_default", None)
    return click.option(*decls, **kwargs)


#: The EM hyper-parameters ``fit`` and ``select`` both take, as (table name, option).
EM_OPTIONS = (
    ("rank", "--rank"), ("noise_type", "--noise-type"), ("max_iter", "--max-iter"), ("tol", "--tol"),
    ("init_params", "--init"), ("n_init", "--n-init"), ("random_state", "--seed"), ("reg_covar", "--reg-covar"),
)


def em_options(f: Any) -> Any:
    """The options of :data:`EM_OPTIONS`, from the parameter table, in that order in ``--help``."""
    for name, decl in reversed(EM_OPTIONS):
        f = param_option(name, decl)(f)
    return f


def draw_options(f: Any) -> Any:
    """--chunk-rows, --dtype, --overwrite: the options of the commands that draw rows out of core."""
    f = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(f)
    f = click.option(
        "--dtype", type=_DTYPE, default="float64", show_default=True, help="Type of the rows."
    )(f)
    return click.option(
        "--chunk-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
        help="Rows per chunk drawn and written.",
    )(f)


@click.group(
    cls=DgmmGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="dgmm")
def cli() -> None:
    """Gaussian mixture models fitted by exact EM on data larger than memory, on Dask.

    Every command takes --config FILE.toml (the same options as keys; flags
    override it), --json (one JSON summary on stdout), -v/--quiet and --debug.
    Exit codes: 0 ok, 1 data or runtime failure, 2 usage error, 130 interrupted.
    """


@cli.command()
@click.argument("source")
@param_option("n_components", "-k", "--n-components", required=True)
@param_option("covariance_type", "--covariance-type")
@em_options
@click.option(
    "--model", "model_family", type=click.Choice(["gaussian", "multinomial"]), default="gaussian",
    show_default=True, help="Mixture of Gaussians, or of multinomials (counts, sparse matrices).",
)
@click.option(
    "--alpha", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
    help="--model multinomial: additive smoothing of the word distributions (MultinomialNB's).",
)
@source_options
@cluster_options
@param_option("checkpoint", "--checkpoint", metavar="DIR")
@click.option(
    "-o", "--output", required=True, metavar="MODEL", help="Model directory or URL to write."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model at --output.")
@click.option(
    "--progress/--no-progress", default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@common_options
def fit(
    source: str, n_components: int, covariance_type: str, rank: int, noise_type: str,
    max_iter: int, tol: float, init: str,
    n_init: int, seed: int | None, reg_covar: float, model_family: str, alpha: float,
    checkpoint: str | None, output: str, overwrite: bool, progress: bool | None, **kw: Any,
) -> dict[str, Any]:
    """Fit a mixture to SOURCE (Zarr, Parquet, .npy; a path or URL) and save it as MODEL.

    --model multinomial fits a mixture of multinomials to counts: also a
    scipy .npz file or an AnnData store's sparse group (--key X).

    The log-likelihood (mean per row) and the BIC reported are those of the
    last E-step, as scikit-learn's lower_bound_: no extra pass over the data.
    """
    from dgmm.estimator import GaussianMixture

    cluster_args, source_kw = connect_args(**split(kw, CLUSTER_KEYS)), split(kw, SOURCE_KEYS)
    storage_options = source_kw["storage_options"]
    check_target(output, overwrite, storage_options, "model")
    data = open_source(source, **source_kw)
    extra: dict[str, Any] = {}
    if checkpoint is not None:
        extra.update(checkpoint=checkpoint, checkpoint_storage_options=storage_options)
    verbose = int(sys.stderr.isatty() if progress is None else progress)
    if model_family == "multinomial":
        from dgmm.multinomial_mixture import MultinomialMixture

        covariance_type = None
        gmm = MultinomialMixture(
            n_components, alpha=alpha, tol=tol, max_iter=max_iter, n_init=n_init,
            init_params=init, random_state=seed, verbose=verbose, **extra,
        )
    else:
        gmm = GaussianMixture(
            n_components,
            covariance_type=covariance_type,
            rank=rank,
            noise_type=noise_type,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init,
            random_state=seed,
            verbose=verbose,
            **extra,
        )
    start = time.perf_counter()
    with cluster(cluster_args) as client:
        x = on_cluster(data, client)  # the cluster's threads size the default chunks
        gmm.fit(x)
    seconds = time.perf_counter() - start
    gmm.save(output, overwrite=overwrite, storage_options=storage_options)
    n_samples = int(x.shape[0])
    return {
        "command": "fit",
        "source": source,
        "output": output,
        "n_samples": n_samples,
        "n_features": int(x.shape[1]),
        "feature_names": _names(gmm),
        "n_components": n_components,
        "model": model_family,
        "covariance_type": covariance_type,
        **_lowrank_info(gmm),
        "n_iter": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "log_likelihood": float(gmm.lower_bound_),
        "bic": criteria(gmm, gmm.lower_bound_ * n_samples, n_samples)["bic"],
        "seconds": seconds,
        "checkpoint": checkpoint,
    }


@cli.command()
@click.argument("model")
@click.argument("source")
@click.option(
    "-o", "--output", required=True, metavar="TARGET",
    help="Zarr group (.zarr) or Parquet dataset (.parquet) to write.",
)
@click.option(
    "--labels", is_flag=True,
    help="Write each row's most probable component as 'label' (the default output).",
)
@click.option(
    "--proba", is_flag=True,
    help="Write each row's component probabilities as 'proba' (n_samples x n_components).",
)
@click.option("--log-density", is_flag=True, help="Write each row's log p(x) as 'log_density'.")
@click.option("--overwrite", is_flag=True, help="Replace an existing TARGET.")
@source_options
@cluster_options
@common_options
def predict(
    model: str, source: str, output: str, labels: bool, proba: bool, log_density: bool,
    overwrite: bool, **kw: Any,
) -> dict[str, Any]:
    """Write predictions of MODEL for every row of SOURCE to TARGET, chunk by chunk.

    Labels by default; --labels, --proba and --log-density combine (one pass
    serves all). Zarr: arrays 'label', 'proba', 'log_density' in a group;
    Parquet: columns 'label', 'proba_0'..., 'log_density'.
    """
    chosen = (("labels", labels), ("proba", proba), ("log_density", log_density))
    outputs = [name for name, on in chosen if on] or ["labels"]
    cluster_args, source_kw = connect_args(**split(kw, CLUSTER_KEYS)), split(kw, SOURCE_KEYS)
    storage_options = source_kw["storage_options"]
    gmm = load_model(model, storage_options)
    check_target(output, overwrite, storage_options, "output")
    data = open_source(source, **source_kw)
    check_features(gmm, data, model, source)
    start = time.perf_counter()
    with cluster(cluster_args) as client:
        x = on_cluster(data, client)
        gmm.predict_to(
            x, output, output=outputs, overwrite=overwrite, storage_options=storage_options
        )
    return {
        "command": "predict",
        "model": model,
        "source": source,
        "output": output,
        "outputs": outputs,
        "n_samples": int(x.shape[0]),
        "seconds": time.perf_counter() - start,
    }


@cli.command()
@click.argument("model")
@click.argument("source")
@source_options
@cluster_options
@common_options
def score(model: str, source: str, **kw: Any) -> dict[str, Any]:
    """Mean log-likelihood per row, BIC and AIC of MODEL on SOURCE (one pass over the data)."""
    import numpy as np

    cluster_args, source_kw = connect_args(**split(kw, CLUSTER_KEYS)), split(kw, SOURCE_KEYS)
    gmm = load_model(model, source_kw["storage_options"])
    data = open_source(source, **source_kw)
    check_features(gmm, data, model, source)
    start = time.perf_counter()
    with cluster(cluster_args) as client:
        x = on_cluster(data, client)
        total = float(gmm.score_samples(x).sum(dtype=np.float64).compute())
    n_samples = int(x.shape[0])
    return {
        "command": "score",
        "model": model,
        "source": source,
        "n_samples": n_samples,
        "log_likelihood": total / n_samples,
        **criteria(gmm, total, n_samples),
        "seconds": time.perf_counter() - start,
    }


@cli.command()
@click.argument("model")
@storage_options_option
@common_options
def info(model: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Describe a saved MODEL: shapes, fit summary, weights (--json: also the means);
    for a mixture of multinomials each component's weight and top features."""
    gmm = load_model(model, storage_options)
    if hasattr(gmm, "top_features"):
        return {
            "command": "info",
            "model": model,
            "family": "multinomial",
            "n_components": int(gmm.n_components),
            "n_features": int(gmm.n_features_in_),
            "converged": bool(getattr(gmm, "converged_", False)),
            "n_iter": int(getattr(gmm, "n_iter_", 0)),
            "log_likelihood": float(getattr(gmm, "lower_bound_", float("nan"))),
            "n_parameters": n_parameters(gmm),
            "weights": gmm.weights_,
            **{
                f"component {k}": f"weight {w:.4g}; top features: "
                + ", ".join(f"{name} ({p:.3g})" for name, p in top)
                for k, (w, top) in enumerate(zip(gmm.weights_, gmm.top_features(10)))
            },
        }
    return {
        "command": "info",
        "model": model,
        "n_components": int(gmm.n_components),
        "n_features": int(gmm.n_features_in_),
        "feature_names": _names(gmm),
        "covariance_type": gmm.covariance_type,
        **_lowrank_info(gmm),
        "converged": bool(getattr(gmm, "converged_", False)),
        "n_iter": int(getattr(gmm, "n_iter_", 0)),
        "log_likelihood": float(getattr(gmm, "lower_bound_", float("nan"))),
        "n_parameters": n_parameters(gmm),
        "weights": gmm.weights_,
        "means": gmm.means_,
    }


def _gaussian_only(gmm: Any, model: str, command: str) -> Any:
    """``gmm``, or UnsupportedModelError when it is a mixture of multinomials (not drawn yet)."""
    if hasattr(gmm, "top_features"):
        from dgmm.errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"{model!r} is a mixture of multinomials; 'dgmm {command}' handles Gaussian mixtures "
            "only for now. Use 'dgmm info' for its components' top features, or "
            "dgmm.load(model).sample(n) / .top_features(n) in Python."
        )
    return gmm


def _lowrank_info(gmm: Any) -> dict[str, Any]:
    """``rank`` and ``noise_type`` of a low-rank model (nothing for the other types)."""
    if getattr(gmm, "covariance_type", None) != "lowrank":
        return {}
    return {"rank": int(gmm.rank), "noise_type": gmm.noise_type}


def _names(gmm: Any) -> list[str] | None:
    """The model's feature names (Parquet columns), or None when it was fitted without."""
    names = getattr(gmm, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _write(arrays: list[tuple[Any, str | None]], overwrite: bool, storage_options: Any) -> None:
    """Each lazy array to its target (skipped when None), chunk by chunk and atomically."""
    from dgmm.fit.predict import write_array

    for array, target in arrays:
        if target is not None:
            write_array(array, target, overwrite=overwrite, storage_options=storage_options)


@cli.command()
@click.argument("model")
@click.option(
    "-n", "--n-samples", type=click.IntRange(min=1), required=True, help="Rows to draw."
)
@click.option(
    "-o", "--output", required=True, metavar="TARGET",
    help="Zarr store (.zarr) or Parquet dataset (.parquet) for the rows.",
)
@click.option("--labels", default=None, metavar="TARGET", help="Also write each row's component.")
@click.option(
    "--seed", type=_SEED, default=0, show_default=True,
    help="Random seed; chunk i is drawn from the generator seeded by (seed, i).",
)
@draw_options
@storage_options_option
@cluster_options
@common_options
def sample(
    model: str, n_samples: int, output: str, labels: str | None, seed: int, chunk_rows: int,
    dtype: str, overwrite: bool, storage_options: dict[str, Any] | None, **kw: Any,
) -> dict[str, Any]:
    """Draw N rows from MODEL into TARGET, chunk by chunk on the workers (out of core)."""
    from dgmm.demo import sample_mixture

    cluster_args = connect_args(**kw)
    gmm = _gaussian_only(load_model(model, storage_options), model, "sample")
    for what, target in (("output", output), ("labels output", labels)):
        if target is not None:
            check_target(target, overwrite, storage_options, what)
    x, y = sample_mixture(gmm.params_, n_samples, seed=seed, chunk_rows=chunk_rows, dtype=dtype)
    start = time.perf_counter()
    with cluster(cluster_args):
        _write([(x, output), (y, labels)], overwrite, storage_options)
    return {
        "command": "sample",
        "model": model,
        "output": output,
        "labels": labels,
        "n_samples": n_samples,
        "n_features": int(x.shape[1]),
        "seconds": time.perf_counter() - start,
    }


def _beside(output: str, suffix: str) -> str:
    """``data.zarr`` -> ``data<suffix>``: a path next to ``output``."""
    base = output.rstrip("/")
    for ext in (".zarr", ".parquet", ".pq"):
        if base.endswith(ext):
            return base[: -len(ext)] + suffix
    return base + suffix


@cli.command()
@click.option(
    "-n", "--n-samples", type=click.IntRange(min=1), required=True, help="Rows to generate."
)
@click.option(
    "-d", "--n-features", type=click.IntRange(min=1), required=True, help="Columns (features)."
)
@click.option(
    "-k", "--n-components", type=click.IntRange(min=1), required=True,
    help="Components of the true mixture.",
)
@click.option(
    "-o", "--output", required=True, metavar="STORE",
    help="Zarr store (.zarr) or Parquet dataset (.parquet) for the rows.",
)
@click.option(
    "--truth", default=None, metavar="MODEL",
    help="Where the true parameters are saved as a dgmm model (default: STORE with '.truth' "
    "for its suffix).",
)
@click.option(
    "--labels", default=None, metavar="TARGET", help="Also write each row's true component."
)
@click.option(
    "--seed", type=_SEED, default=0, show_default=True,
    help="Seed of the true parameters and of the rows.",
)
@draw_options
@storage_options_option
@cluster_options
@common_options
def generate(
    n_samples: int, n_features: int, n_components: int, output: str, truth: str | None,
    labels: str | None, seed: int, chunk_rows: int, dtype: str, overwrite: bool,
    storage_options: dict[str, Any] | None, **kw: Any,
) -> dict[str, Any]:
    """Write rows drawn from a random known mixture to STORE, chunk by chunk (any size).

    The true parameters are saved beside the store as a dgmm model ('dgmm
    info', 'dgmm score' read it), the true labels with --labels.
    """
    from dgmm.demo import sample_mixture, true_params
    from dgmm.io.persistence import save_model

    cluster_args = connect_args(**kw)
    truth = truth or _beside(output, ".truth")
    for what, target in (("output", output), ("truth model", truth), ("labels output", labels)):
        if target is not None:
            check_target(target, overwrite, storage_options, what)
    params = true_params(n_features, n_components, seed=seed)
    x, y = sample_mixture(params, n_samples, seed=seed, chunk_rows=chunk_rows, dtype=dtype)
    start = time.perf_counter()
    with cluster(cluster_args):
        _write([(x, output), (y, labels)], overwrite, storage_options)
    meta = {
        "generated": {"data": output, "n_samples": n_samples, "seed": seed, "chunk_rows": chunk_rows}
    }
    save_model(truth, params, meta, overwrite=overwrite, storage_options=storage_options)
    return {
        "command": "generate",
        "output": output,
        "truth": truth,
        "labels": labels,
        "n_samples": n_samples,
        "n_features": n_features,
        "n_components": n_components,
        "dtype": dtype,
        "chunks": int(x.numblocks[0]),
        "seconds": time.perf_counter() - start,
    }


@cli.command()
@click.argument("model")
@click.option(
    "--data", default=None, metavar="SOURCE", help="Data whose rows are shown (a sample)."
)
@click.option(
    "--sample-rows", type=click.IntRange(min=1), default=5000, show_default=True,
    help="Rows of --data drawn (uniformly, one pass) and shown.",
)
@click.option("--seed", type=_SEED, default=0, show_default=True, help="Seed of the row sample.")
@click.option(
    "--image-shape", default=None, metavar="H,W[,C]",
    help="Draw the components as images of this shape instead: means (heaviest first) and, "
    "for covariance type lowrank, mean +- each factor.",
)
@click.option(
    "-o", "--output", required=True, metavar="FIG", help="Image to write (.png, .svg, .pdf)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing FIG.")
@source_options
@cluster_options
@common_options
def plot(
    model: str, data: str | None, sample_rows: int, seed: int, image_shape: str | None,
    output: str, overwrite: bool, **kw: Any,
) -> dict[str, Any]:
    """Plot MODEL's convergence curve and a 2-D principal-axes view with component ellipses
    (or, with --image-shape, its components as images; for a mixture of multinomials, bars
    of each component's top features, heaviest components first)."""
    from dgmm.plot import plot_components, plot_fit, plot_top_features

    cluster_args, source_kw = connect_args(**split(kw, CLUSTER_KEYS)), split(kw, SOURCE_KEYS)
    storage_options = source_kw["storage_options"]
    loaded = load_model(model, storage_options)
    if hasattr(loaded, "top_features"):
        # A mixture of multinomials: bars of each component's top features (no data needed).
        if data is not None or image_shape is not None:
            raise click.UsageError(
                f"{model!r} is a mixture of multinomials; its plot is the top features of each "
                f"component and takes neither --data nor --image-shape (got "
                f"{'--data' if data is not None else '--image-shape'}). Drop that option."
            )
        check_target(output, overwrite, storage_options, "figure")
        plot_top_features(loaded, path=output, storage_options=storage_options)
        return {"command": "plot", "model": model, "data": None, "output": output, "rows_shown": 0,
                "components_shown": min(loaded.n_components, 12)}
    gmm = _gaussian_only(loaded, model, "plot")
    check_target(output, overwrite, storage_options, "figure")
    if image_shape is not None:
        plot_components(gmm, image_shape, path=output, storage_options=storage_options)
        return {"command": "plot", "model": model, "data": None, "output": output, "rows_shown": 0,
                "image_shape": image_shape}
    rows = None
    if data is not None:
        opened = open_source(data, **source_kw)
        check_features(gmm, opened, model, data)
        with cluster(cluster_args) as client:
            rows = row_sample(on_cluster(opened, client), sample_rows, seed)
    plot_fit(gmm, rows, path=output, storage_options=storage_options)
    return {
        "command": "plot",
        "model": model,
        "data": data,
        "output": output,
        "rows_shown": 0 if rows is None else len(rows),
    }


@cli.command()
@click.option(
    "-n", "--n-samples", type=click.IntRange(min=2), default=100_000, show_default=True,
    help="Rows of the demo data.",
)
@click.option(
    "-d", "--n-features", type=click.IntRange(min=1), default=8, show_default=True,
    help="Columns of the demo data.",
)
@param_option(
    "n_components", "-k", "--n-components", default=5, help="Components, true and fitted."
)
@click.option(
    "--covariance-type", "covariance_type", default="full,diag", show_default=True, metavar="TYPES",
    help="Covariance types swept, comma separated.",
)
@click.option(
    "--max-components", type=click.IntRange(min=1), default=None,
    help="Sweep n_components = 1..this (default: the true number + 3).",
)
@param_option(
    "init_params", "--init", default="kmeans", show_default=True,
    help="Initialisation method of every candidate (all candidates share its passes).",
)
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), default=50_000, show_default=True,
    help="Rows per chunk of the demo store.",
)
@param_option(
    "random_state", "--seed", default=0, show_default=True, help="Seed of the data and of the fit."
)
@click.option(
    "--output-dir", default=None, metavar="DIR",
    help="Where the store, the models and the plot go (default: a new temporary directory, "
    "kept and printed).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the demo's files in an existing --output-dir."
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."
)
@cluster_options
@common_options
def demo(
    n_samples: int, n_features: int, n_components: int, covariance_type: str, max_components: int | None,
    init: str, chunk_rows: int, seed: int, output_dir: str | None, overwrite: bool, progress: bool,
    **kw: Any,
) -> dict[str, Any]:
    """Generate overlapping clusters, choose K and the covariance type by BIC, check against the truth.

    Writes DIR/data.zarr and the true model DIR/data.truth, sweeps
    n_components = 1..--max-components x --covariance-type on the store in
    shared passes (dgmm select), saves the best as DIR/model and the BIC
    curve beside its components as DIR/fit.png, and prints the table, the
    best's iterations, log-likelihood, BIC, seconds and the agreement of its
    labels with the true ones.
    """
    import tempfile

    from dgmm.cli.select import parse_types
    from dgmm.demo import demo_separation, sample_mixture, select_demo, true_params
    from dgmm.errors import OptionalDependencyError
    from dgmm.io.persistence import save_model

    cluster_args = connect_args(**kw)
    directory = output_dir or tempfile.mkdtemp(prefix="dgmm-demo-")
    names = ("data.zarr", "data.truth", "model", "fit.png")
    paths: dict[str, str | None] = {name: os.path.join(directory, name) for name in names}
    for name, path in paths.items():
        check_target(path, overwrite, None, f"demo file {name!r}")
    os.makedirs(directory, exist_ok=True)
    types = tuple(parse_types(covariance_type))
    params = true_params(n_features, n_components, seed=seed, separation=demo_separation(n_features))
    x, true_labels = sample_mixture(params, n_samples, seed=seed, chunk_rows=chunk_rows)
    with cluster(cluster_args) as client:
        _write([(x, paths["data.zarr"])], overwrite, None)
        meta = {"generated": {"data": "data.zarr", "n_samples": n_samples, "seed": seed}}
        save_model(paths["data.truth"], params, meta, overwrite=overwrite)
        x = on_cluster(open_source(paths["data.zarr"], key=None, columns=None, storage_options=None), client)
        selection, agreement, seconds = select_demo(
            x, true_labels, n_components, max_components=max_components or n_components + 3,
            covariance_types=types, seed=seed, init_params=init, n_init=3,
        )
        gmm = selection.best_estimator_
        total = float(gmm.score_samples(x).sum(dtype="float64").compute())
        shown = row_sample(x, 5000, seed)
    selection.save(paths["model"], overwrite=overwrite)
    try:
        selection.plot(shown, path=paths["fit.png"])
    except OptionalDependencyError as exc:  # matplotlib is an extra; the demo still ran
        logger.warning("no plot: %s", one_line(exc))
        paths["fit.png"] = None
    return {
        "command": "demo",
        "n_samples": n_samples,
        "n_features": n_features,
        "n_components": n_components,
        "best_n_components": gmm.n_components,
        "best_covariance_type": gmm.covariance_type,
        "table": "\n" + selection.table(),
        "n_iter": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "log_likelihood": total / n_samples,
        "bic": criteria(gmm, total, n_samples)["bic"],
        "seconds": seconds,
        "label_agreement": agreement,
        "data": paths["data.zarr"],
        "truth": paths["data.truth"],
        "model": paths["model"],
        "plot": paths["fit.png"],
    }


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``dgmm`` script and of ``python -m dgmm``."""
    return cli.main(args=argv, prog_name="dgmm")
