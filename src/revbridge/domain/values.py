"""Building many immutable values fast.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (the
class's own ``__setattr__`` refuses), which costs about twice as much as setting the slots
directly. The paths that build a few values per claim (events when normalising and reading)
use ``slot_constructor`` instead; journal lines are tuples (``journal.new_line``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def slot_constructor(cls: type[T]) -> Callable[..., T]:
    """A function that builds a ``cls`` from every field, positionally in declaration order.

    For frozen slots dataclasses without ``__post_init__`` (it would not run): the result
    equals ``cls(*values)`` and is as immutable; no defaults are filled in.
    """
    if not is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__, which would not run")
    names = [f.name for f in fields(cls)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{name}": cls.__dict__[name].__set__ for name in names})
    lines = [
        f"def construct({', '.join(names)}):",
        "    value = _new(_cls)",
        *(f"    _set_{name}(value, {name})" for name in names),
        "    return value",
    ]
    exec("\n".join(lines), namespace)  # generated like dataclasses' own __init__
    construct: Callable[..., T] = namespace["construct"]
    construct.__qualname__ = construct.__name__ = f"new_{cls.__name__}"
    return construct
