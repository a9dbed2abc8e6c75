"""``dgmm select``: choose n_components and the covariance type in shared passes (``dgmm.select``).

Registered on the ``dgmm`` group when :mod:`dgmm.cli` is imported.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from dgmm.cli.commands import cli, em_options, param_option
from dgmm.cli.common import (
    CLUSTER_KEYS,
    SOURCE_KEYS,
    check_target,
    cluster,
    cluster_options,
    common_options,
    connect_args,
    logger,
    on_cluster,
    one_line,
    open_source,
    row_sample,
    source_options,
    split,
)
from dgmm.core.options import COVARIANCE_TYPE_NAMES
from dgmm.fit.select import CRITERIA

__all__ = ["parse_components", "parse_types", "select"]


def parse_components(text: str) -> list[int]:
    """``"1-20"``, ``"2,4,8"`` or ``"1-5,8"`` as the sorted list of n_components it names."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 1 or last < first:
                raise ValueError
            values.update(range(first, last + 1))
    except ValueError:
        raise click.BadParameter(
            f"expected positive numbers of components as a range or a list (1-20, 2,4,8, 1-5,8); got {text!r}."
        ) from None
    return sorted(values)


def parse_types(text: str) -> list[str]:
    """``"full,diag"`` as a list of covariance types."""
    values = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in values if t not in COVARIANCE_TYPE_NAMES]
    if not values or bad:
        raise click.BadParameter(
            f"expected covariance types from {', '.join(COVARIANCE_TYPE_NAMES)}, comma separated; got {text!r}."
        )
    return values


@cli.command("select")
@click.argument("source")
@click.option(
    "-k", "--n-components", "components", required=True, metavar="RANGE",
    help="Numbers of components to try: a range or list (1-20, 2,4,8, 1-5,8).",
)
@click.option(
    "--covariance-type", "types", default="full", show_default=True, metavar="TYPES",
    help=f"Covariance types to try, comma separated ({', '.join(COVARIANCE_TYPE_NAMES)}).",
)
@click.option(
    "--criterion", type=click.Choice(list(CRITERIA)), default="bic", show_default=True,
    help="Lowest BIC or AIC, or highest held-out mean log-likelihood (--validation-fraction of the chunks).",
)
@click.option(
    "--validation-fraction", type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    default=0.2, show_default=True, help="--criterion validation: fraction of the row chunks held out.",
)
@click.option(
    "--prune", is_flag=True,
    help="Stop candidates whose BIC/AIC cannot beat the best any more (fewer passes; see dgmm.fit.select).",
)
@em_options
@param_option("on_degenerate", "--on-degenerate")
@source_options
@cluster_options
@param_option("checkpoint", "--checkpoint", metavar="DIR", help="Checkpoint of the sweep, resumed when it exists.")
@click.option("-o", "--output", required=True, metavar="MODEL", help="Where to save the best model (and the table).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output and --plot.")
@click.option("--plot", "figure", default=None, metavar="FIG.png", help="Write the BIC plot there (PNG, SVG, PDF).")
@common_options
def select(
    source: str, components: str, types: str, criterion: str, validation_fraction: float, prune: bool,
    rank: int, noise_type: str, max_iter: int, tol: float, init: str, n_init: int, seed: int | None,
    reg_covar: float, on_degenerate: str, checkpoint: str | None, output: str, overwrite: bool,
    figure: str | None, **kw: Any,
) -> dict[str, Any]:
    """Fit every (n_components, covariance type) candidate to SOURCE in shared passes, keep the best.

    Each pass over the data serves every candidate still running, so the
    sweep reads the data about as often as its slowest candidate alone.
    Prints the table (one row per candidate, the best marked *), saves the
    best model as MODEL (dgmm.load reads it; the table is in
    MODEL/selection.json) and, with --plot, the criterion against
    n_components beside the best model's components.
    """
    from dgmm.selection import select as run_select

    n_components, covariance_types = parse_components(components), parse_types(types)
    cluster_args, source_kw = connect_args(**split(kw, CLUSTER_KEYS)), split(kw, SOURCE_KEYS)
    storage_options = source_kw["storage_options"]
    check_target(output, overwrite, storage_options, "model")
    if figure is not None:
        check_target(figure, overwrite, storage_options, "plot")
    data = open_source(source, **source_kw)
    start = time.perf_counter()
    with cluster(cluster_args) as client:
        x = on_cluster(data, client)
        selection = run_select(
            x, n_components, covariance_types, criterion=criterion, validation_fraction=validation_fraction,
            prune=prune, checkpoint=checkpoint,
            checkpoint_storage_options=storage_options if checkpoint is not None else None,
            rank=rank, noise_type=noise_type, max_iter=max_iter, tol=tol, init_params=init, n_init=n_init,
            random_state=seed, reg_covar=reg_covar, on_degenerate=on_degenerate,
        )
        shown = row_sample(x, 5000, 0) if figure is not None else None
    seconds = time.perf_counter() - start
    selection.save(output, overwrite=overwrite, storage_options=storage_options)
    if figure is not None:
        from dgmm.errors import OptionalDependencyError

        try:
            selection.plot(shown, path=figure, storage_options=storage_options)
        except OptionalDependencyError as exc:  # matplotlib is an extra; the model is saved
            logger.warning("no plot: %s", one_line(exc))
            figure = None
    best = selection.best_params_
    # The table as text for people, as rows for --json.
    as_json = bool(click.get_current_context().params.get("json_output"))
    return {
        "command": "select",
        "source": source,
        "output": output,
        "n_samples": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "criterion": criterion,
        "best_n_components": best["n_components"],
        "best_covariance_type": best["covariance_type"],
        "iterations": selection.sweep.iterations,
        "seconds": seconds,
        "plot": None if figure is None else os.fspath(figure),
        **({"candidates": selection.rows} if as_json else {"table": "\n" + selection.table()}),
    }
