"""What every command shares: ``--config``, ``--format``, building the app, printing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from revbridge import bootstrap
from revbridge.config import DEFAULT_NAME, ENV_VAR
from revbridge.errors import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar=ENV_VAR,
        default=None,
        metavar="FILE",
        help=f"Config file (default: ${ENV_VAR} or ./{DEFAULT_NAME}).",
    )(func)


def format_option(func: F) -> F:
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(func)


@contextmanager
def app_for(config_path: str | None) -> Iterator[bootstrap.App]:
    try:
        app = bootstrap.build(bootstrap.read_config(config_path))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield app
    finally:
        app.close()


def emit(fmt: str, payload: Any, text: Callable[[], None]) -> None:
    if fmt == "json":
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        text()
