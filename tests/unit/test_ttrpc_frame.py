"""ttrpc framing (pyrunc.shim.ttrpc.frame): bytes in, frames out, without sockets or protobuf."""

from __future__ import annotations

import pytest

from pyrunc.shim.ttrpc.frame import (
    HEADER_LENGTH,
    MAX_MESSAGE,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    OversizedMessageError,
    encode_frame,
)


def decode_all(*chunks: bytes) -> list[Frame | OversizedFrame]:
    decoder = FrameDecoder()
    items: list[Frame | OversizedFrame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        items.extend(decoder)
    return items


def oversized_header(stream_id: int, length: int) -> bytes:
    return length.to_bytes(4, "big") + stream_id.to_bytes(4, "big") + bytes([1, 0])


def test_header_layout_is_big_endian_length_stream_type_flags() -> None:
    frame = encode_frame(7, MessageType.REQUEST, b"abc", flags=0x05)
    assert frame == bytes.fromhex("00000003 00000007 01 05") + b"abc"
    assert len(frame) == HEADER_LENGTH + 3


def test_round_trip_keeps_every_field() -> None:
    data = encode_frame(0xFFFF_FFFF, MessageType.DATA, b"\x00\x01", flags=0x04)
    assert decode_all(data) == [Frame(0xFFFF_FFFF, MessageType.DATA, 0x04, b"\x00\x01")]


def test_zero_length_frame_is_complete_with_its_header() -> None:
    assert decode_all(bytes.fromhex("00000000 00000005 02 00")) == [Frame(5, 2, 0, b"")]


def test_unknown_message_type_is_passed_up() -> None:
    assert decode_all(encode_frame(1, 0x7F, b"x")) == [Frame(1, 0x7F, 0, b"x")]


def test_frame_split_at_every_byte_boundary() -> None:
    wire = encode_frame(1, MessageType.REQUEST, b"hello") + encode_frame(3, 1, b"")
    expected = [Frame(1, 1, 0, b"hello"), Frame(3, 1, 0, b"")]
    for cut in range(len(wire) + 1):
        assert decode_all(wire[:cut], wire[cut:]) == expected, cut


def test_frame_fed_one_byte_at_a_time() -> None:
    wire = encode_frame(9, MessageType.RESPONSE, bytes(range(40)))
    assert decode_all(*(wire[i : i + 1] for i in range(len(wire)))) == [
        Frame(9, 2, 0, bytes(range(40)))
    ]


def test_two_frames_in_one_read() -> None:
    wire = encode_frame(1, 1, b"a") + encode_frame(3, 1, b"bb")
    assert decode_all(wire) == [Frame(1, 1, 0, b"a"), Frame(3, 1, 0, b"bb")]


def test_many_frames_in_one_read_are_all_decoded() -> None:
    wire = b"".join(encode_frame(2 * i + 1, 1, i.to_bytes(4, "big")) for i in range(20_000))
    items = decode_all(wire)
    assert len(items) == 20_000
    assert items[-1] == Frame(39_999, 1, 0, (19_999).to_bytes(4, "big"))


def test_incomplete_frame_waits_for_more_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(1, 1, b"abcdef")[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == HEADER_LENGTH + 5
    decoder.feed(b"f")
    assert decoder.next_frame() == Frame(1, 1, 0, b"abcdef")
    assert decoder.buffered == 0


def test_exactly_max_message_is_allowed_both_ways() -> None:
    data = bytes(MAX_MESSAGE)
    assert decode_all(encode_frame(1, 1, data)) == [Frame(1, 1, 0, data)]


def test_encoding_more_than_max_message_is_refused() -> None:
    with pytest.raises(OversizedMessageError) as caught:
        encode_frame(1, 2, bytes(MAX_MESSAGE + 1))
    assert caught.value.length == MAX_MESSAGE + 1
    assert str(caught.value) == "message length 4194305 exceed maximum message size of 4194304"


def test_oversized_frame_is_reported_and_its_data_discarded_as_it_arrives() -> None:
    length = MAX_MESSAGE + 100
    decoder = FrameDecoder()
    decoder.feed(oversized_header(7, length))
    assert decoder.next_frame() == OversizedFrame(7, length)
    sent = 0
    while sent < length:
        chunk = min(64 * 1024, length - sent)
        decoder.feed(bytes(chunk))
        sent += chunk
        assert decoder.buffered == 0  # never held in memory
        assert decoder.next_frame() is None
    decoder.feed(encode_frame(9, 1, b"next"))
    assert list(decoder) == [Frame(9, 1, 0, b"next")]


def test_oversized_frame_and_next_frame_in_one_read() -> None:
    length = MAX_MESSAGE + 1
    wire = oversized_header(3, length) + bytes(length) + encode_frame(5, 1, b"ok")
    assert decode_all(wire) == [OversizedFrame(3, length), Frame(5, 1, 0, b"ok")]


def test_oversized_frame_split_inside_its_data() -> None:
    length = 0xFFFF_FFFF
    head = oversized_header(1, length) + bytes(10)
    decoder = FrameDecoder()
    decoder.feed(head)
    assert list(decoder) == [OversizedFrame(1, length)]
    assert decoder.buffered == 0
