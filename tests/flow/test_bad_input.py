"""Bad input: a clear error naming file, transaction and segment; raw bytes kept; an
exception item opened; the other transactions of the file still processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.ingest.x12_files import ingest_file
from revbridge.store.base import ExceptionItem
from tests.conftest import WORKED_EXAMPLE

GOOD = WORKED_EXAMPLE.read_bytes()
SECOND_ST = (
    b"ST*835*0002~\nBPR*I*100*C*CHK************20250106~\nTRN*1*CHK0002*1999999999~\n"
    b"N1*PR*ACME HEALTH PLAN*XV*ACME01~\nN1*PE*REGIONAL MEDICAL CENTER*XX*1234567893~\n"
    b"CLP*ACCT2001*1*150*100**12*ICN-B-1*13*1~\nCAS*CO*45*50~\nSE*8*0002~\n"
)


def two_transactions(second: bytes = SECOND_ST) -> bytes:
    head, tail = GOOD.split(b"GE*1*4711~")
    return head + second + b"GE*2*4711~" + tail


def ingest(app: bootstrap.App, tmp_path: Path, data: bytes) -> tuple[str, list[ExceptionItem]]:
    path = tmp_path / "input.835"
    path.write_bytes(data)
    outcome = ingest_file(app.store, path)
    app.worker().run_until_idle(max_wait_seconds=0)
    with app.store.unit_of_work() as uow:
        assert uow.raw.read(outcome.raw_id or 1) == data  # kept byte for byte
        return outcome.status, uow.exceptions.all()


def journal_count(app: bootstrap.App) -> int:
    with app.store.unit_of_work() as uow:
        return len(uow.journals.all())


def test_good_second_transaction_is_posted(app: bootstrap.App, tmp_path: Path) -> None:
    status, _ = ingest(app, tmp_path, two_transactions())
    assert status == "accepted"
    assert journal_count(app) == 4


def test_wrong_segment_count_rejects_that_transaction_only(
    app: bootstrap.App, tmp_path: Path
) -> None:
    status, items = ingest(app, tmp_path, two_transactions(SECOND_ST.replace(b"SE*8*", b"SE*9*")))
    assert status == "accepted"
    rejected = [x for x in items if x.reason == "rejected_transaction"]
    assert rejected[0].subject["transaction"] == "0002"
    assert rejected[0].subject["element"] == "SE01"
    assert rejected[0].subject["segment"]
    assert journal_count(app) == 3  # the first transaction still posted


def test_unbalanced_remittance_is_quarantined(app: bootstrap.App, tmp_path: Path) -> None:
    data = two_transactions(SECOND_ST.replace(b"CAS*CO*45*50~", b"CAS*CO*45*40~"))
    _, items = ingest(app, tmp_path, data)
    rejected = [x for x in items if x.reason == "rejected_transaction"]
    assert rejected and rejected[0].subject["code"] == "claim_unbalanced"
    assert "input.835" in rejected[0].detail and "segment" in rejected[0].detail
    assert journal_count(app) == 3


def test_mismatched_control_numbers(app: bootstrap.App, tmp_path: Path) -> None:
    _, items = ingest(app, tmp_path, GOOD.replace(b"IEA*1*000004711", b"IEA*1*000004799"))
    assert [x.reason for x in items if x.reason == "envelope_error"]
    assert journal_count(app) == 3


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("binary garbage", bytes(range(256)) * 4),
        ("not x12", b"MSH|^~\\&|LAB|H01|||20250101||ORU^R01|1|P|2.5\r"),
        ("truncated isa", GOOD[:60]),
    ],
)
def test_unreadable_files_are_rejected_and_kept(
    app: bootstrap.App, tmp_path: Path, name: str, data: bytes
) -> None:
    status, items = ingest(app, tmp_path, data)
    assert status == "rejected", name
    assert [x.reason for x in items] == ["rejected_file"]
    assert "input.835" in items[0].detail


def test_truncated_file_keeps_complete_transactions(app: bootstrap.App, tmp_path: Path) -> None:
    data = two_transactions()
    cut = data[: data.index(b"CLP*ACCT2001")]
    status, items = ingest(app, tmp_path, cut)
    assert status == "accepted"
    assert journal_count(app) == 3
    assert any(x.reason in ("rejected_transaction", "envelope_error") for x in items)


def test_non_5010_version_is_rejected(app: bootstrap.App, tmp_path: Path) -> None:
    status, items = ingest(app, tmp_path, GOOD.replace(b"005010X221A1", b"004010X091A1"))
    assert status == "rejected"
    assert any(x.subject.get("code") == "not_5010" for x in items)
    assert journal_count(app) == 0
