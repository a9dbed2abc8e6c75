"""What every ``dgmm`` command shares: errors and exit codes, logging, output, option groups.

The commands themselves are in :mod:`dgmm.cli`; ``--config`` is
:mod:`dgmm.cli.config`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from dgmm.cli.config import config_option

logger = logging.getLogger("dgmm")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CLUSTER_KEYS = (
    "scheduler", "local_scheduler", "workers", "threads_per_worker", "memory_limit",
    "tls_ca_file", "tls_cert", "tls_key",
)
SOURCE_KEYS = ("key", "columns", "storage_options")


# -- errors and exit codes -----------------------------------------------------------


class _State:
    """What the error handler must know before (or without) a parsed context."""

    debug = False


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(str(text).split())


def _error_line(exc: BaseException) -> str:
    """The one line a failure prints: the message, plus a remedy when it has none."""
    from dgmm.errors import DgmmError

    message = one_line(exc) or type(exc).__name__
    if isinstance(exc, DgmmError):
        return message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename is not None else ""
        return one_line(
            f"{type(exc).__name__}: {exc.strerror or message}{where}. Check that the path or "
            "URL exists, that you may read (or write) it, and the storage options."
        )
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return f"{type(exc).__name__}: {message}"
    return (
        f"internal error ({type(exc).__name__}: {message}). Run again with --debug for the "
        "traceback, and please report it."
    )


def _exit_code(exc: Exception) -> int:
    from sklearn.utils._param_validation import InvalidParameterError

    # A hyper-parameter the estimator refused is a bad option value.
    return EXIT_USAGE if isinstance(exc, InvalidParameterError) else EXIT_FAILURE


class DgmmGroup(click.Group):
    """A command group that turns every failure into one line on stderr and an exit code.

    0 success; 1 data or runtime failure; 2 usage error; 130 interrupted.
    ``--debug`` adds the traceback.
    """

    def main(self, args: Any = None, prog_name: str | None = None, *a: Any, **kw: Any) -> Any:
        standalone = kw.pop("standalone_mode", True)
        _State.debug = False
        try:
            result = super().main(args, prog_name or "dgmm", *a, standalone_mode=False, **kw)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_USAGE
        except click.UsageError as exc:
            hint = f" See '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
            click.echo(f"Error: {one_line(exc.format_message())}{hint}", err=True)
            code = EXIT_USAGE
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.Abort as exc:
            # Click turns KeyboardInterrupt (and FitInterrupted) into Abort.
            cause = exc.__cause__
            text = one_line(cause) if cause is not None else ""
            click.echo(f"Interrupted. {text}".rstrip(), err=True)
            code = EXIT_INTERRUPTED
        except Exception as exc:
            if _State.debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {_error_line(exc)}", err=True)
            code = _exit_code(exc)
        else:
            if not standalone:
                return result
            code = result if isinstance(result, int) else EXIT_OK
        if not standalone:
            return code
        sys.exit(code)


# -- logging and output ------------------------------------------------------------------


@contextlib.contextmanager
def _logging(verbose: int, quiet: bool, debug: bool) -> Iterator[None]:
    """Logs on stderr while a command runs: WARNING, -v INFO, -vv DEBUG, --quiet ERROR.

    Python warnings become one log line each. Everything is restored on exit,
    so ``main([...])`` can be called from Python (and tests) repeatedly.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2 or debug:
        level = logging.DEBUG
    # distributed's worker start/stop chatter at INFO only with -vv.
    chatter = logging.ERROR if quiet else logging.INFO if verbose >= 2 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    loggers = [logging.getLogger(name) for name in ("dgmm", "distributed")]
    saved = [(log, log.level, log.propagate) for log in loggers]
    saved_showwarning = warnings.showwarning

    def showwarning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        logger.warning("%s: %s", category.__name__, one_line(message))

    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("distributed").setLevel(chatter)
    warnings.showwarning = showwarning
    try:
        yield
    finally:
        warnings.showwarning = saved_showwarning
        logger.removeHandler(handler)
        for log, old_level, propagate in saved:
            log.setLevel(old_level)
            log.propagate = propagate


