"""Contract: raw messages are kept byte for byte, streamed in and out."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest

from revbridge.store.base import RawMessage, Store

AddRaw = Callable[..., RawMessage]
ALL_BYTES = bytes(range(256))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", ALL_BYTES, ALL_BYTES * 4099 + b"\r\n\x1c\x0b"],
    ids=["empty", "nul", "all-bytes", "multi-chunk"],
)
def test_round_trip_byte_for_byte(store: Store, add_raw: AddRaw, data: bytes) -> None:
    with store.unit_of_work() as uow:
        raw = add_raw(uow, data)
    with store.unit_of_work() as uow:
        assert uow.raw.get(raw.id) == raw
        assert uow.raw.read(raw.id) == data
        assert b"".join(uow.raw.iter_chunks(raw.id, chunk_size=1000)) == data
    assert raw.size == len(data)
    assert raw.sha256 == hashlib.sha256(data).hexdigest()
    assert raw.received_at.utcoffset() is not None


def test_record_fields(store: Store) -> None:
    data = b"ISA*00*...~"
    with store.unit_of_work() as uow:
        raw = uow.raw.add(
            channel="sftp-in",
            name="remit 01.835",
            content_type="application/edi-x12",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            stream=io.BytesIO(data),
        )
    assert (raw.channel, raw.name, raw.content_type) == (
        "sftp-in",
        "remit 01.835",
        "application/edi-x12",
    )


def test_ranges_and_chunks(store: Store, add_raw: AddRaw) -> None:
    data = ALL_BYTES * 40
    with store.unit_of_work() as uow:
        raw_id = add_raw(uow, data).id
        for start, end in [(0, None), (0, 0), (7, 7), (1, 2), (255, 9000), (100, len(data))]:
            expected = data[start:end]
            assert uow.raw.read(raw_id, start, end) == expected
            chunks = list(uow.raw.iter_chunks(raw_id, start, end, chunk_size=333))
            assert b"".join(chunks) == expected
            assert all(len(chunk) == 333 for chunk in chunks[:-1])
            assert all(0 < len(chunk) <= 333 for chunk in chunks)


def test_read_outside_the_message_is_refused(store: Store, add_raw: AddRaw) -> None:
    with store.unit_of_work() as uow:
        raw_id = add_raw(uow, b"0123456789").id
        for start, end in [(-1, 5), (0, 11), (6, 5), (11, None)]:
            with pytest.raises(ValueError):
                uow.raw.read(raw_id, start, end)


def test_stream_is_read_in_pieces(store: Store) -> None:
    """A stream that returns fewer bytes than asked (a socket, a pipe) is read to the end."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            piece, self._data = self._data[:7], self._data[7:]
            return piece

    data = ALL_BYTES * 3
    with store.unit_of_work() as uow:
        raw = uow.raw.add(
            channel="c",
            name="n",
            content_type="t",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            stream=Trickle(data),  # type: ignore[arg-type]
        )
        assert uow.raw.read(raw.id) == data


def test_short_stream_and_wrong_hash_are_refused(store: Store) -> None:
    data = b"hello"
    with pytest.raises(ValueError), store.unit_of_work() as uow:
        uow.raw.add(
            channel="c",
            name="n",
            content_type="t",
            sha256=hashlib.sha256(data + b"!").hexdigest(),
            size=len(data) + 1,
            stream=io.BytesIO(data),
        )
    with pytest.raises(ValueError), store.unit_of_work() as uow:
        uow.raw.add(
            channel="c",
            name="n",
            content_type="t",
            sha256=hashlib.sha256(b"other").hexdigest(),
            size=len(data),
            stream=io.BytesIO(data),
        )
    with store.unit_of_work() as uow:
        assert uow.raw.find_by_sha256(hashlib.sha256(data).hexdigest()) is None


def test_find_by_sha256(store: Store, add_raw: AddRaw) -> None:
    with store.unit_of_work() as uow:
        first = add_raw(uow, b"same bytes", name="a")
        add_raw(uow, b"other bytes", name="b")
        add_raw(uow, b"same bytes", name="c")
    with store.unit_of_work() as uow:
        assert uow.raw.find_by_sha256(hashlib.sha256(b"same bytes").hexdigest()) == first
        assert uow.raw.find_by_sha256(hashlib.sha256(b"never").hexdigest()) is None


def test_unknown_raw_id(store: Store) -> None:
    with store.unit_of_work() as uow, pytest.raises(KeyError):
        uow.raw.get(424242)
