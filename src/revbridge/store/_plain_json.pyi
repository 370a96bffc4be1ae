"""C fast path of the plain JSON check of :mod:`revbridge.store.codec`."""

from typing import Any

def is_plain(value: Any, /) -> bool: ...