def _human(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        import numpy as np

        array = np.asarray(value)
        # A model's means can be K x D numbers: in full only with --json.
        if array.size > 16:
            return f"array of shape {array.shape} (see --json)"
        return np.array2string(array, precision=6, separator=", ", max_line_width=10**6)
    return str(value)


def emit(summary: dict[str, Any], json_output: bool, quiet: bool) -> None:
    """The summary on stdout: one JSON object, or aligned ``key: value`` lines."""
    if json_output:
        from dgmm.io.codec import dumps

        # Strict JSON; a non-finite number as {"$float": "-Infinity"}, as in model files.
        click.echo(dumps(summary, indent=None, sort_keys=False).decode().rstrip("\n"))
    elif not quiet:
        width = max(map(len, summary), default=0)
        for key, value in summary.items():
            click.echo(f"{key:>{width}}: {_human(value)}")


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    _State.debug = bool(value)
    return value


def _stack(f: Callable[..., Any], decorators: list[Callable[..., Any]]) -> Callable[..., Any]:
    """``f`` under ``decorators``, the first listed outermost (as written above a def)."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def common_options(f: Callable[..., dict[str, Any]]) -> Callable[..., None]:
    """--config, --json, --quiet, -v, --debug; ``f`` returns the command's summary."""

    @functools.wraps(f)
    def wrapper(
        *, json_output: bool, quiet: bool, verbose: int, debug: bool, config: Any, **kw: Any
    ) -> None:
        _State.debug = debug
        with _logging(verbose, quiet, debug):
            summary = f(**kw)
        emit(summary, json_output, quiet)

    return _stack(wrapper, [
        config_option,
        click.option(
            "--json", "json_output", is_flag=True,
            help="Print one JSON summary object on stdout (logs stay on stderr).",
        ),
        click.option(
            "-q", "--quiet", is_flag=True, help="Only errors on stderr; no summary unless --json."
        ),
        click.option(
            "-v", "--verbose", count=True,
            help="More logging on stderr: -v INFO (a line per pass and per EM iteration), -vv DEBUG.",
        ),
        click.option(
            "--debug", is_flag=True, is_eager=True, callback=_set_debug,
            help="Show the traceback of a failure.",
        ),
    ])


# -- data and cluster options -------------------------------------------------------


def _parse_columns(ctx: click.Context, param: click.Parameter, value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()] or None


def _parse_storage_options(
    ctx: click.Context, param: click.Parameter, value: Any
) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):  # a TOML table in --config
        return value
    example = "'{\"anon\": true}'"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"expected a JSON object such as {example}; got {value!r} ({exc.msg})."
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"expected a JSON object such as {example}; got {value!r}.")
    return parsed


storage_options_option = click.option(
    "--storage-options", default=None, callback=_parse_storage_options,
    help="fsspec options (credentials, endpoint_url) for every URL of the command, as a "
    "JSON object, e.g. '{\"anon\": true}'.",
)


def source_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--key, --columns, --storage-options: how to open SOURCE."""
    return _stack(f, [
        click.option("--key", default=None, help="Path of the array inside a Zarr group."),
        click.option(
            "--columns", default=None, callback=_parse_columns,
            help="Comma-separated feature columns of a Parquet source "
            "(default: every numeric column but a stored pandas index).",
        ),
        storage_options_option,
    ])


def _parse_memory(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or value == "auto":
        return value
    from dask.utils import parse_bytes

    try:
        return parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise click.BadParameter(
            f"expected 'auto' or a size such as '4GiB' or '500MB'; got {value!r}."
        ) from None


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--scheduler (+ TLS) or --workers/--threads-per-worker/--memory-limit."""
    return _stack(f, [
        click.option(
            "--scheduler", default=None, metavar="ADDRESS",
            help="Address of a running Dask scheduler (tcp://host:8786, tls://...). Default: "
            "$DASK_SCHEDULER_ADDRESS or Dask's config, else a LocalCluster for the job.",
        ),
        click.option(
            "--local-scheduler", type=click.Choice(["threads", "synchronous", "processes"]),
            default=None,
            help="Without --scheduler: 'processes' (default) starts a LocalCluster for the job; "
            "'threads' or 'synchronous' run it in this process on Dask's scheduler of that "
            "name (same results; no worker processes).",
        ),
        click.option(
            "--workers", type=click.IntRange(min=1), default=None,
            help="Worker processes of the LocalCluster (default: one per core).",
        ),
        click.option(
            "--threads-per-worker", type=click.IntRange(min=1), default=None,
            help="Threads per LocalCluster worker (default 1).",
        ),
        click.option(
            "--memory-limit", default=None, callback=_parse_memory,
            help="Memory limit per LocalCluster worker: 'auto' (default) or a size ('4GiB').",
        ),
        click.option("--tls-ca-file", default=None, help="CA certificate (PEM) of a TLS scheduler."),
        click.option("--tls-cert", default=None, help="Client certificate (PEM) for a TLS scheduler."),
        click.option("--tls-key", default=None, help="Client private key (PEM) for a TLS scheduler."),
    ])


