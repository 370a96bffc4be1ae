"""Output ``gl_file``: journals as CSV files for ERPs without an API.

One file per batch, written to a temporary name, flushed to disk, then renamed: a reader
never sees half a file. The file name is derived from the batch's keys, and every key
already written is found again by ``lookup``, so a resend never writes a journal twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from revbridge.domain.journal import Journal
from revbridge.domain.money import money_str
from revbridge.errors import OutageError
from revbridge.post.base import JournalSink
from revbridge.post.limits import limit_fields
from revbridge.registry import ComponentSpec, Field

SPEC = ComponentSpec(
    "outputs",
    "gl_file",
    "Writes journals as CSV files (one per batch, atomically) for a GL import.",
    (
        Field("path", "path", "Folder the files are written to.", example="gl-out"),
        *limit_fields(rate_per_second=0.0, burst=1, max_in_flight=0),
    ),
)

COLUMNS = (
    "journal_key",
    "entity",
    "date",
    "kind",
    "line",
    "account",
    "debit",
    "credit",
    "currency",
    "description",
    "dimensions",
    "source",
    "rule_version",
)


class GLFileSink(JournalSink):
    name = "gl_file"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._written: dict[str, str] | None = None

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        written = self._index()
        fresh = [j for j in journals if j.key not in written]
        if fresh:
            name = self._write(fresh)
            written.update({j.key: f"{name}#{j.key}" for j in fresh})
        return {j.key: written[j.key] for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        """Read the folder again: another process may have written these keys since."""
        self._written = None
        written = self._index()
        return {k: written[k] for k in keys if k in written}

    def close(self) -> None:
        self._written = None

    def _index(self) -> dict[str, str]:
        if self._written is None:
            self._written = dict(self._scan())
        return self._written

    def _scan(self) -> Iterator[tuple[str, str]]:
        if not self.folder.exists():
            return
        for path in sorted(self.folder.glob("gl-*.csv")):
            with path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    yield row["journal_key"], f"{path.name}#{row['journal_key']}"

    def _write(self, journals: Sequence[Journal]) -> str:
        digest = hashlib.sha256("\n".join(j.key for j in journals).encode()).hexdigest()[:16]
        name = f"gl-{journals[0].date:%Y%m%d}-{digest}.csv"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.folder / name, _csv(journals))
        except OSError as exc:
            raise OutageError(f"cannot write {name}: {exc}", target=self.name) from exc
        return name


def _csv(journals: Sequence[Journal]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for journal in journals:
        for number, line in enumerate(journal.lines, start=1):
            writer.writerow(
                (
                    journal.key,
                    journal.entity,
                    journal.date.isoformat(),
                    journal.kind,
                    number,
                    line.account,
                    money_str(line.debit),
                    money_str(line.credit),
                    journal.currency,
                    line.description,
                    json.dumps(dict(line.dimensions), sort_keys=True),
                    json.dumps(dict(line.source), sort_keys=True),
                    journal.rule_version,
                )
            )
    return buffer.getvalue().encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
