"""The schema's version history: one numbered list of migrations per backend.

Both backends number their migrations from one history (``0001_initial`` means the same
schema on each), so version N is the same meaning everywhere; only the SQL differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from revbridge.errors import StoreError

_MIGRATION_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (a folder under ``store/migrations``), in order."""
    folder = resources.files("revbridge.store").joinpath("migrations").joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    if [migration.version for migration in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations are not numbered 1..n: {[m.version for m in found]}")
    return found
