"""Lease owner ids, and telling that the owner of a lease on this host is dead.

A worker's owner id is ``host:pid:start`` (threads of one process add ``/n``): ``start``
is the process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), so
a later process that got the same pid is another owner. An owner on this host whose
process is gone, or whose pid now names a process started at another time, is dead: its
leases may be taken at once instead of when they expire. Owners on other hosts, and ids
of another form, are never judged dead here (their leases expire as before). The host
name is taken to name one pid namespace (a container has its own host name).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_PROC = Path("/proc")


def this_process() -> str:
    """The owner id of the calling process."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> str:
    """The owner id of process ``pid`` of this host (``host:pid`` if its start is unknown)."""
    start = _start_time(pid)
    base = f"{socket.gethostname()}:{pid}"
    return base if start is None else f"{base}:{start}"


def is_dead(owner: str) -> bool:
    """True only when ``owner`` names a process of this host that no longer runs."""
    parts = owner.split("/", 1)[0].split(":")
    if len(parts) not in (2, 3) or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    if not (_PROC / "self" / "stat").exists():
        return False  # no /proc here: nothing can be told
    start = _start_time(int(parts[1]))
    return start is None or (len(parts) == 3 and parts[2] != start)


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat``; None when no such process runs (gone, or a zombie
    waiting to be reaped) or there is no /proc. The command name (field 2) is in
    parentheses and may hold spaces: fields are counted from the last closing parenthesis."""
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return fields[19]
