"""``--config job.toml``: command options from a TOML file; flags override it.

The keys are the command's long option names (``n-components`` or
``n_components``) and argument names (``source``, ``model``). A table named
after a command (``[fit]``, ``[predict]``...) holds that command's keys;
top-level keys are shared by every command that has the option (a shared
job file can set ``scheduler`` once for ``fit`` and ``predict``)::

    scheduler = "tcp://10.0.0.5:8786"

    [fit]
    source = "s3://bucket/embeddings.zarr"
    n-components = 32
    covariance-type = "diag"
    output = "s3://bucket/models/2026-11-22"
    storage-options = { anon = false }

A key no dgmm command has at top level, or a key the command does not have in
its table, is a usage error naming it (exit 2), as is a file that is not
valid TOML. The values go through the same checks as the flags; a table
(``storage-options``) stands for the flag's JSON object and an array
(``columns = ["a", "b"]``) for its comma-separated list.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import click

__all__ = ["config_option", "option_keys"]

# Options that make no sense in a file.
_NOT_IN_FILE = {"config", "help", "version"}


def option_keys(command: click.Command) -> dict[str, str]:
    """Every spelling a file may use for a parameter -> the parameter's name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if param.name is None or param.name in _NOT_IN_FILE:
            continue
        spellings = {param.name}
        spellings.update(opt[2:] for opt in param.opts if opt.startswith("--"))
        for spelling in spellings:
            keys[spelling] = param.name
            keys[spelling.replace("-", "_")] = param.name
            keys[spelling.replace("_", "-")] = param.name
    return keys


def _commands(ctx: click.Context) -> dict[str, click.Command]:
    root = ctx.find_root().command
    return dict(getattr(root, "commands", {}) or {ctx.command.name: ctx.command})


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(
            f"{path!r} is not valid TOML ({exc}). Fix the file; see "
            "https://toml.io for the syntax.",
            param_hint="'--config'",
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path!r} ({exc.strerror}). Pass an existing TOML file.",
            param_hint="'--config'",
        ) from None


def _resolve(ctx: click.Context, data: dict[str, Any], path: str) -> dict[str, Any]:
    """The running command's values from the file, keyed by parameter name."""
    commands = _commands(ctx)
    name = ctx.command.name
    own = option_keys(ctx.command)
    anyone: set[str] = set()
    for command in commands.values():
        anyone.update(option_keys(command))
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in commands:
            continue
        if key not in anyone:
            raise click.UsageError(
                f"Unknown key {key!r} in the config file {path!r}: no dgmm command has "
                f"an option --{key.replace('_', '-')}. Remove it, or fix its spelling "
                "(keys are the long option names, e.g. 'n-components').",
                ctx=ctx,
            )
        if key in own:
            values[own[key]] = value
    table = data.get(name)
    if isinstance(table, dict):
        for key, value in table.items():
            if key not in own:
                raise click.UsageError(
                    f"Unknown key {key!r} in the [{name}] table of the config file "
                    f"{path!r}: 'dgmm {name}' has no option --{key.replace('_', '-')}. "
                    f"Valid keys: {', '.join(sorted({k for k in own if '_' not in k}))}.",
                    ctx=ctx,
                )
            values[own[key]] = value
    return values


def _as_flag_value(value: Any) -> Any:
    """A TOML table or array as the flag would spell it: JSON object, comma-separated list."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    values = {k: _as_flag_value(v) for k, v in _resolve(ctx, _read(value), value).items()}
    # Click takes a parameter from the command line first, then default_map:
    # so the flags override the file, and file values get the flags' checks.
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    is_eager=True,
    expose_value=True,
    callback=_load_config,
    metavar="FILE.toml",
    help="Read options from a TOML file ([<command>] table or top-level keys); flags override it.",
)
