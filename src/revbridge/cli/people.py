"""What the ``exceptions`` and ``approvals`` commands share: who acts, how refusals print,
options a subcommand inherits from its group, amounts."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

from revbridge.errors import ActionRefused
from revbridge.orchestrate.work_queue import NotFound

F = TypeVar("F", bound=Callable[..., Any])
USER_ENV = "REVBRIDGE_USER"


def login_name() -> str | None:
    """The OS login name, if the system knows one (containers may not)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def user_option(func: F) -> F:
    return click.option(
        "--user",
        envvar=USER_ENV,
        default=login_name,
        metavar="NAME",
        help=f"Who acts, as recorded in the audit log (default: ${USER_ENV}, else your login).",
    )(func)


def actor(user: str | None) -> str:
    if not user or not user.strip():
        raise click.UsageError(f"who is acting? pass --user or set ${USER_ENV}")
    return user.strip()


def inherited(ctx: click.Context, name: str, value: Any, default: Any = None) -> Any:
    """A subcommand's option, else the same option given to its group, else ``default``:
    ``revbridge exceptions --format json show 3`` and ``... show 3 --format json`` agree."""
    if value is not None:
        return value
    parent = ctx.parent.params.get(name) if ctx.parent is not None else None
    return parent if parent is not None else default


@contextmanager
def refusals() -> Iterator[None]:
    """A refused action or an unknown id is the person's error (exit 1), bad input too
    (exit 2): say why in one line, never with a traceback."""
    try:
        yield
    except (ActionRefused, NotFound) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def amount(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    """An ``--amount`` callback: money read as ``Decimal``, never float."""
    del ctx
    if value is None:
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        parsed = Decimal("NaN")
    if not parsed.is_finite():
        raise click.BadParameter(f"{value!r} is not an amount like 250.00", param=param)
    return parsed
