from __future__ import annotations

import hashlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from revbridge.formats.x12.envelope import scan
from revbridge.formats.x12.synthetic import synthetic_835
from revbridge.formats.x12.tokenizer import iter_segments


def codes(items: object) -> list[str]:
    return [i.code for i in items]  # type: ignore[attr-defined]


def test_worked_example_one_clean_transaction(worked_example: bytes) -> None:
    report = scan(io.BytesIO(worked_example))
    assert report.issues == []
    [tx] = report.transactions
    assert tx.issues == ()
    assert (tx.first_segment, tx.segment_count) == (3, 40)
    assert worked_example[tx.start : tx.end].startswith(b"ST*835*0001~")
    assert worked_example[tx.start : tx.end].endswith(b"SE*40*0001~\n")
    assert tx.content_hash == hashlib.sha256(worked_example[tx.start : tx.end]).hexdigest()
    assert (tx.sender_id, tx.receiver_id) == ("PAYERSUBMIT01", "REGIONALHLTH01")
    assert (tx.interchange_control, tx.usage, tx.functional_id) == ("000004711", "P", "HP")
    assert (tx.group_control, tx.version, tx.transaction_set) == ("4711", "005010X221A1", "835")
    assert tx.natural_key == "PAYERSUBMIT01|000004711|4711|0001"


def test_small_chunks_give_the_same_report(worked_example: bytes) -> None:
    assert scan(io.BytesIO(worked_example), 7) == scan(io.BytesIO(worked_example))


def test_wrong_se_count_is_a_transaction_issue(worked_example: bytes) -> None:
    report = scan(io.BytesIO(worked_example.replace(b"SE*40*0001", b"SE*39*0001")))
    [tx] = report.transactions
    [issue] = tx.issues
    assert issue.code == "se_count_mismatch"
    assert (issue.segment_number, issue.segment_id, issue.element) == (42, "SE", "SE01")
    assert issue.transaction == "0001"
    assert "SE01" in issue.message and "42" in issue.message
    assert report.issues == []


def test_se02_must_echo_st02(worked_example: bytes) -> None:
    report = scan(io.BytesIO(worked_example.replace(b"SE*40*0001", b"SE*40*0002")))
    assert codes(report.transactions[0].issues) == ["se_control_mismatch"]


def test_group_and_interchange_trailers(worked_example: bytes) -> None:
    data = worked_example.replace(b"GE*1*4711", b"GE*2*4712").replace(
        b"IEA*1*000004711", b"IEA*3*000004712"
    )
    report = scan(io.BytesIO(data))
    assert codes(report.issues) == [
        "ge_count_mismatch",
        "ge_control_mismatch",
        "iea_count_mismatch",
        "iea_control_mismatch",
    ]
    assert report.issues[0].element == "GE01"
    assert report.issues[3].element == "IEA02"
    assert report.transactions[0].issues == ()


def test_truncated_file_keeps_complete_transactions() -> None:
    data = synthetic_835(seed=5, claims=30, claims_per_transaction=10)
    full = scan(io.BytesIO(data))
    assert len(full.transactions) == 3 and full.issues == []
    cut = data[: full.transactions[2].start + 200]
    for size in (7, 1 << 20):
        report = scan(io.BytesIO(cut), size)
        assert report.transactions[:2] == full.transactions[:2]
        assert codes(report.transactions[2].issues) == ["truncated"]
        assert "truncated" in codes(report.issues)


def test_truncated_at_segment_boundary(worked_example: bytes) -> None:
    cut = worked_example[: worked_example.index(b"SE*40")]
    report = scan(io.BytesIO(cut))
    [tx] = report.transactions
    assert codes(tx.issues) == ["truncated"]
    assert tx.end == len(cut)
    assert codes(report.issues) == ["truncated", "truncated"]


def test_non_5010(worked_example: bytes) -> None:
    data = worked_example.replace(b"*00501*", b"*00401*").replace(b"005010X221A1", b"004010X091A1")
    report = scan(io.BytesIO(data))
    assert codes(report.issues) == ["not_5010", "not_5010"]
    assert [i.element for i in report.issues] == ["ISA12", "GS08"]
    assert len(report.transactions) == 1


def test_segments_outside_transactions(worked_example: bytes) -> None:
    data = worked_example.replace(b"ST*835*0001~\n", b"LX*9~\nST*835*0001~\n")
    report = scan(io.BytesIO(data))
    assert codes(report.issues) == ["segment_outside_transaction"]
    assert report.issues[0].segment_number == 3


def test_empty_and_garbage_do_not_raise() -> None:
    assert codes(scan(io.BytesIO(b"")).issues) == ["empty"]
    garbage = scan(io.BytesIO(bytes(range(256)) * 10))
    assert garbage.transactions == []
    assert codes(garbage.issues) == ["no_isa"]


def test_many_transactions_and_interchanges() -> None:
    one = synthetic_835(seed=1, claims=40, claims_per_transaction=10, start_control=1)
    two = synthetic_835(seed=2, claims=20, claims_per_transaction=10, start_control=7)
    data = one + two.replace(b"~\n", b"~")
    report = scan(io.BytesIO(data), 4096)
    assert report.issues == []
    assert len(report.transactions) == 6
    assert len({t.natural_key for t in report.transactions}) == 6
    for t in report.transactions:
        assert t.issues == ()
        assert hashlib.sha256(data[t.start : t.end]).hexdigest() == t.content_hash


@settings(max_examples=60, deadline=None)
@given(
    newline=st.sampled_from(["", "\n", "\r\n"]),
    tail=st.sampled_from(["", "\n", "\r\n", "\r"]),
    dropped=st.integers(0, 4),
    chunk=st.sampled_from([7, 300, 1 << 20]),
)
def test_scan_numbers_segments_like_the_tokenizer(
    newline: str, tail: str, dropped: int, chunk: int
) -> None:
    """Segment numbers of the envelope scan (counted, not split) equal the tokenizer's."""
    data = synthetic_835(seed=7, claims=6, claims_per_transaction=3)
    pieces = data.decode("latin-1").split("~\n")[:-1]  # the last piece is empty
    pieces = pieces[: len(pieces) - dropped]
    text = "".join(p + "~" + newline for p in pieces[:-1]) + pieces[-1] + "~" + tail
    data = text.encode("latin-1")
    segs = [s for s, _ in iter_segments(io.BytesIO(data), chunk)]
    report = scan(io.BytesIO(data), chunk)
    starts = [s.number for s in segs if s.id == "ST"]
    assert [t.first_segment for t in report.transactions] == starts
    ends = [s.number for s in segs if s.id == "SE"]
    assert [t.first_segment + t.segment_count - 1 for t in report.transactions][: len(ends)] == ends
    for issue in report.issues:  # "file ends before GE/IEA" names the segment after the last
        assert issue.code == "truncated" and issue.segment_number == len(segs) + 1
