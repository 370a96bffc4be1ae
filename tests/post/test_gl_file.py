"""The GL file sink is idempotent by key (``JournalSink.idempotent``): a key any process
has written is never written again, and its first document is returned."""

from __future__ import annotations

import csv
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path

from revbridge.domain.journal import Journal, JournalLine
from revbridge.post.gl_file import GLFileSink


def journal(key: str) -> Journal:
    return Journal(
        key=key,
        entity="RHS",
        date=date(2025, 1, 3),
        description="d",
        lines=(
            JournalLine("1005", Decimal("10.00"), Decimal(0)),
            JournalLine("1115", Decimal(0), Decimal("10.00")),
        ),
        rule_version="1",
    )


def written_keys(folder: Path) -> Counter[str]:
    keys: Counter[str] = Counter()
    for path in folder.glob("gl-*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            keys.update({row["journal_key"] for row in csv.DictReader(handle)})
    return keys


def test_a_key_written_by_another_sink_is_not_written_again(tmp_path: Path) -> None:
    assert GLFileSink.idempotent
    late, early = GLFileSink(tmp_path), GLFileSink(tmp_path)
    assert late.lookup(["835:A"]) == {}  # its index was read before the other wrote
    first = early.post([journal("835:A")])
    again = late.post([journal("835:A"), journal("835:B")])
    assert again["835:A"] == first["835:A"]
    assert written_keys(tmp_path) == Counter({"835:A": 1, "835:B": 1})


def test_overlapping_posts_of_the_same_keys_write_each_once(tmp_path: Path) -> None:
    batch = [journal(f"835:{n}") for n in range(20)]
    sinks = [GLFileSink(tmp_path) for _ in range(4)]
    with ThreadPoolExecutor(len(sinks)) as pool:
        answers = list(pool.map(lambda sink: sink.post(batch), sinks))
    assert all(answer == answers[0] for answer in answers)
    assert set(written_keys(tmp_path).values()) == {1}


def test_lookup_sees_what_another_process_wrote(tmp_path: Path) -> None:
    survivor, dying = GLFileSink(tmp_path), GLFileSink(tmp_path)
    assert survivor.lookup(["835:A"]) == {}  # the survivor has looked before
    dying.post([journal("835:A")])  # the other process books, then dies unrecorded
    assert survivor.lookup(["835:A"]) != {}, "a resend would write 835:A a second time"