def connect_args(
    *,
    scheduler: str | None,
    workers: int | None,
    local_scheduler: str | None = None,
    threads_per_worker: int | None,
    memory_limit: Any,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> dict[str, Any]:
    """Checked keyword arguments of ``dgmm.fit.cluster.connect``, before any work is done."""
    local = {
        "--workers": workers, "--threads-per-worker": threads_per_worker,
        "--memory-limit": memory_limit,
    }
    given = [name for name, v in local.items() if v is not None]
    if scheduler is not None and given:
        raise click.UsageError(
            f"--scheduler connects to a running cluster; {', '.join(given)} size a "
            "LocalCluster. Pass one or the other."
        )
    if local_scheduler is not None and scheduler is not None:
        raise click.UsageError(
            f"--scheduler connects to a running cluster; --local-scheduler {local_scheduler} "
            "chooses how to run without one. Pass one or the other."
        )
    if local_scheduler in ("threads", "synchronous") and given:
        raise click.UsageError(
            f"--local-scheduler {local_scheduler} runs in this process; {', '.join(given)} "
            "size a LocalCluster. Drop them or use --local-scheduler processes."
        )
    tls = (tls_ca_file, tls_cert, tls_key)
    security = None
    if any(v is not None for v in tls):
        if not all(v is not None for v in tls):
            raise click.UsageError("TLS needs all of --tls-ca-file, --tls-cert and --tls-key.")
        from distributed.security import Security

        security = Security(
            tls_ca_file=tls_ca_file, tls_client_cert=tls_cert, tls_client_key=tls_key,
            require_encryption=True,
        )
    return {
        "scheduler_address": scheduler,
        "scheduler": local_scheduler,
        "n_workers": workers,
        "threads_per_worker": threads_per_worker or 1,
        "memory_limit": memory_limit if memory_limit is not None else "auto",
        "security": security,
    }


def cluster(args: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """The job's distributed client (``dgmm.fit.cluster.connect``), current inside the block."""
    from dgmm.fit.cluster import connect

    return connect(**args)


def split(kw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Remove ``keys`` from ``kw`` and return them as a dict."""
    return {k: kw.pop(k) for k in keys}


# -- library calls with the CLI's checks ---------------------------------------------


def open_source(source: str, *, key: Any, columns: Any, storage_options: Any) -> Any:
    """SOURCE as a ``Dataset``, its metadata read once, before any cluster starts.

    A missing or unreadable source fails at once; :func:`on_cluster` then
    sizes its chunks by the threads of the cluster the job runs on.
    """
    from dgmm.io.sources import open_data

    return open_data(source, key=key, columns=columns, storage_options=storage_options)


def on_cluster(data: Any, client: Any) -> Any:
    """The opened SOURCE as a Dask array chunked for ``client``'s cluster (no metadata read)."""
    from dgmm.fit.data import on_cluster as chunked_for

    return chunked_for(data, client)


def check_target(
    target: str, overwrite: bool, storage_options: dict[str, Any] | None, what: str
) -> None:
    """Fail before any work when an output exists (without --overwrite) or cannot be made."""
    from dgmm.io import fs as fsio

    fsio.check_target(
        fsio.resolve(target, storage_options), overwrite=overwrite, what=what, flag="--overwrite"
    )


def load_model(model: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The saved model as a fitted ``GaussianMixture`` (``dgmm.load``)."""
    from dgmm._estimator_io import load

    return load(model, storage_options=storage_options)


def check_features(gmm: Any, x: Any, model: str, source: str) -> None:
    """ShapeMismatchError, before any pass, when SOURCE's columns do not fit MODEL."""
    from dgmm.errors import ShapeMismatchError

    x = getattr(x, "array", x)  # a Dataset or its array
    if x.shape[1] != gmm.n_features_in_:
        raise ShapeMismatchError(
            f"The model {model!r} was fitted on {gmm.n_features_in_} features but {source!r} "
            f"has {x.shape[1]}. Pass the same columns as in the fit (see --columns, --key)."
        )


def criteria(gmm: Any, total_log_likelihood: float, n_samples: int) -> dict[str, float]:
    """``{"bic": ..., "aic": ...}`` of a fitted model whose rows sum to ``total_log_likelihood``."""
    from dgmm.core.family import information_criteria

    bic, aic = information_criteria(total_log_likelihood, n_parameters(gmm), n_samples)
    return {"bic": bic, "aic": aic}


def n_parameters(gmm: Any) -> int:
    """Free parameters of a fitted model (its family counts them)."""
    from dgmm.core.family import family_of

    return int(family_of(gmm.params_).n_parameters(gmm.params_))


def row_sample(x: Any, n_rows: int, seed: int) -> Any:
    """Up to ``n_rows`` distinct rows of ``x`` drawn uniformly, in order: (m, n_features)."""
    import numpy as np

    total = int(x.shape[0])
    if total <= n_rows:
        return np.asarray(x.compute())
    index = np.sort(np.random.default_rng(seed).choice(total, size=n_rows, replace=False))
    return np.asarray(x[index].compute())
