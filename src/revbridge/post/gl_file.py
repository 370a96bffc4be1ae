"""Output ``gl_file``: journals as CSV files for ERPs without an API.

One file per batch, written to a temporary name, flushed to disk, then renamed: a reader
never sees half a file. The file name is derived from the batch's keys, and every key
already written is found again by ``lookup``; ``post`` checks the keys against the folder
under a lock held across processes, so the sink is idempotent by key: a resend, or a call
overlapping another's, never writes a journal twice.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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

LOCK_NAME = ".gl.lock"
"""Held (``flock``) while a process checks and writes keys: one writer at a time."""

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
    idempotent = True  # keys are checked and written under the folder's lock

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, list[str]] = {}  # file name -> the keys it holds
        self._written: dict[str, str] = {}  # key -> document id (file#key)

    def post(self, journals: Sequence[Journal]) -> Mapping[str, str]:
        """Write the keys no file holds yet. The folder is read again under its lock, so
        a key another process (or a call of ours that overlapped) wrote is never written
        a second time: its first document is returned."""
        with self._locked():
            written = self._refresh()
            fresh = [j for j in journals if j.key not in written]
            if fresh:
                name = self._write(fresh)
                self._add(name, [j.key for j in fresh])
            return {j.key: written[j.key] for j in journals}

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str]:
        """Read the folder again: another process may have written these keys since."""
        written = self._refresh()
        return {k: written[k] for k in keys if k in written}

    def close(self) -> None:
        self._files, self._written = {}, {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = (self.folder / LOCK_NAME).open("a")
        except OSError as exc:
            raise OutageError(f"cannot lock {self.folder}: {exc}", target=self.name) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _refresh(self) -> dict[str, str]:
        """The index, brought up to the folder: files are written once (renamed into
        place) and never changed, so only new files are read; removed ones are forgotten."""
        names = {p.name for p in self.folder.glob("gl-*.csv")} if self.folder.exists() else set()
        for gone in set(self._files) - names:
            for key in self._files.pop(gone):
                self._written.pop(key, None)
        for name in sorted(names - set(self._files)):
            self._add(name, list(self._keys(self.folder / name)))
        return self._written

    def _add(self, name: str, keys: list[str]) -> None:
        self._files[name] = keys
        for key in keys:
            self._written.setdefault(key, f"{name}#{key}")

    @staticmethod
    def _keys(path: Path) -> Iterator[str]:
        with path.open(newline="", encoding="utf-8") as handle:
            yield from dict.fromkeys(row["journal_key"] for row in csv.DictReader(handle))

    def _write(self, journals: Sequence[Journal]) -> str:
        digest = hashlib.sha256("\n".join(j.key for j in journals).encode()).hexdigest()[:16]
        name = f"gl-{journals[0].date:%Y%m%d}-{digest}.csv"
        try:
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
